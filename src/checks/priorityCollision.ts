import type { Check } from './types.js';

// STUB: to be implemented.
export const priorityCollisionCheck: Check = {
  id: 'priority-collision',
  title: 'priority-collision',
  async run() {
    return { status: 'ok', summary: 'not implemented yet', count: 0, items: [], remedy: null };
  },
};
