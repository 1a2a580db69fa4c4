import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runFix, planFix, parsePriority, type FixOptions, type FixResult } from '../../src/repairs/fix.js';
import { DEFAULT_SCHEMA_MAP, type SchemaMap } from '../../src/schemaMap.js';
import type { Database } from '../../src/db/database.js';
import { QueueDoctorError } from '../../src/errors.js';
import { loadQueueModel } from '../../src/schema/queueModel.js';
import { classifyClaimFunction } from '../../src/claim/classify.js';
import {
  byId,
  changedKeys,
  except,
  EXPORT_1,
  EXPORT_2,
  EXPORT_3,
  incidentExpired,
  insertJob,
  insertRun,
  job,
  loadPrematureScenario,
  PREMATURE_EXPECTED,
  remapped,
  REMAPPED_DATA,
  REMAPPED_DDL,
  REMAPPED_MAP,
  run,
  snapshot,
} from './scenario.js';

let testDb: TestDatabase;
let db: Database;

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = await openQueueDoctorDatabase(testDb.url);
});
afterAll(async () => {
  await db.close();
  await testDb.drop();
});
beforeEach(async () => {
  await resetSchema(testDb.client);
  await testDb.client.query('DROP SCHEMA IF EXISTS queue CASCADE; DROP SCHEMA IF EXISTS queue_doctor CASCADE;');
  await loadReferenceSchema(testDb.client);
});

const COMMAND = 'queue-doctor fix (test)';

function fix(options: Partial<FixOptions>, map: SchemaMap = DEFAULT_SCHEMA_MAP): Promise<FixResult> {
  return runFix(db, map, { dryRun: false, commandLine: COMMAND, ...options });
}

const action = (result: FixResult, id: string) => {
  const found = result.actions.find((a) => a.action === id);
  if (!found) throw new Error(`no action ${id} in ${result.actions.map((a) => a.action).join(', ')}`);
  return found;
};

async function auditRows() {
  const exists = await testDb.client.query(`SELECT to_regclass('queue_doctor.audit_log') IS NOT NULL AS present`);
  if (!exists.rows[0].present) return [];
  return (await testDb.client.query('SELECT id::int AS id, action, command_line, affected_ids, database_user FROM queue_doctor.audit_log ORDER BY id')).rows;
}

describe('fix --reprioritize', () => {
  it('moves exactly the QUEUED exports behind N to N and changes nothing else', async () => {
    await loadIncident(testDb.client);
    await insertRun(testDb.client, 1, 'COMPLETED', '{"body": "x"}');
    await insertJob(testDb.client, 1, { status: 'QUEUED', runNumber: 1, priority: 10 }); // already ahead of 50
    await insertJob(testDb.client, 2, { status: 'QUEUED', runNumber: 1, priority: 50 }); // exactly N
    await insertJob(testDb.client, 3, { status: 'RUNNING', runNumber: 1, priority: 100, leaseIn: 300 }); // not QUEUED
    await insertJob(testDb.client, 4, { type: 'SECTION_RUN', status: 'QUEUED', runNumber: 1, priority: 200 }); // not an export
    const before = await snapshot(testDb.client);

    const result = await fix({ reprioritize: 50 });
    const changed = [EXPORT_1, EXPORT_2, EXPORT_3];
    expect(result.dryRun).toBe(false);
    expect(result.actions.map((a) => a.action)).toEqual(['reprioritize']);
    expect(action(result, 'reprioritize')).toMatchObject({ rowsAffected: 3, ids: changed, skippedLocked: [], details: { priority: 50 } });

    const after = await snapshot(testDb.client);
    expect(except(after.jobs, changed)).toEqual(except(before.jobs, changed));
    expect(after.runs).toEqual(before.runs);
    const [was, now] = [byId(before.jobs), byId(after.jobs)];
    for (const id of changed) {
      expect(changedKeys(was.get(id)!, now.get(id)!)).toEqual(['priority', 'updated_at']);
      expect(now.get(id)!.priority).toBe(50);
    }

    const audit = await auditRows();
    expect(audit).toEqual([expect.objectContaining({ id: action(result, 'reprioritize').auditId, action: 'fix --reprioritize 50', command_line: COMMAND, affected_ids: changed })]);
  });

  it('is idempotent: a second run changes nothing and writes no audit entry', async () => {
    await loadIncident(testDb.client);
    await fix({ reprioritize: 50 });
    const before = await snapshot(testDb.client);
    const again = await fix({ reprioritize: 50 });
    expect(action(again, 'reprioritize')).toMatchObject({ rowsAffected: 0, ids: [], skippedLocked: [], auditId: null });
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditRows()).toHaveLength(1);
  });

  it('dry run reports the same ids and changes nothing, not even the audit schema', async () => {
    await loadIncident(testDb.client);
    const before = await snapshot(testDb.client);
    const dry = await fix({ reprioritize: 40, dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(action(dry, 'reprioritize')).toMatchObject({ rowsAffected: 3, ids: [EXPORT_1, EXPORT_2, EXPORT_3], auditId: null });
    expect(await snapshot(testDb.client)).toEqual(before);
    expect((await testDb.client.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'queue_doctor'`)).rows[0].n).toBe(0);
    const real = await fix({ reprioritize: 40 });
    expect(action(real, 'reprioritize').ids).toEqual(action(dry, 'reprioritize').ids);
  });

  it('rejects priorities that are not whole numbers from 0 to 2^31-1, before touching the database', async () => {
    for (const bad of ['abc', '-1', '2147483648', '1e3', '0x10', '50; DROP TABLE jobs', "50' OR '1'='1", '', ' ']) {
      expect(() => parsePriority(bad), bad).toThrow(QueueDoctorError);
    }
    expect(parsePriority('0')).toBe(0);
    expect(parsePriority('2147483647')).toBe(2147483647);
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 31, '50' as unknown as number]) {
      await expect(fix({ reprioritize: bad })).rejects.toMatchObject({ kind: 'usage' });
    }
    await expect(fix({})).rejects.toMatchObject({ kind: 'usage', message: expect.stringContaining('--release-expired') });
    expect(() => planFix({ dryRun: false, commandLine: '' })).toThrow(/at least one action/);
    expect(await auditRows()).toEqual([]);
  });
});

describe('fix --release-expired', () => {
  it('requeues expired leases with attempts left at their expiry time and fails the exhausted ones, nothing else', async () => {
    await loadIncident(testDb.client);
    await insertRun(testDb.client, 1, 'RUNNING', null);
    await insertJob(testDb.client, 1, { type: 'SECTION_RUN', status: 'RUNNING', runNumber: 1, attempts: 1, leaseIn: 120 }); // live lease
    const { withAttemptsLeft, exhausted } = await incidentExpired(testDb.client);
    expect([withAttemptsLeft.length, exhausted.length]).toEqual([16, 24]);
    const before = await snapshot(testDb.client);

    const result = await fix({ releaseExpired: true });
    expect(result.actions.map((a) => a.action)).toEqual(['release-expired', 'fail-exhausted']);
    expect(action(result, 'release-expired')).toMatchObject({ rowsAffected: 16, ids: withAttemptsLeft, skippedLocked: [] });
    expect(action(result, 'fail-exhausted')).toMatchObject({ rowsAffected: 24, ids: exhausted, skippedLocked: [] });

    const after = await snapshot(testDb.client);
    const changed = [...withAttemptsLeft, ...exhausted];
    expect(except(after.jobs, changed)).toEqual(except(before.jobs, changed));
    expect(after.runs).toEqual(before.runs);
    const [was, now] = [byId(before.jobs), byId(after.jobs)];
    for (const id of withAttemptsLeft) {
      const [old, row] = [was.get(id)!, now.get(id)!];
      expect(changedKeys(old, row)).toEqual(['lease_expires_at', 'locked_at', 'locked_by', 'scheduled_at', 'status', 'updated_at']);
      expect(row).toMatchObject({ status: 'QUEUED', locked_by: null, locked_at: null, lease_expires_at: null, attempts: old.attempts });
      expect(Date.parse(row.scheduled_at as string)).toBe(Date.parse(old.lease_expires_at as string));
    }
    for (const id of exhausted) {
      const [old, row] = [was.get(id)!, now.get(id)!];
      expect(changedKeys(old, row)).toEqual(['last_error', 'lease_expires_at', 'locked_at', 'locked_by', 'status', 'updated_at']);
      expect(row).toMatchObject({
        status: 'FAILED',
        lease_expires_at: null,
        last_error: `queue-doctor: lease expired on the last allowed attempt (${old.attempts} of 3); released by fix --release-expired`,
      });
    }

    const again = await fix({ releaseExpired: true });
    expect(again.actions.map((a) => a.rowsAffected)).toEqual([0, 0]);
    expect((await auditRows()).map((row) => row.action)).toEqual(['fix --release-expired (requeue)', 'fix --release-expired (fail exhausted)']);
  });

  it('skips and reports a row a worker holds locked, without waiting for it', async () => {
    await loadIncident(testDb.client);
    const { withAttemptsLeft } = await incidentExpired(testDb.client);
    const held = withAttemptsLeft[0]!;
    const worker = await testDb.connect();
    await worker.query('BEGIN');
    await worker.query('SELECT id FROM jobs WHERE id = $1 FOR UPDATE', [held]);
    try {
      const before = await snapshot(testDb.client);
      const started = Date.now();
      const dry = await fix({ releaseExpired: true, dryRun: true });
      const result = await fix({ releaseExpired: true });
      // lock_timeout is 3 s: well under it means nothing waited for the lock.
      expect(Date.now() - started).toBeLessThan(1500);
      for (const outcome of [dry, result]) {
        expect(action(outcome, 'release-expired')).toMatchObject({ rowsAffected: 15, skippedLocked: [held] });
        expect(action(outcome, 'release-expired').ids).toEqual(withAttemptsLeft.slice(1));
      }
      expect(result.recommendations.join('\n')).toMatch(/1 row\(s\) were held locked by workers/);
      const after = await snapshot(testDb.client);
      expect(byId(after.jobs).get(held)).toEqual(byId(before.jobs).get(held));
    } finally {
      await worker.query('ROLLBACK');
    }
    const retry = await fix({ releaseExpired: true });
    expect(action(retry, 'release-expired')).toMatchObject({ rowsAffected: 1, ids: [held], skippedLocked: [] });
  });
});

describe('fix --premature', () => {
  it('requeues burned exports of completed runs, defers those of running runs, cancels those of dead runs; nothing else', async () => {
    await loadPrematureScenario(testDb.client);
    const before = await snapshot(testDb.client);
    const result = await fix({ premature: true });
    expect(result.actions.map((a) => a.action)).toEqual(['requeue-premature', 'defer-premature', 'cancel-premature']);
    expect(action(result, 'requeue-premature')).toMatchObject({ ids: PREMATURE_EXPECTED.requeue, rowsAffected: 2 });
    expect(action(result, 'defer-premature')).toMatchObject({ ids: PREMATURE_EXPECTED.defer, rowsAffected: 2, details: { deferSeconds: 60 } });
    expect(action(result, 'cancel-premature')).toMatchObject({ ids: PREMATURE_EXPECTED.cancel, rowsAffected: 2 });

    const after = await snapshot(testDb.client);
    const changed = Object.values(PREMATURE_EXPECTED).flat();
    expect(except(after.jobs, changed)).toEqual(except(before.jobs, changed));
    expect(after.runs).toEqual(before.runs);
    const [was, now] = [byId(before.jobs), byId(after.jobs)];

    for (const id of PREMATURE_EXPECTED.requeue) {
      expect(now.get(id)).toMatchObject({ status: 'QUEUED', attempts: 0, last_error: null, lease_expires_at: null, locked_by: null });
      expect(Math.abs(Date.parse(now.get(id)!.scheduled_at as string) - Date.now())).toBeLessThan(60_000);
    }
    expect(changedKeys(was.get(job(1))!, now.get(job(1))!)).toEqual(['attempts', 'last_error', 'scheduled_at', 'status', 'updated_at']);
    expect(changedKeys(was.get(job(3))!, now.get(job(3))!)).toEqual(['attempts', 'last_error', 'scheduled_at', 'updated_at']);

    for (const id of PREMATURE_EXPECTED.defer) {
      expect(changedKeys(was.get(id)!, now.get(id)!)).toEqual(['scheduled_at', 'updated_at']);
      const deferredBy = Date.parse(now.get(id)!.scheduled_at as string) - Date.parse(now.get(id)!.updated_at as string);
      expect(deferredBy).toBe(60_000);
    }
    // Deferring does not give attempts back: that is for exports whose run has completed.
    expect(now.get(job(7))).toMatchObject({ attempts: 1, last_error: was.get(job(7))!.last_error });

    expect(now.get(job(8))).toMatchObject({ status: 'CANCELLED', last_error: `queue-doctor: run ${run(3)} is FAILED; export cancelled by fix --premature` });
    expect(changedKeys(was.get(job(8))!, now.get(job(8))!)).toEqual(['last_error', 'status', 'updated_at']);
    expect(now.get(job(9))).toMatchObject({ status: 'CANCELLED', locked_by: null, lease_expires_at: null, last_error: `queue-doctor: run ${run(4)} is CANCELLED; export cancelled by fix --premature` });

    const again = await fix({ premature: true });
    expect(again.actions.map((a) => a.rowsAffected)).toEqual([0, 0, 0]);
  });

  it('honours the failed-within window', async () => {
    await loadPrematureScenario(testDb.client);
    const narrow = await fix({ premature: true, failedWithinSeconds: 60, dryRun: true });
    expect(action(narrow, 'requeue-premature').ids).toEqual([job(3)]);
    const wide = await fix({ premature: true, failedWithinSeconds: 7 * 24 * 3600, dryRun: true });
    expect(action(wide, 'requeue-premature').ids).toEqual([job(1), job(2), job(3)]);
  });
});

describe('fix --all', () => {
  it('on the incident: releases leases, defers the premature export, reprioritizes, and recommends migrate up', async () => {
    await loadIncident(testDb.client);
    const { withAttemptsLeft, exhausted } = await incidentExpired(testDb.client);
    const before = await snapshot(testDb.client);
    const dry = await fix({ all: true, dryRun: true });
    expect(await snapshot(testDb.client)).toEqual(before);
    const result = await fix({ all: true });
    for (const outcome of [dry, result]) {
      expect(outcome.actions.map((a) => [a.action, a.rowsAffected])).toEqual([
        ['release-expired', 16],
        ['fail-exhausted', 24],
        ['requeue-premature', 0],
        ['defer-premature', 1],
        ['cancel-premature', 0],
        ['reprioritize', 3],
      ]);
      expect(action(outcome, 'release-expired').ids).toEqual(withAttemptsLeft);
      expect(action(outcome, 'fail-exhausted').ids).toEqual(exhausted);
      expect(action(outcome, 'defer-premature').ids).toEqual([EXPORT_3]);
      expect(action(outcome, 'reprioritize').ids).toEqual([EXPORT_1, EXPORT_2, EXPORT_3]);
      expect(outcome.recommendations[0]).toMatch(/^queue-doctor migrate up\b.*legacy/);
      expect(outcome.recommendations.join('\n')).toMatch(/create export jobs only once their run is COMPLETED/);
    }
    const changed = [...withAttemptsLeft, ...exhausted, EXPORT_1, EXPORT_2, EXPORT_3];
    const after = await snapshot(testDb.client);
    expect(except(after.jobs, changed)).toEqual(except(before.jobs, changed));
    expect(after.runs).toEqual(before.runs);
    expect((await auditRows()).map((row) => row.action)).toEqual([
      'fix --release-expired (requeue)',
      'fix --release-expired (fail exhausted)',
      'fix --premature (defer)',
      'fix --reprioritize 50',
    ]);
    const again = await fix({ all: true });
    expect(again.actions.every((a) => a.rowsAffected === 0)).toBe(true);
  });

  it('uses an explicit --reprioritize N with --all', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ all: true, reprioritize: 20, dryRun: true });
    expect(action(result, 'reprioritize')).toMatchObject({ details: { priority: 20 }, rowsAffected: 3 });
  });
});

describe('fix --install-claim', () => {
  it('runs the migration after the data transaction committed, as its own step', async () => {
    await loadIncident(testDb.client);
    const seen: { dryRun: boolean; auditRowsAtInstall: number }[] = [];
    const install = async (_db: Database, _map: SchemaMap, options: { dryRun: boolean }) => {
      // A separate session sees the data repairs: they were committed before the migration ran.
      seen.push({ dryRun: options.dryRun, auditRowsAtInstall: (await auditRows()).length });
      return { dryRun: options.dryRun, applied: [], alreadyApplied: [{ version: 2, name: 'balanced claim' }], pending: [] };
    };
    const result = await runFix(db, DEFAULT_SCHEMA_MAP, { dryRun: false, commandLine: COMMAND, reprioritize: 50, installClaim: true }, install);
    expect(result.actions.map((a) => a.action)).toEqual(['reprioritize', 'install-claim']);
    expect(seen).toEqual([{ dryRun: false, auditRowsAtInstall: 1 }]);
    expect(action(result, 'install-claim')).toMatchObject({ rowsAffected: 0, auditId: null, details: { migration: { alreadyApplied: [{ version: 2, name: 'balanced claim' }] } } });
    expect(String(action(result, 'install-claim').details.separateStep)).toMatch(/CREATE INDEX CONCURRENTLY/);
    // No migrate-up recommendation when the migration was part of the run.
    expect(result.recommendations.join('\n')).not.toMatch(/migrate up/);

    const dry = await runFix(db, DEFAULT_SCHEMA_MAP, { dryRun: true, commandLine: COMMAND, installClaim: true }, install);
    expect(dry.actions.map((a) => a.action)).toEqual(['install-claim']);
    expect(seen[1]).toEqual({ dryRun: true, auditRowsAtInstall: 1 });
  });

  it('does not run the migration when the data repairs fail', async () => {
    let called = false;
    const install = async () => {
      called = true;
      return { dryRun: false, applied: [], alreadyApplied: [], pending: [] };
    };
    await testDb.client.query('DROP TABLE jobs CASCADE');
    await expect(runFix(db, DEFAULT_SCHEMA_MAP, { dryRun: false, commandLine: COMMAND, releaseExpired: true, installClaim: true }, install)).rejects.toMatchObject({ kind: 'schema' });
    expect(called).toBe(false);
  });
});

describe('fix --install-claim failing after the data repairs committed', () => {
  it('says that the data repairs stay applied, naming their audit entries', async () => {
    await loadIncident(testDb.client);
    const install = async () => {
      throw new QueueDoctorError('timeout', 'a lock could not be taken within --lock-timeout');
    };
    const failure = runFix(db, DEFAULT_SCHEMA_MAP, { dryRun: false, commandLine: COMMAND, reprioritize: 50, installClaim: true }, install);
    await expect(failure).rejects.toMatchObject({ kind: 'timeout', message: expect.stringMatching(/installing the claim function failed: .*data repairs before it were committed \(audit entries \d+\)/) });
    expect((await auditRows()).map((row) => row.action)).toEqual(['fix --reprioritize 50']);
  });
});

describe('fix --install-claim with the real migrations', () => {
  it('installs the balanced claim function after the data repairs; a dry run installs nothing', async () => {
    await loadIncident(testDb.client);
    const variant = async () => {
      const model = await loadQueueModel(db, DEFAULT_SCHEMA_MAP);
      return (await classifyClaimFunction(db, model)).variant;
    };
    const dry = await fix({ installClaim: true, releaseExpired: true, dryRun: true });
    expect(action(dry, 'install-claim').details.migration).toMatchObject({ dryRun: true, applied: expect.arrayContaining([expect.objectContaining({ name: expect.any(String) })]) });
    expect(await variant()).toBe('legacy');
    expect(await auditRows()).toEqual([]);

    const result = await fix({ installClaim: true, releaseExpired: true });
    expect(result.actions.map((a) => a.action)).toEqual(['release-expired', 'fail-exhausted', 'install-claim']);
    expect(action(result, 'release-expired').rowsAffected).toBe(16);
    expect(await variant()).toBe('balanced');
    expect(result.recommendations.join('\n')).not.toMatch(/migrate up/);

    const again = await fix({ all: true, installClaim: true });
    expect((action(again, 'install-claim').details.migration as { applied: unknown[] }).applied).toEqual([]);
    const balancedAll = await fix({ all: true });
    expect(balancedAll.recommendations.join('\n')).not.toMatch(/migrate up/);
  });
});

describe('fix on a remapped schema', () => {
  it('follows every name and status literal of the map', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(REMAPPED_DATA);
    const jobsTable = 'queue."background tasks"';
    const before = await snapshot(testDb.client, jobsTable, 'queue.pipeline_runs');
    const result = await fix({ all: true }, REMAPPED_MAP);
    expect(result.actions.map((a) => [a.action, a.ids])).toEqual([
      ['release-expired', [remapped(2)]],
      ['fail-exhausted', [remapped(3)]],
      ['requeue-premature', [remapped(4)]],
      ['defer-premature', [remapped(5)]],
      ['cancel-premature', [remapped(6)]],
      ['reprioritize', [remapped(1), remapped(4)]],
    ]);
    const after = await snapshot(testDb.client, jobsTable, 'queue.pipeline_runs');
    const changed = [1, 2, 3, 4, 5, 6].map(remapped);
    expect(except(after.jobs, changed, 'task_id')).toEqual(except(before.jobs, changed, 'task_id'));
    expect(after.runs).toEqual(before.runs);
    const rows = byId(after.jobs, 'task_id');
    expect(rows.get(remapped(1))).toMatchObject({ state: "pen'ding", rank: 50 });
    expect(rows.get(remapped(2))).toMatchObject({ state: "pen'ding", worker: null, lease_until: null, tries: 1 });
    expect(rows.get(remapped(3))).toMatchObject({ state: 'dead', error: 'queue-doctor: lease expired on the last allowed attempt (3 of 3); released by fix --release-expired' });
    expect(rows.get(remapped(4))).toMatchObject({ state: "pen'ding", tries: 0, error: null, rank: 50 });
    expect(rows.get(remapped(6))).toMatchObject({ state: 'aborted', error: 'queue-doctor: run cccccccc-0000-4000-8000-000000000003 is dead; export cancelled by fix --premature' });
    expect((await auditRows())[0]).toMatchObject({ action: 'fix --release-expired (requeue)' });
    const audit = await testDb.client.query(`SELECT DISTINCT target_table FROM queue_doctor.audit_log`);
    expect(audit.rows).toEqual([{ target_table: '"queue"."background tasks"' }]);
  });
});

describe('fix and locks', () => {
  it('gives up within lock_timeout when a table is locked, changing nothing', async () => {
    await loadIncident(testDb.client);
    const before = await snapshot(testDb.client);
    const holder = await testDb.connect();
    await holder.query('BEGIN');
    await holder.query('LOCK TABLE report_runs IN ACCESS EXCLUSIVE MODE');
    const { openPostgres } = await import('../../src/db/postgres.js');
    const impatient = await openPostgres({ connectionString: testDb.url, label: 'test' }, { statementTimeoutMs: 30_000, lockTimeoutMs: 300, connectTimeoutMs: 5_000 });
    try {
      await expect(runFix(impatient, DEFAULT_SCHEMA_MAP, { dryRun: false, commandLine: COMMAND, releaseExpired: true, premature: true })).rejects.toMatchObject({
        kind: 'timeout',
        message: expect.stringMatching(/locked.*pid \d+.*AccessExclusiveLock/),
      });
      await holder.query('ROLLBACK');
      expect(await snapshot(testDb.client)).toEqual(before);
      expect(await auditRows()).toEqual([]);
    } finally {
      await holder.query('ROLLBACK').catch(() => undefined);
      await impatient.close();
    }
  });
});
