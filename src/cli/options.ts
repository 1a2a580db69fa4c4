import { Command, Option } from 'commander';
import { parseDurationSeconds } from '../duration.js';
import { DEFAULT_SESSION_SETTINGS, type SessionSettings } from '../db/database.js';
import { usageError } from '../errors.js';

/** Options every command that talks to a database accepts (node-pg-migrate style builders). */
export interface ConnectionOptions {
  databaseUrl?: string;
  demo?: boolean;
  resetDemo?: boolean;
  config?: string;
  statementTimeout: string;
  lockTimeout: string;
  connectTimeout: string;
}

export interface OutputOptions {
  json?: boolean;
  /** false when --no-color was given */
  color: boolean;
}

export function addConnectionOptions(command: Command): Command {
  return command
    .option('--database-url <url>', 'PostgreSQL connection string (else DATABASE_URL, else PGHOST/PGDATABASE/… , else the embedded demo)')
    .option('--demo', 'use the embedded demo database even if a server is configured')
    .option('--reset-demo', 'recreate the embedded demo database with the incident before running (implies --demo)')
    .option('--config <file>', 'schema map JSON (default: ./queue-doctor.config.json if present)')
    .option('--statement-timeout <duration>', 'cancel any query running longer than this', `${DEFAULT_SESSION_SETTINGS.statementTimeoutMs / 1000}s`)
    .option('--lock-timeout <duration>', 'give up waiting for a lock after this', `${DEFAULT_SESSION_SETTINGS.lockTimeoutMs / 1000}s`)
    .option('--connect-timeout <duration>', 'give up connecting after this', `${DEFAULT_SESSION_SETTINGS.connectTimeoutMs / 1000}s`);
}

export function addOutputOptions(command: Command): Command {
  return command.option('--json', 'print only JSON on stdout (the documented contract)').option('--no-color', 'never use colour (NO_COLOR is honoured too)');
}

export function failOnOption(): Option {
  return new Option('--fail-on <level>', 'exit 1 when a check is at or above this level').choices(['warn', 'fail']).default('fail');
}

export function sessionSettingsFrom(options: ConnectionOptions): SessionSettings {
  const ms = (value: string, flag: string) => {
    const seconds = parseDurationSeconds(value, flag);
    if (seconds <= 0) throw usageError(`${flag} must be greater than zero`);
    return Math.round(seconds * 1000);
  };
  return {
    statementTimeoutMs: ms(options.statementTimeout, '--statement-timeout'),
    lockTimeoutMs: ms(options.lockTimeout, '--lock-timeout'),
    connectTimeoutMs: ms(options.connectTimeout, '--connect-timeout'),
  };
}

export function parsePositiveInteger(value: string, flag: string, max = 100_000): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1 || Number(value) > max) {
    throw usageError(`${flag} expects a whole number from 1 to ${max}, got "${value.slice(0, 40)}"`);
  }
  return Number(value);
}

/** Accepts `--check a --check b` and `--check a,b`. */
export function collectList(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map((part) => part.trim()).filter(Boolean)];
}
