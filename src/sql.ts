/** Quotes an identifier the way PostgreSQL's quote_ident does, always (case and keywords survive). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Quotes a literal for DDL, where parameters cannot be bound (function bodies, index
 * predicates). Mirrors quote_literal: backslashes force the E'' form.
 */
export function quoteLiteral(value: string): string {
  const escaped = value.replace(/'/g, "''");
  return value.includes('\\') ? `E'${escaped.replace(/\\/g, '\\\\')}'` : `'${escaped}'`;
}

/** Collects bind parameters while a query is written: `status = ${params.add(value)}`. */
export class Params {
  readonly values: unknown[] = [];

  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}
