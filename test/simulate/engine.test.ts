import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { DEFAULT_SIMULATE_OPTIONS, runSimulation, type SimulateOptions } from '../../src/simulate/engine.js';
import { QueueDoctorError } from '../../src/errors.js';
import type { Database } from '../../src/db/database.js';

let testDb: TestDatabase;
let db: Database;
const small: SimulateOptions = { ...DEFAULT_SIMULATE_OPTIONS, durationSeconds: 240 };

beforeAll(async () => {
  testDb = await createTestDatabase();
  await loadReferenceSchema(testDb.client);
  await loadIncident(testDb.client);
  db = await openQueueDoctorDatabase(testDb.url);
});
afterAll(async () => {
  await db.close();
  await testDb.drop();
});

async function schemas(): Promise<string[]> {
  return (await testDb.client.query(`SELECT nspname FROM pg_namespace ORDER BY 1`)).rows.map((r) => r.nspname);
}

describe('simulate', () => {
  it('starves the exports under the legacy function and serves them under the balanced one', async () => {
    const report = await runSimulation(db, small);
    const [legacy, balanced] = report.variants;
    expect(legacy).toMatchObject({ name: 'legacy', exportsClaimed: 0, exportsTotal: 2, firstExportAfterClaims: null, completed: 0 });
    expect(legacy!.expiredReclaims).toBeGreaterThan(20);
    expect(legacy!.verdict).toMatch(/^legacy served 0 of 2 exports in 4m while 40 expired leases were re-claimed \d+ times; 0 jobs completed \(an export never claimed counts as waiting the whole 4m\)$/);
    expect(legacy!.exportWaitMs).toEqual({ p50: 240_000, p95: 240_000, max: 240_000 });
    expect(balanced).toMatchObject({ name: 'balanced', exportsClaimed: 2, exportsTotal: 2, firstExportAfterClaims: 0 });
    expect(balanced!.completed).toBeGreaterThan(50);
    expect(balanced!.exportWaitMs.max).toBeLessThan(legacy!.exportWaitMs.max);
    expect(balanced!.verdict).toMatch(/^balanced served 2 of 2 exports in 4m, the first after 0 claims, p95 wait 0s; 0 jobs dead-lettered, \d+ completed$/);
    expect(balanced!.series.at(-1)).toBe(0);
    expect(legacy!.series.every((waiting) => waiting === 2)).toBe(true);
  });

  it('dead-letters the jobs that keep crashing under the balanced function, given the time to reach them', async () => {
    const report = await runSimulation(db, { ...small, variants: ['balanced'], sections: 40, durationSeconds: 900 });
    expect(report.variants[0]!.deadLettered).toBe(4);
  });

  it('makes the same decisions for the same seed', async () => {
    const strip = ({ claimsPerSecond: _ignored, ...rest }: { claimsPerSecond: number }) => rest;
    const first = await runSimulation(db, { ...small, seed: 7, crashRate: 0.3 });
    const second = await runSimulation(db, { ...small, seed: 7, crashRate: 0.3 });
    expect(second.variants.map(strip)).toEqual(first.variants.map(strip));
    const other = await runSimulation(db, { ...small, seed: 8, crashRate: 0.3 });
    expect(other.variants.map(strip)).not.toEqual(first.variants.map(strip));
  });

  it('works only in a temporary schema: the real tables and the schema list are unchanged', async () => {
    const before = { jobs: await snapshotTable(testDb.client, 'public.jobs'), runs: await snapshotTable(testDb.client, 'public.report_runs'), schemas: await schemas() };
    const functionBefore = (await testDb.client.query(`SELECT pg_get_functiondef('public.claim_next_job'::regproc) AS def`)).rows[0].def;
    const report = await runSimulation(db, small);
    expect(report.schema).toMatch(/^queue_doctor_sim_[0-9a-f]{8}$/);
    expect(await schemas()).toEqual(before.schemas);
    expect(before.schemas.filter((name) => name.startsWith('queue_doctor'))).toEqual([]);
    expect(await snapshotTable(testDb.client, 'public.jobs')).toEqual(before.jobs);
    expect(await snapshotTable(testDb.client, 'public.report_runs')).toEqual(before.runs);
    expect((await testDb.client.query(`SELECT pg_get_functiondef('public.claim_next_job'::regproc) AS def`)).rows[0].def).toBe(functionBefore);
  });

  it('is never visible to another session while it runs', async () => {
    const seenFromOutside: Promise<number>[] = [];
    await runSimulation(db, { ...small, durationSeconds: 60 }, () => {
      seenFromOutside.push(
        testDb.client.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname LIKE 'queue\\_doctor%'`).then((r) => r.rows[0].n as number),
      );
    });
    expect(seenFromOutside.length).toBeGreaterThan(5);
    expect(await Promise.all(seenFromOutside)).toEqual(seenFromOutside.map(() => 0));
  });

  it('leaves nothing behind when its connection dies mid-run (Ctrl-C, kill, network)', async () => {
    const doomed = await openQueueDoctorDatabase(testDb.url);
    const pid = (await doomed.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const before = await schemas();
    let terminated: Promise<unknown> | undefined;
    const error = await runSimulation(doomed, { ...small, durationSeconds: 3600 }, (message) => {
      // Mid-replay: the scratch schema exists, both functions are installed, rows are changing.
      if (!terminated && message.includes('legacy… 20%')) terminated = testDb.client.query('SELECT pg_terminate_backend($1)', [pid]);
    }).catch((e: unknown) => e);
    await doomed.close();
    expect(terminated).toBeDefined();
    expect(error).toBeInstanceOf(Error);
    expect(await schemas()).toEqual(before);
  });

  it.each([
    [{ workers: 0 }, /--workers/],
    [{ workers: 1.5 }, /--workers/],
    [{ sections: 0 }, /--sections/],
    [{ crashRate: 1.5 }, /--crash-rate/],
    [{ leaseSeconds: 0 }, /--lease/],
    [{ leaseSeconds: 2.5 }, /--lease expects whole seconds/],
    [{ durationSeconds: 5 }, /--duration/],
    [{ variants: [] }, /--claim/],
  ])('rejects %j before creating anything', async (override, message) => {
    const before = await schemas();
    const error = await runSimulation(db, { ...small, ...override } as SimulateOptions).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QueueDoctorError);
    expect((error as QueueDoctorError).message).toMatch(message);
    expect(await schemas()).toEqual(before);
  });
});
