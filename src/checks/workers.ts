import type { Check } from './types.js';

// STUB: to be implemented.
export const workersCheck: Check = {
  id: 'workers',
  title: 'workers',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
