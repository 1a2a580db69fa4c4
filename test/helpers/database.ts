import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { inject } from 'vitest';

export const SQL_DIR = new URL('../../sql/', import.meta.url);

export interface TestDatabase {
  /** Connection string of this file's own database. */
  url: string;
  name: string;
  /** A plain pg client for arranging and asserting; the code under test opens its own. */
  client: pg.Client;
  /** Opens another independent session (a "worker"). Closed by drop(). */
  connect(): Promise<pg.Client>;
  drop(): Promise<void>;
}

/** Creates a fresh, empty database for one test file on the test server. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const name = `qd_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const sessions: pg.Client[] = [];
  const connect = async () => {
    const session = new pg.Client({ connectionString: url });
    session.on('error', () => undefined);
    await session.connect();
    sessions.push(session);
    return session;
  };
  const client = await connect();
  return {
    url,
    name,
    client,
    connect,
    async drop() {
      await Promise.all(sessions.map((session) => session.end().catch(() => undefined)));
      const cleanup = new pg.Client({ connectionString: adminUrl });
      await cleanup.connect();
      await cleanup.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await cleanup.end();
    },
  };
}

export function withDatabase(connectionString: string, database: string): string {
  const url = new URL(connectionString);
  url.pathname = `/${database}`;
  return url.toString();
}

export async function readSql(relativePath: string): Promise<string> {
  return readFile(new URL(relativePath, SQL_DIR), 'utf8');
}

/** The reference schema plus the app's legacy claim function. */
export async function loadReferenceSchema(client: pg.Client): Promise<void> {
  await client.query(await readSql('schema.sql'));
  await client.query(await readSql('legacy/claim_next_job.sql'));
}

export async function loadIncident(client: pg.Client): Promise<void> {
  await client.query(await readSql('fixtures/incident.sql'));
}

/** Every row of a table as JSON text, ordered, to prove that nothing else changed. */
export async function snapshotTable(client: pg.Client, table: string): Promise<string[]> {
  const result = await client.query<{ row: string }>(`SELECT to_jsonb(t)::text AS row FROM ${table} t ORDER BY 1`);
  return result.rows.map((r) => r.row);
}

export async function resetSchema(client: pg.Client): Promise<void> {
  await client.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public;');
}

/** queue-doctor's own Database adapter over the test database, as the CLI would open it. */
export async function openQueueDoctorDatabase(url: string) {
  const { openPostgres } = await import('../../src/db/postgres.js');
  const { DEFAULT_SESSION_SETTINGS } = await import('../../src/db/database.js');
  return openPostgres({ connectionString: url, label: 'test' }, DEFAULT_SESSION_SETTINGS);
}
