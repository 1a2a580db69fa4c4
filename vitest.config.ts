import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/globalSetup.ts'],
    // Each file makes its own database; two at a time suits a 2-core machine.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Tests must never see a developer's real database.
    env: { DATABASE_URL: '', PGHOST: '', PGDATABASE: '', PGUSER: '', PGPASSWORD: '', PGPORT: '', PGSERVICE: '' },
  },
});
