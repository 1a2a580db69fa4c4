import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { DEFAULT_SESSION_SETTINGS } from '../db/database.js';
import { openPostgres } from '../db/postgres.js';
import { migrateUp } from '../migrations/index.js';
import { balancedClaimStatements, legacyClaimStatement, referenceSchemaStatements } from '../migrations/standalone.js';
import { DEFAULT_SCHEMA_MAP } from '../schemaMap.js';

/**
 * The scratch databases of one bench run, all on one server and all named qd_bench_<random>_<purpose>,
 * so each queue lives in `public` under the default schema map exactly as a user's would, and every
 * one of them is dropped at the end (or on Ctrl-C).
 */
export class ScratchDatabases {
  private readonly prefix = `qd_bench_${randomBytes(4).toString('hex')}`;
  private readonly created: string[] = [];

  private constructor(private readonly admin: pg.Client, private readonly adminUrl: string) {}

  static async open(adminUrl: string): Promise<ScratchDatabases> {
    const admin = quietClient(adminUrl);
    await admin.connect();
    return new ScratchDatabases(admin, adminUrl);
  }

  /** Creates an empty database and returns its connection string. */
  async create(purpose: string): Promise<string> {
    const name = `${this.prefix}_${purpose.replace(/[^a-z0-9]+/g, '_')}`;
    await this.admin.query(`CREATE DATABASE ${name}`);
    this.created.push(name);
    const url = new URL(this.adminUrl);
    url.pathname = `/${name}`;
    return url.toString();
  }

  async dropAll(): Promise<void> {
    for (const name of this.created.splice(0)) {
      await this.admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    }
    await this.admin.end().catch(() => undefined);
  }
}

/**
 * The app's queue as it was during the incident: sql/schema.sql and the legacy claim function
 * from sql/legacy, nothing else.
 */
export async function installReferenceQueue(url: string): Promise<void> {
  await withClient(url, async (client) => {
    for (const statement of await referenceSchemaStatements()) await client.query(statement);
    await client.query(await legacyClaimStatement('claim_next_job'));
  });
}

/** `queue-doctor migrate up` with the default schema map, through the same code the CLI runs. */
export async function installBalanced(url: string): Promise<void> {
  const db = await openPostgres({ connectionString: url, label: 'bench' }, DEFAULT_SESSION_SETTINGS);
  try {
    await migrateUp(db, DEFAULT_SCHEMA_MAP);
  } finally {
    await db.close();
  }
}

/** queue-doctor's four active-set indexes from migration 001, without touching the claim function. */
export async function installQueueDoctorIndexesOnly(url: string): Promise<void> {
  await withClient(url, async (client) => {
    // Every statement but the last, the function; some index statements open with a comment.
    for (const statement of (await balancedClaimStatements('public', 'claim_unused')).slice(0, -1)) await client.query(statement);
  });
}

export async function withClient<T>(url: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = quietClient(url);
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * A server that goes away fails the query in flight, which ends the run with one line; without a
 * listener, the client's error event would crash the process with a stack trace instead.
 */
export function quietClient(url: string): pg.Client {
  const client = new pg.Client({ connectionString: url, application_name: 'queue-doctor-bench' });
  client.on('error', () => undefined);
  return client;
}

/** Job type of the work a round claims; dead weight has other types, so a round resets only its own rows. */
export const WORK_TYPE = 'BENCH_WORK';

/**
 * `count` due QUEUED jobs at the default priority, each ready at a distinct moment in the past
 * hour, so claim order is total and nothing becomes due during a round.
 */
export async function addDueWork(client: pg.Client, count: number): Promise<void> {
  await client.query(
    `INSERT INTO jobs (type, priority, scheduled_at)
     SELECT $2, 100, now() - interval '1 hour' + i * interval '10 microseconds' FROM generate_series(1, $1::int) i`,
    [count, WORK_TYPE],
  );
}

/**
 * Expired leases that the balanced claim would hand out, but behind all the work (priority 1000),
 * so a round measures what their presence costs, not the cost of serving them.
 */
export async function addExpiredLeases(client: pg.Client, count: number): Promise<void> {
  await client.query(
    `INSERT INTO jobs (type, status, priority, attempts, locked_by, locked_at, lease_expires_at, scheduled_at)
     SELECT 'SECTION_RUN', 'RUNNING', 1000, 1, 'crashed-worker-' || (i % 50), now() - interval '2 hours', now() - interval '1 hour' - i * interval '10 milliseconds', now() - interval '3 hours'
       FROM generate_series(1, $1::int) i`,
    [count],
  );
}

/** Finished history, as a queue that keeps its completed jobs accumulates it. */
export async function addFinishedRows(client: pg.Client, count: number): Promise<void> {
  await client.query(
    `INSERT INTO jobs (type, status, attempts, scheduled_at, locked_at, created_at, updated_at)
     SELECT CASE WHEN i % 10 = 0 THEN 'EXPORT' ELSE 'SECTION_RUN' END, 'COMPLETED', 1,
            now() - i * interval '1 second', now() - i * interval '1 second', now() - i * interval '1 second' - interval '1 minute',
            now() - i * interval '1 second' + interval '30 seconds'
       FROM generate_series(1, $1::int) i`,
    [count],
  );
}
