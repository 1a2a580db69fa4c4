import type pg from 'pg';
import { parseSchemaMap } from '../../src/schemaMap.js';
import { snapshotTable } from '../helpers/database.js';

/** Shared fixtures of the repair tests (not a test file itself). */

export const EXPORT_1 = 'e1e1e1e1-0000-4000-8000-000000000001';
export const EXPORT_2 = 'e1e1e1e1-0000-4000-8000-000000000002';
export const EXPORT_3 = 'e1e1e1e1-0000-4000-8000-000000000003';
export const NO_REPORT = 'No final report content available for export';

export const run = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
export const job = (n: number) => `11111111-0000-4000-8000-${String(n).padStart(12, '0')}`;

export interface Snapshot {
  jobs: string[];
  runs: string[];
}

export async function snapshot(client: pg.Client, jobs = 'jobs', runs = 'report_runs'): Promise<Snapshot> {
  return { jobs: await snapshotTable(client, jobs), runs: await snapshotTable(client, runs) };
}

/** The snapshot rows of the rows NOT in `ids` (the id read from `idKey` of each row). */
export function except(rows: string[], ids: Iterable<string>, idKey = 'id'): string[] {
  const skip = new Set(ids);
  return rows.filter((row) => !skip.has(String((JSON.parse(row) as Record<string, unknown>)[idKey])));
}

/** Rows of a snapshot by id, parsed. */
export function byId(rows: string[], idKey = 'id'): Map<string, Record<string, unknown>> {
  return new Map(rows.map((row) => JSON.parse(row) as Record<string, unknown>).map((row) => [String(row[idKey]), row]));
}

/** Keys whose values differ between two versions of one row. */
export function changedKeys(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  return Object.keys({ ...before, ...after })
    .filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]))
    .sort();
}

/** The 40 RUNNING section jobs of the incident split by whether they have attempts left. */
export async function incidentExpired(client: pg.Client): Promise<{ withAttemptsLeft: string[]; exhausted: string[] }> {
  const result = await client.query<{ id: string; left: boolean }>(
    `SELECT id::text, attempts < max_attempts AS left FROM jobs WHERE status = 'RUNNING' AND lease_expires_at < now() ORDER BY id::text COLLATE "C"`,
  );
  return {
    withAttemptsLeft: result.rows.filter((row) => row.left).map((row) => row.id),
    exhausted: result.rows.filter((row) => !row.left).map((row) => row.id),
  };
}

export async function insertRun(client: pg.Client, n: number, status: string, finalReport: string | null): Promise<void> {
  await client.query('INSERT INTO report_runs (id, status, final_report_json) VALUES ($1, $2, $3::jsonb)', [run(n), status, finalReport]);
}

export interface JobSpec {
  type?: string;
  status: string;
  runNumber: number;
  attempts?: number;
  lastError?: string | null;
  updatedSecondsAgo?: number;
  /** seconds from now; negative = due since */
  scheduledIn?: number;
  /** seconds from now for a lease (RUNNING jobs) */
  leaseIn?: number;
  priority?: number;
}

export async function insertJob(client: pg.Client, n: number, spec: JobSpec): Promise<void> {
  const leased = spec.leaseIn !== undefined;
  await client.query(
    `INSERT INTO jobs (id, type, status, priority, run_id, payload, attempts, last_error, scheduled_at, locked_by, locked_at, lease_expires_at, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5::uuid, jsonb_build_object('runId', $5::uuid), $6, $7,
             now() + make_interval(secs => $8), $9, CASE WHEN $10 THEN now() - interval '10 minutes' END,
             CASE WHEN $10 THEN now() + make_interval(secs => $11) END,
             now() - interval '1 hour', now() - make_interval(secs => $12))`,
    [
      job(n),
      spec.type ?? 'EXPORT',
      spec.status,
      spec.priority ?? 100,
      run(spec.runNumber),
      spec.attempts ?? 0,
      spec.lastError ?? null,
      spec.scheduledIn ?? -30,
      leased ? 'worker-1' : null,
      leased,
      spec.leaseIn ?? 0,
      spec.updatedSecondsAgo ?? 120,
    ],
  );
}

/**
 * Every case --premature distinguishes. R1 completed with a report, R2 running, R3 failed,
 * R4 cancelled, R5 completed without a report, R6 queued.
 */
export async function loadPrematureScenario(client: pg.Client): Promise<void> {
  await insertRun(client, 1, 'COMPLETED', '{"body": "report"}');
  await insertRun(client, 2, 'RUNNING', null);
  await insertRun(client, 3, 'FAILED', null);
  await insertRun(client, 4, 'CANCELLED', null);
  await insertRun(client, 5, 'COMPLETED', null);
  await insertRun(client, 6, 'QUEUED', null);
  await insertJob(client, 1, { status: 'FAILED', runNumber: 1, attempts: 3, lastError: `Error: ${NO_REPORT}`, updatedSecondsAgo: 600 });
  await insertJob(client, 2, { status: 'FAILED', runNumber: 1, attempts: 3, lastError: NO_REPORT, updatedSecondsAgo: 3 * 24 * 3600 });
  await insertJob(client, 3, { status: 'QUEUED', runNumber: 1, attempts: 1, lastError: NO_REPORT });
  await insertJob(client, 4, { status: 'FAILED', runNumber: 1, attempts: 3, lastError: 'disk full', updatedSecondsAgo: 600 });
  await insertJob(client, 5, { status: 'QUEUED', runNumber: 2 });
  await insertJob(client, 6, { status: 'QUEUED', runNumber: 2, scheduledIn: 600 });
  await insertJob(client, 7, { status: 'QUEUED', runNumber: 6, attempts: 1, lastError: NO_REPORT });
  await insertJob(client, 8, { status: 'QUEUED', runNumber: 3 });
  await insertJob(client, 9, { status: 'RUNNING', runNumber: 4, attempts: 1, leaseIn: -60 });
  await insertJob(client, 10, { status: 'RUNNING', runNumber: 3, attempts: 1, leaseIn: 300 });
  await insertJob(client, 11, { type: 'SECTION_RUN', status: 'QUEUED', runNumber: 3 });
  await insertJob(client, 12, { status: 'QUEUED', runNumber: 5 });
  await insertJob(client, 13, { status: 'FAILED', runNumber: 5, attempts: 3, lastError: NO_REPORT, updatedSecondsAgo: 600 });
  await insertJob(client, 14, { status: 'RUNNING', runNumber: 1, attempts: 1, lastError: NO_REPORT, leaseIn: 300 });
  await insertJob(client, 15, { status: 'COMPLETED', runNumber: 3 });
}

export const PREMATURE_EXPECTED = {
  requeue: [job(1), job(3)],
  defer: [job(5), job(7)],
  cancel: [job(8), job(9)],
};

export const REMAPPED_DDL = `
  CREATE SCHEMA queue;
  CREATE TABLE queue.pipeline_runs (run_key uuid PRIMARY KEY, state text NOT NULL, output jsonb);
  CREATE TABLE queue."background tasks" (
    task_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), kind text NOT NULL, state text NOT NULL DEFAULT 'pending',
    rank integer NOT NULL DEFAULT 100, body jsonb NOT NULL DEFAULT '{}', tries integer NOT NULL DEFAULT 0,
    max_tries integer NOT NULL DEFAULT 3, run_at timestamptz NOT NULL DEFAULT now(), worker text,
    claimed_at timestamptz, lease_until timestamptz, error text,
    inserted_at timestamptz NOT NULL DEFAULT now(), touched_at timestamptz NOT NULL DEFAULT now());`;

/** Other names everywhere; a status literal with a quote in it proves values are bound, not spliced. */
export const REMAPPED_MAP = parseSchemaMap({
  schema: 'queue',
  jobs: {
    table: 'background tasks',
    columns: {
      id: 'task_id', type: 'kind', status: 'state', priority: 'rank', payload: 'body', attempts: 'tries',
      maxAttempts: 'max_tries', scheduledAt: 'run_at', lockedBy: 'worker', lockedAt: 'claimed_at',
      leaseExpiresAt: 'lease_until', lastError: 'error', createdAt: 'inserted_at', updatedAt: 'touched_at',
    },
    runIdPayloadKey: 'pipelineRun',
  },
  runs: { table: 'pipeline_runs', columns: { id: 'run_key', status: 'state', finalReport: 'output' } },
  statuses: { queued: "pen'ding", running: 'active', completed: 'done', failed: 'dead', cancelled: 'aborted' },
  types: { export: 'render_pdf' },
});

export const REMAPPED_DATA = `
  INSERT INTO queue.pipeline_runs (run_key, state, output) VALUES
    ('cccccccc-0000-4000-8000-000000000001', 'done', '{"body": "report"}'),
    ('cccccccc-0000-4000-8000-000000000002', 'active', NULL),
    ('cccccccc-0000-4000-8000-000000000003', 'dead', NULL);
  INSERT INTO queue."background tasks" (task_id, kind, state, rank, body, tries, max_tries, run_at, worker, claimed_at, lease_until, error, touched_at) VALUES
    -- reprioritize
    ('aaaaaaaa-0000-4000-8000-000000000001', 'render_pdf', 'pen''ding', 100, '{"pipelineRun": "cccccccc-0000-4000-8000-000000000001"}', 0, 3, now() - interval '1 minute', NULL, NULL, NULL, NULL, now() - interval '1 minute'),
    -- release-expired: attempts left / exhausted
    ('aaaaaaaa-0000-4000-8000-000000000002', 'section', 'active', 100, '{}', 1, 3, now() - interval '5 minutes', 'w1', now() - interval '2 minutes', now() - interval '1 minute', NULL, now() - interval '2 minutes'),
    ('aaaaaaaa-0000-4000-8000-000000000003', 'section', 'active', 100, '{}', 3, 3, now() - interval '5 minutes', 'w1', now() - interval '2 minutes', now() - interval '1 minute', NULL, now() - interval '2 minutes'),
    -- premature: requeue (burned, run done), defer (run active), cancel (run dead)
    ('aaaaaaaa-0000-4000-8000-000000000004', 'render_pdf', 'dead', 100, '{"pipelineRun": "cccccccc-0000-4000-8000-000000000001"}', 3, 3, now() - interval '1 hour', NULL, NULL, NULL, 'No final report content available for export', now() - interval '10 minutes'),
    ('aaaaaaaa-0000-4000-8000-000000000005', 'render_pdf', 'pen''ding', 10, '{"pipelineRun": "cccccccc-0000-4000-8000-000000000002"}', 0, 3, now() - interval '1 minute', NULL, NULL, NULL, NULL, now() - interval '1 minute'),
    ('aaaaaaaa-0000-4000-8000-000000000006', 'render_pdf', 'pen''ding', 10, '{"pipelineRun": "cccccccc-0000-4000-8000-000000000003"}', 0, 3, now() - interval '1 minute', NULL, NULL, NULL, NULL, now() - interval '1 minute'),
    -- the reference literals mean nothing here: untouched
    ('aaaaaaaa-0000-4000-8000-000000000007', 'EXPORT', 'QUEUED', 100, '{"pipelineRun": "cccccccc-0000-4000-8000-000000000001"}', 0, 3, now() - interval '1 minute', NULL, NULL, NULL, NULL, now() - interval '1 minute'),
    ('aaaaaaaa-0000-4000-8000-000000000008', 'section', 'RUNNING', 100, '{}', 1, 3, now() - interval '5 minutes', 'w1', now() - interval '2 minutes', now() - interval '1 minute', NULL, now() - interval '2 minutes');`;

export const remapped = (n: number) => `aaaaaaaa-0000-4000-8000-${String(n).padStart(12, '0')}`;
