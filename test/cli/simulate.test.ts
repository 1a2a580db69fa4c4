import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { spawn } from 'node:child_process';
import os from 'node:os';
import { BIN, expectNoStackTrace, runCli, TEST_DEMO_DIR } from '../helpers/cli.js';

let incident: TestDatabase;

beforeAll(async () => {
  incident = await createTestDatabase();
  await loadReferenceSchema(incident.client);
  await loadIncident(incident.client);
});
afterAll(async () => {
  await incident.drop();
});

describe('queue-doctor simulate', () => {
  it('prints the documented JSON for both variants and leaves the database as it was', async () => {
    const before = await snapshotTable(incident.client, 'jobs');
    const run = await runCli(['simulate', '--json', '--duration', '3m', '--database-url', incident.url]);
    expectNoStackTrace(run.stderr);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(Object.keys(report)).toEqual(['variants']);
    expect(report.variants.map((v: { name: string }) => v.name)).toEqual(['legacy', 'balanced']);
    for (const variant of report.variants) {
      // The documented keys, plus the two documented extras (expiredReclaims, series).
      expect(Object.keys(variant).sort()).toEqual(
        ['name', 'claims', 'completed', 'exportsClaimed', 'exportsTotal', 'firstExportAfterClaims', 'exportWaitMs', 'deadLettered', 'claimsPerSecond', 'verdict', 'expiredReclaims', 'series'].sort(),
      );
      expect(Object.keys(variant.exportWaitMs)).toEqual(['p50', 'p95', 'max']);
      for (const key of ['claims', 'completed', 'exportsClaimed', 'exportsTotal', 'deadLettered', 'claimsPerSecond']) expect(typeof variant[key]).toBe('number');
      expect(typeof variant.verdict).toBe('string');
    }
    expect(report.variants[0].exportsClaimed).toBe(0);
    expect(report.variants[1].exportsClaimed).toBe(2);
    expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
  });

  it('shows a side-by-side table, a chart and a verdict per variant', async () => {
    const run = await runCli(['simulate', '--claim', 'both', '--duration', '2m', '--crash-rate', '.25', '--database-url', incident.url]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/claims until the first export/);
    expect(run.stdout).toMatch(/legacy\s+█+/);
    expect(run.stdout).toMatch(/✗ legacy served 0 of 2 exports/);
    expect(run.stdout).toMatch(/✓ balanced served 2 of 2 exports/);
  });

  it('runs on the embedded demo with no server configured', async () => {
    const run = await runCli(['simulate', '--claim', 'balanced', '--duration', '1m', '--json'], { timeoutMs: 120_000 });
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('embedded demo database');
    expect(JSON.parse(run.stdout).variants[0].exportsClaimed).toBe(2);
  });

  it('leaves nothing behind on Ctrl-C in the middle of a run', async () => {
    const schemas = async () => (await incident.client.query(`SELECT nspname FROM pg_namespace ORDER BY 1`)).rows.map((r) => r.nspname);
    const before = await schemas();
    const child = spawn(process.execPath, [BIN, 'simulate', '--duration', '24h', '--sections', '5000', '--database-url', incident.url], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? os.tmpdir(), QUEUE_DOCTOR_DEMO_DIR: TEST_DEMO_DIR },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    // Interrupt only once its transaction has written something (the scratch schema exists in it).
    for (let polls = 0; polls < 200; polls += 1) {
      const busy = await incident.client.query(
        `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'queue-doctor' AND backend_xid IS NOT NULL`,
      );
      if (busy.rowCount) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/interrupted/);
    expect(await schemas()).toEqual(before);
  });

  for (const [flag, value] of [
    ['--claim', 'fastest'],
    ['--workers', '0'],
    ['--workers', 'many'],
    ['--crash-rate', '2'],
    ['--duration', 'forever'],
    ['--seed', '-1'],
    ['--lease', '2.5s'],
    ['--sections', '100001'],
  ] as const) {
    it(`rejects ${flag} ${value} with exit 2 before connecting`, async () => {
      const run = await runCli(['simulate', flag, value, '--database-url', 'postgres://nobody@127.0.0.1:1/none']);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(new RegExp(flag));
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    });
  }
});
