import type { Command } from 'commander';
import { auditCommandLine, suggestedCommandLine } from '../../repairs/commandLine.js';
import { DEFAULT_HISTORY_LIMIT } from '../../defaults.js';
import type { HistoryEntry } from '../../repairs/history.js';
import type { UndoResult } from '../../repairs/undo.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, parsePositiveInteger, type ConnectionOptions, type OutputOptions } from '../options.js';
import { renderTable, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';
import { capIds } from './fix.js';

interface HistoryFlags extends ConnectionOptions, OutputOptions {
  limit: string;
}

interface UndoFlags extends ConnectionOptions, OutputOptions {
  dryRun?: boolean;
}

export function registerHistory(program: Command, result: CommandResult): void {
  const command = program
    .command('history')
    .option('--limit <n>', 'show at most this many entries', String(DEFAULT_HISTORY_LIMIT));
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor history
  $ queue-doctor history --limit 100 --json

Exit codes: 0 listed (also when empty), 2 could not run.`,
  );
  command.action(async (flags: HistoryFlags) => {
    const { listHistory } = await import('../../repairs/history.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const limit = parsePositiveInteger(flags.limit, '--limit', 10_000);
    const { entries, database } = await withSession(flags, output, async ({ db }) => ({ entries: await listHistory(db, { limit }), database: db.label }));
    result.exitCode = EXIT.ok;
    if (flags.json) {
      output.out(toJson({ entries }));
      return;
    }
    output.out(await renderHistory(output, entries, database));
  });
}

async function renderHistory(output: Output, entries: HistoryEntry[], database: string): Promise<string> {
  const { color } = output;
  const lines = [color.bold(`queue-doctor history — ${database}`), ''];
  if (entries.length === 0) {
    lines.push('No changes recorded: queue-doctor has not changed anything in this database.');
    return lines.join('\n');
  }
  lines.push(
    await renderTable(
      color,
      entries.map((entry) => ({
        id: entry.id,
        recorded_at: entry.recordedAt,
        user: entry.databaseUser,
        action: entry.action,
        rows: entry.rows,
        undone_by: entry.undoneBy,
        command_line: entry.commandLine,
      })),
    ),
  );
  const undoable = entries.find((entry) => entry.undoneBy === null && !/^undo \d+$/.test(entry.action));
  if (undoable) lines.push('', `Next step (to reverse the newest change): queue-doctor undo ${undoable.id} --dry-run`);
  return lines.join('\n');
}

export function registerUndo(program: Command, result: CommandResult): void {
  const command = program
    .command('undo')
    .argument('<auditId>', 'the audit entry to reverse (queue-doctor history lists them)')
    .option('--dry-run', 'show which rows would be restored and which left alone, change nothing');
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor undo 12 --dry-run
  $ queue-doctor undo 12 --json

Safety: one transaction; a row is restored only when the columns the change touched still hold
the values it wrote. Rows changed since (by a worker or a later change), held locked, or deleted
are listed and left alone. Undo several entries newest first. An entry is undone at most once.

Exit codes: 0 every row restored, 1 rows were left alone, the entry was already undone, or no
such entry, 2 could not run (malformed id, connection, lock timeout).`,
  );
  command.action(async (auditIdInput: string, flags: UndoFlags) => {
    const { parseAuditId, undoAuditEntry } = await import('../../repairs/undo.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    parseAuditId(auditIdInput);
    const args = process.argv.slice(2);
    const { report, database } = await withSession(flags, output, async ({ db, map }) => ({
      report: await undoAuditEntry(db, map, auditIdInput, { dryRun: Boolean(flags.dryRun), commandLine: auditCommandLine(args) }),
      database: db.label,
    }));
    const leftAlone = report.changedSince.length + report.skippedLocked.length + report.deleted.length;
    result.exitCode = leftAlone > 0 ? EXIT.findings : EXIT.ok;
    if (flags.json) {
      output.out(toJson(report));
      return;
    }
    output.out(renderUndo(output, report, database, args));
  });
}

function renderUndo(output: Output, report: UndoResult, database: string, args: readonly string[]): string {
  const { color } = output;
  const lines = [color.bold(`queue-doctor undo ${report.auditId} (${report.action}) — ${database}${report.dryRun ? ' — DRY RUN: nothing was changed' : ''}`), ''];
  const verb = report.dryRun ? 'would be restored' : 'restored';
  lines.push(`${report.restored.length} row(s) ${verb} (columns ${report.columns.join(', ') || '—'})${report.restored.length > 0 ? `: ${capIds(report.restored)}` : ''}`);
  if (report.undoAuditId !== null) lines.push(`Recorded as audit entry ${report.undoAuditId}; entry ${report.auditId} is marked undone.`);
  const leftAlone: [string, string[]][] = [
    ['changed since, left alone', report.changedSince],
    ['held locked by a worker, left alone', report.skippedLocked],
    ['deleted since', report.deleted],
  ];
  for (const [label, ids] of leftAlone) if (ids.length > 0) lines.push(color.yellow(`${ids.length} row(s) ${label}: ${capIds(ids)}`));
  if (!report.dryRun && report.restored.length === 0 && report.skippedLocked.length > 0) {
    lines.push('Nothing was restored and nothing recorded; run the same command again once the workers release those rows.');
  }
  lines.push('', `Next step: ${report.dryRun ? suggestedCommandLine(args, ['--dry-run']) : 'queue-doctor inspect'}`);
  return lines.join('\n');
}
