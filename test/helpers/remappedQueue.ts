import { parseSchemaMap } from '../../src/schemaMap.js';

/** A queue whose every name differs from the reference: proves the checks and why read the schema map. */
export const REMAPPED_SCHEMA = `
  CREATE SCHEMA work;
  CREATE TABLE work.report_batches (batch_id bigint PRIMARY KEY, state text NOT NULL, output jsonb);
  CREATE TABLE work.background_tasks (
    task_id bigint PRIMARY KEY,
    kind text NOT NULL,
    state text NOT NULL,
    rank integer NOT NULL DEFAULT 100,
    body jsonb NOT NULL DEFAULT '{}',
    tries integer NOT NULL DEFAULT 0,
    max_tries integer NOT NULL DEFAULT 5,
    run_after timestamptz NOT NULL DEFAULT now(),
    worker text,
    claimed_at timestamptz,
    lease_until timestamptz,
    error text,
    inserted_at timestamptz NOT NULL DEFAULT now(),
    modified_at timestamptz NOT NULL DEFAULT now()
  );
  -- The app's two-phase claim, in this schema's own names.
  CREATE FUNCTION work.grab_task(p_worker text) RETURNS SETOF work.background_tasks LANGUAGE plpgsql AS $$
  DECLARE
    v_task work.background_tasks;
  BEGIN
    SELECT * INTO v_task FROM work.background_tasks
     WHERE state = 'active' AND lease_until < now()
     ORDER BY lease_until LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
      UPDATE work.background_tasks SET worker = p_worker, tries = tries + 1 WHERE task_id = v_task.task_id RETURNING * INTO v_task;
      RETURN NEXT v_task;
      RETURN;
    END IF;
    RETURN QUERY UPDATE work.background_tasks SET state = 'active', worker = p_worker
     WHERE task_id = (SELECT task_id FROM work.background_tasks WHERE state = 'pending' ORDER BY rank LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING *;
  END $$;`;

export const REMAPPED_MAP = parseSchemaMap({
  schema: 'work',
  jobs: {
    table: 'background_tasks',
    columns: {
      id: 'task_id',
      type: 'kind',
      status: 'state',
      priority: 'rank',
      payload: 'body',
      attempts: 'tries',
      maxAttempts: 'max_tries',
      scheduledAt: 'run_after',
      lockedBy: 'worker',
      lockedAt: 'claimed_at',
      leaseExpiresAt: 'lease_until',
      lastError: 'error',
      createdAt: 'inserted_at',
      updatedAt: 'modified_at',
    },
    runIdPayloadKey: 'batchId',
  },
  runs: { table: 'report_batches', columns: { id: 'batch_id', status: 'state', finalReport: 'output' } },
  statuses: { queued: 'pending', running: 'active', completed: 'done', failed: 'dead', cancelled: 'aborted' },
  types: { export: 'report_export' },
  claimFunction: 'grab_task',
});
