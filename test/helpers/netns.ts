// A camera on its own network: a network namespace joined to the root namespace by a veth pair,
// with the link impaired the ways this kernel allows (no netem): random loss with iptables'
// `statistic` match, a bandwidth cap with tc tbf or htb, UDP blocked except to chosen
// destinations, and a mid-run change of address (a modem reconnecting with a new IP). Delay is
// not done here; see udp-delay-relay.ts.
//
// Every iptables and tc rule lives inside the camera namespace. In the root namespace this only
// adds the host end of the veth and its addresses (10.77.X.1/24); it never touches ip_forward,
// the root namespace's iptables, or anything that leaves the machine. The root side keeps its
// old addresses after changeAddress(), so packets to a camera's old subnet still go to the veth
// (and die there) rather than to the default route, and a server listening on an old host
// address stays reachable from the camera.
//
// Needs root, iproute2 and iptables. Names and subnets are unique across parallel test
// processes: names carry the pid, subnets are checked against `ip -o addr` after they are added.
import { execFileSync, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface LossOptions {
  /** Probability of a drop, 0..100. */
  percent: number;
  /** egress = leaving the camera, ingress = arriving at the camera. */
  direction: 'egress' | 'ingress' | 'both';
  /** Which packets may be dropped (default 'all'). */
  protocol?: 'udp' | 'all';
}

export interface CapOptions {
  /** 'tbf' (default) or 'htb' with a bfifo leaf. */
  kind?: 'tbf' | 'htb';
  /** Bucket size in bytes (default: 10 ms at the cap, at least 3200 bytes, about two full frames). */
  burstBytes?: number;
  /** Longest a packet may wait in the queue before it is dropped (default 80 ms). */
  latencyMs?: number;
}

export interface QdiscStat {
  kind: string;
  handle: string;
  parent?: string;
  sentBytes: number;
  sentPackets: number;
  dropped: number;
  overlimits: number;
  backlogBytes: number;
  backlogPackets: number;
}

export interface QdiscStats extends QdiscStat {
  /** Every qdisc on the camera interface; the fields above are the root's (htb counts its leaf's drops). */
  all: QdiscStat[];
}

export interface CameraNetworkOptions {
  /** Seconds each ip/tc/iptables command may take (default 10). */
  commandTimeoutS?: number;
}

export interface CameraNetwork {
  readonly ns: string;
  /** Root-namespace side of the veth, e.g. 10.77.X.1 (changes with changeAddress()). */
  readonly hostAddress: string;
  /** Camera side, e.g. 10.77.X.2 (changes with changeAddress()). */
  readonly cameraAddress: string;
  readonly prefixLength: number;
  readonly hostInterface: string;
  readonly cameraInterface: string;
  /** Prepend to a command to run it inside the namespace: spawn(prefix[0], [...prefix.slice(1), cmd, ...args]). */
  readonly prefix: string[];
  /** Runs a program inside the namespace and collects its output (timeout default 30 s, then SIGKILL). */
  run(cmd: string, args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<RunResult>;
  setLoss(opts: LossOptions): Promise<void>;
  clearLoss(): Promise<void>;
  /** Caps the camera side's egress (the uplink) at kbitPerS. Replaces any earlier cap. */
  capBandwidth(kbitPerS: number, opts?: CapOptions): Promise<void>;
  clearCap(): Promise<void>;
  qdiscStats(): Promise<QdiscStats>;
  /** Drops every UDP datagram leaving the camera (other than on its own lo) except to the listed destinations. */
  blockUdp(opts?: { exceptTo?: { address: string; port: number }[] }): Promise<void>;
  blockAllUdp(): Promise<void>;
  unblockUdp(): Promise<void>;
  /** Moves the camera to a new subnet: new addresses on both ends, default route switched, the camera's old address removed. */
  changeAddress(): Promise<{ hostAddress: string; cameraAddress: string }>;
  /** Removes the namespace, the veth and its addresses. Idempotent. */
  destroy(): Promise<void>;
}

const NS_PREFIX = 'bwcnet-';
const SUBNET_BASE = '10.77';
const LOSS_OUT = 'BWC-LOSS-OUT';
const LOSS_IN = 'BWC-LOSS-IN';
const BLOCK_OUT = 'BWC-BLOCK-OUT';

let counter = 0;

// ---------------------------------------------------------------------------------------------
// Cleanup on exit, shared with coturn.ts: synchronous functions run on 'exit' and on the first
// SIGINT/SIGTERM/SIGHUP (after which the signal is re-raised so the process still dies of it).

const exitCleanups = new Set<() => void>();
let exitHooked = false;

function runExitCleanups(): void {
  for (const fn of [...exitCleanups]) {
    exitCleanups.delete(fn);
    try {
      fn();
    } catch {
      // best effort: the process is going away
    }
  }
}

/** Registers a synchronous cleanup run when the process exits or is signalled; returns an unregister function. */
export function registerExitCleanup(fn: () => void): () => void {
  if (!exitHooked) {
    exitHooked = true;
    process.on('exit', runExitCleanups);
    const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const handlers = new Map<NodeJS.Signals, () => void>();
    for (const sig of signals) {
      const onSignal = () => {
        runExitCleanups();
        for (const [s, h] of handlers) process.removeListener(s, h);
        // Die of the signal as usual. With other listeners (tap's signal-exit, which re-raises only
        // when it is the last listener) re-raise once they have had their turn.
        if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
        else setImmediate(() => process.kill(process.pid, sig));
      };
      handlers.set(sig, onSignal);
      process.on(sig, onSignal);
    }
  }
  exitCleanups.add(fn);
  return () => exitCleanups.delete(fn);
}

// ---------------------------------------------------------------------------------------------

function spawnCollect(cmd: string, args: string[], timeoutMs: number, input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      stderr += `\n[killed after ${timeoutMs} ms]`;
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

async function must(cmd: string, args: string[], timeoutMs: number): Promise<string> {
  const r = await spawnCollect(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

function tryQuiet(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // already gone
  }
}

function linkNames(pid: number, n: number): { host: string; camera: string } {
  // "bw" + pid in base 36 (≤ 5 chars for pid ≤ 2^22) + counter in base 36 + side: ≤ 15 chars.
  const tag = pid.toString(36) + n.toString(36);
  return { host: `bw${tag}h`, camera: `bw${tag}c` };
}

/** Whether a process exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(timeoutMs: number): Promise<string[]> {
  const out = await must('ip', ['netns', 'list'], timeoutMs);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Removes namespaces (and their host links) left by test processes that died without cleanup (SIGKILL). */
async function sweepStale(timeoutMs: number): Promise<void> {
  for (const name of await listNamespaces(timeoutMs)) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-(\\d+)$`).exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    tryQuiet('ip', ['netns', 'del', name]);
    tryQuiet('ip', ['link', 'del', linkNames(pid, Number(m[2])).host]);
  }
}

/** Third octets of 10.77.X.0/24 subnets in use by any interface of the root namespace. */
async function usedSubnets(timeoutMs: number): Promise<Map<number, Set<string>>> {
  const out = await must('ip', ['-o', '-4', 'addr', 'show'], timeoutMs);
  const used = new Map<number, Set<string>>();
  for (const line of out.split('\n')) {
    const m = /^\d+:\s+(\S+?)(?:@\S+)?\s+inet\s+10\.77\.(\d+)\.\d+\//.exec(line);
    if (!m) continue;
    const x = Number(m[2]);
    const set = used.get(x) ?? new Set<string>();
    set.add(m[1] ?? '');
    used.set(x, set);
  }
  return used;
}

/**
 * Adds 10.77.X.1/24 to hostIf for a free X and returns X. Another process may pick the same X at
 * the same moment, so the choice is checked after it is made and undone (and retried) on a clash.
 */
async function claimSubnet(hostIf: string, timeoutMs: number, avoid: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 40; attempt++) {
    const used = await usedSubnets(timeoutMs);
    const free: number[] = [];
    for (let x = 1; x < 255; x++) if (!used.has(x) && !avoid.has(x)) free.push(x);
    if (free.length === 0) throw new Error(`no free ${SUBNET_BASE}.X.0/24 subnet left in the root namespace`);
    const x = free[randomInt(free.length)] as number;
    await must('ip', ['addr', 'add', `${SUBNET_BASE}.${x}.1/24`, 'dev', hostIf], timeoutMs);
    const after = (await usedSubnets(timeoutMs)).get(x) ?? new Set<string>();
    if (after.size === 1 && after.has(hostIf)) return x;
    await spawnCollect('ip', ['addr', 'del', `${SUBNET_BASE}.${x}.1/24`, 'dev', hostIf], timeoutMs);
    await new Promise((r) => setTimeout(r, randomInt(5, 50)));
  }
  throw new Error('could not claim a free subnet after 40 attempts (too many parallel camera networks?)');
}

function parseQdisc(q: Record<string, unknown>): QdiscStat {
  const num = (k: string) => (typeof q[k] === 'number' ? (q[k] as number) : 0);
  const stat: QdiscStat = {
    kind: String(q.kind ?? ''),
    handle: String(q.handle ?? ''),
    sentBytes: num('bytes'),
    sentPackets: num('packets'),
    dropped: num('drops'),
    overlimits: num('overlimits'),
    backlogBytes: num('backlog'),
    backlogPackets: num('qlen'),
  };
  if (typeof q.parent === 'string') stat.parent = q.parent;
  return stat;
}

async function checkPrerequisites(timeoutMs: number): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error(`camera network tests need root (network namespaces, veth, tc, iptables); running as uid ${process.getuid()}`);
  }
  for (const [cmd, args] of [
    ['ip', ['netns', 'list']],
    ['tc', ['-V']],
    ['iptables', ['--version']],
  ] as const) {
    let r: RunResult;
    try {
      r = await spawnCollect(cmd, [...args], timeoutMs);
    } catch (err) {
      throw new Error(`camera network tests need ${cmd} (Debian packages iproute2, iptables): ${(err as Error).message}`);
    }
    if (r.code !== 0) throw new Error(`\`${cmd} ${args.join(' ')}\` failed (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

export async function createCameraNetwork(opts: CameraNetworkOptions = {}): Promise<CameraNetwork> {
  const timeoutMs = (opts.commandTimeoutS ?? 10) * 1000;
  await checkPrerequisites(timeoutMs);
  await sweepStale(timeoutMs);

  // A name no one uses: our pid makes clashes with live processes impossible; leftovers from a
  // dead process with a reused pid are skipped.
  let ns = '';
  let names = { host: '', camera: '' };
  for (;;) {
    const n = counter++;
    ns = `${NS_PREFIX}${process.pid}-${n}`;
    names = linkNames(process.pid, n);
    const existing = await listNamespaces(timeoutMs);
    const links = await spawnCollect('ip', ['link', 'show', names.host], timeoutMs);
    if (!existing.includes(ns) && links.code !== 0) break;
  }
  const hostIf = names.host;
  const camIf = names.camera;
  const ipns = (args: string[]) => must('ip', ['-n', ns, ...args], timeoutMs);
  const inNs = (cmd: string, args: string[]) => must('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs);

  let destroyed = false;
  let hostSubnets: number[] = [];
  const destroySync = () => {
    tryQuiet('ip', ['netns', 'del', ns]);
    // Deleting the namespace takes the veth with it unless a process still holds the namespace.
    tryQuiet('ip', ['link', 'del', hostIf]);
  };
  const unregister = registerExitCleanup(destroySync);

  let subnet: number;
  try {
    await must('ip', ['netns', 'add', ns], timeoutMs);
    await must('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', camIf, 'netns', ns], timeoutMs);
    subnet = await claimSubnet(hostIf, timeoutMs, new Set());
    hostSubnets = [subnet];
    await must('ip', ['link', 'set', hostIf, 'up'], timeoutMs);
    await ipns(['link', 'set', 'lo', 'up']);
    await ipns(['addr', 'add', `${SUBNET_BASE}.${subnet}.2/24`, 'dev', camIf]);
    await ipns(['link', 'set', camIf, 'up']);
    await ipns(['route', 'add', 'default', 'via', `${SUBNET_BASE}.${subnet}.1`]);
    // Namespace-local chains the impairments fill; the built-in chains jump to them once.
    for (const chain of [LOSS_OUT, LOSS_IN, BLOCK_OUT]) await inNs('iptables', ['-w', '-N', chain]);
    await inNs('iptables', ['-w', '-A', 'OUTPUT', '-j', BLOCK_OUT]);
    await inNs('iptables', ['-w', '-A', 'OUTPUT', '-j', LOSS_OUT]);
    await inNs('iptables', ['-w', '-A', 'INPUT', '-j', LOSS_IN]);
  } catch (err) {
    destroySync();
    unregister();
    throw err;
  }

  const state = {
    hostAddress: `${SUBNET_BASE}.${subnet}.1`,
    cameraAddress: `${SUBNET_BASE}.${subnet}.2`,
  };
  const prefix = ['ip', 'netns', 'exec', ns];

  const iptables = (args: string[]) => inNs('iptables', ['-w', ...args]);

  const network: CameraNetwork = {
    ns,
    get hostAddress() {
      return state.hostAddress;
    },
    get cameraAddress() {
      return state.cameraAddress;
    },
    prefixLength: 24,
    hostInterface: hostIf,
    cameraInterface: camIf,
    prefix,

    run(cmd, args, runOpts = {}) {
      return spawnCollect('ip', ['netns', 'exec', ns, cmd, ...args], runOpts.timeoutMs ?? 30_000, runOpts.input);
    },

    async setLoss({ percent, direction, protocol = 'all' }) {
      if (!(percent >= 0 && percent <= 100)) throw new Error(`loss percent must be 0..100, got ${percent}`);
      await network.clearLoss();
      if (percent === 0) return;
      const proto = protocol === 'udp' ? ['-p', 'udp'] : [];
      const drop = ['-m', 'statistic', '--mode', 'random', '--probability', (percent / 100).toFixed(6), '-j', 'DROP'];
      // Never on the namespace's own lo: only the link to the root namespace is impaired.
      if (direction !== 'ingress') await iptables(['-A', LOSS_OUT, '!', '-o', 'lo', ...proto, ...drop]);
      if (direction !== 'egress') await iptables(['-A', LOSS_IN, '!', '-i', 'lo', ...proto, ...drop]);
    },

    async clearLoss() {
      await iptables(['-F', LOSS_OUT]);
      await iptables(['-F', LOSS_IN]);
    },

    async capBandwidth(kbitPerS, capOpts = {}) {
      if (!(kbitPerS > 0)) throw new Error(`bandwidth cap must be > 0 kbit/s, got ${kbitPerS}`);
      const kind = capOpts.kind ?? 'tbf';
      const bytesPerS = (kbitPerS * 1000) / 8;
      const burst = Math.round(capOpts.burstBytes ?? Math.max(3200, bytesPerS * 0.01));
      const latencyMs = capOpts.latencyMs ?? 80;
      await network.clearCap();
      const rate = `${kbitPerS}kbit`;
      if (kind === 'tbf') {
        // The queue holds latencyMs worth of traffic at the cap; beyond it packets are dropped,
        // as at a congested cellular uplink.
        await must('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', camIf, 'root', 'handle', '1:', 'tbf',
          'rate', rate, 'burst', String(burst), 'latency', `${latencyMs}ms`], timeoutMs);
      } else {
        const limit = Math.max(3000, Math.round(bytesPerS * (latencyMs / 1000)));
        const tc = (args: string[]) => must('ip', ['netns', 'exec', ns, 'tc', ...args], timeoutMs);
        await tc(['qdisc', 'replace', 'dev', camIf, 'root', 'handle', '1:', 'htb', 'default', '1']);
        await tc(['class', 'add', 'dev', camIf, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate, 'ceil', rate,
          'burst', String(burst), 'cburst', String(burst)]);
        await tc(['qdisc', 'add', 'dev', camIf, 'parent', '1:1', 'handle', '10:', 'bfifo', 'limit', String(limit)]);
      }
    },

    async clearCap() {
      const r = await spawnCollect('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', camIf, 'root'], timeoutMs);
      // "Cannot delete qdisc with handle of zero" / "No such file": there was no cap.
      if (r.code !== 0 && !/handle of zero|No such file|Invalid handle/i.test(r.stderr)) {
        throw new Error(`tc qdisc del failed: ${r.stderr.trim()}`);
      }
    },

    async qdiscStats() {
      const out = await must('ip', ['netns', 'exec', ns, 'tc', '-j', '-s', 'qdisc', 'show', 'dev', camIf], timeoutMs);
      const all = (JSON.parse(out) as Record<string, unknown>[]).map(parseQdisc);
      const root = all.find((q) => q.parent === undefined) ?? all[0];
      if (!root) throw new Error(`no qdisc on ${camIf}`);
      return { ...root, all };
    },

    async blockUdp(blockOpts = {}) {
      await iptables(['-F', BLOCK_OUT]);
      for (const { address, port } of blockOpts.exceptTo ?? []) {
        await iptables(['-A', BLOCK_OUT, '-p', 'udp', '-d', address, '--dport', String(port), '-j', 'RETURN']);
      }
      // The camera's own lo stays open (a local pipeline may send RTP to the agent over it).
      await iptables(['-A', BLOCK_OUT, '!', '-o', 'lo', '-p', 'udp', '-j', 'DROP']);
    },

    blockAllUdp() {
      return network.blockUdp({ exceptTo: [] });
    },

    async unblockUdp() {
      await iptables(['-F', BLOCK_OUT]);
    },

    async changeAddress() {
      const old = { ...state };
      const x = await claimSubnet(hostIf, timeoutMs, new Set(hostSubnets));
      hostSubnets.push(x);
      const next = { hostAddress: `${SUBNET_BASE}.${x}.1`, cameraAddress: `${SUBNET_BASE}.${x}.2` };
      await ipns(['addr', 'add', `${next.cameraAddress}/24`, 'dev', camIf]);
      await ipns(['route', 'replace', 'default', 'via', next.hostAddress]);
      await ipns(['addr', 'del', `${old.cameraAddress}/24`, 'dev', camIf]);
      state.hostAddress = next.hostAddress;
      state.cameraAddress = next.cameraAddress;
      return next;
    },

    async destroy() {
      if (destroyed) return;
      destroyed = true;
      unregister();
      await spawnCollect('ip', ['netns', 'del', ns], timeoutMs);
      // Normally gone with the namespace; still there if a process inside kept the namespace alive.
      await spawnCollect('ip', ['link', 'del', hostIf], timeoutMs);
    },
  };
  return network;
}
