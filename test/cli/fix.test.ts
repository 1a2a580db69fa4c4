import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, resetSchema, type TestDatabase } from '../helpers/database.js';
import { BIN, expectNoStackTrace, runCli, TEST_DEMO_DIR } from '../helpers/cli.js';
import { EXPORT_1, EXPORT_2, EXPORT_3, incidentExpired, remapped, REMAPPED_DATA, REMAPPED_DDL, snapshot } from '../repairs/scenario.js';

let testDb: TestDatabase;
/** The test server's URL carries a password when it has one: it must never reach the audit log. */
let url: string;

beforeAll(async () => {
  testDb = await createTestDatabase();
  url = testDb.url;
});
afterAll(async () => {
  await testDb.drop();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query('DROP SCHEMA IF EXISTS queue CASCADE; DROP SCHEMA IF EXISTS queue_doctor CASCADE;');
  await loadReferenceSchema(testDb.client);
  await loadIncident(testDb.client);
});

async function auditLog() {
  const exists = await testDb.client.query(`SELECT to_regclass('queue_doctor.audit_log') IS NOT NULL AS present`);
  if (!exists.rows[0].present) return [];
  return (await testDb.client.query('SELECT id::int AS id, action, command_line, affected_ids, undone_by::int AS undone_by FROM queue_doctor.audit_log ORDER BY id')).rows;
}

const fixCli = (args: string[], options: { cwd?: string } = {}) => runCli(['fix', ...args, '--database-url', url], options);

describe('queue-doctor fix', () => {
  it('--dry-run --json reports every action and changes nothing; the real run matches it and is audited without the connection string', async () => {
    const before = await snapshot(testDb.client);
    const dry = await fixCli(['--all', '--dry-run', '--json']);
    expectNoStackTrace(dry.stderr);
    expect(dry.code).toBe(0);
    const planned = JSON.parse(dry.stdout);
    expect(planned.dryRun).toBe(true);
    expect(planned.actions.map((a: { action: string; rowsAffected: number }) => [a.action, a.rowsAffected])).toEqual([
      ['release-expired', 16],
      ['fail-exhausted', 24],
      ['requeue-premature', 0],
      ['defer-premature', 1],
      ['cancel-premature', 0],
      ['reprioritize', 3],
    ]);
    for (const action of planned.actions) expect(Object.keys(action)).toEqual(['action', 'rowsAffected', 'ids', 'skippedLocked', 'auditId', 'details']);
    expect(planned.recommendations[0]).toMatch(/^queue-doctor migrate up/);
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditLog()).toEqual([]);

    const real = await fixCli(['--all', '--json']);
    expect(real.code).toBe(0);
    const done = JSON.parse(real.stdout);
    expect(done.actions.map((a: { ids: string[] }) => a.ids)).toEqual(planned.actions.map((a: { ids: string[] }) => a.ids));
    const log = await auditLog();
    expect(log.map((row) => row.id)).toEqual(done.actions.filter((a: { auditId: number | null }) => a.auditId !== null).map((a: { auditId: number }) => a.auditId));
    for (const row of log) {
      expect(row.command_line).toBe('queue-doctor fix --all --json');
      expect(row.command_line).not.toContain('postgres://');
    }
  });

  it('prints a table with rows, ids, audit ids, undo commands and the next step', async () => {
    const dry = await fixCli(['--reprioritize', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('DRY RUN: nothing was changed');
    expect(dry.stdout).toMatch(/│ reprioritize\s+│ 3\s+│ 0\s+│ —/);
    expect(dry.stdout).toContain(`reprioritize would change: ${EXPORT_1}, ${EXPORT_2}, ${EXPORT_3}`);
    expect(dry.stdout).toMatch(/Next step: queue-doctor fix --reprioritize --database-url \S+\n?$/);
    expect(dry.stdout).not.toContain('--dry-run --');
    const real = await fixCli(['--reprioritize', '40']);
    expect(real.code).toBe(0);
    const id = (await auditLog())[0].id;
    expect(real.stdout).toMatch(new RegExp(`│ reprioritize\\s+│ 3\\s+│ 0\\s+│ ${id}`));
    expect(real.stdout).toContain(`Undo (newest first): queue-doctor undo ${id}`);
    expect(real.stdout).toMatch(/Next step: queue-doctor inspect\n?$/);
    const again = await fixCli(['--reprioritize', '40']);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('Nothing needed changing.');
    expect(again.stdout).not.toMatch(/\x1b\[/);
  });

  it('caps the ids in the table; --json lists them all', async () => {
    const run = await fixCli(['--release-expired', '--dry-run']);
    expect(run.stdout).toMatch(/fail-exhausted would change: (\S+, ){9}\S+ … \(\+14 more; --json lists all\)/);
    const json = JSON.parse((await fixCli(['--release-expired', '--dry-run', '--json'])).stdout);
    expect(json.actions[1].ids).toHaveLength(24);
  });

  it('rejects bad usage with one line and exit 2, before touching the database', async () => {
    const before = await snapshot(testDb.client);
    const cases = [
      [],
      ['--dry-run'],
      ['--reprioritize', 'abc'],
      ['--reprioritize', '-5'],
      ['--reprioritize=-5'],
      ['--reprioritize', '2147483648'],
      ['--reprioritize', '1.5'],
      ['--reprioritize', '50; DROP TABLE jobs'],
      ['--reprioritize', "50' OR '1'='1"],
      ['--bogus'],
      ['--all', 'extra-argument'],
      ['--premature', '--failed-within', 'forever'],
      ['--premature', '--failed-within', '0'],
    ];
    for (const args of cases) {
      const run = await fixCli(args);
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(run.stderr).not.toContain(url);
      expectNoStackTrace(run.stderr);
    }
    const none = await fixCli([]);
    expect(none.stderr).toMatch(/at least one action: --reprioritize \[N\], --release-expired, --premature, --install-claim, --all/);
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditLog()).toEqual([]);
  });

  it('exits 1 and names the row a worker holds locked, without waiting for it', async () => {
    const worker = await testDb.connect();
    await worker.query('BEGIN');
    await worker.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [EXPORT_2]);
    try {
      const run = await fixCli(['--reprioritize', '--lock-timeout', '10s']);
      expect(run.code).toBe(1);
      expect(run.durationMs).toBeLessThan(8_000);
      expect(run.stdout).toMatch(/│ reprioritize\s+│ 2\s+│ 1\s+│/);
      expect(run.stdout).toContain(`reprioritize skipped, held locked by a worker: ${EXPORT_2}`);
      expect(run.stdout).toMatch(/run the same command again/);
    } finally {
      await worker.query('ROLLBACK');
    }
    const retry = await fixCli(['--reprioritize', '--json']);
    expect(retry.code).toBe(0);
    expect(JSON.parse(retry.stdout).actions[0]).toMatchObject({ ids: [EXPORT_2], skippedLocked: [] });
  });

  it('exits 2 within --lock-timeout when a table is locked, naming the holder, and changes nothing', async () => {
    const before = await snapshot(testDb.client);
    const holder = await testDb.connect();
    await holder.query(`SET application_name = 'long-migration'`);
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE report_runs IN ACCESS EXCLUSIVE MODE');
    const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    try {
      const run = await fixCli(['--release-expired', '--premature', '--lock-timeout', '500ms']);
      expect(run.code).toBe(2);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toContain(`pid ${pid}`);
      expect(run.stderr).toContain('long-migration');
      expectNoStackTrace(run.stderr);
    } finally {
      await holder.query('ROLLBACK');
    }
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditLog()).toEqual([]);
  });

  it('killed mid-fix (SIGKILL while it waits on a lock, after it changed rows) leaves no partial change and no audit entry', async () => {
    const before = await snapshot(testDb.client);
    const holder = await testDb.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE report_runs IN ACCESS EXCLUSIVE MODE');
    // release-expired touches only jobs and runs first; --premature then needs report_runs and waits.
    const child = spawn(process.execPath, [BIN, 'fix', '--release-expired', '--premature', '--lock-timeout', '60s', '--database-url', url], {
      env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), QUEUE_DOCTOR_DEMO_DIR: TEST_DEMO_DIR },
      stdio: 'ignore',
    });
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    try {
      const waiting = await pollUntil(async () => {
        const result = await testDb.client.query(
          `SELECT a.pid,
                  EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.relation = 'jobs'::regclass AND l.mode = 'RowExclusiveLock' AND l.granted) AS wrote_jobs,
                  EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'transactionid' AND l.granted) AS has_xid
             FROM pg_stat_activity a
            WHERE a.datname = current_database() AND a.application_name = 'queue-doctor' AND a.wait_event_type = 'Lock'`,
        );
        return result.rows[0];
      });
      // It is mid-transaction with rows already changed: the doctor holds a write lock and a transaction id.
      expect(waiting).toMatchObject({ wrote_jobs: true, has_xid: true });
      child.kill('SIGKILL');
      await exited;
    } finally {
      await holder.query('ROLLBACK');
    }
    // The orphaned backend gets the lock, cannot commit without its client, and goes away.
    await pollUntil(async () => {
      const result = await testDb.client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'queue-doctor'`);
      return result.rows[0].n === 0 ? true : undefined;
    });
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditLog()).toEqual([]);
    expect((await testDb.client.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'queue_doctor'`)).rows[0].n).toBe(0);
  });

  it('follows a remapped schema from the config file', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(REMAPPED_DATA);
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'qd-fix-config-'));
    await writeFile(
      path.join(cwd, 'queue-doctor.config.json'),
      JSON.stringify({
        schema: 'queue',
        jobs: {
          table: 'background tasks',
          columns: {
            id: 'task_id', type: 'kind', status: 'state', priority: 'rank', payload: 'body', attempts: 'tries', maxAttempts: 'max_tries',
            scheduledAt: 'run_at', lockedBy: 'worker', lockedAt: 'claimed_at', leaseExpiresAt: 'lease_until', lastError: 'error',
            createdAt: 'inserted_at', updatedAt: 'touched_at',
          },
          runIdPayloadKey: 'pipelineRun',
        },
        runs: { table: 'pipeline_runs', columns: { id: 'run_key', status: 'state', finalReport: 'output' } },
        statuses: { queued: "pen'ding", running: 'active', completed: 'done', failed: 'dead', cancelled: 'aborted' },
        types: { export: 'render_pdf' },
      }),
    );
    const original = await snapshot(testDb.client, 'queue."background tasks"', 'queue.pipeline_runs');
    const reference = await snapshot(testDb.client);
    const run = await fixCli(['--all', '--json'], { cwd });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).actions.map((a: { ids: string[] }) => a.ids)).toEqual([[remapped(2)], [remapped(3)], [remapped(4)], [remapped(5)], [remapped(6)], [remapped(1), remapped(4)]]);
    // The reference tables (same database, default names) are not touched.
    expect(await snapshot(testDb.client)).toEqual(reference);
    for (const id of [...(await auditLog())].reverse().map((row) => row.id)) {
      const undo = await runCli(['undo', String(id), '--database-url', url], { cwd });
      expect(undo.code).toBe(0);
    }
    expect(await snapshot(testDb.client, 'queue."background tasks"', 'queue.pipeline_runs')).toEqual(original);
  });
});

describe('queue-doctor history and undo', () => {
  it('history is empty (exit 0) before any change, then lists entries newest first', async () => {
    const empty = await runCli(['history', '--database-url', url]);
    expect(empty.code).toBe(0);
    expect(empty.stdout).toContain('No changes recorded');
    expect(JSON.parse((await runCli(['history', '--json', '--database-url', url])).stdout)).toEqual({ entries: [] });
    await fixCli(['--all']);
    const listed = JSON.parse((await runCli(['history', '--json', '--limit', '2', '--database-url', url])).stdout);
    expect(listed.entries.map((e: { action: string; rows: number }) => [e.action, e.rows])).toEqual([
      ['fix --reprioritize 50', 3],
      ['fix --premature (defer)', 1],
    ]);
    expect(Object.keys(listed.entries[0])).toEqual(['id', 'recordedAt', 'databaseUser', 'action', 'rows', 'commandLine', 'undoneBy']);
    const table = await runCli(['history', '--database-url', url]);
    expect(table.stdout).toMatch(/fix --release-expired \(requeue\)\s+│ 16/);
    expect(table.stdout).toContain(`Next step (to reverse the newest change): queue-doctor undo ${listed.entries[0].id} --dry-run`);
    expect((await runCli(['history', '--limit', 'abc', '--database-url', url])).code).toBe(2);
  });

  it('undo exit codes: 0 restored, 1 already undone / unknown / rows left alone, 2 malformed ids', async () => {
    const original = await snapshot(testDb.client);
    await fixCli(['--reprioritize']);
    const id = (await auditLog())[0].id;

    const dry = await runCli(['undo', String(id), '--dry-run', '--database-url', url]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain('3 row(s) would be restored (columns priority, updated_at)');
    expect(dry.stdout).toMatch(new RegExp(`Next step: queue-doctor undo ${id} --database-url`));

    const undone = await runCli(['undo', String(id), '--json', '--database-url', url]);
    expect(undone.code).toBe(0);
    expect(JSON.parse(undone.stdout)).toMatchObject({ auditId: id, restored: [EXPORT_1, EXPORT_2, EXPORT_3], changedSince: [], skippedLocked: [], deleted: [] });
    expect(await snapshot(testDb.client)).toEqual(original);
    expect((await auditLog()).at(-1)).toMatchObject({ action: `undo ${id}`, command_line: `queue-doctor undo ${id} --json` });

    const twice = await runCli(['undo', String(id), '--database-url', url]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/already undone/);
    expect((await runCli(['undo', '4242', '--database-url', url])).code).toBe(1);
    for (const bad of ['abc', '0', '-3', "1' OR '1'='1", '1; DELETE FROM jobs']) {
      const run = await runCli(['undo', bad, '--database-url', url]);
      expect(run.code, bad).toBe(2);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
    }
    expect(await snapshot(testDb.client)).toEqual(original);
  });

  it('undo exits 1 and leaves a row that a worker changed since', async () => {
    const { withAttemptsLeft } = await incidentExpired(testDb.client);
    await fixCli(['--release-expired']);
    const requeue = (await auditLog())[0].id;
    const claimed = withAttemptsLeft[3]!;
    await testDb.client.query(`UPDATE jobs SET status = 'RUNNING', locked_by = 'worker-7', locked_at = now(), lease_expires_at = now() + interval '5 minutes', attempts = attempts + 1, updated_at = now() WHERE id = $1`, [claimed]);
    const workerRow = (await testDb.client.query('SELECT to_jsonb(j)::text AS row FROM jobs j WHERE id = $1', [claimed])).rows[0].row;
    const run = await runCli(['undo', String(requeue), '--database-url', url]);
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('15 row(s) restored');
    expect(run.stdout).toContain(`1 row(s) changed since, left alone: ${claimed}`);
    expect((await testDb.client.query('SELECT to_jsonb(j)::text AS row FROM jobs j WHERE id = $1', [claimed])).rows[0].row).toBe(workerRow);
  });
});

async function pollUntil<T>(probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
