// The console's side of the broker: the last retained `state` of every camera under the topic
// root, every `audit` message each camera published (kept in memory, in arrival order, for the
// audit view and its chain check), MQTT 5 request/response for the commands it signs, and the
// cameras' ICE restart offers (`stream/<sid>/ice-offer`, unverified here: the server checks them).
// Every message is checked for size and shape first (message-shapes.ts) and what is kept per camera
// is bounded: anything refused is reported as a 'refused' event, for the server to log.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import mqtt, { type MqttClient } from 'mqtt';
import type { AuditMessage } from '../src/audit/audit-log.ts';
import { canonicalJson } from '../src/audit/canonical-json.ts';
import { checkAudit, checkEvent, checkIceOffer, checkState, defaultLimits, deviceIdPattern, type MessageLimits } from './message-shapes.ts';

export interface CameraRecord {
  deviceId: string;
  state: Record<string, unknown>;
  receivedAt: string;
}

export interface FleetEvents {
  camera: [CameraRecord];
  /** A new audit message kept (repeats of one held are not announced again). */
  audit: [{ deviceId: string; message: AuditMessage }];
  /** Something a camera says happened, on its `event` topic ({type, time, ...}). */
  event: [{ deviceId: string; body: { type: string; time: string } & Record<string, unknown> }];
  /** A camera's ICE restart offer message as received, not yet verified. */
  'ice-offer': [{ deviceId: string; sid: string; message: Record<string, unknown> }];
  /** A message refused (bad shape, too large, over a bound) or dropped: what, and why in words. */
  refused: [{ deviceId: string; channel: string; verb: 'refused' | 'dropped'; what: string; problem: string }];
}

export class Fleet extends EventEmitter<FleetEvents> {
  readonly cameras = new Map<string, CameraRecord>();
  readonly #audit = new Map<string, AuditMessage[]>();
  readonly #pendingAudit: { deviceId: string; message: AuditMessage }[] = [];
  /** Per camera, per audit seq ('e' entries, 'c' checkpoints): digests of the versions held. */
  readonly #versions = new Map<string, Map<string, string[]>>();
  readonly #limits: MessageLimits;
  /** Cameras whose oldest audit messages were dropped (said once each). */
  readonly #trimmed = new Set<string>();
  readonly #client: MqttClient;
  readonly #root: string;
  readonly #replyTopic = `bwc-console/replies/${randomUUID()}`;
  readonly #waiting = new Map<string, (reply: Record<string, unknown>) => void>();

  private constructor(client: MqttClient, root: string, limits: MessageLimits) {
    super();
    (this as EventEmitter).on('newListener', (name: string | symbol) => {
      if (name !== 'audit') return;
      queueMicrotask(() => {
        for (const ev of this.#pendingAudit.splice(0)) this.emit('audit', ev);
      });
    });
    this.#client = client;
    this.#root = root;
    this.#limits = limits;
    client.on('message', (topic, payload, packet) => {
      if (topic === this.#replyTopic) {
        const id = packet.properties?.correlationData?.toString('hex');
        if (id) this.#waiting.get(id)?.(parse(payload) ?? { ok: false, code: 'unreadable_reply', message: payload.toString('utf8').slice(0, 200) });
        return;
      }
      const [deviceId, channel, sid, leaf, ...rest] = topic.slice(root.length + 1).split('/');
      if (!deviceId || !channel) return;
      const refuse = (what: string, problem: string, verb: 'refused' | 'dropped' = 'refused') => this.emit('refused', { deviceId, channel, verb, what, problem });
      // Under one name in the log, whatever the topic said: invented ids must not each get a line.
      if (!deviceIdPattern.test(deviceId)) return this.emit('refused', { deviceId: '(a bad device id)', channel: 'any', verb: 'refused', what: 'a message', problem: `the device id ${JSON.stringify(deviceId.slice(0, 64))} is not 1 to 64 letters, digits, _ or -` });
      if (!this.cameras.has(deviceId) && !this.#audit.has(deviceId) && this.#knownDevices() >= limits.cameras) {
        return refuse(`a ${channel} message`, `the console already holds ${limits.cameras} cameras (the limit)`);
      }
      if (channel === 'stream') {
        if (!sid || leaf !== 'ice-offer' || rest.length !== 0) return;
        const r = checkIceOffer(payload, limits);
        if (!r.ok) return refuse('an ICE restart offer', r.problem);
        this.emit('ice-offer', { deviceId, sid, message: r.value as Record<string, unknown> });
      } else if (channel === 'state') {
        const r = checkState(payload, limits);
        // The previous good state stays: nothing legitimate is lost to a bad message.
        if (!r.ok) return refuse('a state', r.problem);
        const record = { deviceId, state: r.value as Record<string, unknown>, receivedAt: new Date().toISOString() };
        this.cameras.set(deviceId, record);
        this.emit('camera', record);
      } else if (channel === 'audit') {
        const r = checkAudit(payload, limits);
        if (!r.ok) return refuse('an audit message', r.problem);
        const { seq: _transportSeq, ...message } = r.value as AuditMessage & { seq?: unknown };
        const kept = this.#keep(deviceId, message as AuditMessage);
        if (kept !== true) return kept && refuse('an audit entry', kept, 'dropped');
        // Until the archive listens (it opens after the session is resumed), audit waits here.
        if (this.listenerCount('audit') === 0) this.#pendingAudit.push({ deviceId, message: message as AuditMessage });
        else this.emit('audit', { deviceId, message: message as AuditMessage });
      } else if (channel === 'event') {
        const r = checkEvent(payload, limits);
        if (!r.ok) return refuse('an event', r.problem);
        this.emit('event', { deviceId, body: r.value });
      }
    });
  }

  #knownDevices(): number {
    let n = this.cameras.size;
    for (const id of this.#audit.keys()) if (!this.cameras.has(id)) n++;
    return n;
  }

  /**
   * Keeps one audit message, unless it repeats one held (at-least-once delivery: dropped quietly)
   * or its seq is held in versionsPerSeq versions already; past auditPerCamera the oldest goes.
   * Returns true when kept, false for a repeat, else why it was dropped.
   */
  #keep(deviceId: string, message: AuditMessage): true | false | string {
    const versions = this.#versions.get(deviceId) ?? new Map<string, string[]>();
    this.#versions.set(deviceId, versions);
    const seq = message.kind === 'entry' ? message.entry.seq : message.checkpoint.seq;
    const key = `${message.kind === 'entry' ? 'e' : 'c'}${seq}`;
    const digest = createHash('sha256').update(canonicalJson(message)).digest('base64url');
    const held = versions.get(key) ?? [];
    if (held.includes(digest)) return false;
    if (held.length >= this.#limits.versionsPerSeq) return `seq ${seq} is held in ${held.length} versions already (a different one is not kept)`;
    versions.set(key, [...held, digest]);
    const list = this.#audit.get(deviceId) ?? [];
    list.push(message);
    this.#audit.set(deviceId, list);
    if (list.length > this.#limits.auditPerCamera) {
      const oldest = list.shift()!;
      const oldKey = oldest.kind === 'entry' ? `e${oldest.entry.seq}` : `c${oldest.checkpoint.seq}`;
      versions.delete(oldKey);
      if (!this.#trimmed.has(deviceId)) {
        this.#trimmed.add(deviceId);
        this.emit('refused', { deviceId, channel: 'audit', verb: 'dropped', what: 'its oldest audit messages', problem: `the console keeps the newest ${this.#limits.auditPerCamera} per camera in memory` });
      }
    }
    return true;
  }

  /**
   * clientId fixed and a persistent session: audit messages published while the console is down
   * wait at the broker, so its copy of each chain has no holes.
   */
  static async connect(url: string, clientId: string, root = 'bwc/v1', limits: MessageLimits = defaultLimits): Promise<Fleet> {
    // The message handler is attached before the connection: what waited in the persistent session
    // is delivered right after CONNACK, and a message with no listener then would be lost.
    // Maximum Packet Size: the broker drops (for this client) anything larger, so a publisher cannot
    // make the console read hundreds of MiB; the limits above refuse the rest with words.
    const maximumPacketSize = 1024 * 1024;
    const client = mqtt.connect(url, { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 7 * 86_400, maximumPacketSize }, reconnectPeriod: 1000 });
    const fleet = new Fleet(client, root, limits);
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', (err) => {
        client.end(true);
        reject(err);
      });
    });
    (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    await client.subscribeAsync([`${root}/+/state`, `${root}/+/audit`, `${root}/+/event`, `${root}/+/stream/+/ice-offer`], { qos: 1 });
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

  /**
   * A request whose reply is followed by more messages on the same Response Topic and Correlation
   * Data (diag.collect's chunks): `expect` reads from the first reply how many follow (0: none).
   * Resolves with what came; chunks short of the count when the time ran out (the caller says so).
   */
  requestChunks(deviceId: string, body: { token: string }, expect: (reply: Record<string, unknown>) => number, timeoutMs = 30_000): Promise<{ reply: Record<string, unknown>; chunks: Record<string, unknown>[] }> {
    return new Promise((resolve) => {
      const correlationData = randomBytes(12);
      const id = correlationData.toString('hex');
      let reply: Record<string, unknown> | undefined;
      let wanted = 0;
      const chunks: Record<string, unknown>[] = [];
      const done = () => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        resolve({ reply: reply!, chunks });
      };
      const timer = setTimeout(() => {
        reply ??= { ok: false, code: 'no_reply', message: `${deviceId} did not answer within ${timeoutMs / 1000} s (is it online?)` };
        done();
      }, timeoutMs);
      this.#waiting.set(id, (message) => {
        if (reply === undefined) {
          reply = message;
          wanted = expect(message);
        } else chunks.push(message);
        if (chunks.length >= wanted) done();
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
