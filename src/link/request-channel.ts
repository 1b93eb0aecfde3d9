// Requests the fleet sends on one topic (`<root>/<deviceId>/cmd`), taken one at a time, and the
// MQTT 5 request/response around them: the Response Topic is checked against the hardening policy
// (responseTopicProblem) before anything is read, and a reply goes to it with the requester's
// Correlation Data. What a request means (verify, audit, execute) is the handler's
// (src/command/command-handler.ts); the link subscribes the topic on every connection, before the
// state says online (FleetLink's inboundTopics), so this only listens.
//
// Hostile input from anyone who may publish on the topic is bounded: at most `maxPending` requests
// and `maxPendingBytes` bytes wait; one more is handed to the handler's `overloaded` at once (and
// answered only where the Response Topic is allowed). The queue is a promise chain: without a
// bound a flood would hold every payload in memory.
import type { IPublishPacket } from 'mqtt';
import type { Logger } from 'pino';
import type { MessageBus } from './message-bus.ts';

/** One request as the handler sees it. */
export interface InboundRequest {
  readonly payload: Buffer;
  /** The Response Topic as sent (for the audit), or undefined when the request named none. */
  readonly responseTopic: string | undefined;
  /** Publishes the reply on the Response Topic with the Correlation Data; without a Response Topic, logs that none is sent. */
  reply(body: object): void;
}

/** The bound a request was refused `overloaded` against. */
export interface QueueLimits {
  maxPending: number | undefined;
  maxPendingBytes: number | undefined;
  pending: number;
}

export interface RequestHandler {
  /** A request, one at a time: the next is taken when the returned promise settles. */
  handle(request: InboundRequest): Promise<void>;
  /** The request's Response Topic is refused (`problem` says why): not handled, and `reply` sends nothing. */
  responseTopicRefused(request: InboundRequest, problem: string): void;
  /** Too many requests wait: refused at once; `reply` is undefined where the Response Topic is refused. */
  overloaded(request: Omit<InboundRequest, 'reply'> & { reply: ((body: object) => void) | undefined }, limits: QueueLimits): void;
}

export interface RequestChannelOptions {
  bus: MessageBus;
  /** The full topic requests arrive on. */
  topic: string;
  /** Most requests waiting to be handled; one more is refused `overloaded`. Default: no bound. */
  maxPending?: number | undefined;
  /** Most bytes of requests waiting (payload + pendingOverheadBytes each); one more is refused `overloaded`. Default: no bound. */
  maxPendingBytes?: number | undefined;
  /** Why a Response Topic is refused (see responseTopicProblem), or undefined if it may be used. */
  responseTopicProblem?: ((topic: string) => string | undefined) | undefined;
  logger: Logger;
  /** The log's module name (default `commands`). */
  name?: string;
}

/** What one waiting request costs besides its payload (topic, properties, the queue's closure), for maxPendingBytes. */
export const pendingOverheadBytes = 512;

/**
 * A Response Topic the camera must not publish to: anything under `<topicRoot>/` (its own
 * `audit`, `state`... or another device's) unless under one of `allowedPrefixes`, and anything
 * that is not a plain topic name ($-topics, wildcards, empty levels are not replies).
 */
export function responseTopicProblem(topic: string, topicRoot: string, allowedPrefixes: readonly string[]): string | undefined {
  if (topic.startsWith('$') || /[#+\u0000]/.test(topic)) return 'a Response Topic may not start with "$" or hold wildcards';
  if (allowedPrefixes.some((p) => topic.startsWith(p))) return undefined;
  if (topic === topicRoot || topic.startsWith(`${topicRoot}/`)) {
    return `Response Topic is under the topic root "${topicRoot}/" and not under commands.replyTopicPrefixes`;
  }
  return undefined;
}

export class RequestChannel {
  readonly #o: RequestChannelOptions;
  readonly #logger: Logger;
  #handler: RequestHandler | undefined;
  #queue: Promise<void> = Promise.resolve();
  #received = 0;
  #pending = 0;
  #pendingBytes = 0;
  readonly #onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
    if (topic !== this.#o.topic || !this.#handler) return;
    const handler = this.#handler;
    // Bounded in count and in bytes: small junk (refused in microseconds) may queue by the
    // thousand, so a valid request behind a burst is still reached; large payloads fill the byte
    // budget quickly.
    const bytes = payload.length + pendingOverheadBytes;
    if (this.#pending >= (this.#o.maxPending ?? Infinity) || this.#pendingBytes + bytes > (this.#o.maxPendingBytes ?? Infinity)) {
      this.#overloaded(handler, payload, packet);
      return;
    }
    this.#pending += 1;
    this.#pendingBytes += bytes;
    this.#queue = this.#queue
      .then(() => this.#handle(handler, payload, packet))
      .catch((err: unknown) => {
        this.#logger.error({ err }, 'command handling failed');
      })
      .finally(() => {
        this.#pending -= 1;
        this.#pendingBytes -= bytes;
      });
  };

  constructor(options: RequestChannelOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ module: options.name ?? 'commands' });
  }

  /** Requests received, the overloaded ones included. */
  get received(): number {
    return this.#received;
  }

  /** Starts handing requests to `handler`. */
  listen(handler: RequestHandler): void {
    this.#handler = handler;
    this.#o.bus.on('message', this.#onMessage);
  }

  /** Stops listening, and waits for the requests already queued. */
  async close(): Promise<void> {
    this.#o.bus.off('message', this.#onMessage);
    await this.#queue;
  }

  async #handle(handler: RequestHandler, payload: Buffer, packet: Pick<IPublishPacket, 'properties'>): Promise<void> {
    this.#received += 1;
    const responseTopic = packet.properties?.responseTopic;
    const correlationData = packet.properties?.correlationData;
    const problem = responseTopic === undefined ? undefined : this.#o.responseTopicProblem?.(responseTopic);
    if (problem !== undefined) {
      // Not handled, not answered: a reply there would be the camera writing on its own audit
      // or state topic (or another device's) in its own name.
      handler.responseTopicRefused({ payload, responseTopic, reply: () => undefined }, problem);
      return;
    }
    await handler.handle({ payload, responseTopic, reply: (body) => this.#reply(responseTopic, correlationData, body) });
  }

  #overloaded(handler: RequestHandler, payload: Buffer, packet: Pick<IPublishPacket, 'properties'>): void {
    this.#received += 1;
    const responseTopic = packet.properties?.responseTopic;
    const allowed = responseTopic !== undefined && this.#o.responseTopicProblem?.(responseTopic) === undefined;
    const correlationData = packet.properties?.correlationData;
    const reply = allowed ? (body: object) => this.#reply(responseTopic, correlationData, body) : undefined;
    handler.overloaded({ payload, responseTopic, reply }, { maxPending: this.#o.maxPending, maxPendingBytes: this.#o.maxPendingBytes, pending: this.#pending });
  }

  #reply(topic: string | undefined, correlationData: Buffer | undefined, body: object): void {
    if (!topic) {
      this.#logger.warn('command without a Response Topic: decision audited, no reply sent');
      return;
    }
    const properties = correlationData ? { correlationData } : {};
    this.#o.bus.publish(topic, JSON.stringify(body), { qos: 1, properties }, (err) => {
      if (err) this.#logger.warn({ err: err.message, topic }, 'command reply not delivered');
    });
  }
}
