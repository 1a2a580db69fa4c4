import { Params } from '../sql.js';
import { formatSeconds, plural } from './stuckQueued.js';
import type { Check, CheckContext, CheckItem, CheckOutcome } from './types.js';

/** A session idle in transaction while holding a lock on the jobs table longer than this is a warning. */
export const IDLE_LOCK_WARN_SECONDS = 60;

/** "Recent claims" are RUNNING jobs claimed within this window. */
export const CLAIM_WINDOW_SECONDS = 300;

export interface ClaimActivity {
  /** max(locked_at) over RUNNING jobs: finished jobs are not scanned, so a claim whose job already finished is not seen. */
  lastClaimAt: Date | null;
  lastClaimSeconds: number | null;
  /** RUNNING jobs claimed within CLAIM_WINDOW_SECONDS. */
  recentClaims: number;
  dueQueued: number;
  oldestDueSeconds: number | null;
}

export interface IdleLockHolder extends CheckItem {
  pid: number;
  user: string | null;
  application: string | null;
  state: string;
  /** Seconds since the session went idle in its transaction. */
  ageSeconds: number;
  locks: string[];
}

export interface IdleLockHolders {
  /** Every idle-in-transaction holder, longest idle first, at most `limit` of them. */
  sessions: IdleLockHolder[];
  total: number;
  /** Sessions holding a lock on the jobs table whose state this role may not read (no pg_read_all_stats). */
  hidden: number;
}

export interface WorkerThresholds {
  idleLockWarnSeconds: number;
  /** A due job must have waited this long before a claim-less window means "workers look absent". */
  dueGraceSeconds: number;
}

interface ActivityRow {
  last_claim_at: Date | string | null;
  last_claim_seconds: number | null;
  recent_claims: number;
  due_queued: number;
  oldest_due_seconds: number | null;
}

interface SessionRow {
  pid: number;
  user: string | null;
  application: string | null;
  state: string;
  age_seconds: number;
  modes: string;
  total: number;
}

/** Claim activity read from the RUNNING set and the due QUEUED set only. */
export async function readClaimActivity(context: CheckContext): Promise<ClaimActivity> {
  const { db, model } = context;
  const { jobs, job } = model.sql;
  const p = new Params();
  const result = await db.query<ActivityRow>(
    `SELECT running.last_claim_at, running.last_claim_seconds, running.recent_claims, queued.due_queued, queued.oldest_due_seconds
       FROM (SELECT max(r.${job.lockedAt}) AS last_claim_at,
                    floor(extract(epoch FROM now() - max(r.${job.lockedAt})))::float8 AS last_claim_seconds,
                    count(*) FILTER (WHERE r.${job.lockedAt} > now() - make_interval(secs => ${p.add(CLAIM_WINDOW_SECONDS)}::float8))::int AS recent_claims
               FROM ${jobs} r
              WHERE r.${job.status} = ${p.add(model.map.statuses.running)}) running,
            (SELECT count(*)::int AS due_queued,
                    floor(extract(epoch FROM now() - min(q.${job.scheduledAt})))::float8 AS oldest_due_seconds
               FROM ${jobs} q
              WHERE q.${job.status} = ${p.add(model.map.statuses.queued)}
                AND q.${job.scheduledAt} <= now()) queued`,
    p.values,
  );
  const row = result.rows[0]!;
  return {
    lastClaimAt: row.last_claim_at === null ? null : new Date(row.last_claim_at),
    lastClaimSeconds: row.last_claim_seconds,
    recentClaims: row.recent_claims,
    dueQueued: row.due_queued,
    oldestDueSeconds: row.oldest_due_seconds,
  };
}

/**
 * Sessions idle in a transaction that hold any lock on the jobs table. Row locks never show in
 * pg_locks unless contended, but the table-level RowShareLock / RowExclusiveLock that comes with
 * them always does, and that is what is matched here. Works on PGlite (only its own session) and
 * for a role without pg_read_all_stats (other roles' sessions have a NULL state: counted as hidden).
 */
export async function readIdleLockHolders(context: CheckContext): Promise<IdleLockHolders> {
  const { db, model, options } = context;
  const holders = (params: Params) =>
    `SELECT l.pid, l.mode
       FROM pg_locks l
      WHERE l.locktype = 'relation' AND l.relation = to_regclass(${params.add(model.sql.jobs)}) AND l.granted
        AND l.pid <> pg_backend_pid()`;
  const p = new Params();
  // clock_timestamp, not now(): a session may have gone idle after this transaction began.
  const sessions = await db.query<SessionRow>(
    `SELECT a.pid::int AS pid, a.usename::text AS "user", a.application_name::text AS application, a.state::text AS state,
            GREATEST(0, floor(extract(epoch FROM clock_timestamp() - a.state_change)))::float8 AS age_seconds,
            string_agg(DISTINCT h.mode, ',' ORDER BY h.mode) AS modes,
            (count(*) OVER ())::int AS total
       FROM (${holders(p)}) h
       JOIN pg_stat_activity a ON a.pid = h.pid
      WHERE a.state LIKE 'idle in transaction%'
      GROUP BY a.pid, a.usename, a.application_name, a.state, a.state_change
      ORDER BY age_seconds DESC, a.pid
      LIMIT ${p.add(options.limit)}`,
    p.values,
  );
  const hiddenParams = new Params();
  const hidden = await db.query<{ hidden: number }>(
    `SELECT count(DISTINCT h.pid)::int AS hidden
       FROM (${holders(hiddenParams)}) h
       LEFT JOIN pg_stat_activity a ON a.pid = h.pid
      WHERE a.state IS NULL`,
    hiddenParams.values,
  );
  return {
    sessions: sessions.rows.map((row) => ({
      id: `pid:${row.pid}`,
      pid: row.pid,
      user: row.user,
      application: row.application === '' ? null : row.application,
      state: row.state,
      ageSeconds: row.age_seconds,
      locks: row.modes.split(','),
    })),
    total: sessions.rows[0]?.total ?? 0,
    hidden: hidden.rows[0]?.hidden ?? 0,
  };
}

/**
 * The decision, apart from the queries so its thresholds can be tested without waiting a minute.
 * warn when a session has sat idle in transaction on a lock on the jobs table for longer than
 * idleLockWarnSeconds, or when due jobs have waited past the grace period and no RUNNING job was
 * claimed within the claim window (workers down, or calling another function).
 */
export function judgeWorkers(
  activity: ClaimActivity,
  holders: IdleLockHolders,
  thresholds: WorkerThresholds,
  names: { running: string; queued: string; jobsTable: string; claimFunction: string },
): CheckOutcome {
  const window = `${CLAIM_WINDOW_SECONDS / 60} min`;
  const claims =
    activity.lastClaimSeconds === null
      ? `no ${names.running} job, so no recent claim is visible`
      : `last claim ${formatSeconds(activity.lastClaimSeconds)} ago, ${plural(activity.recentClaims, 'job')} claimed in the last ${window}`;
  const workersAbsent =
    activity.recentClaims === 0 && activity.dueQueued > 0 && (activity.oldestDueSeconds ?? 0) > thresholds.dueGraceSeconds;

  const oldest = holders.sessions[0];
  const overThreshold = oldest !== undefined && oldest.ageSeconds > thresholds.idleLockWarnSeconds;
  let sessions = `no session idle in transaction holds a lock on ${names.jobsTable}`;
  if (oldest) {
    const subject = holders.total === 1 ? '1 session idle in transaction holding' : `${holders.total} sessions idle in transaction holding`;
    const age = holders.total === 1 ? ` for ${formatSeconds(oldest.ageSeconds)}` : `, the oldest for ${formatSeconds(oldest.ageSeconds)}`;
    const limit = overThreshold ? '' : `, within the ${formatSeconds(thresholds.idleLockWarnSeconds)} limit`;
    sessions = `${subject} locks on ${names.jobsTable}${age} (pid ${oldest.pid})${limit}`;
  }
  if (holders.hidden > 0) {
    sessions += `; the state of ${plural(holders.hidden, 'other lock holder')} is hidden from this role (needs pg_read_all_stats)`;
  }

  const items: CheckItem[] = [...holders.sessions];
  let summary = `${claims}; ${sessions}`;
  if (workersAbsent) {
    items.push({
      id: 'no-recent-claims',
      dueQueued: activity.dueQueued,
      oldestDueSeconds: activity.oldestDueSeconds,
      lastClaimAt: activity.lastClaimAt,
    });
    const last = activity.lastClaimSeconds === null ? `no ${names.running} job` : `last claim ${formatSeconds(activity.lastClaimSeconds)} ago`;
    summary =
      `no claim in the last ${window} (${last}) while ${plural(activity.dueQueued, `due ${names.queued} job`)} ${activity.dueQueued === 1 ? 'waits' : 'wait'}` +
      ` (oldest ${formatSeconds(activity.oldestDueSeconds ?? 0)}): workers look absent; ${sessions}`;
  }

  const remedies: string[] = [];
  if (overThreshold) {
    remedies.push(
      `SELECT pg_terminate_backend(${oldest.pid})   (idle in transaction for ${formatSeconds(oldest.ageSeconds)} holding ${oldest.locks.join(', ')} on ${names.jobsTable}; fix the code that leaves it open)`,
    );
  }
  if (workersAbsent) remedies.push(`start workers, or check that they call ${names.claimFunction}`);

  return {
    status: remedies.length > 0 ? 'warn' : 'ok',
    summary,
    count: holders.total + (workersAbsent ? 1 : 0),
    items,
    remedy: remedies.length > 0 ? remedies.join('; then ') : null,
  };
}

export const workersCheck: Check = {
  id: 'workers',
  title: 'Workers claim jobs and no session sits on a lock',
  async run(context) {
    const { map } = context.model;
    const activity = await readClaimActivity(context);
    const holders = await readIdleLockHolders(context);
    const outcome = judgeWorkers(
      activity,
      holders,
      { idleLockWarnSeconds: IDLE_LOCK_WARN_SECONDS, dueGraceSeconds: context.options.stuckAfterSeconds },
      { running: map.statuses.running, queued: map.statuses.queued, jobsTable: map.jobs.table, claimFunction: `${map.schema}.${map.claimFunction}` },
    );
    // The no-recent-claims marker counts, but the cap applies to everything listed.
    return { ...outcome, items: outcome.items.slice(0, context.options.limit) };
  },
};
