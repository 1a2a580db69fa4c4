import type { Queryable } from './db/database.js';

/**
 * queue-doctor keeps its own bookkeeping (applied migrations, saved claim functions, the audit
 * log) in a schema of its own, so it never adds a column or table among the app's.
 */
export const INTERNAL_SCHEMA = 'queue_doctor';

export async function internalSchemaExists(db: Queryable): Promise<boolean> {
  const result = await db.query<{ present: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS present', [INTERNAL_SCHEMA]);
  return Boolean(result.rows[0]?.present);
}

/** Idempotent; safe inside any write transaction. */
export async function ensureInternalSchema(db: Queryable): Promise<void> {
  // One statement per call: PGlite (the demo) prepares every query and refuses several at once.
  await db.query('CREATE SCHEMA IF NOT EXISTS queue_doctor');
  await db.query(`
    CREATE TABLE IF NOT EXISTS queue_doctor.audit_log (
      id            bigserial PRIMARY KEY,
      recorded_at   timestamptz NOT NULL DEFAULT now(),
      database_user text NOT NULL DEFAULT current_user,
      command_line  text NOT NULL,
      action        text NOT NULL,
      target_table  text NOT NULL,
      affected_ids  text[] NOT NULL,
      rows_before   jsonb NOT NULL,
      rows_after    jsonb NOT NULL,
      undone_by     bigint REFERENCES queue_doctor.audit_log (id)
    );`);
}
