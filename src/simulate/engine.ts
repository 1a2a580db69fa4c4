import { randomBytes } from 'node:crypto';
import type { Database } from '../db/database.js';
import { formatDuration } from '../duration.js';
import { usageError } from '../errors.js';
import { balancedClaimStatements, legacyClaimStatement, referenceSchemaStatements } from '../migrations/standalone.js';
import { quoteIdent } from '../sql.js';
import { createRandom, type Random } from './random.js';

export type ClaimVariantName = 'legacy' | 'balanced';

export interface SimulateOptions {
  variants: ClaimVariantName[];
  workers: number;
  sections: number;
  exports: number;
  leaseSeconds: number;
  crashRate: number;
  durationSeconds: number;
  seed: number;
}

export { DEFAULT_SIMULATE_OPTIONS } from '../defaults.js';

export interface VariantReport {
  name: ClaimVariantName;
  claims: number;
  completed: number;
  exportsClaimed: number;
  exportsTotal: number;
  /** Claims handed out before the first export, or null when no export was claimed. */
  firstExportAfterClaims: number | null;
  /** Virtual time from the start of the replay to the export's first claim; unclaimed exports count the whole run. */
  exportWaitMs: { p50: number; p95: number; max: number };
  deadLettered: number;
  /** Claims that went to a job whose previous lease had expired. */
  expiredReclaims: number;
  claimsPerSecond: number;
  verdict: string;
  /** Exports still waiting for their first claim, sampled at even steps of virtual time. */
  series: number[];
}

export interface SimulationReport {
  options: SimulateOptions;
  /** The temporary schema the run used (already dropped). */
  schema: string;
  variants: VariantReport[];
}

/** How long the seeded work takes, in virtual seconds. */
const EXPORT_WORK_SECONDS = 5;
const SECTION_WORK_SECONDS: readonly [number, number] = [5, 25];
/** A worker that crashed comes back after this long. */
const RESTART_SECONDS = 5;
/** A worker that found nothing polls again after this long. */
const POLL_SECONDS = 1;
const SERIES_POINTS = 40;

export function validateSimulateOptions(options: SimulateOptions): SimulateOptions {
  const whole = (value: number, name: string, min: number, max: number) => {
    if (!Number.isInteger(value) || value < min || value > max) throw usageError(`--${name} expects a whole number from ${min} to ${max}, got ${value}`);
  };
  whole(options.workers, 'workers', 1, 64);
  whole(options.sections, 'sections', 1, 100_000);
  whole(options.exports, 'exports', 0, 10_000);
  whole(options.seed, 'seed', 0, 2 ** 31 - 1);
  if (!(options.crashRate >= 0 && options.crashRate <= 1)) throw usageError(`--crash-rate expects a number from 0 to 1, got ${options.crashRate}`);
  if (options.leaseSeconds < 1 || options.leaseSeconds > 3600) throw usageError('--lease must be between 1s and 1h');
  if (options.durationSeconds < 10 || options.durationSeconds > 24 * 3600) throw usageError('--duration must be between 10s and 24h');
  if (options.variants.length === 0) throw usageError('--claim expects legacy, balanced or both');
  return options;
}

/**
 * Replays the incident once per claim function on identical data, in a schema of its own that
 * is dropped afterwards: the user's tables are never read or written. Time is virtual (the claim
 * functions read a clock table instead of now()), so ten minutes of incident take seconds, and
 * every decision comes from a PRNG seeded with --seed.
 */
export async function runSimulation(db: Database, input: SimulateOptions, onProgress?: (message: string) => void): Promise<SimulationReport> {
  const options = validateSimulateOptions(input);
  const schema = `queue_doctor_sim_${randomBytes(4).toString('hex')}`;
  const variants: VariantReport[] = [];
  await db.query(`CREATE SCHEMA ${quoteIdent(schema)}`);
  try {
    // Every unqualified name in the reference schema and the legacy function resolves here.
    await db.query(`SET search_path = ${quoteIdent(schema)}, pg_catalog`);
    await installSimulation(db, schema);
    for (const name of options.variants) {
      onProgress?.(`simulating the ${name} claim function`);
      variants.push(await simulateVariant(db, schema, name, options, onProgress));
    }
  } finally {
    await db.query('RESET search_path').catch(() => undefined);
    await db.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`).catch(() => undefined);
  }
  return { options, schema, variants };
}

async function installSimulation(db: Database, schema: string): Promise<void> {
  const qualifiedSchema = quoteIdent(schema);
  const clock = `${qualifiedSchema}.sim_now()`;
  await db.query(`CREATE TABLE ${qualifiedSchema}.sim_clock (now timestamptz NOT NULL)`);
  await db.query(`INSERT INTO ${qualifiedSchema}.sim_clock VALUES ('2026-01-01T00:00:00Z')`);
  await db.query(`CREATE FUNCTION ${qualifiedSchema}.sim_now() RETURNS timestamptz LANGUAGE sql STABLE AS 'SELECT now FROM ${qualifiedSchema}.sim_clock'`);
  for (const statement of await referenceSchemaStatements()) await db.query(statement);

  // The two claim functions exactly as shipped, with now() read from the virtual clock.
  await db.query(withClock(await legacyClaimStatement('claim_legacy'), clock));
  for (const statement of await balancedClaimStatements(schema, 'claim_balanced')) await db.query(withClock(statement, clock));
}

function withClock(sql: string, clock: string): string {
  return sql.replace(/\bnow\(\)/g, clock);
}

interface Worker {
  name: string;
  /** Virtual ms when the worker next acts: claims if idle, finishes (or comes back) if busy. */
  nextAt: number;
  job: { id: string; attempt: number; crashed: boolean } | null;
}

async function simulateVariant(db: Database, schema: string, name: ClaimVariantName, options: SimulateOptions, onProgress?: (message: string) => void): Promise<VariantReport> {
  const random = createRandom(options.seed);
  const startedAt = Date.parse('2026-01-01T00:00:00Z');
  await seedIncident(db, schema, options, startedAt);
  const claimFunction = `${quoteIdent(schema)}.${name === 'legacy' ? 'claim_legacy' : 'claim_balanced'}`;
  const durationMs = options.durationSeconds * 1000;
  const workers: Worker[] = Array.from({ length: options.workers }, (_, i) => ({ name: `sim-worker-${i + 1}`, nextAt: 0, job: null }));
  const exportFirstClaimAt = new Map<string, number>();
  const claimedBefore = new Set<string>();
  const series: number[] = [];
  let claims = 0;
  let expiredReclaims = 0;
  let firstExportAfterClaims: number | null = null;
  let lastReportedPercent = -1;
  const wallStarted = performance.now();

  for (;;) {
    const worker = workers.reduce((next, candidate) => (candidate.nextAt < next.nextAt ? candidate : next));
    const now = worker.nextAt;
    if (now >= durationMs) break;
    while (series.length < SERIES_POINTS && now >= (series.length * durationMs) / SERIES_POINTS) series.push(options.exports - exportFirstClaimAt.size);
    const percent = Math.floor((now / durationMs) * 10) * 10;
    if (percent !== lastReportedPercent) {
      lastReportedPercent = percent;
      onProgress?.(`simulating ${name}… ${percent}%`);
    }
    await db.query(`UPDATE ${quoteIdent(schema)}.sim_clock SET now = $1`, [new Date(startedAt + now)]);

    if (worker.job) {
      const job = worker.job;
      worker.job = null;
      if (job.crashed) {
        worker.nextAt = now + RESTART_SECONDS * 1000;
        continue;
      }
      // Only the worker that still holds this attempt may complete it; an overrun lease was re-claimed.
      await db.query(
        `UPDATE jobs SET status = 'COMPLETED', locked_by = NULL, lease_expires_at = NULL, updated_at = ${quoteIdent(schema)}.sim_now()
          WHERE id = $1 AND status = 'RUNNING' AND locked_by = $2 AND attempts = $3`,
        [job.id, worker.name, job.attempt],
      );
      worker.nextAt = now;
      continue;
    }

    const claimed = await db.query<{ id: string; type: string; attempts: number; slow: boolean }>(
      `SELECT id::text AS id, type, attempts, payload ? 'slow' AS slow FROM ${claimFunction}($1, $2)`,
      [worker.name, options.leaseSeconds],
    );
    const job = claimed.rows[0];
    if (!job) {
      if (await queueIsEmpty(db)) break;
      worker.nextAt = now + POLL_SECONDS * 1000;
      continue;
    }
    claims += 1;
    if (claimedBefore.has(job.id)) expiredReclaims += 1;
    claimedBefore.add(job.id);
    if (job.type === 'EXPORT' && !exportFirstClaimAt.has(job.id)) {
      exportFirstClaimAt.set(job.id, now);
      firstExportAfterClaims ??= claims - 1;
    }
    // The incident's slow sections kill their worker every time (the leases that keep expiring).
    const crashed = job.slow || random.next() < options.crashRate;
    worker.job = { id: job.id, attempt: job.attempts, crashed };
    worker.nextAt = now + 1000 * workSeconds(job, options, random, crashed);
  }
  while (series.length < SERIES_POINTS) series.push(options.exports - exportFirstClaimAt.size);
  const wallSeconds = (performance.now() - wallStarted) / 1000;

  const totals = await db.query<{ completed: number; failed: number }>(
    `SELECT count(*) FILTER (WHERE status = 'COMPLETED')::int AS completed, count(*) FILTER (WHERE status = 'FAILED')::int AS failed FROM jobs`,
  );
  const waits = await exportWaits(db, exportFirstClaimAt, durationMs, startedAt);
  const report: Omit<VariantReport, 'verdict'> = {
    name,
    claims,
    completed: totals.rows[0]!.completed,
    exportsClaimed: exportFirstClaimAt.size,
    exportsTotal: options.exports,
    firstExportAfterClaims,
    exportWaitMs: { p50: percentile(waits, 0.5), p95: percentile(waits, 0.95), max: waits.length ? Math.max(...waits) : 0 },
    deadLettered: totals.rows[0]!.failed,
    expiredReclaims,
    claimsPerSecond: Math.round((claims / Math.max(wallSeconds, 0.001)) * 10) / 10,
    series,
  };
  return { ...report, verdict: verdictOf(report, options) };
}

/** Sections run 5–25 s and exports 5 s; a crash happens somewhere within the lease. */
function workSeconds(job: { type: string }, options: SimulateOptions, random: Random, crashed: boolean): number {
  if (crashed) return random.between(1, options.leaseSeconds);
  if (job.type === 'EXPORT') return EXPORT_WORK_SECONDS;
  return random.between(SECTION_WORK_SECONDS[0], SECTION_WORK_SECONDS[1]);
}

async function queueIsEmpty(db: Database): Promise<boolean> {
  const result = await db.query<{ active: number }>(`SELECT count(*)::int AS active FROM jobs WHERE status IN ('QUEUED', 'RUNNING')`);
  return result.rows[0]!.active === 0;
}

/**
 * The incident at virtual time zero: two exports of a COMPLETED run have waited 170 s; a tenth of
 * the section runs (at most 40) crash their worker every time, and hold leases that expired seconds
 * ago; the rest of the run's sections were queued after the exports.
 */
async function seedIncident(db: Database, schema: string, options: SimulateOptions, startedAt: number): Promise<void> {
  await db.query('TRUNCATE jobs, report_runs');
  await db.query(`UPDATE ${quoteIdent(schema)}.sim_clock SET now = $1`, [new Date(startedAt)]);
  const t0 = `${quoteIdent(schema)}.sim_now()`;
  await db.query(
    `INSERT INTO report_runs (id, status, final_report_json, created_at, completed_at) VALUES
       ('b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc', 'COMPLETED', jsonb_build_object('body', repeat('x', 46838)), ${t0} - interval '25 minutes', ${t0} - interval '200 seconds'),
       ('5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10', 'RUNNING', NULL, ${t0} - interval '10 minutes', NULL)`,
  );
  await db.query(
    `INSERT INTO jobs (id, type, status, priority, run_id, scheduled_at, created_at, updated_at)
     SELECT md5('sim-export-' || i)::uuid, 'EXPORT', 'QUEUED', 100, 'b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc',
            ${t0} - interval '170 seconds', ${t0} - interval '170 seconds', ${t0} - interval '170 seconds'
       FROM generate_series(1, $1::int) AS i`,
    [options.exports],
  );
  const slow = Math.min(40, Math.ceil(options.sections / 10));
  await db.query(
    `INSERT INTO jobs (id, type, status, priority, run_id, payload, attempts, scheduled_at, locked_by, locked_at, lease_expires_at, created_at, updated_at)
     SELECT md5('sim-slow-' || i)::uuid, 'SECTION_RUN', 'RUNNING', 100, '5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10', '{"slow": true}', 1,
            ${t0} - interval '10 minutes', 'crashed-worker', ${t0} - make_interval(secs => $2::int + i),
            ${t0} - make_interval(secs => i), ${t0} - interval '10 minutes', ${t0} - make_interval(secs => i)
       FROM generate_series(1, $1::int) AS i`,
    [slow, options.leaseSeconds],
  );
  await db.query(
    `INSERT INTO jobs (id, type, status, priority, run_id, scheduled_at, created_at, updated_at)
     SELECT md5('sim-section-' || i)::uuid, 'SECTION_RUN', 'QUEUED', 100, '5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10',
            ${t0} - interval '60 seconds' + make_interval(secs => i * 0.01), ${t0} - interval '60 seconds', ${t0} - interval '60 seconds'
       FROM generate_series(1, $1::int) AS i`,
    [options.sections - slow],
  );
}

/**
 * From the start of the replay (or from when the export became due, if later) to its first
 * claim; an export never claimed counts as waiting until the end.
 */
async function exportWaits(db: Database, firstClaimAt: Map<string, number>, durationMs: number, startedAt: number): Promise<number[]> {
  const exports = await db.query<{ id: string; due_after_ms: number }>(
    `SELECT id::text AS id, greatest(extract(epoch FROM (scheduled_at - $1::timestamptz)) * 1000, 0)::float8 AS due_after_ms FROM jobs WHERE type = 'EXPORT'`,
    [new Date(startedAt)],
  );
  return exports.rows.map((row) => Math.max(0, Math.round((firstClaimAt.get(row.id) ?? durationMs) - row.due_after_ms))).sort((a, b) => a - b);
}

function percentile(sorted: number[], fraction: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

function verdictOf(report: Omit<VariantReport, 'verdict'>, options: SimulateOptions): string {
  const served = `${report.name} served ${report.exportsClaimed} of ${report.exportsTotal} exports in ${formatDuration(options.durationSeconds)}`;
  if (report.exportsTotal === 0) return `${report.name}: no exports to serve; ${report.claims} claims, ${report.completed} jobs completed`;
  if (report.exportsClaimed === 0) {
    return `${served} while expired leases were re-claimed ${report.expiredReclaims} times; ${report.completed} jobs completed`;
  }
  const starved = report.exportsClaimed < report.exportsTotal ? `, ${report.exportsTotal - report.exportsClaimed} never claimed` : '';
  return `${served}${starved}, the first after ${report.firstExportAfterClaims} claims, p95 wait ${formatDuration(report.exportWaitMs.p95 / 1000)}; ${report.deadLettered} jobs dead-lettered, ${report.completed} completed`;
}

