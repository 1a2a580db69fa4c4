import type { Check } from './types.js';

// STUB: to be implemented.
export const indexesCheck: Check = {
  id: 'indexes',
  title: 'indexes',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
