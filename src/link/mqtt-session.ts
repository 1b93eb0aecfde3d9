// The MQTT 5 connection to fleet operations: a persistent session (fixed client id, session
// expiry > 0), a retained Last Will that marks the device offline, TLS with client certificates,
// and reconnection with capped exponential back-off and jitter.
//
// mqtt.js only offers a fixed reconnect period, so automatic reconnection is off and this class
// schedules `reconnect()` itself.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IClientPublishOptions, type IStore, type MqttClient } from 'mqtt';
import type { Logger } from 'pino';

export interface MqttSessionOptions {
  url: string;
  clientId: string;
  keepaliveS: number;
  sessionExpiryS: number;
  connectTimeoutMs: number;
  reconnectMinDelayMs: number;
  reconnectMaxDelayMs: number;
  username?: string | undefined;
  passwordFile?: string | undefined;
  tls?: { caFile?: string | undefined; certFile?: string | undefined; keyFile?: string | undefined; rejectUnauthorized: boolean };
  will: { topic: string; payload: () => string };
  /**
   * MQTT 5 Maximum Packet Size sent in CONNECT: the broker must not send this client a larger
   * packet (it drops the message for this client instead), so a hostile publisher cannot make
   * the agent read hundreds of MiB into memory. Unset: no limit announced.
   */
  maximumPacketSize?: number;
  /** Where mqtt.js keeps unacknowledged QoS 1 publishes (see NonReplayingStore). */
  outgoingStore?: IStore;
  logger: Logger;
}

export interface ConnectedInfo {
  sessionPresent: boolean;
  /** The broker's Receive Maximum: how many QoS 1 messages it takes in flight at once. */
  receiveMaximum: number;
}

interface MqttSessionEvents {
  connected: [ConnectedInfo];
  disconnected: [reason: string];
  message: [topic: string, payload: Buffer, packet: mqtt.IPublishPacket];
}

export type PublishCallback = (error?: Error) => void;

export class MqttSession extends EventEmitter<MqttSessionEvents> {
  readonly #options: MqttSessionOptions;
  readonly #logger: Logger;
  #client: MqttClient | undefined;
  #connected = false;
  #stopping = false;
  #attempt = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #reconnects = 0;
  #lastError: string | undefined;
  #lastActivity = Date.now();
  #everConnected = false;

  constructor(options: MqttSessionOptions) {
    super();
    this.#options = options;
    this.#logger = options.logger.child({ module: 'mqtt' });
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Successful connections after the first one. */
  get reconnects(): number {
    return this.#reconnects;
  }

  get lastError(): string | undefined {
    return this.#lastError;
  }

  /**
   * Healthy while connected, or while reconnect attempts keep happening on schedule. A connection
   * whose retry loop has stalled is not healthy, and the systemd watchdog then restarts the agent.
   */
  health(now = Date.now()): { healthy: boolean; reason?: string } {
    if (this.#connected || this.#stopping) return { healthy: true };
    const allowance = this.#options.reconnectMaxDelayMs + this.#options.connectTimeoutMs * 2 + 5000;
    if (now - this.#lastActivity <= allowance) return { healthy: true };
    return { healthy: false, reason: `MQTT link stalled: no connection attempt for ${Math.round((now - this.#lastActivity) / 1000)} s` };
  }

  start(): void {
    const o = this.#options;
    const clientOptions: IClientOptions = {
      protocolVersion: 5,
      clientId: o.clientId,
      clean: false,
      keepalive: o.keepaliveS,
      connectTimeout: o.connectTimeoutMs,
      reconnectPeriod: 0,
      resubscribe: true,
      queueQoSZero: false,
      // mqtt-packet otherwise builds a Buffer for each of the 65,536 two-byte numbers on the first
      // write (6.7 MB of V8 heap, 65k objects, in a heap snapshot of the agent; issue 18): the
      // agent writes a few packets a second, so making the two bytes when needed costs nothing.
      writeCache: false,
      properties: { sessionExpiryInterval: o.sessionExpiryS, ...(o.maximumPacketSize === undefined ? {} : { maximumPacketSize: o.maximumPacketSize }) },
      will: { topic: o.will.topic, payload: Buffer.from(o.will.payload()), qos: 1, retain: true },
    };
    if (o.outgoingStore) clientOptions.outgoingStore = o.outgoingStore;
    if (o.username !== undefined) clientOptions.username = o.username;
    if (o.passwordFile !== undefined) clientOptions.password = readFileSync(o.passwordFile, 'utf8').trimEnd();
    if (o.tls) {
      if (o.tls.caFile) clientOptions.ca = readFileSync(o.tls.caFile);
      if (o.tls.certFile) clientOptions.cert = readFileSync(o.tls.certFile);
      if (o.tls.keyFile) clientOptions.key = readFileSync(o.tls.keyFile);
      clientOptions.rejectUnauthorized = o.tls.rejectUnauthorized;
    }
    this.#logger.info({ url: o.url, clientId: o.clientId }, 'connecting to the broker');
    const client = mqtt.connect(o.url, clientOptions);
    this.#client = client;
    this.#lastActivity = Date.now();
    client.on('connect', (connack) => {
      // Small packets (a PUBACK, then a command reply) written back to back would otherwise wait
      // for the broker's delayed ACK under Nagle's algorithm: ~40 ms each on Linux.
      (client.stream as { setNoDelay?: (noDelay: boolean) => void }).setNoDelay?.(true);
      if (this.#everConnected) this.#reconnects += 1;
      this.#everConnected = true;
      this.#attempt = 0;
      this.#connected = true;
      this.#lastError = undefined;
      this.#lastActivity = Date.now();
      const info: ConnectedInfo = {
        sessionPresent: connack.sessionPresent,
        receiveMaximum: connack.properties?.receiveMaximum ?? 65_535,
      };
      this.#logger.info(info, 'connected to the broker');
      this.emit('connected', info);
    });
    client.on('message', (topic, payload, packet) => this.emit('message', topic, payload, packet));
    client.on('error', (err) => {
      this.#lastError = err.message;
      this.#logger.warn({ err: err.message }, 'MQTT error');
    });
    client.on('close', () => this.#onClose());
  }

  #onClose(): void {
    const wasConnected = this.#connected;
    this.#connected = false;
    this.#lastActivity = Date.now();
    if (wasConnected) {
      const reason = this.#stopping ? 'agent stopping' : (this.#lastError ?? 'connection closed');
      this.#logger[this.#stopping ? 'info' : 'warn']({ reason }, 'disconnected from the broker');
      this.emit('disconnected', reason);
    }
    if (this.#stopping || this.#reconnectTimer) return;
    const base = Math.min(this.#options.reconnectMaxDelayMs, this.#options.reconnectMinDelayMs * 2 ** this.#attempt);
    // "Equal jitter": half fixed, half random, so a fleet that lost one broker does not
    // come back in lock-step.
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#logger.info({ delayMs: delay, attempt: this.#attempt, lastError: this.#lastError }, 'reconnecting after back-off');
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#lastActivity = Date.now();
      if (!this.#stopping) this.#client?.reconnect();
    }, delay);
  }

  /**
   * Drops the connection and reconnects at once: after the device's address changed its TCP
   * connection is dead, but would look alive until keep-alive ran out (1.5 x keepalive).
   */
  reconnectNow(reason: string): void {
    if (this.#stopping || !this.#client || !this.#connected) return;
    this.#logger.info({ reason }, 'reconnecting to the broker now');
    this.#lastError = reason;
    this.#attempt = 0;
    (this.#client.stream as { destroy?: () => void }).destroy?.();
  }

  publish(topic: string, payload: string | Buffer, options: IClientPublishOptions, callback?: PublishCallback): void {
    const client = this.#client;
    if (!client) throw new Error('MQTT session not started');
    client.publish(topic, payload, options, callback);
  }

  async subscribe(topic: string, qos: 0 | 1 = 1): Promise<void> {
    const client = this.#client;
    if (!client) throw new Error('MQTT session not started');
    await client.subscribeAsync(topic, { qos });
  }

  /**
   * Publishes the final messages (the offline state) while still connected, then disconnects
   * cleanly; a clean MQTT 5 disconnect (reason 0) does not fire the Last Will, so `finals`
   * is what tells the fleet the device went away on purpose.
   */
  async stop(finals: { topic: string; payload: string }[] = [], timeoutMs = 3000): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const client = this.#client;
    if (!client) return;
    if (this.#connected) {
      const sends = finals.map((f) => client.publishAsync(f.topic, f.payload, { qos: 1, retain: true }));
      await withTimeout(Promise.allSettled(sends), timeoutMs);
      await withTimeout(client.endAsync(false), timeoutMs);
    } else {
      await withTimeout(client.endAsync(true), timeoutMs);
    }
    this.#connected = false;
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
