import type { Command } from 'commander';
import { parseDurationSeconds } from '../../duration.js';
import { CHECK_IDS, DEFAULT_INSPECT_OPTIONS } from '../../checks/types.js';
import { EXIT } from '../exit.js';
import { createOutput } from '../io.js';
import { addConnectionOptions, addOutputOptions, collectList, failOnOption, parsePositiveInteger, type ConnectionOptions, type OutputOptions } from '../options.js';
import { renderInspect, renderVerdict } from '../render/inspect.js';
import { toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

interface InspectFlags extends ConnectionOptions, OutputOptions {
  check?: string[];
  skip?: string[];
  failOn: 'warn' | 'fail';
  stuckAfter: string;
  limit: string;
  failedWithin: string;
}

export function registerInspect(program: Command, result: CommandResult): void {
  const command = program
    .command('inspect')
    .option('--check <id>', `run only these checks (repeatable or comma-separated): ${CHECK_IDS.join(', ')}`, collectList)
    .option('--skip <id>', 'skip these checks (repeatable or comma-separated)', collectList)
    .addOption(failOnOption())
    .option('--stuck-after <duration>', 'a due QUEUED job waiting longer than this is stuck', `${DEFAULT_INSPECT_OPTIONS.stuckAfterSeconds}s`)
    .option('--failed-within <duration>', 'FAILED exports updated within this window count as recent', '24h')
    .option('--limit <n>', 'show at most this many rows per check', String(DEFAULT_INSPECT_OPTIONS.limit));
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor inspect                                   # the embedded demo (no database configured)
  $ queue-doctor inspect --database-url postgres://app@db/reports
  $ DATABASE_URL=postgres://app@db/reports queue-doctor inspect --json --fail-on fail   # CI smoke check
  $ queue-doctor inspect --check starvation,expired-leases --stuck-after 60s

Exit codes: 0 nothing at or above --fail-on, 1 findings at or above it, 2 could not run.`,
  );
  command.action(async (flags: InspectFlags) => {
    const { atOrAbove, runInspect, selectChecks } = await import('../../inspect.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    const options = {
      stuckAfterSeconds: parseDurationSeconds(flags.stuckAfter, '--stuck-after'),
      recentFailureSeconds: parseDurationSeconds(flags.failedWithin, '--failed-within'),
      limit: parsePositiveInteger(flags.limit, '--limit', 10_000),
    };
    result.json = Boolean(flags.json);
    // Bad input is rejected before anything connects (or seeds the demo).
    selectChecks({ only: flags.check, skip: flags.skip });
    const { report, database } = await withSession(flags, output, async ({ db, map }) => ({
      report: await runInspect(db, map, { only: flags.check, skip: flags.skip }, options),
      database: db.label,
    }));
    const findings = report.checks.some((check) => check.status !== 'ok' && atOrAbove(check.status, flags.failOn));
    result.exitCode = findings ? EXIT.findings : EXIT.ok;
    if (flags.json) {
      output.out(toJson({ status: report.status, checks: report.checks.map(({ title: _title, ...check }) => check) }));
    } else {
      output.out(await renderInspect(output.color, report, database, options.limit));
      output.out(renderVerdict(output.color, report, flags.failOn, result.exitCode));
    }
  });
}
