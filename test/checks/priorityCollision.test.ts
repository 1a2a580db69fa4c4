import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { DEFAULT_INSPECT_OPTIONS, type InspectOptions } from '../../src/checks/types.js';
import { suggestedExportPriority } from '../../src/checks/priorityCollision.js';
import type { Database } from '../../src/db/database.js';
import { REMAPPED_DDL, REMAPPED_MAP } from '../migrations/fixtures.js';

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
  await testDb.client.query('DROP SCHEMA IF EXISTS queue CASCADE');
  await loadReferenceSchema(testDb.client);
});

async function collisionCheck(map: SchemaMap = DEFAULT_SCHEMA_MAP, options: Partial<InspectOptions> = {}) {
  const report = await runInspect(db, map, { only: ['priority-collision'] }, { ...DEFAULT_INSPECT_OPTIONS, ...options });
  return report.checks[0]!;
}

const ids = (check: { items: { id: string }[] }) => check.items.map((item) => item.id);

const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001';
const EXPORT_2 = 'e1e1e1e1-0000-4000-8000-000000000002';
const EXPORT_3 = 'e1e1e1e1-0000-4000-8000-000000000003';

async function insertJob(type: string, status: string, priority: number, extra: { id?: string; leaseSeconds?: number; scheduledSeconds?: number } = {}) {
  await testDb.client.query(
    `INSERT INTO jobs (id, type, status, priority, scheduled_at, lease_expires_at)
     VALUES (COALESCE($1::uuid, gen_random_uuid()), $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6))`,
    [extra.id ?? null, type, status, priority, extra.scheduledSeconds ?? -60, extra.leaseSeconds ?? 300],
  );
}

describe('priority-collision check', () => {
  it('warns on the incident: all three queued exports share priority 100 with the bulk work', async () => {
    await loadIncident(testDb.client);
    const check = await collisionCheck();
    expect(check).toMatchObject({ id: 'priority-collision', status: 'warn', count: 3 });
    expect(ids(check)).toEqual([EXPORT_1, EXPORT_2, EXPORT_3]);
    expect(check.items[0]).toMatchObject({ priority: 100, bestBulkPriority: 100, due: true });
    expect(check.items[0]!.waitingSeconds).toBeGreaterThanOrEqual(174);
    expect(check.summary).toMatch(/52 bulk job\(s\) \(12 queued, 40 with expired leases\)/);
    expect(check.remedy).toMatch(/^queue-doctor fix --reprioritize 50\b/);
  });

  it('is quiet once the incident exports are moved ahead of the bulk work', async () => {
    await loadIncident(testDb.client);
    await testDb.client.query(`UPDATE jobs SET priority = 50 WHERE type = 'EXPORT' AND status = 'QUEUED'`);
    const check = await collisionCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('caps items at --limit but counts every collision', async () => {
    await loadIncident(testDb.client);
    const check = await collisionCheck(DEFAULT_SCHEMA_MAP, { limit: 1 });
    expect(check).toMatchObject({ status: 'warn', count: 3 });
    expect(ids(check)).toEqual([EXPORT_1]);
  });

  it('is quiet when no bulk work is active, whatever the export priorities', async () => {
    await insertJob('EXPORT', 'QUEUED', 100, { id: EXPORT_1 });
    await insertJob('SECTION_RUN', 'RUNNING', 10, { leaseSeconds: 120 }); // a live lease: not claimable
    await insertJob('SECTION_RUN', 'COMPLETED', 10);
    const check = await collisionCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('counts expired leases and not-yet-due queued jobs as bulk work; only strictly-ahead exports are safe', async () => {
    await insertJob('EXPORT', 'QUEUED', 20, { id: EXPORT_1 });
    await insertJob('EXPORT', 'QUEUED', 30, { id: EXPORT_2, scheduledSeconds: 600 });
    await insertJob('EXPORT', 'QUEUED', 29, { id: EXPORT_3 });
    await insertJob('SECTION_RUN', 'RUNNING', 5, { leaseSeconds: 120 }); // live lease: ignored
    await insertJob('SECTION_RUN', 'RUNNING', 30, { leaseSeconds: -5 }); // expired: claimable
    await insertJob('SECTION_RUN', 'QUEUED', 40, { scheduledSeconds: 600 }); // not due yet: still competes
    const check = await collisionCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(check)).toEqual([EXPORT_2]);
    expect(check.items[0]).toMatchObject({ priority: 30, bestBulkPriority: 30, waitingSeconds: 0, due: false });
    expect(check.remedy).toMatch(/^queue-doctor fix --reprioritize 20\b/);
  });

  it('suggests a priority strictly ahead of the best bulk priority', () => {
    expect(suggestedExportPriority(100)).toBe(50);
    expect(suggestedExportPriority(51)).toBe(50);
    expect(suggestedExportPriority(50)).toBe(40);
    expect(suggestedExportPriority(12)).toBe(2);
    expect(suggestedExportPriority(5)).toBe(0);
    expect(suggestedExportPriority(0.5)).toBe(0);
    expect(suggestedExportPriority(0)).toBe(-10);
    expect(suggestedExportPriority(-3)).toBe(-13);
    for (const best of [100, 50, 12, 5, 1, 0.5, 0, -3]) expect(suggestedExportPriority(best)).toBeLessThan(best);
  });

  it('follows the schema map on a remapped schema', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(`
      INSERT INTO queue.background_tasks (task_id, kind, state, rank, body, run_at, lease_until) VALUES
        ('aaaaaaaa-0000-4000-8000-000000000001', 'render_pdf', 'pending', 100, '{}', now() - interval '3 minutes', NULL),
        ('aaaaaaaa-0000-4000-8000-000000000002', 'render_pdf', 'pending', 10, '{}', now() - interval '3 minutes', NULL),
        ('aaaaaaaa-0000-4000-8000-000000000003', 'section', 'active', 60, '{}', now() - interval '9 minutes', now() - interval '1 minute'),
        -- statuses under the reference names mean nothing in this schema
        ('aaaaaaaa-0000-4000-8000-000000000004', 'section', 'QUEUED', 1, '{}', now() - interval '9 minutes', NULL),
        ('aaaaaaaa-0000-4000-8000-000000000005', 'EXPORT', 'pending', 500, '{}', now() - interval '9 minutes', NULL)`);
    const check = await collisionCheck(REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(check)).toEqual(['aaaaaaaa-0000-4000-8000-000000000001']);
    expect(check.items[0]).toMatchObject({ priority: 100, bestBulkPriority: 60 });
    expect(check.remedy).toMatch(/^queue-doctor fix --reprioritize 50\b/);
  });
});
