import type { Check } from './types.js';

export const claimFunctionCheck: Check = {
  id: 'claim-function',
  title: 'Claim function cannot starve queued jobs',
  async run(context) {
    const report = await context.claimFunction();
    const name = `${context.model.map.schema}.${context.model.map.claimFunction}`;
    const items = report.functions.map((f) => ({ id: f.signature, variant: f.variant, version: f.version, reason: f.reason }));
    switch (report.variant) {
      case 'balanced':
        return { status: 'ok', variant: 'balanced', summary: `${name} is queue-doctor's balanced claim (v${report.functions[0]?.version ?? '?'})`, count: 0, items, remedy: null };
      case 'legacy':
        return {
          status: 'fail',
          variant: 'legacy',
          summary: `${name} serves expired leases in a phase of their own before any QUEUED job, so leases that keep expiring starve the queue`,
          count: items.filter((i) => i.variant === 'legacy').length,
          items,
          remedy: 'queue-doctor migrate up   (installs the balanced claim function; `migrate down` restores this one)',
        };
      case 'missing':
        return {
          status: 'warn',
          variant: 'missing',
          summary: `no function ${name} exists; workers cannot claim jobs through it`,
          count: 1,
          items: [{ id: name, variant: 'missing' }],
          remedy: 'set "claimFunction" in queue-doctor.config.json if it has another name, or install one with `queue-doctor migrate up`',
        };
      default:
        return {
          status: 'warn',
          variant: 'unknown',
          summary: `${name} is not a shape queue-doctor recognises; starvation cannot be ruled out`,
          count: items.filter((i) => i.variant === 'unknown').length,
          items,
          remedy: 'review it against the ordering rule in README.md, or replace it with `queue-doctor migrate up`',
        };
    }
  },
};
