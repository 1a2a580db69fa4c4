import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, readSql, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { DEFAULT_INSPECT_OPTIONS, type InspectOptions } from '../../src/checks/types.js';
import { IDLE_LOCK_WARN_SECONDS, judgeWorkers, type ClaimActivity, type IdleLockHolders } from '../../src/checks/workers.js';
import type { Database } from '../../src/db/database.js';
import { openPglite } from '../../src/db/pglite.js';
import { REMAPPED_MAP, REMAPPED_SCHEMA } from '../helpers/remappedQueue.js';

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

async function workersCheck(map: SchemaMap = DEFAULT_SCHEMA_MAP, options: InspectOptions = DEFAULT_INSPECT_OPTIONS, database: Database = db) {
  const report = await runInspect(database, map, { only: ['workers'] }, options);
  return report.checks[0]!;
}

const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/** A RUNNING job claimed `claimedAgo` seconds ago with a live lease. */
const CLAIMED = (n: number, claimedAgo: number) =>
  `INSERT INTO jobs (id, type, status, attempts, locked_by, locked_at, lease_expires_at)
   VALUES ('${id(n)}', 'SECTION_RUN', 'RUNNING', 1, 'worker-1', now() - make_interval(secs => ${claimedAgo}), now() + interval '5 minutes');`;
const DUE = (n: number, waited: number) =>
  `INSERT INTO jobs (id, type, status, scheduled_at) VALUES ('${id(n)}', 'SECTION_RUN', 'QUEUED', now() - make_interval(secs => ${waited}));`;
const HISTORY = `INSERT INTO jobs (type, status, attempts, scheduled_at, locked_by, locked_at, lease_expires_at)
  SELECT 'SECTION_RUN', 'COMPLETED', 1, now() - make_interval(mins => i), 'worker-1', now() - make_interval(secs => i), now() - make_interval(mins => i)
    FROM generate_series(1, 500) AS i;`;

/** A second session that opens a transaction, locks a row of `table` and then sits idle in it. */
async function idleLockHolder(lockSql: string, applicationName = 'stuck-worker'): Promise<{ session: pg.Client; pid: number }> {
  const session = await testDb.connect();
  await session.query(`SET application_name = '${applicationName}'`);
  const pid = (await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  await session.query('BEGIN');
  await session.query(lockSql);
  return { session, pid };
}

describe('workers check', () => {
  it('stays quiet on a healthy queue: recent claims, no idle lock holder, long history', async () => {
    await testDb.client.query(CLAIMED(1, 12) + CLAIMED(2, 400) + DUE(3, 200) + HISTORY);
    const check = await workersCheck();
    expect(check).toMatchObject({ id: 'workers', status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toMatch(/^last claim 1[23]s ago, 1 job claimed in the last 5 min; no session idle in transaction holds a lock on jobs$/);
  });

  it('stays quiet on the incident (leases keep being re-claimed)', async () => {
    await loadIncident(testDb.client);
    const check = await workersCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [] });
    expect(check.summary).toMatch(/^last claim 3[23]s ago, 40 jobs claimed in the last 5 min;/);
  });

  it('lists a session idle in transaction holding a row lock on jobs, ok while under the threshold', async () => {
    await testDb.client.query(CLAIMED(1, 5) + DUE(2, 10));
    const { session, pid } = await idleLockHolder(`SELECT id FROM jobs WHERE id = '${id(2)}' FOR UPDATE`);
    // An idle transaction that touched other tables only is not a holder on jobs.
    const other = await testDb.connect();
    await other.query('BEGIN; SELECT count(*) FROM report_runs;');
    try {
      const check = await workersCheck();
      expect(check).toMatchObject({ status: 'ok', count: 1, remedy: null });
      expect(check.items).toEqual([
        { id: `pid:${pid}`, pid, user: expect.any(String), application: 'stuck-worker', state: 'idle in transaction', ageSeconds: expect.any(Number), locks: ['RowShareLock'] },
      ]);
      expect(check.items[0]!.ageSeconds).toBeLessThan(IDLE_LOCK_WARN_SECONDS);
      expect(check.summary).toMatch(new RegExp(`; 1 session idle in transaction holding locks on jobs for \\d+s \\(pid ${pid}\\), within the 60s limit$`));
    } finally {
      await session.query('ROLLBACK');
      await other.query('ROLLBACK');
    }
    expect(await workersCheck()).toMatchObject({ status: 'ok', count: 0, items: [] });
  });

  it('lists an idle UPDATE with its RowExclusiveLock', async () => {
    await testDb.client.query(DUE(1, 10) + CLAIMED(2, 5));
    const { session, pid } = await idleLockHolder(`UPDATE jobs SET priority = 10 WHERE id = '${id(1)}'`, 'app');
    try {
      const check = await workersCheck();
      expect(check.items.map((item) => item.id)).toEqual([`pid:${pid}`]);
      expect(check.items[0]!.locks).toContain('RowExclusiveLock');
    } finally {
      await session.query('ROLLBACK');
    }
  });

  it('warns when due jobs wait and nothing was claimed in the last 5 minutes', async () => {
    await testDb.client.query(DUE(1, 600) + DUE(2, 300) + CLAIMED(3, 1200) + HISTORY);
    const check = await workersCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1, remedy: 'start workers, or check that they call public.claim_next_job' });
    expect(check.items).toEqual([{ id: 'no-recent-claims', dueQueued: 2, oldestDueSeconds: expect.any(Number), lastClaimAt: expect.any(Date) }]);
    expect(check.summary).toMatch(/^no claim in the last 5 min \(last claim 1200s ago\) while 2 due QUEUED jobs wait \(oldest 60[01]s\): workers look absent;/);
  });

  it('warns when due jobs wait and no job is RUNNING at all', async () => {
    await testDb.client.query(DUE(1, 600));
    const check = await workersCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(check.items).toEqual([{ id: 'no-recent-claims', dueQueued: 1, oldestDueSeconds: expect.any(Number), lastClaimAt: null }]);
    expect(check.summary).toMatch(/\(no RUNNING job\)/);
  });

  it('does not call workers absent for an empty queue, a future job, or a job that just became due', async () => {
    expect(await workersCheck()).toMatchObject({ status: 'ok', count: 0, summary: expect.stringMatching(/^no RUNNING job, so no recent claim is visible;/) });
    await testDb.client.query(
      `INSERT INTO jobs (id, type, status, scheduled_at) VALUES ('${id(1)}', 'EXPORT', 'QUEUED', now() + interval '1 hour');` + DUE(2, 30),
    );
    expect(await workersCheck()).toMatchObject({ status: 'ok', count: 0, items: [] });
    // The grace period is --stuck-after: once the job counts as stuck, the missing claims count too.
    const strict = await workersCheck(DEFAULT_SCHEMA_MAP, { ...DEFAULT_INSPECT_OPTIONS, stuckAfterSeconds: 10 });
    expect(strict).toMatchObject({ status: 'warn', count: 1 });
    expect(strict.items.map((item) => item.id)).toEqual(['no-recent-claims']);
  });

  it('reads every name from the schema map', async () => {
    await resetSchema(testDb.client);
    await testDb.client.query(REMAPPED_SCHEMA);
    // A table called jobs exists too: a lock on it must not be reported.
    await testDb.client.query(await readSql('schema.sql'));
    await testDb.client.query(`
      INSERT INTO work.background_tasks (task_id, kind, state, run_after, claimed_at) VALUES
        (1, 'section', 'pending', now() - interval '20 minutes', NULL),
        (2, 'section', 'active', now() - interval '1 hour', now() - interval '30 minutes'),
        -- Default literals: a check that ignored the map would see a fresh claim here.
        (3, 'section', 'RUNNING', now() - interval '1 hour', now() - interval '5 seconds');
      INSERT INTO jobs (id, type, status) VALUES ('${id(1)}', 'SECTION_RUN', 'QUEUED');`);
    const onJobs = await idleLockHolder(`SELECT id FROM jobs FOR UPDATE`, 'other-app');
    const onTasks = await idleLockHolder(`SELECT task_id FROM work.background_tasks WHERE task_id = 1 FOR UPDATE`, 'task-worker');
    try {
      const check = await workersCheck(REMAPPED_MAP);
      expect(check).toMatchObject({ status: 'warn', count: 2, remedy: 'start workers, or check that they call work.grab_task' });
      expect(check.items.map((item) => item.id)).toEqual([`pid:${onTasks.pid}`, 'no-recent-claims']);
      expect(check.items[1]).toMatchObject({ dueQueued: 1 });
      expect(check.summary).toMatch(/^no claim in the last 5 min \(last claim 1800s ago\) while 1 due pending job waits \(oldest 1200s\): workers look absent;/);
      expect(check.summary).toMatch(/1 session idle in transaction holding locks on background_tasks/);
    } finally {
      await onJobs.session.query('ROLLBACK');
      await onTasks.session.query('ROLLBACK');
    }
  });

  it('counts lock holders whose state a role without pg_read_all_stats cannot see, without failing', async () => {
    const role = `qd_reader_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(8).toString('hex');
    await testDb.client.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'; GRANT USAGE ON SCHEMA public TO ${role}; GRANT SELECT ON jobs, report_runs TO ${role};`);
    await testDb.client.query(CLAIMED(1, 5) + DUE(2, 10));
    const url = new URL(testDb.url);
    url.username = role;
    url.password = password;
    const reader = await openQueueDoctorDatabase(url.toString());
    const { session } = await idleLockHolder(`SELECT id FROM jobs WHERE id = '${id(2)}' FOR UPDATE`);
    try {
      const check = await workersCheck(DEFAULT_SCHEMA_MAP, DEFAULT_INSPECT_OPTIONS, reader);
      expect(check).toMatchObject({ status: 'ok', count: 0, items: [] });
      expect(check.summary).toMatch(/; the state of 1 other lock holder is hidden from this role \(needs pg_read_all_stats\)$/);
    } finally {
      await session.query('ROLLBACK');
      await reader.close();
      await testDb.client.query(`DROP OWNED BY ${role}; DROP ROLE ${role};`);
    }
  });

  it('runs on PGlite, where the only session is its own', async () => {
    const pglite = await openPglite('memory://', 'pglite test');
    try {
      for (const file of ['schema.sql', 'legacy/claim_next_job.sql', 'fixtures/incident.sql']) await pglite.exec(await readSql(file));
      const check = await workersCheck(DEFAULT_SCHEMA_MAP, DEFAULT_INSPECT_OPTIONS, pglite);
      expect(check).toMatchObject({ status: 'ok', count: 0, items: [] });
      expect(check.summary).toMatch(/^last claim 3[23]s ago, 40 jobs claimed in the last 5 min; no session idle in transaction holds a lock on jobs$/);
    } finally {
      await pglite.close();
    }
  });
});

describe('judgeWorkers (the thresholds, without waiting a minute)', () => {
  const names = { running: 'RUNNING', queued: 'QUEUED', jobsTable: 'jobs', claimFunction: 'public.claim_next_job' };
  const thresholds = { idleLockWarnSeconds: IDLE_LOCK_WARN_SECONDS, dueGraceSeconds: 120 };
  const activity: ClaimActivity = { lastClaimAt: new Date(), lastClaimSeconds: 12, recentClaims: 40, dueQueued: 3, oldestDueSeconds: 30 };
  const holders = (...ages: number[]): IdleLockHolders => ({
    sessions: ages.map((ageSeconds, index) => ({
      id: `pid:${4242 + index}`, pid: 4242 + index, user: 'app', application: 'worker', state: 'idle in transaction', ageSeconds, locks: ['RowShareLock'],
    })),
    total: ages.length,
    hidden: 0,
  });

  it('warns for a session idle over 60s, naming the oldest in the remedy', () => {
    const outcome = judgeWorkers(activity, holders(95, 20), thresholds, names);
    expect(outcome).toMatchObject({
      status: 'warn',
      count: 2,
      summary: 'last claim 12s ago, 40 jobs claimed in the last 5 min; 2 sessions idle in transaction holding locks on jobs, the oldest for 95s (pid 4242)',
    });
    expect(outcome.items.map((item) => item.id)).toEqual(['pid:4242', 'pid:4243']);
    expect(outcome.remedy).toMatch(/^SELECT pg_terminate_backend\(4242\) /);
  });

  it('is ok at exactly 60s, and for 1 session says so', () => {
    const outcome = judgeWorkers(activity, holders(60), thresholds, names);
    expect(outcome).toMatchObject({ status: 'ok', count: 1, remedy: null });
    expect(outcome.summary).toBe('last claim 12s ago, 40 jobs claimed in the last 5 min; 1 session idle in transaction holding locks on jobs for 60s (pid 4242), within the 60s limit');
  });

  it('combines both remedies when workers are absent and a session sits on a lock', () => {
    const outcome = judgeWorkers({ ...activity, recentClaims: 0, lastClaimSeconds: 900, oldestDueSeconds: 400 }, holders(61), thresholds, names);
    expect(outcome).toMatchObject({ status: 'warn', count: 2 });
    expect(outcome.items.map((item) => item.id)).toEqual(['pid:4242', 'no-recent-claims']);
    expect(outcome.remedy).toMatch(/^SELECT pg_terminate_backend\(4242\) .*; then start workers, or check that they call public\.claim_next_job$/);
  });
});
