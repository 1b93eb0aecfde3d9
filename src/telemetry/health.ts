// Samples the board's health: storage, CPU temperature, load, memory, uptime.
// Everything is read from the kernel (statfs, /proc via node:os, sysfs), nothing is spawned.
import { readFile, statfs } from 'node:fs/promises';
import os from 'node:os';
import type { HealthState } from '../state/device-state.ts';

/** A sample is the state document's health part: the state module owns that shape. */
export type HealthSample = HealthState;

export interface HealthProbeOptions {
  storagePath: string;
  thermalZone: string;
}

export class HealthProbe {
  readonly #options: HealthProbeOptions;

  constructor(options: HealthProbeOptions) {
    this.#options = options;
  }

  async sample(): Promise<HealthSample> {
    const fs = await statfs(this.#options.storagePath);
    const totalBytes = fs.blocks * fs.bsize;
    // bavail, not bfree: blocks reserved for root are not the agent's to use.
    const freeBytes = fs.bavail * fs.bsize;
    return {
      storage: {
        path: this.#options.storagePath,
        freeBytes,
        totalBytes,
        freePercent: totalBytes > 0 ? Math.round((freeBytes / totalBytes) * 1000) / 10 : 0,
      },
      cpuTemperatureC: await this.#temperature(),
      load: os.loadavg().map((l) => Math.round(l * 100) / 100) as [number, number, number],
      memory: { totalBytes: os.totalmem(), availableBytes: os.freemem(), agentRssBytes: process.memoryUsage.rss() },
      systemUptimeS: Math.round(os.uptime()),
      agentUptimeS: Math.round(process.uptime()),
    };
  }

  async #temperature(): Promise<number | null> {
    try {
      const milli = Number((await readFile(this.#options.thermalZone, 'utf8')).trim());
      return Number.isFinite(milli) ? Math.round(milli / 100) / 10 : null;
    } catch {
      return null; // no thermal zone on this board (or in this VM): report none rather than guess
    }
  }
}
