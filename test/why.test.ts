import { createHash } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, readSql, resetSchema, snapshotTable, type TestDatabase } from './helpers/database.js';
import { explainJob, type WhyReport } from '../src/why.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../src/schemaMap.js';
import type { Database } from '../src/db/database.js';
import { openPglite } from '../src/db/pglite.js';
import { REMAPPED_MAP, REMAPPED_SCHEMA } from './helpers/remappedQueue.js';

let testDb: TestDatabase;
let db: Database;

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
  await loadReferenceSchema(testDb.client);
});

const why = (jobId: string, map: SchemaMap = DEFAULT_SCHEMA_MAP) => explainJob(db, map, jobId);
const codes = (report: WhyReport) => report.reasons.map((reason) => reason.code);
const message = (report: WhyReport, code: string) => report.reasons.find((reason) => reason.code === code)?.message;

function md5Uuid(text: string): string {
  const hex = createHash('md5').update(text).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001';
const EXPORT_3 = 'e1e1e1e1-0000-4000-8000-000000000003';
const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

const DROP_LEGACY = 'DROP FUNCTION claim_next_job(text, integer);';
const BALANCED_FUNCTION = `CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300, p_types text[] DEFAULT NULL, p_run_wait_seconds integer DEFAULT 15)
  RETURNS SETOF jobs LANGUAGE plpgsql AS $$
  BEGIN -- queue-doctor:balanced-claim v1
    RETURN QUERY SELECT * FROM jobs WHERE status IN ('QUEUED', 'RUNNING') AND lease_expires_at < now();
  END $$;`;
const UNKNOWN_FUNCTION = `CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
  RETURNS SETOF jobs LANGUAGE sql AS $$ SELECT * FROM jobs WHERE false $$;`;

const RUN_DONE = 'aaaaaaaa-0000-4000-8000-000000000001';
const RUN_GOING = 'aaaaaaaa-0000-4000-8000-000000000002';
const RUNS = `INSERT INTO report_runs (id, status, final_report_json) VALUES
  ('${RUN_DONE}', 'COMPLETED', '{"title": "done"}'), ('${RUN_GOING}', 'RUNNING', NULL);`;

function queued(n: number, options: { waited?: number; priority?: number; type?: string; runId?: string; attempts?: number } = {}): string {
  const { waited = 60, priority = 100, type = 'SECTION_RUN', runId, attempts = 0 } = options;
  return `INSERT INTO jobs (id, type, status, priority, run_id, attempts, scheduled_at)
          VALUES ('${id(n)}', '${type}', 'QUEUED', ${priority}, ${runId ? `'${runId}'` : 'NULL'}, ${attempts}, now() - make_interval(secs => ${waited}));`;
}
function running(n: number, options: { leaseSeconds: number; priority?: number; attempts?: number; worker?: string }): string {
  const { leaseSeconds, priority = 100, attempts = 1, worker = 'worker-1' } = options;
  return `INSERT INTO jobs (id, type, status, priority, attempts, locked_by, locked_at, lease_expires_at)
          VALUES ('${id(n)}', 'SECTION_RUN', 'RUNNING', ${priority}, ${attempts}, '${worker}', now() - interval '10 minutes', now() + make_interval(secs => ${leaseSeconds}));`;
}

describe('why on the incident', () => {
  beforeEach(async () => {
    await loadIncident(testDb.client);
  });

  it('explains the starved export: expired leases first, then earlier bulk work at its priority', async () => {
    const report = await why(EXPORT_1);
    expect(report).toMatchObject({ claimable: false, claimVariant: 'legacy' });
    expect(codes(report)).toEqual(['starvation', 'behind-earlier-jobs']);
    expect(message(report, 'starvation')).toMatch(/^40 expired leases exist, and the legacy claim_next_job re-claims/);
    expect(message(report, 'behind-earlier-jobs')).toMatch(/^10 ready jobs at the same priority \(100\) became ready before it.*--reprioritize 50/);
    expect(Object.keys(report.job)).toEqual([
      'id', 'type', 'status', 'priority', 'runId', 'attempts', 'maxAttempts', 'scheduledAt', 'lockedBy', 'lockedAt',
      'leaseExpiresAt', 'lastError', 'createdAt', 'updatedAt', 'runStatus', 'runHasFinalReport',
    ]);
    expect(report.job).toMatchObject({
      id: EXPORT_1, type: 'EXPORT', status: 'QUEUED', priority: 100, runId: 'b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc',
      attempts: 0, maxAttempts: 3, lockedBy: null, runStatus: 'COMPLETED', runHasFinalReport: true,
    });
  });

  it('explains the premature export: its run is still RUNNING, and it is starved too', async () => {
    const report = await why(EXPORT_3);
    expect(report.claimable).toBe(false);
    expect(codes(report)).toEqual(['run-not-completed', 'starvation', 'behind-earlier-jobs']);
    expect(message(report, 'run-not-completed')).toMatch(/^its run 5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10 is RUNNING, not COMPLETED; when claimed, the export fails/);
    expect(report.job).toMatchObject({ runStatus: 'RUNNING', runHasFinalReport: false });
  });

  it('says the longest-expired lease is what the legacy function hands out next, and the one after it is behind', async () => {
    const next = await why(md5Uuid('incident-section-running-40'));
    expect(next).toMatchObject({ claimable: true, reasons: [] });
    const after = await why(md5Uuid('incident-section-running-39'));
    expect(after.claimable).toBe(false);
    // Its lease expired on attempt 5 of 3: the legacy function hands it out anyway, once its turn comes.
    expect(codes(after)).toEqual(['attempts-exhausted', 'behind-earlier-jobs']);
    expect(message(after, 'behind-earlier-jobs')).toMatch(/^1 other expired lease expired before this one/);
  });

  it('reports no starvation under the balanced claim function', async () => {
    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION);
    const report = await why(EXPORT_1);
    expect(report.claimVariant).toBe('balanced');
    expect(codes(report)).toEqual(['behind-earlier-jobs']);
    expect(report.claimable).toBe(false);
    const premature = await why(EXPORT_3);
    expect(codes(premature)).not.toContain('starvation');
    expect(codes(premature)[0]).toBe('run-not-completed');
    expect(message(premature, 'run-not-completed')).toMatch(/defers it, without spending an attempt/);
  });

  it('refuses malformed ids before touching the jobs table', async () => {
    const before = await snapshotTable(testDb.client, 'jobs');
    for (const hostile of ['not-a-uuid', "'; DROP TABLE jobs; --", '', 'e1e1e1e1'.repeat(200)]) {
      await expect(why(hostile)).rejects.toMatchObject({ name: 'QueueDoctorError', kind: 'usage', message: expect.stringMatching(/not a valid job id/) });
    }
    expect(await snapshotTable(testDb.client, 'jobs')).toEqual(before);
  });

  it('gives the same explanation on PGlite (the embedded demo database)', async () => {
    const pglite = await openPglite('memory://', 'pglite test');
    try {
      for (const file of ['schema.sql', 'legacy/claim_next_job.sql', 'fixtures/incident.sql']) await pglite.exec(await readSql(file));
      const report = await explainJob(pglite, DEFAULT_SCHEMA_MAP, EXPORT_1);
      expect(report).toMatchObject({ claimable: false, claimVariant: 'legacy' });
      expect(codes(report)).toEqual(['starvation', 'behind-earlier-jobs']);
      expect(report.job).toMatchObject({ id: EXPORT_1, priority: 100, attempts: 0, runHasFinalReport: true });
      expect(report.job.scheduledAt).toBeInstanceOf(Date);
    } finally {
      await pglite.close();
    }
  });

  it('says not-found for an unknown id', async () => {
    await expect(why('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({ kind: 'not-found', message: expect.stringMatching(/^no job with id/) });
  });
});

describe('why: each reason in its own scenario', () => {
  it('a clean queue: the next job in line is claimable with no reasons', async () => {
    await testDb.client.query(queued(1, { waited: 120 }) + queued(2, { waited: 60 }) + running(3, { leaseSeconds: 200 }));
    expect(await why(id(1))).toMatchObject({ claimable: true, claimVariant: 'legacy', reasons: [] });
    const second = await why(id(2));
    expect(second.claimable).toBe(false);
    expect(codes(second)).toEqual(['behind-earlier-jobs']);
    expect(second.job).not.toHaveProperty('runStatus');
  });

  it('finished: a completed job', async () => {
    await testDb.client.query(`INSERT INTO jobs (id, type, status, attempts, last_error) VALUES ('${id(1)}', 'EXPORT', 'FAILED', 3, 'boom')`);
    const report = await why(id(1));
    expect(report.claimable).toBe(false);
    expect(codes(report)).toEqual(['finished']);
    expect(message(report, 'finished')).toMatch(/^it is FAILED: .*attempts 3 of 3, last error: "boom"/);
  });

  it('not-due: a job scheduled in the future', async () => {
    await testDb.client.query(`INSERT INTO jobs (id, type, status, scheduled_at) VALUES ('${id(1)}', 'SECTION_RUN', 'QUEUED', now() + interval '300 seconds')`);
    const report = await why(id(1));
    expect(report.claimable).toBe(false);
    expect(codes(report)).toEqual(['not-due']);
    expect(message(report, 'not-due')).toMatch(/due in (300|299)s$/);
  });

  it('live-lease: a running job whose lease is still live', async () => {
    await testDb.client.query(running(1, { leaseSeconds: 240, worker: 'worker-7' }));
    const report = await why(id(1));
    expect(report.claimable).toBe(false);
    expect(codes(report)).toEqual(['live-lease']);
    expect(message(report, 'live-lease')).toMatch(/held by worker-7 until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((240|239)s from now\)/);
  });

  it('no-lease: a running job without a lease expiry is never re-claimed', async () => {
    await testDb.client.query(`INSERT INTO jobs (id, type, status, locked_by) VALUES ('${id(1)}', 'SECTION_RUN', 'RUNNING', 'worker-1')`);
    const report = await why(id(1));
    expect(report).toMatchObject({ claimable: false });
    expect(codes(report)).toEqual(['no-lease']);
  });

  it('attempts-exhausted: the legacy function hands it out anyway, the balanced one does not', async () => {
    await testDb.client.query(queued(1, { attempts: 3, waited: 120 }) + queued(2, { waited: 60 }));
    const legacy = await why(id(1));
    expect(legacy).toMatchObject({ claimable: true });
    expect(codes(legacy)).toEqual(['attempts-exhausted']);
    expect(message(legacy, 'attempts-exhausted')).toMatch(/^attempts 3 of 3 are used up: the legacy claim_next_job ignores max_attempts/);

    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION);
    const balanced = await why(id(1));
    expect(balanced).toMatchObject({ claimable: false });
    expect(codes(balanced)).toEqual(['attempts-exhausted']);
    // The exhausted job ahead is failed, not handed out: it holds nothing up.
    expect(await why(id(2))).toMatchObject({ claimable: true, reasons: [] });
  });

  it('run-not-completed: legacy hands the export out (to fail); balanced defers it and serves the next job', async () => {
    await testDb.client.query(RUNS + queued(1, { type: 'EXPORT', runId: RUN_GOING, waited: 120 }) + queued(2, { waited: 60 }));
    const legacy = await why(id(1));
    expect(legacy).toMatchObject({ claimable: true });
    expect(codes(legacy)).toEqual(['run-not-completed']);
    expect(codes(await why(id(2)))).toEqual(['behind-earlier-jobs']);

    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION);
    const balanced = await why(id(1));
    expect(balanced).toMatchObject({ claimable: false });
    expect(codes(balanced)).toEqual(['run-not-completed']);
    expect(await why(id(2))).toMatchObject({ claimable: true, reasons: [] });
  });

  it('run-not-completed: a completed run without a final report, and a run that does not exist', async () => {
    await testDb.client.query(`INSERT INTO report_runs (id, status, final_report_json) VALUES ('${RUN_DONE}', 'COMPLETED', '{}');` + queued(1, { type: 'EXPORT', runId: RUN_DONE }));
    expect(message(await why(id(1)), 'run-not-completed')).toMatch(/is COMPLETED but has no final report/);
    await testDb.client.query(`ALTER TABLE jobs DROP CONSTRAINT jobs_run_id_fkey;` + queued(2, { type: 'EXPORT', runId: RUN_GOING, waited: 10 }));
    expect(message(await why(id(2)), 'run-not-completed')).toMatch(/^its run aaaaaaaa-0000-4000-8000-000000000002 does not exist/);
  });

  it('an export whose run is completed with a final report carries no run reason', async () => {
    await testDb.client.query(RUNS + queued(1, { type: 'EXPORT', runId: RUN_DONE }));
    const report = await why(id(1));
    expect(report).toMatchObject({ claimable: true, reasons: [] });
    expect(report.job).toMatchObject({ runStatus: 'COMPLETED', runHasFinalReport: true });
  });

  it('starvation: an expired lease is served first under legacy, not under balanced', async () => {
    await testDb.client.query(queued(1, { waited: 120, priority: 50 }) + running(2, { leaseSeconds: -30, priority: 100 }));
    const legacy = await why(id(1));
    expect(legacy.claimable).toBe(false);
    expect(codes(legacy)).toEqual(['starvation']);
    expect(message(legacy, 'starvation')).toMatch(/^1 expired lease exists/);
    expect(await why(id(2))).toMatchObject({ claimable: true, reasons: [] });

    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION);
    expect(await why(id(1))).toMatchObject({ claimable: true, claimVariant: 'balanced', reasons: [] });
    const lease = await why(id(2));
    expect(lease.claimable).toBe(false);
    expect(codes(lease)).toEqual(['behind-higher-priority']);
  });

  it('behind-higher-priority: due jobs with a lower priority number; balanced also counts expired leases', async () => {
    await testDb.client.query(queued(1, { priority: 50, waited: 10 }) + queued(2, { priority: 100, waited: 300 }));
    const report = await why(id(2));
    expect(report.claimable).toBe(false);
    expect(codes(report)).toEqual(['behind-higher-priority']);
    expect(message(report, 'behind-higher-priority')).toBe('1 ready job with a better priority (a number below 100) come first');

    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION + running(3, { leaseSeconds: -5, priority: 10 }));
    const balanced = await why(id(2));
    expect(codes(balanced)).toEqual(['behind-higher-priority']);
    expect(message(balanced, 'behind-higher-priority')).toMatch(/^2 ready jobs \(1 of them expired leases\) with a better priority/);
  });

  it('behind-earlier-jobs under balanced: an expired lease re-enters the line at its expiry time', async () => {
    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION + running(1, { leaseSeconds: -120 }) + queued(2, { waited: 60 }));
    const report = await why(id(2));
    expect(codes(report)).toEqual(['behind-earlier-jobs']);
    expect(message(report, 'behind-earlier-jobs')).toMatch(/^1 ready job \(1 of them expired leases\) at the same priority/);
    expect(await why(id(1))).toMatchObject({ claimable: true, reasons: [] });
  });

  it('claim-function-missing: no function, the plain QUEUED order is used', async () => {
    await testDb.client.query(DROP_LEGACY + queued(1) + running(2, { leaseSeconds: -30 }));
    const report = await why(id(1));
    expect(report).toMatchObject({ claimVariant: 'missing', claimable: true });
    expect(codes(report)).toEqual(['claim-function-missing']);
    const lease = await why(id(2));
    expect(lease).toMatchObject({ claimable: false });
    expect(codes(lease)).toEqual(['claim-function-missing']);
  });

  it('lease-expired: an unrecognised function may or may not re-claim an expired lease', async () => {
    await testDb.client.query(DROP_LEGACY + UNKNOWN_FUNCTION + running(1, { leaseSeconds: -30 }) + queued(2));
    const lease = await why(id(1));
    expect(lease).toMatchObject({ claimVariant: 'unknown', claimable: false });
    expect(codes(lease)).toEqual(['lease-expired']);
    expect(await why(id(2))).toMatchObject({ claimable: true, reasons: [] });
  });

  it('row-locked: a worker holds the row with SELECT … FOR UPDATE; the claim skips to the next job', async () => {
    await testDb.client.query(queued(1, { waited: 120 }) + queued(2, { waited: 60 }));
    const worker = await testDb.connect();
    try {
      await worker.query(`SET application_name = 'worker-under-test'`);
      const pid = (await worker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await worker.query('BEGIN');
      await worker.query(`SELECT id FROM jobs WHERE id = '${id(1)}' FOR UPDATE`);
      const locked = await why(id(1));
      expect(locked.claimable).toBe(false);
      expect(codes(locked)).toEqual(['row-locked']);
      expect(message(locked, 'row-locked')).toMatch(
        new RegExp(`^the row is locked by pid ${pid} \\(application "worker-under-test", user \\w+, idle in transaction for \\d+s, transaction open for \\d+s\\)`),
      );
      expect(await why(id(2))).toMatchObject({ claimable: true, reasons: [] });

      // A lock taken inside a savepoint carries the subtransaction's id in xmax.
      await worker.query('ROLLBACK');
      await worker.query(`BEGIN; SAVEPOINT s1; UPDATE jobs SET priority = priority WHERE id = '${id(1)}'`);
      expect(codes(await why(id(1)))).toEqual(['row-locked']);
    } finally {
      await worker.query('ROLLBACK').catch(() => undefined);
    }
    expect(await why(id(1))).toMatchObject({ claimable: true, reasons: [] });
  });

  it('reads every name from a remapped schema', async () => {
    await resetSchema(testDb.client);
    await testDb.client.query(REMAPPED_SCHEMA);
    await testDb.client.query(`
      INSERT INTO work.report_batches (batch_id, state, output) VALUES (7, 'active', NULL), (8, 'done', '{"ok": true}');
      INSERT INTO work.background_tasks (task_id, kind, state, rank, body, tries, max_tries, run_after, worker, lease_until) VALUES
        (301, 'report_export', 'pending', 10, '{"batchId": 7}', 0, 5, now() - interval '200 seconds', NULL, NULL),
        (302, 'report_export', 'pending', 10, '{"batchId": 8}', 0, 5, now() - interval '100 seconds', NULL, NULL),
        (303, 'section', 'active', 50, '{}', 2, 5, now() - interval '1 hour', 'w-a', now() - interval '15 seconds'),
        (304, 'section', 'done', 50, '{}', 1, 5, now() - interval '1 hour', NULL, NULL),
        -- Default literals: only code that ignored the map would count these.
        (305, 'EXPORT', 'QUEUED', 1, '{}', 0, 5, now() - interval '1 hour', NULL, NULL),
        (306, 'section', 'RUNNING', 1, '{}', 1, 5, now() - interval '1 hour', 'w-b', now() - interval '1 hour')`);
    const premature = await why('301', REMAPPED_MAP);
    expect(premature).toMatchObject({ claimVariant: 'legacy', claimable: false });
    expect(codes(premature)).toEqual(['run-not-completed', 'starvation']);
    expect(message(premature, 'run-not-completed')).toMatch(/^its run 7 is active, not done/);
    expect(message(premature, 'starvation')).toMatch(/^1 expired lease exists, and the legacy grab_task/);
    expect(premature.job).toMatchObject({ id: '301', type: 'report_export', status: 'pending', priority: 10, runId: '7', attempts: 0, maxAttempts: 5, runStatus: 'active', runHasFinalReport: false });

    const second = await why(' 302 ', REMAPPED_MAP);
    expect(codes(second)).toEqual(['starvation', 'behind-earlier-jobs']);
    expect(await why('303', REMAPPED_MAP)).toMatchObject({ claimable: true, reasons: [] });
    expect(codes(await why('304', REMAPPED_MAP))).toEqual(['finished']);
    expect(codes(await why('305', REMAPPED_MAP))).toEqual(['unknown-status']);
    await expect(why('abc', REMAPPED_MAP)).rejects.toMatchObject({ kind: 'usage', message: expect.stringMatching(/expected an integer/) });
    await expect(why('999', REMAPPED_MAP)).rejects.toMatchObject({ kind: 'not-found', message: expect.stringMatching(/"work"\."background_tasks"/) });
  });
});
