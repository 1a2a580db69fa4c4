import type { Queryable } from '../db/database.js';
import { QueueDoctorError } from '../errors.js';
import { INTERNAL_SCHEMA } from '../internalSchema.js';

export const MIGRATIONS_TABLE = `${INTERNAL_SCHEMA}.migrations`;
export const SAVED_FUNCTIONS_TABLE = `${INTERNAL_SCHEMA}.saved_functions`;

/**
 * The advisory lock every `migrate up|down` holds for its whole run ('qdmi', 'grat' as two int4
 * keys). Advisory locks are per database, so two databases on one server never block each other.
 */
export const MIGRATION_LOCK_KEYS = [0x71646d69, 0x67726174] as const;

/** Bookkeeping lives only in queue-doctor's own schema; nothing is added among the app's tables. */
const BOOTSTRAP = [
  `CREATE SCHEMA IF NOT EXISTS ${INTERNAL_SCHEMA}`,
  `CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (
     version                integer PRIMARY KEY,
     name                   text NOT NULL,
     applied_at             timestamptz NOT NULL DEFAULT now(),
     applied_by             text NOT NULL DEFAULT current_user,
     checksum               text NOT NULL,
     schema_map_fingerprint text NOT NULL
   )`,
  // One row per overload of the claim function a migration replaced, to restore it verbatim.
  `CREATE TABLE IF NOT EXISTS ${SAVED_FUNCTIONS_TABLE} (
     migration_version integer NOT NULL,
     signature         text NOT NULL,
     definition        text NOT NULL,
     owner             name NOT NULL,
     acl               aclitem[],
     comment           text,
     saved_at          timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (migration_version, signature)
   )`,
];

export async function ensureTrackingTables(tx: Queryable): Promise<void> {
  for (const statement of BOOTSTRAP) await tx.query(statement);
}

export interface TrackedMigration {
  version: number;
  name: string;
  appliedAt: string;
  appliedBy: string;
  checksum: string;
  schemaMapFingerprint: string;
}

/** Applied migrations, oldest first; none when the tracking table does not exist yet. */
export async function readApplied(db: Queryable): Promise<TrackedMigration[]> {
  const present = await db.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [MIGRATIONS_TABLE]);
  if (!present.rows[0]?.present) return [];
  const rows = await db.query<TrackedMigration>(
    `SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS "appliedAt",
            applied_by AS "appliedBy", checksum, schema_map_fingerprint AS "schemaMapFingerprint"
       FROM ${MIGRATIONS_TABLE}
      ORDER BY version`,
  );
  return rows.rows;
}

export async function recordApplied(tx: Queryable, entry: { version: number; name: string; checksum: string; fingerprint: string }): Promise<void> {
  await tx.query(`INSERT INTO ${MIGRATIONS_TABLE} (version, name, checksum, schema_map_fingerprint) VALUES ($1, $2, $3, $4)`, [
    entry.version,
    entry.name,
    entry.checksum,
    entry.fingerprint,
  ]);
}

export async function recordReverted(tx: Queryable, version: number): Promise<void> {
  await tx.query(`DELETE FROM ${MIGRATIONS_TABLE} WHERE version = $1`, [version]);
}

/**
 * Takes the session-level migration lock without waiting. A second concurrent run is refused
 * at once, naming the session that holds the lock, instead of queueing behind it.
 */
export async function acquireMigrationLock(db: Queryable): Promise<() => Promise<void>> {
  const [first, second] = MIGRATION_LOCK_KEYS;
  const taken = await db.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1::int4, $2::int4) AS taken', [first, second]);
  if (!taken.rows[0]?.taken) {
    const holder = await db.query<{ pid: number }>(
      `SELECT pid FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = 2
        LIMIT 1`,
      [first, second],
    );
    const pid = holder.rows[0]?.pid;
    throw new QueueDoctorError(
      'refused',
      `another queue-doctor migrate is running (pid ${pid ?? 'unknown'})`,
      'wait for it to finish; `queue-doctor migrate status` shows what it applied',
    );
  }
  return async () => {
    await db.query('SELECT pg_advisory_unlock($1::int4, $2::int4)', [first, second]);
  };
}
