import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadReferenceSchema, resetSchema, type TestDatabase } from '../helpers/database.js';
import { expectNoStackTrace, runCli } from '../helpers/cli.js';
import { catalogSnapshot, REMAPPED_DDL, REMAPPED_MAP } from '../migrations/fixtures.js';
import { MIGRATION_LOCK_KEYS } from '../../src/migrations/index.js';

let testDb: TestDatabase;

beforeAll(async () => {
  testDb = await createTestDatabase();
});
afterAll(async () => {
  await testDb.drop();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query('DROP SCHEMA IF EXISTS queue CASCADE; DROP SCHEMA IF EXISTS queue_doctor CASCADE');
  await loadReferenceSchema(testDb.client);
});

const migrate = (args: string[], options: { cwd?: string } = {}) => runCli(['migrate', ...args, '--database-url', testDb.url], options);

describe('queue-doctor migrate', () => {
  it('status, up --dry-run, up, up again, status, down --all: exit codes and output', async () => {
    const before = await catalogSnapshot(testDb.client, 'public');

    const pending = await migrate(['status', '--json']);
    expect(pending.code).toBe(1);
    const status = JSON.parse(pending.stdout);
    expect(status.applied).toEqual([]);
    expect(status.pending).toEqual([
      { version: 1, name: 'active_set_indexes' },
      { version: 2, name: 'balanced_claim' },
    ]);

    const dryRun = await migrate(['up', '--dry-run']);
    expect(dryRun.code).toBe(0);
    expect(dryRun.stdout).toContain('-- would apply 001_active_set_indexes');
    expect(dryRun.stdout).toContain('CREATE INDEX CONCURRENTLY IF NOT EXISTS "jobs_qd_claim_order_idx"');
    expect(dryRun.stdout).toContain('-- queue-doctor:balanced-claim v1');
    expect(dryRun.stdout).toMatch(/dry run: nothing was changed\n$/);
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);

    const up = await migrate(['up', '--json']);
    expect(up.code).toBe(0);
    // Not a terminal: no progress lines, nothing on stderr at all.
    expect(up.stderr).toBe('');
    const applied = JSON.parse(up.stdout);
    expect(Object.keys(applied)).toEqual(['dryRun', 'applied', 'alreadyApplied', 'pending']);
    expect(applied.applied.map((m: { version: number }) => m.version)).toEqual([1, 2]);

    const again = await migrate(['up']);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe('nothing to apply: 001_active_set_indexes, 002_balanced_claim already applied\n');

    const done = await migrate(['status']);
    expect(done.code).toBe(0);
    expect(done.stdout).toMatch(/001\s+│ active_set_indexes │ applied/);
    expect(done.stdout).toContain('✓ every migration is applied');

    const down = await migrate(['down', '--all']);
    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/^✓ reverted 002_balanced_claim \(\d+\.\d s\)\n✓ reverted 001_active_set_indexes \(\d+\.\d s\)\nnote: queue_doctor\.migrations/);
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(before);

    const nothing = await migrate(['down']);
    expect(nothing.code).toBe(0);
    expect(nothing.stdout).toBe('nothing to revert: no migration is applied\n');
  });

  it('works on a remapped schema through the config file', async () => {
    await testDb.client.query(REMAPPED_DDL);
    const before = await catalogSnapshot(testDb.client, 'queue');
    const folder = await mkdtemp(path.join(os.tmpdir(), 'queue-doctor-migrate-'));
    await writeFile(path.join(folder, 'queue-doctor.config.json'), JSON.stringify(REMAPPED_MAP));

    const up = await migrate(['up'], { cwd: folder });
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/✓ applied 002_balanced_claim/);
    const claimOrder = await testDb.client.query(`SELECT 1 FROM pg_indexes WHERE schemaname = 'queue' AND indexname = 'background_tasks_qd_claim_order_idx'`);
    expect(claimOrder.rowCount).toBe(1);

    // Without the config file the reference map applies, and the reference tables exist too: the
    // recorded fingerprint is what stops a down that would drop the wrong indexes.
    const midway = await catalogSnapshot(testDb.client, 'public');
    const refused = await migrate(['down', '--all']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^queue-doctor: migration 001_active_set_indexes, 002_balanced_claim was applied with another schema map/);
    expect(await catalogSnapshot(testDb.client, 'public')).toEqual(midway);

    const down = await migrate(['down', '--all', '--config', path.join(folder, 'queue-doctor.config.json')]);
    expect(down.code).toBe(0);
    expect(await catalogSnapshot(testDb.client, 'queue')).toEqual(before);
  });

  it('refuses (exit 1) while another migrate holds the lock, in one line, and as JSON', async () => {
    const holder = await testDb.connect();
    const pid = (await holder.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await holder.query('SELECT pg_advisory_lock($1, $2)', [...MIGRATION_LOCK_KEYS]);
    try {
      const run = await migrate(['up', '--json']);
      expect(run.code).toBe(1);
      expect(run.stderr.trim().split('\n')).toEqual([`queue-doctor: another queue-doctor migrate is running (pid ${pid}) — wait for it to finish; \`queue-doctor migrate status\` shows what it applied`]);
      expect(JSON.parse(run.stdout).error).toMatchObject({ kind: 'refused' });
      expect(await testDb.client.query(`SELECT to_regnamespace('queue_doctor') AS present`)).toMatchObject({ rows: [{ present: null }] });
    } finally {
      await holder.query('SELECT pg_advisory_unlock($1, $2)', [...MIGRATION_LOCK_KEYS]);
    }
  });

  it('gives up on a locked jobs table after --lock-timeout, naming the blocker, and leaves no partial index', async () => {
    const locker = await testDb.connect();
    await locker.query(`SET application_name = 'app-deploy'`);
    await locker.query('BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
    const pid = (await locker.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    try {
      const run = await migrate(['up', '--lock-timeout', '300ms']);
      expect(run.code).toBe(2);
      expectNoStackTrace(run.stderr);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expect(run.stderr).toContain(`pid ${pid}`);
      expect(run.stderr).toContain('app-deploy');
    } finally {
      await locker.query('ROLLBACK');
    }
    const leftovers = await testDb.client.query(`SELECT indexname FROM pg_indexes WHERE indexname LIKE 'jobs_qd_%'`);
    expect(leftovers.rows).toEqual([]);
    expect((await migrate(['up'])).code).toBe(0);
  });

  it('rejects unknown flags and subcommands with exit 2, and documents itself', async () => {
    for (const args of [['down', '--everything'], ['sideways'], ['up', '--config', '/nonexistent/qd.json']]) {
      const run = await migrate(args);
      expect(run.code).toBe(2);
      expect(run.stderr.trim().split('\n')).toHaveLength(1);
      expectNoStackTrace(run.stderr);
    }
    for (const args of [['migrate', '--help'], ['migrate', 'up', '--help'], ['migrate', 'down', '--help'], ['migrate', 'status', '--help']]) {
      const help = await runCli(args);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain('Examples:');
    }
  });
});
