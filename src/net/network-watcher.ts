// Notices when the camera's addresses change: a modem that reconnects comes back with a new one,
// Wi-Fi joins or drops. Linux tells of this over rtnetlink, which Node does not expose; reading
// the interface table once a second costs a few microseconds and needs no native addon.
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Logger } from 'pino';
import { hostAddresses } from '../stream/ice.ts';

export interface NetworkChange {
  before: string[];
  after: string[];
}

export interface NetworkWatcherOptions {
  /** Interfaces that count (stream.ice.interfaces); empty: every one but loopback. */
  interfaces: readonly string[];
  intervalMs?: number;
  /** How long a new reading must hold before it counts (default 200 ms). */
  settleMs?: number;
  logger: Logger;
  /** Default os.networkInterfaces; tests pass their own. */
  read?: () => ReturnType<typeof os.networkInterfaces>;
}

export class NetworkWatcher extends EventEmitter<{ change: [NetworkChange] }> {
  readonly name = 'network';
  readonly #o: NetworkWatcherOptions;
  readonly #log: Logger;
  #addresses: string[] = [];
  #timer: NodeJS.Timeout | undefined;
  #settleTimer: NodeJS.Timeout | undefined;
  /** A new reading not yet seen twice: an interface mid-change (new address added, old not yet gone). */
  #pending: string[] | undefined;

  constructor(options: NetworkWatcherOptions) {
    super();
    this.#o = options;
    this.#log = options.logger.child({ module: 'network' });
  }

  get addresses(): readonly string[] {
    return this.#addresses;
  }

  start(): void {
    this.#addresses = this.#read();
    this.#timer = setInterval(() => this.check(), this.#o.intervalMs ?? 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#settleTimer);
    this.#timer = this.#settleTimer = undefined;
  }

  /**
   * Compares with the last reading; emits `change` once a different set of addresses has been read
   * twice, settleMs apart: an ICE restart on an address that is being removed would stall.
   */
  check(): void {
    const now = this.#read();
    const before = this.#addresses;
    if (same(now, before)) {
      this.#pending = undefined;
      return;
    }
    if (!this.#pending || !same(now, this.#pending)) {
      this.#pending = now;
      clearTimeout(this.#settleTimer);
      this.#settleTimer = setTimeout(() => this.check(), this.#o.settleMs ?? 200);
      this.#settleTimer.unref();
      return;
    }
    this.#pending = undefined;
    this.#addresses = now;
    this.#log.info({ before, after: now }, 'network addresses changed');
    this.emit('change', { before, after: now });
  }

  #read(): string[] {
    return hostAddresses(this.#o.interfaces, this.#o.read?.()).sort();
  }
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
