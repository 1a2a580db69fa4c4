import type { Command } from 'commander';
import type { WhyReport } from '../../why.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, type ConnectionOptions, type OutputOptions } from '../options.js';
import { formatCell, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

type WhyFlags = ConnectionOptions & OutputOptions;

export function registerWhy(program: Command, result: CommandResult): void {
  const command = program
    .command('why')
    .argument('<jobId>', 'the id of the job to explain');
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor why e1e1e1e1-0000-4000-8000-000000000001          # a stuck export of the demo incident
  $ queue-doctor why 3f2c… --database-url postgres://app@db/reports --json

Exit codes: 0 the next claim would hand it out and nothing holds it back, 1 it is held back
(or no such job), 2 could not run (malformed id, connection, schema).`,
  );
  command.action(async (jobId: string, flags: WhyFlags) => {
    const { explainJob } = await import('../../why.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const report = await withSession(flags, output, ({ db, map }) => explainJob(db, map, jobId));
    result.exitCode = report.claimable && report.reasons.length === 0 ? EXIT.ok : EXIT.findings;
    if (flags.json) {
      output.out(toJson({ job: report.job, claimable: report.claimable, reasons: report.reasons }));
    } else {
      output.out(renderWhy(output, report));
    }
  });
}

function renderWhy(output: Output, report: WhyReport): string {
  const { color } = output;
  const job = report.job;
  const lines = [color.bold(`Job ${formatCell(job.id)}`)];
  for (const [key, value] of Object.entries(job)) {
    if (key === 'id' || key === 'payload') continue;
    lines.push(`  ${key.padEnd(18)} ${formatCell(value)}`);
  }
  lines.push('');
  lines.push(
    report.claimable
      ? color.green(`The next call of the claim function (${report.claimVariant}) would hand this job out.`)
      : color.red(`The next call of the claim function (${report.claimVariant}) would NOT hand this job out.`),
  );
  if (report.reasons.length === 0) {
    lines.push(color.green('✓ Nothing is holding it back.'));
  } else {
    lines.push(report.claimable ? 'But it will not make progress:' : 'Why not:');
    for (const reason of report.reasons) lines.push(`  ${color.red('✗')} ${color.bold(reason.code)}: ${reason.message}`);
  }
  return lines.join('\n');
}
