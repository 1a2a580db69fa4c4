import type { Database } from '../db/database.js';
import { usageError } from '../errors.js';
import { INTERNAL_SCHEMA, internalSchemaExists } from '../internalSchema.js';

export interface HistoryEntry {
  id: number;
  recordedAt: Date;
  databaseUser: string;
  action: string;
  /** How many rows the change touched. */
  rows: number;
  commandLine: string;
  /** The audit entry of the undo that reversed this one, or null. */
  undoneBy: number | null;
}

export interface HistoryOptions {
  limit: number;
}

import { DEFAULT_HISTORY_LIMIT } from '../defaults.js';

export { DEFAULT_HISTORY_LIMIT };

/**
 * The audit log, newest first. Before queue-doctor has changed anything its schema does not
 * exist: that is an empty history, not an error (and reading it creates nothing).
 */
export async function listHistory(db: Database, options: HistoryOptions): Promise<HistoryEntry[]> {
  if (!Number.isInteger(options.limit) || options.limit < 1) throw usageError('--limit must be a whole number of at least 1');
  return db.transaction(
    async (tx) => {
      if (!(await internalSchemaExists(tx))) return [];
      const table = await tx.query<{ present: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS present`, [`${INTERNAL_SCHEMA}.audit_log`]);
      if (!table.rows[0]?.present) return [];
      const result = await tx.query<{
        id: number;
        recorded_at: Date;
        database_user: string;
        action: string;
        rows: number;
        command_line: string;
        undone_by: number | null;
      }>(
        `SELECT id::int AS id, recorded_at, database_user, action, cardinality(affected_ids)::int AS rows, command_line, undone_by::int AS undone_by
           FROM queue_doctor.audit_log
          ORDER BY id DESC
          LIMIT $1`,
        [options.limit],
      );
      return result.rows.map((row) => ({
        id: row.id,
        recordedAt: row.recorded_at,
        databaseUser: row.database_user,
        action: row.action,
        rows: row.rows,
        commandLine: row.command_line,
        undoneBy: row.undone_by,
      }));
    },
    { readOnly: true },
  );
}
