// The ops console as its operators run it: `node ops-console/server.ts` in its own process, on a
// real mosquitto, with a users file and an issuer key in a temporary folder. Attack tests drive it
// with real HTTP requests and a real MQTT client, and read its log (stderr) for what it refused.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateIssuerKeys } from '../../src/cli/fleet-tools.ts';
import { hashPassword } from '../../ops-console/users.ts';
import { repoRoot } from './agent-process.ts';

export interface ConsoleUser {
  user: string;
  operator: string;
  password: string;
  name?: string;
  /** Written to users.json as they are given (an older console ignores them). */
  roles?: string[];
  unit?: string;
  shift?: string;
}

export interface CallResult {
  status: number;
  headers: Headers;
  json: Record<string, unknown> | undefined;
  text: string;
  ms: number;
}

export interface ConsoleProcess {
  url: string;
  dir: string;
  issuerKeyFile: string;
  trustStoreFile: string;
  /** Every line the console wrote to stderr so far. */
  readonly log: string[];
  /** Resolves with the first log line matching (already written or to come); rejects after 30 s. */
  waitForLog(pattern: RegExp, what: string): Promise<string>;
  call(cookie: string, method: string, route: string, body?: unknown, headers?: Record<string, string>): Promise<CallResult>;
  /** Signs in; the session cookie ("name=value"). Throws unless the console answered 200. */
  login(user: string, password: string): Promise<string>;
  /**
   * Pins a camera's device key as a fleet admin does (ops-console/enrol.ts into the console's default
   * archive beside users.json), then has the running console read its enrolments again (SIGUSR2) and
   * waits for it to say so.
   */
  enrol(deviceId: string, publicJwk: object): Promise<void>;
  stop(): Promise<void>;
}

export async function startConsole(brokerUrl: string, users: ConsoleUser[], extraArgs: string[] = []): Promise<ConsoleProcess> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-console-'));
  // The console's everyday key: live views, and the officer's emergencies answered (alert.ack, recording.bookmark) and talk-back (stream.talk).
  const keys = await generateIssuerKeys(path.join(dir, 'issuer'), ['stream.start', 'stream.stop', 'alert.ack', 'recording.bookmark', 'stream.talk']);
  const usersFile = path.join(dir, 'users.json');
  await writeFile(usersFile, JSON.stringify(users.map(({ password, ...u }) => ({ name: u.user, ...u, password: hashPassword(password) }))), { mode: 0o600 });
  const child: ChildProcess = spawn(process.execPath, [
    path.join(repoRoot, 'ops-console', 'server.ts'),
    '--broker', brokerUrl, '--issuer-key', keys.privateJwkFile, '--users', usersFile, '--port', '0',
    '--client-id', `console-attack-${process.pid}-${Math.random().toString(36).slice(2, 8)}`, ...extraArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  const watchers = new Set<() => void>();
  let partial = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop()!;
    log.push(...lines);
    for (const w of watchers) w();
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the console did not start within 30 s: ${log.join('\n')}`)), 30_000);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      const m = /ops-console: (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the console exited (${code}) before listening: ${log.join('\n')}${partial}`));
    });
  });
  const call = async (cookie: string, method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<CallResult> => {
    const t0 = performance.now();
    const res = await fetch(new URL(route, url), {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(cookie ? { cookie } : {}), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    const json = res.headers.get('content-type')?.startsWith('application/json') ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    return { status: res.status, headers: res.headers, json, text, ms };
  };
  return {
    url,
    dir,
    issuerKeyFile: keys.privateJwkFile,
    trustStoreFile: keys.trustStoreFile,
    log,
    waitForLog: (pattern, what) => new Promise((resolve, reject) => {
      const check = () => {
        const line = log.find((l) => pattern.test(l));
        if (!line) return false;
        watchers.delete(check);
        clearTimeout(timer);
        resolve(line);
        return true;
      };
      const timer = setTimeout(() => {
        watchers.delete(check);
        reject(new Error(`the console never logged ${what} within 30 s (${pattern}); it logged:\n${log.slice(-20).join('\n')}`));
      }, 30_000);
      if (!check()) watchers.add(check);
    }),
    call,
    async login(user, password) {
      const r = await call('', 'POST', '/api/login', { user, password });
      if (r.status !== 200) throw new Error(`sign-in as ${user} answered ${r.status}: ${r.text}`);
      return (r.headers.get('set-cookie') ?? '').split(';')[0]!;
    },
    async enrol(deviceId, publicJwk) {
      const keyFile = path.join(dir, `${deviceId}.public.jwk.json`);
      await writeFile(keyFile, JSON.stringify(publicJwk));
      const archive = `sqlite:${path.join(dir, 'ops-console-archive.sqlite')}`;
      await promisify(execFile)(process.execPath, [path.join(repoRoot, 'ops-console', 'enrol.ts'), 'add', '--archive', archive, '--device', deviceId, '--key', keyFile, '--by', 'test-admin']);
      const reloads = () => log.filter((l) => /enrolments reloaded/.test(l)).length;
      const before = reloads();
      const reloaded = new Promise<void>((resolve, reject) => {
        const check = () => {
          if (reloads() <= before) return;
          watchers.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          watchers.delete(check);
          reject(new Error(`the console did not reload its enrolments for ${deviceId} within 30 s`));
        }, 30_000);
        watchers.add(check);
      });
      child.kill('SIGUSR2');
      await reloaded;
    },
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
