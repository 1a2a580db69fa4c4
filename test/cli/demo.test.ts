import { describe, expect, it } from 'vitest';
import { expectNoStackTrace, runCli, TEST_DEMO_DIR } from '../helpers/cli.js';

describe('the embedded demo (no database configured)', () => {
  it('seeds the incident on first use and diagnoses it', async () => {
    const run = await runCli(['inspect', '--json'], { timeoutMs: 120_000 });
    expectNoStackTrace(run.stderr);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('embedded demo database');
    expect(run.stderr).toContain(TEST_DEMO_DIR);
    expect(run.stderr).toContain('freshly seeded');
    const report = JSON.parse(run.stdout);
    const byId = Object.fromEntries(report.checks.map((c: { id: string; status: string }) => [c.id, c]));
    expect(byId['claim-function'].variant).toBe('legacy');
    expect(byId['starvation'].status).toBe('fail');
  });

  it('reuses the demo on the next run and resets it with --reset-demo', async () => {
    const again = await runCli(['inspect', '--json', '--check', 'stuck-queued']);
    expect(again.code).toBe(1);
    expect(again.stderr).not.toContain('freshly seeded');
    const reset = await runCli(['inspect', '--json', '--check', 'stuck-queued', '--reset-demo']);
    expect(reset.code).toBe(1);
    expect(reset.stderr).toContain('freshly seeded');
  });

  it('explains a stuck export of the incident with why', async () => {
    const run = await runCli(['why', 'e1e1e1e1-0000-4000-8000-000000000001', '--json']);
    expectNoStackTrace(run.stderr);
    expect(run.code).toBe(1);
    const report = JSON.parse(run.stdout);
    expect(report.job.id).toBe('e1e1e1e1-0000-4000-8000-000000000001');
    expect(report.claimable).toBe(false);
    expect(report.reasons.map((r: { code: string }) => r.code)).toContain('starvation');
  });

  it('--demo forces the demo even when DATABASE_URL is set', async () => {
    const run = await runCli(['inspect', '--demo', '--json', '--check', 'claim-function'], { env: { DATABASE_URL: 'postgres://nobody:pw@127.0.0.1:1/none' } });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('embedded demo database');
  });
});
