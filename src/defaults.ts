import type { SimulateOptions } from './simulate/engine.js';

/**
 * Defaults that --help prints. They live apart from the code that uses them so that printing
 * help never loads that code (start-up time is part of the CLI contract, see Performance).
 */

/** Solution 1 of the root-cause analysis: exports at 50 go before bulk work at the default 100. */
export const DEFAULT_EXPORT_PRIORITY = 50;

export const DEFAULT_HISTORY_LIMIT = 20;

export const DEFAULT_SIMULATE_OPTIONS: SimulateOptions = {
  variants: ['legacy', 'balanced'],
  workers: 8,
  sections: 400,
  exports: 2,
  leaseSeconds: 30,
  crashRate: 0.1,
  durationSeconds: 600,
  seed: 42,
};
