// The `gpio` firmware-bridge backend: the Raspberry Pi field-test rig, where the record button, LEDs,
// buzzer and vibration motor are plain GPIO lines on the Linux GPIO character device (/dev/gpiochipN).
//
// Why the libgpiod v1 command-line tools (Debian package `gpiod`) and not a Node binding: the only
// chardev binding on npm, node-libgpiod (0.5.x), is a node-gyp addon that needs the libgpiod headers and a
// compiler on the camera image and tracks one libgpiod major at a time; opengpio is not on the registry.
// The tools are maintained with libgpiod itself, are in every Debian/Raspberry Pi OS release, use the
// chardev (not the deprecated sysfs), and a crashed tool cannot take the agent down with it.
//
// v1 semantics this design follows (see `gpioset --help`): a line driven over the chardev keeps its value
// only while the requesting process holds it open, and one line can be held by one process at a time. So:
//   - each LED line is held by its own long-running `gpioset --mode=signal` (value 0 or 1); changing one
//     LED replaces only that line's holder, so the other LEDs never flicker;
//   - buzzer and vibration pulses are `gpioset --mode=time` runs: the line is high for exactly the pulse
//     and released afterwards (an active buzzer and a motor driver with a pull-down read that as off);
//   - buttons are one long-running `gpiomon` on all button lines, whose edge events (with kernel
//     timestamps) are debounced and classified here.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import type {
  ButtonId,
  FirmwareBridge,
  FirmwareBridgeEvents,
  FirmwareBridgeStatus,
  LedState,
  NotificationPattern,
} from './interface.ts';
import { NOTIFICATION_PATTERNS, UNKNOWN_BATTERY, patternSteps } from './interface.ts';
import { gpioConfigSchema, type GpioConfig, type GpioConfigInput } from './gpio-config.ts';
import { errorMessage } from '../../src/errors.ts';

export const GPIO_FIRMWARE_VERSION = 'gpio';

/** gpiomon output format: offset, edge (1 = became active), kernel timestamp seconds and nanoseconds. */
export const GPIOMON_FORMAT = '%o %e %s %n';

export interface GpioBackendOptions {
  logger: Logger;
  /** The `gpio` settings; parsed (defaults filled in) through gpioConfigSchema. */
  config?: GpioConfigInput;
  /** Environment of the spawned tools. Default: process.env. */
  env?: NodeJS.ProcessEnv;
  /** First delay before restarting a dead gpiomon; doubles on each failure. Default 500 ms. */
  restartMinMs?: number;
  /** Cap of that delay. Default 30 s. */
  restartMaxMs?: number;
}

interface ButtonState {
  id: ButtonId;
  /** Debounced level: true while held. */
  pressed: boolean;
  /** Level after the newest edge, bounce included. */
  raw: boolean;
  rawTs: number;
  /** Kernel time (ms) of the last edge that changed the debounced level. */
  acceptedTs: number | null;
  pressTs: number;
  longFired: boolean;
  longTimer: NodeJS.Timeout | null;
  settleTimer: NodeJS.Timeout | null;
}

interface Holder {
  child: ChildProcess;
  value: 0 | 1;
  exited: Promise<void>;
  releasing: boolean;
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

const KILL_GRACE_MS = 2000;

export class GpioBackend extends EventEmitter<FirmwareBridgeEvents> implements FirmwareBridge {
  readonly kind = 'gpio' as const;
  readonly config: GpioConfig;
  private readonly logger: Logger;
  private readonly env: NodeJS.ProcessEnv;
  private readonly restartMinMs: number;
  private readonly restartMaxMs: number;
  private readonly buttons = new Map<number, ButtonState>();
  private readonly ledLines: Record<keyof LedState, number | undefined>;
  private readonly holders = new Map<number, Holder>();
  private readonly pulseChildren = new Set<ChildProcess>();
  private leds: LedState = { recording: false, streaming: false, fault: false };
  private started = false;
  private linkUp = false;
  private lastPattern: NotificationPattern | null = null;
  private lastError: string | null = null;
  private monitor: ChildProcess | null = null;
  private monitorSpawnedAt = 0;
  private restartAttempts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private ledQueue: Promise<void> = Promise.resolve();
  private notifyQueue: Promise<void> = Promise.resolve();

  constructor(opts: GpioBackendOptions) {
    super();
    this.logger = opts.logger;
    this.config = gpioConfigSchema.parse(opts.config);
    this.env = opts.env ?? process.env;
    this.restartMinMs = opts.restartMinMs ?? 500;
    this.restartMaxMs = Math.max(this.restartMinMs, opts.restartMaxMs ?? 30_000);
    const c = this.config;
    this.ledLines = { recording: c.recordLedLine, streaming: c.streamLedLine, fault: c.faultLedLine };
    const used = [c.recordButtonLine, c.functionButtonLine, c.recordLedLine, c.streamLedLine, c.faultLedLine, c.buzzerLine, c.vibrationLine].filter(
      (l): l is number => l !== undefined,
    );
    // One line cannot be both an input and an output, and two holders of one line would fight (EBUSY).
    const dup = used.find((l, i) => used.indexOf(l) !== i);
    if (dup !== undefined) throw new Error(`gpio config: line ${dup} is used twice`);
    this.buttons.set(c.recordButtonLine, newButton('record'));
    if (c.functionButtonLine !== undefined) this.buttons.set(c.functionButtonLine, newButton('function'));
  }

  async start(): Promise<void> {
    if (this.started) return;
    const c = this.config;
    // A short gpioset first: it proves the chip exists and the output lines are free, and gives a clear
    // error now rather than holders and a monitor dying one by one in the background.
    const outputs = [...this.ledLineList(), c.buzzerLine, c.vibrationLine];
    await this.runChecked('gpioset', [c.chip, ...outputs.map((l) => `${l}=0`)], `cannot drive output lines ${outputs.join(',')}`);
    // Reading the buttons once both checks the input lines and tells a button already held at start,
    // which must not turn into a press when it is let go.
    const inputs = [...this.buttons.keys()];
    const got = await this.runChecked('gpioget', [...this.inputFlags(), c.chip, ...inputs.map(String)], `cannot read button lines ${inputs.join(',')}`);
    const levels = got.stdout.trim().split(/\s+/);
    inputs.forEach((line, i) => {
      const b = this.buttons.get(line)!;
      const held = levels[i] === '1';
      Object.assign(b, { pressed: held, raw: held, longFired: held, acceptedTs: null });
    });
    this.started = true;
    this.lastError = null;
    for (const [key, line] of Object.entries(this.ledLines)) {
      if (line !== undefined) this.spawnHolder(line, this.leds[key as keyof LedState] ? 1 : 0);
    }
    try {
      await this.spawnMonitor();
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    for (const b of this.buttons.values()) clearButtonTimers(b);
    const monitor = this.monitor;
    this.monitor = null;
    const waits: Promise<void>[] = [];
    if (monitor) waits.push(terminate(monitor));
    for (const child of this.pulseChildren) waits.push(terminate(child));
    for (const line of [...this.holders.keys()]) waits.push(this.releaseHolder(line));
    await Promise.all(waits);
    await Promise.allSettled([this.ledQueue, this.notifyQueue]);
    // Released lines are "undefined" per libgpiod; drive them low once so a stopped agent leaves the
    // rig dark and silent rather than whatever the pin floats to.
    const outputs = [...this.ledLineList(), this.config.buzzerLine, this.config.vibrationLine];
    const off = await this.run('gpioset', [this.config.chip, ...outputs.map((l) => `${l}=0`)]).catch((err: Error) => err);
    if (off instanceof Error || off.code !== 0) this.logger.warn({ err: off instanceof Error ? off.message : off.stderr.trim() }, 'gpio: could not switch outputs off');
    this.setLink(false, 'stopped');
  }

  async notify(pattern: NotificationPattern): Promise<void> {
    this.requireStarted();
    if (!NOTIFICATION_PATTERNS.includes(pattern)) throw new Error(`unknown notification pattern: ${String(pattern)}`);
    this.lastPattern = pattern;
    // Patterns queue rather than overlap: two gpioset runs cannot hold the buzzer line at once.
    const run = this.notifyQueue.then(() => this.play(pattern));
    this.notifyQueue = run.catch(() => undefined);
    return run;
  }

  async setLeds(state: LedState): Promise<void> {
    this.requireStarted();
    this.leds = { recording: !!state.recording, streaming: !!state.streaming, fault: !!state.fault };
    const run = this.ledQueue.then(() => this.applyLeds());
    this.ledQueue = run.catch(() => undefined);
    return run;
  }

  status(): FirmwareBridgeStatus {
    return {
      linkUp: this.linkUp,
      firmwareVersion: this.started ? GPIO_FIRMWARE_VERSION : null,
      // The rig has no battery gauge: unknown, never a made-up number.
      battery: { ...UNKNOWN_BATTERY },
      lastPattern: this.lastPattern,
      lastError: this.lastError,
    };
  }

  /**
   * Pulse i drives the vibration line if i < vibrations and the buzzer if i < tones, together, for pulseMs,
   * then waits gapMs; so with interface.ts's table:
   *   record-start  2 x (vibration + tone) 150 ms, 150 ms apart
   *   record-stop   1 x (vibration + tone) 400 ms
   *   stream-start  3 x vibration 100 ms, 100 ms apart
   *   stream-stop   1 x vibration 300 ms
   *   reminder      1 x (vibration + tone) 100 ms
   *   fault         3 x (vibration + tone) then 2 x vibration, 80 ms each, 80 ms apart
   * toneHz cannot be played: the rig's buzzer is an active one that sounds at its own pitch when powered.
   */
  private async play(pattern: NotificationPattern): Promise<void> {
    const s = patternSteps[pattern];
    const c = this.config;
    const pulses = Math.max(s.vibrations, s.tones);
    for (let i = 0; i < pulses; i++) {
      if (!this.started) throw new Error(`gpio: notification ${pattern} cut short: bridge stopped`);
      const lines = [...(i < s.vibrations ? [c.vibrationLine] : []), ...(i < s.tones ? [c.buzzerLine] : [])];
      const sec = Math.floor(s.pulseMs / 1000);
      const usec = (s.pulseMs % 1000) * 1000;
      // --sec and --usec split: gpioset v1 hands --usec to usleep(), which may refuse a second or more.
      await this.runChecked('gpioset', ['--mode=time', `--sec=${sec}`, `--usec=${usec}`, c.chip, ...lines.map((l) => `${l}=1`)], `notification ${pattern} failed`);
      if (i < pulses - 1 && s.gapMs > 0) await new Promise((r) => setTimeout(r, s.gapMs));
    }
  }

  private async applyLeds(): Promise<void> {
    for (const [key, line] of Object.entries(this.ledLines)) {
      if (line === undefined || !this.started) continue;
      const value = this.leds[key as keyof LedState] ? 1 : 0;
      const h = this.holders.get(line);
      if (h && h.value === value && !h.releasing) continue;
      if (h) await this.releaseHolder(line);
      if (this.started) this.spawnHolder(line, value);
    }
  }

  private spawnHolder(line: number, value: 0 | 1): void {
    const child = spawn(this.tool('gpioset'), ['--mode=signal', this.config.chip, `${line}=${value}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: this.env,
    });
    const h: Holder = { child, value, releasing: false, exited: Promise.resolve() };
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    h.exited = new Promise<void>((resolve) => {
      let done = false;
      const end = (why: string) => {
        if (done) return;
        done = true;
        resolve();
        if (this.holders.get(line) === h) this.holders.delete(line);
        if (h.releasing || !this.started) return;
        // Not asked to go: the LED is no longer driven. Record it; the next setLeds() spawns a new holder.
        this.lastError = `gpio: holder of LED line ${line} ended: ${stderr.trim() || why}`;
        this.logger.warn({ line, err: this.lastError }, 'gpio: LED line no longer held');
      };
      child.once('error', (err) => end(this.spawnErrorText('gpioset', err)));
      child.once('exit', (code, signal) => end(`exit ${code ?? signal}`));
    });
    this.holders.set(line, h);
  }

  private async releaseHolder(line: number): Promise<void> {
    const h = this.holders.get(line);
    if (!h) return;
    h.releasing = true;
    await terminate(h.child);
    await h.exited;
  }

  private async spawnMonitor(): Promise<void> {
    const c = this.config;
    const lines = [...this.buttons.keys()];
    const args = [...this.inputFlags(), '--num-events=0', '--line-buffered', `--format=${GPIOMON_FORMAT}`, c.chip, ...lines.map(String)];
    const child = spawn(this.tool('gpiomon'), args, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
    this.monitor = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (this.monitor === child) this.onMonitorLine(l);
    });
    let ended = false;
    const onEnd = (why: string) => {
      if (ended) return;
      ended = true;
      if (this.monitor !== child) return;
      this.monitor = null;
      this.onMonitorDeath(stderr.trim().split('\n').pop() || why);
    };
    child.once('exit', (code, signal) => onEnd(signal ? `gpiomon killed by ${signal}` : `gpiomon exited with code ${code}`));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => {
        this.monitorSpawnedAt = Date.now();
        this.setLink(true);
        resolve();
      });
      child.once('error', (err) => {
        const why = this.spawnErrorText('gpiomon', err);
        onEnd(why);
        reject(new Error(why));
      });
    });
  }

  private onMonitorDeath(reason: string): void {
    for (const b of this.buttons.values()) {
      // Edges while gpiomon is down are lost: forget a half-seen press instead of inventing its end.
      clearButtonTimers(b);
      Object.assign(b, { pressed: false, raw: false, longFired: false, acceptedTs: null });
    }
    this.lastError = `gpio: button monitor down: ${reason}`;
    this.logger.warn({ reason }, 'gpio: gpiomon ended; restarting');
    this.setLink(false, reason);
    if (!this.started) return;
    // A monitor that ran for a while before dying is a fresh failure, not part of a crash loop.
    if (Date.now() - this.monitorSpawnedAt > this.restartMaxMs) this.restartAttempts = 0;
    const delay = Math.min(this.restartMaxMs, this.restartMinMs * 2 ** this.restartAttempts);
    this.restartAttempts++;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.started) return;
      // The holders may have died with the same fault (chip gone and back); re-drive the LEDs too.
      void this.setLeds(this.leds).catch(() => undefined);
      this.spawnMonitor().catch((err: Error) => this.logger.warn({ err: err.message }, 'gpio: gpiomon restart failed'));
    }, delay);
  }

  private onMonitorLine(text: string): void {
    const m = /^(\d+) ([01]) (\d+) (\d+)$/.exec(text.trim());
    const b = m ? this.buttons.get(Number(m[1])) : undefined;
    if (!m || !b) {
      this.logger.warn({ line: text }, 'gpio: unexpected gpiomon output ignored');
      return;
    }
    // Kernel timestamps, not arrival time: a burst of bounces can reach us in one read.
    const ts = Number(m[3]) * 1000 + Number(m[4]) / 1e6;
    this.onEdge(b, m[2] === '1', ts);
  }

  /** `active`: the line became active (pressed); gpiomon already applied --active-low. */
  private onEdge(b: ButtonState, active: boolean, ts: number): void {
    b.raw = active;
    b.rawTs = ts;
    if (b.acceptedTs !== null && ts - b.acceptedTs < this.config.debounceMs) {
      // Bounce: ignored, but if the contact ends up in the other state (a tap shorter than the debounce
      // window), take that state once it has been quiet for a window.
      if (b.settleTimer) clearTimeout(b.settleTimer);
      b.settleTimer = setTimeout(() => {
        b.settleTimer = null;
        if (this.started && b.raw !== b.pressed) this.transition(b, b.raw, b.rawTs);
      }, this.config.debounceMs);
      return;
    }
    // Same level twice: an edge was lost (kernel event queue overflow); nothing changed for us.
    if (active === b.pressed) return;
    this.transition(b, active, ts);
  }

  private transition(b: ButtonState, pressed: boolean, ts: number): void {
    b.acceptedTs = ts;
    b.pressed = pressed;
    if (pressed) {
      b.pressTs = ts;
      b.longFired = false;
      if (b.longTimer) clearTimeout(b.longTimer);
      b.longTimer = setTimeout(() => {
        b.longTimer = null;
        if (!this.started || !b.pressed) return;
        b.longFired = true;
        this.emit('button', { button: b.id, press: 'long' });
      }, this.config.longPressMs);
      return;
    }
    if (b.longTimer) clearTimeout(b.longTimer);
    b.longTimer = null;
    if (b.longFired) return;
    // Events that arrive late (a busy event loop) are still classified by how long the button was held.
    this.emit('button', { button: b.id, press: ts - b.pressTs >= this.config.longPressMs ? 'long' : 'press' });
  }

  private setLink(up: boolean, reason?: string): void {
    if (this.linkUp === up) return;
    this.linkUp = up;
    this.emit('link', up ? { up, firmwareVersion: GPIO_FIRMWARE_VERSION } : { up, reason: reason ?? 'down' });
  }

  private inputFlags(): string[] {
    const c = this.config;
    return [...(c.buttonActiveLow ? ['--active-low'] : []), ...(c.buttonBias ? [`--bias=${c.buttonBias}`] : [])];
  }

  private ledLineList(): number[] {
    return Object.values(this.ledLines).filter((l): l is number => l !== undefined);
  }

  private tool(name: string): string {
    return this.config.toolsDir ? join(this.config.toolsDir, name) : name;
  }

  private spawnErrorText(name: string, err: NodeJS.ErrnoException): string {
    if (err.code === 'ENOENT') {
      return `${this.tool(name)} not found: install the libgpiod v1 tools (Debian package "gpiod") or set gpio.toolsDir`;
    }
    return `${this.tool(name)} could not run: ${err.message}`;
  }

  private async runChecked(name: string, args: string[], what: string): Promise<RunResult & { stdout: string }> {
    let r: RunResult & { stdout: string };
    try {
      r = await this.run(name, args);
    } catch (err) {
      this.lastError = `gpio: ${what}: ${errorMessage(err)}`;
      throw new Error(this.lastError);
    }
    if (r.code !== 0) {
      const detail = r.stderr.trim() || (r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`);
      this.lastError = `gpio: ${what} on ${this.config.chip}: ${detail}`;
      throw new Error(this.lastError);
    }
    return r;
  }

  /** One short tool run; rejects only when the tool cannot be started at all. */
  private run(name: string, args: string[]): Promise<RunResult & { stdout: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(this.tool(name), args, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
      this.pulseChildren.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-4000)));
      child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
      child.once('error', (err) => {
        this.pulseChildren.delete(child);
        reject(new Error(this.spawnErrorText(name, err)));
      });
      child.once('close', (code, signal) => {
        this.pulseChildren.delete(child);
        resolve({ code, signal, stderr, stdout });
      });
    });
  }

  private requireStarted(): void {
    if (!this.started) throw new Error('gpio firmware bridge is not started');
  }
}

function newButton(id: ButtonId): ButtonState {
  return { id, pressed: false, raw: false, rawTs: 0, acceptedTs: null, pressTs: 0, longFired: false, longTimer: null, settleTimer: null };
}

function clearButtonTimers(b: ButtonState): void {
  if (b.longTimer) clearTimeout(b.longTimer);
  if (b.settleTimer) clearTimeout(b.settleTimer);
  b.longTimer = null;
  b.settleTimer = null;
}

/** SIGTERM (gpioset/gpiomon release their lines and exit 0 on it), SIGKILL if it lingers. */
function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
