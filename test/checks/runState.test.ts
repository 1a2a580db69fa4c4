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

async function runStateCheck(map: SchemaMap = DEFAULT_SCHEMA_MAP, options: Partial<InspectOptions> = {}) {
  const report = await runInspect(db, map, { only: ['run-state'] }, { ...DEFAULT_INSPECT_OPTIONS, ...options });
  return report.checks[0]!;
}

const ids = (check: { items: { id: string }[] }) => check.items.map((item) => item.id);

const run = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const job = (n: number) => `11111111-0000-4000-8000-${String(n).padStart(12, '0')}`;

async function insertRun(n: number, status: string, finalReport: string | null) {
  await testDb.client.query('INSERT INTO report_runs (id, status, final_report_json) VALUES ($1, $2, $3::jsonb)', [run(n), status, finalReport]);
}

async function insertJob(n: number, runNumber: number | null, status: string, type = 'EXPORT') {
  await testDb.client.query('INSERT INTO jobs (id, type, status, run_id) VALUES ($1, $2, $3, $4)', [job(n), type, status, runNumber === null ? null : run(runNumber)]);
}

describe('run-state check', () => {
  it('is quiet on the incident: its runs are consistent (the trouble is elsewhere)', async () => {
    await loadIncident(testDb.client);
    const check = await runStateCheck();
    expect(check).toMatchObject({ id: 'run-state', status: 'ok', count: 0, items: [], remedy: null });
  });

  it('is quiet on inconsistent runs that no active job points to', async () => {
    await insertRun(1, 'COMPLETED', null);
    await insertRun(2, 'FAILED', null);
    await insertRun(3, 'RUNNING', null);
    await insertRun(4, 'COMPLETED', '{"body": "report"}');
    await insertJob(1, 1, 'COMPLETED');
    await insertJob(2, 2, 'FAILED');
    await insertJob(3, 2, 'CANCELLED');
    await insertJob(4, 2, 'QUEUED', 'SECTION_RUN'); // bulk work of a failed run is not an export
    await insertJob(5, 3, 'QUEUED');
    await insertJob(6, 4, 'RUNNING');
    await insertJob(7, null, 'QUEUED', 'SECTION_RUN'); // run-less bulk jobs are allowed
    const check = await runStateCheck();
    expect(check).toMatchObject({ status: 'ok', count: 0, items: [], remedy: null });
  });

  it('fails on a COMPLETED run without a final report that active jobs wait for', async () => {
    await insertRun(1, 'COMPLETED', null);
    await insertRun(2, 'COMPLETED', '{}');
    await insertRun(3, 'COMPLETED', '{"body": "report"}');
    for (let n = 1; n <= 7; n += 1) await insertJob(n, 1, n % 2 === 0 ? 'RUNNING' : 'QUEUED');
    await insertJob(8, 1, 'QUEUED', 'SECTION_RUN');
    await insertJob(9, 2, 'QUEUED');
    await insertJob(10, 3, 'QUEUED');
    const check = await runStateCheck();
    expect(check).toMatchObject({ status: 'fail', count: 2 });
    expect(ids(check)).toEqual([run(1), run(2)]);
    expect(check.items[0]).toEqual({
      id: run(1),
      kind: 'completed-without-report',
      runStatus: 'COMPLETED',
      jobIds: [job(1), job(2), job(3), job(4), job(5)],
      jobCount: 8,
    });
    expect(check.items[1]).toMatchObject({ kind: 'completed-without-report', jobIds: [job(9)], jobCount: 1 });
    expect(check.remedy).toMatch(/re-run the report/);
  });

  it('warns on active exports of FAILED or CANCELLED runs and on jobs whose run does not exist', async () => {
    await testDb.client.query('ALTER TABLE jobs DROP CONSTRAINT jobs_run_id_fkey');
    await insertRun(1, 'FAILED', null);
    await insertRun(2, 'CANCELLED', '{"body": "partial"}');
    await insertJob(1, 1, 'QUEUED');
    await insertJob(2, 1, 'RUNNING');
    await insertJob(3, 1, 'QUEUED', 'SECTION_RUN');
    await insertJob(4, 2, 'QUEUED');
    await insertJob(5, 9, 'QUEUED', 'SECTION_RUN'); // run 9 was never inserted
    await insertJob(6, null, 'QUEUED'); // an export with no run at all
    const check = await runStateCheck();
    expect(check).toMatchObject({ status: 'warn', count: 4 });
    expect(ids(check)).toEqual([run(1), run(2), run(9), job(6)]);
    expect(check.items).toEqual([
      { id: run(1), kind: 'export-for-dead-run', runStatus: 'FAILED', jobIds: [job(1), job(2)], jobCount: 2 },
      { id: run(2), kind: 'export-for-dead-run', runStatus: 'CANCELLED', jobIds: [job(4)], jobCount: 1 },
      { id: run(9), kind: 'missing-run', runStatus: null, jobIds: [job(5)], jobCount: 1 },
      { id: job(6), kind: 'missing-run', runStatus: null, jobIds: [job(6)], jobCount: 1 },
    ]);
    expect(check.remedy).toMatch(/queue-doctor fix --premature/);

    const capped = await runStateCheck(DEFAULT_SCHEMA_MAP, { limit: 2 });
    expect(capped).toMatchObject({ status: 'warn', count: 4 });
    expect(ids(capped)).toEqual([run(1), run(2)]);
  });

  it('follows the schema map on a remapped schema (run id from a payload key)', async () => {
    await testDb.client.query(REMAPPED_DDL);
    const runKey = (n: number) => `cccccccc-0000-4000-8000-00000000000${n}`;
    const task = (n: number) => `aaaaaaaa-0000-4000-8000-00000000000${n}`;
    await testDb.client.query(`
      INSERT INTO queue.pipeline_runs (run_key, state, output) VALUES
        ('${runKey(1)}', 'done', NULL),
        ('${runKey(2)}', 'dead', NULL),
        ('${runKey(3)}', 'aborted', NULL),
        ('${runKey(4)}', 'FAILED', NULL),
        ('${runKey(5)}', 'done', '{"body": "report"}');
      INSERT INTO queue.background_tasks (task_id, kind, state, body) VALUES
        ('${task(1)}', 'render_pdf', 'pending', '{"pipelineRun": "${runKey(1)}"}'),
        ('${task(2)}', 'render_pdf', 'active',  '{"pipelineRun": "${runKey(2)}"}'),
        ('${task(3)}', 'render_pdf', 'pending', '{"pipelineRun": "${runKey(3)}"}'),
        ('${task(4)}', 'render_pdf', 'pending', '{"pipelineRun": "${runKey(4)}"}'),
        ('${task(5)}', 'render_pdf', 'pending', '{"pipelineRun": "${runKey(5)}"}'),
        ('${task(6)}', 'section',    'pending', '{"pipelineRun": "cccccccc-0000-4000-8000-000000000009"}'),
        ('${task(7)}', 'render_pdf', 'pending', '{"other": 1}'),
        ('${task(8)}', 'render_pdf', 'QUEUED',  '{"pipelineRun": "${runKey(2)}"}'),
        ('${task(9)}', 'EXPORT',     'pending', '{"pipelineRun": "${runKey(3)}"}')`);
    const check = await runStateCheck(REMAPPED_MAP);
    expect(check).toMatchObject({ status: 'fail', count: 5 });
    expect(check.items.map((i) => [i.id, i.kind])).toEqual([
      [runKey(1), 'completed-without-report'],
      [runKey(2), 'export-for-dead-run'],
      [runKey(3), 'export-for-dead-run'],
      [task(7), 'missing-run'],
      ['cccccccc-0000-4000-8000-000000000009', 'missing-run'],
    ]);
    expect(check.items[1]).toMatchObject({ runStatus: 'dead', jobIds: [task(2)] });
    expect(check.items[2]).toMatchObject({ runStatus: 'aborted', jobIds: [task(3)] });
  });
});
