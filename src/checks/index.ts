import type { Check } from './types.js';
import { schemaCheck } from './schema.js';
import { claimFunctionCheck } from './claimFunction.js';
import { stuckQueuedCheck } from './stuckQueued.js';
import { expiredLeasesCheck } from './expiredLeases.js';
import { starvationCheck } from './starvation.js';
import { priorityCollisionCheck } from './priorityCollision.js';
import { prematureExportsCheck } from './prematureExports.js';
import { runStateCheck } from './runState.js';
import { workersCheck } from './workers.js';
import { indexesCheck } from './indexes.js';

/** In the order inspect prints them: cause before consequence. */
export const ALL_CHECKS: readonly Check[] = [
  schemaCheck,
  claimFunctionCheck,
  stuckQueuedCheck,
  expiredLeasesCheck,
  starvationCheck,
  priorityCollisionCheck,
  prematureExportsCheck,
  runStateCheck,
  workersCheck,
  indexesCheck,
];
