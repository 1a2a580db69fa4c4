import { describe, expect, it } from 'vitest';
import { REMAPPED_MAP } from './fixtures.js';
import { indexNames, renderTemplate, type RenderContext } from '../../src/migrations/render.js';
import { loadMigrations, parseSteps } from '../../src/migrations/catalog.js';
import { schemaMapFingerprint } from '../../src/migrations/index.js';
import { requiredActiveSetIndexes } from '../../src/checks/indexes.js';
import { buildQueueSql, type QueueModel } from '../../src/schema/queueModel.js';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap, type SchemaMap } from '../../src/schemaMap.js';
import { QueueDoctorError } from '../../src/errors.js';

const contextFor = (map: SchemaMap, concurrently = true): RenderContext => ({ map, sql: buildQueueSql(map), concurrently });

describe('renderTemplate', () => {
  it('renders names as quoted identifiers and statuses and types as literals', () => {
    const map = parseSchemaMap({
      schema: 'Queue "A"',
      jobs: { table: 'Work Items', columns: { status: 'State' }, runIdPayloadKey: 'run' },
      statuses: { queued: "it's queued", running: 'run\\ning' },
      types: { export: 'EXPORT' },
    });
    const sql = renderTemplate(
      'SELECT {{col.status}}, {{jobRunId(j)}} FROM {{jobs}} j WHERE {{col.status}} IN ({{lit.queued}}, {{lit.running}}) AND {{name.jobs}} <> {{lit.export}} -- {{index.claim_order}} {{concurrently}}',
      contextFor(map, false),
    );
    expect(sql).toBe(
      `SELECT "State", (CASE WHEN (j."payload" ->> 'run') ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$' THEN (j."payload" ->> 'run')::uuid END) ` +
        `FROM "Queue ""A"""."Work Items" j WHERE "State" IN ('it''s queued', E'run\\\\ning') AND 'Work Items' <> 'EXPORT' -- "Work Items_qd_claim_order_idx"`,
    );
  });

  it('throws on an unknown placeholder and on stray braces', () => {
    const context = contextFor(DEFAULT_SCHEMA_MAP);
    expect(() => renderTemplate('SELECT {{col.nope}}', context, '009_x.up.sql')).toThrow(/^009_x\.up\.sql: unknown placeholder \{\{col\.nope\}\}/);
    expect(() => renderTemplate('SELECT {{ jobs }}', context)).toThrow(/unknown placeholder \{\{ jobs \}\}/);
    expect(() => renderTemplate('SELECT {{jobRunId(J-1)}}', context)).toThrow(/unknown placeholder/);
    expect(() => renderTemplate('SELECT {{jobs}', context)).toThrow(/stray placeholder brace/);
    expect(() => renderTemplate('SELECT jobs}}', context)).toThrow(/stray placeholder brace/);
  });

  it('refuses a schema map value that would end a dollar-quoted body', () => {
    const map = parseSchemaMap({ jobs: { table: 'jobs$claim$' } });
    const attempt = () => renderTemplate('CREATE FUNCTION f() RETURNS SETOF {{jobs}} AS $claim$ SELECT 1 $claim$', contextFor(map));
    expect(attempt).toThrow(QueueDoctorError);
    expect(attempt).toThrow(/\{\{jobs\}\} contains \$claim\$/);
    // Outside a dollar-quoted template the same name is just a quoted identifier.
    expect(renderTemplate('SELECT * FROM {{jobs}}', contextFor(map))).toBe('SELECT * FROM "public"."jobs$claim$"');
  });

  it('names the indexes exactly as the indexes check requires them', () => {
    for (const map of [DEFAULT_SCHEMA_MAP, REMAPPED_MAP, parseSchemaMap({ jobs: { table: 'q'.repeat(63) } })]) {
      const required = requiredActiveSetIndexes({ map, sql: buildQueueSql(map) } as QueueModel);
      const names = indexNames(map);
      expect([names.queued_ready, names.running_lease, names.failed_recent]).toEqual(required.map((index) => index.name));
      expect(Buffer.byteLength(names.claim_order)).toBeLessThanOrEqual(63);
    }
    expect(indexNames(REMAPPED_MAP).claim_order).toBe('background_tasks_qd_claim_order_idx');
  });
});

describe('migration files', () => {
  it('are numbered from 001 with an up and a down each, and every template renders on both maps', async () => {
    const migrations = await loadMigrations();
    expect(migrations.map((m) => [m.version, m.name])).toEqual([
      [1, 'active_set_indexes'],
      [2, 'balanced_claim'],
    ]);
    expect(migrations[0]!.up.map((s) => [s.kind, s.index])).toEqual([
      ['create-index', 'queued_ready'],
      ['create-index', 'running_lease'],
      ['create-index', 'failed_recent'],
      ['create-index', 'claim_order'],
    ]);
    expect(migrations[1]!.up.every((s) => s.kind === 'sql')).toBe(true);
    for (const map of [DEFAULT_SCHEMA_MAP, REMAPPED_MAP]) {
      for (const migration of migrations) {
        for (const step of [...migration.up, ...migration.down]) expect(() => renderTemplate(step.template, contextFor(map))).not.toThrow();
      }
    }
    const claim = migrations[1]!.up.map((s) => renderTemplate(s.template, contextFor(REMAPPED_MAP))).join('\n');
    expect(claim).toContain('-- queue-doctor:balanced-claim v1');
    expect(claim).toContain(`CREATE FUNCTION "queue"."grab_task"(`);
    const code = claim.replace(/--[^\n]*/g, '');
    expect(code).not.toMatch(/\bjobs\b|'QUEUED'|'RUNNING'|'COMPLETED'|'FAILED'|'EXPORT'|scheduled_at|lease_expires_at|final_report_json/);
  });

  it('rejects malformed step markers', () => {
    expect(() => parseSteps('SELECT 1', 'x.sql')).toThrow(/SQL before the first "-- step:" line/);
    expect(() => parseSteps('-- step: sometimes\nSELECT 1', 'x.sql')).toThrow(/unknown step kind "sometimes"/);
    expect(() => parseSteps('-- step: create-index nope\nSELECT 1', 'x.sql')).toThrow(/needs a known index key, got nope/);
    expect(() => parseSteps('-- step: sql\n-- only a comment\n', 'x.sql')).toThrow(/has no SQL/);
    expect(parseSteps('-- header\n-- step: sql\nSELECT 1\n-- step: drop-index claim_order\nDROP INDEX x', 'x.sql')).toEqual([
      { kind: 'sql', index: null, template: 'SELECT 1' },
      { kind: 'drop-index', index: 'claim_order', template: 'DROP INDEX x' },
    ]);
  });

  it('fingerprints a schema map by content, not by key order', () => {
    const reordered = JSON.parse(JSON.stringify({ claimFunction: DEFAULT_SCHEMA_MAP.claimFunction, ...DEFAULT_SCHEMA_MAP }));
    expect(schemaMapFingerprint(reordered)).toBe(schemaMapFingerprint(DEFAULT_SCHEMA_MAP));
    expect(schemaMapFingerprint(REMAPPED_MAP)).not.toBe(schemaMapFingerprint(DEFAULT_SCHEMA_MAP));
  });
});
