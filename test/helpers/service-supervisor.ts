// Runs the real agent process the way systemd runs systemd/bwc-agent.service, for tests of what only
// shows across restarts (a config change applied by restarting, an automatic revert, an update that
// rolls back). The restart policy is read from the unit file itself, so a change there changes what
// the tests see:
//   Type=notify          a run is "ready" only once the agent sends READY=1 on NOTIFY_SOCKET;
//   NotifyAccess=main    datagrams from any other process (the capture worker) are ignored;
//   Restart=on-failure   restart after a non-zero exit, a killing signal other than the clean ones
//                        (SIGHUP, SIGINT, SIGTERM, SIGPIPE), or a watchdog timeout; not after exit 0;
//   RestartPreventExitStatus=  never restart after these exit codes (2: configuration error);
//   RestartSec=          the delay before a restart (tests may shorten it: it is a delay, never a
//                        wait for something to have happened);
//   WatchdogSec=         WATCHDOG_USEC is passed and a run that stops pinging is killed (SIGABRT,
//                        as systemd does) and counts as a failure;
//   StartLimitBurst=/StartLimitIntervalSec=  too many starts in the interval: give up ("failed").
//
// Everything a test waits for is an event kept in `events`: waitFor() looks at what already happened
// first, then at what comes, so a test never sleeps and never misses an event that came early.
// Node cannot bind a unix datagram socket, so python plays systemd's side of NOTIFY_SOCKET (as in
// test/service-notifier.test.ts), with SO_PASSCRED so each datagram comes with its sender's pid.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { repoRoot, spawnAgent, type AgentProcess } from './agent-process.ts';

export const unitFile = path.join(repoRoot, 'systemd', 'bwc-agent.service');

/** The restart policy of a unit, as systemd would apply it. */
export interface RestartPolicy {
  restart: 'no' | 'on-failure' | 'always';
  restartPreventExitStatus: number[];
  restartSecMs: number;
  /** 0: no watchdog. */
  watchdogSecMs: number;
  startLimitBurst: number;
  startLimitIntervalMs: number;
}

/** systemd time spans as the unit uses them: "2s", "30s", "5min", "500ms", a bare number of seconds. */
export function parseTimeSpanMs(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h)?\s*$/.exec(text);
  if (!m) throw new Error(`unsupported systemd time span ${JSON.stringify(text)}`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const factor = unit === 'ms' ? 1 : unit === 'min' || unit === 'm' ? 60_000 : unit === 'h' ? 3_600_000 : 1000;
  return n * factor;
}

/** Reads the settings above from a unit file (the last assignment of a key wins, as in systemd). */
export function readRestartPolicy(file = unitFile): RestartPolicy {
  const values = new Map<string, string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith('#')) values.set(m[1]!, m[2]!);
  }
  const restart = values.get('Restart') ?? 'no';
  if (restart !== 'no' && restart !== 'on-failure' && restart !== 'always') throw new Error(`${file}: Restart=${restart} is not modelled here`);
  return {
    restart,
    restartPreventExitStatus: (values.get('RestartPreventExitStatus') ?? '').split(/\s+/).filter(Boolean).map(Number),
    restartSecMs: parseTimeSpanMs(values.get('RestartSec') ?? '100ms'),
    watchdogSecMs: values.has('WatchdogSec') ? parseTimeSpanMs(values.get('WatchdogSec')!) : 0,
    startLimitBurst: Number(values.get('StartLimitBurst') ?? 5),
    startLimitIntervalMs: parseTimeSpanMs(values.get('StartLimitIntervalSec') ?? '10s'),
  };
}

export type SupervisorEvent =
  | { type: 'start'; run: number; pid: number }
  | { type: 'ready'; run: number; pid: number }
  | { type: 'status'; run: number; text: string }
  | { type: 'watchdog'; run: number }
  | { type: 'watchdog-timeout'; run: number }
  | { type: 'exit'; run: number; code: number | null; signal: NodeJS.Signals | null; willRestart: boolean; why: string }
  | { type: 'failed'; run: number; why: string }
  | { type: 'stopped'; run: number }
  | { type: 'pre'; run: number; code: number | null; output: string };

export interface ServiceSupervisorOptions {
  /** bwc-agent arguments, e.g. ['run', '--config', file]. */
  args: string[];
  env: Record<string, string>;
  /** What runs the agent (spawnAgent's `command`): bin/bwc-agent by default. */
  command?: string[];
  /** Overrides of the unit's policy (a short RestartSec keeps tests quick). */
  policy?: Partial<RestartPolicy>;
  /**
   * The unit's `ExecStartPre=-...` (the update boot check): run to its end before every start, with
   * the same environment; as with the "-" prefix, its failure does not stop the start. `command`
   * is resolved at each start, so a path through a symlink (`releases/current/...`) follows it.
   */
  execStartPre?: string[];
}

const listenerScript = `
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
print(json.dumps({"listening": True}), flush=True)
while True:
    data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", payload[:12])[0]
    print(json.dumps({"pid": pid, "text": data.decode("utf-8", "replace")}), flush=True)
`;

const cleanSignals = new Set(['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGPIPE']);

export class ServiceSupervisor extends EventEmitter {
  readonly policy: RestartPolicy;
  readonly events: SupervisorEvent[] = [];
  /** Every run's process, by run number (1, 2, ...): its output stays readable after it exits. */
  readonly runs: AgentProcess[] = [];
  readonly #o: ServiceSupervisorOptions;
  readonly #dir: string;
  readonly #socketPath: string;
  #listener: ChildProcess | undefined;
  #current: AgentProcess | undefined;
  #stopping = false;
  #restartTimer: NodeJS.Timeout | undefined;
  #watchdogTimer: NodeJS.Timeout | undefined;
  #starts: number[] = [];

  constructor(o: ServiceSupervisorOptions) {
    super();
    this.#o = o;
    this.policy = { ...readRestartPolicy(), ...o.policy };
    this.#dir = mkdtempSync(path.join(os.tmpdir(), 'bwc-supervisor-'));
    this.#socketPath = path.join(this.#dir, 'notify.sock');
  }

  /** The process of the run now going (undefined between runs). */
  get current(): AgentProcess | undefined {
    return this.#current;
  }

  get runCount(): number {
    return this.runs.length;
  }

  /** Binds the notify socket, then starts the first run. */
  async start(): Promise<void> {
    const listener = spawn('python3', ['-c', listenerScript, this.#socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.#listener = listener;
    await new Promise<void>((resolve, reject) => {
      listener.once('exit', (code) => reject(new Error(`notify listener exited (${code}) before binding`)));
      createInterface({ input: listener.stdout! }).on('line', (line) => {
        const m = JSON.parse(line) as { listening?: true; pid?: number | null; text?: string };
        if (m.listening) resolve();
        else this.#datagram(m.pid ?? null, m.text ?? '');
      });
    });
    this.#spawn();
  }

  /**
   * The first event of `type` (after `fromIndex` in `events`, default 0) that `pred` accepts,
   * already seen or still to come. timeoutMs is an upper bound that fails the test with the event
   * history, never a wait.
   */
  waitFor<T extends SupervisorEvent['type']>(
    type: T,
    pred: (e: Extract<SupervisorEvent, { type: T }>) => boolean = () => true,
    timeoutMs = 60_000,
    fromIndex = 0,
  ): Promise<Extract<SupervisorEvent, { type: T }>> {
    const match = (e: SupervisorEvent): e is Extract<SupervisorEvent, { type: T }> => e.type === type && pred(e as Extract<SupervisorEvent, { type: T }>);
    const seen = this.events.slice(fromIndex).find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const onEvent = (e: SupervisorEvent) => {
        if (!match(e)) return;
        clearTimeout(timer);
        this.off('event', onEvent);
        resolve(e);
      };
      const timer = setTimeout(() => {
        this.off('event', onEvent);
        reject(new Error(`no supervisor event "${type}" matching within ${timeoutMs} ms; events: ${JSON.stringify(this.events)}\nlast output:\n${this.#current?.output.slice(-3000) ?? this.runs.at(-1)?.output.slice(-3000) ?? ''}`));
      }, timeoutMs);
      this.on('event', onEvent);
    });
  }

  /** `systemctl stop`: SIGTERM to the agent, no restart; resolves once it has exited. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    clearTimeout(this.#watchdogTimer);
    const current = this.#current;
    if (current) await current.stop(signal);
    this.#emit({ type: 'stopped', run: this.runs.length });
  }

  /** Stops the agent (SIGKILL: a test's teardown) and the notify listener, and removes the socket folder. */
  async dispose(): Promise<void> {
    if (!this.#stopping) await this.stop('SIGKILL');
    const listener = this.#listener;
    if (listener && listener.exitCode === null && listener.signalCode === null) {
      const gone = new Promise((resolve) => listener.once('exit', resolve));
      listener.kill('SIGKILL');
      await gone;
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }

  #emit(e: SupervisorEvent): void {
    this.events.push(e);
    this.emit('event', e);
  }

  #spawn(): void {
    const pre = this.#o.execStartPre;
    if (!pre) return this.#spawnMain();
    const run = this.runs.length + 1;
    const child = spawn(pre[0]!, pre.slice(1), { env: { ...process.env, ...this.#o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('exit', (code) => {
      this.#emit({ type: 'pre', run, code, output });
      if (!this.#stopping) this.#spawnMain();
    });
  }

  #spawnMain(): void {
    const now = Date.now();
    this.#starts = this.#starts.filter((t) => now - t < this.policy.startLimitIntervalMs);
    const run = this.runs.length + 1;
    if (this.#starts.length >= this.policy.startLimitBurst) {
      this.#emit({ type: 'failed', run: run - 1, why: `start request repeated too quickly (StartLimitBurst=${this.policy.startLimitBurst})` });
      return;
    }
    this.#starts.push(now);
    const env: Record<string, string> = { ...this.#o.env, NOTIFY_SOCKET: this.#socketPath };
    if (this.policy.watchdogSecMs > 0) env.WATCHDOG_USEC = String(this.policy.watchdogSecMs * 1000);
    const proc = spawnAgent(this.#o.args, env, this.#o.command);
    this.runs.push(proc);
    this.#current = proc;
    this.#emit({ type: 'start', run, pid: proc.child.pid ?? -1 });
    void proc.exited.then(({ code, signal }) => this.#exited(run, code, signal));
  }

  #datagram(pid: number | null, text: string): void {
    const current = this.#current;
    // NotifyAccess=main: only the main process is heard.
    if (!current || pid !== current.child.pid) return;
    const run = this.runs.length;
    for (const line of text.split('\n')) {
      if (line === 'READY=1') {
        this.#emit({ type: 'ready', run, pid });
        this.#armWatchdog(run);
      } else if (line === 'WATCHDOG=1') {
        this.#emit({ type: 'watchdog', run });
        this.#armWatchdog(run);
      } else if (line.startsWith('STATUS=')) {
        this.#emit({ type: 'status', run, text: line.slice('STATUS='.length) });
      }
    }
  }

  #armWatchdog(run: number): void {
    if (this.policy.watchdogSecMs <= 0) return;
    clearTimeout(this.#watchdogTimer);
    this.#watchdogTimer = setTimeout(() => {
      if (this.runs.length !== run || !this.#current) return;
      this.#emit({ type: 'watchdog-timeout', run });
      this.#current.child.kill('SIGABRT');
    }, this.policy.watchdogSecMs);
  }

  #exited(run: number, code: number | null, signal: NodeJS.Signals | null): void {
    clearTimeout(this.#watchdogTimer);
    if (this.#current === this.runs[run - 1]) this.#current = undefined;
    const watchdogKilled = this.events.some((e) => e.type === 'watchdog-timeout' && e.run === run);
    let why: string;
    let failure: boolean;
    if (watchdogKilled) {
      why = 'watchdog';
      failure = true;
    } else if (signal !== null) {
      why = `signal ${signal}`;
      failure = !cleanSignals.has(signal);
    } else {
      why = `exit-code ${code}`;
      failure = code !== 0;
    }
    const prevented = code !== null && this.policy.restartPreventExitStatus.includes(code);
    const willRestart =
      !this.#stopping && !prevented && (this.policy.restart === 'always' || (this.policy.restart === 'on-failure' && failure));
    this.#emit({ type: 'exit', run, code, signal, willRestart, why: prevented ? `${why} (RestartPreventExitStatus)` : why });
    if (!willRestart) {
      if (!this.#stopping && failure) this.#emit({ type: 'failed', run, why });
      return;
    }
    this.#restartTimer = setTimeout(() => this.#spawn(), this.policy.restartSecMs);
  }
}
