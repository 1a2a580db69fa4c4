import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { claimJobs, failJobs, requeueJobs } from '../../src/claim/singleJobs.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap } from '../../src/schemaMap.js';
import { QueueDoctorError } from '../../src/errors.js';
import type { Database } from '../../src/db/database.js';

let testDb: TestDatabase;
let db: Database;
const run = { commandLine: 'queue-doctor test', dryRun: false };
const claimOptions = { worker: 'oncall', leaseSeconds: 120, steal: false };

const QUEUED = 'a0000000-0000-4000-8000-000000000001';
const EXPIRED = 'a0000000-0000-4000-8000-000000000002';
const LIVE = 'a0000000-0000-4000-8000-000000000003';
const DONE = 'a0000000-0000-4000-8000-000000000004';
const EXHAUSTED = 'a0000000-0000-4000-8000-000000000005';
const FAILED = 'a0000000-0000-4000-8000-000000000006';
const OTHER = 'a0000000-0000-4000-8000-000000000007';
const UNKNOWN = 'a0000000-0000-4000-8000-0000000000ff';

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = await openQueueDoctorDatabase(testDb.url);
});
afterAll(async () => {
  await db.close();
  await testDb.drop();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query('DROP SCHEMA IF EXISTS queue_doctor CASCADE');
  await loadReferenceSchema(testDb.client);
  await testDb.client.query(`
    INSERT INTO jobs (id, type, status, attempts, max_attempts, payload, locked_by, lease_expires_at, last_error) VALUES
      ('${QUEUED}', 'EXPORT', 'QUEUED', 0, 3, '{"format": "pdf"}', NULL, NULL, NULL),
      ('${EXPIRED}', 'SECTION_RUN', 'RUNNING', 1, 3, '{}', 'worker-1', now() - interval '10 seconds', NULL),
      ('${LIVE}', 'SECTION_RUN', 'RUNNING', 1, 3, '{}', 'worker-2', now() + interval '200 seconds', NULL),
      ('${DONE}', 'SECTION_RUN', 'COMPLETED', 1, 3, '{}', NULL, NULL, NULL),
      ('${EXHAUSTED}', 'SECTION_RUN', 'QUEUED', 3, 3, '{}', NULL, NULL, 'boom'),
      ('${FAILED}', 'SECTION_RUN', 'FAILED', 3, 3, '{}', NULL, NULL, 'boom'),
      ('${OTHER}', 'SECTION_RUN', 'QUEUED', 0, 3, '{}', NULL, NULL, NULL)`);
});

async function row(id: string) {
  return (await testDb.client.query('SELECT status, attempts, locked_by, lease_expires_at, last_error, scheduled_at <= now() AS due FROM jobs WHERE id = $1', [id])).rows[0];
}

/** Every row except `changed`, to prove the command touched nothing else. */
async function othersSnapshot(changed: string[]) {
  return (await snapshotTable(testDb.client, 'jobs')).filter((line) => !changed.some((id) => line.includes(id)));
}

async function refusal(work: Promise<unknown>): Promise<QueueDoctorError> {
  const error = await work.then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(QueueDoctorError);
  return error as QueueDoctorError;
}

async function auditCount(): Promise<number> {
  const present = (await testDb.client.query(`SELECT to_regclass('queue_doctor.audit_log') IS NOT NULL AS present`)).rows[0].present;
  if (!present) return 0;
  return (await testDb.client.query('SELECT count(*)::int AS n FROM queue_doctor.audit_log')).rows[0].n;
}

describe('claim', () => {
  it('claims a QUEUED job like a worker would, touching nothing else, and audits it', async () => {
    const before = await othersSnapshot([QUEUED]);
    const result = await claimJobs(db, DEFAULT_SCHEMA_MAP, [QUEUED.toUpperCase()], claimOptions, run);
    expect(result.jobs).toHaveLength(1);
    expect(result.jobs[0]).toMatchObject({ id: QUEUED, status: 'RUNNING', lockedBy: 'oncall', attempts: 1, payload: { format: 'pdf' } });
    const after = await row(QUEUED);
    expect(after).toMatchObject({ status: 'RUNNING', attempts: 1, locked_by: 'oncall' });
    const leaseSeconds = (after.lease_expires_at.getTime() - Date.now()) / 1000;
    expect(leaseSeconds).toBeGreaterThan(100);
    expect(leaseSeconds).toBeLessThanOrEqual(121);
    expect(await othersSnapshot([QUEUED])).toEqual(before);
    const audit = (await testDb.client.query('SELECT action, affected_ids, rows_before->0->>\'status\' AS before FROM queue_doctor.audit_log WHERE id = $1', [result.auditId])).rows[0];
    expect(audit).toEqual({ action: 'claim', affected_ids: [QUEUED], before: 'QUEUED' });
  });

  it('claims an expired lease', async () => {
    await claimJobs(db, DEFAULT_SCHEMA_MAP, [EXPIRED], claimOptions, run);
    expect(await row(EXPIRED)).toMatchObject({ status: 'RUNNING', attempts: 2, locked_by: 'oncall' });
  });

  it('refuses a live lease unless --steal', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    const error = await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [LIVE], claimOptions, run));
    expect(error.kind).toBe('refused');
    expect(error.message).toMatch(/live lease held by worker-2 .*--steal/);
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(before);
    await claimJobs(db, DEFAULT_SCHEMA_MAP, [LIVE], { ...claimOptions, steal: true }, run);
    expect(await row(LIVE)).toMatchObject({ status: 'RUNNING', attempts: 2, locked_by: 'oncall' });
  });

  it('refuses finished and exhausted jobs, and unknown ids', async () => {
    expect((await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [DONE], claimOptions, run))).message).toMatch(/COMPLETED/);
    expect((await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [EXHAUSTED], claimOptions, run))).message).toMatch(/no attempts left \(3 of 3\).*--reset-attempts/);
    const unknown = await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [UNKNOWN], claimOptions, run));
    expect(unknown.kind).toBe('not-found');
    expect(await auditCount()).toBe(0);
  });

  it('is all or nothing across several ids', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    const error = await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [QUEUED, LIVE, OTHER], claimOptions, run));
    expect(error.message).toMatch(/nothing was changed for any of the 3 jobs/);
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(before);
  });

  it('rejects malformed and hostile ids before touching anything', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    for (const hostile of ['nope', "'; DROP TABLE jobs; --", `${QUEUED}' OR '1'='1`]) {
      const error = await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [QUEUED, hostile], claimOptions, run));
      expect(error.kind).toBe('usage');
    }
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(before);
  });

  it('refuses at once, without waiting, a row another session holds locked', async () => {
    const holder = await testDb.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [QUEUED]);
    try {
      const started = Date.now();
      const error = await refusal(claimJobs(db, DEFAULT_SCHEMA_MAP, [QUEUED], claimOptions, run));
      expect(Date.now() - started).toBeLessThan(2000);
      expect(error.kind).toBe('refused');
      expect(error.message).toMatch(/another session right now/);
    } finally {
      await holder.query('ROLLBACK');
    }
  });

  it('dry run shows the claim and changes nothing', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    const result = await claimJobs(db, DEFAULT_SCHEMA_MAP, [QUEUED], claimOptions, { ...run, dryRun: true });
    expect(result).toMatchObject({ dryRun: true, auditId: null });
    expect(result.jobs[0]).toMatchObject({ status: 'RUNNING' });
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(before);
    expect(await auditCount()).toBe(0);
  });

  it('races workers for one job: exactly one wins', async () => {
    await testDb.client.query(`UPDATE jobs SET status = 'COMPLETED' WHERE id <> $1`, [QUEUED]);
    const doctors = await Promise.all(Array.from({ length: 4 }, () => openQueueDoctorDatabase(testDb.url)));
    const workers = await Promise.all(Array.from({ length: 4 }, () => testDb.connect()));
    const outcomes = await Promise.all([
      ...doctors.map((doctor, i) => claimJobs(doctor, DEFAULT_SCHEMA_MAP, [QUEUED], { ...claimOptions, worker: `doctor-${i}` }, run).then(() => 1, () => 0)),
      ...workers.map((worker, i) => worker.query('SELECT id FROM claim_next_job($1, 60)', [`worker-${i}`]).then((r) => r.rowCount ?? 0)),
    ]);
    await Promise.all(doctors.map((doctor) => doctor.close()));
    expect(outcomes.reduce((a, b) => a + b, 0)).toBe(1);
    expect(await row(QUEUED)).toMatchObject({ status: 'RUNNING', attempts: 1 });
  });
});

describe('requeue', () => {
  it('puts a RUNNING expired job back, due now, lease cleared, attempts kept', async () => {
    const before = await othersSnapshot([EXPIRED]);
    await requeueJobs(db, DEFAULT_SCHEMA_MAP, [EXPIRED], { steal: false, resetAttempts: false }, run);
    expect(await row(EXPIRED)).toMatchObject({ status: 'QUEUED', attempts: 1, locked_by: null, lease_expires_at: null, due: true });
    expect(await othersSnapshot([EXPIRED])).toEqual(before);
  });

  it('gives a FAILED job its attempts back with --reset-attempts', async () => {
    await requeueJobs(db, DEFAULT_SCHEMA_MAP, [FAILED], { steal: false, resetAttempts: true }, run);
    expect(await row(FAILED)).toMatchObject({ status: 'QUEUED', attempts: 0 });
  });

  it('refuses a job with no attempts left unless --reset-attempts, and unknown statuses', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [FAILED], { steal: false, resetAttempts: false }, run))).message).toMatch(/no attempts left \(3 of 3\).*--reset-attempts/);
    await testDb.client.query(`UPDATE jobs SET status = 'PAUSED' WHERE id = $1`, [OTHER]);
    const paused = await snapshotTable(testDb.client, 'jobs');
    expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [OTHER], { steal: false, resetAttempts: true }, run))).message).toMatch(/unknown status "PAUSED"/);
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(paused);
    expect(before).not.toEqual(paused);
  });

  it('requeue and fail refuse at once a row another session holds, and audit what they change', async () => {
    const holder = await testDb.connect();
    await holder.query('BEGIN');
    await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [EXPIRED]);
    try {
      const started = Date.now();
      expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [EXPIRED], { steal: false, resetAttempts: false }, run))).message).toMatch(/another session right now/);
      expect((await refusal(failJobs(db, DEFAULT_SCHEMA_MAP, [EXPIRED], { steal: false, reason: 'x' }, run))).message).toMatch(/another session right now/);
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await holder.query('ROLLBACK');
    }
    const requeued = await requeueJobs(db, DEFAULT_SCHEMA_MAP, [EXPIRED], { steal: false, resetAttempts: false }, run);
    const failed = await failJobs(db, DEFAULT_SCHEMA_MAP, [OTHER], { steal: false, reason: 'poison' }, run);
    const audit = await testDb.client.query(
      `SELECT id, action, rows_before->0->>'status' AS before, rows_after->0->>'status' AS after FROM queue_doctor.audit_log WHERE id IN ($1, $2) ORDER BY id`,
      [requeued.auditId, failed.auditId],
    );
    expect(audit.rows.map(({ action, before, after }) => ({ action, before, after }))).toEqual([
      { action: 'requeue', before: 'RUNNING', after: 'QUEUED' },
      { action: 'fail', before: 'QUEUED', after: 'FAILED' },
    ]);
  });

  it('refuses QUEUED, COMPLETED and live-lease jobs', async () => {
    expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [OTHER], { steal: false, resetAttempts: false }, run))).message).toMatch(/already QUEUED/);
    expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [DONE], { steal: false, resetAttempts: false }, run))).message).toMatch(/finished successfully/);
    expect((await refusal(requeueJobs(db, DEFAULT_SCHEMA_MAP, [LIVE], { steal: false, resetAttempts: false }, run))).message).toMatch(/--steal/);
  });
});

describe('fail', () => {
  it('fails a job with the reason as a bound value', async () => {
    const reason = "poison'); DROP TABLE jobs; --";
    const before = await othersSnapshot([OTHER]);
    await failJobs(db, DEFAULT_SCHEMA_MAP, [OTHER], { steal: false, reason }, run);
    expect(await row(OTHER)).toMatchObject({ status: 'FAILED', last_error: reason });
    expect(await othersSnapshot([OTHER])).toEqual(before);
  });

  it('refuses finished jobs and empty reasons', async () => {
    expect((await refusal(failJobs(db, DEFAULT_SCHEMA_MAP, [FAILED], { steal: false, reason: 'x' }, run))).message).toMatch(/already FAILED/);
    expect((await refusal(failJobs(db, DEFAULT_SCHEMA_MAP, [OTHER], { steal: false, reason: '  ' }, run))).kind).toBe('usage');
  });
});

describe('on a remapped schema', () => {
  it('claims through the config names, with integer ids', async () => {
    await testDb.client.query(`
      CREATE SCHEMA IF NOT EXISTS queue;
      DROP TABLE IF EXISTS queue.tasks; DROP TABLE IF EXISTS queue.runs;
      CREATE TABLE queue.runs (run_key uuid PRIMARY KEY, state text, report jsonb);
      CREATE TABLE queue.tasks (task_id bigserial PRIMARY KEY, kind text, state text, prio int DEFAULT 100, body jsonb DEFAULT '{}',
        tries int DEFAULT 0, max_tries int DEFAULT 3, run_at timestamptz DEFAULT now(), owner text, owned_at timestamptz,
        lease_until timestamptz, error text, created timestamptz DEFAULT now(), modified timestamptz DEFAULT now());
      INSERT INTO queue.tasks (kind, state) VALUES ('export', 'pending'), ('export', 'pending');`);
    const map = parseSchemaMap({
      schema: 'queue',
      jobs: { table: 'tasks', runIdPayloadKey: 'run', columns: { id: 'task_id', type: 'kind', status: 'state', priority: 'prio', payload: 'body', attempts: 'tries', maxAttempts: 'max_tries', scheduledAt: 'run_at', lockedBy: 'owner', lockedAt: 'owned_at', leaseExpiresAt: 'lease_until', lastError: 'error', createdAt: 'created', updatedAt: 'modified' } },
      runs: { table: 'runs', columns: { id: 'run_key', status: 'state', finalReport: 'report' } },
      statuses: { queued: 'pending', running: 'active', completed: 'done', failed: 'dead', cancelled: 'aborted' },
    });
    const result = await claimJobs(db, map, ['0002'], claimOptions, run);
    expect(result.jobs[0]).toMatchObject({ id: 2, status: 'active', attempts: 1, lockedBy: 'oncall' });
    expect((await testDb.client.query('SELECT task_id, state FROM queue.tasks ORDER BY 1')).rows).toEqual([
      { task_id: 1, state: 'pending' },
      { task_id: 2, state: 'active' },
    ]);
    expect((await refusal(claimJobs(db, map, ['2.5'], claimOptions, run))).kind).toBe('usage');
  });
});
