import type { Database, Queryable } from '../db/database.js';
import { QueueDoctorError, usageError } from '../errors.js';
import { describeDatabaseError } from '../db/failures.js';
import { classifyClaimFunction } from '../claim/classify.js';
import { hasFinalReportSql } from '../checks/runState.js';
import { explainLockTimeout } from '../inspect.js';
import { MISSING_REPORT_ERROR_PATTERN } from '../checks/prematureExports.js';
import { loadQueueModel, type QueueModel } from '../schema/queueModel.js';
import type { SchemaMap } from '../schemaMap.js';
import { Params } from '../sql.js';
import type { MigrateUpResult } from '../migrations/index.js';
import { applyGuardedChange, type GuardedChange } from './guardedChange.js';

import { DEFAULT_EXPORT_PRIORITY } from '../defaults.js';

export { DEFAULT_EXPORT_PRIORITY };
/** Largest value an integer priority column holds. */
export const MAX_PRIORITY = 2_147_483_647;
/**
 * How long `--premature` pushes back a due export whose run is still going. Long enough that a
 * legacy claim function stops handing it out (and burning an attempt) on every poll, short
 * enough that the export runs soon after the run completes.
 */
export const PREMATURE_DEFER_SECONDS = 60;
/** FAILED exports updated within this window are "recent" (the same default as inspect). */
export const DEFAULT_FAILED_WITHIN_SECONDS = 24 * 3600;

export type FixActionId =
  | 'reprioritize'
  | 'release-expired'
  | 'fail-exhausted'
  | 'requeue-premature'
  | 'defer-premature'
  | 'cancel-premature'
  | 'install-claim';

export interface FixOptions {
  /** Move QUEUED exports whose priority is behind N to N. */
  reprioritize?: number;
  releaseExpired?: boolean;
  premature?: boolean;
  installClaim?: boolean;
  /** reprioritize (50 unless given), release-expired and premature. */
  all?: boolean;
  dryRun: boolean;
  /** Recorded in every audit entry; must not contain a password. */
  commandLine: string;
  /** Window for "FAILED recently" in --premature. */
  failedWithinSeconds?: number;
  /** lock_timeout for the claim migration's own statements (the CLI passes --lock-timeout). */
  lockTimeoutMs?: number;
}

export interface FixAction {
  action: FixActionId;
  /** Rows changed (or, in a dry run, that would be changed). */
  rowsAffected: number;
  ids: string[];
  /** Rows that needed the change but a worker held locked: left alone, never waited on. */
  skippedLocked: string[];
  /** The audit entry (`queue-doctor undo <auditId>`), null when nothing changed or a dry run. */
  auditId: number | null;
  details: Record<string, unknown>;
}

export interface FixResult {
  dryRun: boolean;
  actions: FixAction[];
  recommendations: string[];
}

/** Installs the balanced claim function; `queue-doctor migrate up` unless a test injects another. */
export type InstallClaim = (db: Database, map: SchemaMap, options: { dryRun: boolean; lockTimeoutMs?: number }) => Promise<MigrateUpResult>;

const migrateUpInstall: InstallClaim = async (db, map, options) => {
  // Loaded on demand: the data repairs must not depend on the migration machinery.
  const { migrateUp } = await import('../migrations/index.js');
  return migrateUp(db, map, options);
};

/**
 * Runs the requested data repairs in ONE transaction (rolled back for a dry run), each through
 * applyGuardedChange so rows a worker holds are skipped and every change is audited. The order
 * is fixed, whatever the order of the flags: release-expired first (an export it puts back in
 * the queue is then judged by --premature), premature next, reprioritize last (exports that
 * --premature requeued get the new priority too). The claim-function migration runs after the
 * commit as its own step: CREATE INDEX CONCURRENTLY cannot run inside a transaction.
 */
export async function runFix(db: Database, map: SchemaMap, options: FixOptions, installClaim: InstallClaim = migrateUpInstall): Promise<FixResult> {
  const plan = planFix(options);
  const context = { dryRun: options.dryRun, commandLine: options.commandLine };
  const actions: FixAction[] = [];
  const recommendations: string[] = [];

  const repairData = async (tx: Queryable) => {
    const model = await loadQueueModel(tx, map);
    const run = async (id: FixActionId, change: GuardedChange, details: Record<string, unknown>) => {
      const result = await applyGuardedChange(tx, model, change, context);
      actions.push({
        action: id,
        rowsAffected: result.changed.length,
        ids: result.changed.map((row) => row.id),
        skippedLocked: result.skippedLocked,
        auditId: result.auditId,
        details: { description: change.action, ...details },
      });
    };
    if (plan.releaseExpired) {
      await run('release-expired', releaseExpiredChange(model), { scheduledAt: 'the expired lease time, so the job keeps its place in line' });
      await run('fail-exhausted', failExhaustedChange(model), { status: map.statuses.failed });
    }
    if (plan.premature) {
      await run('requeue-premature', requeuePrematureChange(model, plan.failedWithinSeconds), { failedWithinSeconds: plan.failedWithinSeconds });
      await run('defer-premature', deferPrematureChange(model), { deferSeconds: PREMATURE_DEFER_SECONDS });
      await run('cancel-premature', cancelPrematureChange(model), { status: map.statuses.cancelled });
    }
    if (plan.reprioritize !== null) {
      await run('reprioritize', reprioritizeChange(model, plan.reprioritize), { priority: plan.reprioritize });
    }
    recommendations.push(...(await recommend(tx, model, actions, plan)));
  };
  if (plan.dataActions) await guardLockTimeout(db, map, () => db.transaction(repairData, { rollback: options.dryRun }));

  if (plan.installClaim) {
    let outcome: MigrateUpResult;
    try {
      outcome = await installClaim(db, map, { dryRun: options.dryRun, ...(options.lockTimeoutMs !== undefined ? { lockTimeoutMs: options.lockTimeoutMs } : {}) });
    } catch (error) {
      throw afterCommittedRepairs(error, actions, options.dryRun);
    }
    actions.push({
      action: 'install-claim',
      rowsAffected: 0,
      ids: [],
      skippedLocked: [],
      auditId: null,
      details: {
        description: 'fix --install-claim: the balanced claim function and its index (queue-doctor migrate up)',
        separateStep: `${options.dryRun ? 'would run' : 'ran'} after the data repairs committed, as its own migration (CREATE INDEX CONCURRENTLY cannot run inside a transaction)`,
        migration: outcome,
      },
    });
  }

  const skipped = actions.reduce((sum, action) => sum + action.skippedLocked.length, 0);
  if (skipped > 0) {
    recommendations.push(`${skipped} row(s) were held locked by workers and left alone; run the same command again once they are released`);
  }
  return { dryRun: options.dryRun, actions, recommendations };
}

/** A lock_timeout (a table lock held elsewhere) becomes one line naming the holder; nothing was changed. */
export async function guardLockTimeout<T>(db: Database, map: SchemaMap, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw await explainLockTimeout(db, map, error);
  }
}

/**
 * The claim migration failed after the data repairs were committed: the error must say that
 * those stay applied (and how to reverse them), or the operator would believe nothing changed.
 */
function afterCommittedRepairs(error: unknown, actions: FixAction[], dryRun: boolean): unknown {
  const audited = actions.filter((action) => action.auditId !== null);
  if (dryRun || audited.length === 0) return error;
  const known = describeDatabaseError(error);
  if (!known) return error;
  return new QueueDoctorError(
    known.kind,
    `installing the claim function failed: ${known.message}; the data repairs before it were committed (audit entries ${audited.map((action) => action.auditId).join(', ')})`,
    known.hint ?? `queue-doctor history lists them; queue-doctor migrate up retries the claim function`,
  );
}

interface FixPlan {
  reprioritize: number | null;
  releaseExpired: boolean;
  premature: boolean;
  installClaim: boolean;
  dataActions: boolean;
  failedWithinSeconds: number;
}

export const FIX_ACTION_FLAGS = ['--reprioritize [N]', '--release-expired', '--premature', '--install-claim', '--all'] as const;

/** Validates the options before anything touches the database. */
export function planFix(options: FixOptions): FixPlan {
  const all = options.all === true;
  let reprioritize: number | null = null;
  if (options.reprioritize !== undefined) reprioritize = validatePriority(options.reprioritize);
  else if (all) reprioritize = DEFAULT_EXPORT_PRIORITY;
  const releaseExpired = all || options.releaseExpired === true;
  const premature = all || options.premature === true;
  const installClaim = options.installClaim === true;
  const failedWithinSeconds = options.failedWithinSeconds ?? DEFAULT_FAILED_WITHIN_SECONDS;
  if (!Number.isFinite(failedWithinSeconds) || failedWithinSeconds <= 0) throw usageError('the failed-within window must be a positive number of seconds');
  if (reprioritize === null && !releaseExpired && !premature && !installClaim) {
    throw usageError(`fix needs at least one action: ${FIX_ACTION_FLAGS.join(', ')}`, 'add --dry-run to see what an action would change first');
  }
  return { reprioritize, releaseExpired, premature, installClaim, dataActions: reprioritize !== null || releaseExpired || premature, failedWithinSeconds };
}

export function validatePriority(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_PRIORITY) {
    throw usageError(`--reprioritize expects a whole number from 0 to ${MAX_PRIORITY} (lower runs sooner), got "${String(value).slice(0, 40)}"`);
  }
  return value;
}

/** Parses the command-line text of `--reprioritize N` (digits only: no signs, exponents or hex). */
export function parsePriority(input: string): number {
  const trimmed = input.trim();
  if (!/^\d{1,10}$/.test(trimmed)) {
    throw usageError(`--reprioritize expects a whole number from 0 to ${MAX_PRIORITY} (lower runs sooner), got "${printable(trimmed)}"`);
  }
  return validatePriority(Number(trimmed));
}

function printable(text: string): string {
  const clean = text.replace(/[\x00-\x1f\x7f]/g, '?');
  return clean.length > 40 ? `${clean.slice(0, 40)}…` : clean;
}

/** QUEUED exports behind N move to N; nothing else about them changes. */
function reprioritizeChange(model: QueueModel, priority: number): GuardedChange {
  const { job } = model.sql;
  const { statuses, types } = model.map;
  const p = new Params();
  return {
    action: `fix --reprioritize ${priority}`,
    where: `j.${job.status} = ${p.add(statuses.queued)} AND j.${job.type} = ${p.add(types.export)} AND j.${job.priority} > ${p.add(priority)}`,
    set: `${job.priority} = ${p.add(priority)}, ${job.updatedAt} = now()`,
    params: p,
  };
}

function expiredLeaseWhere(model: QueueModel, p: Params): string {
  const { job } = model.sql;
  return `j.${job.status} = ${p.add(model.map.statuses.running)} AND j.${job.leaseExpiresAt} < now()`;
}

function clearLease(model: QueueModel): string {
  const { job } = model.sql;
  return `${job.lockedBy} = NULL, ${job.lockedAt} = NULL, ${job.leaseExpiresAt} = NULL`;
}

/**
 * Expired leases with attempts left go back to QUEUED. The attempt was spent when the job was
 * claimed, so attempts stay as they are; scheduled_at becomes the expiry time, the moment the job
 * became ready again, which is where the balanced claim function would place it in line.
 */
function releaseExpiredChange(model: QueueModel): GuardedChange {
  const { job } = model.sql;
  const p = new Params();
  return {
    action: 'fix --release-expired (requeue)',
    where: `${expiredLeaseWhere(model, p)} AND j.${job.attempts} < j.${job.maxAttempts}`,
    set: `${job.status} = ${p.add(model.map.statuses.queued)}, ${job.scheduledAt} = j.${job.leaseExpiresAt}, ${clearLease(model)}, ${job.updatedAt} = now()`,
    params: p,
  };
}

/** Expired leases on the last allowed attempt (or beyond it) end FAILED, saying why. */
function failExhaustedChange(model: QueueModel): GuardedChange {
  const { job } = model.sql;
  const p = new Params();
  const reason = p.add('queue-doctor: lease expired on the last allowed attempt (%s of %s); released by fix --release-expired');
  return {
    action: 'fix --release-expired (fail exhausted)',
    where: `${expiredLeaseWhere(model, p)} AND j.${job.attempts} >= j.${job.maxAttempts}`,
    set: `${job.status} = ${p.add(model.map.statuses.failed)}, ${job.lastError} = format(${reason}::text, j.${job.attempts}, j.${job.maxAttempts}), ${clearLease(model)}, ${job.updatedAt} = now()`,
    params: p,
  };
}

/** `EXISTS` a run of this job (alias j) matching `condition` over the alias r. */
function runOfJob(model: QueueModel, condition: string): string {
  const { sql } = model;
  return `EXISTS (SELECT 1 FROM ${sql.runs} r WHERE r.${sql.run.id} = ${sql.jobRunId('j')} AND ${condition})`;
}

/**
 * Exports that burned attempts on "No final report content" although their run has completed
 * with a report since: FAILED recently, or QUEUED with attempts spent. They go back to the queue
 * as if new: attempts given back, error and lease cleared, due now.
 */
function requeuePrematureChange(model: QueueModel, failedWithinSeconds: number): GuardedChange {
  const { job } = model.sql;
  const { statuses, types } = model.map;
  const p = new Params();
  return {
    action: 'fix --premature (requeue)',
    where: `j.${job.type} = ${p.add(types.export)}
        AND ((j.${job.status} = ${p.add(statuses.failed)} AND j.${job.updatedAt} > now() - make_interval(secs => ${p.add(failedWithinSeconds)}::float8))
             OR (j.${job.status} = ${p.add(statuses.queued)} AND j.${job.attempts} > 0))
        AND j.${job.lastError} ILIKE ${p.add(MISSING_REPORT_ERROR_PATTERN)}
        AND ${runOfJob(model, `r.${model.sql.run.status} = ${p.add(statuses.completed)} AND ${hasFinalReportSql(model, 'r')}`)}`,
    set: `${job.status} = ${p.add(statuses.queued)}, ${job.attempts} = 0, ${job.lastError} = NULL, ${job.scheduledAt} = now(), ${clearLease(model)}, ${job.updatedAt} = now()`,
    params: p,
  };
}

/**
 * Due QUEUED exports whose run is still QUEUED or RUNNING: each claim would fail on the missing
 * report and burn an attempt, so they are pushed back PREMATURE_DEFER_SECONDS. Only due ones
 * move, which also makes a second run change nothing while the deferral lasts.
 */
function deferPrematureChange(model: QueueModel): GuardedChange {
  const { job, run } = model.sql;
  const { statuses, types } = model.map;
  const p = new Params();
  return {
    action: 'fix --premature (defer)',
    where: `j.${job.status} = ${p.add(statuses.queued)} AND j.${job.type} = ${p.add(types.export)} AND j.${job.scheduledAt} <= now()
        AND ${runOfJob(model, `r.${run.status} IN (${p.add(statuses.queued)}, ${p.add(statuses.running)})`)}`,
    set: `${job.scheduledAt} = now() + make_interval(secs => ${p.add(PREMATURE_DEFER_SECONDS)}::float8), ${job.updatedAt} = now()`,
    params: p,
  };
}

/** Exports of FAILED or CANCELLED runs can never succeed: cancelled, naming the run. */
function cancelPrematureChange(model: QueueModel): GuardedChange {
  const { sql } = model;
  const { job, run } = sql;
  const { statuses, types } = model.map;
  const p = new Params();
  const reason = p.add('queue-doctor: run %s is %s; export cancelled by fix --premature');
  return {
    action: 'fix --premature (cancel)',
    where: `j.${job.type} = ${p.add(types.export)}
        AND (j.${job.status} = ${p.add(statuses.queued)} OR (j.${job.status} = ${p.add(statuses.running)} AND j.${job.leaseExpiresAt} < now()))
        AND ${runOfJob(model, `r.${run.status} IN (${p.add(statuses.failed)}, ${p.add(statuses.cancelled)})`)}`,
    set: `${job.status} = ${p.add(statuses.cancelled)},
          ${job.lastError} = (SELECT format(${reason}::text, r.${run.id}, r.${run.status}) FROM ${sql.runs} r WHERE r.${run.id} = ${sql.jobRunId('j')}),
          ${clearLease(model)}, ${job.updatedAt} = now()`,
    params: p,
  };
}

/** What else the operator should do, after the data repairs (read in the same transaction). */
async function recommend(tx: Queryable, model: QueueModel, actions: FixAction[], plan: FixPlan): Promise<string[]> {
  const recommendations: string[] = [];
  if (!plan.installClaim) {
    const claim = await classifyClaimFunction(tx, model);
    if (claim.variant === 'legacy') {
      recommendations.push(
        `queue-doctor migrate up   (the claim function ${model.map.claimFunction} is the legacy two-phase one: while leases keep expiring it starves QUEUED jobs again; the balanced one serves both from one line)`,
      );
    } else if (claim.variant === 'missing') {
      recommendations.push(`queue-doctor migrate up   (no claim function ${model.map.claimFunction} exists in schema ${model.map.schema})`);
    } else if (claim.variant === 'unknown') {
      recommendations.push(`queue-doctor inspect --check claim-function   (${model.map.claimFunction} is not one queue-doctor knows; review it, or replace it with queue-doctor migrate up)`);
    }
  }
  const deferred = actions.find((action) => action.action === 'defer-premature');
  if (deferred && deferred.rowsAffected > 0) {
    recommendations.push(
      `let the app create export jobs only once their run is ${model.map.statuses.completed} (root cause 3); ${deferred.rowsAffected} export(s) were deferred ${PREMATURE_DEFER_SECONDS}s and will be claimed again then`,
    );
  }
  return recommendations;
}
