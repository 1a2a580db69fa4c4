-- queue-doctor migration 002: replaces the claim function with the balanced one.
-- All steps run in one transaction: workers see the old function until COMMIT, then the new one.
-- The old definition (every overload), owner, privileges and comment are saved first, so
-- `queue-doctor migrate down` can put it back exactly.

-- step: sql
-- Saved definitions are printed with every name schema-qualified, so they re-execute anywhere.
SET LOCAL search_path = pg_catalog, pg_temp

-- step: sql
-- A function that already carries the marker is queue-doctor's own and never counts as the app's.
INSERT INTO queue_doctor.saved_functions (migration_version, signature, definition, owner, acl, comment)
SELECT 2, p.oid::regprocedure::text, pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner), p.proacl,
       obj_description(p.oid, 'pg_proc')
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = {{name.schema}}
   AND p.proname = {{name.claimFunction}}
   AND p.prokind = 'f'
   AND p.prosrc NOT LIKE '%queue-doctor:balanced-claim%'
ON CONFLICT (migration_version, signature) DO NOTHING

-- step: sql
-- Every overload goes: with the old two-argument function still present, a worker's
-- two-argument call would be ambiguous between it and the new one.
DO $migration$
DECLARE
  overload regprocedure;
BEGIN
  FOR overload IN
    SELECT p.oid::regprocedure
      FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = {{name.schema}} AND p.proname = {{name.claimFunction}} AND p.prokind = 'f'
  LOOP
    EXECUTE format('DROP FUNCTION %s', overload);
  END LOOP;
END
$migration$

-- step: sql
CREATE FUNCTION {{claimFunction}}(
  p_worker_id text,
  p_lease_seconds integer DEFAULT 300,
  p_types text[] DEFAULT NULL,
  p_run_wait_seconds integer DEFAULT 15
)
RETURNS SETOF {{jobs}}
LANGUAGE plpgsql
VOLATILE
AS $claim$
-- queue-doctor:balanced-claim v1
--
-- Hands out at most one job. Due QUEUED jobs and expired leases form ONE line, ordered by
-- priority (lower first, strictly), then by the moment each became ready: scheduled_at for a
-- queued job, lease expiry for a running one. A job whose lease keeps expiring re-enters the line
-- at its expiry, behind everything that was already waiting, so it cannot starve anything.
-- On the way it settles the jobs it must not hand out, without spending their attempts:
--   * no attempts left            -> FAILED with the reason in last_error;
--   * export whose run has no final report yet -> back in the queue p_run_wait_seconds later.
-- p_types restricts the claim to some job types (a dedicated export pool passes the export type).
DECLARE
  v_job {{jobs}};
  v_run_ready boolean;
BEGIN
  IF p_lease_seconds IS NULL OR p_lease_seconds < 0 THEN
    RAISE EXCEPTION 'p_lease_seconds must be zero or more, got %', p_lease_seconds USING ERRCODE = '22023';
  END IF;

  -- Fast path, one statement: the best candidate, when it may simply be handed out. A candidate
  -- that must be settled instead stays locked by this transaction and is met again in the loop.
  RETURN QUERY
  UPDATE {{jobs}} AS j
     SET {{col.status}} = {{lit.running}},
         {{col.lockedBy}} = p_worker_id,
         {{col.lockedAt}} = now(),
         {{col.leaseExpiresAt}} = now() + make_interval(secs => p_lease_seconds),
         {{col.attempts}} = j.{{col.attempts}} + 1,
         {{col.updatedAt}} = now()
    FROM (SELECT c.{{col.id}} AS candidate_id
            FROM {{jobs}} AS c
           WHERE c.{{col.status}} IN ({{lit.queued}}, {{lit.running}})
             AND (CASE WHEN c.{{col.status}} = {{lit.queued}} THEN c.{{col.scheduledAt}} ELSE c.{{col.leaseExpiresAt}} END) <= now()
             AND (p_types IS NULL OR c.{{col.type}}::text = ANY (p_types))
           ORDER BY c.{{col.priority}},
                    (CASE WHEN c.{{col.status}} = {{lit.queued}} THEN c.{{col.scheduledAt}} ELSE c.{{col.leaseExpiresAt}} END)
           LIMIT 1
           FOR UPDATE OF c SKIP LOCKED) AS best
   WHERE j.{{col.id}} = best.candidate_id
     AND j.{{col.attempts}} < j.{{col.maxAttempts}}
     AND (j.{{col.type}} IS DISTINCT FROM {{lit.export}}
          OR EXISTS (SELECT 1
                       FROM {{runs}} AS r
                      WHERE r.{{runcol.id}} = {{jobRunId(j)}}
                        AND r.{{runcol.status}} = {{lit.completed}}
                        AND r.{{runcol.finalReport}} IS NOT NULL))
  RETURNING j.*;
  IF FOUND THEN
    RETURN;
  END IF;

  -- Bounded: settling a burst of exhausted or waiting rows never turns one call into a long one.
  FOR v_iteration IN 1..100 LOOP
    SELECT j.* INTO v_job
      FROM {{jobs}} AS j
     WHERE j.{{col.status}} IN ({{lit.queued}}, {{lit.running}})
       AND (CASE WHEN j.{{col.status}} = {{lit.queued}} THEN j.{{col.scheduledAt}} ELSE j.{{col.leaseExpiresAt}} END) <= now()
       AND (p_types IS NULL OR j.{{col.type}}::text = ANY (p_types))
     ORDER BY j.{{col.priority}},
              (CASE WHEN j.{{col.status}} = {{lit.queued}} THEN j.{{col.scheduledAt}} ELSE j.{{col.leaseExpiresAt}} END)
     LIMIT 1
     FOR UPDATE OF j SKIP LOCKED;
    IF NOT FOUND THEN
      RETURN;
    END IF;

    IF v_job.{{col.attempts}} >= v_job.{{col.maxAttempts}} THEN
      UPDATE {{jobs}} AS j
         SET {{col.status}} = {{lit.failed}},
             {{col.lastError}} = CASE
               WHEN v_job.{{col.status}} = {{lit.running}}
                 THEN format('queue-doctor: lease expired with no attempts left (%s of %s used)', v_job.{{col.attempts}}, v_job.{{col.maxAttempts}})
               ELSE format('queue-doctor: attempts exhausted (%s of %s used) before it could be claimed', v_job.{{col.attempts}}, v_job.{{col.maxAttempts}})
             END,
             {{col.lockedBy}} = NULL,
             {{col.lockedAt}} = NULL,
             {{col.leaseExpiresAt}} = NULL,
             {{col.updatedAt}} = now()
       WHERE j.{{col.id}} = v_job.{{col.id}};
      CONTINUE;
    END IF;

    IF v_job.{{col.type}} = {{lit.export}} THEN
      SELECT EXISTS (
               SELECT 1
                 FROM {{runs}} AS r
                WHERE r.{{runcol.id}} = {{jobRunId(v_job)}}
                  AND r.{{runcol.status}} = {{lit.completed}}
                  AND r.{{runcol.finalReport}} IS NOT NULL)
        INTO v_run_ready;
      IF NOT v_run_ready THEN
        -- At least a second later: deferred to now() it would be due again within this call.
        UPDATE {{jobs}} AS j
           SET {{col.status}} = {{lit.queued}},
               {{col.scheduledAt}} = now() + make_interval(secs => greatest(coalesce(p_run_wait_seconds, 15), 1)),
               {{col.lockedBy}} = NULL,
               {{col.lockedAt}} = NULL,
               {{col.leaseExpiresAt}} = NULL,
               {{col.updatedAt}} = now()
         WHERE j.{{col.id}} = v_job.{{col.id}};
        CONTINUE;
      END IF;
    END IF;

    UPDATE {{jobs}} AS j
       SET {{col.status}} = {{lit.running}},
           {{col.lockedBy}} = p_worker_id,
           {{col.lockedAt}} = now(),
           {{col.leaseExpiresAt}} = now() + make_interval(secs => p_lease_seconds),
           {{col.attempts}} = j.{{col.attempts}} + 1,
           {{col.updatedAt}} = now()
     WHERE j.{{col.id}} = v_job.{{col.id}}
    RETURNING j.* INTO v_job;
    RETURN NEXT v_job;
    RETURN;
  END LOOP;
END
$claim$

-- step: sql
-- Workers keep the access they had: the new function gets the old one's owner and EXECUTE
-- grants (the union over its overloads). With no old function, or one with default
-- privileges, CREATE FUNCTION's defaults stand.
DO $migration$
DECLARE
  balanced regprocedure;
  previous_owner name;
  grant_entry record;
BEGIN
  SELECT p.oid::regprocedure INTO STRICT balanced
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname = {{name.schema}} AND p.proname = {{name.claimFunction}} AND p.prokind = 'f';

  SELECT owner INTO previous_owner
    FROM queue_doctor.saved_functions
   WHERE migration_version = 2
   ORDER BY signature
   LIMIT 1;
  IF previous_owner IS NULL THEN
    RETURN;
  END IF;
  -- Owner first: later GRANTs are then recorded with the owner as grantor, as the originals were.
  IF previous_owner <> current_user THEN
    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', balanced, previous_owner);
  END IF;

  IF EXISTS (SELECT 1 FROM queue_doctor.saved_functions WHERE migration_version = 2 AND acl IS NULL) THEN
    -- Default privileges on an old overload: PUBLIC could execute it, and still can.
    RETURN;
  END IF;
  EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', balanced);
  FOR grant_entry IN
    SELECT e.grantee, bool_or(e.is_grantable) AS grantable
      FROM queue_doctor.saved_functions s
      CROSS JOIN LATERAL aclexplode(s.acl) AS e
     WHERE s.migration_version = 2
       AND e.privilege_type = 'EXECUTE'
       AND e.grantee <> (SELECT oid FROM pg_roles WHERE rolname = previous_owner)
       AND (e.grantee = 0 OR EXISTS (SELECT 1 FROM pg_roles WHERE oid = e.grantee))
     GROUP BY e.grantee
     ORDER BY e.grantee
  LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', balanced,
                   CASE WHEN grant_entry.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(grant_entry.grantee)) END,
                   CASE WHEN grant_entry.grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
END
$migration$
