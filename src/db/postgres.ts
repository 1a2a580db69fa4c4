import pg from 'pg';
import { runInTransaction, type Database, type QueryResult, type SessionSettings, type TransactionOptions, type Queryable } from './database.js';

// int8 (count(*), sums) as numbers: queue sizes stay far below 2^53.
pg.types.setTypeParser(20, (value: string) => Number(value));
// numeric as numbers: ages and ratios, never money.
pg.types.setTypeParser(1700, (value: string) => Number(value));

export interface PostgresTarget {
  /** A connection string, or undefined to let libpq-style PG* variables decide. */
  connectionString: string | undefined;
  label: string;
}

export async function openPostgres(target: PostgresTarget, settings: SessionSettings): Promise<Database> {
  const client = new pg.Client({
    connectionString: target.connectionString,
    application_name: 'queue-doctor',
    connectionTimeoutMillis: settings.connectTimeoutMs,
    statement_timeout: settings.statementTimeoutMs,
    lock_timeout: settings.lockTimeoutMs,
    // A doctor must never become the idle-in-transaction session it warns about.
    idle_in_transaction_session_timeout: Math.max(settings.statementTimeoutMs * 2, 60_000),
  });
  // Errors on an idle client (server restart) must not crash the process with a stack trace.
  client.on('error', () => undefined);
  await client.connect();
  return new PostgresDatabase(client, target.label);
}

class PostgresDatabase implements Database {
  readonly kind = 'postgres' as const;
  constructor(
    private readonly client: pg.Client,
    readonly label: string,
  ) {}

  async query<Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<Row>> {
    const result = await this.client.query(text, params as unknown[] | undefined);
    return { rows: result.rows as Row[], rowCount: result.rowCount ?? 0 };
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return runInTransaction(this, work, options);
  }

  async close(): Promise<void> {
    await this.client.end().catch(() => undefined);
  }
}
