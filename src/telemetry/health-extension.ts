// Samples health on an interval into the device state, and raises storage.low / storage.ok
// events when free space crosses the configured threshold.
import type { Logger } from 'pino';
import type { FleetLink } from '../link/fleet-link.ts';
import type { DeviceState } from '../state/device-state.ts';
import { HealthProbe } from './health.ts';
import type { Extension } from '../agent/extension.ts';
import { errorMessage } from '../errors.ts';

export interface HealthExtensionOptions {
  intervalS: number;
  storageLowPercent: number;
  storagePath: string;
  thermalZone: string;
  link: Pick<FleetLink, 'send' | 'summary'>;
  state: DeviceState;
  logger: Logger;
}

export class HealthExtension implements Extension {
  readonly name = 'health';
  readonly #options: HealthExtensionOptions;
  readonly #probe: HealthProbe;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;
  #storageLow = false;

  constructor(options: HealthExtensionOptions) {
    this.#options = options;
    this.#probe = new HealthProbe({ storagePath: options.storagePath, thermalZone: options.thermalZone });
    this.#logger = options.logger.child({ module: 'health' });
  }

  async start(): Promise<void> {
    await this.sampleNow();
    this.#timer = setInterval(() => void this.sampleNow(), this.#options.intervalS * 1000);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  async sampleNow(): Promise<void> {
    let health;
    try {
      health = await this.#probe.sample();
    } catch (err) {
      this.#logger.error({ err: errorMessage(err) }, 'health sampling failed');
      return;
    }
    const low = health.storage.freePercent < this.#options.storageLowPercent;
    if (low !== this.#storageLow) {
      this.#storageLow = low;
      const type = low ? 'storage.low' : 'storage.ok';
      this.#logger[low ? 'warn' : 'info']({ freePercent: health.storage.freePercent, threshold: this.#options.storageLowPercent }, type);
      this.#options.link.send('event', { type, time: new Date().toISOString(), freeBytes: health.storage.freeBytes, freePercent: health.storage.freePercent, thresholdPercent: this.#options.storageLowPercent });
    }
    this.#options.state.update({ health, link: this.#options.link.summary() });
  }
}
