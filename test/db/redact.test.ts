import { describe, expect, it } from 'vitest';
import { redactConnectionString, scrubSecrets } from '../../src/db/redact.js';
import { resolveConnectionTarget } from '../../src/db/connect.js';

describe('redactConnectionString', () => {
  it.each([
    ['postgres://app:s3cret@db:5432/reports', 'postgres://app:***@db:5432/reports'],
    ['postgres://app@db/reports', 'postgres://app@db/reports'],
    ['postgres://app:s3cret@db/reports?sslmode=require&password=other', 'postgres://app:***@db/reports?sslmode=require&password=***'],
    ['host=db user=app password=s3cret dbname=reports', 'host=db user=app password=*** dbname=reports'],
  ])('%s', (input, expected) => {
    expect(redactConnectionString(input)).toBe(expected);
  });

  it('scrubs secrets from arbitrary messages', () => {
    expect(scrubSecrets('password "s3cret" rejected for s3cret', ['s3cret'])).toBe('password "***" rejected for ***');
  });
});

describe('resolveConnectionTarget', () => {
  it('prefers --database-url, then DATABASE_URL, then PG* variables, then the demo', () => {
    const env = { DATABASE_URL: 'postgres://env:pw@envhost/db', PGHOST: 'pghost' };
    expect(resolveConnectionTarget({ databaseUrl: 'postgres://flag:pw@flaghost/db' }, env)).toMatchObject({ kind: 'url', source: '--database-url', label: 'postgres://flag:***@flaghost/db' });
    expect(resolveConnectionTarget({}, env)).toMatchObject({ kind: 'url', source: 'DATABASE_URL', label: 'postgres://env:***@envhost/db' });
    expect(resolveConnectionTarget({}, { PGHOST: 'pghost', PGDATABASE: 'reports' })).toMatchObject({ kind: 'libpq' });
    expect(resolveConnectionTarget({}, {})).toEqual({ kind: 'demo', reason: 'nothing-configured' });
    expect(resolveConnectionTarget({ demo: true }, env)).toEqual({ kind: 'demo', reason: 'forced' });
  });

  it('refuses an empty --database-url and --demo together with a URL', () => {
    expect(() => resolveConnectionTarget({ databaseUrl: ' ' }, {})).toThrow(/empty/);
    expect(() => resolveConnectionTarget({ databaseUrl: 'postgres://x@y/z', demo: true }, {})).toThrow(/only one/);
  });
});
