import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { describeFailure, EXIT } from './exit.js';

// Start-up rule: --help and --version must stay within 2.5 x a bare `node` start (README,
// Performance). So only the command that was asked for is loaded in full (its options, its help);
// the others are listed by name and summary. Each action then imports its core, the session
// (pg, PGlite) and chalk when it runs.

/** What an action reports back to the single exit point below. */
export interface CommandResult {
  exitCode: number;
  /** The command was asked for --json: errors are mirrored on stdout as JSON too. */
  json: boolean;
}

type Register = (program: Command, result: CommandResult) => void;

/** Every command, in the order --help lists them: the one place their summaries live. */
const COMMANDS: { name: string; summary: string; load: () => Promise<Register> }[] = [
  { name: 'inspect', summary: 'diagnose the queue: every check in one read-only snapshot, as a checklist with remedies', load: async () => (await import('./commands/inspect.js')).registerInspect },
  { name: 'why', summary: 'explain one job: would the next claim hand it out, and every reason it is not being claimed', load: async () => (await import('./commands/why.js')).registerWhy },
  { name: 'fix', summary: 'repair the queue while workers run: one transaction, rows held by workers skipped, every change audited', load: async () => (await import('./commands/fix.js')).registerFix },
  { name: 'history', summary: 'list the changes queue-doctor made (its audit log), newest first', load: async () => (await import('./commands/history.js')).registerHistory },
  { name: 'undo', summary: 'restore the values an audited change replaced, for rows nobody changed since', load: async () => (await import('./commands/history.js')).registerUndo },
  { name: 'migrate', summary: 'install or roll back queue-doctor\'s changes: the active-set partial indexes and the balanced claim function', load: async () => (await import('./commands/migrate.js')).registerMigrate },
  { name: 'claim', summary: 'claim jobs by hand exactly as a worker would (RUNNING, locked_by, lease, attempts + 1) and print them with their payload', load: async () => (await import('./commands/singleJobs.js')).registerClaim },
  { name: 'requeue', summary: 'put jobs back in the queue, due now, with their lease cleared (attempts kept unless --reset-attempts)', load: async () => (await import('./commands/singleJobs.js')).registerRequeue },
  { name: 'fail', summary: 'move jobs to FAILED with a reason in their last error', load: async () => (await import('./commands/singleJobs.js')).registerFail },
  { name: 'simulate', summary: 'replay the incident against the legacy and the balanced claim function, side by side, in a temporary schema', load: async () => (await import('./commands/simulate.js')).registerSimulate },
];

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export async function buildProgram(result: CommandResult, argv: readonly string[]): Promise<Command> {
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
  const args = argv.slice(2);
  const first = args.find((arg) => !arg.startsWith('-'));
  const requested = first === 'help' ? args[args.indexOf('help') + 1] : first;
  for (const command of COMMANDS) {
    if (command.name === requested) {
      (await command.load())(program, result);
      program.commands.find((registered) => registered.name() === command.name)?.description(command.summary);
    } else {
      program.command(command.name).description(command.summary);
    }
  }
  return program;
}

/** The only place that turns outcomes and errors into an exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(EXIT.ok);
  });
  const result: CommandResult = { exitCode: EXIT.ok, json: argv.includes('--json') };
  const program = await buildProgram(result, argv);
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
