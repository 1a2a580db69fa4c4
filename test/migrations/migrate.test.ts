import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createTestDatabase, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { catalogSnapshot, REMAPPED_DDL, REMAPPED_MAP, validIndexNames } from './fixtures.js';
import { LEFT_BEHIND_NOTE, MIGRATION_LOCK_KEYS, migrateDown, migrateUp, migrationStatus } from '../../src/migrations/index.js';
import { classifyClaimFunction } from '../../src/claim/classify.js';
import { loadQueueModel } from '../../src/schema/queueModel.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { QueueDoctorError } from '../../src/errors.js';
import type { Database } from '../../src/db/database.js';

let testDb: TestDatabase;
let db: Database;
/** Roles are cluster-wide: a unique name per run keeps parallel test files apart. */
const workerRole = `qd_worker_${randomBytes(4).toString('hex')}`;

const REFERENCE_INDEXES = ['jobs_qd_claim_order_idx', 'jobs_qd_failed_recent_idx', 'jobs_qd_queued_ready_idx', 'jobs_qd_running_lease_idx'];

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = await openQueueDoctorDatabase(testDb.url);
  await testDb.client.query(`CREATE ROLE ${workerRole} NOLOGIN`);
});
afterAll(async () => {
  await db.close();
  await testDb.drop();
  const admin = new pg.Client({ connectionString: inject('adminUrl') });
  await admin.connect();
  await admin.query(`DROP ROLE IF EXISTS ${workerRole}`);
  await admin.end();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query('DROP SCHEMA IF EXISTS queue CASCADE; DROP SCHEMA IF EXISTS queue_doctor CASCADE');
  await loadReferenceSchema(testDb.client);
});

async function variant(map: SchemaMap = DEFAULT_SCHEMA_MAP) {
  return (await classifyClaimFunction(db, await loadQueueModel(db, map))).variant;
}

async function tracked() {
  const result = await testDb.client.query(`SELECT version, name, checksum, schema_map_fingerprint FROM queue_doctor.migrations ORDER BY version`);
  return result.rows;
}

/** PostgreSQL 18 prints CASE over several lines in pg_get_indexdef; 15 on one. */
function oneLine(sql: string): string {
  return sql.replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/ \)/g, ')');
}

async function rejection(promise: Promise<unknown>): Promise<QueueDoctorError> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(QueueDoctorError);
  return error as QueueDoctorError;
}

describe('migrate up on the reference schema', () => {
  it('creates the four partial indexes and the balanced function, records both, and a second run is a no-op', async () => {
    expect(await variant()).toBe('legacy');
    const progress: string[] = [];
    const first = await migrateUp(db, DEFAULT_SCHEMA_MAP, { onProgress: (message) => progress.push(message) });
    expect(first.applied.map((m) => [m.version, m.name])).toEqual([
      [1, 'active_set_indexes'],
      [2, 'balanced_claim'],
    ]);
    expect(first).toMatchObject({ dryRun: false, alreadyApplied: [], pending: [] });
    expect(progress).toEqual(expect.arrayContaining(['applying 001_active_set_indexes', 'CREATE INDEX CONCURRENTLY jobs_qd_claim_order_idx', 'applying 002_balanced_claim']));

    expect(await validIndexNames(testDb.client, 'public', 'jobs')).toEqual(expect.arrayContaining(REFERENCE_INDEXES));
    const claimOrder = await testDb.client.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_qd_claim_order_idx'`);
    expect(oneLine(claimOrder.rows[0].indexdef)).toBe(
      `CREATE INDEX jobs_qd_claim_order_idx ON public.jobs USING btree (priority, (CASE WHEN (status = 'QUEUED'::text) THEN scheduled_at ELSE lease_expires_at END)) WHERE (status = ANY (ARRAY['QUEUED'::text, 'RUNNING'::text]))`,
    );

    expect(await variant()).toBe('balanced');
    const overloads = await testDb.client.query(`SELECT p.oid::regprocedure::text AS signature FROM pg_proc p WHERE proname = 'claim_next_job'`);
    expect(overloads.rows.map((r) => r.signature)).toEqual(['claim_next_job(text,integer,text[],integer)']);
    const body = await testDb.client.query(`SELECT pg_get_functiondef('claim_next_job'::regproc) AS definition`);
    expect(body.rows[0].definition).toContain('-- queue-doctor:balanced-claim v1');

    const rows = await tracked();
    expect(rows.map((r) => [r.version, r.name])).toEqual([
      [1, 'active_set_indexes'],
      [2, 'balanced_claim'],
    ]);
    for (const row of rows) {
      expect(row.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(row.schema_map_fingerprint).toMatch(/^[0-9a-f]{16}$/);
    }
    const saved = await testDb.client.query(`SELECT signature, definition FROM queue_doctor.saved_functions`);
    expect(saved.rows.map((r) => r.signature)).toEqual(['public.claim_next_job(text,integer)']);
    expect(saved.rows[0].definition).toContain('Phase 1: reclaim stuck jobs');

    const catalogAfterFirst = await catalogSnapshot(testDb.client, 'public');
    const second = await migrateUp(db, DEFAULT_SCHEMA_MAP);
    expect(second).toEqual({ dryRun: false, applied: [], alreadyApplied: [{ version: 1, name: 'active_set_indexes' }, { version: 2, name: 'balanced_claim' }], pending: [] });
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(catalogAfterFirst);

    const status = await migrationStatus(db, DEFAULT_SCHEMA_MAP);
    expect(status.pending).toEqual([]);
    expect(status.schemaMapChanged).toBe(false);
    expect(status.applied.map((m) => [m.version, m.changedSinceApplied])).toEqual([
      [1, false],
      [2, false],
    ]);
  });

  it('up, down, down --all, up: the claim function comes back byte-identical with its owner, grants and comment', async () => {
    await testDb.client.query(`
      REVOKE ALL ON FUNCTION claim_next_job(text, integer) FROM PUBLIC;
      GRANT EXECUTE ON FUNCTION claim_next_job(text, integer) TO ${workerRole};
      COMMENT ON FUNCTION claim_next_job(text, integer) IS 'the app''s claim';`);
    const before = await catalogSnapshot(testDb.client, 'public');
    expect(before.functions[0]!.acl).toHaveLength(2);

    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    const access = await testDb.client.query(
      `SELECT has_function_privilege($1, 'claim_next_job(text,integer,text[],integer)', 'EXECUTE') AS worker,
              has_function_privilege('pg_monitor', 'claim_next_job(text,integer,text[],integer)', 'EXECUTE') AS public`,
      [workerRole],
    );
    expect(access.rows[0]).toEqual({ worker: true, public: false });

    const newest = await migrateDown(db, DEFAULT_SCHEMA_MAP);
    expect(newest.reverted.map((m) => m.version)).toEqual([2]);
    expect(newest).toMatchObject({ applied: [{ version: 1, name: 'active_set_indexes' }], pending: [{ version: 2, name: 'balanced_claim' }], note: null });
    const afterOne = await catalogSnapshot(testDb.client, 'public');
    expect(afterOne.functions).toEqual(before.functions);
    expect(await validIndexNames(testDb.client, 'public', 'jobs')).toEqual(expect.arrayContaining(REFERENCE_INDEXES));
    expect(await variant()).toBe('legacy');

    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    const all = await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true });
    expect(all.reverted.map((m) => m.version)).toEqual([2, 1]);
    expect(all).toMatchObject({ applied: [], note: LEFT_BEHIND_NOTE });
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
    expect(await tracked()).toEqual([]);
    expect((await testDb.client.query(`SELECT count(*)::int AS n FROM queue_doctor.saved_functions`)).rows[0].n).toBe(0);

    const again = await migrateUp(db, DEFAULT_SCHEMA_MAP);
    expect(again.applied.map((m) => m.version)).toEqual([1, 2]);
    expect(await variant()).toBe('balanced');
    await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true });
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
  });

  it('installs the function where none existed, and down only drops it', async () => {
    await testDb.client.query('DROP FUNCTION claim_next_job(text, integer)');
    const before = await catalogSnapshot(testDb.client, 'public');
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    expect(await variant()).toBe('balanced');
    const access = await testDb.client.query(`SELECT has_function_privilege($1, 'claim_next_job(text,integer,text[],integer)', 'EXECUTE') AS ok`, [workerRole]);
    expect(access.rows[0].ok).toBe(true);
    await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true });
    expect(await variant()).toBe('missing');
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
  });

  it('saves and restores every overload, so no two-argument call becomes ambiguous', async () => {
    await testDb.client.query(`CREATE FUNCTION claim_next_job(p_worker_id text) RETURNS SETOF jobs LANGUAGE sql AS $$ SELECT * FROM claim_next_job(p_worker_id, 300) $$`);
    const before = await catalogSnapshot(testDb.client, 'public');
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    const overloads = await testDb.client.query(`SELECT count(*)::int AS n FROM pg_proc WHERE proname = 'claim_next_job'`);
    expect(overloads.rows[0].n).toBe(1);
    await testDb.client.query(`SELECT * FROM claim_next_job('w', 30)`);
    await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true });
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
  });

  it('rebuilds an INVALID index left by an interrupted concurrent build', async () => {
    await testDb.client.query(`INSERT INTO jobs (type) VALUES ('A'), ('A')`);
    // A failed unique build leaves exactly what an interrupted CREATE INDEX CONCURRENTLY leaves.
    await expect(testDb.client.query(`CREATE UNIQUE INDEX CONCURRENTLY jobs_qd_queued_ready_idx ON jobs (type)`)).rejects.toThrow(/could not create unique index/);
    const leftover = await testDb.client.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'jobs_qd_queued_ready_idx'::regclass`);
    expect(leftover.rows[0].indisvalid).toBe(false);

    const progress: string[] = [];
    await migrateUp(db, DEFAULT_SCHEMA_MAP, { onProgress: (message) => progress.push(message) });
    expect(progress).toContain('dropping jobs_qd_queued_ready_idx: INVALID, left by an interrupted build');
    const rebuilt = await testDb.client.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'jobs_qd_queued_ready_idx'`);
    expect(rebuilt.rows[0].indexdef).toBe(`CREATE INDEX jobs_qd_queued_ready_idx ON public.jobs USING btree (priority, scheduled_at) WHERE (status = 'QUEUED'::text)`);
    expect(await validIndexNames(testDb.client, 'public', 'jobs')).toEqual(expect.arrayContaining(REFERENCE_INDEXES));
  });

  it('dry runs render every statement and change nothing', async () => {
    const before = await catalogSnapshot(testDb.client, 'public');
    const plan = await migrateUp(db, DEFAULT_SCHEMA_MAP, { dryRun: true });
    expect(plan).toMatchObject({ dryRun: true, alreadyApplied: [], pending: [{ version: 1 }, { version: 2 }] });
    expect(plan.applied[0]!.statements).toHaveLength(4);
    expect(plan.applied[0]!.statements[0]).toBe(
      `CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_queued_ready_idx"\n    ON "public"."jobs" ("priority", "scheduled_at")\n WHERE "status" = 'QUEUED'`,
    );
    expect(plan.applied[1]!.statements.join('\n')).toContain('CREATE FUNCTION "public"."claim_next_job"(');
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
    const schemaLeft = await testDb.client.query(`SELECT to_regnamespace('queue_doctor') AS present`);
    expect(schemaLeft.rows[0].present).toBeNull();

    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    const applied = await catalogSnapshot(testDb.client, 'public');
    const downPlan = await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true, dryRun: true });
    expect(downPlan.reverted.map((m) => m.version)).toEqual([2, 1]);
    expect(downPlan.note).toBe(LEFT_BEHIND_NOTE);
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(applied);
    expect((await tracked()).map((r) => r.version)).toEqual([1, 2]);
  });

  it('refuses up and down under another schema map, and reports it in status', async () => {
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    const other = parseSchemaMap({ types: { export: 'PDF_EXPORT' } });
    const status = await migrationStatus(db, other);
    expect(status.schemaMapChanged).toBe(true);
    for (const attempt of [() => migrateUp(db, other), () => migrateDown(db, other)]) {
      const error = await rejection(attempt());
      expect(error.kind).toBe('refused');
      expect(error.message).toMatch(/^migration 001_active_set_indexes, 002_balanced_claim was applied with another schema map/);
    }
    expect(await variant()).toBe('balanced');
  });

  it('down refuses to overwrite a claim function the app created again after up', async () => {
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    await testDb.client.query(`DROP FUNCTION claim_next_job(text, integer, text[], integer)`);
    await loadReferenceSchemaFunctionOnly();
    await expect(migrateDown(db, DEFAULT_SCHEMA_MAP)).rejects.toThrow(/claim_next_job\(text,integer\) was created again after migrate up/);
    expect((await tracked()).map((r) => r.version)).toEqual([1, 2]);
  });
});

async function loadReferenceSchemaFunctionOnly() {
  const { readSql } = await import('../helpers/database.js');
  await testDb.client.query(await readSql('legacy/claim_next_job.sql'));
}

describe('migrate on a remapped schema', () => {
  beforeEach(async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(`GRANT EXECUTE ON FUNCTION queue.grab_task(text, integer) TO ${workerRole}`);
  });

  it('renders every name and value from the map: up, down --all, up', async () => {
    const before = await catalogSnapshot(testDb.client, 'queue');
    const up = await migrateUp(db, REMAPPED_MAP);
    expect(up.applied.map((m) => m.version)).toEqual([1, 2]);
    expect(await validIndexNames(testDb.client, 'queue', 'background_tasks')).toEqual([
      'background_tasks_pkey',
      'background_tasks_qd_claim_order_idx',
      'background_tasks_qd_failed_recent_idx',
      'background_tasks_qd_queued_ready_idx',
      'background_tasks_qd_running_lease_idx',
    ]);
    const claimOrder = await testDb.client.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'background_tasks_qd_claim_order_idx'`);
    expect(oneLine(claimOrder.rows[0].indexdef)).toBe(
      `CREATE INDEX background_tasks_qd_claim_order_idx ON queue.background_tasks USING btree (rank, (CASE WHEN (state = 'pending'::text) THEN run_at ELSE lease_until END)) WHERE (state = ANY (ARRAY['pending'::text, 'active'::text]))`,
    );
    expect(await variant(REMAPPED_MAP)).toBe('balanced');
    // The reference schema's function is not the configured one and stays untouched.
    expect(await variant()).toBe('legacy');

    // The installed function works on the remapped names: an export waits for its run (read
    // from the payload key), then is handed out once the run is done with an output.
    const run = '7d3c1e10-0000-4000-8000-000000000001';
    await testDb.client.query(`INSERT INTO queue.pipeline_runs VALUES ($1, 'active', NULL)`, [run]);
    await testDb.client.query(
      `INSERT INTO queue.background_tasks (task_id, kind, body, run_at) VALUES
         ('7d3c1e10-0000-4000-8000-0000000000e1', 'render_pdf', jsonb_build_object('pipelineRun', $1::text), now() - interval '1 minute')`,
      [run],
    );
    expect((await testDb.client.query(`SELECT * FROM queue.grab_task('w1', 60)`)).rows).toEqual([]);
    const waiting = await testDb.client.query(`SELECT state, tries, run_at > now() AS deferred FROM queue.background_tasks`);
    expect(waiting.rows).toEqual([{ state: 'pending', tries: 0, deferred: true }]);
    await testDb.client.query(`UPDATE queue.pipeline_runs SET state = 'done', output = '{"ok": true}'`);
    await testDb.client.query(`UPDATE queue.background_tasks SET run_at = now() - interval '1 second'`);
    const claimed = await testDb.client.query(`SELECT task_id, state, worker, tries FROM queue.grab_task('w1', 60)`);
    expect(claimed.rows).toEqual([{ task_id: '7d3c1e10-0000-4000-8000-0000000000e1', state: 'active', worker: 'w1', tries: 1 }]);
    await testDb.client.query(`DELETE FROM queue.background_tasks; DELETE FROM queue.pipeline_runs`);

    const down = await migrateDown(db, REMAPPED_MAP, { all: true });
    expect(down.reverted.map((m) => m.version)).toEqual([2, 1]);
    expect(await catalogSnapshot(testDb.client, 'queue')).toEqual(before);
    expect((await migrateUp(db, REMAPPED_MAP)).applied.map((m) => m.version)).toEqual([1, 2]);
    expect(await variant(REMAPPED_MAP)).toBe('balanced');
  });
});

describe('the migration lock', () => {
  it('refuses a run while another session holds the lock, naming its pid, and changes nothing', async () => {
    const holder = await testDb.connect();
    const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await holder.query('SELECT pg_advisory_lock($1, $2)', [...MIGRATION_LOCK_KEYS]);
    const before = await catalogSnapshot(testDb.client, 'public');
    for (const attempt of [() => migrateUp(db, DEFAULT_SCHEMA_MAP), () => migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true })]) {
      const error = await rejection(attempt());
      expect(error.kind).toBe('refused');
      expect(error.message).toBe(`another queue-doctor migrate is running (pid ${pid})`);
    }
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);
    await holder.query('SELECT pg_advisory_unlock($1, $2)', [...MIGRATION_LOCK_KEYS]);
    expect((await migrateUp(db, DEFAULT_SCHEMA_MAP)).applied).toHaveLength(2);
  });

  it('lets exactly one of two concurrent runs proceed', async () => {
    const second = await openQueueDoctorDatabase(testDb.url);
    const blocker = await testDb.connect();
    try {
      const firstPid = (await db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      // Holding SHARE on jobs keeps the first run waiting inside its first CREATE INDEX CONCURRENTLY.
      await blocker.query('BEGIN; LOCK TABLE jobs IN SHARE MODE');
      const first = migrateUp(db, DEFAULT_SCHEMA_MAP, { lockTimeoutMs: 20_000 });
      await waitFor(async () => {
        const waiting = await testDb.client.query(`SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted`, [firstPid]);
        return waiting.rowCount === 1;
      });
      const error = await rejection(migrateUp(second, DEFAULT_SCHEMA_MAP));
      expect(error.kind).toBe('refused');
      expect(error.message).toBe(`another queue-doctor migrate is running (pid ${firstPid})`);
      await blocker.query('COMMIT');
      expect((await first).applied.map((m) => m.version)).toEqual([1, 2]);
      expect((await migrateUp(second, DEFAULT_SCHEMA_MAP)).applied).toEqual([]);
    } finally {
      await blocker.query('ROLLBACK').catch(() => undefined);
      await second.close();
    }
  });
});

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
