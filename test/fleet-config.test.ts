// Remote configuration end to end (issue 17, parts 1, 2 and 4): the real agent process under a
// supervisor that restarts it as systemd would (test/helpers/service-supervisor.ts), a real
// mosquitto, the fleet as a real mqtt.js client. A good change applied live and one applied by a
// restart; a bad one refused naming the key; a stale patch refused; one that keeps the agent
// from coming online (an unreachable broker) reverted by the agent itself; a trust.update that
// survives the restart; a diag.collect bundle reassembled from its chunks and searched for keys.
import t from 'tap';
import { createHash, createPrivateKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { makeCommand, makeIssuer, writeTrustStore, type Issuer } from './helpers/command-tokens.ts';
import { FleetClient } from './helpers/fleet-client.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';
import { ServiceSupervisor } from './helpers/service-supervisor.ts';
import { defaultReasonCodes, rejectionCodes, type CommandAction } from '../src/command/types.ts';
import { deviceKeyFile } from '../src/keys/device-key.ts';

const deviceId = 'cam-fleetcfg';
type Json = Record<string, unknown>;
const passedVerifier = (r: { ok: boolean; code?: string }) => r.ok || !(rejectionCodes as readonly string[]).includes(r.code ?? '');

t.test('config.apply, trust.update and diag.collect on the real agent under a systemd-like supervisor', async (t) => {
  const admin = await makeIssuer({ kid: 'fleet-admin-9', actions: ['config.apply', 'trust.update', 'diag.collect'] as CommandAction[] });
  const records = await makeIssuer({ kid: 'records-9', actions: ['record.start', 'record.stop'] });
  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const healthyWithin = 20;
  const config = await writeAgentConfig(stateDir, {
    // In the file, not BWC_MQTT_URL: the environment wins over a remote document.
    mqtt: { url: broker.url, reconnectMinDelay: 200, reconnectMaxDelay: 1000, keepalive: 5 },
    commands: { trustStore: writeTrustStore(stateDir, [admin, records]), unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
    remoteConfig: { healthyWithin },
  });
  const sup = new ServiceSupervisor({
    args: ['run', '--config', config],
    env: { BWC_DEVICE_ID: deviceId, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' },
    policy: { restartSecMs: 200 },
  });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await fleet.close();
    await sup.dispose();
    await recorder.close();
    await broker.dispose();
  });
  const states = () => recorder.on('state').map((m) => m.json as Json & { online?: boolean; config?: { version: number; digest: string; pending: boolean } });
  const events = () => recorder.on('event').map((m) => m.json as Json);
  const audit = () => recorder.on('audit').map((m) => (m.json?.entry ?? {}) as Json & { type?: string; detail?: Json });
  const waitState = (pred: (s: ReturnType<typeof states>[number]) => boolean, what: string, from = 0) =>
    recorder.waitFor(() => states().slice(from).some(pred), 90_000, what);
  const send = (issuer: Issuer, action: string, overrides: Json) =>
    fleet.request(deviceId, makeCommand({ issuer, deviceId, action: action as CommandAction, overrides: { reason: 'fleet-maintenance', ...overrides } }).payload, 30_000);

  await sup.start();
  await sup.waitFor('ready', (e) => e.run === 1, 90_000);
  await waitState((s) => s.online === true && s.config?.version === 0, 'online on the local file (version 0)');

  await t.test('a live change: new reason codes and GPS cadence, no restart', async (t) => {
    const reasons = [...defaultReasonCodes, 'custody-transfer'];
    const gpsBefore = recorder.on('gps').length;
    const reply = await send(admin, 'config.apply', { config: { document: { commands: { reasons }, gps: { idleInterval: 3 } } } });
    t.match(reply, { ok: true, applied: 'live', version: 1, changed: ['commands.reasons', 'gps.idleInterval'] });
    await recorder.waitFor(() => recorder.on('gps').length > gpsBefore, 20_000, 'a GPS report on the cadence change');
    await waitState((s) => s.config?.version === 1 && s.config.digest === reply.digest, 'state.config version 1 with the digest');
    const cmd = await send(records, 'record.stop', { reason: 'custody-transfer' });
    t.ok(passedVerifier(cmd), `the new reason is accepted at once (${cmd.code ?? 'ok'})`);
    t.equal(sup.runCount, 1, 'no restart');
    t.ok(audit().some((e) => e.type === 'config.applied' && e.detail?.applied === 'live'), 'audited');
  });

  await t.test('a bad change is refused naming the key; a stale patch is refused', async (t) => {
    const bad = await send(admin, 'config.apply', { config: { patch: { gps: { idleInterval: 0 } }, base: 1 } });
    t.equal(bad.code, 'config_invalid');
    t.match(bad.message, /remote config: gps\.idleInterval: expected a number >= 1, got 0/);
    const unknown = await send(admin, 'config.apply', { config: { patch: { gps: { idleIntervall: 5 } }, base: 1 } });
    t.equal(unknown.code, 'config_invalid');
    t.match(unknown.message, /unknown setting "gps\.idleIntervall"/);
    const stale = await send(admin, 'config.apply', { config: { patch: { gps: { idleInterval: 5 } }, base: 0 } });
    t.equal(stale.code, 'config_conflict');
    t.match(stale.message, /runs version 1/);
    t.equal(sup.runCount, 1, 'no restart');
  });

  await t.test('a trust.update, then a change applied by a clean restart; both hold after it', async (t) => {
    const revoke = await send(admin, 'trust.update', { trust: { revoke: [records.kid] } });
    t.equal(revoke.ok, true, `revoked: ${revoke.message ?? ''}`);
    const from = states().length;
    const reply = await send(admin, 'config.apply', { config: { patch: { health: { interval: 7 } }, base: 1 } });
    t.match(reply, { ok: true, applied: 'restart', version: 2, changed: ['health.interval'] });
    const exit = await sup.waitFor('exit', (e) => e.run === 1, 60_000);
    t.match(exit, { code: 75, willRestart: true }, 'exit 75: restarted by Restart=on-failure');
    await sup.waitFor('ready', (e) => e.run === 2, 90_000);
    await recorder.waitFor(() => events().some((e) => e.type === 'config.committed' && e.version === 2), 90_000, 'config.committed for version 2');
    await waitState((s) => s.online === true && s.config?.version === 2 && s.config.pending === false, 'online on version 2, committed', from);
    const after = await send(records, 'record.stop', {});
    t.equal(after.code, 'revoked_key', 'the revocation survived the restart');
  });

  await t.test('an unreachable broker: the agent reverts by itself to the last good config', async (t) => {
    const from = states().length;
    const reply = await send(admin, 'config.apply', { config: { patch: { mqtt: { url: 'mqtt://127.0.0.1:9' } }, base: 2 } });
    t.match(reply, { ok: true, applied: 'restart', version: 3 });
    await sup.waitFor('ready', (e) => e.run === 3, 90_000);
    // Run 3 cannot reach any broker; at the deadline it reverts and exits for a restart.
    const exit = await sup.waitFor('exit', (e) => e.run === 3, (healthyWithin + 60) * 1000);
    t.match(exit, { code: 75, willRestart: true });
    t.match(sup.runs[2]!.output, /configuration reverted to the last good one/);
    await sup.waitFor('ready', (e) => e.run === 4, 90_000);
    await waitState((s) => s.online === true && s.config?.version === 2, 'online again on version 2', from);
    await recorder.waitFor(() => events().some((e) => e.type === 'config.reverted'), 60_000, 'the config.reverted event');
    t.match(events().find((e) => e.type === 'config.reverted'), { fromVersion: 3, toVersion: 2, reason: /healthyWithin/ });
    await recorder.waitFor(() => audit().some((e) => e.type === 'config.reverted'), 60_000, 'the config.reverted audit entry');
  });

  await t.test('diag.collect: a bundle in chunks on the reply topic, without keys', async (t) => {
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
    t.teardown(() => client.endAsync(true));
    const replyTopic = `fleet/diag/${randomBytes(4).toString('hex')}`;
    const got: Json[] = [];
    let notify = () => {};
    client.on('message', (_topic, payload) => {
      got.push(JSON.parse(payload.toString()) as Json);
      notify();
    });
    await client.subscribeAsync(replyTopic, { qos: 1 });
    const { payload } = makeCommand({ issuer: admin, deviceId, action: 'diag.collect' as CommandAction, overrides: { reason: 'fleet-maintenance' } });
    await client.publishAsync(`bwc/v1/${deviceId}/cmd`, payload, { qos: 1, properties: { responseTopic: replyTopic, correlationData: randomBytes(8) } });
    const done = () => {
      const head = got.find((m) => m.ok === true) as { bundle?: { chunks: number } } | undefined;
      return head?.bundle !== undefined && got.filter((m) => m.diag).length >= head.bundle.chunks;
    };
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`bundle incomplete: ${JSON.stringify(got).slice(0, 500)}`)), 30_000);
      notify = () => {
        if (done()) {
          clearTimeout(timer);
          resolve();
        }
      };
      notify();
    });
    const head = got.find((m) => m.ok === true) as { bundle: { id: string; chunks: number; sha256: string; bytes: number; where: string } };
    t.equal(head.bundle.where, 'reply-topic');
    const parts = got.filter((m) => m.diag).map((m) => m.diag as { id: string; part: number; data: string }).sort((a, b) => a.part - b.part);
    const bytes = Buffer.concat(parts.map((p) => Buffer.from(p.data, 'base64')));
    t.equal(bytes.length, head.bundle.bytes);
    t.equal(createHash('sha256').update(bytes).digest('base64url'), head.bundle.sha256, 'the chunks reassemble to the announced digest');
    const text = bytes.toString('utf8');
    const bundle = JSON.parse(text) as Json & { config: { version: number; digest: string }; logs: string[]; versions: Json; healthHistory: unknown[]; state: Json };
    t.equal(bundle.config.version, 2);
    t.ok(bundle.logs.length > 0, 'recent logs');
    t.ok(bundle.versions.agent && bundle.versions.node, 'versions');
    t.ok(bundle.healthHistory.length > 0, 'health history');
    t.equal(bundle.state.deviceId, deviceId);
    // Never keys: the device's private key (as JWK d and as its PEM body) and no issuer's private part.
    const pem = readFileSync(path.join(stateDir, deviceKeyFile), 'utf8');
    const d = (createPrivateKey(pem).export({ format: 'jwk' }) as { d: string }).d;
    t.notOk(text.includes(d), 'no device private key (d)');
    t.notOk(text.includes(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '')), 'no device private key (PEM)');
    for (const issuer of [admin, records]) {
      const issuerD = (issuer.privateKey.export({ format: 'jwk' }) as { d: string }).d;
      t.notOk(text.includes(issuerD), `no private part of ${issuer.kid}`);
    }
    t.notOk(/"d"\s*:/.test(text), 'no JWK "d" member anywhere');
    await recorder.waitFor(() => audit().some((e) => e.type === 'diag.collected' && e.detail?.id === head.bundle.id), 20_000, 'the diag.collected audit entry');
    t.pass('the collection is audited with the bundle id');
  });
});
