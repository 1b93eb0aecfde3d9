// Threat: someone who can publish to the broker (a compromised fleet service, a rogue client with
// broker credentials, anyone on a captured MQTT link) re-sends signed tokens they once saw, or
// presents tokens before the issuer meant them to be used. Signed ICE-restart answers move a live
// view's media path, so a captured answer played again, or an answer that is "not valid before"
// a later time, must be refused by the camera's token verifier before it reaches the restart
// logic. And a command token once used must stay refused even when the device's wall clock has
// been moved forward (a spoofed GNSS time through gpsd and chrony, a bad NTP server) long enough
// for the replay cache to forget it, and then moved back.
//
// The ICE cases run the real agent process against a real mosquitto, with a real mqtt.js client
// playing the attacker; every wait is on an audit entry the agent publishes. The clock-jump case
// is at unit level (the real CommandVerifier, ReplayCache and SQLite database, an injected
// clock): the agent process has no injectable wall clock, and moving the machine's clock would
// disturb every other test running on it.
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import pino from 'pino';
import { importJWK, SignJWT, type JWK } from 'jose';
import t from 'tap';
import { CommandVerifier } from '../../src/command/verifier.ts';
import { ReplayCache } from '../../src/command/replay-cache.ts';
import { TrustStore } from '../../src/command/trust-store.ts';
import { openDatabase } from '../../src/store/database.ts';
import { iceAnswerTokenType } from '../../src/stream/ice-signalling.ts';
import { agentBin, spawnAgent, tempStateDir } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { base64urlSha256, makeCommand, makeIssuer, testPolicy, trustStoreJwks } from '../helpers/command-tokens.ts';
import { startBroker } from '../helpers/mosquitto.ts';
import { MqttRecorder } from '../helpers/mqtt-recorder.ts';
import { FleetClient } from '../helpers/fleet-client.ts';

const run = promisify(execFile);
const deviceId = 'cam-tokens';

t.test('ICE-restart answer tokens: replay and nbf, against the real agent', async (t) => {
  const keysDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-keys-'));
  await run(agentBin, ['keys', 'generate', '--out', keysDir, '--actions', 'stream.start,stream.stop']);
  const jwk = JSON.parse(await readFile(path.join(keysDir, 'issuer.private.jwk.json'), 'utf8')) as JWK;
  const key = await importJWK(jwk, 'EdDSA');

  // The broker logs subscriptions: an answer published before the agent's subscription is active
  // would be lost, so the test waits for that line.
  const broker = await startBroker({ listenerLines: ['log_type subscribe'] });
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, { commands: { trustStore: path.join(keysDir, 'trust.jwks.json'), unsynchronisedClock: 'accept' } });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await attacker.endAsync(true);
    await recorder.close();
    await broker.dispose();
  });
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 30_000, 'online');
  await waitUntil(() => broker.log.includes(`bwc/v1/${deviceId}/stream/+/ice-answer`), 30_000, "the agent's subscription to ICE answers");

  type Entry = { type?: string; reason?: string; tokenDigest?: string; detail?: Record<string, unknown> };
  const refusals = () => recorder.on('audit').map((m) => m.json?.entry as Entry | undefined).filter((e): e is Entry => e?.type === 'stream.ice_refused');
  /** Publishes an answer and waits for the agent's audit entry about that exact token. */
  const answerAndAwaitVerdict = async (sid: string, token: string, answer: string, nth: number): Promise<Entry> => {
    const digest = base64urlSha256(token);
    await attacker.publishAsync(`bwc/v1/${deviceId}/stream/${sid}/ice-answer`, JSON.stringify({ token, answer }), { qos: 1 });
    const mine = () => refusals().filter((e) => e.tokenDigest === digest);
    await recorder.waitFor(() => mine().length >= nth, 20_000, `audit entry ${nth} for the answer token`);
    return mine()[nth - 1]!;
  };
  const sign = (claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: iceAnswerTokenType, kid: jwk.kid! }).sign(key);
  const answer = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n';
  const nowS = Math.floor(Date.now() / 1000);
  const base = { iss: 'bwc-fleet', sub: 'sgt-7', aud: deviceId, iat: nowS, exp: nowS + 60, gen: 1, answer_sha256: base64urlSha256(answer) };

  // A valid answer, captured on the wire, played twice. The first reaches the restart logic (no
  // such session here, so it goes no further); the second must not: it is a replay.
  const sid = `s-${randomUUID()}`;
  const captured = await sign({ ...base, sid, jti: randomUUID() });
  const first = await answerAndAwaitVerdict(sid, captured, answer, 1);
  t.equal(first.reason, 'unknown_session', 'the first delivery passes the token checks');
  const replay = await answerAndAwaitVerdict(sid, captured, answer, 2);
  t.equal(replay.reason, 'replayed', 'the same answer token again is refused as a replay by the verifier');
  t.match(String(replay.detail?.message), /already used/, 'the refusal says why');

  // An answer signed to be valid only in an hour, presented now.
  const early = await sign({ ...base, sid, jti: randomUUID(), nbf: nowS + 3600, exp: nowS + 120 });
  const notYet = await answerAndAwaitVerdict(sid, early, answer, 1);
  t.equal(notYet.reason, 'not_yet_valid', 'an answer with nbf an hour ahead is refused');
  t.match(String(notYet.detail?.message), /not valid before/, 'the refusal names nbf');

  // Every command decision records the kernel's clock verdict and estimated error.
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(() => fleet.close());
  t.match(await fleet.request(deviceId, '{"token": "x"}', 20_000), { ok: false, code: 'malformed' });
  const decisions = () => recorder.on('audit').map((m) => m.json?.entry as Entry | undefined).filter((e): e is Entry => e?.type === 'command.decision');
  await recorder.waitFor(() => decisions().length >= 1, 20_000, 'the command decision in the audit');
  t.match(decisions()[0]!.detail?.clock, { source: 'adjtimex', synchronised: Boolean, estErrorUs: Number, maxErrorUs: Number }, 'the decision names the clock verdict and its error');
});

t.test('a command replayed after the wall clock was moved forward and back (unit level, real SQLite)', async (t) => {
  const issuer = await makeIssuer();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-replay-'));
  const db = openDatabase({ stateDir: dir });
  t.teardown(() => db.close());
  let nowMs = Date.now();
  // The kernel calls this clock synchronised throughout: a spoofed GNSS time is "synchronised".
  const verifier = new CommandVerifier({
    deviceId: 'cam-1',
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), [], 'test'),
    policy: { ...testPolicy, maxTokenLifetimeS: 600, clockSkewS: 30 },
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => nowMs, synchronised: () => true },
    activeStreams: () => 0,
    logger: pino({ level: 'silent' }),
  });
  const trueStartS = Math.floor(nowMs / 1000);
  const captured = makeCommand({ issuer, deviceId: 'cam-1', action: 'record.start', nowS: trueStartS, lifetimeS: 300 });
  t.match(await verifier.verify(captured.payload), { ok: true }, 'the command is accepted once');

  // The device clock is pushed nine minutes ahead. The issuer's clock is right; its next command
  // lives ten minutes, so the device (wrongly ahead) still accepts it, and on that occasion
  // prunes the replay rows its wrong clock calls expired.
  nowMs += 540_000;
  const next = makeCommand({ issuer, deviceId: 'cam-1', action: 'record.stop', nowS: trueStartS + 5, lifetimeS: 600 });
  t.match(await verifier.verify(next.payload), { ok: true }, 'a fresh command is accepted while the clock is ahead');

  // The clock comes back to the truth, a minute after the capture: the captured token is within
  // its lifetime again.
  nowMs = (trueStartS + 60) * 1000;
  const again = await verifier.verify(captured.payload);
  t.match(again, { ok: false, code: 'replayed' }, 'the captured command is still refused as a replay');
});

/** Waits for a condition that has no event of its own (a line in the broker's log). */
async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
