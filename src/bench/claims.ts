import type pg from 'pg';
import { installBalanced, installQueueDoctorIndexesOnly, installReferenceQueue, quietClient, withClient } from './scratch.js';

/**
 * The claim variants, each on its own copy of the reference queue:
 * - balanced: queue-doctor's function, installed by `migrate up` (its indexes included);
 * - legacy: the app's two-phase function, on the two partial indexes its two phases need;
 * - legacy-qd-indexes: the same function on queue-doctor's four indexes, which separates the cost
 *   of the balanced function from the cost of the extra index it needs;
 * - minimal: one UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED), the floor of what a claim
 *   costs on this server;
 * - cte: a claim in the shape graphile-worker's get_job uses (a locking CTE feeding an
 *   UPDATE … FROM) over a partial index that covers exactly the claimable rows.
 */
export const CLAIM_VARIANTS = ['balanced', 'legacy', 'legacy-qd-indexes', 'minimal', 'cte'] as const;
export type ClaimVariant = (typeof CLAIM_VARIANTS)[number];

export async function prepareVariant(url: string, variant: ClaimVariant): Promise<void> {
  await installReferenceQueue(url);
  switch (variant) {
    case 'balanced':
      await installBalanced(url);
      return;
    case 'legacy-qd-indexes':
      await installQueueDoctorIndexesOnly(url);
      return;
    case 'legacy':
      await withClient(url, async (client) => {
        await client.query(`CREATE INDEX jobs_queued_ready ON jobs (priority, scheduled_at) WHERE status = 'QUEUED'`);
        await client.query(`CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'RUNNING'`);
      });
      return;
    case 'minimal':
      await withClient(url, (client) => client.query(`CREATE INDEX jobs_queued_ready ON jobs (priority, scheduled_at) WHERE status = 'QUEUED'`));
      return;
    case 'cte':
      // The predicate is exactly the claimable set, and id rides along, so the search for the
      // next job never leaves the index until it locks the row.
      await withClient(url, (client) =>
        client.query(`CREATE INDEX jobs_claimable ON jobs (priority, scheduled_at) INCLUDE (id) WHERE status = 'QUEUED' AND attempts < max_attempts`),
      );
      return;
  }
}

const FUNCTION_CLAIM = 'SELECT id FROM claim_next_job($1, 300)';

const CLAIM_SQL: Record<ClaimVariant, string> = {
  balanced: FUNCTION_CLAIM,
  legacy: FUNCTION_CLAIM,
  'legacy-qd-indexes': FUNCTION_CLAIM,
  minimal: `UPDATE jobs
               SET status = 'RUNNING', locked_by = $1, locked_at = now(), lease_expires_at = now() + interval '300 seconds',
                   attempts = attempts + 1, updated_at = now()
             WHERE id = (SELECT id FROM jobs
                          WHERE status = 'QUEUED' AND scheduled_at <= now()
                          ORDER BY priority, scheduled_at
                          LIMIT 1
                          FOR UPDATE SKIP LOCKED)
         RETURNING id`,
  cte: `WITH next_job AS (
          SELECT id FROM jobs
           WHERE status = 'QUEUED' AND attempts < max_attempts AND scheduled_at <= now()
           ORDER BY priority, scheduled_at
           LIMIT 1
           FOR UPDATE SKIP LOCKED)
        UPDATE jobs AS j
           SET status = 'RUNNING', locked_by = $1, locked_at = now(), lease_expires_at = now() + interval '300 seconds',
               attempts = j.attempts + 1, updated_at = now()
          FROM next_job
         WHERE j.id = next_job.id
     RETURNING j.id`,
};

const COMPLETE_SQL = `UPDATE jobs SET status = 'COMPLETED', locked_by = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1`;

/** Cycles each connection runs before the clock starts: connection set-up and plan caching. */
const WARM_UP_CYCLES = 20;

export interface ThroughputOptions {
  workers: number;
  seconds: number;
}

export interface RoundResult {
  cyclesPerSecond: number;
  /**
   * Shared-buffer pages of the jobs table and its indexes touched per cycle (hits and reads): the
   * work a cycle does, which unlike the timings does not move with the machine's noise.
   */
  buffersPerCycle: number | null;
}

/**
 * Claim + complete cycles per second: `workers` connections, each claiming one job and marking it
 * COMPLETED, as fast as they can, for `seconds`. A worker that finds nothing to claim aborts the
 * run: the figure would measure the pre-fill, not the claim.
 */
export async function runRound(url: string, variant: ClaimVariant, options: ThroughputOptions): Promise<RoundResult> {
  const before = await withClient(url, jobsBufferAccesses);
  const clients = await Promise.all(
    Array.from({ length: options.workers }, async () => {
      const client = quietClient(url);
      await client.connect();
      return client;
    }),
  );
  let cycles = 0;
  let rate: number;
  try {
    const cycle = async (client: pg.Client, worker: string) => {
      const claimed = await client.query<{ id: string }>(CLAIM_SQL[variant], [worker]);
      const id = claimed.rows[0]?.id;
      if (!id) throw new Error(`the queue ran dry during a ${variant} round: raise the pre-fill`);
      await client.query(COMPLETE_SQL, [id]);
      cycles += 1;
    };
    await Promise.all(
      clients.map(async (client, index) => {
        for (let i = 0; i < WARM_UP_CYCLES; i++) await cycle(client, `bench-${index}`);
      }),
    );
    const warmUp = cycles;
    const started = performance.now();
    const deadline = started + options.seconds * 1000;
    await Promise.all(
      clients.map(async (client, index) => {
        while (performance.now() < deadline) await cycle(client, `bench-${index}`);
      }),
    );
    rate = (cycles - warmUp) / ((performance.now() - started) / 1000);
    // Each session hands its statistics over before it reports this call done (PostgreSQL 15+).
    await Promise.all(clients.map((client) => client.query('SELECT pg_stat_force_next_flush()').catch(() => undefined)));
  } finally {
    await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
  }
  const after = await withClient(url, jobsBufferAccesses);
  return { cyclesPerSecond: rate, buffersPerCycle: before === null || after === null ? null : (after - before) / cycles };
}

/** Pages of jobs and its indexes touched so far; null where the statistics cannot be read. */
async function jobsBufferAccesses(client: pg.Client): Promise<number | null> {
  try {
    await client.query('SELECT pg_stat_force_next_flush()');
    const result = await client.query<{ blocks: string }>(
      `SELECT (SELECT heap_blks_hit + heap_blks_read FROM pg_statio_all_tables WHERE relid = 'jobs'::regclass)
            + (SELECT coalesce(sum(idx_blks_hit + idx_blks_read), 0) FROM pg_statio_all_indexes WHERE relid = 'jobs'::regclass) AS blocks`,
    );
    return Number(result.rows[0]!.blocks);
  } catch {
    return null;
  }
}

/** Cycles a round can run at most, with room to spare: the pre-fill must outlast the round. */
export function workPerRound(seconds: number, workers: number): number {
  return Math.max(20_000, seconds * 8_000) + workers * WARM_UP_CYCLES;
}
