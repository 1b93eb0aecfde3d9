import { createRequire } from 'node:module';
import type { Logger } from 'pino';

/** The part of the `sd-notify` addon this module uses. */
interface SdNotify {
  ready(): void;
  // The native binding dereferences its first argument as a number without checking it, so the pid
  // must always be passed.
  stopping(pid: number): void;
  watchdog(): void;
  sendStatus(text: string): void;
}

export interface ServiceNotifierOptions {
  logger: Logger;
  /** Asked before every watchdog ping; while it says unhealthy, no ping is sent. */
  isHealthy: () => { healthy: boolean; reason?: string };
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Tells systemd (Type=notify) when the agent is ready or stopping, and keeps its watchdog fed while
 * the agent is healthy.
 *
 * Does nothing when NOTIFY_SOCKET is unset (run by hand, in a container, under tests) or when the
 * native addon cannot be loaded: both mean "no systemd to talk to".
 *
 * libsystemd's sd_notify reads NOTIFY_SOCKET from the real process environment each time it is
 * called, so `env` decides only whether this class talks at all and what the watchdog period is; it
 * cannot redirect the messages.
 */
export class ServiceNotifier {
  readonly #logger: Logger;
  readonly #isHealthy: () => { healthy: boolean; reason?: string };
  readonly #env: NodeJS.ProcessEnv;
  // undefined: not tried yet; null: tried and failed.
  #sd: SdNotify | null | undefined;
  #timer: NodeJS.Timeout | undefined;
  #unhealthy = false;

  constructor(o: ServiceNotifierOptions) {
    this.#logger = o.logger;
    this.#isHealthy = o.isHealthy;
    this.#env = o.env ?? process.env;
  }

  /** True when started by systemd with a notify socket and the addon is usable. */
  get active(): boolean {
    return this.#client() !== null;
  }

  ready(status?: string): void {
    const sd = this.#client();
    if (!sd) return;
    this.#send('READY=1', () => sd.ready());
    if (status !== undefined) this.status(status);
  }

  status(text: string): void {
    const sd = this.#client();
    if (!sd) return;
    // A newline would end the STATUS= field and start a bogus assignment.
    const line = text.replace(/[\r\n]+/g, ' ');
    this.#send('STATUS', () => sd.sendStatus(line));
  }

  stopping(): void {
    const sd = this.#client();
    if (!sd) return;
    this.stopWatchdog();
    this.#send('STOPPING=1', () => sd.stopping(process.pid));
  }

  startWatchdog(): void {
    if (this.#timer) return;
    const sd = this.#client();
    if (!sd) return;
    const periodMs = this.#watchdogPeriodMs();
    if (periodMs === undefined) return;
    this.#logger.info({ periodMs }, 'systemd watchdog enabled');
    this.#tick(sd);
    this.#timer = setInterval(() => this.#tick(sd), periodMs);
    // Keeping the process alive is the agent's job, not the watchdog's: a pending ping must not
    // delay a clean exit.
    this.#timer.unref();
  }

  stopWatchdog(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * The ping interval, or undefined when systemd set no watchdog for this process. Pinging at half
   * the timeout, as sd_watchdog_enabled(3) recommends, leaves a whole period of slack for a slow
   * tick.
   */
  #watchdogPeriodMs(): number | undefined {
    const usecText = this.#env.WATCHDOG_USEC;
    if (!usecText) return undefined;
    const usec = Number(usecText);
    if (!Number.isSafeInteger(usec) || usec <= 0) {
      this.#logger.warn({ WATCHDOG_USEC: usecText }, 'ignoring invalid WATCHDOG_USEC');
      return undefined;
    }
    // WATCHDOG_PID names the process systemd expects pings from; a child that inherited the
    // environment (the capture worker) must not ping on the agent's behalf.
    const pidText = this.#env.WATCHDOG_PID;
    if (pidText && Number(pidText) !== process.pid) return undefined;
    return Math.max(1, Math.floor(usec / 2 / 1000));
  }

  // The timer stopping (a blocked event loop) already starves the watchdog; the health check
  // covers a live loop whose work is wedged, such as an MQTT link that never recovers, so that
  // systemd restarts the agent instead of leaving it running uselessly.
  #tick(sd: SdNotify): void {
    let health: { healthy: boolean; reason?: string };
    try {
      health = this.#isHealthy();
    } catch (err) {
      health = { healthy: false, reason: `health check threw: ${(err as Error)?.message ?? String(err)}` };
    }
    if (!health.healthy) {
      if (!this.#unhealthy) {
        this.#unhealthy = true;
        this.#logger.warn(
          { reason: health.reason ?? 'unspecified' },
          'agent unhealthy: withholding systemd watchdog pings, systemd will restart the agent if this lasts',
        );
      }
      return;
    }
    if (this.#unhealthy) {
      this.#unhealthy = false;
      this.#logger.info('agent healthy again: resuming systemd watchdog pings');
    }
    this.#send('WATCHDOG=1', () => sd.watchdog());
  }

  #send(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.#logger.warn({ err, what }, 'sd_notify failed');
    }
  }

  #client(): SdNotify | null {
    if (!this.#env.NOTIFY_SOCKET) return null;
    if (this.#sd !== undefined) return this.#sd;
    try {
      // Loaded on first use: it is a native addon, and a board or container without libsystemd
      // should still run the agent.
      this.#sd = createRequire(import.meta.url)('sd-notify') as SdNotify;
    } catch (err) {
      this.#sd = null;
      this.#logger.warn({ err }, 'sd-notify could not be loaded: running without systemd notifications');
    }
    return this.#sd;
  }
}
