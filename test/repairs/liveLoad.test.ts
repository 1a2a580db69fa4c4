import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadReferenceSchema, openQueueDoctorDatabase, type TestDatabase } from '../helpers/database.js';
import { claimInvariantViolations, runWorker, sleep, type Claim } from '../helpers/workers.js';
import { migrateUp } from '../../src/migrations/index.js';
import { runFix, type FixResult } from '../../src/repairs/fix.js';
import { DEFAULT_SCHEMA_MAP } from '../../src/schemaMap.js';

// The doctor at work on a live queue: while 8 workers claim, crash and complete through the
// balanced function, `fix --release-expired --premature --reprioritize` runs over and over beside
// them. Nothing may be lost, no attempt handed out twice, no job held under two live leases.

const WORKERS = 8;
const JOBS = 800;
const EXPORTS = 40;
const POISON = 10;
const DEADLINE_MS = 25_000;

let testDb: TestDatabase;

beforeAll(async () => {
  testDb = await createTestDatabase();
  await loadReferenceSchema(testDb.client);
  const db = await openQueueDoctorDatabase(testDb.url);
  await migrateUp(db, DEFAULT_SCHEMA_MAP);
  await db.close();
  await testDb.client.query(`INSERT INTO report_runs (id, status, final_report_json) VALUES ('7a7a7a7a-0000-4000-8000-000000000001', 'COMPLETED', '{"body": "done"}')`);
  await testDb.client.query(`INSERT INTO jobs (type, priority, payload) SELECT 'SECTION_RUN', 100, jsonb_build_object('section', i) FROM generate_series(1, $1::int) AS i`, [JOBS]);
  await testDb.client.query(`INSERT INTO jobs (type, priority, run_id) SELECT 'EXPORT', 100, '7a7a7a7a-0000-4000-8000-000000000001' FROM generate_series(1, $1::int)`, [EXPORTS]);
  await testDb.client.query(`INSERT INTO jobs (type, priority, payload) SELECT 'SECTION_RUN', 100, '{"poison": true}' FROM generate_series(1, $1::int)`, [POISON]);
});
afterAll(async () => {
  await testDb.drop();
});

describe('fix beside live workers', () => {
  it('repairs while workers run: every job ends COMPLETED or FAILED, none claimed twice', async () => {
    const clients = await Promise.all(Array.from({ length: WORKERS + 1 }, () => testDb.connect()));
    const [controller, ...workers] = clients as [pg.Client, ...pg.Client[]];
    const doctor = await openQueueDoctorDatabase(testDb.url);
    const claims: Claim[] = [];
    const fixes: FixResult[] = [];
    const started = Date.now();
    let workersDone = false;

    const doctorLoop = (async () => {
      while (!workersDone) {
        fixes.push(await runFix(doctor, DEFAULT_SCHEMA_MAP, { releaseExpired: true, premature: true, reprioritize: 50, dryRun: false, commandLine: 'queue-doctor fix (live-load test)' }));
        await sleep(100);
      }
    })();
    await Promise.all(
      workers.map((client, i) =>
        runWorker(client, { worker: `worker-${i}`, types: null, leaseSeconds: 1, crashRate: 0.05, deadlineMs: DEADLINE_MS, started, claims }),
      ),
    );
    workersDone = true;
    await doctorLoop;
    await doctor.close();

    const final = await controller.query<{ id: string; status: string; attempts: number; last_error: string | null; poison: boolean }>(
      `SELECT id, status, attempts, last_error, payload ? 'poison' AS poison FROM jobs`,
    );
    expect(final.rows).toHaveLength(JOBS + EXPORTS + POISON);
    expect(final.rows.filter((row) => row.status !== 'COMPLETED' && row.status !== 'FAILED')).toEqual([]);
    expect(final.rows.filter((row) => row.poison).every((row) => row.status === 'FAILED')).toBe(true);
    expect(final.rows.filter((row) => row.status === 'FAILED').every((row) => row.attempts === 3 && /queue-doctor: /.test(row.last_error ?? ''))).toBe(true);
    expect(claimInvariantViolations(final.rows, claims)).toEqual([]);

    // The doctor did real work beside the workers, and every change it made is audited.
    expect(fixes.length).toBeGreaterThan(3);
    const changed = fixes.flatMap((fix) => fix.actions).reduce((sum, action) => sum + action.rowsAffected, 0);
    expect(changed).toBeGreaterThan(0);
    const audited = await controller.query(`SELECT coalesce(sum(cardinality(affected_ids)), 0)::int AS n FROM queue_doctor.audit_log`);
    expect(audited.rows[0].n).toBe(changed);
  }, 40_000);
});
