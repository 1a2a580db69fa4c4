import type { Queryable } from '../db/database.js';
import type { QueueModel } from '../schema/queueModel.js';

export type ClaimVariant = 'legacy' | 'balanced' | 'missing' | 'unknown';

/** The marker every claim function queue-doctor installs carries in its body. */
export const BALANCED_MARKER = 'queue-doctor:balanced-claim';

export interface InstalledClaimFunction {
  /** e.g. public.claim_next_job(p_worker_id text, p_lease_seconds integer) */
  signature: string;
  variant: Exclude<ClaimVariant, 'missing'>;
  /** Marker version of a balanced function (e.g. 1), else null. */
  version: number | null;
  /** Why it was classified so, in one line. */
  reason: string;
}

export interface ClaimFunctionReport {
  /** The worst variant among the installed overloads (legacy > unknown > balanced), or missing. */
  variant: ClaimVariant;
  functions: InstalledClaimFunction[];
}

const SEVERITY: Record<InstalledClaimFunction['variant'], number> = { legacy: 2, unknown: 1, balanced: 0 };

/** Reads every overload of the configured claim function and classifies its definition. */
export async function classifyClaimFunction(db: Queryable, model: QueueModel): Promise<ClaimFunctionReport> {
  const result = await db.query<{ signature: string; definition: string }>(
    `SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS signature,
            pg_get_functiondef(p.oid) AS definition
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname = $1 AND p.proname = $2 AND p.prokind = 'f'
      ORDER BY 1`,
    [model.map.schema, model.map.claimFunction],
  );
  const functions = result.rows.map((row) => ({ signature: row.signature, ...classifyDefinition(row.definition, model) }));
  if (functions.length === 0) return { variant: 'missing', functions };
  const worst = functions.reduce((a, b) => (SEVERITY[b.variant] > SEVERITY[a.variant] ? b : a));
  return { variant: worst.variant, functions };
}

/**
 * Classifies a function body. `legacy` means a statement that selects expired RUNNING leases
 * without also considering QUEUED jobs, followed later by a separate statement for QUEUED jobs:
 * the two-phase shape in which phase 2 only runs when phase 1 found nothing.
 */
export function classifyDefinition(definition: string, model: QueueModel): Omit<InstalledClaimFunction, 'signature'> {
  const marker = new RegExp(`${BALANCED_MARKER}\\s+v(\\d+)`).exec(definition);
  if (marker) {
    return { variant: 'balanced', version: Number(marker[1]), reason: `installed by queue-doctor (${BALANCED_MARKER} v${marker[1]})` };
  }
  const body = stripComments(definition).toLowerCase();
  const statements = body.split(';');
  const lease = model.map.jobs.columns.leaseExpiresAt.toLowerCase();
  const running = sqlLiteral(model.map.statuses.running);
  const queued = sqlLiteral(model.map.statuses.queued);
  const expiredPhase = statements.findIndex((s) => s.includes(lease) && s.includes(running) && !s.includes(queued) && /\bselect\b|\bupdate\b/.test(s));
  const queuedPhase = statements.findIndex((s, index) => index > expiredPhase && s.includes(queued));
  if (expiredPhase >= 0 && queuedPhase > expiredPhase) {
    return { variant: 'legacy', version: null, reason: 'reclaims expired leases in a separate phase before it looks at QUEUED jobs' };
  }
  return { variant: 'unknown', version: null, reason: 'not written by queue-doctor and not the known two-phase shape' };
}

function stripComments(sql: string): string {
  return sql.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/--[^\n]*/g, ' ');
}

function sqlLiteral(value: string): string {
  return `'${value.toLowerCase().replace(/'/g, "''")}'`;
}
