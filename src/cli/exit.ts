import { QueueDoctorError, type FailureKind } from '../errors.js';
import { describeDatabaseError } from '../db/failures.js';
import { scrubSecrets } from '../db/redact.js';

/** The exit-code contract (README, "Exit codes"). CI pipelines depend on it. */
export const EXIT = {
  ok: 0,
  /** findings at or above --fail-on, or a refused request (live lease, finished job, unknown id) */
  findings: 1,
  /** could not run: usage, connection, auth, schema mismatch, timeout, malformed input */
  couldNotRun: 2,
  /** Ctrl-C: 128 + SIGINT, as shells report it */
  interrupted: 130,
} as const;

const EXIT_BY_KIND: Record<FailureKind, number> = {
  usage: EXIT.couldNotRun,
  connection: EXIT.couldNotRun,
  schema: EXIT.couldNotRun,
  timeout: EXIT.couldNotRun,
  permission: EXIT.couldNotRun,
  database: EXIT.couldNotRun,
  interrupted: EXIT.interrupted,
  refused: EXIT.findings,
  'not-found': EXIT.findings,
};

export interface Failure {
  kind: FailureKind | 'internal';
  exitCode: number;
  /** One line, secrets scrubbed, no stack trace. */
  line: string;
}

/** The single place where an error becomes an exit code and a line of text. */
export function describeFailure(error: unknown, secrets: readonly string[]): Failure {
  const known = describeDatabaseError(error);
  if (known) {
    const line = oneLine(`${known.message}${known.hint ? ` — ${known.hint}` : ''}`);
    return { kind: known.kind, exitCode: EXIT_BY_KIND[known.kind], line: scrubSecrets(line, secrets) };
  }
  const message = error instanceof Error ? error.message : String(error);
  const debug = process.env.QUEUE_DOCTOR_DEBUG ? '' : ' (set QUEUE_DOCTOR_DEBUG=1 for details)';
  return { kind: 'internal', exitCode: EXIT.couldNotRun, line: scrubSecrets(oneLine(`internal error: ${message}${debug}`), secrets) };
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}

export { QueueDoctorError };
