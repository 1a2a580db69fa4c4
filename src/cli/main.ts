import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { describeFailure, EXIT } from './exit.js';
import { registerInspect } from './commands/inspect.js';
import { registerWhy } from './commands/why.js';
import { registerFix } from './commands/fix.js';
import { registerHistory, registerUndo } from './commands/history.js';
import { registerMigrate } from './commands/migrate.js';
import { registerClaim, registerFail, registerRequeue } from './commands/singleJobs.js';
import { registerSimulate } from './commands/simulate.js';

// Start-up rule: this file and the command modules load only commander and small helpers. Each
// action imports its core, the session (pg, PGlite) and chalk when it runs, so --help and
// --version stay within 2.5 x a bare `node` start (README, Performance).

/** What an action reports back to the single exit point below. */
export interface CommandResult {
  exitCode: number;
  /** The command was asked for --json: errors are mirrored on stdout as JSON too. */
  json: boolean;
}

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export function buildProgram(result: CommandResult): Command {
  const program = new Command('queue-doctor')
    .version(VERSION, '-v, --version')
    .description('Diagnose and safely repair a stalled PostgreSQL job queue (claim_next_job starvation, priority collisions, premature exports).')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      outputError: (text, write) => write(`queue-doctor: ${text.replace(/^error: /, '').trim()} (see --help)\n`),
    })
    .addHelpText(
      'after',
      `
Examples:
  $ queue-doctor inspect                       # diagnose the embedded demo of the incident
  $ queue-doctor inspect --database-url postgres://app@db/reports
  $ queue-doctor why e1e1e1e1-0000-4000-8000-000000000001
  $ queue-doctor fix --all --dry-run           # the immediate repairs, shown and rolled back
  $ queue-doctor migrate up                    # the long-term fix: the balanced claim function
  $ queue-doctor simulate                      # proof: legacy vs balanced on the incident

Connection: --database-url, else DATABASE_URL, else libpq PG* variables (PGHOST, PGDATABASE, …),
else the embedded demo database. Exit codes: 0 ok, 1 findings or refused, 2 could not run.`,
    );
  registerInspect(program, result);
  registerWhy(program, result);
  registerFix(program, result);
  registerHistory(program, result);
  registerUndo(program, result);
  registerMigrate(program, result);
  registerClaim(program, result);
  registerRequeue(program, result);
  registerFail(program, result);
  registerSimulate(program, result);
  return program;
}

/** The only place that turns outcomes and errors into an exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(EXIT.ok);
  });
  const result: CommandResult = { exitCode: EXIT.ok, json: argv.includes('--json') };
  const program = buildProgram(result);
  try {
    await program.parseAsync([...argv]);
    return result.exitCode;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are successful exits; anything else commander rejects is a usage error.
      return error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help' ? EXIT.ok : EXIT.couldNotRun;
    }
    const failure = describeFailure(error, secretsFromEnvironment(argv));
    process.stderr.write(`queue-doctor: ${failure.line}\n`);
    if (result.json) process.stdout.write(`${JSON.stringify({ error: { kind: failure.kind, message: failure.line } }, null, 2)}\n`);
    if (process.env.QUEUE_DOCTOR_DEBUG && error instanceof Error && error.stack) process.stderr.write(`${error.stack}\n`);
    return failure.exitCode;
  }
}

/** Every password the user may have handed us, so no message can echo one. */
function secretsFromEnvironment(argv: readonly string[]): string[] {
  const urls = [process.env.DATABASE_URL ?? ''];
  argv.forEach((arg, index) => {
    if (arg === '--database-url') urls.push(argv[index + 1] ?? '');
    if (arg.startsWith('--database-url=')) urls.push(arg.slice('--database-url='.length));
  });
  const secrets = urls.flatMap((url) => {
    const match = /:\/\/[^:/@\s]*:([^@\s]+)@/.exec(url);
    if (!match?.[1]) return [];
    const raw = match[1];
    let decoded = raw;
    try {
      decoded = decodeURIComponent(raw);
    } catch {
      // keep the raw form only
    }
    return [raw, decoded];
  });
  if (process.env.PGPASSWORD) secrets.push(process.env.PGPASSWORD);
  return secrets.filter((secret) => secret.length > 0);
}
