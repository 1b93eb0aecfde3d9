// A lean fleet-side subscriber for the drain benchmark: persistent session, QoS 1, and per
// (channel, seq) receive counts read straight from the `{"seq":N,` prefix the outbox writes,
// without JSON-parsing 100,000 payloads (test/helpers/mqtt-recorder.ts keeps and parses every
// message, which would make the subscriber, not the agent, the thing being measured).
import mqtt, { type MqttClient } from 'mqtt';

export interface SeqReport {
  expected: number;
  received: number;
  /** Messages received more than once (each extra copy counted). */
  duplicates: number;
  /** Expected (channel, seq) never received. */
  missing: number;
  missingSample: string[];
  /** Messages on the channels with a seq beyond the backlog (the agent's own, e.g. agent.started). */
  extra: number;
  /** Messages whose payload had no leading seq. */
  unparsed: number;
  /** performance.now() of the first and of the last backlog message received. */
  firstAt: number | undefined;
  lastAt: number | undefined;
  /** performance.now() when every expected message had arrived at least once. */
  completeAt: number | undefined;
}

const prefix = Buffer.from('{"seq":');

export class SeqSubscriber {
  readonly #client: MqttClient;
  readonly #counts = new Map<string, Uint16Array>();
  readonly #expected: Record<string, number>;
  readonly #total: number;
  #distinct = 0;
  #received = 0;
  #duplicates = 0;
  #extra = 0;
  #unparsed = 0;
  #firstAt: number | undefined;
  #lastAt: number | undefined;
  #completeAt: number | undefined;
  #onComplete: (() => void) | undefined;

  private constructor(client: MqttClient, expected: Record<string, number>) {
    this.#client = client;
    this.#expected = expected;
    this.#total = Object.values(expected).reduce((s, n) => s + n, 0);
    for (const [channel, n] of Object.entries(expected)) this.#counts.set(channel, new Uint16Array(n + 1));
    client.on('message', (topic, payload) => this.#onMessage(topic, payload));
    // Connection refused while the broker is down is expected; keep the process alive.
    client.on('error', () => undefined);
  }

  /** `expected`: channel -> highest seq of the backlog (seqs 1..n must each arrive once). */
  static async connect(url: string, topicFilter: string, clientId: string, expected: Record<string, number>): Promise<SeqSubscriber> {
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      clientId,
      clean: false,
      reconnectPeriod: 100,
      properties: { sessionExpiryInterval: 3600 },
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    await client.subscribeAsync(topicFilter, { qos: 1 });
    return new SeqSubscriber(client, expected);
  }

  #onMessage(topic: string, payload: Buffer): void {
    const channel = topic.slice(topic.lastIndexOf('/') + 1);
    const counts = this.#counts.get(channel);
    if (!counts) return; // state and other topics
    const seq = parseSeq(payload);
    if (seq === undefined) {
      this.#unparsed += 1;
      return;
    }
    if (seq >= counts.length || seq < 1) {
      this.#extra += 1;
      return;
    }
    const now = performance.now();
    this.#firstAt ??= now;
    this.#lastAt = now;
    this.#received += 1;
    const c = counts[seq]!;
    if (c === 0) {
      this.#distinct += 1;
      if (this.#distinct === this.#total) {
        this.#completeAt = now;
        this.#onComplete?.();
      }
    } else this.#duplicates += 1;
    counts[seq] = Math.min(c + 1, 0xffff);
  }

  get distinct(): number {
    return this.#distinct;
  }

  /** Resolves true once every expected message arrived, false after timeoutMs (a hang guard). */
  waitComplete(timeoutMs: number): Promise<boolean> {
    if (this.#completeAt !== undefined) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#onComplete = undefined;
        resolve(false);
      }, timeoutMs);
      this.#onComplete = () => {
        clearTimeout(timer);
        this.#onComplete = undefined;
        resolve(true);
      };
    });
  }

  report(): SeqReport {
    let missing = 0;
    const missingSample: string[] = [];
    for (const [channel, counts] of this.#counts) {
      for (let seq = 1; seq < counts.length; seq++) {
        if (counts[seq] !== 0) continue;
        missing += 1;
        if (missingSample.length < 10) missingSample.push(`${channel}#${seq}`);
      }
    }
    return {
      expected: this.#total,
      received: this.#received,
      duplicates: this.#duplicates,
      missing,
      missingSample,
      extra: this.#extra,
      unparsed: this.#unparsed,
      firstAt: this.#firstAt,
      lastAt: this.#lastAt,
      completeAt: this.#completeAt,
    };
  }

  /** Ends the session for good (session expiry 0), so the broker stops queueing for it. */
  async close(): Promise<void> {
    if (this.#client.connected) {
      await this.#client.endAsync(false, { properties: { sessionExpiryInterval: 0 } }).catch(() => undefined);
    } else await this.#client.endAsync(true).catch(() => undefined);
  }
}

function parseSeq(payload: Buffer): number | undefined {
  if (payload.length <= prefix.length || payload.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0) return undefined;
  let n = 0;
  let i = prefix.length;
  for (; i < payload.length; i++) {
    const d = payload[i]! - 48;
    if (d < 0 || d > 9) break;
    n = n * 10 + d;
  }
  return i === prefix.length ? undefined : n;
}
