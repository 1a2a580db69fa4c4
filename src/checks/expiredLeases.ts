import type { Check } from './types.js';

// STUB: to be implemented.
export const expiredLeasesCheck: Check = {
  id: 'expired-leases',
  title: 'expired-leases',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
