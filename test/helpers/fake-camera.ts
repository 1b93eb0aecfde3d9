// A camera as the console sees it over the broker, for console tests that need no video: a real
// mqtt.js client that answers every stream.start (a new sid) and stream.stop (ok) on its `cmd`
// topic, records the decoded claims of each command it was sent, and publishes its retained state
// with the views it holds (so the console knows who watches what). The real agent's decisions are
// tested elsewhere; here the console's own checks are what is under test.
import mqtt, { type MqttClient } from 'mqtt';

export interface SeenCommand {
  act: string;
  sub: string;
  reason: string;
  sid?: string;
  aud: string;
}

export interface FakeCamera {
  deviceId: string;
  readonly commands: SeenCommand[];
  /** Resolves once the camera has been sent a command matching. */
  next(match: (c: SeenCommand) => boolean, what: string): Promise<SeenCommand>;
  publishState(extra?: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

export async function startFakeCamera(brokerUrl: string, deviceId: string, state: Record<string, unknown> = {}): Promise<FakeCamera> {
  const client: MqttClient = await mqtt.connectAsync(brokerUrl, { protocolVersion: 5 });
  const commands: SeenCommand[] = [];
  const views: { sid: string; operator: string; reason: string; state: string; startedAt: string; endsBy: string; covert: boolean }[] = [];
  const waiters = new Set<() => void>();
  let n = 0;
  const publishState = async (extra: Record<string, unknown> = {}) => {
    await client.publishAsync(`bwc/v1/${deviceId}/state`, JSON.stringify({
      online: true, deviceId, recording: false, ...state, ...extra,
      streaming: { sessions: views.length, bitrateKbps: null, list: views },
    }), { qos: 1, retain: true });
  };
  client.on('message', (topic, payload, packet) => {
    if (topic !== `bwc/v1/${deviceId}/cmd`) return;
    const { token } = JSON.parse(payload.toString()) as { token: string };
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as SeenCommand;
    commands.push(claims);
    let reply: Record<string, unknown>;
    if (claims.act === 'stream.start') {
      const sid = `s-${deviceId}-${++n}`;
      const endsBy = new Date(Date.now() + 300_000).toISOString();
      views.push({ sid, operator: claims.sub, reason: claims.reason, state: 'connected', startedAt: new Date().toISOString(), endsBy, covert: false });
      reply = { ok: true, sid, answer: 'v=0\r\n', endsBy };
    } else {
      const i = views.findIndex((v) => v.sid === claims.sid);
      if (i >= 0) views.splice(i, 1);
      reply = { ok: true };
    }
    void publishState().then(() => client.publishAsync(packet.properties!.responseTopic!, JSON.stringify(reply), { qos: 1, properties: { correlationData: packet.properties!.correlationData! } }));
    for (const w of waiters) w();
  });
  await client.subscribeAsync(`bwc/v1/${deviceId}/cmd`, { qos: 1 });
  await publishState();
  return {
    deviceId,
    commands,
    next: (match, what) => new Promise((resolve, reject) => {
      const check = () => {
        const found = commands.find(match);
        if (!found) return false;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${deviceId} was never sent ${what} within 30 s`));
      }, 30_000);
      if (!check()) waiters.add(check);
    }),
    publishState,
    close: () => client.endAsync(true),
  };
}
