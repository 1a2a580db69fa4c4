import type { Check } from './types.js';
import type { QueueModel } from '../schema/queueModel.js';
import { quoteIdent, quoteLiteral } from '../sql.js';
import { loadMigrations } from '../migrations/catalog.js';
import { renderTemplate } from '../migrations/render.js';
import { activeSetIndexName } from '../schema/indexNames.js';

export { activeSetIndexName };

export type IndexPurpose = 'queued-ready' | 'running-leases' | 'failed-recent' | 'claim-order';

/** One partial index queue-doctor needs; migrations create exactly these. */
export interface RequiredIndex {
  purpose: IndexPurpose;
  /** Unquoted index name, at most 63 bytes. */
  name: string;
  /** Unquoted key columns, in order. */
  columns: string[];
  /** The status value of the partial predicate (`WHERE status = statusLiteral`). */
  statusLiteral: string;
  statement: string;
}

/**
 * The partial indexes over the active set: the claim's ORDER BY priority, scheduled_at over
 * QUEUED jobs, the expired-lease lookup over RUNNING jobs, and premature-exports' bounded look
 * at recently FAILED jobs. Each stays as small as its status, whatever the finished history.
 */
export function requiredActiveSetIndexes(model: QueueModel): RequiredIndex[] {
  const { map, sql } = model;
  const columns = map.jobs.columns;
  const definitions: { purpose: IndexPurpose; suffix: string; columns: string[]; statusLiteral: string }[] = [
    { purpose: 'queued-ready', suffix: '_qd_queued_ready_idx', columns: [columns.priority, columns.scheduledAt], statusLiteral: map.statuses.queued },
    { purpose: 'running-leases', suffix: '_qd_running_lease_idx', columns: [columns.leaseExpiresAt], statusLiteral: map.statuses.running },
    { purpose: 'failed-recent', suffix: '_qd_failed_recent_idx', columns: [columns.updatedAt], statusLiteral: map.statuses.failed },
  ];
  return definitions.map((definition) => {
    const name = activeSetIndexName(map.jobs.table, definition.suffix);
    const statement =
      `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${quoteIdent(name)} ON ${sql.jobs} ` +
      `(${definition.columns.map(quoteIdent).join(', ')}) WHERE ${sql.job.status} = ${quoteLiteral(definition.statusLiteral)}`;
    return { purpose: definition.purpose, name, columns: definition.columns, statusLiteral: definition.statusLiteral, statement };
  });
}

export interface ExistingIndex {
  name: string;
  valid: boolean;
  method: string;
  /** Deparsed partial predicate (pg_get_expr), null for a full index. */
  predicate: string | null;
  /** Key column names in order; null for an expression key. */
  columns: (string | null)[];
}

const STRING_LITERAL = /'(?:[^']|'')*'/g;

/**
 * Whether an existing index does the job of a required one: valid, btree (the claim needs its
 * order), leading key columns as required, and a partial predicate on the status column with
 * the status value, without a negation that would turn its meaning around. Names never matter.
 * `statusIdent` is the column as PostgreSQL deparses it (quote_ident).
 */
export function indexServes(index: ExistingIndex, required: RequiredIndex, statusIdent: string): boolean {
  if (!index.valid || index.method !== 'btree' || index.predicate === null) return false;
  if (!required.columns.every((column, position) => index.columns[position] === column)) return false;
  const literals: string[] = index.predicate.match(STRING_LITERAL) ?? [];
  // pg_get_expr writes constants as plain '…' literals (standard_conforming_strings).
  const wanted = `'${required.statusLiteral.replace(/'/g, "''")}'`;
  if (!literals.includes(wanted)) return false;
  const withoutLiterals = index.predicate.replace(STRING_LITERAL, "''");
  const escaped = statusIdent.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  if (!new RegExp(`(?<![\\w$"])${escaped}(?![\\w$"])`).test(withoutLiterals)) return false;
  return !/<>|!=|\bNOT\b(?!\s+NULL\b)/i.test(withoutLiterals);
}

interface IndexRow {
  name: string;
  valid: boolean;
  method: string;
  predicate: string | null;
  columns: (string | null)[];
}

export const indexesCheck: Check = {
  id: 'indexes',
  title: 'Partial indexes over the active set exist',
  async run({ db, model, options, claimFunction }) {
    const { map } = model;
    const table = `"${map.schema}"."${map.jobs.table}"`;
    const ident = await db.query<{ ident: string }>('SELECT quote_ident($1) AS ident', [map.jobs.columns.status]);
    const existing = await db.query<IndexRow>(
      `SELECT ic.relname::text AS name, i.indisvalid AS valid, am.amname::text AS method,
              pg_get_expr(i.indpred, i.indrelid) AS predicate,
              ARRAY(SELECT a.attname::text
                      FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
                      LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
                     WHERE k.position <= i.indnkeyatts
                     ORDER BY k.position) AS columns
         FROM pg_index i
         JOIN pg_class ic ON ic.oid = i.indexrelid
         JOIN pg_am am ON am.oid = ic.relam
         JOIN pg_class t ON t.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = $1 AND t.relname = $2
        ORDER BY ic.relname`,
      [map.schema, map.jobs.table],
    );
    const statusIdent = ident.rows[0]!.ident;
    const findings = requiredActiveSetIndexes(model).map((required) => ({
      required,
      servedBy: existing.rows.find((index) => indexServes(index, required, statusIdent)) ?? null,
    }));
    const missing: Pick<RequiredIndex, 'purpose' | 'name' | 'statement'>[] = findings.filter((f) => f.servedBy === null).map((f) => f.required);
    // The balanced claim walks its own expression index; without it every claim sorts the active set.
    const served = findings.filter((f) => f.servedBy !== null).map((f) => `${f.required.purpose}: ${f.servedBy!.name}`);
    if ((await claimFunction()).variant === 'balanced') {
      const claimOrder = await claimOrderIndex(model);
      if (existing.rows.some((index) => index.name === claimOrder.name && index.valid)) served.push(`claim-order: ${claimOrder.name}`);
      else missing.push(claimOrder);
    }
    const total = served.length + missing.length;
    if (missing.length === 0) {
      return { status: 'ok', summary: `all ${total} active-set partial indexes exist on ${table} (${served.join(', ')})`, count: 0, items: [], remedy: null };
    }
    return {
      status: 'warn',
      summary: `${missing.length} of ${total} active-set partial indexes missing on ${table} (${missing.map((m) => m.purpose).join(', ')}): those lookups scan the whole table, history included`,
      count: missing.length,
      items: missing.slice(0, options.limit).map((m) => ({ id: m.purpose, index: m.name, statement: m.statement })),
      remedy: `${missing.map((m) => m.statement).join('; ')}   (run each on its own, outside a transaction; or: queue-doctor migrate up)`,
    };
  },
};

/** The balanced claim's expression index, rendered from migration 001 exactly as `migrate up` builds it. */
async function claimOrderIndex(model: QueueModel): Promise<Pick<RequiredIndex, 'purpose' | 'name' | 'statement'>> {
  const [indexes] = await loadMigrations();
  const step = indexes!.up.find((candidate) => candidate.index === 'claim_order')!;
  const rendered = renderTemplate(step.template, { map: model.map, sql: model.sql, concurrently: true }, 'claim-order index');
  // One line for the remedy: the template's comments and line breaks are for readers of sql/.
  const statement = rendered.replace(/--[^\n]*/g, '').replace(/\s+/g, ' ').trim();
  return { purpose: 'claim-order', name: activeSetIndexName(model.map.jobs.table, '_qd_claim_order_idx'), statement };
}
