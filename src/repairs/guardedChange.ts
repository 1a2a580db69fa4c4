import type { Queryable } from '../db/database.js';
import { writeAuditEntry } from '../audit.js';
import type { QueueModel } from '../schema/queueModel.js';
import type { Params } from '../sql.js';

/** A change to jobs rows, described as SQL over the alias `j` with parameters in `params`. */
export interface GuardedChange {
  /** Recorded in the audit log and shown in results, e.g. "fix --release-expired". */
  action: string;
  /** Which rows need the change (keep it on the active set so it is index-backed). */
  where: string;
  /** The SET list of the UPDATE, e.g. `${job.priority} = $1, ${job.updatedAt} = now()`. */
  set: string;
  params: Params;
}

export interface ChangedRow {
  id: string;
  before: Record<string, unknown>;
  after: Record<string, unknown>;
}

export interface GuardedChangeResult {
  action: string;
  changed: ChangedRow[];
  /** Rows that needed the change but a worker holds locked: skipped, never waited on. */
  skippedLocked: string[];
  /** The audit record of this change, or null when nothing changed or it was a dry run. */
  auditId: number | null;
}

export interface ChangeContext {
  dryRun: boolean;
  commandLine: string;
}

export function idArrayType(model: QueueModel): string {
  return model.jobIdKind === 'uuid' ? 'uuid[]' : model.jobIdKind === 'integer' ? 'bigint[]' : 'text[]';
}

/**
 * Applies one change inside the caller's transaction: rows a worker has locked are skipped
 * (FOR UPDATE SKIP LOCKED) and reported, every changed row's before and after values go to the
 * audit log in the same transaction. In a dry run the caller rolls the transaction back.
 */
export async function applyGuardedChange(tx: Queryable, model: QueueModel, change: GuardedChange, context: ChangeContext): Promise<GuardedChangeResult> {
  const { sql } = model;
  const id = sql.job.id;

  // One statement, so every parameter of `where` and `set` is referenced exactly where the
  // caller put it (PostgreSQL rejects a bound parameter that a statement does not use), and so
  // locking, changing and spotting the rows held by others all read one snapshot.
  const result = await tx.query<{ id: string; before: Record<string, unknown> | null; after: Record<string, unknown> | null }>(
    `WITH target AS (
       SELECT j.${id} AS target_id, to_jsonb(j) AS before
         FROM ${sql.jobs} j
        WHERE ${change.where}
        ORDER BY j.${id}
          FOR UPDATE SKIP LOCKED
     ),
     updated AS (
       UPDATE ${sql.jobs} j SET ${change.set}
         FROM target qd_target
        WHERE j.${id} = qd_target.target_id
       RETURNING j.${id} AS target_id, to_jsonb(j) AS after
     ),
     held AS (
       -- Still matching but not ours to lock: a worker holds it right now.
       SELECT j.${id} AS target_id FROM ${sql.jobs} j
        WHERE ${change.where} AND j.${id} NOT IN (SELECT target_id FROM target)
     )
     SELECT * FROM (
       SELECT u.target_id::text AS id, qd_target.before, u.after FROM updated u JOIN target qd_target USING (target_id)
       UNION ALL
       SELECT h.target_id::text, NULL, NULL FROM held h
     ) AS outcome
     ORDER BY id COLLATE "C"`,
    change.params.values,
  );
  const changed = result.rows.filter((row) => row.after !== null).map((row) => ({ id: row.id, before: row.before!, after: row.after! }));
  const skippedLocked = result.rows.filter((row) => row.after === null).map((row) => row.id);
  if (changed.length === 0) return { action: change.action, changed, skippedLocked, auditId: null };

  let auditId: number | null = null;
  if (!context.dryRun) {
    auditId = await writeAuditEntry(tx, {
      action: change.action,
      commandLine: context.commandLine,
      targetTable: sql.jobs,
      affectedIds: changed.map((row) => row.id),
      rowsBefore: changed.map((row) => row.before),
      rowsAfter: changed.map((row) => row.after),
    });
  }
  return { action: change.action, changed, skippedLocked, auditId };
}
