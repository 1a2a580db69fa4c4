import type { Queryable } from './database.js';

export interface LockBlocker {
  pid: number;
  user: string | null;
  application: string | null;
  state: string | null;
  mode: string;
  ageSeconds: number | null;
}

/**
 * Sessions holding a lock on `relation` that conflicts with reading it. Run outside the failed
 * transaction: pg_locks and pg_stat_activity need no lock themselves, so this cannot hang.
 */
export async function findTableLockHolders(db: Queryable, qualifiedRelation: string): Promise<LockBlocker[]> {
  const result = await db.query<LockBlocker>(
    `SELECT l.pid, a.usename::text AS "user", a.application_name AS application, a.state, l.mode,
            round(extract(epoch FROM now() - COALESCE(a.xact_start, a.query_start)))::int AS "ageSeconds"
       FROM pg_locks l
       LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'relation' AND l.relation = to_regclass($1) AND l.granted
        AND l.mode IN ('AccessExclusiveLock', 'ExclusiveLock', 'ShareRowExclusiveLock', 'ShareLock')
        AND l.pid <> pg_backend_pid()
      ORDER BY l.pid`,
    [qualifiedRelation],
  );
  return result.rows;
}

export function describeBlockers(blockers: LockBlocker[]): string {
  if (blockers.length === 0) return 'no lock holder is visible to this role';
  return blockers
    .map((b) => `pid ${b.pid}${b.user ? ` (${b.user}${b.application ? `, ${b.application}` : ''})` : ''} holds ${b.mode}${b.state ? `, ${b.state}` : ''}${b.ageSeconds !== null ? ` for ${b.ageSeconds}s` : ''}`)
    .join('; ');
}
