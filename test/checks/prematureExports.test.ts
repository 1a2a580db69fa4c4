import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { DEFAULT_INSPECT_OPTIONS, type InspectOptions } from '../../src/checks/types.js';
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

async function prematureCheck(map: SchemaMap = DEFAULT_SCHEMA_MAP, options: Partial<InspectOptions> = {}) {
  const report = await runInspect(db, map, { only: ['premature-exports'] }, { ...DEFAULT_INSPECT_OPTIONS, ...options });
  return report.checks[0]!;
}

const ids = (check: { items: { id: string }[] }) => check.items.map((item) => item.id);

const INCIDENT_RUNNING_RUN = '5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10';
const INCIDENT_BURNED_EXPORT = 'e1e1e1e1-0000-4000-8000-000000000003';
const NO_REPORT = 'No final report content available for export';

const run = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const job = (n: number) => `11111111-0000-4000-8000-${String(n).padStart(12, '0')}`;

async function insertRun(n: number, status: string, finalReport: string | null) {
  await testDb.client.query('INSERT INTO report_runs (id, status, final_report_json) VALUES ($1, $2, $3::jsonb)', [run(n), status, finalReport]);
}

async function insertExport(n: number, runNumber: number, status: string, extra: { attempts?: number; lastError?: string; updatedSecondsAgo?: number; type?: string } = {}) {
  await testDb.client.query(
    `INSERT INTO jobs (id, type, status, run_id, attempts, last_error, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7))`,
    [job(n), extra.type ?? 'EXPORT', status, run(runNumber), extra.attempts ?? 0, extra.lastError ?? null, extra.updatedSecondsAgo ?? 10],
  );
}

describe('premature-exports check', () => {
  it('fails on the incident: the export of the still RUNNING run already burned an attempt', async () => {
    await loadIncident(testDb.client);
    const check = await prematureCheck();
    expect(check).toMatchObject({ id: 'premature-exports', status: 'fail', count: 1 });
    expect(ids(check)).toEqual([INCIDENT_BURNED_EXPORT]);
    expect(check.items[0]).toEqual({
      id: INCIDENT_BURNED_EXPORT,
      status: 'QUEUED',
      runId: INCIDENT_RUNNING_RUN,
      runStatus: 'RUNNING',
      hasFinalReport: false,
      attempts: 1,
      lastError: NO_REPORT,
      burnedAttempts: true,
    });
    expect(check.remedy).toMatch(/^queue-doctor fix --premature\b/);
  });

  it('only warns under the balanced claim function, which holds such exports without burning attempts', async () => {
    await loadIncident(testDb.client);
    await testDb.client.query(`CREATE OR REPLACE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
      RETURNS SETOF jobs LANGUAGE sql AS $$ -- queue-doctor:balanced-claim v1
      SELECT * FROM jobs WHERE false $$`);
    const check = await prematureCheck();
    expect(check).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(check)).toEqual([INCIDENT_BURNED_EXPORT]);
    expect(check.summary).toMatch(/holds them until the run completes/);
    expect(check.remedy).toMatch(/only once their run is COMPLETED/);
  });

  it('is quiet on the incident once that run completes with a final report', async () => {
    await loadIncident(testDb.client);
    await testDb.client.query(`UPDATE report_runs SET status = 'COMPLETED', final_report_json = '{"body": "done"}' WHERE id = $1`, [INCIDENT_RUNNING_RUN]);
    const check = await prematureCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('is quiet when every active export has a completed run with a report and old failures are out of the window', async () => {
    await insertRun(1, 'COMPLETED', '{"body": "report"}');
    await insertRun(2, 'RUNNING', null);
    await insertExport(1, 1, 'QUEUED');
    await insertExport(2, 1, 'RUNNING', { attempts: 1 });
    await insertExport(3, 2, 'FAILED', { attempts: 3, lastError: NO_REPORT, updatedSecondsAgo: 3 * 24 * 3600 });
    await insertExport(4, 1, 'FAILED', { attempts: 3, lastError: 'disk full', updatedSecondsAgo: 60 });
    await insertExport(5, 2, 'COMPLETED');
    await insertExport(6, 2, 'QUEUED', { type: 'SECTION_RUN' });
    const check = await prematureCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('warns on waiting and running exports whose run is unfinished or has an empty final report', async () => {
    await insertRun(1, 'RUNNING', null);
    await insertRun(2, 'COMPLETED', null);
    await insertRun(3, 'COMPLETED', 'null');
    await insertRun(4, 'COMPLETED', '{}');
    await insertRun(5, 'COMPLETED', '""');
    await insertRun(6, 'COMPLETED', '[]');
    await insertRun(7, 'COMPLETED', '{"body": "fine"}');
    await insertRun(8, 'FAILED', '{"partial": true}');
    await insertExport(1, 1, 'QUEUED');
    await insertExport(2, 2, 'RUNNING', { attempts: 1 });
    await insertExport(3, 3, 'QUEUED');
    await insertExport(4, 4, 'QUEUED');
    await insertExport(5, 5, 'QUEUED');
    await insertExport(6, 6, 'QUEUED');
    await insertExport(7, 7, 'QUEUED');
    await insertExport(8, 8, 'QUEUED');
    await insertExport(9, 1, 'FAILED', { attempts: 3, lastError: 'worker crashed', updatedSecondsAgo: 600 });
    const check = await prematureCheck();
    expect(check).toMatchObject({ status: 'warn', count: 8 });
    expect(ids(check)).toEqual([job(1), job(2), job(3), job(4), job(5), job(6), job(8), job(9)]);
    expect(check.items.find((i) => i.id === job(8))).toMatchObject({ runStatus: 'FAILED', hasFinalReport: true, burnedAttempts: false });
    expect(check.items.find((i) => i.id === job(2))).toMatchObject({ status: 'RUNNING', runStatus: 'COMPLETED', hasFinalReport: false });
    expect(check.remedy).toMatch(/^queue-doctor fix --premature\b/);
  });

  it('fails on recently FAILED exports burned on "No final report content", even when the run has completed since', async () => {
    await insertRun(1, 'COMPLETED', '{"body": "report"}');
    await insertRun(2, 'RUNNING', null);
    const longError = `Error: ${NO_REPORT} (${'x'.repeat(200)})`;
    await insertExport(1, 1, 'FAILED', { attempts: 3, lastError: longError, updatedSecondsAgo: 600 });
    await insertExport(2, 2, 'QUEUED');
    await insertExport(3, 1, 'FAILED', { attempts: 3, lastError: NO_REPORT, updatedSecondsAgo: 3 * 24 * 3600 });
    const check = await prematureCheck();
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(ids(check)).toEqual([job(1), job(2)]);
    const burned = check.items[0]!;
    expect(burned).toMatchObject({ status: 'FAILED', runStatus: 'COMPLETED', hasFinalReport: true, attempts: 3, burnedAttempts: true });
    expect(burned.lastError).toBe(`${longError.slice(0, 120)}…`);
    expect(check.items[1]).toMatchObject({ status: 'QUEUED', runStatus: 'RUNNING', burnedAttempts: false });

    const narrowWindow = await prematureCheck(DEFAULT_SCHEMA_MAP, { recentFailureSeconds: 60 });
    expect(narrowWindow).toMatchObject({ status: 'warn', count: 1 });
    expect(ids(narrowWindow)).toEqual([job(2)]);

    const capped = await prematureCheck(DEFAULT_SCHEMA_MAP, { limit: 1 });
    expect(capped).toMatchObject({ status: 'fail', count: 2 });
    expect(ids(capped)).toEqual([job(1)]);
  });

  it('follows the schema map on a remapped schema (run id from a payload key)', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(`
      INSERT INTO queue.pipeline_runs (run_key, state, output) VALUES
        ('cccccccc-0000-4000-8000-000000000001', 'done', '{"body": "report"}'),
        ('cccccccc-0000-4000-8000-000000000002', 'active', NULL),
        ('cccccccc-0000-4000-8000-000000000003', 'COMPLETED', '{"body": "report"}');
      INSERT INTO queue.background_tasks (task_id, kind, state, body, tries, error, touched_at) VALUES
        ('aaaaaaaa-0000-4000-8000-000000000001', 'render_pdf', 'pending', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000001"}', 0, NULL, now()),
        ('aaaaaaaa-0000-4000-8000-000000000002', 'render_pdf', 'pending', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000002"}', 1, '${NO_REPORT}', now()),
        ('aaaaaaaa-0000-4000-8000-000000000003', 'render_pdf', 'active', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000003"}', 0, NULL, now()),
        ('aaaaaaaa-0000-4000-8000-000000000004', 'render_pdf', 'dead', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000001"}', 3, '${NO_REPORT}', now()),
        ('aaaaaaaa-0000-4000-8000-000000000005', 'render_pdf', 'pending', '{"pipelineRun": "not-a-uuid"}', 0, NULL, now()),
        ('aaaaaaaa-0000-4000-8000-000000000006', 'EXPORT', 'pending', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000002"}', 0, NULL, now()),
        ('aaaaaaaa-0000-4000-8000-000000000007', 'render_pdf', 'QUEUED', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000002"}', 0, NULL, now())`);
    const check = await prematureCheck(REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'fail', count: 4 });
    expect(ids(check)).toEqual([
      'aaaaaaaa-0000-4000-8000-000000000002',
      'aaaaaaaa-0000-4000-8000-000000000004',
      'aaaaaaaa-0000-4000-8000-000000000003',
      'aaaaaaaa-0000-4000-8000-000000000005',
    ]);
    expect(check.items[0]).toMatchObject({ status: 'pending', runStatus: 'active', runId: 'cccccccc-0000-4000-8000-000000000002', burnedAttempts: true });
    expect(check.items[1]).toMatchObject({ status: 'dead', runStatus: 'done', hasFinalReport: true, burnedAttempts: true });
    // 'COMPLETED' is not this schema's completed status
    expect(check.items[2]).toMatchObject({ status: 'active', runStatus: 'COMPLETED', hasFinalReport: true });
    expect(check.items[3]).toMatchObject({ runId: null, runStatus: null, hasFinalReport: false });
  });
});
