import { QueueDoctorError } from '../errors.js';
import type { Queryable } from '../db/database.js';
import type { JobColumns, RunColumns, SchemaMap } from '../schemaMap.js';
import { quoteIdent, quoteLiteral } from '../sql.js';

/** Quoted SQL fragments for every name in the schema map: the only way queries name things. */
export interface QueueSql {
  jobs: string;
  runs: string;
  job: Record<keyof JobColumns, string>;
  run: Record<keyof RunColumns, string>;
  claimFunction: string;
  /** The job's run id as an expression of the runs id type (from the column or the payload key). */
  jobRunId(alias: string): string;
}

export type IdKind = 'uuid' | 'integer' | 'text';

export interface ColumnFinding {
  key: string;
  column: string;
  type: string;
  problem: string;
}

export interface QueueModel {
  map: SchemaMap;
  sql: QueueSql;
  jobIdKind: IdKind;
  runIdKind: IdKind;
  /** Column types that work but deserve a warning (e.g. timestamp without time zone). */
  warnings: ColumnFinding[];
  /** Column count per table, for the schema check's summary. */
  columnCounts: { jobs: number; runs: number };
}

interface ColumnRow {
  attname: string;
  type_name: string;
  category: string;
  base_type: string;
}

type Expectation = 'id' | 'text' | 'number' | 'timestamp' | 'json' | 'any';

const JOB_EXPECTATIONS: Record<keyof JobColumns, Expectation> = {
  id: 'id',
  type: 'text',
  status: 'text',
  priority: 'number',
  runId: 'any',
  payload: 'json',
  attempts: 'number',
  maxAttempts: 'number',
  scheduledAt: 'timestamp',
  lockedBy: 'text',
  lockedAt: 'timestamp',
  leaseExpiresAt: 'timestamp',
  lastError: 'text',
  createdAt: 'timestamp',
  updatedAt: 'timestamp',
};

const RUN_EXPECTATIONS: Record<keyof RunColumns, Expectation> = { id: 'id', status: 'text', finalReport: 'any' };

export function buildQueueSql(map: SchemaMap, runIdKind: IdKind = 'uuid'): QueueSql {
  const schema = quoteIdent(map.schema);
  const job = Object.fromEntries(Object.entries(map.jobs.columns).map(([key, name]) => [key, quoteIdent(name)])) as QueueSql['job'];
  const run = Object.fromEntries(Object.entries(map.runs.columns).map(([key, name]) => [key, quoteIdent(name)])) as QueueSql['run'];
  const payloadKey = map.jobs.runIdPayloadKey;
  return {
    jobs: `${schema}.${quoteIdent(map.jobs.table)}`,
    runs: `${schema}.${quoteIdent(map.runs.table)}`,
    job,
    run,
    claimFunction: `${schema}.${quoteIdent(map.claimFunction)}`,
    jobRunId(alias: string) {
      if (payloadKey === null) return `${alias}.${job.runId}`;
      const raw = `(${alias}.${job.payload} ->> ${quoteLiteral(payloadKey)})`;
      // A malformed value in one payload must not abort the whole diagnosis: it reads as "no run".
      if (runIdKind === 'uuid') return `(CASE WHEN ${raw} ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN ${raw}::uuid END)`;
      if (runIdKind === 'integer') return `(CASE WHEN ${raw} ~ '^-?[0-9]{1,18}$' THEN ${raw}::bigint END)`;
      return raw;
    },
  };
}

/**
 * Reads the catalog and proves that every table and column the schema map names exists with a
 * usable type. Throws a 'schema' error naming the missing thing and the config key to set.
 * Works for a role that can only SELECT (the catalog needs no privileges).
 */
export async function loadQueueModel(db: Queryable, map: SchemaMap): Promise<QueueModel> {
  const schemaRow = await db.query<{ present: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS present', [map.schema]);
  if (!schemaRow.rows[0]?.present) {
    throw new QueueDoctorError('schema', `schema "${map.schema}" does not exist`, 'set "schema" in queue-doctor.config.json');
  }
  const jobs = await readColumns(db, map.schema, map.jobs.table, 'jobs.table');
  const runs = await readColumns(db, map.schema, map.runs.table, 'runs.table');

  const problems: string[] = [];
  const warnings: ColumnFinding[] = [];
  const check = (table: string, columns: Map<string, ColumnRow>, key: string, column: string, expectation: Expectation) => {
    const row = columns.get(column);
    if (!row) {
      problems.push(`column "${column}" not found in ${table} (config key "${key}")`);
      return;
    }
    const problem = typeProblem(row, expectation);
    if (problem) problems.push(`column ${table}."${column}" is ${row.type_name}, ${problem} (config key "${key}")`);
    if (expectation === 'timestamp' && row.base_type === 'timestamp') {
      warnings.push({ key, column, type: row.type_name, problem: 'timestamp without time zone: ages depend on the session TimeZone' });
    }
  };

  const jobsName = `"${map.schema}"."${map.jobs.table}"`;
  for (const [key, expectation] of Object.entries(JOB_EXPECTATIONS) as [keyof JobColumns, Expectation][]) {
    if (key === 'runId' && map.jobs.runIdPayloadKey !== null) continue;
    const effective = key === 'payload' && map.jobs.runIdPayloadKey === null ? 'any' : expectation;
    check(jobsName, jobs, `jobs.columns.${key}`, map.jobs.columns[key], effective);
  }
  const runsName = `"${map.schema}"."${map.runs.table}"`;
  for (const [key, expectation] of Object.entries(RUN_EXPECTATIONS) as [keyof RunColumns, Expectation][]) {
    check(runsName, runs, `runs.columns.${key}`, map.runs.columns[key], expectation);
  }
  if (problems.length > 0) {
    throw new QueueDoctorError('schema', `schema map does not match the database: ${problems.join('; ')}`, 'fix the names in queue-doctor.config.json (or pass --config FILE)');
  }

  const jobIdKind = idKind(jobs.get(map.jobs.columns.id)!);
  const runIdKind = idKind(runs.get(map.runs.columns.id)!);
  return {
    map,
    sql: buildQueueSql(map, runIdKind),
    jobIdKind,
    runIdKind,
    warnings,
    columnCounts: { jobs: jobs.size, runs: runs.size },
  };
}

async function readColumns(db: Queryable, schema: string, table: string, key: string): Promise<Map<string, ColumnRow>> {
  const relation = await db.query<{ oid: number | null; relkind: string | null }>(
    `SELECT c.oid::int AS oid, c.relkind::text AS relkind
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, table],
  );
  const found = relation.rows[0];
  if (!found || !found.oid || !['r', 'p', 'v', 'm', 'f'].includes(found.relkind ?? '')) {
    throw new QueueDoctorError('schema', `table "${schema}"."${table}" not found (config key "${key}")`, `set "${key}" (and "schema") in queue-doctor.config.json`);
  }
  const columns = await db.query<ColumnRow>(
    `SELECT a.attname::text AS attname,
            format_type(a.atttypid, a.atttypmod) AS type_name,
            COALESCE(bt.typcategory, t.typcategory)::text AS category,
            COALESCE(bt.typname, t.typname)::text AS base_type
       FROM pg_attribute a
       JOIN pg_type t ON t.oid = a.atttypid
       LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`,
    [found.oid],
  );
  return new Map(columns.rows.map((row) => [row.attname, row]));
}

function typeProblem(row: ColumnRow, expectation: Expectation): string | null {
  switch (expectation) {
    case 'id':
      return ['uuid', 'int2', 'int4', 'int8', 'text', 'varchar', 'bpchar'].includes(row.base_type) ? null : 'expected uuid, an integer or text';
    case 'text':
      return row.category === 'S' || row.category === 'E' ? null : 'expected text, varchar or an enum';
    case 'number':
      return row.category === 'N' ? null : 'expected an integer';
    case 'timestamp':
      return ['timestamptz', 'timestamp'].includes(row.base_type) ? null : 'expected timestamptz';
    case 'json':
      return ['json', 'jsonb'].includes(row.base_type) ? null : 'expected jsonb (runIdPayloadKey reads it)';
    case 'any':
      return null;
  }
}

function idKind(row: ColumnRow): IdKind {
  if (row.base_type === 'uuid') return 'uuid';
  if (['int2', 'int4', 'int8'].includes(row.base_type)) return 'integer';
  return 'text';
}

const UUID_PATTERN = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;

/** Validates a job id from the command line against the id column's type before it reaches SQL. */
export function parseJobId(input: string, kind: IdKind): string {
  const trimmed = input.trim();
  const shown = trimmed.length > 40 ? `${trimmed.slice(0, 40)}…` : trimmed;
  const printable = shown.replace(/[\x00-\x1f\x7f]/g, '?');
  if (kind === 'uuid') {
    if (!UUID_PATTERN.test(trimmed)) {
      throw new QueueDoctorError('usage', `"${printable}" is not a valid job id (expected a UUID such as b8d2ea4a-ceb3-4db6-8420-3dbc98f034cc)`);
    }
    // Canonical form, so an id typed in capitals or without dashes matches id::text.
    const hex = trimmed.replace(/-/g, '').toLowerCase();
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }
  if (kind === 'integer') {
    if (!/^-?\d{1,18}$/.test(trimmed)) throw new QueueDoctorError('usage', `"${printable}" is not a valid job id (expected an integer)`);
    return BigInt(trimmed).toString();
  }
  if (kind === 'text' && (trimmed.length === 0 || trimmed.length > 1000 || /\x00/.test(trimmed))) {
    throw new QueueDoctorError('usage', `"${printable}" is not a valid job id`);
  }
  return trimmed;
}
