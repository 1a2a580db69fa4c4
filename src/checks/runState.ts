import type { Check, CheckStatus } from './types.js';
import type { QueueModel } from '../schema/queueModel.js';
import { Params } from '../sql.js';

/**
 * SQL that is true when a run row (alias `run`) holds final report content. The column may be
 * jsonb, json or text, so it is judged by its text: SQL NULL, JSON null, an empty string and an
 * empty object or array all mean "nothing to export".
 */
export function hasFinalReportSql(model: QueueModel, run: string): string {
  const report = `${run}.${model.sql.run.finalReport}`;
  return `(${report} IS NOT NULL AND btrim(${report}::text) !~ '^(null|""|\\{\\s*\\}|\\[\\s*\\])?$')`;
}

/**
 * Every QUEUED and RUNNING job with its run id, as a UNION ALL of one branch per status so
 * each branch can use its partial index: the cost follows the active set, not the history.
 */
export function activeJobsSql(model: QueueModel, params: Params): string {
  const { sql, map } = model;
  const j = sql.job;
  const exportType = params.add(map.types.export);
  const branch = (status: string) =>
    `SELECT a.${j.id}::text AS job_id, (a.${j.type} = ${exportType}) IS TRUE AS is_export, ${sql.jobRunId('a')} AS run_id
       FROM ${sql.jobs} a
      WHERE a.${j.status} = ${params.add(status)}`;
  return `${branch(map.statuses.queued)}\n UNION ALL\n ${branch(map.statuses.running)}`;
}

const KIND_ORDER = ['completed-without-report', 'export-for-dead-run', 'missing-run'] as const;
type Kind = (typeof KIND_ORDER)[number];

interface FindingRow {
  kind: Kind;
  id: string;
  run_status: string | null;
  job_ids: string[];
  job_count: number;
}

/**
 * Only runs that active jobs point to are examined, never the run history.
 *  - completed-without-report (fail): the run claims to be done but has nothing to export, so
 *    every export for it burns its attempts and fails; no queue operation can fix that.
 *  - export-for-dead-run (warn): exports of FAILED/CANCELLED runs can never succeed; they only
 *    waste claims and attempts until `fix --premature` cancels them.
 *  - missing-run (warn): the run id (column or payload key) points at no run row; an export
 *    with no run id at all is listed by its job id.
 */
export const runStateCheck: Check = {
  id: 'run-state',
  title: 'Runs behind active jobs are consistent',
  async run({ db, model, options }) {
    const { sql, map } = model;
    const r = sql.run;
    const p = new Params();
    const active = activeJobsSql(model, p);
    const completed = p.add(map.statuses.completed);
    const failed = p.add(map.statuses.failed);
    const cancelled = p.add(map.statuses.cancelled);
    const result = await db.query<FindingRow>(
      `WITH active AS (${active}),
       linked AS (
         SELECT active.*, run.${r.id} IS NOT NULL AS run_found, run.${r.status}::text AS run_status,
                ${hasFinalReportSql(model, 'run')} AS has_report
           FROM active LEFT JOIN ${sql.runs} run ON run.${r.id} = active.run_id
       ),
       findings AS (
         SELECT 'completed-without-report' AS kind, run_id::text AS id, min(run_status) AS run_status,
                (array_agg(job_id ORDER BY is_export DESC, job_id))[1:5] AS job_ids, count(*)::int AS job_count
           FROM linked WHERE run_status = ${completed} AND NOT has_report GROUP BY run_id
         UNION ALL
         SELECT 'export-for-dead-run', run_id::text, min(run_status),
                (array_agg(job_id ORDER BY job_id))[1:5], count(*)::int
           FROM linked WHERE is_export AND run_status IN (${failed}, ${cancelled}) GROUP BY run_id
         UNION ALL
         SELECT 'missing-run', run_id::text, NULL,
                (array_agg(job_id ORDER BY is_export DESC, job_id))[1:5], count(*)::int
           FROM linked WHERE run_id IS NOT NULL AND NOT run_found GROUP BY run_id
         UNION ALL
         SELECT 'missing-run', job_id, NULL, ARRAY[job_id], 1
           FROM linked WHERE run_id IS NULL AND is_export
       )
       SELECT kind, id, run_status, job_ids, job_count FROM findings
        ORDER BY CASE kind ${KIND_ORDER.map((kind, rank) => `WHEN '${kind}' THEN ${rank}`).join(' ')} END, id`,
      p.values,
    );
    const findings = result.rows;
    if (findings.length === 0) {
      return { status: 'ok', summary: 'every run behind an active job exists and is in a state its jobs can finish against', count: 0, items: [], remedy: null };
    }

    const byKind = (kind: Kind) => findings.filter((f) => f.kind === kind);
    const withoutReport = byKind('completed-without-report');
    const deadRuns = byKind('export-for-dead-run');
    const missing = byKind('missing-run');
    const parts: string[] = [];
    const remedies: string[] = [];
    if (withoutReport.length > 0) {
      parts.push(`${withoutReport.length} ${map.statuses.completed} run(s) without a final report`);
      remedies.push(
        `re-run the report, or regenerate the final report, of run(s) ${listIds(withoutReport)} (a ${map.statuses.completed} run with an empty ${map.runs.columns.finalReport} fails every export), then \`queue-doctor fix --premature\``,
      );
    }
    if (deadRuns.length > 0) {
      const exports = deadRuns.reduce((sum, f) => sum + f.job_count, 0);
      parts.push(`${exports} active export(s) of ${deadRuns.length} ${map.statuses.failed}/${map.statuses.cancelled} run(s)`);
      remedies.push('`queue-doctor fix --premature` (cancels exports of failed or cancelled runs)');
    }
    if (missing.length > 0) {
      const jobs = missing.reduce((sum, f) => sum + f.job_count, 0);
      parts.push(`${jobs} active job(s) pointing at no run row`);
      remedies.push(
        `check where the run id comes from (jobs.columns.runId / jobs.runIdPayloadKey in queue-doctor.config.json), then \`queue-doctor why ${missing[0]!.job_ids[0]}\``,
      );
    }
    const status: CheckStatus = withoutReport.length > 0 ? 'fail' : 'warn';
    return {
      status,
      summary: parts.join('; '),
      count: findings.length,
      items: findings.slice(0, options.limit).map((f) => ({
        id: f.id,
        kind: f.kind,
        runStatus: f.run_status,
        jobIds: f.job_ids,
        jobCount: f.job_count,
      })),
      remedy: remedies.join('; '),
    };
  },
};

function listIds(findings: readonly FindingRow[]): string {
  const shown = findings.slice(0, 3).map((f) => f.id);
  return findings.length > shown.length ? `${shown.join(', ')} and ${findings.length - shown.length} more` : shown.join(', ');
}
