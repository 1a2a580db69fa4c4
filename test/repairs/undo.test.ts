import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, loadIncident, loadReferenceSchema, openQueueDoctorDatabase, readSql, resetSchema, type TestDatabase } from '../helpers/database.js';
import { runFix, type FixOptions, type FixResult } from '../../src/repairs/fix.js';
import { undoAuditEntry, parseAuditId, type UndoOptions } from '../../src/repairs/undo.js';
import { listHistory } from '../../src/repairs/history.js';
import { DEFAULT_SCHEMA_MAP, type SchemaMap } from '../../src/schemaMap.js';
import type { Database } from '../../src/db/database.js';
import { QueueDoctorError } from '../../src/errors.js';
import { byId, except, EXPORT_1, EXPORT_2, EXPORT_3, loadPrematureScenario, REMAPPED_DATA, REMAPPED_DDL, REMAPPED_MAP, snapshot } from './scenario.js';

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

function fix(options: Partial<FixOptions>, map: SchemaMap = DEFAULT_SCHEMA_MAP): Promise<FixResult> {
  return runFix(db, map, { dryRun: false, commandLine: 'queue-doctor fix (test)', ...options });
}

function undo(id: number | string, options: Partial<UndoOptions> = {}, map: SchemaMap = DEFAULT_SCHEMA_MAP, on: Database = db) {
  return undoAuditEntry(on, map, String(id), { dryRun: false, commandLine: `queue-doctor undo ${id}`, ...options });
}

const auditIds = (result: FixResult) => result.actions.map((a) => a.auditId).filter((id): id is number => id !== null);

async function auditLog() {
  return (await testDb.client.query('SELECT id::int AS id, action, affected_ids, undone_by::int AS undone_by FROM queue_doctor.audit_log ORDER BY id')).rows;
}

describe('undo', () => {
  it('undoing every entry of fix --all, newest first, restores the incident exactly', async () => {
    await loadIncident(testDb.client);
    const original = await snapshot(testDb.client);
    const result = await fix({ all: true });
    const ids = auditIds(result);
    expect(ids).toHaveLength(4);
    for (const id of [...ids].reverse()) {
      const outcome = await undo(id);
      expect(outcome).toMatchObject({ auditId: id, changedSince: [], skippedLocked: [], deleted: [] });
      expect(outcome.restored).toEqual(result.actions.find((a) => a.auditId === id)!.ids);
      expect(outcome.undoAuditId).toEqual(expect.any(Number));
    }
    expect(await snapshot(testDb.client)).toEqual(original);
    const log = await auditLog();
    expect(log.map((row) => row.action)).toEqual([
      'fix --release-expired (requeue)',
      'fix --release-expired (fail exhausted)',
      'fix --premature (defer)',
      'fix --reprioritize 50',
      `undo ${ids[3]}`,
      `undo ${ids[2]}`,
      `undo ${ids[1]}`,
      `undo ${ids[0]}`,
    ]);
    for (const [index, id] of ids.entries()) expect(log.find((row) => row.id === id)!.undone_by).toBe(log[7 - index]!.id);
  });

  it('restores the premature repairs exactly', async () => {
    await loadPrematureScenario(testDb.client);
    const original = await snapshot(testDb.client);
    const result = await fix({ premature: true });
    for (const id of auditIds(result).reverse()) await undo(id);
    expect(await snapshot(testDb.client)).toEqual(original);
  });

  it('refuses to undo an entry whose rows a later queue-doctor change moved on, naming that entry', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ premature: true, reprioritize: 50 });
    const defer = result.actions.find((a) => a.action === 'defer-premature')!.auditId!;
    const reprioritize = result.actions.find((a) => a.action === 'reprioritize')!.auditId!;
    const before = await snapshot(testDb.client);
    await expect(undo(defer)).rejects.toMatchObject({ kind: 'refused', message: expect.stringContaining(`entry ${reprioritize}`), hint: expect.stringContaining(`queue-doctor undo ${reprioritize}`) });
    expect(await snapshot(testDb.client)).toEqual(before);
    await undo(reprioritize);
    await expect(undo(defer)).resolves.toMatchObject({ restored: [EXPORT_3] });
  });

  it('leaves a row a worker changed since and restores the others; a column the change did not touch does not count', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ reprioritize: 50 });
    // A worker claims export 1 after the fix; someone edits only the payload of export 2.
    await testDb.client.query(`UPDATE jobs SET status = 'RUNNING', locked_by = 'w9', attempts = attempts + 1, updated_at = now() WHERE id = $1`, [EXPORT_1]);
    await testDb.client.query(`UPDATE jobs SET payload = payload || '{"note": "edited"}' WHERE id = $1`, [EXPORT_2]);
    const before = await snapshot(testDb.client);
    const outcome = await undo(result.actions[0]!.auditId!);
    expect(outcome).toMatchObject({ restored: [EXPORT_2, EXPORT_3], changedSince: [EXPORT_1], skippedLocked: [], deleted: [], columns: ['priority', 'updated_at'] });
    const after = await snapshot(testDb.client);
    expect(byId(after.jobs).get(EXPORT_1)).toEqual(byId(before.jobs).get(EXPORT_1));
    expect(byId(after.jobs).get(EXPORT_2)).toMatchObject({ priority: 100, payload: expect.objectContaining({ note: 'edited' }) });
    expect(except(after.jobs, [EXPORT_2, EXPORT_3])).toEqual(except(before.jobs, [EXPORT_2, EXPORT_3]));
    const log = await auditLog();
    expect(log.at(-1)).toMatchObject({ action: `undo ${result.actions[0]!.auditId}`, affected_ids: [EXPORT_2, EXPORT_3] });
  });

  it('skips a row a worker holds locked without waiting, and reports deleted rows', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ reprioritize: 50 });
    await testDb.client.query('DELETE FROM jobs WHERE id = $1', [EXPORT_3]);
    const worker = await testDb.connect();
    await worker.query('BEGIN');
    await worker.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [EXPORT_1]);
    try {
      const started = Date.now();
      const outcome = await undo(result.actions[0]!.auditId!);
      expect(Date.now() - started).toBeLessThan(1500);
      expect(outcome).toMatchObject({ restored: [EXPORT_2], skippedLocked: [EXPORT_1], deleted: [EXPORT_3], changedSince: [] });
    } finally {
      await worker.query('ROLLBACK');
    }
    expect((await testDb.client.query('SELECT priority FROM jobs WHERE id = $1', [EXPORT_1])).rows[0].priority).toBe(50);
  });

  it('dry run reports what it would restore and changes nothing', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ reprioritize: 50 });
    const before = await snapshot(testDb.client);
    const logBefore = await auditLog();
    const outcome = await undo(result.actions[0]!.auditId!, { dryRun: true });
    expect(outcome).toMatchObject({ dryRun: true, restored: [EXPORT_1, EXPORT_2, EXPORT_3], undoAuditId: null });
    expect(await snapshot(testDb.client)).toEqual(before);
    expect(await auditLog()).toEqual(logBefore);
  });

  it('refuses a second undo, an undo of an undo, and an entry of another table', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ reprioritize: 50 });
    const id = result.actions[0]!.auditId!;
    const first = await undo(id);
    const before = await snapshot(testDb.client);
    await expect(undo(id)).rejects.toMatchObject({ kind: 'refused', message: expect.stringContaining(`already undone by entry ${first.undoAuditId}`) });
    await expect(undo(first.undoAuditId!)).rejects.toMatchObject({ kind: 'refused', message: expect.stringContaining('itself an undo') });
    const again = await fix({ reprioritize: 50 });
    await testDb.client.query(REMAPPED_DDL);
    await expect(undo(again.actions[0]!.auditId!, {}, REMAPPED_MAP)).rejects.toMatchObject({ kind: 'refused', message: expect.stringContaining('"queue"."background tasks"') });
    expect(byId((await snapshot(testDb.client)).jobs).get(EXPORT_1)!.priority).toBe(50);
    expect(before.jobs.length).toBeGreaterThan(0);
  });

  it('rejects malformed audit ids (exit 2) and reports unknown ones as not found (exit 1)', async () => {
    for (const bad of ['abc', '0', '-1', '1.5', '1e3', '', '1; DROP TABLE jobs', "1' OR '1'='1", '99999999999999999999']) {
      expect(() => parseAuditId(bad), bad).toThrow(QueueDoctorError);
      await expect(undo(bad), bad).rejects.toMatchObject({ kind: 'usage' });
    }
    // Before queue-doctor changed anything there is no audit log at all.
    await expect(undo(1)).rejects.toMatchObject({ kind: 'not-found' });
    await loadIncident(testDb.client);
    await fix({ reprioritize: 50 });
    await expect(undo(999)).rejects.toMatchObject({ kind: 'not-found', message: 'no audit entry 999' });
    expect((await testDb.client.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n).toBe(85);
  });

  it('compares typed values, so a session in another time zone restores too', async () => {
    await loadIncident(testDb.client);
    const original = await snapshot(testDb.client);
    const result = await fix({ releaseExpired: true });
    const elsewhere = await openQueueDoctorDatabase(testDb.url);
    try {
      await elsewhere.query(`SET TimeZone = 'Asia/Kolkata'`);
      for (const id of auditIds(result).reverse()) {
        const outcome = await undo(id, {}, DEFAULT_SCHEMA_MAP, elsewhere);
        expect(outcome.changedSince).toEqual([]);
      }
    } finally {
      await elsewhere.close();
    }
    expect(await snapshot(testDb.client)).toEqual(original);
  });

  it('works on a remapped schema', async () => {
    await testDb.client.query(REMAPPED_DDL);
    await testDb.client.query(REMAPPED_DATA);
    const original = await snapshot(testDb.client, 'queue."background tasks"', 'queue.pipeline_runs');
    const result = await fix({ all: true }, REMAPPED_MAP);
    expect(await snapshot(testDb.client, 'queue."background tasks"', 'queue.pipeline_runs')).not.toEqual(original);
    for (const id of auditIds(result).reverse()) await undo(id, {}, REMAPPED_MAP);
    expect(await snapshot(testDb.client, 'queue."background tasks"', 'queue.pipeline_runs')).toEqual(original);
  });
});

describe('history', () => {
  it('is empty, not an error, before queue-doctor changed anything, and creates nothing', async () => {
    expect(await listHistory(db, { limit: 20 })).toEqual([]);
    expect((await testDb.client.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'queue_doctor'`)).rows[0].n).toBe(0);
  });

  it('lists entries newest first with rows, user, command line and undone_by; --limit caps it', async () => {
    await loadIncident(testDb.client);
    const result = await fix({ all: true });
    const reprioritize = result.actions.find((a) => a.action === 'reprioritize')!.auditId!;
    const undone = await undo(reprioritize);
    const entries = await listHistory(db, { limit: 20 });
    const user = (await testDb.client.query('SELECT current_user AS u')).rows[0].u;
    expect(entries.map((e) => [e.action, e.rows, e.undoneBy])).toEqual([
      [`undo ${reprioritize}`, 3, null],
      ['fix --reprioritize 50', 3, undone.undoAuditId],
      ['fix --premature (defer)', 1, null],
      ['fix --release-expired (fail exhausted)', 24, null],
      ['fix --release-expired (requeue)', 16, null],
    ]);
    expect(entries[0]).toMatchObject({ id: undone.undoAuditId, databaseUser: user, commandLine: `queue-doctor undo ${reprioritize}`, recordedAt: expect.any(Date) });
    expect(entries[1]!.commandLine).toBe('queue-doctor fix (test)');
    expect((await listHistory(db, { limit: 2 })).map((e) => e.id)).toEqual(entries.slice(0, 2).map((e) => e.id));
    await expect(listHistory(db, { limit: 0 })).rejects.toMatchObject({ kind: 'usage' });
  });
});

describe('fix and undo on the embedded demo engine (PGlite)', () => {
  it('runs the same code path: --all, dry run, undo newest first', async () => {
    const { openPglite } = await import('../../src/db/pglite.js');
    const lite = await openPglite('memory://', 'pglite test');
    try {
      await lite.exec([await readSql('schema.sql'), await readSql('legacy/claim_next_job.sql'), await readSql('fixtures/incident.sql')].join('\n;\n'));
      const snap = async () => (await lite.query<{ row: string }>('SELECT to_jsonb(j)::text AS row FROM jobs j ORDER BY 1')).rows.map((r) => r.row);
      const original = await snap();
      const dry = await runFix(lite, DEFAULT_SCHEMA_MAP, { all: true, dryRun: true, commandLine: 'test' });
      expect(await snap()).toEqual(original);
      const real = await runFix(lite, DEFAULT_SCHEMA_MAP, { all: true, dryRun: false, commandLine: 'test' });
      expect(real.actions.map((a) => [a.action, a.ids])).toEqual(dry.actions.map((a) => [a.action, a.ids]));
      expect(real.actions.map((a) => a.rowsAffected)).toEqual([16, 24, 0, 1, 0, 3]);
      expect(await snap()).not.toEqual(original);
      for (const id of auditIds(real).reverse()) await undoAuditEntry(lite, DEFAULT_SCHEMA_MAP, String(id), { dryRun: false, commandLine: 'test' });
      expect(await snap()).toEqual(original);
      expect((await listHistory(lite, { limit: 10 })).map((e) => e.action.split(' ')[0])).toEqual(['undo', 'undo', 'undo', 'undo', 'fix', 'fix', 'fix', 'fix']);
    } finally {
      await lite.close();
    }
  });
});
