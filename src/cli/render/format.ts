import type { ChalkInstance } from 'chalk';
import type { CheckStatus } from '../../checks/types.js';

export const STATUS_MARK: Record<CheckStatus, string> = { ok: '✓', warn: '!', fail: '✗' };

export function paintStatus(color: ChalkInstance, status: CheckStatus, text: string): string {
  if (status === 'ok') return color.green(text);
  if (status === 'warn') return color.yellow(text);
  return color.red(text);
}

/** One table cell: dates without milliseconds, lists joined, absent values as a dash. */
export function formatCell(value: unknown): string {
  if (value === null || value === undefined) return '—';
  if (value instanceof Date) return value.toISOString().replace(/\.\d{3}Z$/, 'Z');
  if (Array.isArray(value)) return value.map(formatCell).join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  const text = String(value);
  return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

/** A cli-table3 table of rows, columns taken from the keys in order of first appearance. */
export async function renderTable(color: ChalkInstance, rows: readonly Record<string, unknown>[]): Promise<string> {
  const { default: Table } = await import('cli-table3');
  const columns: string[] = [];
  for (const row of rows) for (const key of Object.keys(row)) if (!columns.includes(key)) columns.push(key);
  // No rule between rows: a 20-row finding should fit on one screen.
  const table = new Table({
    head: columns.map((c) => color.bold(c)),
    style: { head: [], border: [], compact: true },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const row of rows) table.push(columns.map((c) => formatCell(row[c])));
  return table.toString();
}

/** Serialises with dates as ISO strings and nothing else on the line: the --json contract. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
