import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadReferenceSchema, openQueueDoctorDatabase, type TestDatabase } from '../helpers/database.js';
import { migrateUp } from '../../src/migrations/index.js';
import { DEFAULT_SCHEMA_MAP } from '../../src/schemaMap.js';
import { claimInvariantViolations, runWorker, sleep, type Claim } from '../helpers/workers.js';

// Real workers on real connections claim and complete jobs through the balanced function. Some
// "crash": they claim with a 1-second lease and never complete, so the lease expires and the job is
// claimed again. Poison jobs crash every time and must end FAILED after max_attempts.

const WORKERS = 8;
const SECTION_JOBS = 1_900;
const EXPORT_JOBS = 60;
const POISON_JOBS = 40;
const TOTAL_JOBS = SECTION_JOBS + EXPORT_JOBS + POISON_JOBS;
const CRASH_RATE = 0.03;
const LEASE_SECONDS = 1;
const RUN_ID = '9a9a9a9a-0000-4000-8000-000000000001';
const DEADLINE_MS = 25_000;

let testDb: TestDatabase;

beforeAll(async () => {
  testDb = await createTestDatabase();
  await loadReferenceSchema(testDb.client);
  const db = await openQueueDoctorDatabase(testDb.url);
  await migrateUp(db, DEFAULT_SCHEMA_MAP);
  await db.close();
  await testDb.client.query(`INSERT INTO report_runs (id, status) VALUES ($1, 'RUNNING')`, [RUN_ID]);
  await testDb.client.query(
    `INSERT INTO jobs (type, priority, payload, scheduled_at)
     SELECT 'SECTION_RUN', CASE WHEN i % 4 = 0 THEN 50 ELSE 100 END, jsonb_build_object('section', i),
            now() + CASE WHEN i % 10 = 0 THEN make_interval(secs => (i % 30) / 10.0) ELSE interval '0' END
       FROM generate_series(1, $1::int) AS i`,
    [SECTION_JOBS],
  );
  await testDb.client.query(
    `INSERT INTO jobs (type, priority, run_id, payload) SELECT 'EXPORT', 100, $2, '{}' FROM generate_series(1, $1::int)`,
    [EXPORT_JOBS, RUN_ID],
  );
  await testDb.client.query(
    `INSERT INTO jobs (type, priority, payload) SELECT 'SECTION_RUN', 100, '{"poison": true}' FROM generate_series(1, $1::int)`,
    [POISON_JOBS],
  );
});
afterAll(async () => {
  await testDb.drop();
});

describe('the balanced claim under concurrent workers', () => {
  it(`processes ${TOTAL_JOBS} jobs on ${WORKERS} + 1 connections with crashing workers: none lost, none held twice`, async () => {
    const clients = await Promise.all(Array.from({ length: WORKERS + 2 }, () => testDb.connect()));
    const [controller, exportPool, ...workers] = clients as [pg.Client, pg.Client, ...pg.Client[]];
    const claims: Claim[] = [];
    const started = Date.now();
    const workerOptions = { leaseSeconds: LEASE_SECONDS, crashRate: CRASH_RATE, deadlineMs: DEADLINE_MS, started, claims };

    // The run completes half a second in: until then no export may be handed out.
    const completeRun = (async () => {
      await sleep(500);
      const early = await controller.query(`SELECT count(*)::int AS n FROM jobs WHERE type = 'EXPORT' AND (status <> 'QUEUED' OR attempts > 0)`);
      await controller.query(`UPDATE report_runs SET status = 'COMPLETED', final_report_json = '{"body": "done"}' WHERE id = $1`, [RUN_ID]);
      return early.rows[0].n as number;
    })();
    await Promise.all([
      ...workers.map((client, i) => runWorker(client, { ...workerOptions, worker: `worker-${i}`, types: null })),
      runWorker(exportPool, { ...workerOptions, worker: 'export-pool', types: ['EXPORT'] }),
    ]);
    const elapsedMs = Date.now() - started;
    expect(await completeRun).toBe(0);
    expect(elapsedMs).toBeLessThan(DEADLINE_MS);

    // Every job ended COMPLETED, or FAILED with the claim's own reason after max_attempts crashes.
    const final = await controller.query<{ id: string; status: string; attempts: number; last_error: string | null; poison: boolean }>(
      `SELECT id, status, attempts, last_error, payload ? 'poison' AS poison FROM jobs`,
    );
    expect(final.rows).toHaveLength(TOTAL_JOBS);
    const byStatus = (status: string) => final.rows.filter((row) => row.status === status);
    expect(byStatus('COMPLETED').length + byStatus('FAILED').length).toBe(TOTAL_JOBS);
    for (const job of byStatus('FAILED')) {
      expect(job.attempts).toBe(3);
      expect(job.last_error).toBe('queue-doctor: lease expired with no attempts left (3 of 3 used)');
    }
    expect(final.rows.filter((row) => row.poison).every((row) => row.status === 'FAILED')).toBe(true);

    expect(claimInvariantViolations(final.rows, claims)).toEqual([]);
    // The dedicated export pool only ever received exports.
    expect(claims.filter((claim) => claim.worker === 'export-pool' && claim.type !== 'EXPORT')).toEqual([]);

    // Throughput while work is plentiful: the tail only waits for the last 1-second leases to expire.
    const crashes = claims.filter((claim) => claim.crashed).length;
    const busy = [...claims].sort((a, b) => a.atMs - b.atMs).slice(0, SECTION_JOBS);
    const busyMs = busy.at(-1)!.atMs;
    console.info(
      `concurrency: ${claims.length} claims (${crashes} crashed, ${byStatus('FAILED').length} jobs FAILED) by ${WORKERS + 1} workers in ${elapsedMs} ms; ` +
        `the first ${busy.length} claims took ${busyMs} ms: ${Math.round(busy.length / (busyMs / 1000))} claims/s`,
    );
  }, 40_000);
});
