import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSql } from '../helpers/database.js';
import { openPglite } from '../../src/db/pglite.js';
import { migrateDown, migrateUp, migrationStatus } from '../../src/migrations/index.js';
import { DEFAULT_SCHEMA_MAP } from '../../src/schemaMap.js';

// The embedded demo is PGlite: one session, no CREATE INDEX CONCURRENTLY. The same migrations
// must run there, with plain CREATE INDEX.
let db: Awaited<ReturnType<typeof openPglite>>;

beforeAll(async () => {
  db = await openPglite('memory://', 'pglite test');
  for (const file of ['schema.sql', 'legacy/claim_next_job.sql', 'fixtures/incident.sql']) await db.exec(await readSql(file));
});
afterAll(async () => {
  await db.close();
});

async function functionDefinition(): Promise<string[]> {
  const result = await db.query<{ definition: string }>(`SELECT pg_get_functiondef(oid) AS definition FROM pg_proc WHERE proname = 'claim_next_job'`);
  return result.rows.map((row) => row.definition);
}

async function queueDoctorIndexes(): Promise<string[]> {
  const result = await db.query<{ name: string }>(`SELECT indexname::text AS name FROM pg_indexes WHERE indexname LIKE 'jobs_qd_%' ORDER BY 1`);
  return result.rows.map((row) => row.name);
}

describe('migrations on PGlite', () => {
  it('up, down --all, up with plain CREATE INDEX; the legacy function comes back byte-identical', async () => {
    const legacy = await functionDefinition();
    const progress: string[] = [];
    const up = await migrateUp(db, DEFAULT_SCHEMA_MAP, { onProgress: (message) => progress.push(message) });
    expect(up.applied.map((m) => m.version)).toEqual([1, 2]);
    expect(up.applied[0]!.statements[0]).toMatch(/^CREATE INDEX IF NOT EXISTS "jobs_qd_queued_ready_idx"/);
    expect(progress).toContain('CREATE INDEX jobs_qd_claim_order_idx');
    expect(await queueDoctorIndexes()).toEqual(['jobs_qd_claim_order_idx', 'jobs_qd_failed_recent_idx', 'jobs_qd_queued_ready_idx', 'jobs_qd_running_lease_idx']);
    expect((await functionDefinition())[0]).toContain('queue-doctor:balanced-claim v1');

    // The demo's incident: the first claim hands out the oldest ready job, not an expired lease.
    const claimed = await db.query<{ type: string; status: string }>(`SELECT type, status FROM claim_next_job('demo-worker', 30)`);
    expect(claimed.rows).toEqual([{ type: 'SECTION_RUN', status: 'RUNNING' }]);

    expect((await migrationStatus(db, DEFAULT_SCHEMA_MAP)).pending).toEqual([]);
    const down = await migrateDown(db, DEFAULT_SCHEMA_MAP, { all: true });
    expect(down.reverted.map((m) => m.version)).toEqual([2, 1]);
    expect(await functionDefinition()).toEqual(legacy);
    expect(await queueDoctorIndexes()).toEqual([]);
    expect((await migrateUp(db, DEFAULT_SCHEMA_MAP)).applied.map((m) => m.version)).toEqual([1, 2]);
  });
});
