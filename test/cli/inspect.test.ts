import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, snapshotTable, type TestDatabase } from '../helpers/database.js';
import { expectNoStackTrace, runCli } from '../helpers/cli.js';

const CHECK_ORDER = ['schema', 'claim-function', 'stuck-queued', 'expired-leases', 'starvation', 'priority-collision', 'premature-exports', 'run-state', 'workers', 'indexes'];

let incident: TestDatabase;

beforeAll(async () => {
  incident = await createTestDatabase();
  await loadReferenceSchema(incident.client);
  await loadIncident(incident.client);
});
afterAll(async () => {
  await incident.drop();
});

describe('queue-doctor inspect on the incident', () => {
  it('exits 1 and prints the JSON contract, writing nothing', async () => {
    const before = [await snapshotTable(incident.client, 'jobs'), await snapshotTable(incident.client, 'report_runs')];
    const run = await runCli(['inspect', '--json', '--database-url', incident.url]);
    expect(run.code).toBe(1);
    expectNoStackTrace(run.stderr);
    const report = JSON.parse(run.stdout);
    expect(report.status).toBe('fail');
    expect(report.checks.map((c: { id: string }) => c.id)).toEqual(CHECK_ORDER);
    for (const check of report.checks) {
      expect(Object.keys(check)).toEqual(expect.arrayContaining(['id', 'status', 'summary', 'count', 'items', 'remedy']));
      expect(['ok', 'warn', 'fail']).toContain(check.status);
      if (check.status !== 'ok') expect(check.remedy).toEqual(expect.stringMatching(/\S/));
      for (const item of check.items) expect(typeof item.id).toBe('string');
    }
    const byId = Object.fromEntries(report.checks.map((c: { id: string }) => [c.id, c]));
    expect(byId['claim-function']).toMatchObject({ status: 'fail', variant: 'legacy' });
    expect(byId['starvation'].status).toBe('fail');
    expect(byId['stuck-queued'].items.map((i: { id: string }) => i.id)).toEqual(
      expect.arrayContaining(['e1e1e1e1-0000-4000-8000-000000000001', 'e1e1e1e1-0000-4000-8000-000000000002']),
    );
    expect([await snapshotTable(incident.client, 'jobs'), await snapshotTable(incident.client, 'report_runs')]).toEqual(before);
  });

  it('prints a checklist with one line per check and the next step', async () => {
    const run = await runCli(['inspect', '--database-url', incident.url]);
    expect(run.code).toBe(1);
    for (const id of CHECK_ORDER) expect(run.stdout).toMatch(new RegExp(`\\[[✓!✗]\\] ${id}\\b`));
    expect(run.stdout).toContain('[✗] starvation');
    expect(run.stdout).toMatch(/Next step: /);
    // Not a TTY: no colour codes.
    expect(run.stdout).not.toMatch(/\x1b\[/);
  });

  it('colours only when asked to, and honours NO_COLOR over FORCE_COLOR', async () => {
    const forced = await runCli(['inspect', '--check', 'claim-function', '--database-url', incident.url], { env: { FORCE_COLOR: '1' } });
    expect(forced.stdout).toMatch(/\x1b\[/);
    const noColor = await runCli(['inspect', '--check', 'claim-function', '--database-url', incident.url], { env: { FORCE_COLOR: '1', NO_COLOR: '1' } });
    expect(noColor.stdout).not.toMatch(/\x1b\[/);
    const flag = await runCli(['inspect', '--no-color', '--check', 'claim-function', '--database-url', incident.url], { env: { FORCE_COLOR: '1' } });
    expect(flag.stdout).not.toMatch(/\x1b\[/);
  });

  it('selects checks with --check and --skip', async () => {
    const only = JSON.parse((await runCli(['inspect', '--json', '--check', 'indexes,workers', '--database-url', incident.url])).stdout);
    expect(only.checks.map((c: { id: string }) => c.id)).toEqual(['workers', 'indexes']);
    const skipped = JSON.parse((await runCli(['inspect', '--json', '--skip', 'claim-function', '--skip', 'starvation', '--database-url', incident.url])).stdout);
    expect(skipped.checks.map((c: { id: string }) => c.id)).toEqual(CHECK_ORDER.filter((id) => id !== 'claim-function' && id !== 'starvation'));
  });

  it('reads the connection from DATABASE_URL, then from PG* variables', async () => {
    const viaEnv = await runCli(['inspect', '--json', '--check', 'claim-function'], { env: { DATABASE_URL: incident.url } });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).not.toMatch(/embedded demo/);
    const url = new URL(incident.url);
    const viaLibpq = await runCli(['inspect', '--json', '--check', 'claim-function'], {
      env: { PGHOST: url.hostname, PGPORT: url.port || '5432', PGUSER: decodeURIComponent(url.username), PGPASSWORD: decodeURIComponent(url.password), PGDATABASE: incident.name },
    });
    expect(viaLibpq.code).toBe(1);
    expect(JSON.parse(viaLibpq.stdout).checks[0].variant).toBe('legacy');
  });

  it('works for a role that can only SELECT', async () => {
    const role = `qd_reader_${incident.name.slice(-6)}`;
    await incident.client.query(`DROP ROLE IF EXISTS ${role}`);
    await incident.client.query(`CREATE ROLE ${role} LOGIN PASSWORD 'reader-pass'`);
    await incident.client.query(`GRANT CONNECT ON DATABASE ${incident.name} TO ${role}; GRANT USAGE ON SCHEMA public TO ${role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`);
    const url = new URL(incident.url);
    url.username = role;
    url.password = 'reader-pass';
    const run = await runCli(['inspect', '--json', '--database-url', url.toString()]);
    expectNoStackTrace(run.stderr);
    expect(run.code).toBe(1);
    expect(JSON.parse(run.stdout).status).toBe('fail');
    await incident.client.query(`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${role}; REVOKE ALL ON SCHEMA public FROM ${role}; REVOKE ALL ON DATABASE ${incident.name} FROM ${role}; DROP ROLE ${role}`);
  });

  it('ends cleanly on Ctrl-C: exit 130, one line, no stack trace', async () => {
    const locker = await incident.connect();
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
    try {
      const run = await runCli(['inspect', '--lock-timeout', '30s', '--database-url', incident.url], { interruptAfterMs: 1500 });
      expect(run.code).toBe(130);
      expect(run.durationMs).toBeLessThan(15_000);
      expect(run.stderr).toMatch(/interrupted.*nothing was changed/);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
      expect(run.stdout).toBe('');
    } finally {
      await locker.query('ROLLBACK');
    }
  });

  it('fails fast, naming the blocker, when the jobs table is locked', async () => {
    const locker = await incident.connect();
    await locker.query(`SET application_name = 'schema-migration'`);
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
    const pid = (await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    try {
      const run = await runCli(['inspect', '--lock-timeout', '500ms', '--database-url', incident.url]);
      expect(run.code).toBe(2);
      expect(run.durationMs).toBeLessThan(20_000);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toContain(`pid ${pid}`);
      expect(run.stderr).toContain('schema-migration');
      expectNoStackTrace(run.stderr);
    } finally {
      await locker.query('ROLLBACK');
    }
  });
});

describe('queue-doctor inspect on a healthy queue', () => {
  let healthy: TestDatabase;
  beforeAll(async () => {
    healthy = await createTestDatabase();
    await loadReferenceSchema(healthy.client);
    // A claim function without the two-phase flaw, recognised by queue-doctor's marker.
    await healthy.client.query(`CREATE OR REPLACE FUNCTION claim_next_job(p_worker_id text, p_lease_seconds integer DEFAULT 300)
      RETURNS SETOF jobs LANGUAGE sql AS $$ -- queue-doctor:balanced-claim v1
      SELECT * FROM jobs WHERE false $$`);
    await healthy.client.query(`
      INSERT INTO report_runs (id, status, final_report_json, completed_at) VALUES ('11111111-1111-4111-8111-111111111111', 'COMPLETED', '{"ok": true}', now());
      INSERT INTO jobs (type, status, priority, run_id, scheduled_at) VALUES ('EXPORT', 'QUEUED', 50, '11111111-1111-4111-8111-111111111111', now() - interval '5 seconds');
      INSERT INTO jobs (type, status, priority, locked_by, locked_at, lease_expires_at) VALUES ('SECTION_RUN', 'RUNNING', 100, 'worker-1', now() - interval '10 seconds', now() + interval '290 seconds');
      INSERT INTO jobs (type, status, attempts, updated_at) SELECT 'SECTION_RUN', 'COMPLETED', 1, now() - interval '1 day' FROM generate_series(1, 200);
    `);
  });
  afterAll(async () => {
    await healthy.drop();
  });

  it('exits 0 with --fail-on fail and 1 with --fail-on warn when only warnings remain', async () => {
    const run = await runCli(['inspect', '--json', '--database-url', healthy.url]);
    const report = JSON.parse(run.stdout);
    const failing = report.checks.filter((c: { status: string }) => c.status === 'fail');
    expect(failing).toEqual([]);
    expect(run.code).toBe(0);
    if (report.status === 'warn') {
      const strict = await runCli(['inspect', '--json', '--fail-on', 'warn', '--database-url', healthy.url]);
      expect(strict.code).toBe(1);
    }
  });
});

describe('bad input: one line on stderr, exit 2, no stack trace, no password', () => {
  const cases: [string, string[], RegExp][] = [
    ['an unknown option', ['inspect', '--frobnicate'], /unknown option/],
    ['an unknown check', ['inspect', '--check', 'nope'], /"nope" is not a check/],
    ['a malformed duration', ['inspect', '--stuck-after', 'soon'], /--stuck-after expects a duration/],
    ['a malformed limit', ['inspect', '--limit', '-3'], /--limit expects a whole number/],
    ['a bad --fail-on', ['inspect', '--fail-on', 'sometimes'], /--fail-on/],
    ['an unknown command', ['diagnose'], /unknown command/],
    ['conflicting --demo and --database-url', ['inspect', '--demo', '--database-url', 'postgres://x@127.0.0.1/y'], /only one/],
  ];
  for (const [name, args, message] of cases) {
    it(`rejects ${name}`, async () => {
      const run = await runCli(args);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
      expect(run.stdout).toBe('');
    });
  }

  it('never prints the password of a connection it could not make', async () => {
    const run = await runCli(['inspect', '--connect-timeout', '3s', '--database-url', 'postgres://app:hunter2-Secret@127.0.0.1:1/reports']);
    expect(run.code).toBe(2);
    expect(run.stderr + run.stdout).not.toContain('hunter2-Secret');
    expect(run.stderr).toMatch(/connection refused/);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('reports a wrong password without echoing it', async () => {
    const url = new URL(incident.url);
    url.password = 'definitely-wrong-pw';
    url.username = 'no_such_user_qd';
    const run = await runCli(['inspect', '--json', '--database-url', url.toString()]);
    expect(run.code).toBe(2);
    expect(run.stderr + run.stdout).not.toContain('definitely-wrong-pw');
    expect(JSON.parse(run.stdout).error.kind).toBe('connection');
    expectNoStackTrace(run.stderr);
  });

  it('names the missing table and the config key to set', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qd-config-'));
    await writeFile(path.join(dir, 'queue-doctor.config.json'), JSON.stringify({ jobs: { table: 'background_jobs' } }));
    const run = await runCli(['inspect', '--database-url', incident.url], { cwd: dir });
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/table "public"\."background_jobs" not found \(config key "jobs\.table"\)/);
  });

  it('names the missing column and its config key', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qd-config-'));
    const config = path.join(dir, 'custom.json');
    await writeFile(config, JSON.stringify({ jobs: { columns: { leaseExpiresAt: 'lease_until' } } }));
    const run = await runCli(['inspect', '--config', config, '--database-url', incident.url]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/column "lease_until" not found .*config key "jobs\.columns\.leaseExpiresAt"/);
  });

  it('rejects a config file that is not JSON or has unknown keys', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qd-config-'));
    await writeFile(path.join(dir, 'broken.json'), '{ "jobs": ');
    await writeFile(path.join(dir, 'typo.json'), JSON.stringify({ jobs: { tabel: 'jobs' } }));
    const broken = await runCli(['inspect', '--config', path.join(dir, 'broken.json'), '--database-url', incident.url]);
    expect(broken.code).toBe(2);
    expect(broken.stderr).toMatch(/not valid JSON/);
    const typo = await runCli(['inspect', '--config', path.join(dir, 'typo.json'), '--database-url', incident.url]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/"jobs\.tabel" is not a known key/);
    const missing = await runCli(['inspect', '--config', path.join(dir, 'absent.json'), '--database-url', incident.url]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no such file/);
  });

  it('treats hostile names in the config as names, not SQL', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'qd-config-'));
    const config = path.join(dir, 'hostile.json');
    await writeFile(config, JSON.stringify({ jobs: { table: 'jobs"; DROP TABLE jobs; --' }, statuses: { queued: "QUEUED'; DROP TABLE jobs; --" } }));
    const before = await snapshotTable(incident.client, 'jobs');
    const run = await runCli(['inspect', '--config', config, '--database-url', incident.url]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/not found \(config key "jobs\.table"\)/);
    expect(await snapshotTable(incident.client, 'jobs')).toEqual(before);
  });
});

describe('help and version', () => {
  it('shows examples in --help and exits 0', async () => {
    const run = await runCli(['inspect', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/Examples:/);
    expect(run.stdout).toMatch(/--fail-on/);
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toMatch(/inspect/);
    expect(top.stdout).toMatch(/why/);
  });

  it('prints the version', async () => {
    const run = await runCli(['--version']);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
