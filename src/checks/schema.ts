import type { Check } from './types.js';

/**
 * By the time a check runs, loadQueueModel has already proved every table and column exists
 * (a mismatch is a could-not-run error, exit 2). What is left to report are types that work
 * but mislead, such as timestamps without a time zone.
 */
export const schemaCheck: Check = {
  id: 'schema',
  title: 'Schema map matches the database',
  async run({ model }) {
    const { map, warnings, columnCounts } = model;
    const tables = `"${map.schema}"."${map.jobs.table}" (${columnCounts.jobs} columns) and "${map.schema}"."${map.runs.table}" (${columnCounts.runs} columns)`;
    if (warnings.length === 0) {
      return { status: 'ok', summary: `${tables} have every mapped column with a usable type`, count: 0, items: [], remedy: null };
    }
    return {
      status: 'warn',
      summary: `${warnings.length} mapped column(s) have a type that works but misleads: ${warnings.map((w) => `${w.column} (${w.type})`).join(', ')}`,
      count: warnings.length,
      items: warnings.map((w) => ({ id: w.key, column: w.column, type: w.type, problem: w.problem })),
      remedy: 'ALTER the listed columns to timestamptz (ALTER TABLE … ALTER COLUMN … TYPE timestamptz), or run workers and queue-doctor with the same TimeZone',
    };
  },
};
