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

describe('queue-doctor why', () => {
  it('explains a starved export (exit 1) in JSON', async () => {
    const run = await runCli(['why', 'e1e1e1e1-0000-4000-8000-000000000002', '--json', '--database-url', incident.url]);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(Object.keys(report)).toEqual(['job', 'claimable', 'reasons']);
    expect(report.claimable).toBe(false);
    expect(report.reasons.map((r: { code: string }) => r.code)).toContain('starvation');
    for (const reason of report.reasons) expect(reason.message).toEqual(expect.stringMatching(/\S/));
  });

  it('prints the reasons as text', async () => {
    const run = await runCli(['why', 'e1e1e1e1-0000-4000-8000-000000000003', '--database-url', incident.url]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/run-not-completed/);
    expect(run.stdout).toMatch(/starvation/);
  });

  it('exits 0 for a job the next claim would hand out', async () => {
    // The longest-expired lease is what the legacy function hands out next.
    const next = await incident.client.query(`SELECT id FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < now() ORDER BY lease_expires_at LIMIT 1`);
    const run = await runCli(['why', next.rows[0].id, '--json', '--database-url', incident.url]);
    const report = JSON.parse(run.stdout);
    expect(report.claimable).toBe(true);
    // It may still carry attempts-exhausted (legacy hands those out anyway); exit follows the reasons.
    expect(run.code).toBe(report.reasons.length === 0 ? 0 : 1);
  });

  it('exits 1 for an unknown id', async () => {
    const run = await runCli(['why', '00000000-0000-4000-8000-000000000000', '--database-url', incident.url]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/no job/i);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
  });

  for (const hostile of ['not-a-uuid', "'; DROP TABLE jobs; --", '', 'e1e1e1e1'.repeat(200)]) {
    it(`exits 2 on the malformed id ${JSON.stringify(hostile)} and changes nothing`, async () => {
      const before = await snapshotTable(incident.client, 'jobs');
      const run = await runCli(['why', hostile, '--database-url', incident.url]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/not a valid job id/);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
      expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
    });
  }

  it('requires a job id', async () => {
    const run = await runCli(['why']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/missing required argument/);
  });
});
