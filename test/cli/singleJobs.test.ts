import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { expectNoStackTrace, runCli } from '../helpers/cli.js';

const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001';
const EXPORT_2 = 'e1e1e1e1-0000-4000-8000-000000000002';

let incident: TestDatabase;

beforeAll(async () => {
  incident = await createTestDatabase();
  await loadReferenceSchema(incident.client);
  await loadIncident(incident.client);
});
afterAll(async () => {
  await incident.drop();
});

describe('queue-doctor claim / requeue / fail', () => {
  it('claims a stuck export and prints it as JSON with its payload (exit 0)', async () => {
    const run = await runCli(['claim', EXPORT_1, '--worker', 'oncall', '--lease', '2m', '--json', '--database-url', incident.url]);
    expectNoStackTrace(run.stderr);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report).toMatchObject({ action: 'claim', dryRun: false, jobs: [{ id: EXPORT_1, status: 'RUNNING', lockedBy: 'oncall', attempts: 1, payload: { format: 'pdf' } }] });
    expect(typeof report.auditId).toBe('number');
  });

  it('refuses the same job again under its live lease (exit 1), and takes it with --steal', async () => {
    const refused = await runCli(['claim', EXPORT_1, '--database-url', incident.url]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/live lease held by oncall/);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    const stolen = await runCli(['claim', EXPORT_1, '--steal', '--worker', 'oncall-2', '--json', '--database-url', incident.url]);
    expect(stolen.code).toBe(0);
    expect(JSON.parse(stolen.stdout).jobs[0]).toMatchObject({ lockedBy: 'oncall-2', attempts: 2 });
  });

  it('requeues and fails with exit 0, and lists the change in history', async () => {
    expect((await runCli(['requeue', EXPORT_1, '--database-url', incident.url])).code).toBe(1);
    expect((await runCli(['requeue', EXPORT_1, '--steal', '--database-url', incident.url])).code).toBe(0);
    const failed = await runCli(['fail', EXPORT_2, '--reason', 'cancelled by on-call', '--database-url', incident.url]);
    expect(failed.code).toBe(0);
    expect(failed.stdout).toMatch(/failed: e1e1e1e1-0000-4000-8000-000000000002/);
    expect(failed.stdout).toMatch(/queue-doctor undo \d+/);
    const history = JSON.parse((await runCli(['history', '--json', '--database-url', incident.url])).stdout);
    expect(JSON.stringify(history)).toMatch(/"fail"/);
  });

  it('dry run prints the change and leaves the table as it was', async () => {
    const before = await snapshotTable(incident.client, 'jobs');
    const run = await runCli(['fail', EXPORT_1, '--reason', 'x', '--dry-run', '--database-url', incident.url]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/DRY RUN/);
    expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
  });

  const badInputs: [string, string[], number, RegExp][] = [
    ['a malformed id', ['claim', 'not-a-job'], 2, /not a valid job id/],
    ['an injection string', ['requeue', "'; DROP TABLE jobs; --"], 2, /not a valid job id/],
    ['an unknown id', ['claim', '00000000-0000-4000-8000-00000000abcd'], 1, /no job 00000000-0000-4000-8000-00000000abcd/],
    ['a missing --reason', ['fail', EXPORT_2], 2, /--reason/],
    ['an empty --reason', ['fail', EXPORT_2, '--reason', ''], 2, /--reason/],
    ['a bad --lease', ['claim', EXPORT_2, '--lease', 'forever'], 2, /--lease expects a duration/],
    ['a zero --lease', ['claim', EXPORT_2, '--lease', '0s'], 2, /--lease must be at least 1s/],
    ['a worker name with a newline', ['claim', EXPORT_2, '--worker', 'a\nb'], 2, /--worker/],
  ];
  for (const [name, args, code, message] of badInputs) {
    it(`answers ${name} with exit ${code}, one line, and no change`, async () => {
      const before = await snapshotTable(incident.client, 'jobs');
      const run = await runCli([...args, '--database-url', incident.url]);
      expect(run.code).toBe(code);
      expect(run.stderr).toMatch(message);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
      expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
    });
  }

  it('shows examples in --help', async () => {
    for (const command of ['claim', 'requeue', 'fail']) {
      const run = await runCli([command, '--help']);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(/Examples:/);
    }
  });
});
