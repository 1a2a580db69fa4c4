import { readExpiredLeaseSummary } from './expiredLeases.js';
import { formatSeconds, plural, readStuckQueued, type StuckQueuedReport } from './stuckQueued.js';
import type { Check } from './types.js';

/**
 * The root-cause chain of the incident: due jobs are stuck WHILE expired leases exist AND the
 * claim function serves expired leases before any queued job. Each link alone is reported by
 * its own check (stuck-queued, expired-leases, claim-function); this one says whether together
 * they explain the stall.
 */
export const starvationCheck: Check = {
  id: 'starvation',
  title: 'Expired leases do not starve queued jobs',
  async run(context) {
    const { map } = context.model;
    const stuck = await readStuckQueued(context);
    const leases = await readExpiredLeaseSummary(context);
    const claim = await context.claimFunction();
    const functionName = map.claimFunction;
    const expired = plural(leases.expired, 'expired lease');
    const starved = stuck.jobs.map(({ id, type, priority, waitingSeconds }) => ({ id, type, priority, waitingSeconds }));
    const waited = `${describeStuck(stuck, map.types.export)} waited up to ${formatSeconds(stuck.oldestStuckSeconds ?? 0)}`;

    if (stuck.stuck === 0 || leases.expired === 0) {
      const threshold = formatSeconds(context.options.stuckAfterSeconds);
      const summary =
        stuck.stuck === 0
          ? `no due job has waited over ${threshold} (${expired}; ${functionName} is ${claim.variant})`
          : `${waited}, but no lease has expired, so expired leases are not what holds them (see stuck-queued)`;
      return { status: 'ok', summary, count: 0, items: [], remedy: null };
    }

    switch (claim.variant) {
      case 'legacy':
        return {
          status: 'fail',
          summary: `${waited} while ${expired} ${leases.expired === 1 ? 'is' : 'are'} re-claimed first by the legacy ${functionName}`,
          count: stuck.stuck,
          items: starved,
          remedy: 'queue-doctor fix --release-expired (unblocks now), then queue-doctor migrate up (balanced claim function)',
        };
      case 'balanced':
        return {
          status: 'ok',
          summary: `${waited} and ${expired} exist, but ${functionName} is the balanced claim, which does not serve expired leases first (see stuck-queued and expired-leases)`,
          count: 0,
          items: [],
          remedy: null,
        };
      case 'missing':
        return {
          status: 'warn',
          summary: `${waited} while ${expired} exist; no function ${map.schema}.${functionName} exists, so whether expired leases are served first cannot be confirmed`,
          count: stuck.stuck,
          items: starved,
          remedy: `set "claimFunction" in queue-doctor.config.json to the function your workers call and run this check again; queue-doctor fix --release-expired unblocks the queue either way`,
        };
      default:
        return {
          status: 'warn',
          summary: `${waited} while ${expired} exist; ${functionName} is not a shape queue-doctor recognises, so whether it serves expired leases first cannot be confirmed`,
          count: stuck.stuck,
          items: starved,
          remedy: 'queue-doctor fix --release-expired (unblocks now), then review the claim function (queue-doctor inspect --check claim-function) or replace it with queue-doctor migrate up',
        };
    }
  },
};

/** "2 EXPORT and 12 other due jobs have", "12 due jobs have", "1 EXPORT due job has". */
function describeStuck(stuck: StuckQueuedReport, exportType: string): string {
  const others = stuck.stuck - stuck.stuckExports;
  const verb = stuck.stuck === 1 ? 'has' : 'have';
  if (stuck.stuckExports === 0) return `${plural(others, 'due job')} ${verb}`;
  if (others === 0) return `${plural(stuck.stuckExports, `${exportType} due job`)} ${verb}`;
  return `${stuck.stuckExports} ${exportType} and ${plural(others, 'other due job')} ${verb}`;
}
