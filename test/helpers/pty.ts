import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface PtyPair {
  /** Directory holding the two link names. */
  dir: string;
  /** Stable symlinks to the two pty slaves: bytes written to one are read from the other. */
  a: string;
  b: string;
  /** Kills socat ("unplugs" both ends). Idempotent; removes the directory only if this helper made it. */
  stop(): Promise<void>;
}

export interface PtyPairOptions {
  /** Reuse a directory (and so the same link paths), e.g. to "plug a cable back in"; the caller then owns it. */
  dir?: string;
  /** Hard limit enforced by `timeout`, so a crashed test cannot leave socat behind for long. Default 120. */
  maxSeconds?: number;
}

const READY_TIMEOUT_MS = 10_000;
const live = new Set<PtyPair>();

/** A real pty pair from socat, ready when both link names exist. */
export async function startPtyPair(opts: PtyPairOptions = {}): Promise<PtyPair> {
  const ownsDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'pty-')));
  const a = path.join(dir, 'a');
  const b = path.join(dir, 'b');
  const child = spawn(
    'timeout',
    ['-k', '2', String(opts.maxSeconds ?? 120), 'socat', '-d', '-d', `pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );

  let stopping: Promise<void> | null = null;
  const pair: PtyPair = {
    dir,
    a,
    b,
    stop() {
      stopping ??= (async () => {
        live.delete(pair);
        if (!exited) child.kill('SIGTERM');
        await exit;
        if (ownsDir) await rm(dir, { recursive: true, force: true });
      })();
      return stopping;
    },
  };
  live.add(pair);

  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await pair.stop();
      throw new Error(`socat exited before the pty pair was ready: ${stderr}`);
    }
    // socat creates the links just before its transfer loop starts.
    if ((await exists(a)) && (await exists(b)) && stderr.includes('starting data transfer loop')) return pair;
    if (Date.now() > deadline) {
      await pair.stop();
      throw new Error(`pty pair not ready within ${READY_TIMEOUT_MS} ms: ${stderr}`);
    }
    await sleep(20);
  }
}

/** For teardown: kills every pair still running. */
export async function stopAllPtyPairs(): Promise<void> {
  await Promise.all([...live].map((p) => p.stop()));
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}
