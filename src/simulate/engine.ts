import { randomBytes } from 'node:crypto';
import type { Database, Queryable } from '../db/database.js';
import { formatDuration } from '../duration.js';
import { QueueDoctorError, usageError } from '../errors.js';
import { balancedClaimStatements, legacyClaimStatement, referenceSchemaStatements } from '../migrations/standalone.js';
import { buildQueueSql, type QueueSql } from '../schema/queueModel.js';
import { parseSchemaMap, type SchemaMap } from '../schemaMap.js';
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
  /** The scratch schema the run used; it was never committed. */
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
  // The claim functions take the lease as integer seconds.
  if (!Number.isInteger(options.leaseSeconds) || options.leaseSeconds < 1 || options.leaseSeconds > 3600) {
    throw usageError(`--lease expects whole seconds from 1s to 1h, got ${options.leaseSeconds}s`);
  }
  if (options.durationSeconds < 10 || options.durationSeconds > 24 * 3600) throw usageError('--duration must be between 10s and 24h');
  if (options.variants.length === 0) throw usageError('--claim expects legacy, balanced or both');
  return options;
}

/**
 * Replays the incident once per claim function on identical data, in a schema of its own that
 * is never committed: the user's tables are never read or written. Time is virtual (the claim
 * functions read a clock setting instead of now()), so ten minutes of incident take seconds, and
 * every decision comes from a PRNG seeded with --seed.
 */
export async function runSimulation(db: Database, input: SimulateOptions, onProgress?: (message: string) => void): Promise<SimulationReport> {
  const options = validateSimulateOptions(input);
  const schema = `queue_doctor_sim_${randomBytes(4).toString('hex')}`;
  // One transaction, always rolled back: the scratch schema is never visible to another session,
  // and Ctrl-C, a kill or a lost connection leave nothing behind (the server discards what was
  // never committed). SET LOCAL confines the search_path to this transaction.
  const variants = await db.transaction(
    async (tx) => {
      await createScratchSchema(tx, schema);
      // Every unqualified name in the reference schema and the legacy function resolves here.
      await tx.query(`SET LOCAL search_path = ${quoteIdent(schema)}, pg_catalog`);
      await installSimulation(tx, schema);
      const reports: VariantReport[] = [];
      for (const name of options.variants) {
        onProgress?.(`simulating the ${name} claim function`);
        reports.push(await simulateVariant(tx, schema, name, options, onProgress));
      }
      return reports;
    },
    { rollback: true },
  );
  return { options, schema, variants };
}

async function createScratchSchema(db: Queryable, schema: string): Promise<void> {
  try {
    await db.query(`CREATE SCHEMA ${quoteIdent(schema)}`);
  } catch (error) {
    if ((error as { code?: unknown }).code !== '42501') throw error;
    throw new QueueDoctorError(
      'permission',
      `simulate needs CREATE on the database for its temporary schema (${(error as Error).message})`,
      'run it with --demo (the embedded database), or as a role with CREATE on the database; nothing is ever committed',
    );
  }
}

/**
 * The virtual clock is a transaction-local setting, not a table: moving it thousands of times
 * inside one uncommitted transaction would pile up row versions that every sim_now() call scans
 * (3x slower on 5,000 sections). As a setting it writes nothing, and sim_now() is inlined.
 */
const CLOCK_SETTING = 'queue_doctor.sim_now';
const CLOCK_ORIGIN_MS = Date.parse('2026-01-01T00:00:00Z');

async function setClock(db: Queryable, virtualMs: number): Promise<void> {
  await db.query('SELECT set_config($1, $2, true)', [CLOCK_SETTING, new Date(CLOCK_ORIGIN_MS + virtualMs).toISOString()]);
}

async function installSimulation(db: Queryable, schema: string): Promise<void> {
  const clock = `${quoteIdent(schema)}.sim_now()`;
  await setClock(db, 0);
  await db.query(`CREATE FUNCTION ${clock} RETURNS timestamptz LANGUAGE sql STABLE AS $$SELECT current_setting('${CLOCK_SETTING}')::timestamptz$$`);
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

/** Names in the scratch schema, always qualified: nothing may resolve to the user's tables. */
interface Scratch {
  db: Queryable;
  map: SchemaMap;
  sql: QueueSql;
  /** `<schema>.sim_now()` */
  clock: string;
}

function scratchOf(db: Queryable, schema: string): Scratch {
  const map = parseSchemaMap({ schema }, 'simulation');
  return { db, map, sql: buildQueueSql(map), clock: `${quoteIdent(schema)}.sim_now()` };
}

async function simulateVariant(db: Queryable, schema: string, name: ClaimVariantName, options: SimulateOptions, onProgress?: (message: string) => void): Promise<VariantReport> {
  const scratch = scratchOf(db, schema);
  const { sql, map } = scratch;
  const random = createRandom(options.seed);
  await seedIncident(scratch, options);
  const claimFunction = `${quoteIdent(schema)}.${name === 'legacy' ? 'claim_legacy' : 'claim_balanced'}`;
  const durationMs = options.durationSeconds * 1000;
  const workers: Worker[] = Array.from({ length: options.workers }, (_, i) => ({ name: `sim-worker-${i + 1}`, nextAt: 0, job: null }));
  const exportFirstClaimAt = new Map<string, number>();
  const claimedBefore = new Set<string>();
  const reclaimedJobs = new Set<string>();
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
    await setClock(db, now);

    if (worker.job) {
      const job = worker.job;
      worker.job = null;
      if (job.crashed) {
        worker.nextAt = now + RESTART_SECONDS * 1000;
        continue;
      }
      // Only the worker that still holds this attempt may complete it; an overrun lease was re-claimed.
      await db.query(
        `UPDATE ${sql.jobs} SET status = $4, locked_by = NULL, lease_expires_at = NULL, updated_at = ${scratch.clock}
          WHERE id = $1 AND status = $5 AND locked_by = $2 AND attempts = $3`,
        [job.id, worker.name, job.attempt, map.statuses.completed, map.statuses.running],
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
      if (await queueIsEmpty(scratch)) break;
      worker.nextAt = now + POLL_SECONDS * 1000;
      continue;
    }
    claims += 1;
    if (claimedBefore.has(job.id)) {
      expiredReclaims += 1;
      reclaimedJobs.add(job.id);
    }
    claimedBefore.add(job.id);
    if (job.type === map.types.export && !exportFirstClaimAt.has(job.id)) {
      exportFirstClaimAt.set(job.id, now);
      firstExportAfterClaims ??= claims - 1;
    }
    // The incident's slow sections kill their worker every time (the leases that keep expiring).
    const crashed = job.slow || random.next() < options.crashRate;
    worker.job = { id: job.id, attempt: job.attempts, crashed };
    worker.nextAt = now + 1000 * workSeconds(job.type === map.types.export, options, random, crashed);
  }
  while (series.length < SERIES_POINTS) series.push(options.exports - exportFirstClaimAt.size);
  const wallSeconds = (performance.now() - wallStarted) / 1000;

  const totals = await db.query<{ completed: number; failed: number }>(
    `SELECT count(*) FILTER (WHERE status = $1)::int AS completed, count(*) FILTER (WHERE status = $2)::int AS failed FROM ${sql.jobs}`,
    [map.statuses.completed, map.statuses.failed],
  );
  const waits = await exportWaits(scratch, exportFirstClaimAt, durationMs);
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
  return { ...report, verdict: verdictOf(report, reclaimedJobs.size, options) };
}

/** Sections run 5–25 s and exports 5 s; a crash happens somewhere within the lease. */
function workSeconds(isExport: boolean, options: SimulateOptions, random: Random, crashed: boolean): number {
  if (crashed) return random.between(1, options.leaseSeconds);
  if (isExport) return EXPORT_WORK_SECONDS;
  return random.between(SECTION_WORK_SECONDS[0], SECTION_WORK_SECONDS[1]);
}

async function queueIsEmpty({ db, sql, map }: Scratch): Promise<boolean> {
  const result = await db.query<{ active: number }>(`SELECT count(*)::int AS active FROM ${sql.jobs} WHERE status IN ($1, $2)`, [
    map.statuses.queued,
    map.statuses.running,
  ]);
  return result.rows[0]!.active === 0;
}

const COMPLETED_RUN_ID = 'b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc';
const RUNNING_RUN_ID = '5f0c7a9e-2d41-4c8b-9a6e-0e7d3b1c2a10';
const SECTION_TYPE = 'SECTION_RUN';

/**
 * The incident at virtual time zero: two exports of a COMPLETED run have waited 170 s; a tenth of
 * the section runs (at most 40) crash their worker every time, and hold leases that expired seconds
 * ago; the rest of the run's sections were queued after the exports.
 */
async function seedIncident({ db, sql, map, clock: t0 }: Scratch, options: SimulateOptions): Promise<void> {
  const { queued, running, completed } = map.statuses;
  await db.query(`TRUNCATE ${sql.jobs}, ${sql.runs}`);
  await setClock(db, 0);
  await db.query(
    `INSERT INTO ${sql.runs} (id, status, final_report_json, created_at, completed_at) VALUES
       ($1, $2, jsonb_build_object('body', repeat('x', 46838)), ${t0} - interval '25 minutes', ${t0} - interval '200 seconds'),
       ($3, $4, NULL, ${t0} - interval '10 minutes', NULL)`,
    [COMPLETED_RUN_ID, completed, RUNNING_RUN_ID, running],
  );
  await db.query(
    `INSERT INTO ${sql.jobs} (id, type, status, priority, run_id, scheduled_at, created_at, updated_at)
     SELECT md5('sim-export-' || i)::uuid, $2, $3, 100, $4::uuid,
            ${t0} - interval '170 seconds', ${t0} - interval '170 seconds', ${t0} - interval '170 seconds'
       FROM generate_series(1, $1::int) AS i`,
    [options.exports, map.types.export, queued, COMPLETED_RUN_ID],
  );
  const slow = Math.min(40, Math.ceil(options.sections / 10));
  await db.query(
    `INSERT INTO ${sql.jobs} (id, type, status, priority, run_id, payload, attempts, scheduled_at, locked_by, locked_at, lease_expires_at, created_at, updated_at)
     SELECT md5('sim-slow-' || i)::uuid, $3, $4, 100, $5::uuid, '{"slow": true}', 1,
            ${t0} - interval '10 minutes', 'crashed-worker', ${t0} - make_interval(secs => $2::int + i),
            ${t0} - make_interval(secs => i), ${t0} - interval '10 minutes', ${t0} - make_interval(secs => i)
       FROM generate_series(1, $1::int) AS i`,
    [slow, options.leaseSeconds, SECTION_TYPE, running, RUNNING_RUN_ID],
  );
  await db.query(
    `INSERT INTO ${sql.jobs} (id, type, status, priority, run_id, scheduled_at, created_at, updated_at)
     SELECT md5('sim-section-' || i)::uuid, $2, $3, 100, $4::uuid,
            ${t0} - interval '60 seconds' + make_interval(secs => i * 0.01), ${t0} - interval '60 seconds', ${t0} - interval '60 seconds'
       FROM generate_series(1, $1::int) AS i`,
    [options.sections - slow, SECTION_TYPE, queued, RUNNING_RUN_ID],
  );
}

/**
 * From the start of the replay (or from when the export became due, if later) to its first
 * claim; an export never claimed counts as waiting until the end.
 */
async function exportWaits({ db, sql, map }: Scratch, firstClaimAt: Map<string, number>, durationMs: number): Promise<number[]> {
  const exports = await db.query<{ id: string; due_after_ms: number }>(
    `SELECT id::text AS id, greatest(extract(epoch FROM (scheduled_at - $1::timestamptz)) * 1000, 0)::float8 AS due_after_ms
       FROM ${sql.jobs} WHERE type = $2`,
    [new Date(CLOCK_ORIGIN_MS), map.types.export],
  );
  return exports.rows.map((row) => Math.max(0, Math.round((firstClaimAt.get(row.id) ?? durationMs) - row.due_after_ms))).sort((a, b) => a - b);
}

function percentile(sorted: number[], fraction: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]!;
}

function verdictOf(report: Omit<VariantReport, 'verdict'>, reclaimedJobs: number, options: SimulateOptions): string {
  const count = (value: number) => value.toLocaleString('en-US');
  const duration = formatDuration(options.durationSeconds);
  const served = `${report.name} served ${count(report.exportsClaimed)} of ${count(report.exportsTotal)} exports in ${duration}`;
  if (report.exportsTotal === 0) return `${report.name}: no exports to serve; ${count(report.claims)} claims, ${count(report.completed)} jobs completed`;
  const unclaimed = report.exportsTotal - report.exportsClaimed;
  const waitNote = unclaimed > 0 ? ` (an export never claimed counts as waiting the whole ${duration})` : '';
  if (report.exportsClaimed === 0) {
    const leases = `${count(reclaimedJobs)} expired lease${reclaimedJobs === 1 ? ' was' : 's were'}`;
    return `${served} while ${leases} re-claimed ${count(report.expiredReclaims)} times; ${count(report.completed)} jobs completed${waitNote}`;
  }
  const starved = unclaimed > 0 ? `, ${count(unclaimed)} never claimed` : '';
  return `${served}${starved}, the first after ${count(report.firstExportAfterClaims ?? 0)} claims, p95 wait ${formatDuration(report.exportWaitMs.p95 / 1000)}; ${count(report.deadLettered)} jobs dead-lettered, ${count(report.completed)} completed${waitNote}`;
}
