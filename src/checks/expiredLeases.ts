import { Params } from '../sql.js';
import { formatSeconds, plural } from './stuckQueued.js';
import type { Check, CheckContext, CheckItem } from './types.js';

export interface ExpiredLeaseSummary {
  running: number;
  expired: number;
  /** Seconds since the longest-expired lease ran out, or null when none has. */
  oldestExpiredSeconds: number | null;
  /** attempts >= max_attempts: a claim function that never checks max_attempts re-claims these forever. */
  exhausted: number;
  /**
   * attempts > 1. Nothing records how often a lease expired, but every re-claim of an expired
   * lease increments attempts, so a RUNNING job past its first attempt has (almost always)
   * expired before. Jobs that failed and were re-queued also count: it is a heuristic.
   */
  expiredBefore: number;
}

interface SummaryRow {
  running: number;
  expired: number;
  oldest_expired_seconds: number | null;
  exhausted: number;
  expired_before: number;
}

interface LeaseRow {
  id: string;
  type: string;
  priority: number;
  attempts: number;
  max_attempts: number;
  locked_by: string | null;
  expired_seconds: number;
}

/** Counts RUNNING jobs and their expired leases; reads only the RUNNING set. */
export async function readExpiredLeaseSummary(context: CheckContext): Promise<ExpiredLeaseSummary> {
  const { db, model } = context;
  const { jobs, job } = model.sql;
  const p = new Params();
  const expired = `j.${job.leaseExpiresAt} < now()`;
  const result = await db.query<SummaryRow>(
    `SELECT count(*)::int AS running,
            count(*) FILTER (WHERE ${expired})::int AS expired,
            floor(extract(epoch FROM now() - min(j.${job.leaseExpiresAt}) FILTER (WHERE ${expired})))::float8 AS oldest_expired_seconds,
            count(*) FILTER (WHERE ${expired} AND j.${job.attempts} >= j.${job.maxAttempts})::int AS exhausted,
            count(*) FILTER (WHERE ${expired} AND j.${job.attempts} > 1)::int AS expired_before
       FROM ${jobs} j
      WHERE j.${job.status} = ${p.add(model.map.statuses.running)}`,
    p.values,
  );
  const row = result.rows[0]!;
  return {
    running: row.running,
    expired: row.expired,
    oldestExpiredSeconds: row.oldest_expired_seconds,
    exhausted: row.exhausted,
    expiredBefore: row.expired_before,
  };
}

async function listExpiredLeases(context: CheckContext): Promise<CheckItem[]> {
  const { db, model, options } = context;
  const { jobs, job } = model.sql;
  const p = new Params();
  const result = await db.query<LeaseRow>(
    `SELECT j.${job.id}::text AS id,
            j.${job.type}::text AS type,
            j.${job.priority}::float8 AS priority,
            j.${job.attempts}::int AS attempts,
            j.${job.maxAttempts}::int AS max_attempts,
            j.${job.lockedBy}::text AS locked_by,
            floor(extract(epoch FROM now() - j.${job.leaseExpiresAt}))::float8 AS expired_seconds
       FROM ${jobs} j
      WHERE j.${job.status} = ${p.add(model.map.statuses.running)}
        AND j.${job.leaseExpiresAt} < now()
      ORDER BY j.${job.leaseExpiresAt}, j.${job.id}
      LIMIT ${p.add(options.limit)}`,
    p.values,
  );
  return result.rows.map((row) => ({
    id: row.id,
    type: row.type,
    priority: row.priority,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    lockedBy: row.locked_by,
    expiredSeconds: row.expired_seconds,
  }));
}

export const expiredLeasesCheck: Check = {
  id: 'expired-leases',
  title: 'Running jobs hold live leases',
  async run(context) {
    const summary = await readExpiredLeaseSummary(context);
    const running = context.model.map.statuses.running;
    if (summary.expired === 0) {
      return {
        status: 'ok',
        summary: summary.running === 0 ? `no ${running} jobs, so no expired leases` : `all ${plural(summary.running, `${running} job`)} hold live leases`,
        count: 0,
        items: [],
        remedy: null,
      };
    }

    const { maxAttempts } = context.model.map.jobs.columns;
    const parts = [
      `${plural(summary.expired, `${running} job`)} hold${summary.expired === 1 ? 's' : ''} an expired lease (oldest expired ${formatSeconds(summary.oldestExpiredSeconds ?? 0)} ago)`,
      `${summary.expiredBefore} expired more than once`,
      summary.exhausted > 0
        ? `${summary.exhausted} at or beyond ${maxAttempts}, which a claim function that ignores ${maxAttempts} hands out forever`
        : `none at ${maxAttempts} yet`,
    ];
    return {
      status: summary.exhausted > 0 ? 'fail' : 'warn',
      summary: parts.join('; '),
      count: summary.expired,
      items: await listExpiredLeases(context),
      remedy: 'queue-doctor fix --release-expired',
    };
  },
};
