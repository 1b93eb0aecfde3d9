// The console's side of the broker: the last retained `state` of every camera under the topic
// root, every `audit` message each camera published (kept in memory, in arrival order, for the
// audit view and its chain check), MQTT 5 request/response for the commands it signs, and the
// cameras' ICE restart offers (`stream/<sid>/ice-offer`, unverified here: the server checks them).
import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import type { AuditMessage } from '../src/audit/audit-log.ts';

export interface CameraRecord {
  deviceId: string;
  state: Record<string, unknown>;
  receivedAt: string;
}

export interface FleetEvents {
  camera: [CameraRecord];
  /** message: the payload as received (unchecked: the chain verifier checks it). */
  audit: [{ deviceId: string; message: Record<string, unknown> }];
  /** A camera's ICE restart offer message as received, not yet verified. */
  'ice-offer': [{ deviceId: string; sid: string; message: Record<string, unknown> }];
}

export class Fleet extends EventEmitter<FleetEvents> {
  readonly cameras = new Map<string, CameraRecord>();
  /** False once the archive keeps the audit (ops-console/archive-link.ts): no unbounded copy in memory. */
  keepAuditInMemory = true;
  readonly #audit = new Map<string, AuditMessage[]>();
  readonly #pendingAudit: { deviceId: string; message: Record<string, unknown> }[] = [];
  readonly #client: MqttClient;
  readonly #root: string;
  readonly #replyTopic = `bwc-console/replies/${randomUUID()}`;
  readonly #waiting = new Map<string, (reply: Record<string, unknown>) => void>();

  private constructor(client: MqttClient, root: string) {
    super();
    (this as EventEmitter).on('newListener', (name: string | symbol) => {
      if (name !== 'audit') return;
      queueMicrotask(() => {
        for (const ev of this.#pendingAudit.splice(0)) this.emit('audit', ev);
      });
    });
    this.#client = client;
    this.#root = root;
    client.on('message', (topic, payload, packet) => {
      if (topic === this.#replyTopic) {
        const id = packet.properties?.correlationData?.toString('hex');
        if (id) this.#waiting.get(id)?.(parse(payload) ?? { ok: false, code: 'unreadable_reply', message: payload.toString('utf8').slice(0, 200) });
        return;
      }
      const [deviceId, channel, sid, leaf, ...rest] = topic.slice(root.length + 1).split('/');
      const body = parse(payload);
      if (!deviceId || !body) return;
      if (channel === 'stream') {
        if (sid && leaf === 'ice-offer' && rest.length === 0) this.emit('ice-offer', { deviceId, sid, message: body });
      } else if (channel === 'state') {
        const record = { deviceId, state: body, receivedAt: new Date().toISOString() };
        this.cameras.set(deviceId, record);
        this.emit('camera', record);
      } else if (channel === 'audit') {
        if (this.keepAuditInMemory) {
          const list = this.#audit.get(deviceId) ?? [];
          list.push(body as unknown as AuditMessage);
          this.#audit.set(deviceId, list);
        }
        // Until the archive listens (it opens after the session is resumed), audit waits here.
        if (this.listenerCount('audit') === 0) this.#pendingAudit.push({ deviceId, message: body });
        else this.emit('audit', { deviceId, message: body });
      }
    });
  }

  /**
   * clientId fixed and a persistent session: audit messages published while the console is down
   * wait at the broker, so its copy of each chain has no holes.
   */
  static async connect(url: string, clientId: string, root = 'bwc/v1'): Promise<Fleet> {
    // The message handler is attached before the connection: what waited in the persistent session
    // is delivered right after CONNACK, and a message with no listener then would be lost.
    const client = mqtt.connect(url, { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 7 * 86_400 }, reconnectPeriod: 1000 });
    const fleet = new Fleet(client, root);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', (err) => {
        client.end(true);
        reject(err);
      });
    });
    (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    await client.subscribeAsync([`${root}/+/state`, `${root}/+/audit`, `${root}/+/stream/+/ice-offer`], { qos: 1 });
    await client.subscribeAsync(fleet.#replyTopic, { qos: 1 });
    return fleet;
  }

  auditOf(deviceId: string): AuditMessage[] {
    return this.#audit.get(deviceId) ?? [];
  }

  /** Publishes a signed command to the camera and waits for its reply. */
  request(deviceId: string, body: { token: string; offer?: string }, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      const correlationData = randomBytes(12);
      const id = correlationData.toString('hex');
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        resolve({ ok: false, code: 'no_reply', message: `${deviceId} did not answer within ${timeoutMs / 1000} s (is it online?)` });
      }, timeoutMs);
      this.#waiting.set(id, (reply) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        resolve(reply);
      });
      this.#client.publish(`${this.#root}/${deviceId}/cmd`, JSON.stringify(body), { qos: 1, properties: { responseTopic: this.#replyTopic, correlationData } });
    });
  }

  /** Publishes a signed answer to a camera's ICE restart offer, QoS 1; resolves on the broker's PUBACK. */
  async publishIceAnswer(deviceId: string, sid: string, body: { token: string; answer: string }): Promise<void> {
    await this.#client.publishAsync(`${this.#root}/${deviceId}/stream/${sid}/ice-answer`, JSON.stringify(body), { qos: 1 });
  }

  async close(): Promise<void> {
    await this.#client.endAsync();
  }
}

function parse(payload: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(payload.toString('utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
