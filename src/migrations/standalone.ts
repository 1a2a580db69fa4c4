import { readFile } from 'node:fs/promises';
import { buildQueueSql } from '../schema/queueModel.js';
import { parseSchemaMap } from '../schemaMap.js';
import { loadMigrations } from './catalog.js';
import { renderTemplate } from './render.js';

const SQL_DIR = new URL('../../sql/', import.meta.url);

/**
 * The balanced claim function and its indexes as plain statements for a scratch schema (simulate,
 * bench): the same templates `migrate up` renders, without the tracking, saving and grants that
 * only make sense on the user's own queue. No CONCURRENTLY: the scratch tables are private.
 */
export async function balancedClaimStatements(schema: string, functionName: string): Promise<string[]> {
  const map = parseSchemaMap({ schema, claimFunction: functionName });
  const context = { map, sql: buildQueueSql(map), concurrently: false };
  const [indexes, balanced] = await loadMigrations();
  const create = balanced!.up.find((step) => /^CREATE FUNCTION/m.test(step.template));
  if (!create) throw new Error('migration 002 has no CREATE FUNCTION step');
  return [
    ...indexes!.up.filter((step) => step.kind === 'create-index').map((step) => renderTemplate(step.template, context, 'scratch index')),
    renderTemplate(create.template, context, 'scratch claim function'),
  ];
}

/** The app's legacy function as shipped, renamed; its names resolve through the session's search_path. */
export async function legacyClaimStatement(functionName: string): Promise<string> {
  const text = await readFile(new URL('legacy/claim_next_job.sql', SQL_DIR), 'utf8');
  return text.replace('FUNCTION claim_next_job(', `FUNCTION ${functionName}(`);
}

/** sql/schema.sql split into statements (plain DDL, no function bodies): PGlite takes one per query. */
export async function referenceSchemaStatements(): Promise<string[]> {
  const text = await readFile(new URL('schema.sql', SQL_DIR), 'utf8');
  return text
    .replace(/--[^\n]*/g, '')
    .split(';')
    .map((statement) => statement.trim())
    .filter((statement) => statement.length > 0);
}
