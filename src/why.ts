import type { Database, Queryable } from './db/database.js';
import { QueueDoctorError } from './errors.js';
import { classifyClaimFunction, type ClaimVariant } from './claim/classify.js';
import { loadQueueModel, parseJobId, type QueueModel } from './schema/queueModel.js';
import type { SchemaMap } from './schemaMap.js';
import { Params } from './sql.js';
import { truncate } from './duration.js';
import { hasFinalReportSql } from './checks/runState.js';
import { formatSeconds, plural } from './checks/stuckQueued.js';

export type WhyReasonCode =
  | 'finished'
  | 'unknown-status'
  | 'claim-function-missing'
  | 'row-locked'
  | 'live-lease'
  | 'no-lease'
  | 'lease-expired'
  | 'not-due'
  | 'attempts-exhausted'
  | 'run-not-completed'
  | 'starvation'
  | 'behind-higher-priority'
  | 'behind-earlier-jobs';

/** Reasons are listed in this order: what stops a claim outright, then what wastes one, then the line ahead. */
const REASON_ORDER: readonly WhyReasonCode[] = [
  'finished',
  'unknown-status',
  'claim-function-missing',
  'row-locked',
  'live-lease',
  'no-lease',
  'lease-expired',
  'not-due',
  'attempts-exhausted',
  'run-not-completed',
  'starvation',
  'behind-higher-priority',
  'behind-earlier-jobs',
];

export interface WhyReason {
  code: WhyReasonCode;
  message: string;
}

export interface WhyReport {
  /** The row under the schema map's keys (id, type, status, …), plus runStatus/runHasFinalReport when it names a run. */
  job: Record<string, unknown>;
  /** Whether the next call of the installed claim function would hand this job out. */
  claimable: boolean;
  claimVariant: ClaimVariant;
  /** Everything that keeps it from being claimed or from making progress once claimed. */
  reasons: WhyReason[];
}

interface JobRow {
  id: string;
  type: string;
  status: string;
  priority: number;
  run_id: string | null;
  attempts: number;
  max_attempts: number;
  scheduled_at: Date | null;
  locked_by: string | null;
  locked_at: Date | null;
  lease_expires_at: Date | null;
  last_error: string | null;
  created_at: Date | null;
  updated_at: Date | null;
  due: boolean | null;
  due_in_seconds: number | null;
  lease_live: boolean | null;
  lease_seconds: number | null;
  run_exists: boolean;
  run_status: string | null;
  run_has_report: boolean;
  xmax: string | null;
}

interface RowLocker {
  /** NULL for a prepared transaction. */
  pid: number | null;
  user: string | null;
  application: string | null;
  state: string | null;
  state_seconds: number | null;
  transaction_seconds: number | null;
}

/** Jobs that the next claim would take before this one, as the installed function orders them. */
interface Ahead {
  /** Expired leases the legacy function's phase 1 serves before any QUEUED job. */
  expiredLeases: number;
  /** Legacy, for an expired lease: leases that expired before it. */
  expiredEarlier: number;
  higherPriority: number;
  /** Balanced: how many of higherPriority are expired leases. */
  higherPriorityLeases: number;
  earlierSamePriority: number;
  earlierSamePriorityLeases: number;
}

const NOTHING_AHEAD: Ahead = { expiredLeases: 0, expiredEarlier: 0, higherPriority: 0, higherPriorityLeases: 0, earlierSamePriority: 0, earlierSamePriorityLeases: 0 };

/**
 * Explains one job in one read-only, repeatable-read transaction: its row, whether the next call
 * of the installed claim function would hand it out, and every reason it is not being claimed or
 * not making progress. Malformed ids are refused before the jobs table is queried.
 *
 * The claim order modelled per variant (rows locked by other transactions are skipped, as
 * FOR UPDATE SKIP LOCKED does; ties are broken by id, the order the other checks list jobs in):
 *  - legacy: expired leases by lease expiry first, then due QUEUED jobs by (priority, scheduled_at);
 *    max_attempts and the export's run are not looked at.
 *  - balanced: due QUEUED jobs and expired leases in one line by (priority, ready time), where
 *    exports whose run is not completed are deferred and exhausted jobs failed, not handed out.
 *    Assumes workers pass no type filter.
 *  - unknown / missing: due QUEUED jobs by (priority, scheduled_at), nothing else.
 */
export async function explainJob(db: Database, map: SchemaMap, jobIdInput: string): Promise<WhyReport> {
  return db.transaction(
    async (tx) => {
      const model = await loadQueueModel(tx, map);
      const jobId = parseJobId(jobIdInput, model.jobIdKind);
      const rowLocksVisible = await hasRowVersions(tx, model);
      const row = await loadJob(tx, model, jobId, rowLocksVisible);
      if (!row) {
        throw new QueueDoctorError('not-found', `no job with id ${truncate(jobId)} in "${map.schema}"."${map.jobs.table}"`);
      }
      const claim = await classifyClaimFunction(tx, model);
      const job = presentJob(row);
      const { statuses } = map;
      const functionName = map.claimFunction;
      const reasons: WhyReason[] = [];
      const report = (claimable: boolean): WhyReport => ({
        job,
        claimable,
        claimVariant: claim.variant,
        reasons: [...reasons].sort((a, b) => REASON_ORDER.indexOf(a.code) - REASON_ORDER.indexOf(b.code)),
      });

      if ([statuses.completed, statuses.failed, statuses.cancelled].includes(row.status)) {
        const error = row.last_error ? `, last error: "${truncate(row.last_error, 120)}"` : '';
        reasons.push({
          code: 'finished',
          message: `it is ${row.status}: finished jobs are never claimed again (attempts ${row.attempts} of ${row.max_attempts}${error})`,
        });
        return report(false);
      }
      if (row.status !== statuses.queued && row.status !== statuses.running) {
        reasons.push({
          code: 'unknown-status',
          message: `its status ${JSON.stringify(row.status)} is none of the statuses in the schema map, so no claim function queue-doctor knows hands it out`,
        });
        return report(false);
      }

      if (claim.variant === 'missing') {
        reasons.push({
          code: 'claim-function-missing',
          message: `no function ${map.schema}.${functionName} exists, so nothing hands jobs out through it (set "claimFunction" in queue-doctor.config.json, or install one with queue-doctor migrate up)`,
        });
      }

      const locker = rowLocksVisible && row.xmax !== null && row.xmax !== '0' ? await findRowLocker(tx, row.xmax) : null;
      if (locker) reasons.push({ code: 'row-locked', message: describeLocker(locker) });

      const exhausted = row.attempts >= row.max_attempts;
      const isExport = row.type === map.types.export;
      const runReady = row.run_status === statuses.completed && row.run_has_report;
      const variant = claim.variant;

      if (exhausted) {
        const consequence =
          variant === 'legacy'
            ? `the legacy ${functionName} ignores ${map.jobs.columns.maxAttempts} and hands it out again anyway`
            : variant === 'balanced'
              ? `the balanced ${functionName} marks it ${statuses.failed} instead of handing it out`
              : 'a claim function that respects max attempts will not hand it out again';
        reasons.push({ code: 'attempts-exhausted', message: `attempts ${row.attempts} of ${row.max_attempts} are used up: ${consequence}` });
      }
      if (isExport && !runReady) {
        const consequence =
          variant === 'balanced'
            ? `the balanced ${functionName} defers it, without spending an attempt, until the run is ${statuses.completed} with a final report`
            : `when claimed, the export fails on "No final report content" and burns an attempt`;
        reasons.push({ code: 'run-not-completed', message: `${describeRun(row, statuses.completed)}; ${consequence}` });
      }

      if (row.status === statuses.running) {
        if (row.lease_expires_at === null) {
          reasons.push({
            code: 'no-lease',
            message: `it is ${statuses.running} without a lease expiry (${map.jobs.columns.leaseExpiresAt} is NULL), so no claim function ever re-claims it; it stays ${statuses.running} until it is requeued`,
          });
          return report(false);
        }
        if (row.lease_live) {
          reasons.push({
            code: 'live-lease',
            message: `it is ${statuses.running} under a live lease held by ${row.locked_by ?? 'an unnamed worker'} until ${isoTime(row.lease_expires_at)} (${formatSeconds(row.lease_seconds ?? 0)} from now); nothing re-claims it before then`,
          });
          return report(false);
        }
        const expiredAgo = formatSeconds(Math.abs(row.lease_seconds ?? 0));
        if (variant === 'legacy') {
          const ahead = await countAheadLegacy(tx, model, jobId, rowLocksVisible);
          if (ahead.expiredEarlier > 0) {
            reasons.push({
              code: 'behind-earlier-jobs',
              message: `${plural(ahead.expiredEarlier, 'other expired lease')} expired before this one (${expiredAgo} ago); the legacy ${functionName} re-claims expired leases in order of expiry, whatever their priority`,
            });
          }
          return report(!locker && ahead.expiredEarlier === 0);
        }
        if (variant === 'balanced') {
          const ahead = await countAheadBalanced(tx, model, jobId, rowLocksVisible);
          pushBehind(reasons, row, ahead, true, isExport);
          return report(!locker && !exhausted && (!isExport || runReady) && ahead.higherPriority === 0 && ahead.earlierSamePriority === 0);
        }
        if (variant === 'unknown') {
          reasons.push({
            code: 'lease-expired',
            message: `its lease held by ${row.locked_by ?? 'an unnamed worker'} expired ${expiredAgo} ago, and ${functionName} is not a shape queue-doctor recognises, so whether it re-claims expired leases is unknown (queue-doctor fix --release-expired puts it back in the queue)`,
          });
        }
        return report(false);
      }

      if (!row.due) {
        reasons.push({
          code: 'not-due',
          message:
            row.scheduled_at === null
              ? `its ${map.jobs.columns.scheduledAt} is NULL, so it never becomes due`
              : `it is scheduled for ${isoTime(row.scheduled_at)}: due in ${formatSeconds(row.due_in_seconds ?? 0)}`,
        });
        return report(false);
      }

      if (variant === 'balanced') {
        const ahead = await countAheadBalanced(tx, model, jobId, rowLocksVisible);
        pushBehind(reasons, row, ahead, true, isExport);
        return report(!locker && !exhausted && (!isExport || runReady) && ahead.higherPriority === 0 && ahead.earlierSamePriority === 0);
      }
      const ahead = await countAheadLegacy(tx, model, jobId, rowLocksVisible);
      const starved = variant === 'legacy' && ahead.expiredLeases > 0;
      if (starved) {
        reasons.push({
          code: 'starvation',
          message: `${plural(ahead.expiredLeases, 'expired lease')} exist${ahead.expiredLeases === 1 ? 's' : ''}, and the legacy ${functionName} re-claims an expired lease in a phase of its own before it looks at any ${statuses.queued} job: while leases keep expiring this job is never reached (queue-doctor fix --release-expired, then queue-doctor migrate up)`,
        });
      }
      pushBehind(reasons, row, { ...ahead, higherPriorityLeases: 0, earlierSamePriorityLeases: 0 }, false, isExport);
      return report(!locker && !starved && ahead.higherPriority === 0 && ahead.earlierSamePriority === 0);
    },
    { readOnly: true, isolation: 'repeatable read' },
  );
}

function pushBehind(reasons: WhyReason[], row: JobRow, ahead: Ahead, balanced: boolean, isExport: boolean): void {
  const leases = (count: number) => (balanced && count > 0 ? ` (${count} of them expired leases)` : '');
  if (ahead.higherPriority > 0) {
    reasons.push({
      code: 'behind-higher-priority',
      message: `${plural(ahead.higherPriority, 'ready job')}${leases(ahead.higherPriorityLeases)} with a better priority (a number below ${row.priority}) come first`,
    });
  }
  if (ahead.earlierSamePriority > 0) {
    const hint = isExport ? ' (queue-doctor fix --reprioritize 50 moves waiting exports ahead of bulk work)' : '';
    reasons.push({
      code: 'behind-earlier-jobs',
      message: `${plural(ahead.earlierSamePriority, 'ready job')}${leases(ahead.earlierSamePriorityLeases)} at the same priority (${row.priority}) became ready before it${hint}`,
    });
  }
}

/** Row versions (and so xmax) exist only on tables; a view mapped as the jobs table has none. */
async function hasRowVersions(tx: Queryable, model: QueueModel): Promise<boolean> {
  const result = await tx.query<{ relkind: string | null }>(`SELECT c.relkind::text AS relkind FROM pg_class c WHERE c.oid = to_regclass($1)`, [model.sql.jobs]);
  return ['r', 'p'].includes(result.rows[0]?.relkind ?? '');
}

async function loadJob(tx: Queryable, model: QueueModel, jobId: string, withXmax: boolean): Promise<JobRow | undefined> {
  const { sql } = model;
  const j = sql.job;
  const p = new Params();
  const result = await tx.query<JobRow>(
    `SELECT j.${j.id}::text AS id, j.${j.type}::text AS type, j.${j.status}::text AS status,
            j.${j.priority}::float8 AS priority, ${sql.jobRunId('j')}::text AS run_id,
            j.${j.attempts}::int AS attempts, j.${j.maxAttempts}::int AS max_attempts,
            j.${j.scheduledAt} AS scheduled_at, j.${j.lockedBy}::text AS locked_by, j.${j.lockedAt} AS locked_at,
            j.${j.leaseExpiresAt} AS lease_expires_at, j.${j.lastError}::text AS last_error,
            j.${j.createdAt} AS created_at, j.${j.updatedAt} AS updated_at,
            j.${j.scheduledAt} <= now() AS due,
            ceil(extract(epoch FROM j.${j.scheduledAt} - now()))::float8 AS due_in_seconds,
            j.${j.leaseExpiresAt} >= now() AS lease_live,
            round(extract(epoch FROM j.${j.leaseExpiresAt} - now()))::float8 AS lease_seconds,
            run.${sql.run.id} IS NOT NULL AS run_exists,
            run.${sql.run.status}::text AS run_status,
            COALESCE(${hasFinalReportSql(model, 'run')}, false) AS run_has_report,
            ${withXmax ? 'j.xmax::text' : 'NULL::text'} AS xmax
       FROM ${sql.jobs} j
       LEFT JOIN ${sql.runs} run ON run.${sql.run.id} = ${sql.jobRunId('j')}
      WHERE j.${j.id} = ${p.add(jobId)}`,
    p.values,
  );
  return result.rows[0];
}

function presentJob(row: JobRow): Record<string, unknown> {
  const job: Record<string, unknown> = {
    id: row.id,
    type: row.type,
    status: row.status,
    priority: row.priority,
    runId: row.run_id,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    scheduledAt: row.scheduled_at,
    lockedBy: row.locked_by,
    lockedAt: row.locked_at,
    leaseExpiresAt: row.lease_expires_at,
    lastError: row.last_error,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
  if (row.run_id !== null) {
    job.runStatus = row.run_status;
    job.runHasFinalReport = row.run_has_report;
  }
  return job;
}

function describeRun(row: JobRow, completed: string): string {
  if (row.run_id === null) return 'it names no run, so there is no final report to export';
  if (!row.run_exists) return `its run ${row.run_id} does not exist`;
  if (row.run_status !== completed) return `its run ${row.run_id} is ${row.run_status ?? 'without a status'}, not ${completed}`;
  return `its run ${row.run_id} is ${completed} but has no final report`;
}

/**
 * The live transaction whose id is in the row's xmax: a worker that locked the row (FOR UPDATE)
 * or is changing it. pg_locks names every live transaction id, including subtransactions, and,
 * unlike pg_stat_activity.backend_xid, is readable without pg_read_all_stats.
 */
async function findRowLocker(tx: Queryable, xmax: string): Promise<RowLocker | null> {
  const result = await tx.query<RowLocker>(
    `SELECT l.pid::int AS pid, a.usename::text AS "user", a.application_name::text AS application, a.state::text AS state,
            GREATEST(0, floor(extract(epoch FROM clock_timestamp() - a.state_change)))::float8 AS state_seconds,
            GREATEST(0, floor(extract(epoch FROM clock_timestamp() - a.xact_start)))::float8 AS transaction_seconds
       FROM pg_locks l
       LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
        AND l.transactionid::text = $1
        AND l.pid IS DISTINCT FROM pg_backend_pid()
      LIMIT 1`,
    [xmax],
  );
  return result.rows[0] ?? null;
}

function describeLocker(locker: RowLocker): string {
  const who = locker.pid === null ? 'a prepared transaction' : `pid ${locker.pid}`;
  const details: string[] = [];
  if (locker.application) details.push(`application "${truncate(locker.application)}"`);
  if (locker.user) details.push(`user ${locker.user}`);
  if (locker.state) details.push(`${locker.state}${locker.state_seconds !== null ? ` for ${formatSeconds(locker.state_seconds)}` : ''}`);
  if (locker.transaction_seconds !== null) details.push(`transaction open for ${formatSeconds(locker.transaction_seconds)}`);
  const about = details.length > 0 ? ` (${details.join(', ')})` : locker.pid === null ? '' : ' (its session details are hidden from this role: needs pg_read_all_stats)';
  const ending = locker.pid === null ? 'COMMIT PREPARED or ROLLBACK PREPARED' : `that transaction ends (SELECT pg_terminate_backend(${locker.pid}) ends it)`;
  return `the row is locked by ${who}${about}; claim functions skip locked rows (FOR UPDATE SKIP LOCKED) until ${ending}`;
}

/** SQL for the ids of live transactions (a CTE named live_xids) and the matching row filter. */
function unlockedRows(withXmax: boolean): { cte: string; unlocked: (alias: string) => string } {
  if (!withXmax) return { cte: '', unlocked: () => 'true' };
  return {
    cte: `live_xids AS (
            SELECT l.transactionid::text AS xid FROM pg_locks l
             WHERE l.locktype = 'transactionid' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid()
          ),`,
    unlocked: (alias) => `${alias}.xmax::text NOT IN (SELECT xid FROM live_xids)`,
  };
}

/**
 * The legacy two-phase order (also the plain QUEUED order used for unknown and missing
 * functions): expired leases first by expiry, then due QUEUED jobs by (priority, scheduled_at).
 * Each count reads one status, so it follows the active set.
 */
async function countAheadLegacy(tx: Queryable, model: QueueModel, jobId: string, withXmax: boolean): Promise<Ahead> {
  const { sql, map } = model;
  const j = sql.job;
  const p = new Params();
  const { cte, unlocked } = unlockedRows(withXmax);
  const running = p.add(map.statuses.running);
  const queued = p.add(map.statuses.queued);
  const result = await tx.query<{ expired_leases: number; expired_earlier: number; higher_priority: number; earlier_same_priority: number }>(
    `WITH ${cte}
     me AS (SELECT m.${j.id} AS id, m.${j.priority} AS priority, m.${j.scheduledAt} AS scheduled_at, m.${j.leaseExpiresAt} AS lease_expires_at
              FROM ${sql.jobs} m WHERE m.${j.id} = ${p.add(jobId)})
     SELECT
       (SELECT count(*)::int FROM ${sql.jobs} c
         WHERE c.${j.status} = ${running} AND c.${j.leaseExpiresAt} < now() AND c.${j.id} <> me.id AND ${unlocked('c')}) AS expired_leases,
       (SELECT count(*)::int FROM ${sql.jobs} c
         WHERE c.${j.status} = ${running} AND c.${j.leaseExpiresAt} < now() AND ${unlocked('c')}
           AND (c.${j.leaseExpiresAt}, c.${j.id}) < (me.lease_expires_at, me.id)) AS expired_earlier,
       (SELECT count(*)::int FROM ${sql.jobs} c
         WHERE c.${j.status} = ${queued} AND c.${j.scheduledAt} <= now() AND ${unlocked('c')}
           AND c.${j.priority} < me.priority) AS higher_priority,
       (SELECT count(*)::int FROM ${sql.jobs} c
         WHERE c.${j.status} = ${queued} AND c.${j.scheduledAt} <= now() AND ${unlocked('c')}
           AND c.${j.priority} = me.priority AND (c.${j.scheduledAt}, c.${j.id}) < (me.scheduled_at, me.id)) AS earlier_same_priority
       FROM me`,
    p.values,
  );
  const row = result.rows[0];
  if (!row) return NOTHING_AHEAD;
  return {
    ...NOTHING_AHEAD,
    expiredLeases: row.expired_leases,
    expiredEarlier: row.expired_earlier,
    higherPriority: row.higher_priority,
    earlierSamePriority: row.earlier_same_priority,
  };
}

/**
 * The balanced order: due QUEUED jobs and expired leases in one line by (priority, ready time).
 * Candidates the balanced function would defer (exports whose run is not completed with a final
 * report) or fail (attempts exhausted) are not handed out, so they hold nothing up.
 */
async function countAheadBalanced(tx: Queryable, model: QueueModel, jobId: string, withXmax: boolean): Promise<Ahead> {
  const { sql, map } = model;
  const j = sql.job;
  const p = new Params();
  const { cte, unlocked } = unlockedRows(withXmax);
  const queued = p.add(map.statuses.queued);
  const running = p.add(map.statuses.running);
  const branch = (status: string, readyColumn: string, readyTest: string, isLease: boolean) =>
    `SELECT c.${j.id} AS id, c.${j.type} AS type, c.${j.priority} AS priority, c.${readyColumn} AS ready_at,
            c.${j.attempts} AS attempts, c.${j.maxAttempts} AS max_attempts, ${sql.jobRunId('c')} AS run_id, ${isLease} AS is_lease
       FROM ${sql.jobs} c
      WHERE c.${j.status} = ${status} AND c.${readyColumn} ${readyTest} AND ${unlocked('c')}`;
  const exportType = p.add(map.types.export);
  const completed = p.add(map.statuses.completed);
  const result = await tx.query<{ higher: number; higher_leases: number; earlier: number; earlier_leases: number }>(
    `WITH ${cte}
     me AS (SELECT m.${j.id} AS id, m.${j.priority} AS priority,
                   CASE WHEN m.${j.status} = ${queued} THEN m.${j.scheduledAt} ELSE m.${j.leaseExpiresAt} END AS ready_at
              FROM ${sql.jobs} m WHERE m.${j.id} = ${p.add(jobId)}),
     candidates AS (
       ${branch(queued, j.scheduledAt, '<= now()', false)}
       UNION ALL
       ${branch(running, j.leaseExpiresAt, '<= now()', true)}
     ),
     handed_out AS (
       SELECT c.* FROM candidates c
         LEFT JOIN ${sql.runs} run ON run.${sql.run.id} = c.run_id
        WHERE c.attempts < c.max_attempts
          AND NOT (c.type = ${exportType} AND NOT COALESCE(run.${sql.run.status} = ${completed} AND ${hasFinalReportSql(model, 'run')}, false))
     )
     SELECT count(*) FILTER (WHERE h.priority < me.priority)::int AS higher,
            count(*) FILTER (WHERE h.priority < me.priority AND h.is_lease)::int AS higher_leases,
            count(*) FILTER (WHERE h.priority = me.priority AND (h.ready_at, h.id) < (me.ready_at, me.id))::int AS earlier,
            count(*) FILTER (WHERE h.priority = me.priority AND (h.ready_at, h.id) < (me.ready_at, me.id) AND h.is_lease)::int AS earlier_leases
       FROM handed_out h, me
      WHERE h.id <> me.id`,
    p.values,
  );
  const row = result.rows[0];
  if (!row) return NOTHING_AHEAD;
  return {
    ...NOTHING_AHEAD,
    higherPriority: row.higher,
    higherPriorityLeases: row.higher_leases,
    earlierSamePriority: row.earlier,
    earlierSamePriorityLeases: row.earlier_leases,
  };
}

function isoTime(value: Date | string | null): string {
  if (value === null) return 'an unknown time';
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
