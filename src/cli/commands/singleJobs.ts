import type { Command } from 'commander';
import type { SingleJobResult, SingleJobRun } from '../../claim/singleJobs.js';
import type { Database } from '../../db/database.js';
import type { SchemaMap } from '../../schemaMap.js';
import { parseDurationSeconds } from '../../duration.js';
import { usageError } from '../../errors.js';
import { auditCommandLine } from '../../repairs/commandLine.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, type ConnectionOptions, type OutputOptions } from '../options.js';
import { formatCell, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

interface SingleJobFlags extends ConnectionOptions, OutputOptions {
  dryRun?: boolean;
  steal?: boolean;
}

const ALL_OR_NOTHING = `All or nothing: every id is checked first, rows a worker holds locked are refused rather than
waited on, and if any job is refused nothing changes. Each change is audited (queue-doctor history)
and can be reversed with queue-doctor undo <auditId>.`;

const EXIT_CODES = `Exit codes: 0 done, 1 refused (live lease without --steal, finished job, no such job, row
held by another session), 2 could not run (malformed id or flag, connection, lock timeout).`;

function addSingleJobOptions(command: Command): Command {
  command.option('--dry-run', 'check and show the change, then roll it back').option('--steal', 'act even on a job under another worker\'s live lease');
  addConnectionOptions(command);
  addOutputOptions(command);
  return command;
}

export function registerClaim(program: Command, result: CommandResult): void {
  const command = program
    .command('claim')
    .argument('<jobId...>', 'ids of QUEUED or expired-lease jobs')
    .option('--worker <name>', 'locked_by of the claim (default: queue-doctor@<host>)')
    .option('--lease <duration>', 'lease length', '300s');
  addSingleJobOptions(command).addHelpText(
    'after',
    `
Examples:
  $ queue-doctor claim e1e1e1e1-0000-4000-8000-000000000001          # run a stuck export by hand
  $ queue-doctor claim 3f2c… --worker oncall@laptop --lease 10m --json | jq '.jobs[0].payload'
  $ queue-doctor claim 3f2c… --steal                                  # take it from a live lease

${ALL_OR_NOTHING}

${EXIT_CODES}`,
  );
  command.action(async (ids: string[], flags: SingleJobFlags & { worker?: string; lease: string }) => {
    const { claimJobs, defaultWorkerName, validateWorkerName } = await import('../../claim/singleJobs.js');
    const worker = validateWorkerName(flags.worker ?? defaultWorkerName());
    const leaseSeconds = parseDurationSeconds(flags.lease, '--lease');
    if (leaseSeconds < 1) throw usageError('--lease must be at least 1s');
    await runSingleJob(result, flags, (db, map, run) => claimJobs(db, map, ids, { worker, leaseSeconds, steal: Boolean(flags.steal) }, run));
  });
}

export function registerRequeue(program: Command, result: CommandResult): void {
  const command = program
    .command('requeue')
    .argument('<jobId...>', 'ids of RUNNING, FAILED or CANCELLED jobs')
    .option('--reset-attempts', 'give the jobs their attempts back (needed for a job that has none left)');
  addSingleJobOptions(command).addHelpText(
    'after',
    `
Examples:
  $ queue-doctor requeue 3f2c… 9b1d…
  $ queue-doctor requeue 3f2c… --reset-attempts --dry-run

${ALL_OR_NOTHING}

${EXIT_CODES}`,
  );
  command.action(async (ids: string[], flags: SingleJobFlags & { resetAttempts?: boolean }) => {
    const { requeueJobs } = await import('../../claim/singleJobs.js');
    await runSingleJob(result, flags, (db, map, run) => requeueJobs(db, map, ids, { steal: Boolean(flags.steal), resetAttempts: Boolean(flags.resetAttempts) }, run));
  });
}

export function registerFail(program: Command, result: CommandResult): void {
  const command = program
    .command('fail')
    .argument('<jobId...>', 'ids of QUEUED or RUNNING jobs')
    .requiredOption('--reason <text>', 'why (stored in the last error column)');
  addSingleJobOptions(command).addHelpText(
    'after',
    `
Examples:
  $ queue-doctor fail 3f2c… --reason "poison job: crashes every worker"

${ALL_OR_NOTHING}

${EXIT_CODES}`,
  );
  command.action(async (ids: string[], flags: SingleJobFlags & { reason: string }) => {
    const { failJobs, validateReason } = await import('../../claim/singleJobs.js');
    const reason = validateReason(flags.reason);
    await runSingleJob(result, flags, (db, map, run) => failJobs(db, map, ids, { steal: Boolean(flags.steal), reason }, run));
  });
}

type SingleJobWork = (db: Database, map: SchemaMap, run: SingleJobRun) => Promise<SingleJobResult>;

async function runSingleJob(result: CommandResult, flags: SingleJobFlags, work: SingleJobWork): Promise<void> {
  const output = await createOutput(process.env, flags.color === false);
  const { withSession } = await import('../session.js');
  result.json = Boolean(flags.json);
  const run = { commandLine: auditCommandLine(process.argv.slice(2)), dryRun: Boolean(flags.dryRun) };
  const report = await withSession(flags, output, ({ db, map }) => work(db, map, run));
  result.exitCode = EXIT.ok;
  output.out(flags.json ? toJson(report) : renderSingleJob(output, report));
}

function renderSingleJob(output: Output, report: SingleJobResult): string {
  const { color } = output;
  const done = { claim: 'claimed', requeue: 'requeued', fail: 'failed' }[report.action];
  const lines: string[] = [];
  for (const job of report.jobs) {
    lines.push(color.bold(`${report.dryRun ? `would be ${done}` : done}: ${formatCell(job.id)}`));
    for (const [key, value] of Object.entries(job)) {
      if (key === 'id' || key === 'payload') continue;
      lines.push(`  ${key.padEnd(16)} ${formatCell(value)}`);
    }
    if (job.payload !== undefined) lines.push(`  payload          ${JSON.stringify(job.payload)}`);
  }
  lines.push('', report.dryRun ? color.yellow('DRY RUN: rolled back, nothing was changed.') : `Audit entry ${report.auditId}: undo with queue-doctor undo ${report.auditId}`);
  return lines.join('\n');
}
