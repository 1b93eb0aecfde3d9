// A real PostgreSQL server per test file: initdb in a temporary folder, postgres listening on a
// unix socket there only (no TCP), stopped and removed by dispose(). PostgreSQL refuses to run as
// root, so when we are root the folder is given to the `postgres` system user and the binaries
// run as it (setpriv); otherwise as ourselves.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Postgres {
  /** postgres://postgres@/postgres?host=<socket dir> */
  url: string;
  dispose(): Promise<void>;
  readonly log: string;
}

/** The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin). */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((d) => /^\d+$/.test(d)).sort((a, b) => Number(b) - Number(a)) : [];
  const dir = majors.map((m) => path.join(root, m, 'bin')).find((d) => existsSync(path.join(d, 'postgres')));
  if (!dir) throw new Error('no PostgreSQL server under /usr/lib/postgresql/*/bin (Debian package `postgresql`; scripts/setup.sh installs it)');
  return dir;
}

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-postgres-'));
  const asRoot = process.getuid?.() === 0;
  const uid = asRoot ? Number((await run('id', ['-u', 'postgres'])).stdout.trim()) : process.getuid!();
  const gid = asRoot ? Number((await run('id', ['-g', 'postgres'])).stdout.trim()) : process.getgid!();
  if (asRoot) chownSync(dir, uid, gid);
  // setpriv execs the command itself (runuser would stay as its parent and not pass signals on).
  const as = (cmd: string, args: string[]): [string, string[]] => (asRoot ? ['setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', cmd, ...args]] : [cmd, args]);
  const data = path.join(dir, 'data');
  const [initCmd, initArgs] = as(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  await run(initCmd, initArgs);
  const [cmd, args] = as(path.join(bin, 'postgres'), ['-D', data, '-k', dir, '-c', 'listen_addresses=', '-c', 'fsync=off', '-c', 'max_connections=50']);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`PostgreSQL did not start within 30 s:\n${log}`)), 30_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log = (log + d).slice(-20_000);
      if (log.includes('ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`PostgreSQL exited (${code}) before it was ready:\n${log}`));
    });
  });
  await ready;
  return {
    url: `postgres://postgres@/postgres?host=${encodeURIComponent(dir)}`,
    get log() {
      return log;
    },
    async dispose() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        // SIGINT: "fast" shutdown (postgres itself: setpriv exec'd it).
        child.kill('SIGINT');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
