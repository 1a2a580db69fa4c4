import type pg from 'pg';
import { parseSchemaMap } from '../../src/schemaMap.js';

/** Shared by test/migrations, test/claim and test/checks: a queue whose every name differs from the reference. */
export const REMAPPED_DDL = `
  CREATE SCHEMA queue;
  CREATE TABLE queue.pipeline_runs (run_key uuid PRIMARY KEY, state text NOT NULL, output jsonb);
  CREATE TABLE queue.background_tasks (
    task_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), kind text NOT NULL, state text NOT NULL DEFAULT 'pending',
    rank integer NOT NULL DEFAULT 100, body jsonb NOT NULL DEFAULT '{}', tries integer NOT NULL DEFAULT 0,
    max_tries integer NOT NULL DEFAULT 3, run_at timestamptz NOT NULL DEFAULT now(), worker text,
    claimed_at timestamptz, lease_until timestamptz, error text,
    inserted_at timestamptz NOT NULL DEFAULT now(), touched_at timestamptz NOT NULL DEFAULT now());
  -- The app's own claim function under its own name, two-phase like the reference one.
  CREATE FUNCTION queue.grab_task(p_worker_id text, p_lease_seconds integer DEFAULT 300)
  RETURNS SETOF queue.background_tasks LANGUAGE plpgsql AS $$
  BEGIN
    RETURN QUERY
    UPDATE queue.background_tasks SET worker = p_worker_id, lease_until = now() + make_interval(secs => p_lease_seconds), tries = tries + 1
     WHERE task_id = (SELECT task_id FROM queue.background_tasks WHERE state = 'active' AND lease_until < now()
                       ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING *;
    IF FOUND THEN RETURN; END IF;
    RETURN QUERY
    UPDATE queue.background_tasks SET state = 'active', worker = p_worker_id, lease_until = now() + make_interval(secs => p_lease_seconds), tries = tries + 1
     WHERE task_id = (SELECT task_id FROM queue.background_tasks WHERE state = 'pending' AND run_at <= now()
                       ORDER BY rank, run_at LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING *;
  END $$;`;

export const REMAPPED_MAP = parseSchemaMap({
  schema: 'queue',
  jobs: {
    table: 'background_tasks',
    columns: {
      id: 'task_id', type: 'kind', status: 'state', priority: 'rank', payload: 'body', attempts: 'tries',
      maxAttempts: 'max_tries', scheduledAt: 'run_at', lockedBy: 'worker', lockedAt: 'claimed_at',
      leaseExpiresAt: 'lease_until', lastError: 'error', createdAt: 'inserted_at', updatedAt: 'touched_at',
    },
    runIdPayloadKey: 'pipelineRun',
  },
  runs: { table: 'pipeline_runs', columns: { id: 'run_key', status: 'state', finalReport: 'output' } },
  statuses: { queued: 'pending', running: 'active', completed: 'done', failed: 'dead', cancelled: 'aborted' },
  types: { export: 'render_pdf' },
  claimFunction: 'grab_task',
});

/** Everything migrations may touch in a schema: functions (verbatim), their ACL, owner and comment, and indexes. */
export async function catalogSnapshot(client: pg.Client, schema: string) {
  const functions = await client.query<{ definition: string; acl: string[] | null; owner: string; comment: string | null }>(
    `SELECT pg_get_functiondef(p.oid) AS definition,
            (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(p.proacl) AS a) AS acl,
            pg_get_userbyid(p.proowner)::text AS owner, obj_description(p.oid, 'pg_proc') AS comment
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 ORDER BY p.oid::regprocedure::text`,
    [schema],
  );
  const indexes = await client.query<{ definition: string }>(
    `SELECT indexdef AS definition FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname`,
    [schema],
  );
  return { functions: functions.rows, indexes: indexes.rows.map((row) => row.definition) };
}

/** Names of valid indexes on a table. */
export async function validIndexNames(client: pg.Client, schema: string, table: string): Promise<string[]> {
  const result = await client.query<{ name: string }>(
    `SELECT c.relname::text AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
      WHERE n.nspname = $1 AND t.relname = $2 AND i.indisvalid ORDER BY 1`,
    [schema, table],
  );
  return result.rows.map((row) => row.name);
}
