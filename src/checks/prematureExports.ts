import type { Check } from './types.js';

// STUB: to be implemented.
export const prematureExportsCheck: Check = {
  id: 'premature-exports',
  title: 'premature-exports',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
