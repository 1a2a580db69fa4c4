import { describe, expect, it } from 'vitest';
import { auditCommandLine, suggestedCommandLine } from '../../src/repairs/commandLine.js';

describe('the command line kept in the audit log', () => {
  it('drops the connection string in every spelling, keeps the rest shell-quoted', () => {
    expect(auditCommandLine(['fix', '--all', '--database-url', 'postgres://app:s3cret@db/reports', '--json'])).toBe('queue-doctor fix --all --json');
    expect(auditCommandLine(['fix', '--database-url=postgres://app:s3cret@db/reports', '--premature'])).toBe('queue-doctor fix --premature');
    expect(auditCommandLine(['undo', '7', 'postgresql://app:s3cret@db/reports'])).toBe(`queue-doctor undo 7 '<connection string>'`);
    expect(auditCommandLine(['fix', '--config', 'my config.json', '--reprioritize', "5'0"])).toBe(`queue-doctor fix --config 'my config.json' --reprioritize '5'\\''0'`);
  });

  it('suggests the next command with the password masked', () => {
    expect(suggestedCommandLine(['fix', '--all', '--dry-run', '--database-url', 'postgres://app:s3cret@db/reports'], ['--dry-run'])).toBe(
      `queue-doctor fix --all --database-url 'postgres://app:***@db/reports'`,
    );
    expect(suggestedCommandLine(['fix', '--dry-run', '--database-url=postgres://app:s3cret@db/reports'], ['--dry-run'])).not.toContain('s3cret');
  });
});
