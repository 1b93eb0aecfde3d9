// The controller: builds the long-lived parts (store, outbox, link, state), then starts the
// extensions in order and stops them in reverse. Each extension does one job and talks to the
// others only through the link, the device state and the calls it is given.
import path from 'node:path';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.ts';
import { ControlServer } from '../control/control-socket.ts';
import { FleetLink } from '../link/fleet-link.ts';
import { Outbox } from '../link/outbox.ts';
import { DeviceState } from '../state/device-state.ts';
import { openDatabase, type Db } from '../store/database.ts';
import { ServiceNotifier } from '../systemd/service-notifier.ts';
import { GpsExtension } from '../telemetry/gps-extension.ts';
import { HealthExtension } from '../telemetry/health-extension.ts';
import { agentVersion } from '../version.ts';

export interface Extension {
  readonly name: string;
  start(): void | Promise<void>;
  stop(): void | Promise<void>;
}

export interface AgentOptions {
  config: AgentConfig;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
}

/** Coalesces bursts of state changes into one retained publish. */
const statePublishDelayMs = 100;

export class Agent {
  readonly config: AgentConfig;
  readonly #logger: Logger;
  readonly #db: Db;
  readonly #outbox: Outbox;
  readonly #state: DeviceState;
  readonly #link: FleetLink;
  readonly #control: ControlServer;
  readonly #notifier: ServiceNotifier;
  readonly #extensions: Extension[];
  #started: Extension[] = [];
  #statePublishTimer: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: AgentOptions) {
    const { config, logger } = options;
    this.config = config;
    this.#logger = logger;
    this.#db = openDatabase({ stateDir: config.stateDir });
    this.#outbox = new Outbox({ db: this.#db, maxMessages: config.outbox.maxMessages, logger });
    this.#state = new DeviceState({ deviceId: config.deviceId, agentVersion });
    this.#link = new FleetLink({ config, outbox: this.#outbox, logger, offlineState: (reason) => this.#state.offline(reason) });
    this.#control = new ControlServer({ path: path.join(config.stateDir, 'control.sock'), logger });
    this.#notifier = new ServiceNotifier({ logger, isHealthy: () => this.#link.health(), env: options.env ?? process.env });

    const gps = new GpsExtension({
      gpsd: config.gps.gpsd,
      recordingIntervalS: config.gps.recordingInterval,
      idleIntervalS: config.gps.idleInterval,
      link: this.#link,
      state: this.#state,
      logger,
    });
    const health = new HealthExtension({
      intervalS: config.health.interval,
      storageLowPercent: config.health.storageLowPercent,
      storagePath: config.stateDir,
      thermalZone: config.health.thermalZone,
      link: this.#link,
      state: this.#state,
      logger,
    });
    this.#extensions = [health, gps];

    this.#outbox.on('thinned', (report) => this.#link.send('event', { type: 'outbox.thinned', time: new Date().toISOString(), ...report }));
    this.#state.on('changed', () => this.#scheduleStatePublish());
    this.#control.handle('status', () => this.status());
    const refreshLink = () => this.#state.update({ link: this.#link.summary() });
    this.#link.session.on('connected', refreshLink);
    this.#link.session.on('disconnected', refreshLink);
    this.#link.writer.on('failing', refreshLink);
    this.#link.writer.on('recovered', refreshLink);
  }

  status(): object {
    return { ...this.#state.snapshot(), link: this.#link.status(), stateDir: this.config.stateDir, extensions: this.#started.map((e) => e.name) };
  }

  async start(): Promise<void> {
    this.#logger.info({ version: agentVersion, stateDir: this.config.stateDir, broker: this.config.mqtt.url }, 'bwc-agent starting');
    await this.#control.start();
    this.#link.publishState(this.#state.snapshot());
    this.#link.start();
    for (const extension of this.#extensions) {
      await extension.start();
      this.#started.push(extension);
    }
    this.#link.send('event', { type: 'agent.started', time: new Date().toISOString(), version: agentVersion });
    this.#notifier.ready(`running; broker ${this.config.mqtt.url}`);
    this.#notifier.startWatchdog();
    this.#logger.info('bwc-agent running');
  }

  /** Idempotent: a second signal during shutdown waits for the first. */
  stop(reason: string): Promise<void> {
    this.#stopping ??= this.#stop(reason);
    return this.#stopping;
  }

  async #stop(reason: string): Promise<void> {
    this.#logger.info({ reason }, 'bwc-agent stopping');
    this.#notifier.stopping();
    this.#notifier.stopWatchdog();
    clearTimeout(this.#statePublishTimer);
    for (const extension of this.#started.reverse()) {
      try {
        await extension.stop();
      } catch (err) {
        this.#logger.error({ extension: extension.name, err: (err as Error).message }, 'extension failed to stop');
      }
    }
    this.#started = [];
    this.#link.send('event', { type: 'agent.stopping', time: new Date().toISOString(), reason });
    await this.#link.stop(reason);
    await this.#control.stop();
    this.#outbox.flush();
    this.#db.close();
    this.#logger.info('bwc-agent stopped');
  }

  #scheduleStatePublish(): void {
    if (this.#statePublishTimer) return;
    this.#statePublishTimer = setTimeout(() => {
      this.#statePublishTimer = undefined;
      this.#link.publishState(this.#state.snapshot());
    }, statePublishDelayMs);
  }
}
