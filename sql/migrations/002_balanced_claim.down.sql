-- queue-doctor migration 002, reverted: drops the balanced claim function and re-executes the
-- saved definition of every overload it replaced, with owner, privileges and comment, so that
-- pg_get_functiondef prints exactly what it printed before. If there was none, it only drops.

-- step: sql
-- Saved definitions name everything schema-qualified, so they need no search_path of their own.
SET LOCAL search_path = pg_catalog, pg_temp

-- step: sql
-- As pg_dump does: a body is checked when it runs, not here, where it may name the search_path
-- its callers use, or an overload restored after it.
SET LOCAL check_function_bodies = off

-- step: sql
DO $migration$
DECLARE
  overload record;
  saved record;
  grant_entry record;
  restored regprocedure;
BEGIN
  FOR overload IN
    SELECT p.oid::regprocedure AS signature, p.prosrc LIKE '%queue-doctor:balanced-claim%' AS ours
      FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = {{name.schema}} AND p.proname = {{name.claimFunction}} AND p.prokind = 'f'
  LOOP
    IF overload.ours THEN
      EXECUTE format('DROP FUNCTION %s', overload.signature);
    END IF;
  END LOOP;

  FOR saved IN SELECT * FROM queue_doctor.saved_functions WHERE migration_version = 2 ORDER BY signature LOOP
    IF to_regprocedure(saved.signature) IS NOT NULL THEN
      RAISE EXCEPTION 'queue-doctor: % was created again after migrate up; migrate down will not overwrite it', saved.signature
        USING ERRCODE = '55000', HINT = 'drop or rename it, then run migrate down again';
    END IF;
    EXECUTE saved.definition;
    restored := saved.signature::regprocedure;
    IF saved.owner <> current_user THEN
      EXECUTE format('ALTER FUNCTION %s OWNER TO %I', restored, saved.owner);
    END IF;
    IF saved.acl IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', restored);
      FOR grant_entry IN
        SELECT e.grantee, e.is_grantable
          FROM aclexplode(saved.acl) AS e
         WHERE e.privilege_type = 'EXECUTE'
           AND e.grantee <> (SELECT oid FROM pg_roles WHERE rolname = saved.owner)
           AND (e.grantee = 0 OR EXISTS (SELECT 1 FROM pg_roles WHERE oid = e.grantee))
      LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', restored,
                       CASE WHEN grant_entry.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(grant_entry.grantee)) END,
                       CASE WHEN grant_entry.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
      END LOOP;
    END IF;
    IF saved.comment IS NOT NULL THEN
      EXECUTE format('COMMENT ON FUNCTION %s IS %L', restored, saved.comment);
    END IF;
  END LOOP;

  DELETE FROM queue_doctor.saved_functions WHERE migration_version = 2;
END
$migration$
