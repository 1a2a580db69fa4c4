import { createHash } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { DEFAULT_INSPECT_OPTIONS, type InspectOptions } from '../../src/checks/types.js';
import type { Database } from '../../src/db/database.js';
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

async function leaseCheck(options: InspectOptions = DEFAULT_INSPECT_OPTIONS, map: SchemaMap = DEFAULT_SCHEMA_MAP) {
  const report = await runInspect(db, map, { only: ['expired-leases'] }, options);
  return report.checks[0]!;
}

/** The ids incident.sql derives with md5(...)::uuid. */
function md5Uuid(text: string): string {
  const hex = createHash('md5').update(text).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const sectionRunning = (i: number) => md5Uuid(`incident-section-running-${i}`);
const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

/** Inserts one RUNNING job whose lease ran out `expiredSecondsAgo` seconds ago (negative: still live). */
function runningJob(n: number, expiredSecondsAgo: number, attempts: number, maxAttempts = 3, status = 'RUNNING'): string {
  return `INSERT INTO jobs (id, type, status, attempts, max_attempts, scheduled_at, locked_by, locked_at, lease_expires_at)
          VALUES ('${id(n)}', 'SECTION_RUN', '${status}', ${attempts}, ${maxAttempts}, now() - interval '1 hour', 'worker-${n}',
                  now() - interval '10 minutes', now() - make_interval(secs => ${expiredSecondsAgo}));`;
}

describe('expired-leases check', () => {
  it('fails on the incident: leases keep expiring and some jobs are past max_attempts', async () => {
    await loadIncident(testDb.client);
    const check = await leaseCheck();
    expect(check).toMatchObject({ id: 'expired-leases', status: 'fail', count: 40, remedy: 'queue-doctor fix --release-expired' });
    // Lease i expired 1 + i seconds ago: the longest-expired are 40, 39, ... (capped at --limit 20).
    expect(check.items.map((item) => item.id)).toEqual(Array.from({ length: 20 }, (_, k) => sectionRunning(40 - k)));
    expect(check.items[0]).toMatchObject({ type: 'SECTION_RUN', priority: 100, attempts: 1, maxAttempts: 3, lockedBy: 'worker-1' });
    expect(check.items[0]!.expiredSeconds).toBeGreaterThanOrEqual(41);
    // attempts = 1 + i % 5 with max_attempts 3: 24 jobs have attempts >= 3, 32 have attempts > 1.
    expect(check.summary).toMatch(
      /^40 RUNNING jobs hold an expired lease \(oldest expired 4[12]s ago\); 32 expired more than once; 24 at or beyond max_attempts, /,
    );
  });

  it('warns when leases expired but every job still has attempts left', async () => {
    await testDb.client.query(runningJob(1, 30, 1) + runningJob(2, 90, 2) + runningJob(3, -200, 3));
    const check = await leaseCheck();
    expect(check).toMatchObject({ status: 'warn', count: 2, remedy: 'queue-doctor fix --release-expired' });
    expect(check.items.map((item) => item.id)).toEqual([id(2), id(1)]);
    expect(check.items[0]).toMatchObject({ attempts: 2, maxAttempts: 3, lockedBy: 'worker-2' });
    expect(check.summary).toMatch(/^2 RUNNING jobs hold an expired lease \(oldest expired 9[01]s ago\); 1 expired more than once; none at max_attempts yet$/);
  });

  it('fails as soon as one expired job is exactly at max_attempts', async () => {
    await testDb.client.query(runningJob(1, 30, 1) + runningJob(2, 5, 3, 3));
    const check = await leaseCheck();
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(check.items.map((item) => item.id)).toEqual([id(1), id(2)]);
    expect(check.summary).toContain('1 at or beyond max_attempts');
  });

  it('stays quiet with live leases, queued jobs and long finished history with old leases', async () => {
    await testDb.client.query(
      runningJob(1, -280, 1) +
        runningJob(2, -5, 3) +
        // A QUEUED job that kept its old lease value after being released is not holding a lease.
        runningJob(3, 600, 2, 3, 'QUEUED') +
        `INSERT INTO jobs (type, status, attempts, max_attempts, scheduled_at, locked_by, locked_at, lease_expires_at)
         SELECT 'SECTION_RUN', CASE WHEN i % 20 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 3, 3,
                now() - make_interval(hours => i), 'worker-1', now() - make_interval(hours => i), now() - make_interval(hours => i)
           FROM generate_series(1, 2000) AS i;`,
    );
    const check = await leaseCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null, summary: 'all 2 RUNNING jobs hold live leases' });
  });

  it('says so when nothing is running', async () => {
    const check = await leaseCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null, summary: 'no RUNNING jobs, so no expired leases' });
  });

  it('reads every name from the schema map', async () => {
    await resetSchema(testDb.client);
    await testDb.client.query(REMAPPED_SCHEMA);
    await testDb.client.query(`
      INSERT INTO work.background_tasks (task_id, kind, state, rank, tries, max_tries, worker, lease_until) VALUES
        (201, 'section', 'active', 50, 2, 5, 'w-a', now() - interval '60 seconds'),
        (202, 'report_export', 'active', 10, 5, 5, 'w-b', now() - interval '20 seconds'),
        (203, 'section', 'active', 50, 1, 5, 'w-c', now() + interval '5 minutes'),
        -- Default literals and finished work: only a check that ignored the map would count them.
        (204, 'section', 'RUNNING', 50, 9, 3, 'w-d', now() - interval '1 hour'),
        (205, 'section', 'done', 50, 9, 3, 'w-e', now() - interval '1 hour')`);
    const check = await leaseCheck(DEFAULT_INSPECT_OPTIONS, REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(check.items).toMatchObject([
      { id: '201', type: 'section', priority: 50, attempts: 2, maxAttempts: 5, lockedBy: 'w-a' },
      { id: '202', type: 'report_export', priority: 10, attempts: 5, maxAttempts: 5, lockedBy: 'w-b' },
    ]);
    expect(check.summary).toMatch(/^2 active jobs hold an expired lease .*; 1 at or beyond max_tries, /);
  });
});
