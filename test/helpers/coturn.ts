// A real TURN server per test: Debian's coturn (`turnserver`) as a child process, with long-term
// credentials, TURN over UDP and TCP on one port and TLS on another, listening and relaying on
// one given address only (never 0.0.0.0), no CLI, no DTLS, no multicast peers, a throwaway
// self-signed certificate, and its log kept in memory so a test can count the allocations.
//
// Where to listen: a camera in a network namespace (netns.ts) and a viewer in the root namespace
// must both reach the server and each other's relayed addresses. The camera network's host
// address (10.77.X.1) is reachable from both, so it is the usual listenAddress; the relay
// address defaults to the listen address for the same reason. 127.0.0.1 is reachable only from
// the root namespace.
//
// Run as a script, this file is also the TURN probe a test runs inside a namespace:
//   ip netns exec NS node test/helpers/coturn.ts probe '<TurnProbeOptions as JSON>'
// prints one line of JSON (TurnProbeResult) and exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processAlive, registerExitCleanup } from './netns.ts';

export interface CoturnOptions {
  /** The one address coturn listens on (UDP, TCP, TLS). */
  listenAddress: string;
  /** Address relayed allocations are made on (default: listenAddress). */
  relayAddress?: string;
  /** Let peers be 127.x/::1 (default: true when the relay address is loopback, else false). */
  allowLoopbackPeers?: boolean;
  realm?: string;
  username?: string;
  password?: string;
  /** Relay port range (default coturn's 49152-65535). */
  relayPortRange?: [number, number];
  /** Upper bound on coturn's life even if this process dies without cleanup (default 600 s). */
  maxSeconds?: number;
  /** More turnserver arguments. */
  extraArgs?: string[];
  /** How long to wait for the listeners (default 15 s). */
  startTimeoutMs?: number;
}

export interface Coturn {
  urls: { udp: string; tcp: string; tls: string };
  /** Ready for RTCPeerConnection's iceServers (all three URLs). */
  iceServer: { urls: string[]; username: string; credential: string };
  listenAddress: string;
  relayAddress: string;
  port: number;
  tlsPort: number;
  username: string;
  password: string;
  realm: string;
  /** PEM of the self-signed server certificate: trust it with NODE_EXTRA_CA_CERTS or tls `ca`. */
  caFile: string;
  /**
   * base64 SHA-256 of the certificate's SubjectPublicKeyInfo, for Chromium's
   * --ignore-certificate-errors-spki-list (Chromium does not take a CA file for TURN over TLS).
   */
  spkiSha256: string;
  readonly pid: number | undefined;
  /** turnserver's output so far (the last 200 kB). */
  readonly log: string;
  /** Successful ALLOCATE requests seen in the log since start. */
  allocations(): number;
  waitForLog(pattern: RegExp, timeoutMs: number): Promise<void>;
  /** SIGTERM, then SIGKILL to its process group after 5 s; removes its files. Idempotent. */
  stop(): Promise<void>;
}

const ALLOCATE_OK = /ALLOCATE processed, success/g;

async function run(cmd: string, args: string[], timeoutMs: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim()}`));
    });
  });
}

/** A port free for both TCP and UDP on address (UDP too when udp is set). */
async function freePort(address: string, udp: boolean): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = net.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, address, () => {
        const a = server.address();
        resolve(a !== null && typeof a === 'object' ? a.port : 0);
      });
    });
    let ok = port > 0;
    if (ok && udp) {
      const sock = dgram.createSocket('udp4');
      ok = await new Promise<boolean>((resolve) => {
        sock.once('error', () => resolve(false));
        sock.bind(port, address, () => resolve(true));
      });
      sock.close();
    }
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (ok) return port;
  }
  throw new Error(`no free port on ${address}`);
}

async function makeCertificate(dir: string, ip: string): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const san = net.isIP(ip) ? `IP:${ip}` : `DNS:${ip}`;
  await run(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${ip}`, '-addext', `subjectAltName=${san}`, '-keyout', key, '-out', cert],
    20_000,
  );
  return { cert, key };
}

const DIR_PREFIX = 'bwc-coturn-';

/**
 * Kills turnservers (and removes their folders) left by test processes that were SIGKILLed, so a
 * leftover does not sit on its address until its `timeout` runs out. A folder is named after the
 * test process that made it; its turnserver is killed only if its command line names that folder.
 */
function sweepStale(): void {
  const tmp = os.tmpdir();
  for (const name of readdirSync(tmp)) {
    const m = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    const owner = Number(m[1]);
    if (owner === process.pid || processAlive(owner)) continue;
    const dir = path.join(tmp, name);
    try {
      const pid = Number(readFileSync(path.join(dir, 'turnserver.pid'), 'utf8').trim());
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (pid > 0 && cmdline.startsWith('turnserver') && cmdline.includes(dir)) process.kill(pid, 'SIGKILL');
    } catch {
      // no pid file or no such process
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

function isLoopback(address: string): boolean {
  return address.startsWith('127.') || address === '::1';
}

export async function startCoturn(options: CoturnOptions): Promise<Coturn> {
  const listenAddress = options.listenAddress;
  if (listenAddress === '0.0.0.0' || listenAddress === '::' || listenAddress === '') {
    throw new Error('startCoturn: listen on one address, never the wildcard');
  }
  const relayAddress = options.relayAddress ?? listenAddress;
  const allowLoopbackPeers = options.allowLoopbackPeers ?? isLoopback(relayAddress);
  const realm = options.realm ?? 'bwc-test.invalid';
  const username = options.username ?? `cam-${randomBytes(4).toString('hex')}`;
  const password = options.password ?? randomBytes(12).toString('base64url');
  const maxSeconds = options.maxSeconds ?? 600;
  const startTimeoutMs = options.startTimeoutMs ?? 15_000;

  sweepStale();
  const dir = await mkdtemp(path.join(os.tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  const { cert, key } = await makeCertificate(dir, listenAddress).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });

  const spkiSha256 = createHash('sha256')
    .update(new X509Certificate(await readFile(cert)).publicKey.export({ type: 'spki', format: 'der' }))
    .digest('base64');

  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort(listenAddress, true);
    let tlsPort = await freePort(listenAddress, false);
    if (tlsPort === port) tlsPort = await freePort(listenAddress, false);
    try {
      return await launch({ port, tlsPort });
    } catch (err) {
      lastError = err;
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;

  async function launch({ port, tlsPort }: { port: number; tlsPort: number }): Promise<Coturn> {
    const args = [
      '-n', // no configuration file: /etc/turnserver.conf is not read
      `--listening-ip=${listenAddress}`,
      `--listening-port=${port}`,
      `--tls-listening-port=${tlsPort}`,
      `--relay-ip=${relayAddress}`,
      '--lt-cred-mech',
      `--user=${username}:${password}`,
      `--realm=${realm}`,
      '--fingerprint',
      `--cert=${cert}`,
      `--pkey=${key}`,
      '--no-dtls',
      '--no-tlsv1',
      '--no-tlsv1_1',
      '--no-cli',
      '--no-multicast-peers',
      '--no-software-attribute',
      ...(allowLoopbackPeers ? ['--allow-loopback-peers'] : []),
      ...(options.relayPortRange ? [`--min-port=${options.relayPortRange[0]}`, `--max-port=${options.relayPortRange[1]}`] : []),
      // Its own files, not /var/run/turnserver.pid and /var/lib/turn/turndb shared with others.
      `--pidfile=${path.join(dir, 'turnserver.pid')}`,
      `--userdb=${path.join(dir, 'turndb')}`,
      '--log-file=stdout',
      '--simple-log',
      '--verbose',
      ...(options.extraArgs ?? []),
    ];
    // `timeout` bounds its life if this process is SIGKILLed; detached so stop() can kill the group.
    const child: ChildProcess = spawn('timeout', ['-k', '3', String(maxSeconds), 'turnserver', ...args], {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const pgid = child.pid;
    let log = '';
    let allocationCount = 0;
    let carry = '';
    let exited = false;
    const waiters = new Set<() => void>();
    const onData = (d: string) => {
      log = (log + d).slice(-200_000);
      // Count on whole lines so a line split across chunks is counted once.
      const text = carry + d;
      const cut = text.lastIndexOf('\n');
      const complete = cut >= 0 ? text.slice(0, cut + 1) : '';
      carry = cut >= 0 ? text.slice(cut + 1) : text;
      allocationCount += complete.match(ALLOCATE_OK)?.length ?? 0;
      for (const w of waiters) w();
    };
    child.stdout?.setEncoding('utf8').on('data', onData);
    child.stderr?.setEncoding('utf8').on('data', onData);
    const exitedP = new Promise<void>((resolve) =>
      child.once('exit', () => {
        exited = true;
        for (const w of waiters) w();
        resolve();
      }),
    );
    const killGroup = (sig: NodeJS.Signals) => {
      if (pgid === undefined || exited) return;
      try {
        process.kill(-pgid, sig);
      } catch {
        // gone
      }
    };
    const unregister = registerExitCleanup(() => {
      killGroup('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    child.once('error', () => {
      exited = true;
    });

    const waitForLog = (pattern: RegExp, timeoutMs: number) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(log)) {
            done();
            resolve();
          } else if (exited) {
            done();
            reject(new Error(`turnserver exited before its log matched ${pattern}:\n${log.slice(-3000)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`turnserver log did not match ${pattern} within ${timeoutMs} ms:\n${log.slice(-3000)}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });

    let stopped: Promise<void> | undefined;
    const stopProcess = () =>
      (stopped ??= (async () => {
        killGroup('SIGTERM');
        const bound = setTimeout(() => killGroup('SIGKILL'), 5000);
        await exitedP;
        clearTimeout(bound);
        // `timeout` is gone; make sure turnserver is too.
        killGroup('SIGKILL');
        unregister();
      })());

    const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    try {
      if (pgid === undefined) throw new Error('could not spawn timeout/turnserver');
      const timeoutMs = startTimeoutMs;
      await Promise.all([
        waitForLog(new RegExp(`UDP listener opened on: ${esc(listenAddress)}:${port}\\b`), timeoutMs),
        waitForLog(new RegExp(`TLS/TCP listener opened on : ${esc(listenAddress)}:${port}\\b`), timeoutMs),
        waitForLog(new RegExp(`TLS/TCP listener opened on : ${esc(listenAddress)}:${tlsPort}\\b`), timeoutMs),
        waitForLog(/Total General servers/, timeoutMs),
      ]);
      if (/Cannot bind|bind: Address already in use/i.test(log)) throw new Error(`turnserver could not bind:\n${log.slice(-2000)}`);
    } catch (err) {
      await stopProcess();
      throw err;
    }

    const host = net.isIPv6(listenAddress) ? `[${listenAddress}]` : listenAddress;
    const urls = {
      udp: `turn:${host}:${port}?transport=udp`,
      tcp: `turn:${host}:${port}?transport=tcp`,
      tls: `turns:${host}:${tlsPort}?transport=tcp`,
    };
    return {
      urls,
      iceServer: { urls: [urls.udp, urls.tcp, urls.tls], username, credential: password },
      listenAddress,
      relayAddress,
      port,
      tlsPort,
      username,
      password,
      realm,
      caFile: cert,
      spkiSha256,
      pid: pgid,
      get log() {
        return log;
      },
      allocations: () => allocationCount,
      waitForLog,
      async stop() {
        await stopProcess();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// TURN probe: allocate on the server, send a payload through the relay to a peer, and wait for
// the peer's answer to come back through the relay.

export interface TurnProbeOptions {
  server: [string, number];
  transport: 'udp' | 'tcp' | 'tls';
  username: string;
  password: string;
  /** For TLS: the server certificate to trust. */
  caFile?: string;
  /** A UDP peer that answers each datagram (to the relayed address it came from). */
  peer: [string, number];
  payload: string;
  timeoutMs?: number;
}

export interface TurnProbeResult {
  relayedAddress: [string, number];
  mappedAddress: [string, number];
  /** What came back from the peer through the relay. */
  reply: string;
}

export async function turnProbe(o: TurnProbeOptions): Promise<TurnProbeResult> {
  const { createTurnClient } = await import('werift');
  const timeoutMs = o.timeoutMs ?? 10_000;
  const tlsOptions = o.caFile ? { ca: await readFile(o.caFile, 'utf8') } : undefined;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`TURN ${o.transport} probe timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  let turn: Awaited<ReturnType<typeof createTurnClient>> | undefined;
  try {
    return await Promise.race([
      deadline,
      (async () => {
        turn = await createTurnClient(
          { address: o.server, username: o.username, password: o.password },
          { transport: o.transport, ...(tlsOptions ? { tlsOptions } : {}), connectTimeoutMs: timeoutMs },
        );
        const t = turn;
        const reply = new Promise<string>((resolve) => {
          t.onData.subscribe((data: Buffer) => resolve(data.toString('utf8')));
        });
        await t.sendData(Buffer.from(o.payload), o.peer);
        const r = await reply;
        return {
          relayedAddress: [t.relayedAddress[0], t.relayedAddress[1]] as [string, number],
          mappedAddress: [t.mappedAddress[0], t.mappedAddress[1]] as [string, number],
          reply: r,
        };
      })(),
    ]);
  } finally {
    clearTimeout(timer);
    await (turn as { close(): Promise<void> } | undefined)?.close().catch(() => undefined);
  }
}

/** Runs turnProbe in a child process behind prefix (e.g. a CameraNetwork's ['ip','netns','exec',ns]). */
export async function turnProbeIn(prefix: string[], o: TurnProbeOptions): Promise<TurnProbeResult> {
  const self = fileURLToPath(import.meta.url);
  const [cmd, ...pre] = prefix.length > 0 ? prefix : [process.execPath];
  const args = prefix.length > 0 ? [...pre, process.execPath, self, 'probe', JSON.stringify(o)] : [self, 'probe', JSON.stringify(o)];
  const limit = (o.timeoutMs ?? 10_000) + 10_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), limit);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      const line = out.split('\n').find((l) => l.startsWith('{"probe":'));
      if (code === 0 && line) {
        resolve((JSON.parse(line) as { probe: TurnProbeResult }).probe);
      } else {
        reject(new Error(`TURN probe (${o.transport}) failed, exit ${code}:\n${out.slice(-3000)}`));
      }
    });
  });
}

if (import.meta.main && process.argv[2] === 'probe') {
  turnProbe(JSON.parse(process.argv[3] ?? '{}') as TurnProbeOptions).then(
    (r) => {
      process.stdout.write(`${JSON.stringify({ probe: r })}\n`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
