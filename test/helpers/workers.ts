import type pg from 'pg';

/** One claim as a worker saw it, for asserting the queue's invariants afterwards. */
export interface Claim {
  id: string;
  type: string;
  poison: boolean;
  worker: string;
  attempt: number;
  /** Microseconds since the epoch, server clock. */
  claimedAt: bigint;
  leaseExpiresAt: bigint;
  crashed: boolean;
  completed: boolean;
  /** Client clock, ms since the run started: for throughput figures only. */
  atMs: number;
}

export interface WorkerOptions {
  worker: string;
  /** Job types this worker claims (p_types of the balanced function); null for all. */
  types: string[] | null;
  leaseSeconds: number;
  crashRate: number;
  deadlineMs: number;
  started: number;
  claims: Claim[];
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function activeJobs(client: pg.Client): Promise<number> {
  const result = await client.query(`SELECT count(*)::int AS n FROM jobs WHERE status IN ('QUEUED', 'RUNNING')`);
  return result.rows[0].n;
}

/**
 * A worker on its own connection: claim through the balanced claim_next_job, then complete (only
 * the claim it still holds) or "crash" (never complete, so the lease expires). Jobs whose payload
 * has a "poison" key crash every time. Stops when no job is QUEUED or RUNNING, or at the deadline.
 */
export async function runWorker(client: pg.Client, options: WorkerOptions): Promise<void> {
  const { worker, types, leaseSeconds, crashRate, deadlineMs, started, claims } = options;
  while (Date.now() - started < deadlineMs) {
    const result = await client.query(
      `SELECT id, type, attempts, payload ? 'poison' AS poison,
              (extract(epoch FROM locked_at) * 1000000)::bigint::text AS claimed_at,
              (extract(epoch FROM lease_expires_at) * 1000000)::bigint::text AS lease_expires_at
         FROM claim_next_job($1, $2, $3::text[], 1)`,
      [worker, leaseSeconds, types],
    );
    const row = result.rows[0];
    if (!row) {
      if ((await activeJobs(client)) === 0) return;
      await sleep(50);
      continue;
    }
    const claim: Claim = {
      id: row.id,
      type: row.type,
      poison: row.poison,
      worker,
      attempt: row.attempts,
      claimedAt: BigInt(row.claimed_at),
      leaseExpiresAt: BigInt(row.lease_expires_at),
      crashed: row.poison || Math.random() < crashRate,
      completed: false,
      atMs: Date.now() - started,
    };
    claims.push(claim);
    if (claim.crashed) continue;
    // A worker may finish only the claim it holds: same attempt, lease still live.
    const done = await client.query(
      `UPDATE jobs SET status = 'COMPLETED', locked_by = NULL, lease_expires_at = NULL, updated_at = now()
        WHERE id = $1 AND status = 'RUNNING' AND locked_by = $2 AND attempts = $3 AND lease_expires_at > now()`,
      [claim.id, worker, claim.attempt],
    );
    claim.completed = done.rowCount === 1;
  }
}

/**
 * The invariants of a correct queue, checked over every claim: each attempt handed out once and
 * in order, a job claimed again only after the previous lease expired (never two live leases),
 * and only the last claim completes it. Returns the problems found (empty when none).
 */
export function claimInvariantViolations(
  jobs: readonly { id: string; status: string; attempts: number }[],
  claims: readonly Claim[],
): string[] {
  const problems: string[] = [];
  const claimsByJob = new Map<string, Claim[]>();
  for (const claim of claims) claimsByJob.set(claim.id, [...(claimsByJob.get(claim.id) ?? []), claim]);
  for (const job of jobs) {
    const history = (claimsByJob.get(job.id) ?? []).sort((a, b) => a.attempt - b.attempt);
    const attempts = history.map((claim) => claim.attempt).join(',');
    const expected = Array.from({ length: job.attempts }, (_, i) => i + 1).join(',');
    if (attempts !== expected) problems.push(`${job.id}: attempts handed out ${attempts || 'none'}, expected ${expected || 'none'}`);
    for (let i = 1; i < history.length; i++) {
      if (history[i]!.claimedAt < history[i - 1]!.leaseExpiresAt) problems.push(`${job.id}: attempt ${history[i]!.attempt} claimed under a live lease`);
    }
    const completions = history.filter((claim) => claim.completed);
    if (job.status === 'COMPLETED' && (completions.length !== 1 || completions[0] !== history.at(-1))) problems.push(`${job.id}: completed by ${completions.length} claims, not by its last one`);
    if (job.status !== 'COMPLETED' && completions.length > 0) problems.push(`${job.id}: ${job.status} but a claim completed it`);
  }
  return problems;
}
