import { usageError } from './errors.js';

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/**
 * Parses "120", "120s", "2m", "1.5h", "500ms" into seconds. A bare number means seconds,
 * the unit operators type most often in these flags.
 */
export function parseDurationSeconds(input: string, flag: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(input);
  if (!match) {
    throw usageError(`${flag} expects a duration such as 30s, 2m or 1h, got "${truncate(input)}"`);
  }
  const seconds = Number(match[1]) * UNIT_SECONDS[(match[2] ?? 's').toLowerCase()]!;
  if (!Number.isFinite(seconds) || seconds > 7 * 24 * 3600) {
    throw usageError(`${flag} is out of range (at most 7 days), got "${truncate(input)}"`);
  }
  return seconds;
}

/** 45s, 90s, 2.5m: the unit an operator reads at a glance. */
export function formatDuration(seconds: number): string {
  if (seconds < 120) return `${Math.round(seconds)}s`;
  return `${Math.round(seconds / 6) / 10}m`;
}

export function truncate(text: string, max = 60): string {
  const printable = text.replace(/[\x00-\x1f\x7f]/g, '?');
  return printable.length > max ? `${printable.slice(0, max)}…` : printable;
}
