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
  // The reference schema WITH the legacy two-phase claim_next_job.
  await loadReferenceSchema(testDb.client);
});

const WIDE = { ...DEFAULT_INSPECT_OPTIONS, limit: 50 };

async function starvationCheck(options: InspectOptions = WIDE, map: SchemaMap = DEFAULT_SCHEMA_MAP) {
  const report = await runInspect(db, map, { only: ['starvation'] }, options);
  return report.checks[0]!;
}

/** The ids incident.sql derives with md5(...)::uuid. */
function md5Uuid(text: string): string {
  const hex = createHash('md5').update(text).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001';
const EXPORT_2 = 'e1e1e1e1-0000-4000-8000-000000000002';
const sectionQueued = (i: number) => md5Uuid(`incident-section-queued-${i}`);

/** Longest waiting first: sections 12..3 (270 s..180 s), export 1 (175 s), section 2 (170 s), then a 160 s tie broken by id. */
const INCIDENT_STARVED_IDS = [
  ...[12, 11, 10, 9, 8, 7, 6, 5, 4, 3].map(sectionQueued),
  EXPORT_1,
  sectionQueued(2),
  ...[EXPORT_2, sectionQueued(1)].sort(),
];

const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

const DROP_LEGACY = 'DROP FUNCTION claim_next_job(text, integer);';
const BALANCED_FUNCTION = `CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
  RETURNS SETOF jobs LANGUAGE plpgsql AS $$
  BEGIN -- queue-doctor:balanced-claim v1
    RETURN QUERY SELECT * FROM jobs WHERE status IN ('QUEUED', 'RUNNING') AND lease_expires_at < now();
  END $$;`;
const UNKNOWN_FUNCTION = `CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
  RETURNS SETOF jobs LANGUAGE sql AS $$ SELECT * FROM jobs WHERE false $$;`;

const STUCK_JOB = (n: number, waitedSeconds: number, type = 'SECTION_RUN') =>
  `INSERT INTO jobs (id, type, status, scheduled_at) VALUES ('${id(n)}', '${type}', 'QUEUED', now() - make_interval(secs => ${waitedSeconds}));`;
const EXPIRED_LEASE = (n: number) =>
  `INSERT INTO jobs (id, type, status, attempts, locked_by, locked_at, lease_expires_at)
   VALUES ('${id(n)}', 'SECTION_RUN', 'RUNNING', 1, 'worker-1', now() - interval '60 seconds', now() - interval '30 seconds');`;

describe('starvation check', () => {
  it('fails on the incident: stuck jobs, expired leases and the legacy claim function together', async () => {
    await loadIncident(testDb.client);
    const check = await starvationCheck();
    expect(check).toMatchObject({
      id: 'starvation',
      status: 'fail',
      count: 14,
      remedy: 'queue-doctor fix --release-expired (unblocks now), then queue-doctor migrate up (balanced claim function)',
    });
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STARVED_IDS);
    expect(Object.keys(check.items[10]!).sort()).toEqual(['id', 'priority', 'type', 'waitingSeconds']);
    expect(check.items[10]).toMatchObject({ id: EXPORT_1, type: 'EXPORT', priority: 100 });
    expect(check.summary).toMatch(
      /^2 EXPORT and 12 other due jobs have waited up to 27[01]s while 40 expired leases are re-claimed first by the legacy claim_next_job$/,
    );
  });

  it('caps the starved jobs at --limit but counts them all', async () => {
    await loadIncident(testDb.client);
    const check = await starvationCheck({ ...DEFAULT_INSPECT_OPTIONS, limit: 2 });
    expect(check).toMatchObject({ status: 'fail', count: 14 });
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STARVED_IDS.slice(0, 2));
  });

  it('is ok on the incident data under the balanced claim function, and says why', async () => {
    await testDb.client.query(DROP_LEGACY + BALANCED_FUNCTION);
    await loadIncident(testDb.client);
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toMatch(/40 expired leases exist, but claim_next_job is the balanced claim/);
  });

  it('warns when the claim function is missing: starvation cannot be confirmed', async () => {
    await testDb.client.query(DROP_LEGACY);
    await loadIncident(testDb.client);
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'warn', count: 14 });
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STARVED_IDS);
    expect(check.summary).toMatch(/no function public\.claim_next_job exists/);
    expect(check.remedy).toMatch(/claimFunction/);
  });

  it('warns when the claim function has a shape it does not recognise', async () => {
    await testDb.client.query(DROP_LEGACY + UNKNOWN_FUNCTION);
    await loadIncident(testDb.client);
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'warn', count: 14 });
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STARVED_IDS);
    expect(check.remedy).toMatch(/queue-doctor fix --release-expired/);
  });

  it('is ok under the legacy function when jobs are stuck but no lease has expired', async () => {
    await testDb.client.query(STUCK_JOB(1, 300, 'EXPORT'));
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toMatch(/^1 EXPORT due job has waited up to 30[01]s, but no lease has expired/);
  });

  it('is ok under the legacy function when leases expired but no job is stuck', async () => {
    await testDb.client.query(EXPIRED_LEASE(1) + STUCK_JOB(2, 30));
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toBe('no due job has waited over 120s (1 expired lease; claim_next_job is legacy)');
  });

  it('stays quiet on a healthy queue: recent jobs, live leases, long finished history', async () => {
    await testDb.client.query(`
      INSERT INTO jobs (id, type, status, scheduled_at) VALUES
        ('${id(1)}', 'EXPORT', 'QUEUED', now() - interval '30 seconds'),
        ('${id(2)}', 'SECTION_RUN', 'QUEUED', now() + interval '1 hour');
      INSERT INTO jobs (id, type, status, attempts, locked_by, locked_at, lease_expires_at) VALUES
        ('${id(3)}', 'SECTION_RUN', 'RUNNING', 1, 'worker-1', now() - interval '20 seconds', now() + interval '280 seconds');
      INSERT INTO jobs (type, status, attempts, scheduled_at, locked_by, lease_expires_at)
      SELECT 'SECTION_RUN', 'COMPLETED', 1, now() - make_interval(hours => i), 'worker-1', now() - make_interval(hours => i)
        FROM generate_series(1, 2000) AS i;`);
    const check = await starvationCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('uses the stuck-queued definition: 100 s is not stuck at --stuck-after 120s, a future job never is', async () => {
    await testDb.client.query(
      EXPIRED_LEASE(1) +
        STUCK_JOB(2, 100, 'EXPORT') +
        `INSERT INTO jobs (id, type, status, scheduled_at, created_at) VALUES ('${id(3)}', 'EXPORT', 'QUEUED', now() + interval '5 minutes', now() - interval '1 day');`,
    );
    expect(await starvationCheck()).toMatchObject({ status: 'ok', count: 0, items: [] });

    const stricter = await starvationCheck({ ...WIDE, stuckAfterSeconds: 60 });
    expect(stricter).toMatchObject({ status: 'fail', count: 1 });
    expect(stricter.items.map((item) => item.id)).toEqual([id(2)]);
    expect(stricter.summary).toMatch(/^1 EXPORT due job has waited up to 10[01]s while 1 expired lease is re-claimed first by the legacy claim_next_job$/);
  });

  it('reads every name from the schema map', async () => {
    await resetSchema(testDb.client);
    await testDb.client.query(REMAPPED_SCHEMA);
    await testDb.client.query(`
      INSERT INTO work.background_tasks (task_id, kind, state, rank, tries, max_tries, run_after, worker, lease_until) VALUES
        (301, 'report_export', 'pending', 10, 0, 5, now() - interval '200 seconds', NULL, NULL),
        (302, 'section', 'pending', 50, 0, 5, now() - interval '400 seconds', NULL, NULL),
        (303, 'section', 'active', 50, 2, 5, now() - interval '1 hour', 'w-a', now() - interval '15 seconds'),
        -- Default literals: only a check that ignored the map would count them.
        (304, 'EXPORT', 'QUEUED', 100, 0, 5, now() - interval '1 hour', NULL, NULL),
        (305, 'section', 'RUNNING', 50, 1, 5, now() - interval '1 hour', 'w-b', now() - interval '1 hour')`);
    const check = await starvationCheck(WIDE, REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(check.items).toEqual([
      { id: '302', type: 'section', priority: 50, waitingSeconds: expect.any(Number) },
      { id: '301', type: 'report_export', priority: 10, waitingSeconds: expect.any(Number) },
    ]);
    expect(check.summary).toMatch(/^1 report_export and 1 other due job have waited up to 40[01]s while 1 expired lease is re-claimed first by the legacy grab_task$/);
  });
});
