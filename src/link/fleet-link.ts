// The device's side of the fleet contract over MQTT (docs/protocol.md): the topic tree under
// <topicRoot>/<deviceId>/, the retained `state` with its Last Will, and the outbox-backed
// `gps`, `event` and `audit` channels.
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.ts';
import type { DeviceStateDoc, LinkStatus } from '../state/device-state.ts';
import { errorMessage } from '../errors.ts';
import { IceTopics } from './ice-topics.ts';
import { MqttSession } from './mqtt-session.ts';
import { NonReplayingStore, OutboxDrain } from './outbox-drain.ts';
import type { MessageClass, Outbox } from './outbox.ts';
import { OutboxWriter, type OutboxWriterStatus } from './outbox-writer.ts';
import { RequestChannel, type RequestChannelOptions } from './request-channel.ts';

/** Channels that go through the outbox, and whether they may be thinned when it is full. */
export const outboxChannels = { gps: 'thinnable', event: 'durable', audit: 'durable' } as const satisfies Record<string, MessageClass>;
export type OutboxChannel = keyof typeof outboxChannels;

export interface FleetLinkOptions {
  config: AgentConfig;
  outbox: Outbox;
  logger: Logger;
  /** The offline document for the Last Will and a clean shutdown. */
  offlineState: (reason: string) => object;
  /**
   * Topics the fleet sends this device requests on (`cmd`, ICE answers), below the device's root.
   * On every connection they are subscribed, and the broker's SUBACK awaited, BEFORE the retained
   * state says online: a console that acts on "online" is then always heard. (Before, the
   * handlers subscribed after it, and a command sent right after the first "online" could reach
   * the broker ahead of the subscription and be lost; a loaded machine made that window wide.)
   */
  inboundTopics?: readonly string[];
}

export interface LinkStatusReport {
  connected: boolean;
  reconnects: number;
  lastError: string | undefined;
  outbox: { queued: number; inflight: number; delivered: number; refused: number; thinned: Record<string, number> } & OutboxWriterStatus;
}

export class FleetLink {
  readonly #session: MqttSession;
  readonly #drain: OutboxDrain;
  readonly #outbox: Outbox;
  readonly #writer: OutboxWriter;
  readonly #logger: Logger;
  readonly #root: string;
  readonly #offlineState: (reason: string) => object;
  #latestState: string | undefined;
  #disconnectedAt: number | undefined;
  /** Set when stop() begins: from then on the offline state is the last state this link sends. */
  #stopping = false;
  /** Counts connections, so a subscription that completes after its connection dropped does nothing. */
  #connections = 0;

  constructor(options: FleetLinkOptions) {
    const { config } = options;
    this.#outbox = options.outbox;
    this.#writer = new OutboxWriter({ outbox: options.outbox, logger: options.logger });
    this.#logger = options.logger.child({ module: 'link' });
    this.#root = `${config.mqtt.topicRoot}/${config.deviceId}`;
    this.#offlineState = options.offlineState;
    this.#session = new MqttSession({
      url: config.mqtt.url,
      clientId: config.mqtt.clientId ?? config.deviceId,
      keepaliveS: config.mqtt.keepalive,
      sessionExpiryS: config.mqtt.sessionExpiry,
      connectTimeoutMs: config.mqtt.connectTimeout,
      reconnectMinDelayMs: config.mqtt.reconnectMinDelay,
      reconnectMaxDelayMs: config.mqtt.reconnectMaxDelay,
      username: config.mqtt.username,
      passwordFile: config.mqtt.passwordFile,
      tls: config.mqtt.tls,
      will: { topic: this.topic('state'), payload: () => JSON.stringify(this.#offlineState('connection lost')) },
      maximumPacketSize: maximumInboundPacketBytes(config.commands.maxPayloadBytes),
      outgoingStore: new NonReplayingStore(),
      logger: options.logger,
    });
    this.#drain = new OutboxDrain({
      outbox: this.#outbox,
      session: this.#session,
      topicFor: (channel) => this.topic(channel),
      maxInflight: config.mqtt.maxInflight,
      logger: options.logger,
    });
    const inbound = (options.inboundTopics ?? []).map((t) => this.topic(t));
    this.#session.on('connected', (info) => {
      const connection = ++this.#connections;
      const subscribed = Promise.all(inbound.map((t) => this.#session.subscribe(t, 1))).catch((err: unknown) => {
        // The state still goes out (the map must see the camera); the handlers' topics are
        // subscribed again by mqtt.js's resubscribe on the next connection.
        this.#logger.error({ err: errorMessage(err), topics: inbound }, 'cannot subscribe to the request topics');
      });
      void subscribed.then(() => {
        if (connection !== this.#connections || !this.#session.connected) return; // dropped meanwhile: the next connection does this
        // State first: a map that sees the camera come back should not wait for the backlog.
        if (this.#latestState !== undefined && !this.#stopping) this.#publishRetained('state', this.#latestState);
        this.#drain.resume(info.receiveMaximum);
        if (this.#disconnectedAt !== undefined) {
          const outageS = Math.round((Date.now() - this.#disconnectedAt) / 100) / 10;
          this.#disconnectedAt = undefined;
          this.send('event', { type: 'link.restored', time: new Date().toISOString(), outageS, backlog: this.#outbox.size });
        }
      });
    });
    this.#session.on('disconnected', () => {
      this.#disconnectedAt = Date.now();
      this.#drain.pause();
    });
  }

  topic(channel: string): string {
    return `${this.#root}/${channel}`;
  }

  /**
   * The request/response channel on `channel` (one of inboundTopics, e.g. `cmd`): one request at a
   * time, bounded, replies on the checked Response Topic (src/link/request-channel.ts).
   */
  requestChannel(channel: string, options: Omit<RequestChannelOptions, 'bus' | 'topic'>): RequestChannel {
    return new RequestChannel({ ...options, bus: this.#session, topic: this.topic(channel) });
  }

  /** The ICE-restart offer and answer topics (src/link/ice-topics.ts). */
  iceTopics(): IceTopics {
    return new IceTopics({ bus: this.#session, topic: (suffix) => this.topic(suffix) });
  }

  /** Drops the broker connection and connects again at once (the network under it changed). */
  reconnectNow(reason: string): void {
    this.#session.reconnectNow(reason);
  }

  /** Calls `listener` whenever the broker connection comes up or goes down. */
  onConnectionChange(listener: () => void): void {
    this.#session.on('connected', listener);
    this.#session.on('disconnected', listener);
  }

  start(): void {
    this.#session.start();
  }

  /** The retained state: sent now when connected, and again on every reconnect. */
  publishState(doc: DeviceStateDoc): void {
    // Refused once stopping: a state sent after the offline one would leave the camera "online" on
    // the map after it exited (the agent's coalesced state timer, armed again by an extension that
    // changed the state while it stopped, did this; test/fleet-link-stop.test.ts).
    if (this.#stopping) return;
    this.#latestState = JSON.stringify(doc);
    if (this.#session.connected) this.#publishRetained('state', this.#latestState);
  }

  /** Queues a message durably on an outbox channel (in memory while the outbox cannot be written). */
  send(channel: OutboxChannel, body: object): void {
    this.#writer.write(channel, body, outboxChannels[channel]);
  }

  get writer(): OutboxWriter {
    return this.#writer;
  }

  status(): LinkStatusReport {
    return {
      connected: this.#session.connected,
      reconnects: this.#session.reconnects,
      lastError: this.#session.lastError,
      outbox: {
        queued: this.#outbox.size,
        inflight: this.#drain.inflight,
        delivered: this.#drain.delivered,
        refused: this.#drain.refused,
        thinned: this.#outbox.thinnedCounts(),
        ...this.#writer.status(),
      },
    };
  }

  /** The part of the retained state that describes the link. */
  summary(): LinkStatus {
    const s = this.status();
    return {
      connected: s.connected,
      reconnects: s.reconnects,
      outboxQueued: s.outbox.queued,
      outboxThinned: s.outbox.thinned,
      outboxHeldInMemory: s.outbox.held,
      outboxWriteError: s.outbox.writeError ?? null,
    };
  }

  health(): { healthy: boolean; reason?: string } {
    return this.#session.health();
  }

  /** Publishes the retained offline state, then disconnects cleanly (no Last Will). */
  async stop(reason: string, drainTimeoutMs = 5000): Promise<void> {
    this.#stopping = true;
    // Give queued messages (the shutdown event among them) a moment to leave; what does not
    // stays in the outbox for the next start. 5 s: 2 s proved too short on a loaded 2-core board
    // (a full test run), and systemd allows 45 s (TimeoutStopSec).
    const deadline = Date.now() + drainTimeoutMs;
    while (this.#session.connected && this.#outbox.size > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    this.#drain.stop();
    this.#writer.stop();
    await this.#session.stop([{ topic: this.topic('state'), payload: JSON.stringify(this.#offlineState(reason)) }]);
    this.#logger.info({ reason }, 'link stopped');
  }

  #publishRetained(channel: string, payload: string): void {
    this.#session.publish(this.topic(channel), payload, { qos: 1, retain: true }, (err) => {
      if (err) this.#logger.warn({ channel, err: err.message }, 'retained publish not acknowledged');
    });
  }
}

/**
 * Room in an inbound packet besides the payload: the fixed header, the topic (`<root>/<deviceId>/cmd`
 * or `.../stream/<sid>/ice-answer`, ~150 bytes) and the properties (a Response Topic, Correlation
 * Data). A request whose topic and properties need more than this is not one the fleet sends.
 */
export const inboundPacketHeadroomBytes = 8192;

/**
 * The MQTT 5 Maximum Packet Size the agent announces. Everything it subscribes to (`cmd`, a
 * stream.start with its SDP offer included; `stream/+/ice-answer`) is refused above
 * commands.maxPayloadBytes anyway, so a larger packet is never legitimate.
 */
export function maximumInboundPacketBytes(maxPayloadBytes: number): number {
  return maxPayloadBytes + inboundPacketHeadroomBytes;
}
