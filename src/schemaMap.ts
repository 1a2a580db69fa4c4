import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { QueueDoctorError, usageError } from './errors.js';
import { truncate } from './duration.js';

/**
 * Every name queue-doctor uses in SQL comes from this map, so an app that calls its
 * table `background_jobs` or its status `pending` is served by a config file, not a fork.
 */
export interface SchemaMap {
  schema: string;
  jobs: {
    table: string;
    columns: JobColumns;
    /** When set, a job's run id is read from this key of the payload column, not from columns.runId. */
    runIdPayloadKey: string | null;
  };
  runs: { table: string; columns: RunColumns };
  statuses: { queued: string; running: string; completed: string; failed: string; cancelled: string };
  types: { export: string };
  claimFunction: string;
}

export interface JobColumns {
  id: string;
  type: string;
  status: string;
  priority: string;
  runId: string;
  payload: string;
  attempts: string;
  maxAttempts: string;
  scheduledAt: string;
  lockedBy: string;
  lockedAt: string;
  leaseExpiresAt: string;
  lastError: string;
  createdAt: string;
  updatedAt: string;
}

export interface RunColumns {
  id: string;
  status: string;
  finalReport: string;
}

export const DEFAULT_SCHEMA_MAP: SchemaMap = {
  schema: 'public',
  jobs: {
    table: 'jobs',
    columns: {
      id: 'id',
      type: 'type',
      status: 'status',
      priority: 'priority',
      runId: 'run_id',
      payload: 'payload',
      attempts: 'attempts',
      maxAttempts: 'max_attempts',
      scheduledAt: 'scheduled_at',
      lockedBy: 'locked_by',
      lockedAt: 'locked_at',
      leaseExpiresAt: 'lease_expires_at',
      lastError: 'last_error',
      createdAt: 'created_at',
      updatedAt: 'updated_at',
    },
    runIdPayloadKey: null,
  },
  runs: { table: 'report_runs', columns: { id: 'id', status: 'status', finalReport: 'final_report_json' } },
  statuses: { queued: 'QUEUED', running: 'RUNNING', completed: 'COMPLETED', failed: 'FAILED', cancelled: 'CANCELLED' },
  types: { export: 'EXPORT' },
  claimFunction: 'claim_next_job',
};

export const CONFIG_FILE_NAME = 'queue-doctor.config.json';

export interface LoadedSchemaMap {
  map: SchemaMap;
  /** The file it came from, or null for the built-in defaults. */
  source: string | null;
}

/**
 * `--config FILE` wins; otherwise `queue-doctor.config.json` in `cwd` if present;
 * otherwise the reference names.
 */
export async function loadSchemaMap(configPath: string | undefined, cwd: string): Promise<LoadedSchemaMap> {
  const explicit = configPath !== undefined;
  const file = path.resolve(cwd, configPath ?? CONFIG_FILE_NAME);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (!explicit && code === 'ENOENT') return { map: DEFAULT_SCHEMA_MAP, source: null };
    throw usageError(`cannot read config file ${file}: ${code === 'ENOENT' ? 'no such file' : code ?? 'unreadable'}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw usageError(`config file ${file} is not valid JSON: ${(error as Error).message}`);
  }
  return { map: parseSchemaMap(parsed, file), source: file };
}

/** Validates a parsed config object against the documented shape and fills in defaults. */
export function parseSchemaMap(input: unknown, origin = 'config'): SchemaMap {
  const fail = (key: string, problem: string): never => {
    throw new QueueDoctorError('usage', `${origin}: "${key}" ${problem}`, 'see README.md, section "The config file"');
  };
  const object = (value: unknown, key: string): Record<string, unknown> => {
    if (value === undefined) return {};
    if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(key, 'must be an object');
    return value as Record<string, unknown>;
  };
  const name = (value: unknown, key: string, fallback: string): string => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value.length === 0) return fail(key, 'must be a non-empty string');
    // Names are always quoted, so any text is safe in SQL; these limits only catch typos and
    // names PostgreSQL itself would truncate or reject.
    if (/[\x00-\x1f]/.test(value)) fail(key, 'contains control characters');
    if (Buffer.byteLength(value) > 63) fail(key, `is longer than PostgreSQL's 63-byte identifier limit ("${truncate(value)}")`);
    return value as string;
  };
  const literal = (value: unknown, key: string, fallback: string): string => {
    if (value === undefined) return fallback;
    if (typeof value !== 'string' || value.length === 0) return fail(key, 'must be a non-empty string');
    if (/\x00/.test(value)) fail(key, 'contains a NUL character');
    return value as string;
  };
  const onlyKeys = (value: Record<string, unknown>, allowed: readonly string[], prefix: string) => {
    for (const key of Object.keys(value)) {
      if (!allowed.includes(key)) fail(prefix ? `${prefix}.${key}` : key, `is not a known key (known: ${allowed.join(', ')})`);
    }
  };

  const root = object(input, '(root)');
  onlyKeys(root, ['schema', 'jobs', 'runs', 'statuses', 'types', 'claimFunction'], '');
  const defaults = DEFAULT_SCHEMA_MAP;

  const jobs = object(root.jobs, 'jobs');
  onlyKeys(jobs, ['table', 'columns', 'runIdPayloadKey'], 'jobs');
  const jobColumnsInput = object(jobs.columns, 'jobs.columns');
  onlyKeys(jobColumnsInput, Object.keys(defaults.jobs.columns), 'jobs.columns');
  const jobColumns = Object.fromEntries(
    Object.entries(defaults.jobs.columns).map(([key, fallback]) => [key, name(jobColumnsInput[key], `jobs.columns.${key}`, fallback)]),
  ) as unknown as JobColumns;
  let runIdPayloadKey: string | null = null;
  if (jobs.runIdPayloadKey !== undefined && jobs.runIdPayloadKey !== null) {
    runIdPayloadKey = literal(jobs.runIdPayloadKey, 'jobs.runIdPayloadKey', '');
  }

  const runs = object(root.runs, 'runs');
  onlyKeys(runs, ['table', 'columns'], 'runs');
  const runColumnsInput = object(runs.columns, 'runs.columns');
  onlyKeys(runColumnsInput, Object.keys(defaults.runs.columns), 'runs.columns');
  const runColumns = Object.fromEntries(
    Object.entries(defaults.runs.columns).map(([key, fallback]) => [key, name(runColumnsInput[key], `runs.columns.${key}`, fallback)]),
  ) as unknown as RunColumns;

  const statusesInput = object(root.statuses, 'statuses');
  onlyKeys(statusesInput, Object.keys(defaults.statuses), 'statuses');
  const statuses = Object.fromEntries(
    Object.entries(defaults.statuses).map(([key, fallback]) => [key, literal(statusesInput[key], `statuses.${key}`, fallback)]),
  ) as unknown as SchemaMap['statuses'];
  if (new Set(Object.values(statuses)).size !== Object.values(statuses).length) {
    fail('statuses', 'must map each status to a different value');
  }

  const typesInput = object(root.types, 'types');
  onlyKeys(typesInput, ['export'], 'types');

  return {
    schema: name(root.schema, 'schema', defaults.schema),
    jobs: { table: name(jobs.table, 'jobs.table', defaults.jobs.table), columns: jobColumns, runIdPayloadKey },
    runs: { table: name(runs.table, 'runs.table', defaults.runs.table), columns: runColumns },
    statuses,
    types: { export: literal(typesInput.export, 'types.export', defaults.types.export) },
    claimFunction: name(root.claimFunction, 'claimFunction', defaults.claimFunction),
  };
}
