// The link's topics for ICE-restart signalling (docs/protocol.md): an offer goes out on
// `<root>/<deviceId>/stream/<sid>/ice-offer`, answers come in on `.../stream/+/ice-answer` (the
// link subscribes it on every connection, FleetLink's inboundTopics) with the sid parsed from the
// topic. What an offer or an answer means is src/stream/ice-signalling.ts's; here only topics.
import type { IPublishPacket } from 'mqtt';
import type { MessageBus } from './message-bus.ts';

export interface IceTopicListener {
  /** An answer published on `stream/<sid>/ice-answer`: `sid` as the topic has it (not yet checked). */
  answer(sid: string, payload: Buffer): void;
  /** The broker connection is (re)established: offers that may have been lost can go again. */
  connected(): void;
}

export interface IceTopicsOptions {
  bus: MessageBus;
  /** `<root>/<deviceId>/` + suffix. */
  topic: (suffix: string) => string;
}

export class IceTopics {
  readonly #o: IceTopicsOptions;
  readonly #answerPrefix: string;
  #listener: IceTopicListener | undefined;
  readonly #onMessage = (topic: string, payload: Buffer, _packet: IPublishPacket) => {
    if (!this.#listener || !topic.startsWith(this.#answerPrefix) || !topic.endsWith('/ice-answer')) return;
    const sid = topic.slice(this.#answerPrefix.length, -'/ice-answer'.length);
    if (sid.includes('/')) return;
    this.#listener.answer(sid, payload);
  };
  readonly #onConnected = () => this.#listener?.connected();

  constructor(options: IceTopicsOptions) {
    this.#o = options;
    this.#answerPrefix = options.topic('stream/');
  }

  listen(listener: IceTopicListener): void {
    this.#listener = listener;
    this.#o.bus.on('message', this.#onMessage);
    this.#o.bus.on('connected', this.#onConnected);
  }

  close(): void {
    this.#o.bus.off('message', this.#onMessage);
    this.#o.bus.off('connected', this.#onConnected);
  }

  /** Publishes an offer, QoS 1; `done` hears whether the broker acknowledged it. */
  publishOffer(sid: string, payload: string, done: (err?: Error) => void): void {
    this.#o.bus.publish(this.#o.topic(`stream/${sid}/ice-offer`), payload, { qos: 1 }, done);
  }
}
