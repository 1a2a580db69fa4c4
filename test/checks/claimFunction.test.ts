import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, openQueueDoctorDatabase, readSql, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runInspect } from '../../src/inspect.js';
import { DEFAULT_SCHEMA_MAP } from '../../src/schemaMap.js';
import type { Database } from '../../src/db/database.js';

let testDb: TestDatabase;
let db: Database;

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = await openQueueDoctorDatabase(testDb.url);
});
afterAll(async () => {
  await db.close();
  await testDb.drop();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query(await readSql('schema.sql'));
});

async function claimCheck() {
  const report = await runInspect(db, DEFAULT_SCHEMA_MAP, { only: ['claim-function'] });
  return report.checks[0]!;
}

describe('claim-function check', () => {
  it('fails on the legacy two-phase function', async () => {
    await testDb.client.query(await readSql('legacy/claim_next_job.sql'));
    const check = await claimCheck();
    expect(check).toMatchObject({ id: 'claim-function', status: 'fail', variant: 'legacy', count: 1 });
    expect(check.remedy).toMatch(/migrate up/);
  });

  it('warns when the function is missing', async () => {
    const check = await claimCheck();
    expect(check).toMatchObject({ status: 'warn', variant: 'missing' });
  });

  it('warns on a function it does not recognise', async () => {
    await testDb.client.query(`CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
      RETURNS SETOF jobs LANGUAGE sql AS $$ SELECT * FROM jobs WHERE false $$`);
    const check = await claimCheck();
    expect(check).toMatchObject({ status: 'warn', variant: 'unknown' });
  });

  it('is ok on a function carrying the balanced marker', async () => {
    await testDb.client.query(`CREATE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
      RETURNS SETOF jobs LANGUAGE plpgsql AS $$
      BEGIN -- queue-doctor:balanced-claim v1
        RETURN QUERY SELECT * FROM jobs WHERE status IN ('QUEUED', 'RUNNING') AND lease_expires_at < now();
      END $$`);
    const check = await claimCheck();
    expect(check).toMatchObject({ status: 'ok', variant: 'balanced', remedy: null });
  });
});
