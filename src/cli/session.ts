import { resolveConnectionTarget, openServer } from '../db/connect.js';
import type { Database } from '../db/database.js';
import { openDemo } from '../demo.js';
import { QueueDoctorError } from '../errors.js';
import { loadSchemaMap, type SchemaMap } from '../schemaMap.js';
import type { Output } from './io.js';
import { sessionSettingsFrom, type ConnectionOptions } from './options.js';

export interface Session {
  db: Database;
  map: SchemaMap;
  isDemo: boolean;
}

/**
 * Opens the database a command works on, runs `work`, and always closes it. Ctrl-C closes the
 * connection, which makes the server roll back whatever transaction was open: nothing partial.
 */
export async function withSession<T>(options: ConnectionOptions, output: Output, work: (session: Session) => Promise<T>): Promise<T> {
  const settings = sessionSettingsFrom(options);
  const { map } = await loadSchemaMap(options.config, process.cwd());
  const target = resolveConnectionTarget({ databaseUrl: options.databaseUrl, demo: options.demo || options.resetDemo }, process.env);

  let db: Database;
  if (target.kind === 'demo') {
    const progress = output.interactive ? (message: string) => output.err(output.color.dim(`… ${message}`)) : undefined;
    const demo = await openDemo({ env: process.env, reset: options.resetDemo ?? false, ...(progress ? { onProgress: progress } : {}) });
    db = demo.db;
    const why = target.reason === 'forced' ? '' : 'no database configured (--database-url, DATABASE_URL or PG* variables); ';
    output.err(
      output.color.yellow(
        `queue-doctor: ${why}using the embedded demo database at ${demo.directory}${demo.seeded ? ' (freshly seeded with the incident)' : ''}. Reset it with --reset-demo.`,
      ),
    );
  } else {
    db = await openServer(target, settings);
  }

  let interrupted = false;
  const onInterrupt = () => {
    interrupted = true;
    // Closing the connection makes the server roll back the open transaction; the pending query
    // then rejects and the entry point prints the single "interrupted" line.
    void db.close();
  };
  process.once('SIGINT', onInterrupt);
  process.once('SIGTERM', onInterrupt);
  try {
    return await work({ db, map, isDemo: target.kind === 'demo' });
  } catch (error) {
    if (interrupted) throw new QueueDoctorError('interrupted', 'interrupted: the connection was closed and the open transaction rolled back, nothing was changed');
    throw error;
  } finally {
    process.removeListener('SIGINT', onInterrupt);
    process.removeListener('SIGTERM', onInterrupt);
    if (!interrupted) await db.close();
  }
}
