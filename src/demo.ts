import { mkdir, readFile, rm, open, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { QueueDoctorError } from './errors.js';
import type { Database } from './db/database.js';
import { openPglite } from './db/pglite.js';

/** sql/ ships with the package; dist/demo.js sits one level below the package root. */
const SQL_DIR = new URL('../sql/', import.meta.url);

/** The files that recreate the incident of the root-cause analysis, in order. */
export const DEMO_SEED_FILES = ['schema.sql', 'legacy/claim_next_job.sql', 'fixtures/incident.sql'] as const;

/**
 * QUEUE_DOCTOR_DEMO_DIR wins (tests and people who want several demos); otherwise the per-user
 * cache folder, so the demo survives between runs and a repair's effect can be inspected.
 */
export function demoDirectory(env: NodeJS.ProcessEnv): string {
  if (env.QUEUE_DOCTOR_DEMO_DIR) return path.resolve(env.QUEUE_DOCTOR_DEMO_DIR);
  const cacheRoot = env.XDG_CACHE_HOME || (process.platform === 'darwin' ? path.join(os.homedir(), 'Library', 'Caches') : path.join(os.homedir(), '.cache'));
  return path.join(cacheRoot, 'queue-doctor', 'demo');
}

export interface DemoDatabase {
  db: Database;
  directory: string;
  /** True when this call created (or recreated) the incident data. */
  seeded: boolean;
}

export interface OpenDemoOptions {
  env: NodeJS.ProcessEnv;
  /** Throw away the demo and seed the incident again. */
  reset?: boolean;
  onProgress?: (message: string) => void;
}

/**
 * Opens the embedded demo (PGlite: real PostgreSQL compiled to WASM, no server), seeding it with
 * the incident the first time. PGlite allows one process per data folder, so a lock file makes a
 * second concurrent queue-doctor wait briefly and then refuse, instead of corrupting the demo.
 */
export async function openDemo(options: OpenDemoOptions): Promise<DemoDatabase> {
  const directory = demoDirectory(options.env);
  await mkdir(path.dirname(directory), { recursive: true });
  const releaseLock = await acquireLock(`${directory}.lock`);
  try {
    if (options.reset) await rm(directory, { recursive: true, force: true });
    options.onProgress?.('starting the embedded demo database');
    let db = await openPglite(directory, `embedded demo (PGlite) at ${directory}`);
    const present = await db.query<{ seeded: boolean }>(`SELECT to_regclass('public.queue_doctor_demo') IS NOT NULL AS seeded`);
    let seeded = false;
    if (!present.rows[0]?.seeded) {
      // A half-seeded folder (interrupted first run) is rebuilt from scratch.
      await db.close();
      await rm(directory, { recursive: true, force: true });
      db = await openPglite(directory, `embedded demo (PGlite) at ${directory}`);
      options.onProgress?.('seeding the demo database with the incident');
      await seedDemo(db);
      seeded = true;
    }
    const close = db.close.bind(db);
    return { db: Object.assign(db, { close: async () => { await close(); await releaseLock(); } }), directory, seeded };
  } catch (error) {
    await releaseLock();
    throw error;
  }
}

async function seedDemo(db: Database & { exec(sql: string): Promise<void> }): Promise<void> {
  const scripts = await Promise.all(DEMO_SEED_FILES.map((file) => readFile(new URL(file, SQL_DIR), 'utf8')));
  await db.exec(`BEGIN;\n${scripts.join('\n;\n')}\n;\nCREATE TABLE queue_doctor_demo (seeded_at timestamptz NOT NULL DEFAULT now());\nINSERT INTO queue_doctor_demo DEFAULT VALUES;\nCOMMIT;`);
}

async function acquireLock(lockPath: string, waitMs = 15_000): Promise<() => Promise<void>> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await unlink(lockPath).catch(() => undefined);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
      if (!holder || !isAlive(holder)) {
        await unlink(lockPath).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) {
        throw new QueueDoctorError('connection', `the demo database is in use by another queue-doctor (pid ${holder})`, 'wait for it to finish, or point QUEUE_DOCTOR_DEMO_DIR at another folder');
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
