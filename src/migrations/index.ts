import { createHash } from 'node:crypto';
import { DEFAULT_SESSION_SETTINGS, type Database, type Queryable } from '../db/database.js';
import { QueueDoctorError } from '../errors.js';
import { explainLockTimeout } from '../inspect.js';
import { loadQueueModel } from '../schema/queueModel.js';
import type { SchemaMap } from '../schemaMap.js';
import { quoteIdent } from '../sql.js';
import { loadMigrations, type MigrationDefinition, type StepKind, type TemplateStep } from './catalog.js';
import { indexNames, renderTemplate, type RenderContext } from './render.js';
import {
  acquireMigrationLock,
  ensureTrackingTables,
  MIGRATIONS_TABLE,
  readApplied,
  recordApplied,
  recordReverted,
  SAVED_FUNCTIONS_TABLE,
  type TrackedMigration,
} from './tracking.js';

export { MIGRATION_LOCK_KEYS, MIGRATIONS_TABLE, SAVED_FUNCTIONS_TABLE } from './tracking.js';

export interface MigrationRef {
  version: number;
  name: string;
}

export interface AppliedMigration extends MigrationRef {
  appliedAt: string;
  appliedBy: string;
  checksum: string;
  schemaMapFingerprint: string;
  /** The SQL this version of queue-doctor renders differs from what was applied (a newer template). */
  changedSinceApplied: boolean;
}

export interface MigrationStatus {
  applied: AppliedMigration[];
  pending: MigrationRef[];
  /** Fingerprint of the schema map in use now. */
  schemaMapFingerprint: string;
  /** Some migration was applied with another schema map: up and down refuse until it matches. */
  schemaMapChanged: boolean;
}

export interface ExecutedMigration extends MigrationRef {
  /** The rendered statements, in order (in a dry run: those that would run). */
  statements: string[];
  durationMs: number;
}

export interface MigrateUpResult {
  dryRun: boolean;
  /** Applied by this run (in a dry run: would be applied). */
  applied: ExecutedMigration[];
  /** Applied before this run; a second `up` lists everything here and applies nothing. */
  alreadyApplied: MigrationRef[];
  /** Still pending after this run (in a dry run: everything it would apply). */
  pending: MigrationRef[];
}

export interface MigrateDownResult {
  dryRun: boolean;
  /** Reverted by this run, newest first (in a dry run: would be reverted). */
  reverted: ExecutedMigration[];
  /** Still applied after this run. */
  applied: MigrationRef[];
  pending: MigrationRef[];
  /** What stays behind once nothing is applied any more. */
  note: string | null;
}

export interface MigrateOptions {
  /** Render and report, change nothing (no tracking table is created either). */
  dryRun?: boolean;
  onProgress?: (message: string) => void;
  /** lock_timeout for each migration's transaction and each index statement (default 3 s). */
  lockTimeoutMs?: number;
}

export interface MigrateDownOptions extends MigrateOptions {
  /** Revert every applied migration, newest first, instead of only the newest. */
  all?: boolean;
}

export const LEFT_BEHIND_NOTE = `${MIGRATIONS_TABLE} and ${SAVED_FUNCTIONS_TABLE} stay behind, empty (schema queue_doctor); drop them with DROP SCHEMA queue_doctor CASCADE if queue-doctor keeps nothing else there`;

interface RenderedStep {
  kind: StepKind;
  /** Unquoted name of the index of an index step. */
  indexName: string | null;
  sql: string;
}

interface Plan {
  context: RenderContext;
  definitions: MigrationDefinition[];
  fingerprint: string;
}

/** Which migrations are applied and which are pending. Read-only; takes no lock. */
export async function migrationStatus(db: Database, map: SchemaMap): Promise<MigrationStatus> {
  return db.transaction(
    async (tx) => {
      const plan = await preparePlan(tx, db, map);
      const tracked = await readApplied(tx);
      return describeStatus(plan, tracked);
    },
    { readOnly: true },
  );
}

/** Applies every pending migration in order. Running it again is a no-op. */
export async function migrateUp(db: Database, map: SchemaMap, options: MigrateOptions = {}): Promise<MigrateUpResult> {
  const dryRun = options.dryRun ?? false;
  return withMigrationLock(db, map, async () => {
    const plan = await preparePlan(db, db, map);
    if (!dryRun) await db.transaction((tx) => ensureTrackingTables(tx));
    const tracked = await readApplied(db);
    refuseOnMapChange(plan, tracked);
    const appliedVersions = new Set(tracked.map((row) => row.version));
    const alreadyApplied = plan.definitions.filter((d) => appliedVersions.has(d.version)).map(ref);
    const pending = plan.definitions.filter((d) => !appliedVersions.has(d.version));

    const applied: ExecutedMigration[] = [];
    for (const definition of pending) {
      const steps = renderSteps(definition.up, plan.context, definition, 'up');
      if (dryRun) {
        applied.push({ ...ref(definition), statements: steps.map((s) => s.sql), durationMs: 0 });
        continue;
      }
      const started = Date.now();
      options.onProgress?.(`applying ${label(definition)}`);
      await runSteps(db, steps, plan.context, options, (tx) =>
        recordApplied(tx, { version: definition.version, name: definition.name, checksum: checksum(steps), fingerprint: plan.fingerprint }),
      );
      applied.push({ ...ref(definition), statements: steps.map((s) => s.sql), durationMs: Date.now() - started });
    }
    return { dryRun, applied, alreadyApplied, pending: dryRun ? pending.map(ref) : [] };
  });
}

/** Reverts the newest applied migration, or with `all` every applied one, newest first. */
export async function migrateDown(db: Database, map: SchemaMap, options: MigrateDownOptions = {}): Promise<MigrateDownResult> {
  const dryRun = options.dryRun ?? false;
  return withMigrationLock(db, map, async () => {
    const plan = await preparePlan(db, db, map);
    const tracked = await readApplied(db);
    refuseOnMapChange(plan, tracked);
    const unknown = tracked.filter((row) => !plan.definitions.some((d) => d.version === row.version));
    if (unknown.length > 0) {
      throw new QueueDoctorError(
        'refused',
        `migration ${unknown.map((row) => `${pad(row.version)}_${row.name}`).join(', ')} was applied by a newer queue-doctor; this one cannot revert it`,
        'run migrate down with the queue-doctor version that applied it',
      );
    }
    const newestFirst = [...tracked].reverse();
    const targets = (options.all ? newestFirst : newestFirst.slice(0, 1)).map((row) => plan.definitions.find((d) => d.version === row.version)!);

    const reverted: ExecutedMigration[] = [];
    for (const definition of targets) {
      const steps = renderSteps(definition.down, plan.context, definition, 'down');
      if (dryRun) {
        reverted.push({ ...ref(definition), statements: steps.map((s) => s.sql), durationMs: 0 });
        continue;
      }
      const started = Date.now();
      options.onProgress?.(`reverting ${label(definition)}`);
      await runSteps(db, steps, plan.context, options, (tx) => recordReverted(tx, definition.version));
      reverted.push({ ...ref(definition), statements: steps.map((s) => s.sql), durationMs: Date.now() - started });
    }
    const revertedVersions = new Set(reverted.map((r) => r.version));
    const stillApplied = plan.definitions.filter((d) => tracked.some((row) => row.version === d.version) && !revertedVersions.has(d.version));
    const pending = plan.definitions.filter((d) => !stillApplied.includes(d));
    const leavesNothing = stillApplied.length === 0 && tracked.length > 0;
    return { dryRun, reverted, applied: stillApplied.map(ref), pending: pending.map(ref), note: leavesNothing ? LEFT_BEHIND_NOTE : null };
  });
}

async function withMigrationLock<T>(db: Database, map: SchemaMap, work: () => Promise<T>): Promise<T> {
  const release = await acquireMigrationLock(db);
  try {
    return await work();
  } catch (error) {
    throw await explainLockTimeout(db, map, error);
  } finally {
    // A broken connection has released the lock already; nothing more to do then.
    await release().catch(() => undefined);
  }
}

async function preparePlan(reader: Queryable, db: Database, map: SchemaMap): Promise<Plan> {
  const model = await loadQueueModel(reader, map);
  const definitions = await loadMigrations();
  // PGlite is the only database without CREATE INDEX CONCURRENTLY (and it is single-session anyway).
  const context: RenderContext = { map, sql: model.sql, concurrently: db.kind !== 'pglite' };
  return { context, definitions, fingerprint: schemaMapFingerprint(map) };
}

function describeStatus(plan: Plan, tracked: TrackedMigration[]): MigrationStatus {
  const applied = tracked.map((row) => {
    const definition = plan.definitions.find((d) => d.version === row.version);
    const current = definition ? checksum(renderSteps(definition.up, plan.context, definition, 'up')) : null;
    return {
      version: row.version,
      name: row.name,
      appliedAt: row.appliedAt,
      appliedBy: row.appliedBy,
      checksum: row.checksum,
      schemaMapFingerprint: row.schemaMapFingerprint,
      changedSinceApplied: row.schemaMapFingerprint === plan.fingerprint && current !== row.checksum,
    };
  });
  const pending = plan.definitions.filter((d) => !tracked.some((row) => row.version === d.version)).map(ref);
  return { applied, pending, schemaMapFingerprint: plan.fingerprint, schemaMapChanged: tracked.some((row) => row.schemaMapFingerprint !== plan.fingerprint) };
}

/**
 * Migrations render names from the schema map. Reverting with another map would drop other
 * indexes and restore the wrong function, so a changed map stops up and down alike.
 */
function refuseOnMapChange(plan: Plan, tracked: TrackedMigration[]): void {
  const other = tracked.filter((row) => row.schemaMapFingerprint !== plan.fingerprint);
  if (other.length === 0) return;
  throw new QueueDoctorError(
    'refused',
    `migration ${other.map((row) => `${pad(row.version)}_${row.name}`).join(', ')} was applied with another schema map (fingerprint ${other[0]!.schemaMapFingerprint}, now ${plan.fingerprint})`,
    'run with the config file it was applied with (--config FILE); to switch maps, migrate down --all with the old one first',
  );
}

function renderSteps(steps: TemplateStep[], context: RenderContext, definition: MigrationDefinition, direction: 'up' | 'down'): RenderedStep[] {
  const names = indexNames(context.map);
  const origin = `${label(definition)}.${direction}.sql`;
  return steps.map((step) => ({
    kind: step.kind,
    indexName: step.index === null ? null : names[step.index],
    sql: renderTemplate(step.template, context, origin),
  }));
}

/**
 * Consecutive sql steps run in one transaction with lock_timeout; index steps run alone, outside
 * any transaction. `finish` (the tracking row) joins the last transaction, or gets its own when
 * the migration ends with an index step, so a migration counts as applied only once all of it is.
 */
async function runSteps(db: Database, steps: RenderedStep[], context: RenderContext, options: MigrateOptions, finish: (tx: Queryable) => Promise<void>): Promise<void> {
  const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_SESSION_SETTINGS.lockTimeoutMs;
  const inTransaction = async (group: RenderedStep[], withFinish: boolean) => {
    await db.transaction(async (tx) => {
      await tx.query(`SELECT set_config('lock_timeout', $1, true)`, [`${lockTimeoutMs}ms`]);
      for (const step of group) await tx.query(step.sql);
      if (withFinish) await finish(tx);
    });
  };

  let group: RenderedStep[] = [];
  for (const [position, step] of steps.entries()) {
    if (step.kind === 'sql') {
      group.push(step);
      if (position === steps.length - 1) await inTransaction(group, true);
      continue;
    }
    if (group.length > 0) await inTransaction(group, false);
    group = [];
    await runIndexStep(db, step, context, options, lockTimeoutMs);
  }
  if (steps.at(-1)?.kind !== 'sql') await inTransaction([], true);
}

type IndexState = 'missing' | 'valid' | 'invalid';

async function runIndexStep(db: Database, step: RenderedStep, context: RenderContext, options: MigrateOptions, lockTimeoutMs: number): Promise<void> {
  const name = step.indexName!;
  const qualified = `${quoteIdent(context.map.schema)}.${quoteIdent(name)}`;
  const dropLeftover = `DROP INDEX ${context.concurrently ? 'CONCURRENTLY ' : ''}IF EXISTS ${qualified}`;
  const how = context.concurrently ? ' CONCURRENTLY' : '';
  await withIndexBuildSettings(db, lockTimeoutMs, async () => {
    if (step.kind === 'drop-index') {
      options.onProgress?.(`DROP INDEX${how} ${name}`);
      await db.query(step.sql);
      return;
    }
    if ((await indexState(db, context.map.schema, name)) === 'invalid') {
      options.onProgress?.(`dropping ${name}: INVALID, left by an interrupted build`);
      await db.query(dropLeftover);
    }
    options.onProgress?.(`CREATE INDEX${how} ${name}`);
    try {
      await db.query(step.sql);
    } catch (error) {
      // A failed concurrent build leaves an INVALID index that writers keep maintaining; remove it
      // now if we can (the next run would otherwise do it).
      if ((await indexState(db, context.map.schema, name).catch(() => null)) === 'invalid') {
        await db.query(dropLeftover).catch(() => undefined);
      }
      throw error;
    }
  });
}

/**
 * A concurrent index build on a big table legitimately runs for minutes without blocking anyone,
 * so statement_timeout is lifted for it; lock_timeout stays, so it never queues behind a lock.
 */
async function withIndexBuildSettings(db: Database, lockTimeoutMs: number, work: () => Promise<void>): Promise<void> {
  const previous = await db.query<{ statement: string; lock: string }>(
    `SELECT current_setting('statement_timeout') AS statement, current_setting('lock_timeout') AS lock`,
  );
  await db.query(`SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', $1, false)`, [`${lockTimeoutMs}ms`]);
  try {
    await work();
  } finally {
    const { statement, lock } = previous.rows[0]!;
    await db.query(`SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false)`, [statement, lock]).catch(() => undefined);
  }
}

async function indexState(db: Queryable, schema: string, name: string): Promise<IndexState> {
  const result = await db.query<{ valid: boolean }>(
    `SELECT i.indisvalid AS valid
       FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       JOIN pg_index i ON i.indexrelid = c.oid
      WHERE n.nspname = $1 AND c.relname = $2`,
    [schema, name],
  );
  const row = result.rows[0];
  if (!row) return 'missing';
  return row.valid ? 'valid' : 'invalid';
}

/** Identifies a schema map by content, whatever the key order of the file it came from. */
export function schemaMapFingerprint(map: SchemaMap): string {
  return createHash('sha256').update(canonicalJson(map)).digest('hex').slice(0, 16);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, inner]) => `${JSON.stringify(key)}:${canonicalJson(inner)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

function checksum(steps: RenderedStep[]): string {
  return createHash('sha256').update(steps.map((step) => `${step.kind}\n${step.sql}`).join('\n;\n')).digest('hex');
}

function ref(definition: MigrationDefinition | MigrationRef): MigrationRef {
  return { version: definition.version, name: definition.name };
}

function pad(version: number): string {
  return String(version).padStart(3, '0');
}

function label(definition: MigrationRef): string {
  return `${pad(definition.version)}_${definition.name}`;
}
