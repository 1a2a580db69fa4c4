import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/queue-doctor.js', import.meta.url));

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** A private demo folder per test file, so tests never touch the user's cached demo. */
export const TEST_DEMO_DIR = path.join(mkdtempSync(path.join(os.tmpdir(), 'queue-doctor-demo-')), 'demo');

/**
 * Runs the BUILT binary (npm test builds first) with a scrubbed environment: no DATABASE_URL,
 * no PG* variables, no colour forcing, so only what the test passes can name a database.
 */
export function runCli(
  args: readonly string[],
  options: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; interruptAfterMs?: number } = {},
): Promise<CliRun> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? os.tmpdir(),
    QUEUE_DOCTOR_DEMO_DIR: TEST_DEMO_DIR,
    ...options.env,
  };
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, cwd: options.cwd ?? os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    // Ctrl-C as a terminal sends it.
    if (options.interruptAfterMs !== undefined) setTimeout(() => child.kill('SIGINT'), options.interruptAfterMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, durationMs: Date.now() - started });
    });
  });
}

/** A stack trace in user-facing output is a defect. */
export function expectNoStackTrace(text: string): void {
  if (/\n\s+at .+\(.+:\d+:\d+\)|\n\s+at file:\/\/|node:internal/.test(text)) {
    throw new Error(`output contains a stack trace:\n${text}`);
  }
}
