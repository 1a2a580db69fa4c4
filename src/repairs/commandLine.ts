import { redactConnectionString } from '../db/redact.js';

/** Flags whose value may carry a password: dropped, value and all, from what the audit log keeps. */
const SECRET_FLAGS = ['--database-url'];

/**
 * The command line as the audit log records it: `queue-doctor` and the arguments, shell-quoted
 * where needed, without the connection string (which may hold a password). The connection is
 * not needed to understand a change, and the audit log is readable by anyone who can read the
 * queue_doctor schema.
 */
export function auditCommandLine(args: readonly string[]): string {
  const kept: string[] = [];
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index]!;
    if (SECRET_FLAGS.includes(arg)) {
      index += 1;
      continue;
    }
    if (SECRET_FLAGS.some((flag) => arg.startsWith(`${flag}=`))) continue;
    // A connection string anywhere else (a typo, a positional) is not kept either.
    kept.push(/^postgres(ql)?:\/\//i.test(arg) ? '<connection string>' : arg);
  }
  return ['queue-doctor', ...kept].map(shellQuote).join(' ');
}

function shellQuote(arg: string): string {
  if (/^[\w@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * A command line to show the operator as the next step: the same arguments minus `omit`, with
 * the password of any connection string masked (they typed it; the screen need not repeat it).
 */
export function suggestedCommandLine(args: readonly string[], omit: readonly string[]): string {
  const kept = args.filter((arg) => !omit.includes(arg)).map((arg) => {
    if (arg.startsWith('--database-url=')) return `--database-url=${redactConnectionString(arg.slice('--database-url='.length))}`;
    return /^postgres(ql)?:\/\//i.test(arg) ? redactConnectionString(arg) : arg;
  });
  return ['queue-doctor', ...kept].map(shellQuote).join(' ');
}
