import type { Command } from 'commander';
import { formatDuration, parseDurationSeconds } from '../../duration.js';
import { usageError } from '../../errors.js';
import { DEFAULT_SIMULATE_OPTIONS } from '../../defaults.js';
import type { ClaimVariantName, SimulateOptions, SimulationReport } from '../../simulate/engine.js';
import { EXIT } from '../exit.js';
import { createOutput, type Output } from '../io.js';
import { addConnectionOptions, addOutputOptions, type ConnectionOptions, type OutputOptions } from '../options.js';
import { renderTable, toJson } from '../render/format.js';
import type { CommandResult } from '../main.js';

interface SimulateFlags extends ConnectionOptions, OutputOptions {
  claim: string;
  workers: string;
  sections: string;
  exports: string;
  lease: string;
  crashRate: string;
  duration: string;
  seed: string;
}

const d = DEFAULT_SIMULATE_OPTIONS;

export function registerSimulate(program: Command, result: CommandResult): void {
  const command = program
    .command('simulate')
    .option('--claim <variant>', 'legacy, balanced or both', 'both')
    .option('--workers <n>', 'concurrent simulated workers', String(d.workers))
    .option('--sections <n>', 'section-run jobs (a tenth of them, at most 40, crash their worker every time)', String(d.sections))
    .option('--exports <n>', 'export jobs waiting since before the run starts', String(d.exports))
    .option('--lease <duration>', 'lease each claim takes', `${d.leaseSeconds}s`)
    .option('--crash-rate <r>', 'chance that a worker crashes on a job (its lease then expires)', String(d.crashRate))
    .option('--duration <duration>', 'virtual time to simulate', `${d.durationSeconds / 60}m`)
    .option('--seed <n>', 'seed of every random decision', String(d.seed));
  addConnectionOptions(command);
  addOutputOptions(command);
  command.addHelpText(
    'after',
    `
Examples:
  $ queue-doctor simulate                                  # on the embedded demo database, no server needed
  $ queue-doctor simulate --claim both --workers 16 --crash-rate 0.3 --json
  $ queue-doctor simulate --database-url postgres://app@db/reports --duration 30m

It never touches your tables: inside one transaction that it always rolls back, it creates a schema
queue_doctor_sim_<random> and installs the reference tables and both claim functions there (reading
a virtual clock instead of now(), so minutes of incident replay in seconds). Nothing is committed,
so even Ctrl-C leaves nothing behind. It needs CREATE on the database. Same --seed, same decisions.

Exit codes: 0 the simulation ran (the comparison is information, not a verdict on your database),
2 could not run (bad flag, connection).`,
  );
  command.action(async (flags: SimulateFlags) => {
    const { runSimulation, validateSimulateOptions } = await import('../../simulate/engine.js');
    const output = await createOutput(process.env, flags.color === false);
    const { withSession } = await import('../session.js');
    result.json = Boolean(flags.json);
    const options = validateSimulateOptions(parseFlags(flags));
    const progress = progressLine(output);
    const started = performance.now();
    const report = await withSession(flags, output, ({ db }) => runSimulation(db, options, progress));
    progress?.(`simulated ${report.variants.map((v) => v.name).join(' and ')} in ${((performance.now() - started) / 1000).toFixed(1)}s`);
    result.exitCode = EXIT.ok;
    if (flags.json) {
      output.out(toJson({ variants: report.variants }));
      return;
    }
    output.out(await renderSimulation(output, report));
  });
}

function parseFlags(flags: SimulateFlags): SimulateOptions {
  const number = (value: string, flag: string) => {
    if (!/^\s*-?(\d+(\.\d*)?|\.\d+)\s*$/.test(value)) throw usageError(`--${flag} expects a number, got "${value.slice(0, 40)}"`);
    return Number(value);
  };
  const variants: Record<string, ClaimVariantName[]> = { legacy: ['legacy'], balanced: ['balanced'], both: ['legacy', 'balanced'] };
  const chosen = variants[flags.claim];
  if (!chosen) throw usageError(`--claim expects legacy, balanced or both, got "${flags.claim.slice(0, 40)}"`);
  return {
    variants: chosen,
    workers: number(flags.workers, 'workers'),
    sections: number(flags.sections, 'sections'),
    exports: number(flags.exports, 'exports'),
    leaseSeconds: parseDurationSeconds(flags.lease, '--lease'),
    crashRate: number(flags.crashRate, 'crash-rate'),
    durationSeconds: parseDurationSeconds(flags.duration, '--duration'),
    seed: number(flags.seed, 'seed'),
  };
}

/** Progress on a terminal only, each message replacing the previous one (one line, not twenty). */
function progressLine(output: Output): ((message: string) => void) | undefined {
  if (!output.interactive) return undefined;
  const replace = process.env.TERM !== 'dumb';
  let shown = false;
  return (message) => {
    output.err(`${shown && replace ? '\x1b[1A\x1b[2K' : ''}${output.color.dim(`… ${message}`)}`);
    shown = true;
  };
}

const BARS = '▁▂▃▄▅▆▇█';

/** Exports still waiting over virtual time: a flat top line is starvation at a glance. */
export function sparkline(values: readonly number[], max: number): string {
  return values.map((value) => (max <= 0 ? BARS[0] : BARS[Math.min(BARS.length - 1, Math.round((value / max) * (BARS.length - 1)))])).join('');
}

async function renderSimulation(output: Output, report: SimulationReport): Promise<string> {
  const { color } = output;
  const o = report.options;
  const lines = [
    color.bold('queue-doctor simulate — the incident, replayed'),
    color.dim(`${o.workers} workers, ${o.sections} sections, ${o.exports} exports, lease ${o.leaseSeconds}s, crash rate ${o.crashRate}, ${formatDuration(o.durationSeconds)} of virtual time, seed ${o.seed}`),
    '',
  ];
  const row = (label: string, value: (v: SimulationReport['variants'][number]) => unknown) =>
    Object.fromEntries([['', label], ...report.variants.map((v) => [v.name, value(v)])]);
  lines.push(
    await renderTable(color, [
      row('claims', (v) => v.claims),
      row('jobs completed', (v) => v.completed),
      row('exports claimed', (v) => `${v.exportsClaimed} of ${v.exportsTotal}`),
      row('claims until the first export', (v) => v.firstExportAfterClaims ?? 'never'),
      row('export wait p50', (v) => formatDuration(v.exportWaitMs.p50 / 1000)),
      row('export wait p95', (v) => formatDuration(v.exportWaitMs.p95 / 1000)),
      row('export wait max', (v) => formatDuration(v.exportWaitMs.max / 1000)),
      row('re-claims of expired leases', (v) => v.expiredReclaims),
      row('jobs dead-lettered', (v) => v.deadLettered),
      row('claims per second (wall)', (v) => v.claimsPerSecond),
    ]),
  );
  lines.push('', color.bold('Exports still waiting over time'));
  const width = Math.max(...report.variants.map((v) => v.name.length));
  for (const variant of report.variants) lines.push(`  ${variant.name.padEnd(width)}  ${sparkline(variant.series, o.exports)}  (0 → ${formatDuration(o.durationSeconds)})`);
  lines.push('');
  for (const variant of report.variants) lines.push(`${variant.exportsClaimed === variant.exportsTotal ? color.green('✓') : color.red('✗')} ${variant.verdict}`);
  return lines.join('\n');
}
