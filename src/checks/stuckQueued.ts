import type { Check } from './types.js';

// STUB: to be implemented.
export const stuckQueuedCheck: Check = {
  id: 'stuck-queued',
  title: 'stuck-queued',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
