// The fleet side of MQTT 5 request/response, as a backend would do it: one client, commands
// published to a device's `cmd` topic with a Response Topic and fresh Correlation Data, each reply
// matched back to its request.
import { randomBytes } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';

export type Reply = Record<string, unknown> & { ok: boolean; code?: string; message?: string; sid?: string; answer?: string };

export class FleetClient {
  readonly #client: MqttClient;
  readonly #responseTopic: string;
  readonly #waiting = new Map<string, (r: Reply) => void>();

  private constructor(client: MqttClient, responseTopic: string) {
    this.#client = client;
    this.#responseTopic = responseTopic;
    client.on('message', (_topic, payload, packet) => {
      const id = packet.properties?.correlationData?.toString('hex');
      if (id) this.#waiting.get(id)?.(JSON.parse(payload.toString()) as Reply);
    });
  }

  static async connect(url: string, responseTopic = `fleet/replies/${randomBytes(4).toString('hex')}`): Promise<FleetClient> {
    const client = await mqtt.connectAsync(url, { protocolVersion: 5, clean: true });
    // As the agent does (src/link/mqtt-session.ts): without it, this client's PUBACK for one reply
    // and its next PUBLISH meet Nagle's algorithm and the broker's delayed ACK (~40 ms).
    (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    await client.subscribeAsync(responseTopic, { qos: 1 });
    return new FleetClient(client, responseTopic);
  }

  /** Publishes to bwc/v1/<deviceId>/cmd; rejects if no reply comes within timeoutMs (a hang guard). */
  request(deviceId: string, payload: Buffer | string, timeoutMs = 20_000): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const correlationData = randomBytes(8);
      const id = correlationData.toString('hex');
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, (r) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        resolve(r);
      });
      this.#client.publish(`bwc/v1/${deviceId}/cmd`, payload, { qos: 1, properties: { responseTopic: this.#responseTopic, correlationData } });
    });
  }

  async close(): Promise<void> {
    await this.#client.endAsync(true);
  }
}
