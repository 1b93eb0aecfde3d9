import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { SerialPort } from 'serialport';
import type {
  BatteryStatus,
  FirmwareBridge,
  FirmwareBridgeEvents,
  FirmwareBridgeStatus,
  LedState,
  NotificationPattern,
} from '../interface.ts';
import { UNKNOWN_BATTERY } from '../interface.ts';
import { InputBudget } from '../input-budget.ts';
import type { Frame } from './frames.ts';
import {
  BUTTON_WIRE_IDS,
  decodeBattery,
  decodeHelloPayload,
  decodeTrigger,
  encodeHelloPayload,
  encodeLeds,
  MSG,
  MSG_NAMES,
  NACK_REASON,
  PATTERN_IDS,
  PRESS_WIRE_IDS,
  PROTOCOL_VERSION,
} from './frames.ts';
import type { LinkCounters } from './link.ts';
import { FrameLink, LinkClosedError, LinkTimeoutError } from './link.ts';
import { errorMessage } from '../../../src/errors.ts';

export interface SerialBackendOptions {
  /** Serial device, e.g. /dev/ttyAMA0 or a stable udev/pty symlink; reopened by path after an unplug. */
  path: string;
  logger: Logger;
  baudRate?: number;
  /** Per-attempt wait for ACK. Default 200. */
  ackTimeoutMs?: number;
  /** Resends after the first attempt. Default 3. */
  retries?: number;
  /** PING interval while the link is up; 0 disables. Default 2000. */
  keepaliveMs?: number;
  /** Reopen / re-handshake back-off: starts here, doubles, capped at reconnectMaxMs, retried forever. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Identity sent in our HELLO, for the MCU's logs. */
  hostIdentity?: string;
  /** Clock of the TRIGGER/FALL budget (input-budget.ts) and of the repeat memory, ms; tests inject one. Default Date.now. */
  now?: () => number;
}

/**
 * A repeat of one of the MCU's recent requests (BUTTON, TRIGGER, FALL) is a retry (our answer was lost) or
 * a replay: answered again, not acted on again. "Recent" is the last 32 requests and at most 5 s: an
 * honest retry comes within the MCU's retry span (4 x 200 ms), and the MCU numbers all its requests from
 * one u8 counter, so an honest seq comes round again only after 256 requests. The time limit keeps an
 * MCU that rebooted unseen (its boot HELLO lost to line noise), whose seqs start again at 1, from having
 * its first presses taken for repeats of the ones before the reboot.
 */
const RECENT_REQUESTS = 32;
const RECENT_REQUEST_MS = 5000;

interface RecentRequest {
  type: number;
  seq: number;
  at: number;
  /** The answer it got: null = ACK, else the NACK reason; a replay gets the same answer again. */
  nack: number | null;
}

export class SerialBackend extends EventEmitter<FirmwareBridgeEvents> implements FirmwareBridge {
  readonly kind = 'serial' as const;
  private readonly opts: Required<Omit<SerialBackendOptions, 'logger' | 'now'>>;
  private readonly log: Logger;
  private readonly link: FrameLink;
  private port: SerialPort | null = null;
  private running = false;
  private linkUp = false;
  private firmwareVersion: string | null = null;
  private battery: BatteryStatus = { ...UNKNOWN_BATTERY };
  private lastPattern: NotificationPattern | null = null;
  private lastError: string | null = null;
  private leds: LedState | null = null;
  private backoffMs: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private handshaking = false;
  private readonly recentIn: RecentRequest[] = [];
  private readonly budget: InputBudget;
  private readonly now: () => number;
  private reconnects = 0;
  private lastLoggedLoss: string | null = null;

  constructor(options: SerialBackendOptions) {
    super();
    this.log = options.logger.child({ component: 'firmware-serial' });
    this.opts = {
      path: options.path,
      baudRate: options.baudRate ?? 115200,
      ackTimeoutMs: options.ackTimeoutMs ?? 200,
      retries: options.retries ?? 3,
      keepaliveMs: options.keepaliveMs ?? 2000,
      reconnectInitialMs: options.reconnectInitialMs ?? 250,
      reconnectMaxMs: options.reconnectMaxMs ?? 5000,
      hostIdentity: options.hostIdentity ?? 'bwc-agent',
    };
    this.backoffMs = this.opts.reconnectInitialMs;
    this.now = options.now ?? Date.now;
    this.budget = new InputBudget(this.now);
    this.link = new FrameLink({
      ackTimeoutMs: this.opts.ackTimeoutMs,
      retries: this.opts.retries,
      write: (bytes) => this.write(bytes),
      onFrame: (frame) => this.onFrame(frame),
    });
  }

  /** Resolves once the port open has been attempted; the link comes up asynchronously (see the `link` event). */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.openPort();
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.clearTimers();
    this.link.failAll(new LinkClosedError('firmware bridge stopped'));
    const port = this.port;
    this.port = null;
    this.markDown('stopped');
    if (port?.isOpen) {
      await new Promise<void>((resolve) => port.close(() => resolve()));
    }
    port?.removeAllListeners();
  }

  async notify(pattern: NotificationPattern): Promise<void> {
    const id = PATTERN_IDS.indexOf(pattern);
    if (id < 0) throw new Error(`unknown notification pattern: ${String(pattern)}`);
    await this.reliable(`notify(${pattern})`, MSG.NOTIFY, Buffer.from([id]));
    this.lastPattern = pattern;
  }

  /** The state is remembered even when this rejects, and re-sent whenever the link (re)comes up. */
  async setLeds(state: LedState): Promise<void> {
    this.leds = { recording: state.recording, streaming: state.streaming, fault: state.fault };
    await this.reliable('setLeds', MSG.LEDS, encodeLeds(this.leds));
  }

  status(): FirmwareBridgeStatus {
    return {
      linkUp: this.linkUp,
      firmwareVersion: this.firmwareVersion,
      battery: { ...this.battery },
      lastPattern: this.lastPattern,
      lastError: this.lastError,
    };
  }

  /** Protocol counters (dropped frames by cause, retries, timeouts) plus reconnects, for diagnostics. */
  counters(): LinkCounters & { reconnects: number } {
    return { ...this.link.counters, reconnects: this.reconnects };
  }

  private async reliable(what: string, type: number, payload: Buffer): Promise<void> {
    if (!this.running) throw new Error(`${what}: firmware bridge is not started`);
    if (!this.linkUp) throw new Error(`${what}: firmware link is down (${this.lastError ?? 'no handshake yet'})`);
    try {
      await this.link.request(type, payload);
    } catch (err) {
      const message = `${what} failed: ${errorMessage(err)}`;
      this.lastError = message;
      if (err instanceof LinkTimeoutError) {
        // Silence after all retries means the MCU is gone or wedged: say so, then keep trying to re-handshake.
        this.markDown(`mcu not answering: ${errorMessage(err)}`);
        this.scheduleHandshake();
      }
      throw new Error(message, { cause: err });
    }
  }

  private write(bytes: Buffer): void {
    const port = this.port;
    if (port === null || !port.isOpen) throw new Error('serial port not open');
    port.write(bytes, (err) => {
      // A pty or USB UART that vanished does not always raise 'close' (no POLLHUP seen); a failed write is
      // then the first sign, so treat it as the cable being pulled.
      if (err && this.port === port) this.onPortLost(`serial port write failed: ${err.message}`);
    });
  }

  private openPort(): void {
    if (!this.running) return;
    const port = new SerialPort({ path: this.opts.path, baudRate: this.opts.baudRate, autoOpen: false });
    this.port = port;
    port.on('data', (data: Buffer) => {
      if (this.port === port) this.link.receive(data);
    });
    port.on('error', (err: Error) => {
      if (this.port === port) this.onPortLost(`serial port error: ${err.message}`);
    });
    port.on('close', (err?: Error & { disconnected?: boolean }) => {
      if (this.port === port) this.onPortLost(err ? `serial port closed: ${err.message}` : 'serial port closed');
    });
    port.open((err) => {
      if (this.port !== port) return;
      if (err) {
        this.onPortLost(`cannot open ${this.opts.path}: ${err.message}`);
        return;
      }
      this.log.info({ path: this.opts.path }, 'serial port open; handshaking');
      this.link.resetStream();
      this.recentIn.length = 0;
      void this.handshake();
    });
  }

  private onPortLost(reason: string): void {
    const port = this.port;
    this.port = null;
    this.stopKeepalive();
    this.lastError = reason;
    this.link.failAll(new LinkClosedError(reason));
    this.markDown(reason);
    if (port !== null) {
      port.removeAllListeners('data');
      // Keep a no-op error listener: a late error from a dead port must not become an uncaught exception.
      port.removeAllListeners('error');
      port.on('error', () => {});
      if (port.isOpen) port.close(() => {});
    }
    if (!this.running) return;
    // Reopening forever: log each new reason once, not every attempt, so an unplugged cable cannot flood the log.
    const level = reason === this.lastLoggedLoss ? 'debug' : 'warn';
    this.lastLoggedLoss = reason;
    this.log[level]({ reason, retryInMs: this.backoffMs }, 'firmware serial link lost; reopening');
    this.scheduleRetry(() => {
      this.reconnects++;
      this.openPort();
    });
  }

  private scheduleRetry(fn: () => void): void {
    if (this.retryTimer !== null) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.reconnectMaxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      fn();
    }, delay);
  }

  private scheduleHandshake(): void {
    this.scheduleRetry(() => {
      if (this.port?.isOpen) void this.handshake();
    });
  }

  private async handshake(): Promise<void> {
    if (this.handshaking) return;
    this.handshaking = true;
    try {
      const reply = await this.link.request(MSG.HELLO, encodeHelloPayload(this.opts.hostIdentity));
      this.onHello(reply, false);
    } catch (err) {
      if (err instanceof LinkClosedError) return;
      this.lastError = `handshake failed: ${errorMessage(err)}`;
      this.log.warn({ err: errorMessage(err) }, 'firmware handshake failed; retrying');
      this.scheduleHandshake();
    } finally {
      this.handshaking = false;
    }
  }

  /** A HELLO_ACK answering ours, or a HELLO the MCU sends when it (re)boots. */
  private onHello(frame: Frame, mcuBooted: boolean): void {
    const hello = decodeHelloPayload(frame.payload);
    if (hello === null || hello.protocolVersion !== PROTOCOL_VERSION) {
      this.lastError = `mcu speaks protocol ${hello?.protocolVersion ?? '?'}, agent speaks ${PROTOCOL_VERSION}`;
      this.markDown(this.lastError);
      return;
    }
    if (mcuBooted) {
      // The MCU restarted its sequence numbers and forgot its outputs.
      this.recentIn.length = 0;
      if (this.linkUp) this.markDown('mcu reset');
    }
    this.firmwareVersion = hello.identity;
    this.backoffMs = this.opts.reconnectInitialMs;
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (!this.linkUp) {
      this.linkUp = true;
      this.lastError = null;
      this.lastLoggedLoss = null;
      this.log.info({ firmwareVersion: hello.identity }, 'firmware link up');
      this.emit('link', { up: true, firmwareVersion: hello.identity });
      this.startKeepalive();
      this.restoreLeds();
    }
  }

  private restoreLeds(): void {
    if (this.leds === null) return;
    this.link.request(MSG.LEDS, encodeLeds(this.leds)).catch((err: unknown) => {
      this.lastError = `restoring LEDs failed: ${errorMessage(err)}`;
    });
  }

  private markDown(reason: string): void {
    this.stopKeepalive();
    if (!this.linkUp) return;
    this.linkUp = false;
    this.log.warn({ reason }, 'firmware link down');
    this.emit('link', { up: false, reason });
  }

  private startKeepalive(): void {
    this.stopKeepalive();
    if (this.opts.keepaliveMs <= 0) return;
    this.keepaliveTimer = setInterval(() => {
      void this.reliable('keepalive', MSG.PING, Buffer.alloc(0)).catch(() => {});
    }, this.opts.keepaliveMs);
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer !== null) clearInterval(this.keepaliveTimer);
    this.keepaliveTimer = null;
  }

  private clearTimers(): void {
    this.stopKeepalive();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /**
   * A request from the MCU seen among its latest ones (our answer was lost, or the frame is replayed): it
   * gets the same answer again and is not acted on again.
   */
  private answerIfRepeated(frame: Frame): boolean {
    const now = this.now();
    const seen = this.recentIn.find((r) => r.type === frame.type && r.seq === frame.seq && now - r.at <= RECENT_REQUEST_MS);
    if (seen === undefined) return false;
    this.link.counters.duplicates++;
    this.sendAnswer(frame.seq, seen.nack);
    return true;
  }

  /** Answers a new request (ACK when nack is null) and remembers the answer for its repeats. */
  private answer(frame: Frame, nack: number | null): void {
    this.recentIn.push({ type: frame.type, seq: frame.seq, at: this.now(), nack });
    if (this.recentIn.length > RECENT_REQUESTS) this.recentIn.shift();
    if (nack === NACK_REASON.RATE_LIMITED) this.link.counters.rateLimited++;
    this.sendAnswer(frame.seq, nack);
  }

  private sendAnswer(seq: number, nack: number | null): void {
    if (nack === null) this.safeSend(MSG.ACK, seq);
    else this.safeSend(MSG.NACK, seq, Buffer.from([nack]));
  }

  /** A request whose payload its type does not allow: NACK 2, counted, logged once in a while, never acted on. */
  private refuseBadPayload(frame: Frame, why: string): void {
    this.link.counters.badPayload++;
    this.log.debug({ type: MSG_NAMES[frame.type], seq: frame.seq, payload: frame.payload.toString('hex'), why }, 'mcu request refused: bad payload');
    this.safeSend(MSG.NACK, frame.seq, Buffer.from([NACK_REASON.BAD_PAYLOAD]));
  }

  private safeSend(type: number, seq: number, payload?: Uint8Array): void {
    try {
      this.link.send(type, seq, payload);
    } catch (err) {
      this.log.debug({ err: errorMessage(err) }, 'reply not sent');
    }
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case MSG.HELLO:
        this.safeSend(MSG.HELLO_ACK, frame.seq, encodeHelloPayload(this.opts.hostIdentity));
        this.onHello(frame, true);
        return;
      case MSG.HELLO_ACK:
        // A late answer to a HELLO we already gave up on still proves the MCU is there.
        if (!this.linkUp) this.onHello(frame, false);
        return;
      case MSG.BUTTON: {
        const button = BUTTON_WIRE_IDS[frame.payload[0] ?? -1];
        const press = PRESS_WIRE_IDS[frame.payload[1] ?? -1];
        if (frame.payload.length !== 2 || button === undefined || press === undefined) {
          this.refuseBadPayload(frame, 'BUTTON takes button:u8 (0..1) and press:u8 (0..3)');
          return;
        }
        if (this.answerIfRepeated(frame)) return;
        this.answer(frame, null);
        this.emit('button', { button, press });
        return;
      }
      case MSG.TRIGGER: {
        const source = decodeTrigger(frame.payload);
        if (source === null) {
          this.refuseBadPayload(frame, 'TRIGGER takes one byte, source 1..255');
          return;
        }
        if (this.answerIfRepeated(frame)) return;
        if (!this.budget.allowTrigger(source)) {
          this.answer(frame, NACK_REASON.RATE_LIMITED);
          return;
        }
        this.answer(frame, null);
        this.emit('trigger', { source });
        return;
      }
      case MSG.FALL: {
        if (frame.payload.length !== 0) {
          this.refuseBadPayload(frame, 'FALL takes no payload');
          return;
        }
        if (this.answerIfRepeated(frame)) return;
        if (!this.budget.allowFall()) {
          this.answer(frame, NACK_REASON.RATE_LIMITED);
          return;
        }
        this.answer(frame, null);
        this.emit('fall');
        return;
      }
      case MSG.BATTERY: {
        const battery = decodeBattery(frame.payload);
        if (battery === null) {
          this.link.counters.badLength++;
          return;
        }
        this.battery = battery;
        this.emit('battery', { ...battery });
        return;
      }
      case MSG.PING:
        this.safeSend(MSG.PONG, frame.seq);
        return;
      default:
        this.link.counters.unknownType++;
        this.log.debug({ type: MSG_NAMES[frame.type] ?? frame.type }, 'unexpected frame from mcu');
        this.safeSend(MSG.NACK, frame.seq, Buffer.from([NACK_REASON.UNKNOWN_TYPE]));
    }
  }
}
