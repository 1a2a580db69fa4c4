import { QueueDoctorError, usageError } from './errors.js';
import type { Database } from './db/database.js';
import { describeBlockers, findTableLockHolders } from './db/blockers.js';
import { classifyClaimFunction, type ClaimFunctionReport } from './claim/classify.js';
import { loadQueueModel, buildQueueSql } from './schema/queueModel.js';
import type { SchemaMap } from './schemaMap.js';
import { ALL_CHECKS } from './checks/index.js';
import { CHECK_IDS, DEFAULT_INSPECT_OPTIONS, type CheckContext, type CheckId, type CheckResult, type CheckStatus, type InspectOptions } from './checks/types.js';

export interface InspectReport {
  status: CheckStatus;
  checks: CheckResult[];
}

export interface CheckSelection {
  only?: readonly string[] | undefined;
  skip?: readonly string[] | undefined;
}

const RANK: Record<CheckStatus, number> = { ok: 0, warn: 1, fail: 2 };

export function worstStatus(statuses: readonly CheckStatus[]): CheckStatus {
  return statuses.reduce<CheckStatus>((worst, status) => (RANK[status] > RANK[worst] ? status : worst), 'ok');
}

export function atOrAbove(status: CheckStatus, threshold: Exclude<CheckStatus, 'ok'>): boolean {
  return RANK[status] >= RANK[threshold];
}

export function selectChecks(selection: CheckSelection): CheckId[] {
  const validate = (ids: readonly string[] | undefined, flag: string) => {
    for (const id of ids ?? []) {
      if (!(CHECK_IDS as readonly string[]).includes(id)) {
        throw usageError(`${flag} ${JSON.stringify(id)} is not a check (checks: ${CHECK_IDS.join(', ')})`);
      }
    }
  };
  validate(selection.only, '--check');
  validate(selection.skip, '--skip');
  const chosen = selection.only && selection.only.length > 0 ? CHECK_IDS.filter((id) => selection.only!.includes(id)) : [...CHECK_IDS];
  return chosen.filter((id) => !(selection.skip ?? []).includes(id));
}

/**
 * Runs the selected checks in ONE read-only, repeatable-read transaction: a consistent
 * snapshot that writes nothing and works for a role that can only SELECT.
 */
export async function runInspect(
  db: Database,
  map: SchemaMap,
  selection: CheckSelection = {},
  options: InspectOptions = DEFAULT_INSPECT_OPTIONS,
): Promise<InspectReport> {
  const ids = selectChecks(selection);
  try {
    return await db.transaction(
      async (tx) => {
        const model = await loadQueueModel(tx, map);
        let claimReport: Promise<ClaimFunctionReport> | undefined;
        const context: CheckContext = {
          db: tx,
          model,
          options,
          claimFunction: () => (claimReport ??= classifyClaimFunction(tx, model)),
        };
        const checks: CheckResult[] = [];
        for (const check of ALL_CHECKS.filter((c) => ids.includes(c.id))) {
          const outcome = await check.run(context);
          checks.push({ id: check.id, title: check.title, ...outcome });
        }
        return { status: worstStatus(checks.map((c) => c.status)), checks };
      },
      { readOnly: true, isolation: 'repeatable read' },
    );
  } catch (error) {
    throw await explainLockTimeout(db, map, error);
  }
}

/** A lock_timeout on the queue tables becomes one line naming who holds the lock. */
export async function explainLockTimeout(db: Database, map: SchemaMap, error: unknown): Promise<unknown> {
  if ((error as { code?: string })?.code !== '55P03') return error;
  const sql = buildQueueSql(map);
  const holders = [
    ...(await findTableLockHolders(db, sql.jobs).catch(() => [])),
    ...(await findTableLockHolders(db, sql.runs).catch(() => [])),
  ];
  return new QueueDoctorError(
    'timeout',
    `the queue tables are locked and --lock-timeout expired: ${describeBlockers(holders)}`,
    holders.length > 0 ? `end that session (SELECT pg_terminate_backend(${holders[0]!.pid})) or wait for it, then run again` : undefined,
  );
}
