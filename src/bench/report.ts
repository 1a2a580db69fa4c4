import type { ClaimVariant, RoundResult } from './claims.js';

export interface Environment {
  postgres: string;
  settings: Record<string, string>;
  node: string;
  cpus: string;
  memory: string;
  server: string;
}

/** Median and every sample in the order they were taken, so rounds can be paired and their spread seen. */
export interface Figure {
  median: number;
  samples: number[];
}

export interface ClaimFigure extends Figure {
  /** Median over the rounds; null where the server's statistics could not be read. */
  buffersPerCycle: number | null;
}

export interface BenchReport {
  environment: Environment;
  settings: { rounds: number; seconds: number; concurrency: number[]; expiredLeases: number; finishedRows: number; activeJobs: number; repeats: number };
  /** cycles per second, by variant then by number of workers */
  throughput: Record<ClaimVariant, Record<string, ClaimFigure>>;
  degradation: { workers: number; clean: ClaimFigure; expiredLeases: ClaimFigure; finishedRows: ClaimFigure };
  inspect: { noFinishedMs: Figure; finishedMs: Figure };
  startup: { bareNodeMs: Figure; versionMs: Figure; helpMs: Figure; inspectDemoMs: Figure };
  targets: Target[];
  elapsedSeconds: number;
}

export interface Target {
  target: string;
  measured: number;
  bound: string;
  pass: boolean;
}

export function figure(samples: number[]): Figure {
  return { median: Math.round(median(samples)), samples: samples.map((value) => Math.round(value)) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

export function claimFigure(rounds: RoundResult[]): ClaimFigure {
  const buffers = rounds.map((round) => round.buffersPerCycle).filter((value): value is number => value !== null);
  return {
    ...figure(rounds.map((round) => round.cyclesPerSecond)),
    buffersPerCycle: buffers.length === rounds.length && buffers.length > 0 ? Math.round(median(buffers) * 10) / 10 : null,
  };
}

/**
 * a / b as the median of the per-round ratios: sample i of both was taken in the same round, a few
 * seconds apart, so pairing them cancels the drift of a shared machine that a ratio of medians keeps.
 */
export function pairedRatio(a: Figure, b: Figure): number {
  const pairs = a.samples.flatMap((value, index) => (b.samples[index] ? [value / b.samples[index]!] : []));
  return pairs.length === 0 ? 0 : Math.round(median(pairs) * 100) / 100;
}

export function judge(report: Omit<BenchReport, 'targets' | 'elapsedSeconds'>): Target[] {
  const targets: Target[] = [];
  const at = (variant: ClaimVariant, workers: number) => report.throughput[variant][String(workers)];
  for (const workers of [4, 8]) {
    const balanced = at('balanced', workers);
    const minimal = at('minimal', workers);
    if (!balanced || !minimal) continue;
    const measured = pairedRatio(balanced, minimal);
    targets.push({ target: `balanced vs minimal, ${workers} workers`, measured, bound: '≥ 0.9', pass: measured >= 0.9 });
  }
  for (const workers of report.settings.concurrency) {
    const balanced = at('balanced', workers);
    const legacy = at('legacy', workers);
    if (!balanced || !legacy) continue;
    const measured = pairedRatio(balanced, legacy);
    targets.push({ target: `balanced vs legacy, ${workers} worker${workers === 1 ? '' : 's'}`, measured, bound: '≥ 1.0', pass: measured >= 1 });
  }
  const { degradation, inspect, startup } = report;
  const expired = pairedRatio(degradation.expiredLeases, degradation.clean);
  targets.push({ target: `balanced, ${count(report.settings.expiredLeases)} expired leases vs clean`, measured: expired, bound: '≥ 0.7', pass: expired >= 0.7 });
  const finished = pairedRatio(degradation.finishedRows, degradation.clean);
  targets.push({ target: `balanced, ${count(report.settings.finishedRows)} finished rows vs clean`, measured: finished, bound: '≥ 0.9', pass: finished >= 0.9 });
  const inspectRatio = pairedRatio(inspect.finishedMs, inspect.noFinishedMs);
  targets.push({ target: `inspect, ${count(report.settings.finishedRows)} finished rows vs none`, measured: inspectRatio, bound: '≤ 1.5', pass: inspectRatio <= 1.5 });
  const help = pairedRatio(startup.helpMs, startup.bareNodeMs);
  targets.push({ target: `--help vs bare node`, measured: help, bound: '≤ 2.5', pass: help <= 2.5 });
  return targets;
}

const count = (n: number) => n.toLocaleString('en');

/** "3,484 ±4%": the median and half the spread of the rounds around it. */
function withSpread(value: Figure): string {
  if (value.samples.length < 2 || value.median === 0) return count(value.median);
  const spread = (Math.max(...value.samples) - Math.min(...value.samples)) / 2 / value.median;
  return `${count(value.median)} ±${Math.round(spread * 100)}%`;
}

export async function render(report: BenchReport, variants: readonly ClaimVariant[]): Promise<string> {
  const { default: Table } = await import('cli-table3');
  const table = (head: string[], rows: string[][]) => {
    const t = new Table({ head, style: { head: [], border: [] } });
    for (const row of rows) t.push(row);
    return t.toString();
  };
  const e = report.environment;
  const s = report.settings;
  const workers = s.concurrency;
  const columns = workers.map((w) => `${w} worker${w === 1 ? '' : 's'}`);
  const cell = (variant: ClaimVariant, w: number) => report.throughput[variant][String(w)];
  const ratioRow = (a: ClaimVariant, b: ClaimVariant) => [
    `${a} / ${b}`,
    ...workers.map((w) => {
      const x = cell(a, w);
      const y = cell(b, w);
      return x && y ? pairedRatio(x, y).toFixed(2) : '';
    }),
  ];
  const buffers = (value: ClaimFigure | undefined) => (value?.buffersPerCycle == null ? 'n/a' : value.buffersPerCycle.toFixed(1));
  const d = report.degradation;
  const i = report.inspect;
  const u = report.startup;
  const settings = Object.entries(e.settings)
    .map(([name, value]) => `${name}=${value}`)
    .join(', ');
  return [
    `PostgreSQL ${e.postgres} (${e.server}): ${settings}`,
    `Machine: ${e.cpus}, ${e.memory}; Node ${e.node}`,
    `Claims: median of ${s.rounds} round(s) of ${s.seconds} s, variants interleaved; ± is half the spread of the rounds.`,
    `Commands: median of ${s.repeats} interleaved runs. Ratios: median of the per-round (per-run) ratios.`,
    '',
    'Claim + complete cycles per second',
    table(['variant', ...columns], [
      ...variants.map((variant) => [variant, ...workers.map((w) => (cell(variant, w) ? withSpread(cell(variant, w)!) : ''))]),
      ratioRow('balanced', 'minimal'),
      ratioRow('balanced', 'legacy'),
      ratioRow('balanced', 'legacy-qd-indexes'),
      ratioRow('balanced', 'cte'),
    ]),
    '',
    'Work per cycle: shared-buffer pages of jobs and its indexes (machine noise does not move these)',
    table(['variant', ...columns], variants.map((variant) => [variant, ...workers.map((w) => buffers(cell(variant, w)))])),
    '',
    `Balanced claim with dead weight present (${d.workers} workers)`,
    table(
      ['queue', 'cycles/s', 'vs clean', 'pages/cycle'],
      [
        ['clean', withSpread(d.clean), '1.00', buffers(d.clean)],
        [`+ ${count(s.expiredLeases)} expired leases (priority 1000)`, withSpread(d.expiredLeases), pairedRatio(d.expiredLeases, d.clean).toFixed(2), buffers(d.expiredLeases)],
        [`+ ${count(s.finishedRows)} finished rows`, withSpread(d.finishedRows), pairedRatio(d.finishedRows, d.clean).toFixed(2), buffers(d.finishedRows)],
      ],
    ),
    '',
    'End to end (ms, wall clock, process start to exit)',
    table(
      ['command', 'ms', 'ratio'],
      [
        [`inspect --json, ${count(s.activeJobs)} active jobs, no finished rows`, count(i.noFinishedMs.median), '1.00'],
        [`inspect --json, same + ${count(s.finishedRows)} finished rows`, count(i.finishedMs.median), pairedRatio(i.finishedMs, i.noFinishedMs).toFixed(2)],
        ["node -e ''", count(u.bareNodeMs.median), '1.00'],
        ['queue-doctor --version', count(u.versionMs.median), pairedRatio(u.versionMs, u.bareNodeMs).toFixed(2)],
        ['queue-doctor --help', count(u.helpMs.median), pairedRatio(u.helpMs, u.bareNodeMs).toFixed(2)],
        ['queue-doctor inspect --json (demo, PGlite)', count(u.inspectDemoMs.median), pairedRatio(u.inspectDemoMs, u.bareNodeMs).toFixed(2)],
      ],
    ),
    '',
    'Targets',
    table(
      ['target', 'measured', 'bound', ''],
      report.targets.map((t) => [t.target, t.measured.toFixed(2), t.bound, t.pass ? 'pass' : 'MISS']),
    ),
    `(${Math.round(report.elapsedSeconds)} s in all)`,
  ].join('\n');
}
