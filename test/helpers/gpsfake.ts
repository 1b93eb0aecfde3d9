import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** A receiver log in the shared data set, which is always cloned beside the repo. */
export function gpsLogPath(name: string): string {
  return path.resolve(repoRoot, '..', 'shared', 'data', 'gps', name);
}

export interface GpsfakeOptions {
  /** Delay between sentences, seconds (gpsfake -c). Default 0.01. */
  cycleS?: number;
  /** Play the log once instead of looping it (gpsfake -1). Default false. */
  once?: boolean;
  /** Hard limit enforced by `timeout`, so a crashed test cannot leave gpsfake behind for long. Default 60. */
  maxSeconds?: number;
  /** Port for gpsd; default a free loopback port. Lets a test restart gpsd where a client expects it. */
  port?: number;
}

export interface RunningGpsfake {
  port: number;
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 15_000;
const STDERR_TAIL_CHARS = 4_000;
const GRACEFUL_STOP_MS = 2_000;

export async function freeLoopbackPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no TCP address for probe server');
  return address.port;
}

export async function startGpsfake(logFile: string, opts: GpsfakeOptions = {}): Promise<RunningGpsfake> {
  const port = opts.port ?? (await freeLoopbackPort());
  const cycleS = opts.cycleS ?? 0.01;
  const maxSeconds = opts.maxSeconds ?? 60;
  // gpsfake names gpsd's control socket after its pid in TMPDIR and never removes it.
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'gpsfake-'));

  const gpsfakeArgs = ['-q', '-n', '-P', String(port), '-c', String(cycleS), ...(opts.once ? ['-1'] : []), logFile];
  // gpsfake ignores SIGTERM; `timeout -k` bounds its life even if this process dies,
  // and its own process group lets stop() reach gpsfake and the gpsd it forks.
  const child = spawn('timeout', ['-k', '3', String(maxSeconds), 'gpsfake', ...gpsfakeArgs], {
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, TMPDIR: tmpDir },
  });
  const processGroup = child.pid;
  if (processGroup === undefined) {
    await rm(tmpDir, { recursive: true, force: true });
    throw new Error('could not spawn timeout/gpsfake');
  }

  let stderrTail = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderrTail = (stderrTail + text).slice(-STDERR_TAIL_CHARS);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // SIGTERM stops gpsd, and gpsfake exits (reaping gpsd) once its daemon died; only
      // if that stalls, SIGKILL everything, which leaves zombies for init to collect.
      signalGroup(processGroup, 'SIGTERM');
      await Promise.race([exited, sleep(GRACEFUL_STOP_MS)]);
      if (!hasExited) signalGroup(processGroup, 'SIGKILL');
      await exited;
      await waitForNoLiveMember(processGroup);
      await rm(tmpDir, { recursive: true, force: true });
      await removeGpsdSharedMemory(port);
    })();
    return stopping;
  };

  try {
    await waitForPort(port, () => hasExited);
  } catch (error) {
    await stop();
    throw new Error(`gpsfake did not start on port ${port}: ${(error as Error).message}\n${stderrTail}`);
  }
  return { port, stop };
}

function signalGroup(processGroup: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-processGroup, signal);
    return true;
  } catch {
    return false;
  }
}

// The group id stays reserved while any member exists, so signalling it cannot hit a
// stranger; zombies are dead already and only wait for init, so they do not count.
async function waitForNoLiveMember(processGroup: number): Promise<void> {
  const deadline = Date.now() + 5_000;
  while ((await liveMembers(processGroup)) > 0) {
    if (Date.now() > deadline) throw new Error(`process group ${processGroup} still alive after SIGKILL`);
    signalGroup(processGroup, 'SIGKILL');
    await sleep(20);
  }
}

async function liveMembers(processGroup: number): Promise<number> {
  let count = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // Fields after the command name, which may itself contain spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === processGroup && fields[0] !== 'Z') count++;
  }
  return count;
}

// gpsd exports fixes in a SysV shared-memory segment keyed on the port gpsfake gives it,
// and does not remove it on exit.
async function removeGpsdSharedMemory(port: number): Promise<void> {
  const key = `0x4770${port.toString(16).toUpperCase().padStart(4, '0')}`;
  await new Promise<void>((resolve) => execFile('ipcrm', ['-M', key], () => resolve()));
}

async function waitForPort(port: number, hasExited: () => boolean): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (hasExited()) throw new Error('gpsfake exited before gpsd listened');
    if (await canConnect(port)) return;
    if (Date.now() > deadline) throw new Error(`port not open after ${READY_TIMEOUT_MS} ms`);
    await sleep(50);
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
