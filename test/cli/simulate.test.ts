import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { expectNoStackTrace, runCli } from '../helpers/cli.js';

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
    expect(report.variants.map((v: { name: string }) => v.name)).toEqual(['legacy', 'balanced']);
    for (const variant of report.variants) {
      expect(Object.keys(variant)).toEqual(
        expect.arrayContaining(['name', 'claims', 'completed', 'exportsClaimed', 'exportsTotal', 'firstExportAfterClaims', 'exportWaitMs', 'deadLettered', 'claimsPerSecond', 'verdict']),
      );
      expect(Object.keys(variant.exportWaitMs)).toEqual(['p50', 'p95', 'max']);
    }
    expect(report.variants[0].exportsClaimed).toBe(0);
    expect(report.variants[1].exportsClaimed).toBe(2);
    expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
  });

  it('shows a side-by-side table, a chart and a verdict per variant', async () => {
    const run = await runCli(['simulate', '--claim', 'both', '--duration', '2m', '--database-url', incident.url]);
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

  for (const [flag, value] of [
    ['--claim', 'fastest'],
    ['--workers', '0'],
    ['--workers', 'many'],
    ['--crash-rate', '2'],
    ['--duration', 'forever'],
    ['--seed', '-1'],
  ] as const) {
    it(`rejects ${flag} ${value} with exit 2 before connecting`, async () => {
      const run = await runCli(['simulate', flag, value, '--database-url', 'postgres://nobody@127.0.0.1:1/none']);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(new RegExp(flag));
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
    });
  }
});
