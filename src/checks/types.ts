import type { Queryable } from '../db/database.js';
import type { QueueModel } from '../schema/queueModel.js';
import type { ClaimFunctionReport } from '../claim/classify.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

export const CHECK_IDS = [
  'schema',
  'claim-function',
  'stuck-queued',
  'expired-leases',
  'starvation',
  'priority-collision',
  'premature-exports',
  'run-state',
  'workers',
  'indexes',
] as const;

export type CheckId = (typeof CHECK_IDS)[number];

/** One offending row (job, run, session, index…). `id` is always present so CI can diff runs. */
export interface CheckItem {
  id: string;
  [field: string]: unknown;
}

/** What a check returns; the JSON contract in README.md documents these fields. */
export interface CheckOutcome {
  status: CheckStatus;
  /** One line: the finding, with its numbers. */
  summary: string;
  /** How many offending rows there are in total (items may be capped by --limit). */
  count: number;
  items: CheckItem[];
  /** The next step (usually a queue-doctor command); null only when status is ok. */
  remedy: string | null;
  /** claim-function only: legacy | balanced | missing | unknown. */
  variant?: string;
}

export interface CheckResult extends CheckOutcome {
  id: CheckId;
  title: string;
}

export interface InspectOptions {
  /** A due QUEUED job waiting longer than this is stuck (--stuck-after). */
  stuckAfterSeconds: number;
  /** At most this many items per check (--limit). */
  limit: number;
  /** FAILED exports updated within this window count as "failed recently". */
  recentFailureSeconds: number;
}

export const DEFAULT_INSPECT_OPTIONS: InspectOptions = {
  stuckAfterSeconds: 120,
  limit: 20,
  recentFailureSeconds: 24 * 3600,
};

/**
 * Everything a check may use. `db` is inside inspect's single read-only, repeatable-read
 * transaction, so all checks see one consistent snapshot.
 */
export interface CheckContext {
  db: Queryable;
  model: QueueModel;
  options: InspectOptions;
  /** Shared, memoised lookups several checks need (the claim function is read once). */
  claimFunction(): Promise<ClaimFunctionReport>;
}

export interface Check {
  id: CheckId;
  title: string;
  run(context: CheckContext): Promise<CheckOutcome>;
}
