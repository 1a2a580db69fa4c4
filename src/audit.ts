import type { Queryable } from './db/database.js';
import { ensureInternalSchema } from './internalSchema.js';

/** One applied change, as `queue-doctor history` lists it and `queue-doctor undo` reverses it. */
export interface AuditEntry {
  /** What was done, e.g. "fix --reprioritize", "claim", "undo 12". */
  action: string;
  /** The command line as typed, with any connection string removed by the caller. */
  commandLine: string;
  /** The quoted, schema-qualified table the rows belong to. */
  targetTable: string;
  /** Whole rows (to_jsonb) before the change, keyed by the job id as text. */
  rowsBefore: Record<string, unknown>[];
  /** The same rows after the change, so undo can tell whether anyone changed them since. */
  rowsAfter: Record<string, unknown>[];
  affectedIds: string[];
}

/** Written in the same transaction as the change itself: no change without its record. */
export async function writeAuditEntry(tx: Queryable, entry: AuditEntry): Promise<number> {
  await ensureInternalSchema(tx);
  const result = await tx.query<{ id: number }>(
    `INSERT INTO queue_doctor.audit_log (command_line, action, target_table, affected_ids, rows_before, rows_after)
     VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) RETURNING id::int AS id`,
    [entry.commandLine, entry.action, entry.targetTable, entry.affectedIds, JSON.stringify(entry.rowsBefore), JSON.stringify(entry.rowsAfter)],
  );
  return result.rows[0]!.id;
}
