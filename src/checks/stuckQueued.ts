import { Params } from '../sql.js';
import type { Check, CheckContext, CheckItem } from './types.js';

export interface StuckTypeGroup {
  type: string;
  count: number;
  oldestSeconds: number;
}

export interface StuckQueuedJob extends CheckItem {
  type: string;
  priority: number;
  waitingSeconds: number;
  attempts: number;
  runId: string | null;
}

export interface StuckQueuedReport {
  /** All due QUEUED jobs, stuck or not, so a healthy summary still carries its numbers. */
  due: number;
  oldestDueSeconds: number | null;
  stuck: number;
  stuckExports: number;
  oldestStuckSeconds: number | null;
  /** Stuck jobs per type: the export type first, then the largest groups. */
  byType: StuckTypeGroup[];
  /** Stuck jobs, longest waiting first, at most options.limit of them. */
  jobs: StuckQueuedJob[];
}

interface TypeRow {
  type: string;
  due: number;
  stuck: number;
  oldest_seconds: number;
}

interface JobRow {
  id: string;
  type: string;
  priority: number;
  waiting_seconds: number;
  attempts: number;
  run_id: string | null;
}

/**
 * A due QUEUED job is stuck once it has waited longer than options.stuckAfterSeconds since
 * its scheduled_at. Both queries filter on status = queued, so they read only the active set.
 */
export async function readStuckQueued(context: CheckContext): Promise<StuckQueuedReport> {
  const { db, model, options } = context;
  const { jobs, job } = model.sql;

  const groups = new Params();
  const queued = groups.add(model.map.statuses.queued);
  const threshold = groups.add(options.stuckAfterSeconds);
  const typeRows = await db.query<TypeRow>(
    `SELECT j.${job.type}::text AS type,
            count(*)::int AS due,
            count(*) FILTER (WHERE j.${job.scheduledAt} < now() - make_interval(secs => ${threshold}::float8))::int AS stuck,
            floor(extract(epoch FROM now() - min(j.${job.scheduledAt})))::float8 AS oldest_seconds
       FROM ${jobs} j
      WHERE j.${job.status} = ${queued}
        AND j.${job.scheduledAt} <= now()
      GROUP BY 1`,
    groups.values,
  );

  const exportType = model.map.types.export;
  const stuckGroups = typeRows.rows
    .filter((row) => row.stuck > 0)
    // Within a type the oldest due job is also its oldest stuck job, so the age carries over.
    .map((row) => ({ type: row.type, count: row.stuck, oldestSeconds: row.oldest_seconds }))
    .sort((a, b) => Number(b.type === exportType) - Number(a.type === exportType) || b.count - a.count || a.type.localeCompare(b.type));
  const due = typeRows.rows.reduce((sum, row) => sum + row.due, 0);
  const stuck = stuckGroups.reduce((sum, group) => sum + group.count, 0);
  const maxAge = (ages: number[]) => (ages.length > 0 ? Math.max(...ages) : null);

  return {
    due,
    oldestDueSeconds: maxAge(typeRows.rows.map((row) => row.oldest_seconds)),
    stuck,
    stuckExports: stuckGroups.find((group) => group.type === exportType)?.count ?? 0,
    oldestStuckSeconds: maxAge(stuckGroups.map((group) => group.oldestSeconds)),
    byType: stuckGroups,
    jobs: stuck > 0 ? await listStuckJobs(context, options.limit) : [],
  };
}

async function listStuckJobs(context: CheckContext, limit: number, onlyType?: string): Promise<StuckQueuedJob[]> {
  const { db, model, options } = context;
  const { jobs, job } = model.sql;
  const p = new Params();
  const queued = p.add(model.map.statuses.queued);
  const threshold = p.add(options.stuckAfterSeconds);
  const typeFilter = onlyType === undefined ? '' : `AND j.${job.type} = ${p.add(onlyType)}`;
  const result = await db.query<JobRow>(
    `SELECT j.${job.id}::text AS id,
            j.${job.type}::text AS type,
            j.${job.priority}::float8 AS priority,
            floor(extract(epoch FROM now() - j.${job.scheduledAt}))::float8 AS waiting_seconds,
            j.${job.attempts}::int AS attempts,
            ${model.sql.jobRunId('j')}::text AS run_id
       FROM ${jobs} j
      WHERE j.${job.status} = ${queued}
        AND j.${job.scheduledAt} < now() - make_interval(secs => ${threshold}::float8)
        ${typeFilter}
      ORDER BY j.${job.scheduledAt}, j.${job.id}
      LIMIT ${p.add(limit)}`,
    p.values,
  );
  return result.rows.map((row) => ({
    id: row.id,
    type: row.type,
    priority: row.priority,
    waitingSeconds: row.waiting_seconds,
    attempts: row.attempts,
    runId: row.run_id,
  }));
}

export const stuckQueuedCheck: Check = {
  id: 'stuck-queued',
  title: 'Due queued jobs are picked up in time',
  async run(context) {
    const report = await readStuckQueued(context);
    const queued = context.model.map.statuses.queued;
    const threshold = formatSeconds(context.options.stuckAfterSeconds);

    if (report.stuck === 0) {
      const summary =
        report.due === 0
          ? `no due ${queued} jobs are waiting`
          : `${plural(report.due, `due ${queued} job`)}, none waiting over ${threshold} (oldest ${formatSeconds(report.oldestDueSeconds ?? 0)})`;
      return { status: 'ok', summary, count: 0, items: [], remedy: null };
    }

    const exportType = context.model.map.types.export;
    const exportsStuck = report.stuckExports > 0;
    // The remedy names a real job, even when --limit left it out of the items.
    const [oldest] = await listStuckJobs(context, 1, exportsStuck ? exportType : undefined);
    const subject = oldest ? shellWord(oldest.id) : '<job id>';
    const remedy = exportsStuck
      ? `queue-doctor why ${subject}   (the longest-waiting ${exportType} job), then queue-doctor inspect --check starvation,expired-leases to see what holds the queue`
      : `queue-doctor why ${subject}   (the longest-waiting job), then queue-doctor inspect --check starvation,expired-leases to see what holds the queue`;

    return {
      status: exportsStuck ? 'fail' : 'warn',
      summary: `${plural(report.stuck, `due ${queued} job`)} waiting over ${threshold}: ${describeGroups(report.byType)}`,
      count: report.stuck,
      items: report.jobs,
      remedy,
    };
  },
};

const SHOWN_TYPES = 4;

function describeGroups(groups: StuckTypeGroup[]): string {
  const shown = groups.slice(0, SHOWN_TYPES).map((g) => `${g.count} ${g.type} (oldest ${formatSeconds(g.oldestSeconds)})`);
  const hidden = groups.slice(SHOWN_TYPES);
  if (hidden.length > 0) {
    shown.push(`${hidden.reduce((sum, g) => sum + g.count, 0)} of ${plural(hidden.length, 'other type')}`);
  }
  return shown.join(', ');
}

export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
}

export function formatSeconds(seconds: number): string {
  return `${Number.isInteger(seconds) ? seconds : Number(seconds.toFixed(3))}s`;
}

/** A job id as one shell word, so a remedy can be pasted even when text ids contain spaces. */
export function shellWord(value: string): string {
  const printable = value.replace(/[\x00-\x1f\x7f]/g, '?');
  return /^[\w.:@+-]+$/.test(printable) ? printable : `'${printable.replace(/'/g, `'\\''`)}'`;
}
