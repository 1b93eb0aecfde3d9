// Wires the gpsd client and the reporter to the outbox's `gps` channel and the device state.
import type { Logger } from 'pino';
import type { FleetLink } from '../link/fleet-link.ts';
import type { DeviceState, GpsState } from '../state/device-state.ts';
import { GpsdClient } from './gpsd-client.ts';
import { GpsReporter, type GpsReport } from './gps-reporter.ts';
import type { Extension } from '../agent/extension.ts';

export interface GpsExtensionOptions {
  gpsd: string;
  recordingIntervalS: number;
  idleIntervalS: number;
  link: Pick<FleetLink, 'send'>;
  state: DeviceState;
  logger: Logger;
}

export class GpsExtension implements Extension {
  readonly name = 'gps';
  readonly #client: GpsdClient;
  readonly #reporter: GpsReporter;

  constructor(options: GpsExtensionOptions) {
    const separator = options.gpsd.lastIndexOf(':');
    this.#client = new GpsdClient({
      host: options.gpsd.slice(0, separator),
      port: Number(options.gpsd.slice(separator + 1)),
      logger: options.logger,
    });
    this.#reporter = new GpsReporter({
      source: this.#client,
      recordingIntervalS: options.recordingIntervalS,
      idleIntervalS: options.idleIntervalS,
      logger: options.logger,
      publish: (report: GpsReport) => {
        options.link.send('gps', { time: new Date().toISOString(), ...report });
        const { gpsd, fix, lat, lon, accuracyM, gpsTime } = report;
        const gps: GpsState = { gpsd, fix, lat, lon, accuracyM, gpsTime };
        options.state.update({ gps });
      },
    });
  }

  /** The recording state machine calls this: positions are published more often while recording. */
  setRecording(recording: boolean): void {
    this.#reporter.setRecording(recording);
  }

  /** A live config.apply of gps.recordingInterval / gps.idleInterval. */
  setIntervals(recordingIntervalS: number, idleIntervalS: number): void {
    this.#reporter.setIntervals(recordingIntervalS, idleIntervalS);
  }

  /** The officer extension: positions every `seconds` while an emergency is raised; null when cleared. */
  setEmergencyInterval(seconds: number | null): void {
    this.#reporter.setEmergencyInterval(seconds);
  }

  start(): void {
    this.#client.start();
    this.#reporter.start();
  }

  async stop(): Promise<void> {
    this.#reporter.stop();
    await this.#client.stop();
  }
}
