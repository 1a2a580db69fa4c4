import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { migrateUp } from '../../src/migrations/index.js';
import { DEFAULT_SCHEMA_MAP } from '../../src/schemaMap.js';
import type { Database } from '../../src/db/database.js';

// The incident of the root-cause analysis (sql/fixtures/incident.sql), claimed through the app's
// legacy function and through the balanced one. Leases of 0 seconds model the incident's worst
// case: every lease handed out has expired again by the next claim.

const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001'; // run COMPLETED, waiting 175 s
const EXPORT_2 = 'e1e1e1e1-0000-4000-8000-000000000002'; // run COMPLETED, waiting 160 s
const EXPORT_OF_RUNNING_RUN = 'e1e1e1e1-0000-4000-8000-000000000003';
const RUNNING_RUN = '5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10';

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
  await testDb.client.query('DROP SCHEMA IF EXISTS queue_doctor CASCADE');
  await loadReferenceSchema(testDb.client);
  await loadIncident(testDb.client);
});

interface Claimed {
  id: string;
  type: string;
  attempts: number;
  max_attempts: number;
}

/** `count` separate claims (each its own transaction, as workers make them). */
async function claimMany(count: number, leaseSeconds: number): Promise<Claimed[]> {
  const claimed: Claimed[] = [];
  for (let i = 0; i < count; i++) {
    const result = await testDb.client.query<Claimed>(`SELECT id, type, attempts, max_attempts FROM claim_next_job($1, $2)`, [`worker-${i % 4}`, leaseSeconds]);
    claimed.push(...result.rows);
  }
  return claimed;
}

/**
 * Jobs the balanced function may hand out that became ready no later than `jobId`: due QUEUED jobs
 * and expired leases with attempts left, minus exports still waiting for their run.
 */
async function readyNoLaterThan(jobId: string): Promise<string[]> {
  const result = await testDb.client.query<{ id: string }>(
    `WITH line AS (
       SELECT j.id, j.priority, CASE WHEN j.status = 'QUEUED' THEN j.scheduled_at ELSE j.lease_expires_at END AS ready
         FROM jobs j LEFT JOIN report_runs r ON r.id = j.run_id
        WHERE j.status IN ('QUEUED', 'RUNNING') AND j.attempts < j.max_attempts
          AND (j.type <> 'EXPORT' OR (r.status = 'COMPLETED' AND r.final_report_json IS NOT NULL)))
     SELECT l.id FROM line l, line target
      WHERE target.id = $1 AND l.id <> target.id AND (l.priority, l.ready) <= (target.priority, target.ready)`,
    [jobId],
  );
  return result.rows.map((row) => row.id);
}

describe('the legacy claim function on the incident', () => {
  it('hands out no export in 100 claims while leases keep expiring, even after reprioritizing, and ignores max_attempts', async () => {
    const claimed = await claimMany(100, 0);
    expect(claimed).toHaveLength(100);
    expect(claimed.filter((job) => job.type === 'EXPORT')).toEqual([]);
    expect(claimed.some((job) => job.attempts > job.max_attempts)).toBe(true);

    await testDb.client.query(`UPDATE jobs SET priority = 50 WHERE type = 'EXPORT' AND status = 'QUEUED'`);
    expect((await claimMany(50, 0)).filter((job) => job.type === 'EXPORT')).toEqual([]);
  });
});

describe('the balanced claim function on the incident', () => {
  beforeEach(async () => {
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
  });

  it('hands each export out within the claims of the jobs that became ready before it', async () => {
    const limits = new Map<string, Set<string>>();
    for (const exportId of [EXPORT_1, EXPORT_2]) limits.set(exportId, new Set(await readyNoLaterThan(exportId)));
    // Ten section runs have waited longer than the first export, twelve longer than the second.
    expect(limits.get(EXPORT_1)!.size).toBe(10);
    expect(limits.get(EXPORT_2)!.size).toBeLessThanOrEqual(13);

    const claimed = (await claimMany(60, 0)).map((job) => job.id);
    for (const [exportId, before] of limits) {
      const position = claimed.indexOf(exportId);
      expect(position).toBeGreaterThanOrEqual(0);
      expect(position).toBeLessThanOrEqual(before.size);
      // Everything handed out ahead of it had become ready no later than it.
      for (const earlier of claimed.slice(0, position)) expect(before.has(earlier)).toBe(true);
    }
  });

  it('serves reprioritized exports first', async () => {
    await testDb.client.query(`UPDATE jobs SET priority = 50 WHERE type = 'EXPORT' AND status = 'QUEUED'`);
    const claimed = await claimMany(2, 30);
    expect(claimed.map((job) => job.id)).toEqual([EXPORT_1, EXPORT_2]);
  });

  it('moves expired leases with no attempts left to FAILED with the reason, never handing them out', async () => {
    const exhausted = await testDb.client.query<{ id: string; attempts: number }>(
      `SELECT id, attempts FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < now() AND attempts >= max_attempts ORDER BY id`,
    );
    expect(exhausted.rows).toHaveLength(24);

    const claimed = await claimMany(60, 30);
    const handedOut = new Set(claimed.map((job) => job.id));
    expect(exhausted.rows.filter((job) => handedOut.has(job.id))).toEqual([]);
    for (const job of claimed) expect(job.attempts).toBeLessThanOrEqual(job.max_attempts);

    const after = await testDb.client.query(
      `SELECT id, status, last_error, locked_by, lease_expires_at FROM jobs WHERE id = ANY ($1::uuid[]) ORDER BY id`,
      [exhausted.rows.map((job) => job.id)],
    );
    expect(after.rows).toEqual(
      exhausted.rows.map((job) => ({
        id: job.id,
        status: 'FAILED',
        last_error: `queue-doctor: lease expired with no attempts left (${job.attempts} of 3 used)`,
        locked_by: null,
        lease_expires_at: null,
      })),
    );
  });

  it('never hands out an export whose run is still RUNNING and keeps its attempts, then serves it once the run completes', async () => {
    const claimed = await claimMany(60, 0);
    expect(claimed.map((job) => job.id)).not.toContain(EXPORT_OF_RUNNING_RUN);
    const waiting = await testDb.client.query(
      `SELECT status, attempts, last_error, scheduled_at > now() AS deferred FROM jobs WHERE id = $1`,
      [EXPORT_OF_RUNNING_RUN],
    );
    expect(waiting.rows).toEqual([{ status: 'QUEUED', attempts: 1, last_error: 'No final report content available for export', deferred: true }]);

    await testDb.client.query(`UPDATE report_runs SET status = 'COMPLETED', final_report_json = '{"body": "done"}' WHERE id = $1`, [RUNNING_RUN]);
    await testDb.client.query(`UPDATE jobs SET scheduled_at = now() - interval '1 second' WHERE id = $1`, [EXPORT_OF_RUNNING_RUN]);
    // A dedicated export pool (p_types) gets it at once.
    const exportPool = await testDb.client.query(`SELECT id, status, attempts, locked_by FROM claim_next_job('export-pool', 60, ARRAY['EXPORT'])`);
    expect(exportPool.rows).toEqual([{ id: EXPORT_OF_RUNNING_RUN, status: 'RUNNING', attempts: 2, locked_by: 'export-pool' }]);
  });

  it('defers an expired export lease whose run is not complete back to QUEUED without spending an attempt', async () => {
    await testDb.client.query(
      `UPDATE jobs SET status = 'RUNNING', locked_by = 'crashed', locked_at = now() - interval '1 minute',
              lease_expires_at = now() - interval '500 seconds', priority = 1
        WHERE id = $1`,
      [EXPORT_OF_RUNNING_RUN],
    );
    const claimed = await claimMany(1, 30);
    expect(claimed.map((job) => job.id)).not.toContain(EXPORT_OF_RUNNING_RUN);
    const after = await testDb.client.query(`SELECT status, attempts, locked_by, lease_expires_at, scheduled_at > now() AS deferred FROM jobs WHERE id = $1`, [EXPORT_OF_RUNNING_RUN]);
    expect(after.rows).toEqual([{ status: 'QUEUED', attempts: 1, locked_by: null, lease_expires_at: null, deferred: true }]);
  });
});

describe('the balanced claim plan', () => {
  it('reads the claim_order index, not the table, with 50,000 finished jobs behind 5,000 active ones', async () => {
    await testDb.client.query(`
      INSERT INTO jobs (type, status, priority, attempts, scheduled_at, updated_at)
      SELECT 'SECTION_RUN', 'COMPLETED', 100, 1, now() - make_interval(secs => i), now() - make_interval(secs => i)
        FROM generate_series(1, 50000) AS i;
      INSERT INTO jobs (type, status, priority, scheduled_at, locked_by, lease_expires_at)
      SELECT 'SECTION_RUN', CASE WHEN i % 5 = 0 THEN 'RUNNING' ELSE 'QUEUED' END, 50 + i % 3 * 50,
             now() + make_interval(secs => i % 7 - 3), CASE WHEN i % 5 = 0 THEN 'w' END,
             CASE WHEN i % 5 = 0 THEN now() + make_interval(secs => i % 11 - 5) END
        FROM generate_series(1, 5000) AS i;
      ANALYZE jobs;`);
    await migrateUp(db, DEFAULT_SCHEMA_MAP);

    const notices: string[] = [];
    testDb.client.on('notice', (notice) => notices.push(notice.message ?? ''));
    await testDb.client.query(`LOAD 'auto_explain'`);
    await testDb.client.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice`);
    // Six calls: PL/pgSQL switches from custom to generic plans after five; both must use the index.
    for (let i = 0; i < 6; i++) await testDb.client.query(`SELECT id FROM claim_next_job('planner', 30)`);
    await testDb.client.query(`SET auto_explain.log_min_duration = -1`);

    // Every call takes the one-statement fast path (the candidates here need no settling).
    const candidatePlans = notices.filter((notice) => notice.includes('FOR UPDATE OF c SKIP LOCKED'));
    expect(candidatePlans).toHaveLength(6);
    for (const plan of candidatePlans) {
      expect(plan).toMatch(/Index Scan using jobs_qd_claim_order_idx on jobs c/);
      expect(plan).not.toMatch(/Seq Scan|Sort/);
    }
  });
});
