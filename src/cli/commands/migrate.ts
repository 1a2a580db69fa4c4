import type { Command } from 'commander';
import type { ExecutedMigration, MigrateOptions, MigrationRef, MigrationStatus } from '../../migrations/index.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, sessionSettingsFrom, type ConnectionOptions, type OutputOptions } from '../options.js';
import { renderTable, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

type StatusFlags = ConnectionOptions & OutputOptions;
interface UpFlags extends ConnectionOptions, OutputOptions {
  dryRun?: boolean;
}
interface DownFlags extends UpFlags {
  all?: boolean;
}

const EXIT_CODES = 'Exit codes: 0 done (or nothing to do), 1 refused (another migrate is running, or the schema map changed), 2 could not run.';

export function registerMigrate(program: Command, result: CommandResult): void {
  const migrate = program
    .command('migrate')
    .addHelpText(
      'after',
      `
Migrations (sql/migrations, rendered from the schema map):
  001_active_set_indexes  partial indexes over QUEUED, RUNNING and FAILED jobs, and the claim order
                          (CREATE INDEX CONCURRENTLY, outside any transaction: workers keep running)
  002_balanced_claim      saves the current claim function, replaces it with the balanced one
                          (one transaction; \`migrate down\` puts the saved one back byte for byte)

Examples:
  $ queue-doctor migrate status --database-url postgres://app@db/reports
  $ queue-doctor migrate up --dry-run          # print the SQL, change nothing
  $ queue-doctor migrate up
  $ queue-doctor migrate down                  # revert the newest migration
  $ queue-doctor migrate down --all            # back to the database as it was before queue-doctor`,
    );

  const status = migrate.command('status').description('list applied and pending migrations (read-only)');
  addConnectionOptions(status);
  addOutputOptions(status);
  status.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor migrate status
  $ queue-doctor migrate status --json    # CI: exit 1 while something is pending

Exit codes: 0 everything applied, 1 something pending, changed since it was applied, or applied with
another schema map, 2 could not run.`,
  );
  status.action(async (flags: StatusFlags) => {
    const { migrationStatus } = await import('../../migrations/index.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const { report, database } = await withSession(flags, output, async ({ db, map }) => ({ report: await migrationStatus(db, map), database: db.label }));
    const behind = report.pending.length > 0 || report.schemaMapChanged || report.applied.some((m) => m.changedSinceApplied);
    result.exitCode = behind ? EXIT.findings : EXIT.ok;
    output.out(flags.json ? toJson(report) : await renderStatus(output, report, database));
  });

  const up = migrate.command('up').description('apply every pending migration, in order; running it again changes nothing').option('--dry-run', 'print the SQL each pending migration would run, change nothing');
  addConnectionOptions(up);
  addOutputOptions(up);
  up.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor migrate up --dry-run
  $ DATABASE_URL=postgres://app@db/reports queue-doctor migrate up --json

${EXIT_CODES}`,
  );
  up.action(async (flags: UpFlags) => {
    const { migrateUp } = await import('../../migrations/index.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const outcome = await withSession(flags, output, ({ db, map }) => migrateUp(db, map, runOptions(flags, output)));
    result.exitCode = EXIT.ok;
    if (flags.json) {
      output.out(toJson(outcome));
      return;
    }
    const lines = outcome.dryRun ? renderPlan(output, 'apply', outcome.applied) : outcome.applied.map((m) => output.color.green(`✓ applied ${label(m)} (${seconds(m.durationMs)})`));
    if (outcome.applied.length === 0) lines.push(`nothing to apply: ${outcome.alreadyApplied.map(label).join(', ') || 'no migrations'} already applied`);
    output.out(lines.join('\n'));
  });

  const down = migrate
    .command('down')
    .description('revert the newest applied migration (with --all: every one, newest first)')
    .option('--all', 'revert every applied migration: the database is left as it was before queue-doctor')
    .option('--dry-run', 'print the SQL that would run, change nothing');
  addConnectionOptions(down);
  addOutputOptions(down);
  down.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor migrate down                 # e.g. put the app's own claim function back
  $ queue-doctor migrate down --all --dry-run

${EXIT_CODES}`,
  );
  down.action(async (flags: DownFlags) => {
    const { migrateDown } = await import('../../migrations/index.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const outcome = await withSession(flags, output, ({ db, map }) => migrateDown(db, map, { ...runOptions(flags, output), all: Boolean(flags.all) }));
    result.exitCode = EXIT.ok;
    if (flags.json) {
      output.out(toJson(outcome));
      return;
    }
    const lines = outcome.dryRun ? renderPlan(output, 'revert', outcome.reverted) : outcome.reverted.map((m) => output.color.green(`✓ reverted ${label(m)} (${seconds(m.durationMs)})`));
    if (outcome.reverted.length === 0) lines.push('nothing to revert: no migration is applied');
    if (outcome.applied.length > 0) lines.push(`still applied: ${outcome.applied.map(label).join(', ')}`);
    if (outcome.note) lines.push(output.color.dim(`note: ${outcome.note}`));
    output.out(lines.join('\n'));
  });
}

function runOptions(flags: UpFlags, output: Output): MigrateOptions {
  const options: MigrateOptions = { dryRun: Boolean(flags.dryRun), lockTimeoutMs: sessionSettingsFrom(flags).lockTimeoutMs };
  if (output.interactive) options.onProgress = (message) => output.err(output.color.dim(`… ${message}`));
  return options;
}

async function renderStatus(output: Output, report: MigrationStatus, database: string): Promise<string> {
  const { color } = output;
  const rows = [
    ...report.applied.map((m) => ({
      version: pad(m.version),
      name: m.name,
      state: m.changedSinceApplied ? 'applied (changed since)' : 'applied',
      'applied at': m.appliedAt,
      by: m.appliedBy,
    })),
    ...report.pending.map((m) => ({ version: pad(m.version), name: m.name, state: 'pending', 'applied at': null, by: null })),
  ].sort((a, b) => a.version.localeCompare(b.version));
  const lines = [color.bold(`Migrations on ${database}`), await renderTable(color, rows)];
  if (report.schemaMapChanged) {
    lines.push(color.red('✗ applied with another schema map: up and down refuse until you pass the config it was applied with (--config FILE)'));
  }
  if (report.applied.some((m) => m.changedSinceApplied)) {
    lines.push(color.yellow('! this queue-doctor renders different SQL for a migration already applied; `migrate down` then `migrate up` installs the new version'));
  }
  lines.push(
    report.pending.length > 0
      ? color.yellow(`! ${report.pending.length} pending: run \`queue-doctor migrate up\``)
      : color.green('✓ every migration is applied'),
  );
  return lines.join('\n');
}

function renderPlan(output: Output, verb: 'apply' | 'revert', migrations: ExecutedMigration[]): string[] {
  const lines: string[] = [];
  for (const migration of migrations) {
    lines.push(output.color.bold(`-- would ${verb} ${label(migration)}`));
    for (const statement of migration.statements) lines.push(`${statement};`, '');
  }
  if (migrations.length > 0) lines.push(output.color.dim('dry run: nothing was changed'));
  return lines;
}

function label(migration: MigrationRef): string {
  return `${pad(migration.version)}_${migration.name}`;
}

function pad(version: number): string {
  return String(version).padStart(3, '0');
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}
