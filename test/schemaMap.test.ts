import { describe, expect, it } from 'vitest';
import { DEFAULT_SCHEMA_MAP, parseSchemaMap } from '../src/schemaMap.js';
import { parseDurationSeconds } from '../src/duration.js';
import { QueueDoctorError } from '../src/errors.js';

describe('parseSchemaMap', () => {
  it('fills every key it is not given with the reference names', () => {
    expect(parseSchemaMap({})).toEqual(DEFAULT_SCHEMA_MAP);
    const map = parseSchemaMap({ jobs: { table: 'background_jobs', columns: { status: 'state' }, runIdPayloadKey: 'runId' }, statuses: { queued: 'pending' } });
    expect(map.jobs.table).toBe('background_jobs');
    expect(map.jobs.columns.status).toBe('state');
    expect(map.jobs.columns.priority).toBe('priority');
    expect(map.jobs.runIdPayloadKey).toBe('runId');
    expect(map.statuses).toMatchObject({ queued: 'pending', running: 'RUNNING' });
  });

  it.each([
    [{ jobs: { tabel: 'x' } }, /"jobs\.tabel" is not a known key/],
    [{ jobs: { columns: { id: '' } } }, /"jobs\.columns\.id" must be a non-empty string/],
    [{ jobs: { columns: { id: 42 } } }, /"jobs\.columns\.id" must be a non-empty string/],
    [{ schema: 'x'.repeat(64) }, /63-byte identifier limit/],
    [{ statuses: { queued: 'SAME', running: 'SAME' } }, /different value/],
    [[], /must be an object/],
    [{ runs: 'report_runs' }, /"runs" must be an object/],
    [{ claimFunction: 'a\nb' }, /control characters/],
  ])('rejects %j', (input, message) => {
    expect(() => parseSchemaMap(input)).toThrow(message);
    try {
      parseSchemaMap(input);
    } catch (error) {
      expect(error).toBeInstanceOf(QueueDoctorError);
      expect((error as QueueDoctorError).kind).toBe('usage');
    }
  });
});

describe('parseDurationSeconds', () => {
  it.each([
    ['120', 120],
    ['120s', 120],
    ['2m', 120],
    ['1.5h', 5400],
    ['500ms', 0.5],
  ])('reads %s', (input, seconds) => {
    expect(parseDurationSeconds(input, '--x')).toBe(seconds);
  });

  it.each(['', 'soon', '-5s', '5 minutes', '1e9', '8d', '999999h'])('rejects %j', (input) => {
    expect(() => parseDurationSeconds(input, '--x')).toThrow(/--x/);
  });
});
