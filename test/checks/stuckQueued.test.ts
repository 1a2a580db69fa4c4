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

const WIDE = { ...DEFAULT_INSPECT_OPTIONS, limit: 50 };

async function stuckCheck(options: InspectOptions = WIDE, map: SchemaMap = DEFAULT_SCHEMA_MAP) {
  const report = await runInspect(db, map, { only: ['stuck-queued'] }, options);
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
const INCIDENT_STUCK_IDS = [
  ...[12, 11, 10, 9, 8, 7, 6, 5, 4, 3].map(sectionQueued),
  EXPORT_1,
  sectionQueued(2),
  ...[EXPORT_2, sectionQueued(1)].sort(),
];

const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

const HEALTHY_QUEUE = `
  INSERT INTO report_runs (id, status) VALUES ('${id(900)}', 'RUNNING');
  INSERT INTO jobs (id, type, status, run_id, scheduled_at, created_at) VALUES
    ('${id(1)}', 'EXPORT', 'QUEUED', '${id(900)}', now() - interval '30 seconds', now() - interval '30 seconds'),
    ('${id(2)}', 'SECTION_RUN', 'QUEUED', '${id(900)}', now() - interval '5 seconds', now() - interval '5 seconds'),
    ('${id(3)}', 'SECTION_RUN', 'QUEUED', '${id(900)}', now() + interval '1 hour', now() - interval '1 day');
  INSERT INTO jobs (id, type, status, run_id, attempts, scheduled_at, locked_by, locked_at, lease_expires_at) VALUES
    ('${id(4)}', 'SECTION_RUN', 'RUNNING', '${id(900)}', 1, now() - interval '1 hour', 'worker-1', now() - interval '20 seconds', now() + interval '280 seconds');
  INSERT INTO jobs (type, status, attempts, scheduled_at, locked_by, locked_at, lease_expires_at, created_at, updated_at)
  SELECT CASE WHEN i % 10 = 0 THEN 'EXPORT' ELSE 'SECTION_RUN' END,
         CASE WHEN i % 50 = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
         1, now() - make_interval(hours => i), 'worker-1', now() - make_interval(hours => i),
         now() - make_interval(hours => i) + interval '5 minutes', now() - make_interval(hours => i), now() - make_interval(hours => i)
    FROM generate_series(1, 2000) AS i;`;

describe('stuck-queued check', () => {
  it('fails on the incident: exports are among the stuck jobs', async () => {
    await loadIncident(testDb.client);
    const check = await stuckCheck();
    expect(check).toMatchObject({ id: 'stuck-queued', status: 'fail', count: 14 });
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STUCK_IDS);
    expect(check.summary).toMatch(/^14 due QUEUED jobs waiting over 120s: 2 EXPORT \(oldest 17[56]s\), 12 SECTION_RUN \(oldest 27[01]s\)$/);
    expect(check.items[10]).toMatchObject({
      id: EXPORT_1,
      type: 'EXPORT',
      priority: 100,
      attempts: 0,
      runId: 'b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc',
    });
    expect(check.items[10]!.waitingSeconds).toBeGreaterThanOrEqual(175);
    expect(check.remedy).toContain(`queue-doctor why ${EXPORT_1}`);
    expect(check.remedy).toContain('queue-doctor inspect --check starvation');
  });

  it('caps items at --limit but still counts every stuck job and names the oldest export', async () => {
    await loadIncident(testDb.client);
    const check = await stuckCheck({ ...DEFAULT_INSPECT_OPTIONS, limit: 3 });
    expect(check.count).toBe(14);
    expect(check.items.map((item) => item.id)).toEqual(INCIDENT_STUCK_IDS.slice(0, 3));
    expect(check.remedy).toContain(`queue-doctor why ${EXPORT_1}`);
  });

  it('warns when only non-export jobs are stuck', async () => {
    await testDb.client.query(`
      INSERT INTO jobs (id, type, status, scheduled_at) VALUES
        ('${id(1)}', 'SECTION_RUN', 'QUEUED', now() - interval '300 seconds'),
        ('${id(2)}', 'SECTION_RUN', 'QUEUED', now() - interval '200 seconds'),
        ('${id(3)}', 'CLEANUP', 'QUEUED', now() - interval '250 seconds'),
        ('${id(4)}', 'EXPORT', 'QUEUED', now() - interval '20 seconds')`);
    const check = await stuckCheck();
    expect(check).toMatchObject({ status: 'warn', count: 3 });
    expect(check.items.map((item) => item.id)).toEqual([id(1), id(3), id(2)]);
    expect(check.summary).toMatch(/^3 due QUEUED jobs waiting over 120s: 2 SECTION_RUN \(oldest 30[01]s\), 1 CLEANUP \(oldest 25[01]s\)$/);
    expect(check.remedy).toContain(`queue-doctor why ${id(1)}`);
  });

  it('stays quiet on a healthy queue with recent jobs, live leases and long finished history', async () => {
    await testDb.client.query(HEALTHY_QUEUE);
    const check = await stuckCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toMatch(/^2 due QUEUED jobs, none waiting over 120s \(oldest 3[01]s\)$/);
  });

  it('says so when nothing is due at all', async () => {
    const check = await stuckCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null, summary: 'no due QUEUED jobs are waiting' });
  });

  it('counts a job only once it has waited longer than --stuck-after, and never a job not yet due', async () => {
    await testDb.client.query(`
      INSERT INTO jobs (id, type, status, scheduled_at, created_at) VALUES
        ('${id(1)}', 'EXPORT', 'QUEUED', now() - interval '100 seconds', now() - interval '100 seconds'),
        ('${id(2)}', 'EXPORT', 'QUEUED', now() + interval '10 minutes', now() - interval '1 day'),
        ('${id(3)}', 'SECTION_RUN', 'QUEUED', now() - interval '130 seconds', now() - interval '130 seconds')`);

    const atDefault = await stuckCheck();
    expect(atDefault).toMatchObject({ status: 'warn', count: 1 });
    expect(atDefault.items.map((item) => item.id)).toEqual([id(3)]);

    const stricter = await stuckCheck({ ...WIDE, stuckAfterSeconds: 60 });
    expect(stricter).toMatchObject({ status: 'fail', count: 2 });
    expect(stricter.items.map((item) => item.id)).toEqual([id(3), id(1)]);
    expect(stricter.summary).toMatch(/waiting over 60s: 1 EXPORT \(oldest 10[01]s\), 1 SECTION_RUN/);

    const lenient = await stuckCheck({ ...WIDE, stuckAfterSeconds: 600 });
    expect(lenient).toMatchObject({ status: 'ok', count: 0, items: [] });
  });

  it('reads every name from the schema map', async () => {
    await resetSchema(testDb.client);
    await testDb.client.query(REMAPPED_SCHEMA);
    await testDb.client.query(`
      INSERT INTO work.background_tasks (task_id, kind, state, rank, body, tries, run_after) VALUES
        (101, 'report_export', 'pending', 10, '{"batchId": 7}', 1, now() - interval '400 seconds'),
        (102, 'section', 'pending', 50, '{"batchId": 7}', 0, now() - interval '500 seconds'),
        (103, 'section', 'pending', 50, '{"batchId": "not a number"}', 0, now() - interval '10 seconds'),
        -- Default literals and finished work: only a check that ignored the map would count them.
        (104, 'EXPORT', 'QUEUED', 100, '{}', 0, now() - interval '1 hour'),
        (105, 'report_export', 'done', 10, '{"batchId": 7}', 1, now() - interval '2 hours')`);
    const check = await stuckCheck(WIDE, REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(check.items).toMatchObject([
      { id: '102', type: 'section', priority: 50, attempts: 0, runId: '7' },
      { id: '101', type: 'report_export', priority: 10, attempts: 1, runId: '7' },
    ]);
    expect(check.summary).toMatch(/^2 due pending jobs waiting over 120s: 1 report_export \(oldest 40[01]s\), 1 section \(oldest 50[01]s\)$/);
    expect(check.remedy).toContain('queue-doctor why 101');
  });
});
