// Moves outbox messages to the broker, in order, with a bounded window of unacknowledged
// publishes, and deletes each one once its PUBACK arrives.
//
// The outbox is the only store of unsent messages: mqtt.js is given a store that never replays
// (NonReplayingStore), and after every reconnect the drain starts again from the oldest
// unacknowledged row. Letting mqtt.js replay its own in-memory copy as well would duplicate and
// reorder messages, and its copy dies with the process anyway.
import { Store, type IStore, type Packet } from 'mqtt';
import type { Logger } from 'pino';
import type { Outbox, OutboxMessage } from './outbox.ts';
import type { MqttSession } from './mqtt-session.ts';

export class NonReplayingStore implements IStore {
  readonly #inflight = new Map<number, Packet>();

  put(packet: Packet, cb: () => void): IStore {
    if (packet.messageId !== undefined) this.#inflight.set(packet.messageId, packet);
    cb();
    return this;
  }

  createStream(): ReturnType<IStore['createStream']> {
    // Called by mqtt.js on (re)connect to replay what was in flight: replay nothing.
    this.#inflight.clear();
    return new Store().createStream();
  }

  del(packet: Pick<Packet, 'messageId'>, cb: (error?: Error, packet?: Packet) => void): IStore {
    const found = packet.messageId === undefined ? undefined : this.#inflight.get(packet.messageId);
    if (found && packet.messageId !== undefined) {
      this.#inflight.delete(packet.messageId);
      cb(undefined, found);
    } else cb(new Error('missing packet'));
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: (error?: Error, packet?: Packet) => void): IStore {
    const found = packet.messageId === undefined ? undefined : this.#inflight.get(packet.messageId);
    if (found) cb(undefined, found);
    else cb(new Error('missing packet'));
    return this;
  }

  close(cb: () => void): void {
    this.#inflight.clear();
    cb();
  }
}

export interface OutboxDrainOptions {
  outbox: Outbox;
  session: MqttSession;
  topicFor: (channel: string) => string;
  maxInflight: number;
  logger: Logger;
}

export class OutboxDrain {
  readonly #outbox: Outbox;
  readonly #session: MqttSession;
  readonly #topicFor: (channel: string) => string;
  readonly #maxInflight: number;
  readonly #logger: Logger;
  #window: number;
  #cursor = 0;
  #inflight = 0;
  /** Bumped on every (re)connect, so acks of an earlier connection do not move this one's window. */
  #generation = 0;
  #active = false;
  #pumpScheduled = false;
  #sent = 0;
  #refused = 0;
  readonly #onEnqueued = () => this.#schedulePump();

  constructor(options: OutboxDrainOptions) {
    this.#outbox = options.outbox;
    this.#session = options.session;
    this.#topicFor = options.topicFor;
    this.#maxInflight = options.maxInflight;
    this.#window = options.maxInflight;
    this.#logger = options.logger.child({ module: 'outbox-drain' });
  }

  /** Messages published and acknowledged since start. */
  get delivered(): number {
    return this.#sent;
  }

  /** Publishes the broker refused (they stay queued). */
  get refused(): number {
    return this.#refused;
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** Starts draining on the current connection (the caller calls this on every `connected`). */
  resume(receiveMaximum: number): void {
    this.#generation += 1;
    // Two of the broker's slots stay free for the retained state and command replies, which share
    // the connection: exceeding Receive Maximum is a protocol error that drops the connection.
    const brokerRoom = receiveMaximum > 4 ? receiveMaximum - 2 : receiveMaximum;
    this.#window = Math.max(1, Math.min(this.#maxInflight, brokerRoom));
    this.#outbox.flush();
    this.#cursor = 0;
    this.#inflight = 0;
    if (!this.#active) {
      this.#active = true;
      this.#outbox.on('enqueued', this.#onEnqueued);
    }
    const backlog = this.#outbox.size;
    if (backlog > 0) this.#logger.info({ backlog, window: this.#window }, 'draining the outbox');
    this.#pump();
  }

  /** The connection is gone: stop publishing until the next resume(). */
  pause(): void {
    this.#generation += 1;
    this.#inflight = 0;
  }

  stop(): void {
    this.pause();
    this.#active = false;
    this.#outbox.off('enqueued', this.#onEnqueued);
    this.#outbox.flush();
  }

  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    if (!this.#active || !this.#session.connected) return;
    const room = this.#window - this.#inflight;
    if (room <= 0) return;
    const batch = this.#outbox.next(this.#cursor, room);
    for (const message of batch) this.#publish(message);
  }

  #publish(message: OutboxMessage): void {
    const generation = this.#generation;
    this.#cursor = message.id;
    this.#inflight += 1;
    this.#session.publish(this.#topicFor(message.channel), message.payload, { qos: 1 }, (error) => {
      if (!error) {
        this.#outbox.acknowledge(message.id);
        this.#sent += 1;
      } else if (generation === this.#generation) {
        // Refused by the broker (a lost connection ends the generation first). The message stays
        // in the outbox and is offered again after the next reconnect: never dropped.
        this.#refused += 1;
        this.#logger.error({ channel: message.channel, seq: message.seq, err: error.message }, 'broker refused an outbox message; kept for retry');
      }
      if (generation !== this.#generation) return;
      this.#inflight -= 1;
      this.#schedulePump();
    });
  }
}
