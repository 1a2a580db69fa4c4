import type { Command } from 'commander';
import { parseDurationSeconds } from '../../duration.js';
import { auditCommandLine, suggestedCommandLine } from '../../repairs/commandLine.js';
import { DEFAULT_EXPORT_PRIORITY } from '../../defaults.js';
import type { FixOptions, FixResult } from '../../repairs/fix.js';
import type { MigrateUpResult, MigrationRef } from '../../migrations/index.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, sessionSettingsFrom, type ConnectionOptions, type OutputOptions } from '../options.js';
import { renderTable, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

interface FixFlags extends ConnectionOptions, OutputOptions {
  /** true for a bare --reprioritize, the text after it otherwise */
  reprioritize?: string | true;
  releaseExpired?: boolean;
  premature?: boolean;
  installClaim?: boolean;
  all?: boolean;
  dryRun?: boolean;
  failedWithin: string;
}

/** How many ids per action the table output shows; --json always lists them all. */
export const SHOWN_IDS = 10;

export function registerFix(program: Command, result: CommandResult): void {
  const command = program
    .command('fix')
    .option('--reprioritize [N]', `QUEUED exports whose priority is behind N (a larger number) move to N (default ${DEFAULT_EXPORT_PRIORITY}; lower runs sooner)`)
    .option('--release-expired', 'expired leases with attempts left go back to QUEUED; exhausted ones go to FAILED with a reason')
    .option('--premature', "exports burned before their run completed are requeued with attempts given back; those whose run still runs are deferred; those of FAILED/CANCELLED runs are cancelled")
    .option('--install-claim', 'install the balanced claim function and its index (queue-doctor migrate up), after the data repairs')
    .option('--all', `every data repair (--reprioritize ${DEFAULT_EXPORT_PRIORITY} --release-expired --premature) plus recommendations`)
    .option('--dry-run', 'show exactly which rows would change (counts and ids), change nothing')
    .option('--failed-within <duration>', 'FAILED exports updated within this window count for --premature', '24h');
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor fix --all --dry-run                      # what every repair would change
  $ queue-doctor fix --reprioritize 50                    # exports at 50 go before bulk work at 100
  $ queue-doctor fix --release-expired --premature --json
  $ queue-doctor fix --install-claim                      # the long-term fix (same as migrate up)

Safety: all data repairs run in one transaction under --lock-timeout; rows a worker holds
locked are skipped and listed, never waited on; each action writes an audit entry
(queue-doctor history) that queue-doctor undo <auditId> reverses. The order is fixed:
release-expired, premature, reprioritize; --install-claim runs last as its own step.

Exit codes: 0 done (also when nothing needed changing), 1 rows were skipped because a worker
held them locked (run again), 2 could not run (usage, connection, lock timeout: nothing changed).`,
  );
  command.action(async (flags: FixFlags) => {
    const { parsePriority, planFix, runFix } = await import('../../repairs/fix.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const args = process.argv.slice(2);
    const options: FixOptions = {
      releaseExpired: flags.releaseExpired,
      premature: flags.premature,
      installClaim: flags.installClaim,
      all: flags.all,
      dryRun: Boolean(flags.dryRun),
      commandLine: auditCommandLine(args),
      failedWithinSeconds: parseDurationSeconds(flags.failedWithin, '--failed-within'),
      lockTimeoutMs: sessionSettingsFrom(flags).lockTimeoutMs,
    };
    if (flags.reprioritize !== undefined) options.reprioritize = flags.reprioritize === true ? DEFAULT_EXPORT_PRIORITY : parsePriority(flags.reprioritize);
    // Usage errors before connecting: a bad flag never opens a session.
    planFix(options);

    const { report, database } = await withSession(flags, output, async ({ db, map }) => ({ report: await runFix(db, map, options), database: db.label }));
    const skipped = report.actions.some((action) => action.skippedLocked.length > 0);
    result.exitCode = skipped ? EXIT.findings : EXIT.ok;
    if (flags.json) {
      output.out(toJson(report));
      return;
    }
    output.out(await renderFix(output, report, database, args));
  });
}

async function renderFix(output: Output, report: FixResult, database: string, args: readonly string[]): Promise<string> {
  const { color } = output;
  const lines = [color.bold(`queue-doctor fix — ${database}${report.dryRun ? ' — DRY RUN: nothing was changed' : ''}`), ''];
  const verb = report.dryRun ? 'would change' : 'changed';
  lines.push(
    await renderTable(
      color,
      report.actions.map((action) => ({
        action: action.action,
        [`rows ${verb}`]: action.rowsAffected,
        'skipped (locked)': action.skippedLocked.length,
        audit: action.auditId,
        what: String(action.details.description ?? ''),
      })),
    ),
  );
  for (const action of report.actions) {
    if (action.ids.length > 0) lines.push(`${action.action} ${verb}: ${capIds(action.ids)}`);
    if (action.skippedLocked.length > 0) lines.push(color.yellow(`${action.action} skipped, held locked by a worker: ${capIds(action.skippedLocked)}`));
    if (action.action === 'install-claim') lines.push(describeInstall(action.details.migration as MigrateUpResult, report.dryRun), `install-claim ${String(action.details.separateStep)}`);
  }
  const total = report.actions.reduce((sum, action) => sum + action.rowsAffected, 0);
  if (total === 0 && report.actions.every((action) => action.action !== 'install-claim')) lines.push(color.green('Nothing needed changing.'));
  const audits = report.actions.filter((action) => action.auditId !== null);
  if (audits.length > 0) lines.push(`Undo (newest first): ${[...audits].reverse().map((action) => `queue-doctor undo ${action.auditId}`).join(' · ')}`);
  if (report.recommendations.length > 0) {
    lines.push('', color.bold('Also recommended:'));
    for (const recommendation of report.recommendations) lines.push(`  ${color.cyan('→')} ${recommendation}`);
  }
  const next = report.dryRun ? suggestedCommandLine(args, ['--dry-run']) : 'queue-doctor inspect';
  lines.push('', `Next step: ${next}`);
  return lines.join('\n');
}

function describeInstall(migration: MigrateUpResult, dryRun: boolean): string {
  const names = (list: readonly MigrationRef[]) => list.map((m) => `${String(m.version).padStart(3, '0')}_${m.name}`).join(', ');
  if (migration.applied.length === 0) return `install-claim: nothing to do, already applied: ${names(migration.alreadyApplied) || '—'}`;
  return `install-claim ${dryRun ? 'would apply' : 'applied'}: ${names(migration.applied)}`;
}

export function capIds(ids: readonly string[], shown = SHOWN_IDS): string {
  const head = ids.slice(0, shown).join(', ');
  return ids.length > shown ? `${head} … (+${ids.length - shown} more; --json lists all)` : head;
}
