import os from 'node:os';
import type { Database, Queryable } from '../db/database.js';
import { QueueDoctorError, usageError } from '../errors.js';
import { writeAuditEntry } from '../audit.js';
import { explainLockTimeout } from '../inspect.js';
import { idArrayType } from '../repairs/guardedChange.js';
import { loadQueueModel, parseJobId, type QueueModel } from '../schema/queueModel.js';
import type { JobColumns, SchemaMap } from '../schemaMap.js';
import { Params } from '../sql.js';

/**
 * claim, requeue and fail act on jobs an operator names. They are all-or-nothing: every id is
 * validated first, every row is locked without waiting (a row a worker holds is refused, never
 * waited on), and if any job is refused nothing at all changes.
 */
export type SingleJobAction = 'claim' | 'requeue' | 'fail';

export interface ClaimOptions {
  /** locked_by of the claim; default queue-doctor@<host>. */
  worker?: string;
  leaseSeconds: number;
  /** Take a job even while another worker's lease on it is live. */
  steal: boolean;
}

export interface RequeueOptions {
  steal: boolean;
  /** Give the job a fresh set of attempts (needed to retry an exhausted job). */
  resetAttempts: boolean;
}

export interface FailOptions {
  steal: boolean;
  reason: string;
}

/** How every single-job command is run. */
export interface SingleJobRun {
  /** Recorded in the audit log; must not contain a password. */
  commandLine: string;
  /** Do everything, report it, and roll back. */
  dryRun: boolean;
}

export interface SingleJobResult {
  action: SingleJobAction;
  dryRun: boolean;
  /** The jobs after the change, keyed by the schema map's keys (id, type, status, payload, …). */
  jobs: Record<string, unknown>[];
  /** null in a dry run */
  auditId: number | null;
}

export function defaultWorkerName(): string {
  return `queue-doctor@${os.hostname()}`;
}

export function validateReason(reason: string | undefined): string {
  if (reason === undefined || reason.trim() === '') throw usageError('fail needs --reason TEXT (recorded in the job\'s last error)');
  if (reason.length > 1000) throw usageError('--reason is longer than 1000 characters');
  if (reason.includes('\u0000')) throw usageError('--reason contains a NUL character');
  return reason;
}

export function validateWorkerName(worker: string): string {
  if (worker.trim() === '' || worker.length > 200 || /[\x00-\x1f]/.test(worker)) {
    throw usageError('--worker must be 1 to 200 printable characters');
  }
  return worker;
}

export async function claimJobs(db: Database, map: SchemaMap, ids: readonly string[], options: ClaimOptions, run: SingleJobRun): Promise<SingleJobResult> {
  const worker = validateWorkerName(options.worker ?? defaultWorkerName());
  return changeJobs(db, map, ids, 'claim', run, (job, model, p) => {
    const { statuses } = model.map;
    if (isFinished(job, model)) return { refuse: `is ${job.status}: a finished job is not claimed again` };
    if (job.attempts >= job.maxAttempts) return { refuse: `has no attempts left (${job.attempts} of ${job.maxAttempts}); queue-doctor requeue ${job.id} --reset-attempts first` };
    if (job.status === statuses.running && job.leaseLive && !options.steal) return { refuse: liveLeaseRefusal(job, 'claim') };
    if (job.status !== statuses.queued && job.status !== statuses.running) return { refuse: `has the unknown status "${job.status}"` };
    const c = model.sql.job;
    return {
      set: `${c.status} = ${p.add(statuses.running)}, ${c.lockedBy} = ${p.add(worker)}, ${c.lockedAt} = now(),
            ${c.leaseExpiresAt} = now() + make_interval(secs => ${p.add(options.leaseSeconds)}::float8),
            ${c.attempts} = j.${c.attempts} + 1, ${c.updatedAt} = now()`,
    };
  });
}

export async function requeueJobs(db: Database, map: SchemaMap, ids: readonly string[], options: RequeueOptions, run: SingleJobRun): Promise<SingleJobResult> {
  return changeJobs(db, map, ids, 'requeue', run, (job, model, p) => {
    const { statuses } = model.map;
    if (!Object.values(statuses).includes(job.status)) return { refuse: `has the unknown status "${job.status}"` };
    if (job.status === statuses.queued && !options.resetAttempts) return { refuse: 'is already QUEUED (add --reset-attempts to give it its attempts back)' };
    if (job.status === statuses.completed) return { refuse: `is ${job.status}: it finished successfully, so it is not run again` };
    // Queued with no attempts left, the legacy claim would hand it out beyond max_attempts.
    if (job.attempts >= job.maxAttempts && !options.resetAttempts) {
      return { refuse: `has no attempts left (${job.attempts} of ${job.maxAttempts}); add --reset-attempts to give it a fresh set` };
    }
    if (job.status === statuses.running && job.leaseLive && !options.steal) return { refuse: liveLeaseRefusal(job, 'requeue') };
    const c = model.sql.job;
    return {
      set: `${c.status} = ${p.add(statuses.queued)}, ${c.lockedBy} = NULL, ${c.lockedAt} = NULL, ${c.leaseExpiresAt} = NULL,
            ${c.scheduledAt} = now(), ${c.updatedAt} = now()${options.resetAttempts ? `, ${c.attempts} = 0` : ''}`,
    };
  });
}

export async function failJobs(db: Database, map: SchemaMap, ids: readonly string[], options: FailOptions, run: SingleJobRun): Promise<SingleJobResult> {
  const reason = validateReason(options.reason);
  return changeJobs(db, map, ids, 'fail', run, (job, model, p) => {
    const { statuses } = model.map;
    if (isFinished(job, model)) return { refuse: `is already ${job.status}` };
    if (job.status === statuses.running && job.leaseLive && !options.steal) return { refuse: liveLeaseRefusal(job, 'fail') };
    const c = model.sql.job;
    return {
      set: `${c.status} = ${p.add(statuses.failed)}, ${c.lastError} = ${p.add(reason)}, ${c.lockedBy} = NULL, ${c.lockedAt} = NULL,
            ${c.leaseExpiresAt} = NULL, ${c.updatedAt} = now()`,
    };
  });
}

interface LockedJob {
  id: string;
  status: string;
  attempts: number;
  maxAttempts: number;
  lockedBy: string | null;
  leaseLive: boolean;
  leaseSecondsLeft: number | null;
  row: Record<string, unknown>;
}

type Decision = { refuse: string } | { set: string };

function isFinished(job: LockedJob, model: QueueModel): boolean {
  const { completed, failed, cancelled } = model.map.statuses;
  return job.status === completed || job.status === failed || job.status === cancelled;
}

function liveLeaseRefusal(job: LockedJob, action: SingleJobAction): string {
  return `is RUNNING under a live lease held by ${job.lockedBy ?? 'an unnamed worker'} for ${job.leaseSecondsLeft ?? '?'}s more (add --steal to ${action} it anyway)`;
}

async function changeJobs(
  db: Database,
  map: SchemaMap,
  inputs: readonly string[],
  action: SingleJobAction,
  run: SingleJobRun,
  decide: (job: LockedJob, model: QueueModel, params: Params) => Decision,
): Promise<SingleJobResult> {
  if (inputs.length === 0) throw usageError(`${action} needs at least one job id`);
  try {
    return await db.transaction(async (tx) => {
      const model = await loadQueueModel(tx, map);
      // Every id is checked before any row is touched: one malformed id and nothing happens.
      const ids = [...new Set(inputs.map((input) => parseJobId(input, model.jobIdKind)))];
      const locked = await lockJobs(tx, model, ids);
      const refusals: string[] = [];
      const missing = ids.filter((id) => !locked.has(id));
      if (missing.length > 0) {
        const existing = await existingIds(tx, model, missing);
        for (const id of missing) {
          refusals.push(existing.has(id) ? `job ${id} is being claimed or changed by another session right now; try again` : `no job ${id}`);
        }
      }
      const updates: { id: string; set: string; params: Params }[] = [];
      for (const id of ids) {
        const job = locked.get(id);
        if (!job) continue;
        const params = new Params();
        const decision = decide(job, model, params);
        if ('refuse' in decision) refusals.push(`job ${id} ${decision.refuse}`);
        else updates.push({ id, set: decision.set, params });
      }
      if (refusals.length > 0) {
        const onlyMissing = refusals.every((line) => line.startsWith('no job '));
        throw new QueueDoctorError(onlyMissing ? 'not-found' : 'refused', `${refusals.join('; ')}${ids.length > 1 ? ` (nothing was changed for any of the ${ids.length} jobs)` : ''}`);
      }
      const after: Record<string, unknown>[] = [];
      for (const update of updates) {
        const idParam = update.params.add(update.id);
        const result = await tx.query<{ row: Record<string, unknown> }>(
          `UPDATE ${model.sql.jobs} j SET ${update.set} WHERE j.${model.sql.job.id} = ${idParam} RETURNING to_jsonb(j) AS row`,
          update.params.values,
        );
        after.push(result.rows[0]!.row);
      }
      if (run.dryRun) return { action, dryRun: true, jobs: after.map((row) => jobView(row, model.map)), auditId: null };
      const auditId = await writeAuditEntry(tx, {
        action,
        commandLine: run.commandLine,
        targetTable: model.sql.jobs,
        affectedIds: updates.map((update) => update.id),
        rowsBefore: updates.map((update) => locked.get(update.id)!.row),
        rowsAfter: after,
      });
      return { action, dryRun: false, jobs: after.map((row) => jobView(row, model.map)), auditId };
    }, { rollback: run.dryRun });
  } catch (error) {
    throw await explainLockTimeout(db, map, error);
  }
}

async function lockJobs(tx: Queryable, model: QueueModel, ids: string[]): Promise<Map<string, LockedJob>> {
  const { sql } = model;
  const c = sql.job;
  const result = await tx.query<LockedJob>(
    `SELECT j.${c.id}::text AS id, j.${c.status}::text AS status, j.${c.attempts}::int AS attempts,
            j.${c.maxAttempts}::int AS "maxAttempts", j.${c.lockedBy}::text AS "lockedBy",
            COALESCE(j.${c.leaseExpiresAt} > now(), false) AS "leaseLive",
            ceil(extract(epoch FROM j.${c.leaseExpiresAt} - now()))::int AS "leaseSecondsLeft",
            to_jsonb(j) AS row
       FROM ${sql.jobs} j
      WHERE j.${c.id} = ANY($1::${idArrayType(model)})
      ORDER BY j.${c.id}
      FOR UPDATE SKIP LOCKED`,
    [ids],
  );
  return new Map(result.rows.map((row) => [row.id, row]));
}

async function existingIds(tx: Queryable, model: QueueModel, ids: string[]): Promise<Set<string>> {
  const result = await tx.query<{ id: string }>(
    `SELECT j.${model.sql.job.id}::text AS id FROM ${model.sql.jobs} j WHERE j.${model.sql.job.id} = ANY($1::${idArrayType(model)})`,
    [ids],
  );
  return new Set(result.rows.map((row) => row.id));
}

/** A whole row (to_jsonb) renamed to the schema map's keys, so output is the same for every app. */
export function jobView(row: Record<string, unknown>, map: SchemaMap): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const [key, column] of Object.entries(map.jobs.columns) as [keyof JobColumns, string][]) {
    if (column in row) view[key] = row[column];
  }
  if (map.jobs.runIdPayloadKey !== null) {
    const payload = row[map.jobs.columns.payload];
    view.runId = payload && typeof payload === 'object' ? ((payload as Record<string, unknown>)[map.jobs.runIdPayloadKey] ?? null) : null;
  }
  return view;
}
