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
    this.#timer = undefined;
  }

  /** Compares with the last reading; emits `change` when the set of addresses differs. */
  check(): void {
    const now = this.#read();
    const before = this.#addresses;
    if (now.length === before.length && now.every((a, i) => a === before[i])) return;
    this.#addresses = now;
    this.#log.info({ before, after: now }, 'network addresses changed');
    this.emit('change', { before, after: now });
  }

  #read(): string[] {
    return hostAddresses(this.#o.interfaces, this.#o.read?.()).sort();
  }
}
