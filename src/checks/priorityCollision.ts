import type { Check } from './types.js';
import { Params } from '../sql.js';

import { DEFAULT_EXPORT_PRIORITY } from '../defaults.js';

/**
 * A priority strictly ahead of `bestBulkPriority` (lower number = claimed sooner), for
 * `fix --reprioritize`. 50 when that is already ahead; otherwise ten ahead of the bulk work,
 * but not below 0 unless the bulk work itself already sits at 0 or below (then only a negative
 * number is ahead of it).
 */
export function suggestedExportPriority(bestBulkPriority: number): number {
  if (bestBulkPriority > DEFAULT_EXPORT_PRIORITY) return DEFAULT_EXPORT_PRIORITY;
  const tenAhead = Math.floor(bestBulkPriority) - 10;
  return bestBulkPriority > 0 ? Math.max(0, tenAhead) : tenAhead;
}

interface BulkRow {
  best_priority: number | null;
  queued: number;
  expired: number;
  queued_exports: number;
}

interface CollisionRow {
  id: string;
  priority: number;
  waiting_seconds: number;
  due: boolean;
  total: number;
}

/**
 * Bulk work is every non-export job a claim could hand out instead of an export: QUEUED ones
 * (due or not: the collision is in the priorities, the due time only decides when it bites) and
 * RUNNING ones whose lease expired. An export only gets ahead of it with a strictly lower number.
 */
export const priorityCollisionCheck: Check = {
  id: 'priority-collision',
  title: 'Queued exports are prioritised ahead of bulk work',
  async run({ db, model, options }) {
    const { sql, map } = model;
    const j = sql.job;
    const p = new Params();
    const queued = p.add(map.statuses.queued);
    const running = p.add(map.statuses.running);
    const exportType = p.add(map.types.export);
    // One branch per status so each can use its partial index (status = QUEUED / RUNNING).
    const bulk = await db.query<BulkRow>(
      `WITH bulk AS (
         SELECT b.${j.priority} AS priority, false AS expired
           FROM ${sql.jobs} b
          WHERE b.${j.status} = ${queued} AND b.${j.type} IS DISTINCT FROM ${exportType}
         UNION ALL
         SELECT b.${j.priority}, true
           FROM ${sql.jobs} b
          WHERE b.${j.status} = ${running} AND b.${j.leaseExpiresAt} < now() AND b.${j.type} IS DISTINCT FROM ${exportType}
       )
       SELECT (SELECT min(priority)::float8 FROM bulk) AS best_priority,
              (SELECT count(*)::int FROM bulk WHERE NOT expired) AS queued,
              (SELECT count(*)::int FROM bulk WHERE expired) AS expired,
              (SELECT count(*)::int FROM ${sql.jobs} e WHERE e.${j.status} = ${queued} AND e.${j.type} = ${exportType}) AS queued_exports`,
      p.values,
    );
    const { best_priority: bestBulk, queued: queuedBulk, expired: expiredBulk, queued_exports: queuedExports } = bulk.rows[0]!;

    if (bestBulk === null) {
      return { status: 'ok', summary: `no bulk work is waiting or reclaimable, so ${queuedExports} queued export(s) compete with nothing`, count: 0, items: [], remedy: null };
    }

    const q = new Params();
    const collisions = await db.query<CollisionRow>(
      `SELECT e.${j.id}::text AS id,
              e.${j.priority}::float8 AS priority,
              greatest(0, round(extract(epoch from now() - e.${j.scheduledAt})))::int AS waiting_seconds,
              e.${j.scheduledAt} <= now() AS due,
              count(*) OVER ()::int AS total
         FROM ${sql.jobs} e
        WHERE e.${j.status} = ${q.add(map.statuses.queued)}
          AND e.${j.type} = ${q.add(map.types.export)}
          AND e.${j.priority} >= ${q.add(bestBulk)}
        ORDER BY e.${j.priority}, e.${j.scheduledAt}, e.${j.id}
        LIMIT ${q.add(options.limit)}`,
      q.values,
    );
    const count = collisions.rows[0]?.total ?? 0;
    const bulkDescription = `${queuedBulk + expiredBulk} bulk job(s) (${queuedBulk} queued, ${expiredBulk} with expired leases) whose best priority is ${bestBulk}`;
    if (count === 0) {
      return { status: 'ok', summary: `all ${queuedExports} queued export(s) are ahead of ${bulkDescription}`, count: 0, items: [], remedy: null };
    }
    const target = suggestedExportPriority(bestBulk);
    return {
      status: 'warn',
      summary: `${count} of ${queuedExports} queued export(s) are not ahead of ${bulkDescription}: they wait behind it`,
      count,
      items: collisions.rows.map((row) => ({
        id: row.id,
        priority: row.priority,
        bestBulkPriority: bestBulk,
        waitingSeconds: row.waiting_seconds,
        due: row.due,
      })),
      remedy: `queue-doctor fix --reprioritize ${target}   (moves queued exports to priority ${target}, ahead of the bulk work's ${bestBulk})`,
    };
  },
};
