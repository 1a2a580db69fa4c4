import type { Database, Queryable } from '../db/database.js';
import { QueueDoctorError, usageError } from '../errors.js';
import { writeAuditEntry } from '../audit.js';
import { internalSchemaExists } from '../internalSchema.js';
import { loadQueueModel, type QueueModel } from '../schema/queueModel.js';
import type { SchemaMap } from '../schemaMap.js';
import { Params, quoteIdent } from '../sql.js';
import { idArrayType } from './guardedChange.js';
import { guardLockTimeout } from './fix.js';

export interface UndoOptions {
  dryRun: boolean;
  /** Recorded in the undo's own audit entry; must not contain a password. */
  commandLine: string;
}

export interface UndoResult {
  dryRun: boolean;
  /** The entry being undone. */
  auditId: number;
  /** Its action, e.g. "fix --reprioritize 50". */
  action: string;
  /** The audit entry of this undo (null in a dry run or when nothing was restored). */
  undoAuditId: number | null;
  /** Columns whose before-values were restored (union over the rows). */
  columns: string[];
  restored: string[];
  /** Rows whose changed columns no longer hold the entry's after-values: someone changed them since. */
  changedSince: string[];
  /** Rows a worker holds locked right now: left alone, never waited on. */
  skippedLocked: string[];
  /** Rows that no longer exist. */
  deleted: string[];
}

interface AuditRow {
  id: number;
  action: string;
  target_table: string;
  affected_ids: string[];
  rows_before: Record<string, unknown>[];
  rows_after: Record<string, unknown>[];
  undone_by: number | null;
}

interface RowChange {
  id: string;
  changed: string[];
  before: Record<string, unknown>;
  after: Record<string, unknown>;
}

/** Audit ids are positive integers; anything else is rejected before it reaches SQL. */
export function parseAuditId(input: string): number {
  const trimmed = input.trim();
  if (!/^\d{1,15}$/.test(trimmed) || Number(trimmed) < 1) {
    const shown = trimmed.replace(/[\x00-\x1f\x7f]/g, '?');
    throw usageError(`"${shown.length > 40 ? `${shown.slice(0, 40)}…` : shown}" is not an audit id (expected a positive whole number, as listed by queue-doctor history)`);
  }
  return Number(trimmed);
}

/**
 * Restores the before-values of one audit entry, in one transaction. Each row is locked with
 * SKIP LOCKED; a row is restored only when every column the entry changed still holds the
 * entry's after-value (compared as typed values), so nothing a worker wrote since is overwritten.
 * Rows changed since, locked or deleted are reported and left alone. The undo is audited itself
 * and marks the original entry, so it cannot be applied twice.
 */
export async function undoAuditEntry(db: Database, map: SchemaMap, auditIdInput: string, options: UndoOptions): Promise<UndoResult> {
  const auditId = parseAuditId(auditIdInput);
  return guardLockTimeout(db, map, () => db.transaction(
    async (tx) => {
      const model = await loadQueueModel(tx, map);
      const entry = await readEntry(tx, auditId);
      if (entry.undone_by !== null) {
        throw new QueueDoctorError('refused', `audit entry ${auditId} (${entry.action}) was already undone by entry ${entry.undone_by}`, 'queue-doctor history lists every entry');
      }
      if (/^undo \d+$/.test(entry.action)) {
        throw new QueueDoctorError('refused', `audit entry ${auditId} is itself an undo (${entry.action}); run the original command again instead`);
      }
      if (entry.target_table !== model.sql.jobs) {
        throw new QueueDoctorError(
          'refused',
          `audit entry ${auditId} changed ${entry.target_table}, but the schema map names the jobs table ${model.sql.jobs}`,
          'run undo with the config file that was in use when the change was made (--config FILE)',
        );
      }

      // A later queue-doctor change to the same rows goes first: undoing out of order would leave
      // a mix of both (changes in one run even share updated_at, so values alone cannot tell).
      const newer = await newerEntriesTouching(tx, auditId, entry.affected_ids);
      if (newer.length > 0) {
        throw new QueueDoctorError(
          'refused',
          `rows of audit entry ${auditId} were changed since by later queue-doctor changes not yet undone (entr${newer.length === 1 ? 'y' : 'ies'} ${newer.join(', ')}); nothing was restored`,
          `undo those first, newest first: queue-doctor undo ${newer[0]}`,
        );
      }

      const changes = pairRows(entry);
      const columns = await restorableColumns(tx, model, changes);
      const ids = changes.map((change) => change.id);
      const idType = idArrayType(model);

      const locked = await tx.query<{ id: string }>(
        `SELECT j.${model.sql.job.id}::text AS id FROM ${model.sql.jobs} j WHERE j.${model.sql.job.id} = ANY($1::${idType}) ORDER BY j.${model.sql.job.id} FOR UPDATE SKIP LOCKED`,
        [ids],
      );
      const present = await tx.query<{ id: string }>(`SELECT j.${model.sql.job.id}::text AS id FROM ${model.sql.jobs} j WHERE j.${model.sql.job.id} = ANY($1::${idType})`, [ids]);
      const lockedIds = new Set(locked.rows.map((row) => row.id));
      const presentIds = new Set(present.rows.map((row) => row.id));
      const mine = changes.filter((change) => lockedIds.has(change.id));

      const untouched = await findUntouched(tx, model, mine, columns);
      const restorable = mine.filter((change) => untouched.has(change.id));
      const restored = await restore(tx, model, restorable, columns);

      const result: UndoResult = {
        dryRun: options.dryRun,
        auditId,
        action: entry.action,
        undoAuditId: null,
        columns,
        restored: restored.map((row) => row.id),
        changedSince: mine.filter((change) => !untouched.has(change.id)).map((change) => change.id),
        skippedLocked: ids.filter((id) => presentIds.has(id) && !lockedIds.has(id)),
        deleted: ids.filter((id) => !presentIds.has(id)),
      };
      if (!options.dryRun && restored.length > 0) {
        const current = new Map(untouched);
        result.undoAuditId = await writeAuditEntry(tx, {
          action: `undo ${auditId}`,
          commandLine: options.commandLine,
          targetTable: model.sql.jobs,
          affectedIds: restored.map((row) => row.id),
          rowsBefore: restored.map((row) => current.get(row.id)!),
          rowsAfter: restored.map((row) => row.row),
        });
        await tx.query('UPDATE queue_doctor.audit_log SET undone_by = $1 WHERE id = $2', [result.undoAuditId, auditId]);
      }
      return result;
    },
    { rollback: options.dryRun },
  ));
}

async function readEntry(tx: Queryable, auditId: number): Promise<AuditRow> {
  const notFound = () => new QueueDoctorError('not-found', `no audit entry ${auditId}`, 'queue-doctor history lists the entries');
  if (!(await internalSchemaExists(tx))) throw notFound();
  const table = await tx.query<{ present: boolean }>(`SELECT to_regclass('queue_doctor.audit_log') IS NOT NULL AS present`);
  if (!table.rows[0]?.present) throw notFound();
  // FOR UPDATE (waiting, within lock_timeout): a concurrent undo of the same entry goes first
  // and this one then sees undone_by and refuses.
  const result = await tx.query<AuditRow>(
    `SELECT id::int AS id, action, target_table, affected_ids, rows_before, rows_after, undone_by::int AS undone_by
       FROM queue_doctor.audit_log WHERE id = $1 FOR UPDATE`,
    [auditId],
  );
  const row = result.rows[0];
  if (!row) throw notFound();
  return row;
}

/** Pairs each row's before and after values and names the columns the entry changed in it. */
function pairRows(entry: AuditRow): RowChange[] {
  return entry.affected_ids.map((id, index) => {
    const before = entry.rows_before[index] ?? {};
    const after = entry.rows_after[index] ?? {};
    // Both sides came out of to_jsonb in one session, so equal values serialise identically.
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    const changed = keys.filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key])).sort();
    return { id, changed, before, after };
  });
}

/** The changed columns, checked against the table as it is now. */
async function restorableColumns(tx: Queryable, model: QueueModel, changes: RowChange[]): Promise<string[]> {
  const wanted = [...new Set(changes.flatMap((change) => change.changed))].sort();
  const result = await tx.query<{ name: string; generated: boolean }>(
    `SELECT a.attname::text AS name, a.attgenerated <> '' AS generated
       FROM pg_attribute a
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`,
    [model.sql.jobs],
  );
  const columns = new Map(result.rows.map((row) => [row.name, row.generated]));
  const missing = wanted.filter((name) => !columns.has(name));
  if (missing.length > 0) {
    throw new QueueDoctorError('refused', `the entry changed column(s) ${missing.join(', ')}, which ${model.sql.jobs} no longer has; nothing was restored`);
  }
  // A generated column follows the others by itself and cannot be assigned.
  return wanted.filter((name) => !columns.get(name));
}

/** Rows that must match: the JSON each row contributes to the recordset in the statements below. */
function recordset(changes: RowChange[], side: 'before' | 'after'): string {
  return JSON.stringify(changes.map((change) => ({ id: change.id, changed: change.changed, values: change[side] })));
}

/** Columns the row changed, as `$n` parameters, with the typed value of each side. */
function columnParams(columns: string[], p: Params): { column: string; name: string; param: string }[] {
  return columns.map((name) => ({ name, column: quoteIdent(name), param: p.add(name) }));
}

/**
 * Of the rows we hold, those whose changed columns still hold the entry's after-values, mapped
 * to their whole current row. Compared through to_jsonb of typed values on both sides (the
 * after-values go through jsonb_populate_record first), so timestamps compare as instants
 * whatever the session time zone, and any column type compares, json included.
 */
async function findUntouched(tx: Queryable, model: QueueModel, rows: RowChange[], columns: string[]): Promise<Map<string, Record<string, unknown>>> {
  if (rows.length === 0) return new Map();
  const { sql } = model;
  const p = new Params();
  const input = p.add(recordset(rows, 'after'));
  const idType = idArrayType(model).replace('[]', '');
  const guard = columnParams(columns, p)
    .map(({ column, param }) => `(NOT (i.changed @> ARRAY[${param}::text]) OR to_jsonb(j.${column}) IS NOT DISTINCT FROM to_jsonb(a.${column}))`)
    .join(' AND ');
  const result = await tx.query<{ id: string; row: Record<string, unknown> }>(
    `SELECT j.${sql.job.id}::text AS id, to_jsonb(j) AS row
       FROM jsonb_to_recordset(${input}::jsonb) AS i(id text, changed text[], "values" jsonb)
      CROSS JOIN LATERAL jsonb_populate_record(NULL::${sql.jobs}, i."values") AS a
       JOIN ${sql.jobs} j ON j.${sql.job.id} = i.id::${idType}
      WHERE ${guard || 'true'}`,
    p.values,
  );
  return new Map(result.rows.map((row) => [row.id, row.row]));
}

/** Writes the before-values of each row's changed columns (typed via jsonb_populate_record). */
async function restore(tx: Queryable, model: QueueModel, rows: RowChange[], columns: string[]): Promise<{ id: string; row: Record<string, unknown> }[]> {
  if (rows.length === 0 || columns.length === 0) return [];
  const { sql } = model;
  const p = new Params();
  const input = p.add(recordset(rows, 'before'));
  const idType = idArrayType(model).replace('[]', '');
  const assignments = columnParams(columns, p)
    .map(({ column, param }) => `${column} = CASE WHEN i.changed @> ARRAY[${param}::text] THEN b.${column} ELSE j.${column} END`)
    .join(', ');
  const result = await tx.query<{ id: string; row: Record<string, unknown> }>(
    `UPDATE ${sql.jobs} j SET ${assignments}
       FROM jsonb_to_recordset(${input}::jsonb) AS i(id text, changed text[], "values" jsonb)
      CROSS JOIN LATERAL jsonb_populate_record(NULL::${sql.jobs}, i."values") AS b
      WHERE j.${sql.job.id} = i.id::${idType}
     RETURNING j.${sql.job.id}::text AS id, to_jsonb(j) AS row`,
    p.values,
  );
  return result.rows.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

async function newerEntriesTouching(tx: Queryable, auditId: number, ids: string[]): Promise<number[]> {
  const result = await tx.query<{ id: number }>(
    `SELECT id::int AS id FROM queue_doctor.audit_log
      WHERE id > $1 AND undone_by IS NULL AND affected_ids && $2::text[] AND action !~ '^undo [0-9]+$'
      ORDER BY id DESC`,
    [auditId, ids],
  );
  return result.rows.map((row) => row.id);
}
