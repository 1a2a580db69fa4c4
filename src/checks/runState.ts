import type { Check } from './types.js';

// STUB: to be implemented.
export const runStateCheck: Check = {
  id: 'run-state',
  title: 'run-state',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
