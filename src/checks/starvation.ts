import type { Check } from './types.js';

// STUB: to be implemented.
export const starvationCheck: Check = {
  id: 'starvation',
  title: 'starvation',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
