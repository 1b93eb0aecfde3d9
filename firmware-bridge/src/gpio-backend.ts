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
//   - buttons, trigger inputs and the fall line are watched by long-running `gpiomon`s whose edge events
//     (with kernel timestamps) are debounced and classified here: one gpiomon per distinct active-low/bias
//     setting (v1 applies those to every line of a request), so with the usual wiring just one.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import type {
  ButtonId,
  ButtonPress,
  FirmwareBridge,
  FirmwareBridgeEvents,
  FirmwareBridgeStatus,
  LedState,
  NotificationPattern,
} from './interface.ts';
import { NOTIFICATION_PATTERNS, UNKNOWN_BATTERY, patternSteps } from './interface.ts';
import { gpioConfigSchema, type GpioConfig, type GpioConfigInput } from './gpio-config.ts';
import { InputBudget } from './input-budget.ts';
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
  /** Clock of the trigger/fall budget (input-budget.ts), ms; tests inject one. Default Date.now. */
  now?: () => number;
}

/** What a watched input line is. Only the function button has the double and hold gestures. */
type LineRole = { kind: 'button'; id: ButtonId; gestures: boolean } | { kind: 'trigger'; source: string } | { kind: 'fall' };

interface LineState {
  line: number;
  role: LineRole;
  /** Debounced level: true while held (active). */
  pressed: boolean;
  /** Level after the newest edge, bounce included. */
  raw: boolean;
  rawTs: number;
  /** Kernel time (ms) of the last edge that changed the debounced level. */
  acceptedTs: number | null;
  pressTs: number;
  /** The long press (or, with gestures, the hold) was already reported while held. */
  longFired: boolean;
  longTimer: NodeJS.Timeout | null;
  settleTimer: NodeJS.Timeout | null;
  /** Gestures: kernel time a short press was let go, while it may still become a double. */
  releasedTs: number | null;
  /** Gestures: reports that short press as `press` when no second one comes in time. */
  singleTimer: NodeJS.Timeout | null;
  /** Gestures: this press began within the double-press window of a short one. */
  secondPress: boolean;
}

/** One gpiomon: the lines sharing one active-low/bias setting. */
interface MonitorGroup {
  activeLow: boolean;
  bias: string | undefined;
  lines: number[];
  child: ChildProcess | null;
  spawnedAt: number;
  restartAttempts: number;
  restartTimer: NodeJS.Timeout | null;
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
  private readonly inputs = new Map<number, LineState>();
  private readonly groups: MonitorGroup[] = [];
  private readonly budget: InputBudget;
  private readonly ledLines: Record<keyof LedState, number | undefined>;
  private readonly holders = new Map<number, Holder>();
  private readonly pulseChildren = new Set<ChildProcess>();
  private leds: LedState = { recording: false, streaming: false, fault: false };
  private started = false;
  private linkUp = false;
  private lastPattern: NotificationPattern | null = null;
  private lastError: string | null = null;
  private ledQueue: Promise<void> = Promise.resolve();
  /** Trigger/fall edges ignored as beyond the budget (input-budget.ts). */
  private rateLimited = 0;
  private notifyQueue: Promise<void> = Promise.resolve();

  constructor(opts: GpioBackendOptions) {
    super();
    this.logger = opts.logger;
    this.config = gpioConfigSchema.parse(opts.config);
    this.env = opts.env ?? process.env;
    this.restartMinMs = opts.restartMinMs ?? 500;
    this.restartMaxMs = Math.max(this.restartMinMs, opts.restartMaxMs ?? 30_000);
    this.budget = new InputBudget(opts.now);
    const c = this.config;
    this.ledLines = { recording: c.recordLedLine, streaming: c.streamLedLine, fault: c.faultLedLine };
    const used = [
      c.recordButtonLine,
      c.functionButtonLine,
      ...c.inputs.map((i) => i.line),
      c.fallLine,
      c.recordLedLine,
      c.streamLedLine,
      c.faultLedLine,
      c.buzzerLine,
      c.vibrationLine,
    ].filter((l): l is number => l !== undefined);
    // One line cannot be both an input and an output, and two holders of one line would fight (EBUSY).
    const dup = used.find((l, i) => used.indexOf(l) !== i);
    if (dup !== undefined) throw new Error(`gpio config: line ${dup} is used twice`);
    const buttonWiring = { activeLow: c.buttonActiveLow, bias: c.buttonBias };
    this.addInput(c.recordButtonLine, { kind: 'button', id: 'record', gestures: false }, buttonWiring);
    if (c.functionButtonLine !== undefined) this.addInput(c.functionButtonLine, { kind: 'button', id: 'function', gestures: true }, buttonWiring);
    for (const i of c.inputs) {
      this.addInput(i.line, { kind: 'trigger', source: i.source }, { activeLow: i.activeLow ?? c.buttonActiveLow, bias: i.bias ?? c.buttonBias });
    }
    if (c.fallLine !== undefined) this.addInput(c.fallLine, { kind: 'fall' }, { activeLow: c.fallActiveLow ?? c.buttonActiveLow, bias: c.buttonBias });
  }

  private addInput(line: number, role: LineRole, wiring: { activeLow: boolean; bias: string | undefined }): void {
    this.inputs.set(line, newLineState(line, role));
    let group = this.groups.find((g) => g.activeLow === wiring.activeLow && g.bias === wiring.bias);
    if (group === undefined) {
      group = { ...wiring, lines: [], child: null, spawnedAt: 0, restartAttempts: 0, restartTimer: null };
      this.groups.push(group);
    }
    group.lines.push(line);
  }

  async start(): Promise<void> {
    if (this.started) return;
    const c = this.config;
    // A short gpioset first: it proves the chip exists and the output lines are free, and gives a clear
    // error now rather than holders and a monitor dying one by one in the background.
    const outputs = [...this.ledLineList(), c.buzzerLine, c.vibrationLine];
    await this.runChecked('gpioset', [c.chip, ...outputs.map((l) => `${l}=0`)], `cannot drive output lines ${outputs.join(',')}`);
    // Reading the inputs once both checks the lines and tells a button already held (an input already
    // active) at start, which must not turn into a press when it is let go (nor into a trigger).
    for (const g of this.groups) {
      const what = g === this.groups[0] ? 'button lines' : 'input lines';
      const got = await this.runChecked('gpioget', [...this.inputFlags(g), c.chip, ...g.lines.map(String)], `cannot read ${what} ${g.lines.join(',')}`);
      const levels = got.stdout.trim().split(/\s+/);
      g.lines.forEach((line, i) => {
        const held = levels[i] === '1';
        Object.assign(this.inputs.get(line)!, { pressed: held, raw: held, longFired: held, acceptedTs: null });
      });
    }
    this.started = true;
    this.lastError = null;
    for (const [key, line] of Object.entries(this.ledLines)) {
      if (line !== undefined) this.spawnHolder(line, this.leds[key as keyof LedState] ? 1 : 0);
    }
    try {
      for (const g of this.groups) await this.spawnMonitor(g);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    const waits: Promise<void>[] = [];
    for (const g of this.groups) {
      if (g.restartTimer) clearTimeout(g.restartTimer);
      g.restartTimer = null;
      if (g.child) waits.push(terminate(g.child));
      g.child = null;
    }
    for (const b of this.inputs.values()) clearLineTimers(b);
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

  /** Trigger and fall edges ignored as beyond the input budget, for diagnostics. */
  counters(): { rateLimited: number } {
    return { rateLimited: this.rateLimited };
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

  private async spawnMonitor(g: MonitorGroup): Promise<void> {
    const c = this.config;
    const args = [...this.inputFlags(g), '--num-events=0', '--line-buffered', `--format=${GPIOMON_FORMAT}`, c.chip, ...g.lines.map(String)];
    const child = spawn(this.tool('gpiomon'), args, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
    g.child = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (g.child === child) this.onMonitorLine(g, l);
    });
    let ended = false;
    let spawned = false;
    const onEnd = (why: string) => {
      if (ended) return;
      ended = true;
      if (g.child !== child) return;
      g.child = null;
      this.onMonitorDeath(g, stderr.trim().split('\n').pop() || why);
    };
    child.once('exit', (code, signal) => onEnd(signal ? `gpiomon killed by ${signal}` : `gpiomon exited with code ${code}`));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => {
        spawned = true;
        g.spawnedAt = Date.now();
        // Up once every monitor runs: a dead one means some input is not watched.
        if (this.groups.every((x) => x.child !== null)) this.setLink(true);
        resolve();
      });
      child.once('error', (err) => {
        const why = this.spawnErrorText('gpiomon', err);
        onEnd(why);
        if (!spawned) reject(new Error(why));
      });
    });
  }

  private onMonitorDeath(g: MonitorGroup, reason: string): void {
    for (const line of g.lines) {
      const b = this.inputs.get(line)!;
      // A finished short press still waiting to see whether it becomes a double did happen: report it.
      if (b.singleTimer !== null && b.role.kind === 'button') this.emit('button', { button: b.role.id, press: 'press' });
      // Edges while gpiomon is down are lost: forget a half-seen press instead of inventing its end.
      clearLineTimers(b);
      Object.assign(b, { pressed: false, raw: false, longFired: false, acceptedTs: null, releasedTs: null, secondPress: false });
    }
    const what = g === this.groups[0] ? 'button monitor' : `input monitor (lines ${g.lines.join(',')})`;
    this.lastError = `gpio: ${what} down: ${reason}`;
    this.logger.warn({ reason, lines: g.lines }, 'gpio: gpiomon ended; restarting');
    this.setLink(false, reason);
    if (!this.started) return;
    // A monitor that ran for a while before dying is a fresh failure, not part of a crash loop.
    if (Date.now() - g.spawnedAt > this.restartMaxMs) g.restartAttempts = 0;
    const delay = Math.min(this.restartMaxMs, this.restartMinMs * 2 ** g.restartAttempts);
    g.restartAttempts++;
    if (g.restartTimer) clearTimeout(g.restartTimer);
    g.restartTimer = setTimeout(() => {
      g.restartTimer = null;
      if (!this.started) return;
      // The holders may have died with the same fault (chip gone and back); re-drive the LEDs too.
      void this.setLeds(this.leds).catch(() => undefined);
      this.spawnMonitor(g).catch((err: Error) => this.logger.warn({ err: err.message }, 'gpio: gpiomon restart failed'));
    }, delay);
  }

  private onMonitorLine(g: MonitorGroup, text: string): void {
    const m = /^(\d+) ([01]) (\d+) (\d+)$/.exec(text.trim());
    const b = m && g.lines.includes(Number(m[1])) ? this.inputs.get(Number(m[1])) : undefined;
    if (!m || !b) {
      this.logger.warn({ line: text }, 'gpio: unexpected gpiomon output ignored');
      return;
    }
    // Kernel timestamps, not arrival time: a burst of bounces can reach us in one read.
    const ts = Number(m[3]) * 1000 + Number(m[4]) / 1e6;
    this.onEdge(b, m[2] === '1', ts);
  }

  /** `active`: the line became active (pressed); gpiomon already applied --active-low. */
  private onEdge(b: LineState, active: boolean, ts: number): void {
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

  private transition(b: LineState, pressed: boolean, ts: number): void {
    b.acceptedTs = ts;
    b.pressed = pressed;
    const role = b.role;
    if (role.kind === 'trigger') {
      if (pressed) this.report('trigger', role.source);
      return;
    }
    if (role.kind === 'fall') {
      if (pressed) this.report('fall', null);
      return;
    }
    if (role.gestures) {
      this.gestureTransition(b, role.id, pressed, ts);
      return;
    }
    if (pressed) {
      b.pressTs = ts;
      b.longFired = false;
      if (b.longTimer) clearTimeout(b.longTimer);
      b.longTimer = setTimeout(() => {
        b.longTimer = null;
        if (!this.started || !b.pressed) return;
        b.longFired = true;
        this.emit('button', { button: role.id, press: 'long' });
      }, this.config.longPressMs);
      return;
    }
    if (b.longTimer) clearTimeout(b.longTimer);
    b.longTimer = null;
    if (b.longFired) return;
    // Events that arrive late (a busy event loop) are still classified by how long the button was held.
    this.emit('button', { button: role.id, press: ts - b.pressTs >= this.config.longPressMs ? 'long' : 'press' });
  }

  /**
   * The function button: a short press is held back for doublePressMs after it is let go, to see whether
   * a second one makes it a `double`; held past holdMs it is a `hold` (reported when the time passes),
   * let go between longPressMs and holdMs a `long`. Classified by kernel timestamps, so events that
   * arrive together are judged by when they happened.
   */
  private gestureTransition(b: LineState, id: ButtonId, pressed: boolean, ts: number): void {
    const c = this.config;
    const emit = (press: ButtonPress) => this.emit('button', { button: id, press });
    if (pressed) {
      b.pressTs = ts;
      b.longFired = false;
      b.secondPress = false;
      if (b.singleTimer !== null) {
        clearTimeout(b.singleTimer);
        b.singleTimer = null;
        if (b.releasedTs !== null && ts - b.releasedTs <= c.doublePressMs) b.secondPress = true;
        else emit('press'); // the window had passed; only our timer had not fired yet
      }
      b.releasedTs = null;
      if (b.longTimer) clearTimeout(b.longTimer);
      b.longTimer = setTimeout(() => {
        b.longTimer = null;
        if (!this.started || !b.pressed) return;
        b.longFired = true;
        if (b.secondPress) emit('press');
        b.secondPress = false;
        emit('hold');
      }, c.holdMs);
      return;
    }
    if (b.longTimer) clearTimeout(b.longTimer);
    b.longTimer = null;
    if (b.longFired) return;
    const held = ts - b.pressTs;
    if (held >= c.longPressMs) {
      // Not a second tap but a long press or hold of its own: the first tap stands alone.
      if (b.secondPress) emit('press');
      b.secondPress = false;
      emit(held >= c.holdMs ? 'hold' : 'long');
      return;
    }
    if (b.secondPress) {
      b.secondPress = false;
      emit('double');
      return;
    }
    b.releasedTs = ts;
    b.singleTimer = setTimeout(() => {
      b.singleTimer = null;
      b.releasedTs = null;
      if (this.started) emit('press');
    }, c.doublePressMs);
  }

  /** A trigger input or the fall line became active: passed on within the budget, else logged and counted. */
  private report(kind: 'trigger' | 'fall', source: string | null): void {
    const allowed = source !== null ? this.budget.allowTrigger(source) : this.budget.allowFall();
    if (!allowed) {
      this.rateLimited++;
      this.logger.warn({ kind, source }, 'gpio: input beyond its budget ignored (a chattering or faulty line?)');
      return;
    }
    if (source !== null) this.emit('trigger', { source });
    else this.emit('fall');
  }

  private setLink(up: boolean, reason?: string): void {
    if (this.linkUp === up) return;
    this.linkUp = up;
    this.emit('link', up ? { up, firmwareVersion: GPIO_FIRMWARE_VERSION } : { up, reason: reason ?? 'down' });
  }

  private inputFlags(g: MonitorGroup): string[] {
    return [...(g.activeLow ? ['--active-low'] : []), ...(g.bias ? [`--bias=${g.bias}`] : [])];
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

function newLineState(line: number, role: LineRole): LineState {
  return {
    line,
    role,
    pressed: false,
    raw: false,
    rawTs: 0,
    acceptedTs: null,
    pressTs: 0,
    longFired: false,
    longTimer: null,
    settleTimer: null,
    releasedTs: null,
    singleTimer: null,
    secondPress: false,
  };
}

function clearLineTimers(b: LineState): void {
  if (b.longTimer) clearTimeout(b.longTimer);
  if (b.settleTimer) clearTimeout(b.settleTimer);
  if (b.singleTimer) clearTimeout(b.singleTimer);
  b.longTimer = null;
  b.settleTimer = null;
  b.singleTimer = null;
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
