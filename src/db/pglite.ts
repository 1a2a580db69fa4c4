import { runInTransaction, type Database, type QueryResult, type Queryable, type TransactionOptions } from './database.js';

/** Loaded lazily: PGlite is a 10 MB WASM module that only the demo path needs. */
export async function openPglite(dataDir: string, label: string): Promise<Database & { exec(sql: string): Promise<void> }> {
  const { PGlite } = await import('@electric-sql/pglite');
  const db = new PGlite(dataDir);
  await db.waitReady;
  return new PgliteDatabase(db, label);
}

type PgliteInstance = InstanceType<typeof import('@electric-sql/pglite').PGlite>;

class PgliteDatabase implements Database {
  readonly kind = 'pglite' as const;
  constructor(
    private readonly db: PgliteInstance,
    readonly label: string,
  ) {}

  async query<Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<Row>> {
    const result = await this.db.query<Row>(text, params as unknown[] | undefined);
    return { rows: result.rows, rowCount: Math.max(result.affectedRows ?? 0, result.rows.length) };
  }

  async exec(sql: string): Promise<void> {
    await this.db.exec(sql);
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return runInTransaction(this, work, options);
  }

  async close(): Promise<void> {
    await this.db.close().catch(() => undefined);
  }
}
