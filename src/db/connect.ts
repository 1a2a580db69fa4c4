import { QueueDoctorError } from '../errors.js';
import { DEFAULT_SESSION_SETTINGS, type Database, type SessionSettings } from './database.js';
import { redactConnectionString } from './redact.js';

export type ConnectionTarget =
  | { kind: 'url'; url: string; source: '--database-url' | 'DATABASE_URL'; label: string }
  | { kind: 'libpq'; label: string }
  | { kind: 'demo'; reason: 'forced' | 'nothing-configured' };

/** libpq variables that, when set, mean the user has named a server. */
const LIBPQ_TARGET_VARIABLES = ['PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGDATABASE', 'PGUSER', 'PGSERVICE'] as const;

export interface ConnectionChoice {
  databaseUrl?: string | undefined;
  demo?: boolean | undefined;
}

/**
 * --database-url, else DATABASE_URL, else libpq PG* variables, else the embedded demo.
 * The demo is only ever chosen when nothing names a server, so a typo in a flag can never
 * silently point a repair at the demo instead of production (or the other way round).
 */
export function resolveConnectionTarget(choice: ConnectionChoice, env: NodeJS.ProcessEnv): ConnectionTarget {
  if (choice.demo) {
    if (choice.databaseUrl) throw new QueueDoctorError('usage', '--demo and --database-url name different databases; pass only one');
    return { kind: 'demo', reason: 'forced' };
  }
  if (choice.databaseUrl !== undefined) {
    if (choice.databaseUrl.trim() === '') throw new QueueDoctorError('usage', '--database-url is empty');
    return { kind: 'url', url: choice.databaseUrl, source: '--database-url', label: redactConnectionString(choice.databaseUrl) };
  }
  if (env.DATABASE_URL && env.DATABASE_URL.trim() !== '') {
    return { kind: 'url', url: env.DATABASE_URL, source: 'DATABASE_URL', label: redactConnectionString(env.DATABASE_URL) };
  }
  const named = LIBPQ_TARGET_VARIABLES.filter((name) => env[name]);
  if (named.length > 0) {
    const host = env.PGHOST ?? env.PGHOSTADDR ?? 'localhost';
    const label = `postgres://${env.PGUSER ? `${env.PGUSER}@` : ''}${host}:${env.PGPORT ?? '5432'}/${env.PGDATABASE ?? ''} (from ${named.join(', ')})`;
    return { kind: 'libpq', label };
  }
  return { kind: 'demo', reason: 'nothing-configured' };
}

/** Opens a real server. The demo is opened by src/demo.ts, which also seeds it. */
export async function openServer(
  target: Exclude<ConnectionTarget, { kind: 'demo' }>,
  settings: SessionSettings = DEFAULT_SESSION_SETTINGS,
): Promise<Database> {
  // pg is loaded only when a server is actually opened: --help and --version never pay for it.
  const { openPostgres } = await import('./postgres.js');
  return openPostgres({ connectionString: target.kind === 'url' ? target.url : undefined, label: target.label }, settings);
}
