/**
 * The one interface every command talks to, so the embedded demo (PGlite) and a real
 * server (pg) run exactly the same SQL through exactly the same code.
 */
export interface QueryResult<Row> {
  rows: Row[];
  rowCount: number;
}

export interface Queryable {
  query<Row = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<QueryResult<Row>>;
}

export type Isolation = 'read committed' | 'repeatable read' | 'serializable';

export interface TransactionOptions {
  readOnly?: boolean;
  isolation?: Isolation;
  /** Do all the work, then roll back: a dry run that sees exactly what a real run would change. */
  rollback?: boolean;
}

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Where we are connected, safe to print: passwords are never part of it. */
  readonly label: string;
  transaction<T>(work: (tx: Queryable) => Promise<T>, options?: TransactionOptions): Promise<T>;
  close(): Promise<void>;
}

export interface SessionSettings {
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  connectTimeoutMs: number;
}

export const DEFAULT_SESSION_SETTINGS: SessionSettings = {
  statementTimeoutMs: 30_000,
  lockTimeoutMs: 3_000,
  connectTimeoutMs: 10_000,
};

/** Both adapters hold one session, so a transaction is simply BEGIN … COMMIT on it. */
export async function runInTransaction<T>(
  session: Queryable,
  work: (tx: Queryable) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  const isolation = (options.isolation ?? 'read committed').toUpperCase();
  await session.query(`BEGIN ISOLATION LEVEL ${isolation}${options.readOnly ? ' READ ONLY' : ''}`);
  try {
    const result = await work(session);
    await session.query(options.rollback ? 'ROLLBACK' : 'COMMIT');
    return result;
  } catch (error) {
    await session.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
