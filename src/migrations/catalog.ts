import { readdir, readFile } from 'node:fs/promises';
import { isIndexKey, type IndexKey } from './render.js';

/** sql/ ships with the package; this file is src/migrations/catalog.ts or dist/migrations/catalog.js. */
export const MIGRATIONS_DIR = new URL('../../sql/migrations/', import.meta.url);

/**
 * How the runner executes a step:
 *   sql           inside the migration's transaction (consecutive sql steps share one);
 *   create-index  alone and outside any transaction (CREATE INDEX CONCURRENTLY), after dropping
 *                 an INVALID index of the same name left by an interrupted run;
 *   drop-index    alone and outside any transaction (DROP INDEX CONCURRENTLY).
 */
export type StepKind = 'sql' | 'create-index' | 'drop-index';

export interface TemplateStep {
  kind: StepKind;
  /** The index an index step builds or drops (a key of INDEX_SUFFIXES); null for sql. */
  index: IndexKey | null;
  /** Exactly one SQL statement, still with placeholders. */
  template: string;
}

export interface MigrationDefinition {
  version: number;
  name: string;
  up: TemplateStep[];
  down: TemplateStep[];
}

const FILE_NAME = /^(\d{3})_([a-z0-9_]+)\.(up|down)\.sql$/;
const STEP_LINE = /^-- step: (\S+)(?: (\S+))?\s*$/;

/** Reads sql/migrations: NNN_name.up.sql and NNN_name.down.sql, numbered 001, 002, … without gaps. */
export async function loadMigrations(directory: URL = MIGRATIONS_DIR): Promise<MigrationDefinition[]> {
  const files = (await readdir(directory)).filter((file) => file.endsWith('.sql')).sort();
  const byVersion = new Map<number, { name: string; up?: string; down?: string }>();
  for (const file of files) {
    const match = FILE_NAME.exec(file);
    if (!match) throw new Error(`sql/migrations/${file}: expected a name like 001_some_change.up.sql`);
    const version = Number(match[1]);
    const entry = byVersion.get(version) ?? { name: match[2]! };
    if (entry.name !== match[2]) throw new Error(`sql/migrations: version ${match[1]} has two names (${entry.name}, ${match[2]})`);
    entry[match[3] as 'up' | 'down'] = await readFile(new URL(file, directory), 'utf8');
    byVersion.set(version, entry);
  }
  const versions = [...byVersion.keys()].sort((a, b) => a - b);
  return versions.map((version, position) => {
    const entry = byVersion.get(version)!;
    const label = `${String(version).padStart(3, '0')}_${entry.name}`;
    if (version !== position + 1) throw new Error(`sql/migrations: expected version ${position + 1}, found ${label}`);
    if (entry.up === undefined || entry.down === undefined) throw new Error(`sql/migrations: ${label} needs both an .up.sql and a .down.sql`);
    return { version, name: entry.name, up: parseSteps(entry.up, `${label}.up.sql`), down: parseSteps(entry.down, `${label}.down.sql`) };
  });
}

/**
 * Splits a template at its `-- step: KIND [INDEX]` lines. Splitting the template, not the
 * rendered text, means no value from the schema map can ever create or hide a step.
 */
export function parseSteps(template: string, origin: string): TemplateStep[] {
  const steps: TemplateStep[] = [];
  let current: { kind: StepKind; index: IndexKey | null; lines: string[] } | null = null;
  const finish = () => {
    if (!current) return;
    const text = current.lines.join('\n').trim();
    if (!hasStatement(text)) throw new Error(`${origin}: a "${current.kind}" step has no SQL`);
    steps.push({ kind: current.kind, index: current.index, template: text });
  };
  for (const line of template.split('\n')) {
    const marker = STEP_LINE.exec(line);
    if (!marker) {
      if (current) current.lines.push(line);
      else if (hasStatement(line)) throw new Error(`${origin}: SQL before the first "-- step:" line`);
      continue;
    }
    finish();
    const kind = marker[1]!;
    const index = marker[2] ?? null;
    if (kind === 'sql') {
      if (index !== null) throw new Error(`${origin}: "-- step: sql" takes no argument`);
      current = { kind, index: null, lines: [] };
    } else if (kind === 'create-index' || kind === 'drop-index') {
      if (index === null || !isIndexKey(index)) throw new Error(`${origin}: "-- step: ${kind}" needs a known index key, got ${index ?? 'nothing'}`);
      current = { kind, index, lines: [] };
    } else {
      throw new Error(`${origin}: unknown step kind "${kind}"`);
    }
  }
  finish();
  if (steps.length === 0) throw new Error(`${origin}: no steps`);
  return steps;
}

function hasStatement(text: string): boolean {
  return text
    .split('\n')
    .some((line) => line.trim() !== '' && !line.trim().startsWith('--'));
}
