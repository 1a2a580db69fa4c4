import { activeSetIndexName } from '../schema/indexNames.js';
import { QueueDoctorError } from '../errors.js';
import type { QueueSql } from '../schema/queueModel.js';
import type { JobColumns, RunColumns, SchemaMap } from '../schemaMap.js';
import { quoteIdent, quoteLiteral } from '../sql.js';

/**
 * Suffixes of the indexes queue-doctor owns on the jobs table. The first three are the ones the
 * `indexes` check requires (src/checks/indexes.ts); names come from the same function so the
 * check and the migration can never disagree.
 */
export const INDEX_SUFFIXES = {
  queued_ready: '_qd_queued_ready_idx',
  running_lease: '_qd_running_lease_idx',
  failed_recent: '_qd_failed_recent_idx',
  claim_order: '_qd_claim_order_idx',
} as const;

export type IndexKey = keyof typeof INDEX_SUFFIXES;

export function isIndexKey(key: string): key is IndexKey {
  return Object.hasOwn(INDEX_SUFFIXES, key);
}

/** Unquoted index names for a schema map, e.g. { claim_order: 'jobs_qd_claim_order_idx', … }. */
export function indexNames(map: SchemaMap): Record<IndexKey, string> {
  return Object.fromEntries(
    Object.entries(INDEX_SUFFIXES).map(([key, suffix]) => [key, activeSetIndexName(map.jobs.table, suffix)]),
  ) as Record<IndexKey, string>;
}

export interface RenderContext {
  map: SchemaMap;
  sql: QueueSql;
  /** False on PGlite, where CREATE/DROP INDEX CONCURRENTLY is not available. */
  concurrently: boolean;
}

/**
 * Every placeholder a template may use:
 *   {{schema}} {{jobs}} {{runs}} {{claimFunction}}      quoted (qualified) names
 *   {{col.<jobs column key>}} {{runcol.<runs column key>}}   quoted column names
 *   {{lit.queued|running|completed|failed|cancelled|export}} status and type values as literals
 *   {{name.schema|jobs|runs|claimFunction}}             unquoted names as string literals (catalog lookups)
 *   {{index.<key>}}                                       quoted index name (keys of INDEX_SUFFIXES)
 *   {{jobRunId(<alias>)}}                                 the run id of job row <alias> (column or payload key)
 *   {{concurrently}}                                      CONCURRENTLY, or nothing on PGlite
 * Anything else between double braces is an error, so a typo never reaches the server.
 */
export function placeholderValues(context: RenderContext): Map<string, string> {
  const { map, sql } = context;
  const values = new Map<string, string>([
    ['schema', quoteIdent(map.schema)],
    ['jobs', sql.jobs],
    ['runs', sql.runs],
    ['claimFunction', sql.claimFunction],
    ['concurrently', context.concurrently ? 'CONCURRENTLY' : ''],
    ['name.schema', quoteLiteral(map.schema)],
    ['name.jobs', quoteLiteral(map.jobs.table)],
    ['name.runs', quoteLiteral(map.runs.table)],
    ['name.claimFunction', quoteLiteral(map.claimFunction)],
    ['lit.export', quoteLiteral(map.types.export)],
  ]);
  for (const key of Object.keys(map.jobs.columns) as (keyof JobColumns)[]) values.set(`col.${key}`, sql.job[key]);
  for (const key of Object.keys(map.runs.columns) as (keyof RunColumns)[]) values.set(`runcol.${key}`, sql.run[key]);
  for (const [key, value] of Object.entries(map.statuses)) values.set(`lit.${key}`, quoteLiteral(value));
  for (const [key, name] of Object.entries(indexNames(map))) values.set(`index.${key}`, quoteIdent(name));
  return values;
}

const PLACEHOLDER = /\{\{([^{}]*)\}\}/g;
/** A placeholder with the one space before it, so an empty value leaves no double space. */
const SPACED_PLACEHOLDER = /( ?)\{\{([^{}]*)\}\}/g;
const JOB_RUN_ID = /^jobRunId\(([a-z_][a-z0-9_]*)\)$/;
const DOLLAR_TAG = /\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/g;

/**
 * Replaces every placeholder. An unknown placeholder or a stray brace is a defect of the template
 * and throws before anything reaches the server.
 */
export function renderTemplate(template: string, context: RenderContext, origin = 'template'): string {
  const stray = /\{\{|\}\}/.exec(template.replace(PLACEHOLDER, ''));
  if (stray) {
    throw new Error(`${origin}: stray placeholder brace near "${template.slice(Math.max(0, stray.index - 20), stray.index + 20)}"`);
  }
  const values = placeholderValues(context);
  // A name containing one of the template's dollar-quote tags would end a function body early.
  const tags = [...new Set(template.match(DOLLAR_TAG) ?? [])];
  return template.replace(SPACED_PLACEHOLDER, (_whole, space: string, name: string) => {
    const value = valueOf(name, values, context, origin);
    if (value === '') return '';
    const tag = tags.find((candidate) => value.includes(candidate));
    if (tag) {
      throw new QueueDoctorError('usage', `the schema map value rendered for {{${name}}} contains ${tag}, which would break the quoting of ${origin}`, 'rename it in queue-doctor.config.json');
    }
    return `${space}${value}`;
  });
}

function valueOf(name: string, values: Map<string, string>, context: RenderContext, origin: string): string {
  const direct = values.get(name);
  if (direct !== undefined) return direct;
  const runId = JOB_RUN_ID.exec(name);
  if (runId) return context.sql.jobRunId(runId[1]!);
  throw new Error(`${origin}: unknown placeholder {{${name}}} (known: ${[...values.keys(), 'jobRunId(<alias>)'].join(', ')})`);
}
