// A fleet-side subscriber that records what the broker delivers. It uses a persistent session,
// so messages published while it is reconnecting (after a broker restart) are queued for it.
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export interface Received {
  topic: string;
  payload: string;
  retain: boolean;
  json: Record<string, unknown> | undefined;
}

export class MqttRecorder {
  readonly messages: Received[] = [];
  readonly #client: MqttClient;
  readonly #waiters = new Set<() => void>();

  private constructor(client: MqttClient) {
    this.#client = client;
    client.on('message', (topic, payload, packet) => {
      const text = payload.toString('utf8');
      let json: Record<string, unknown> | undefined;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        json = undefined;
      }
      this.messages.push({ topic, payload: text, retain: packet.retain, json });
      for (const w of this.#waiters) w();
    });
  }

  static async connect(
    url: string,
    topic: string,
    clientId = `recorder-${process.pid}-${Math.random().toString(16).slice(2)}`,
    extra: IClientOptions = {},
  ): Promise<MqttRecorder> {
    const client = mqtt.connect(url, {
      ...extra,
      protocolVersion: 5,
      clientId,
      clean: false,
      reconnectPeriod: 200,
      properties: { sessionExpiryInterval: 3600 },
    });
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
    });
    // Listen before subscribing: the retained messages can arrive in the same read as the SUBACK.
    const recorder = new MqttRecorder(client);
    await client.subscribeAsync(topic, { qos: 1 });
    return recorder;
  }

  on(topicSuffix: string): Received[] {
    return this.messages.filter((m) => m.topic.endsWith(`/${topicSuffix}`));
  }

  /** Resolves when `predicate` holds; rejects after `timeoutMs` (a hang guard, not a timing check). */
  async waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (predicate()) return;
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (predicate()) {
          clearTimeout(timer);
          this.#waiters.delete(check);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.#waiters.add(check);
    });
  }

  async close(): Promise<void> {
    await this.#client.endAsync(true);
  }
}
