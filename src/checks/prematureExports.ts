import type { Check } from './types.js';
import { Params } from '../sql.js';
import { truncate } from '../duration.js';
import { hasFinalReportSql } from './runState.js';

/** The export handler's error when it runs before its run has a final report (root cause 3). */
export const MISSING_REPORT_ERROR_PATTERN = '%no final report content%';

interface PrematureRow {
  id: string;
  status: string;
  run_id: string | null;
  run_status: string | null;
  has_report: boolean;
  attempts: number;
  last_error: string | null;
  burned: boolean;
  total: number;
  burned_total: number;
}

/**
 * An export is premature while its run is not COMPLETED or has no final report (a missing run
 * counts: there is nothing to export). Waiting and running exports are looked at, plus exports
 * that FAILED within --recent-failure (a bounded, indexable slice of history). A recently FAILED
 * export that died on "No final report content" stays listed even after its run completed: it
 * was burned too early and `fix --premature` requeues it.
 *
 * fail when at least one export already burned attempts on that error; warn when the premature
 * exports are only waiting or running.
 */
export const prematureExportsCheck: Check = {
  id: 'premature-exports',
  title: 'Exports wait for a completed run with a final report',
  async run({ db, model, options, claimFunction }) {
    const { sql, map } = model;
    const j = sql.job;
    const p = new Params();
    const exportType = p.add(map.types.export);
    const candidates = (statusCondition: string) =>
      `SELECT e.${j.id}::text AS id, e.${j.status}::text AS status, e.${j.attempts}::int AS attempts,
              e.${j.lastError}::text AS last_error, ${sql.jobRunId('e')} AS run_id
         FROM ${sql.jobs} e
        WHERE ${statusCondition} AND e.${j.type} = ${exportType}`;
    // Separate parameters per use: a status used against an enum column and against text must
    // not share one parameter (PostgreSQL deduces one type per parameter).
    const queued = candidates(`e.${j.status} = ${p.add(map.statuses.queued)}`);
    const running = candidates(`e.${j.status} = ${p.add(map.statuses.running)}`);
    const failedRecently = candidates(
      `e.${j.status} = ${p.add(map.statuses.failed)} AND e.${j.updatedAt} > now() - make_interval(secs => ${p.add(options.recentFailureSeconds)}::float8)`,
    );
    const failedText = p.add(map.statuses.failed);
    const result = await db.query<PrematureRow>(
      `WITH candidates AS (${queued} UNION ALL ${running} UNION ALL ${failedRecently}),
       judged AS (
         SELECT c.*, run.${sql.run.status}::text AS run_status, ${hasFinalReportSql(model, 'run')} AS has_report,
                COALESCE(c.last_error ILIKE ${p.add(MISSING_REPORT_ERROR_PATTERN)}, false) AS missing_report_error
           FROM candidates c LEFT JOIN ${sql.runs} run ON run.${sql.run.id} = c.run_id
       ),
       premature AS (
         SELECT *, missing_report_error AND (attempts > 0 OR status = ${failedText}) AS burned
           FROM judged
          WHERE run_status IS DISTINCT FROM ${p.add(map.statuses.completed)}
             OR NOT has_report
             OR (status = ${failedText} AND missing_report_error)
       )
       SELECT id, status, run_id::text AS run_id, run_status, has_report, attempts, last_error, burned,
              count(*) OVER ()::int AS total,
              count(*) FILTER (WHERE burned) OVER ()::int AS burned_total
         FROM premature
        ORDER BY burned DESC, id
        LIMIT ${p.add(options.limit)}`,
      p.values,
    );
    const rows = result.rows;
    const count = rows[0]?.total ?? 0;
    if (count === 0) {
      return { status: 'ok', summary: `no waiting, running or recently failed export is ahead of its run's final report`, count: 0, items: [], remedy: null };
    }
    const burned = rows[0]!.burned_total;
    const items = rows.map((row) => ({
      id: row.id,
      status: row.status,
      runId: row.run_id,
      runStatus: row.run_status,
      hasFinalReport: row.has_report,
      attempts: row.attempts,
      lastError: row.last_error === null ? null : truncate(row.last_error, 120),
      burnedAttempts: row.burned,
    }));
    // Under the balanced claim these exports wait for their run without spending attempts, so
    // what is left is the attempts already burned and the app-side cause, not an active failure.
    const balanced = (await claimFunction()).variant === 'balanced';
    const waiting = balanced ? '; the balanced claim function holds them until the run completes' : '; each claim will fail and burn an attempt';
    const summary =
      burned > 0
        ? `${count} export(s) ran or wait before their run had a final report; ${burned} of them already burned attempts on "No final report content"${balanced ? waiting : ''}`
        : `${count} export(s) wait or run before their run is ${map.statuses.completed} with a final report${waiting}`;
    const appFix = 'and make the app create exports only once their run is COMPLETED (root cause 3)';
    return {
      status: burned > 0 && !balanced ? 'fail' : 'warn',
      summary,
      count,
      items,
      remedy: balanced
        ? `queue-doctor fix --premature (gives back attempts already burned, cancels exports of failed or cancelled runs) ${appFix}`
        : `queue-doctor fix --premature (requeues exports whose run has completed with their attempts given back, defers those whose run is still going, cancels those of failed or cancelled runs), then queue-doctor migrate up so exports wait for their run without burning attempts, ${appFix}`,
    };
  },
};
