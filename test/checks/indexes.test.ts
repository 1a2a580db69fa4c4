import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { DEFAULT_INSPECT_OPTIONS, type InspectOptions } from '../../src/checks/types.js';
import { activeSetIndexName, requiredActiveSetIndexes } from '../../src/checks/indexes.js';
import { buildQueueSql, type QueueModel } from '../../src/schema/queueModel.js';
import type { Database } from '../../src/db/database.js';
import { REMAPPED_DDL, REMAPPED_MAP } from '../migrations/fixtures.js';
import { migrateUp } from '../../src/migrations/index.js';

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

async function indexesCheck(map: SchemaMap = DEFAULT_SCHEMA_MAP, options: Partial<InspectOptions> = {}) {
  const report = await runInspect(db, map, { only: ['indexes'] }, { ...DEFAULT_INSPECT_OPTIONS, ...options });
  return report.checks[0]!;
}

const ids = (check: { items: { id: string }[] }) => check.items.map((item) => item.id);
const ALL_PURPOSES = ['queued-ready', 'running-leases', 'failed-recent'];

const modelFor = (map: SchemaMap) => ({ map, sql: buildQueueSql(map) }) as QueueModel;

describe('indexes check', () => {
  it('also needs the claim-order index once the balanced claim function is installed', async () => {
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
    expect(await indexesCheck()).toMatchObject({ status: 'ok', count: 0 });
    await testDb.client.query('DROP INDEX jobs_qd_claim_order_idx');
    const check = await indexesCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(check)).toEqual(['claim-order']);
    expect(check.items[0]!.statement).toMatch(/^CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_claim_order_idx" ON "public"\."jobs"/);
    await testDb.client.query('DROP SCHEMA IF EXISTS queue_doctor CASCADE');
  });

  it('warns on the reference schema, which ships none of the partial indexes, with the statements to create them', async () => {
    const check = await indexesCheck();
    expect(check).toMatchObject({ id: 'indexes', status: 'warn', count: 3 });
    expect(ids(check)).toEqual(ALL_PURPOSES);
    expect(check.items).toEqual([
      {
        id: 'queued-ready',
        index: 'jobs_qd_queued_ready_idx',
        statement: `CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_queued_ready_idx" ON "public"."jobs" ("priority", "scheduled_at") WHERE "status" = 'QUEUED'`,
      },
      {
        id: 'running-leases',
        index: 'jobs_qd_running_lease_idx',
        statement: `CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_running_lease_idx" ON "public"."jobs" ("lease_expires_at") WHERE "status" = 'RUNNING'`,
      },
      {
        id: 'failed-recent',
        index: 'jobs_qd_failed_recent_idx',
        statement: `CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_failed_recent_idx" ON "public"."jobs" ("updated_at") WHERE "status" = 'FAILED'`,
      },
    ]);
    expect(check.remedy).toContain(`${check.items[0]!.statement}; ${check.items[1]!.statement}; ${check.items[2]!.statement}`);
    expect(check.remedy).toMatch(/queue-doctor migrate up/);

    const capped = await indexesCheck(DEFAULT_SCHEMA_MAP, { limit: 1 });
    expect(capped).toMatchObject({ status: 'warn', count: 3 });
    expect(ids(capped)).toEqual(['queued-ready']);
  });

  it('is quiet once the recommended statements have run', async () => {
    for (const item of (await indexesCheck()).items) await testDb.client.query(item.statement as string);
    const check = await indexesCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
    expect(check.summary).toContain('jobs_qd_queued_ready_idx');
  });

  it('counts an index of the right shape under any name, and reports only the purposes still missing', async () => {
    await testDb.client.query(`CREATE INDEX app_claim_order ON jobs (priority, scheduled_at, id) WHERE status = 'QUEUED'`);
    await testDb.client.query(`CREATE INDEX app_active_leases ON jobs (lease_expires_at) WHERE status IN ('RUNNING', 'QUEUED') AND lease_expires_at IS NOT NULL`);
    const check = await indexesCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(check)).toEqual(['failed-recent']);
  });

  it('does not count indexes of the wrong shape', async () => {
    await testDb.client.query(`
      CREATE INDEX full_claim_order ON jobs (priority, scheduled_at);
      CREATE INDEX swapped_claim_order ON jobs (scheduled_at, priority) WHERE status = 'QUEUED';
      CREATE INDEX other_status_claim_order ON jobs (priority, scheduled_at) WHERE status = 'RUNNING';
      CREATE INDEX negated_leases ON jobs (lease_expires_at) WHERE status <> 'RUNNING';
      CREATE INDEX hashed_failures ON jobs USING hash (updated_at) WHERE status = 'FAILED';
      CREATE INDEX literal_elsewhere ON jobs (updated_at) WHERE type = 'FAILED';`);
    const check = await indexesCheck();
    expect(check).toMatchObject({ status: 'warn', count: 3 });
    expect(ids(check)).toEqual(ALL_PURPOSES);
  });

  it('does not count an INVALID index (a failed CREATE INDEX CONCURRENTLY)', async () => {
    await testDb.client.query(`INSERT INTO jobs (type, status, priority, scheduled_at) VALUES
      ('EXPORT', 'QUEUED', 100, '2024-01-01T00:00:00Z'), ('EXPORT', 'QUEUED', 100, '2024-01-01T00:00:00Z')`);
    await expect(
      testDb.client.query(`CREATE UNIQUE INDEX CONCURRENTLY jobs_qd_queued_ready_idx ON jobs (priority, scheduled_at) WHERE status = 'QUEUED'`),
    ).rejects.toThrow(/duplicate|unique/i);
    const left = await testDb.client.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'jobs_qd_queued_ready_idx'::regclass`);
    expect(left.rows).toEqual([{ indisvalid: false }]);
    const check = await indexesCheck();
    expect(check).toMatchObject({ status: 'warn', count: 3 });
    expect(ids(check)).toEqual(ALL_PURPOSES);
  });

  it('follows the schema map on a remapped schema', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(`CREATE INDEX tasks_by_lease ON queue.background_tasks (lease_until) WHERE state = 'active'`);
    // the reference shape on the reference names means nothing here
    await testDb.client.query(`CREATE INDEX tasks_ref_names ON queue.background_tasks (rank, run_at) WHERE state = 'QUEUED'`);
    const check = await indexesCheck(REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'warn', count: 2 });
    expect(ids(check)).toEqual(['queued-ready', 'failed-recent']);
    expect(check.items[0]).toEqual({
      id: 'queued-ready',
      index: 'background_tasks_qd_queued_ready_idx',
      statement: `CREATE INDEX CONCURRENTLY IF NOT EXISTS "background_tasks_qd_queued_ready_idx" ON "queue"."background_tasks" ("rank", "run_at") WHERE "state" = 'pending'`,
    });
    for (const item of check.items) await testDb.client.query(item.statement as string);
    expect(await indexesCheck(REMAPPED_MAP)).toMatchObject({ status: 'ok', count: 0, items: [] });
  });

  it('recognises its own statements on names that need quoting and literals with quotes', async () => {
    await testDb.client.query(`
      CREATE SCHEMA queue;
      CREATE TABLE queue.report_runs (id uuid PRIMARY KEY, status text, final_report_json jsonb);
      CREATE TABLE queue."Work Items" (
        "Id" uuid PRIMARY KEY, "Type" text, "Status" varchar(40), "order" integer, payload jsonb, run_id uuid,
        attempts integer, max_attempts integer, scheduled_at timestamptz, locked_by text, locked_at timestamptz,
        lease_expires_at timestamptz, last_error text, created_at timestamptz, updated_at timestamptz)`);
    const map = parseSchemaMap({
      schema: 'queue',
      jobs: { table: 'Work Items', columns: { id: 'Id', type: 'Type', status: 'Status', priority: 'order' } },
      statuses: { queued: "it's queued", running: 'RUNNING', completed: 'COMPLETED', failed: 'FAILED', cancelled: 'CANCELLED' },
      runs: { table: 'report_runs' },
    });
    const missing = await indexesCheck(map);
    expect(missing).toMatchObject({ status: 'warn', count: 3 });
    expect(missing.items[0]!.statement).toBe(
      `CREATE INDEX CONCURRENTLY IF NOT EXISTS "Work Items_qd_queued_ready_idx" ON "queue"."Work Items" ("order", "scheduled_at") WHERE "Status" = 'it''s queued'`,
    );
    for (const item of missing.items) await testDb.client.query(item.statement as string);
    expect(await indexesCheck(map)).toMatchObject({ status: 'ok', count: 0 });
  });

  it('exports the definitions migrations reuse, with names within 63 bytes', () => {
    const definitions = requiredActiveSetIndexes(modelFor(DEFAULT_SCHEMA_MAP));
    expect(definitions.map((d) => [d.purpose, d.name, d.columns, d.statusLiteral])).toEqual([
      ['queued-ready', 'jobs_qd_queued_ready_idx', ['priority', 'scheduled_at'], 'QUEUED'],
      ['running-leases', 'jobs_qd_running_lease_idx', ['lease_expires_at'], 'RUNNING'],
      ['failed-recent', 'jobs_qd_failed_recent_idx', ['updated_at'], 'FAILED'],
    ]);

    const longAscii = 'q'.repeat(63);
    const longOther = `${'q'.repeat(62)}z`;
    const name = activeSetIndexName(longAscii, '_qd_queued_ready_idx');
    expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
    expect(name).toMatch(/^q+_[0-9a-f]{8}_qd_queued_ready_idx$/);
    expect(activeSetIndexName(longOther, '_qd_queued_ready_idx')).not.toBe(name);

    const multibyte = activeSetIndexName('é'.repeat(31), '_qd_failed_recent_idx');
    expect(Buffer.byteLength(multibyte)).toBeLessThanOrEqual(63);
    expect(multibyte).toMatch(/^é+_[0-9a-f]{8}_qd_failed_recent_idx$/);
  });
});
