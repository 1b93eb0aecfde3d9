// Signed commands end to end: the fleet tools in the CLI make an issuer key and sign and send
// commands through a real mosquitto with MQTT 5 request/response; the agent answers each with
// its verdict, audits every decision before acting, survives a restart with its replay cache,
// and the audit trail it published verifies with `bwc-agent audit verify`.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { runCli, spawnAgent, tempStateDir, type AgentProcess } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { envelope, makeCommand, makeIssuer, signToken, commandClaims, sdpOffer } from './helpers/command-tokens.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { FleetClient } from './helpers/fleet-client.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const deviceId = 'cam-cmd';

const cli = runCli;

t.test('commands through a real broker', async (t) => {
  const keysDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-keys-'));
  const made = await cli(['keys', 'generate', '--out', keysDir, '--actions', 'record.start,record.stop,stream.start,stream.stop']);
  t.equal(made.code, 0, 'keys generate');
  t.match(made.stdout, /trust store: .*trust\.jwks\.json/);
  const keyFile = path.join(keysDir, 'issuer.private.jwk.json');
  const strangerDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-keys-'));
  await cli(['keys', 'generate', '--out', strangerDir]);

  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, { commands: { trustStore: path.join(keysDir, 'trust.jwks.json'), unsynchronisedClock: 'accept' } });
  const env = { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' };
  let agent: AgentProcess = spawnAgent(['run', '--config', config], env);
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await fleet.close();
    await recorder.close();
    await broker.dispose();
  });
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 30_000, 'online');
  const publicKey = recorder.on('state').find((m) => m.json?.devicePublicKey)?.json?.devicePublicKey as { kty: string; crv: string; kid: string } | undefined;
  t.equal(publicKey?.crv, 'Ed25519', 'the device public key is in state');

  // Raw request/response, for payloads the CLI would never make.
  const request = (payload: Buffer | string) => fleet.request(deviceId, payload, 15_000);

  // 1. The CLI's sign + send, accepted.
  const ok = await cli(['command', 'send', '--url', broker.url, '--key', keyFile, '--device', deviceId, '--action', 'record.start', '--reason', 'officer-safety', '--operator', 'sgt-1234']);
  t.equal(ok.code, 0, 'record.start accepted (exit 0)');
  t.match(JSON.parse(ok.stdout), { ok: true });

  // 2. Refusals, each answered with its code.
  const refusals: [string, string[], string][] = [
    ['unknown key', ['--key', path.join(strangerDir, 'issuer.private.jwk.json'), '--device', deviceId, '--action', 'record.start', '--reason', 'officer-safety'], 'unknown_key'],
    ['another device', ['--key', keyFile, '--device', 'cam-other', '--action', 'record.start', '--reason', 'officer-safety'], 'wrong_device'],
    ['reason not allowed', ['--key', keyFile, '--device', deviceId, '--action', 'record.stop', '--reason', 'curiosity'], 'reason_not_allowed'],
    ['too long lived', ['--key', keyFile, '--device', deviceId, '--action', 'record.stop', '--reason', 'officer-safety', '--ttl', '3600'], 'too_long_lived'],
  ];
  for (const [name, args, code] of refusals) {
    const sign = await cli(['command', 'sign', ...args]);
    t.equal(sign.code, 0, `signed: ${name}`);
    const reply = await request(JSON.stringify({ token: sign.stdout.trim() }));
    t.match(reply, { ok: false, code }, `${name} -> ${code}`);
  }
  t.match(await request('{"token": "not a jws"'), { ok: false, code: 'malformed' }, 'broken JSON -> malformed');
  t.match(await request(Buffer.alloc(70_000, 0x41)), { ok: false, code: 'too_large' }, 'oversized -> too_large');

  // Tokens the CLI would not make: expired, alg none, a swapped offer.
  const jwk = JSON.parse(await (await import('node:fs/promises')).readFile(keyFile, 'utf8')) as { kid: string };
  const issuer = await makeIssuer({ kid: jwk.kid });
  // The helper's issuer has its own key; use it for shape and sign with the real issuer key via the CLI's file.
  const { createPrivateKey } = await import('node:crypto');
  const realKey = createPrivateKey({ key: JSON.parse(await (await import('node:fs/promises')).readFile(keyFile, 'utf8')) as import('node:crypto').JsonWebKey, format: 'jwk' });
  const real = { ...issuer, privateKey: realKey, iss: 'bwc-fleet' };
  const expired = signToken({ issuer: real, claims: commandClaims({ issuer: real, deviceId, action: 'record.start', nowS: Math.floor(Date.now() / 1000) - 600 }) });
  t.match(await request(envelope(expired)), { ok: false, code: 'expired' }, 'expired');
  const none = signToken({ issuer: real, claims: commandClaims({ issuer: real, deviceId, action: 'record.start' }), header: { alg: 'none' } }).replace(/\.[^.]*$/, '.');
  t.match(await request(envelope(none)), { ok: false, code: 'unsupported_alg' }, 'alg none');
  const stream = makeCommand({ issuer: real, deviceId, action: 'stream.start' });
  t.match(await request(envelope(stream.token, sdpOffer().offer)), { ok: false, code: 'offer_mismatch' }, 'swapped offer');
  t.match(await request(envelope(stream.token)), { ok: false, code: 'offer_missing' }, 'no offer');
  const accepted = await request(stream.payload);
  t.match(accepted, { ok: true, sid: /^s-/, answer: /a=sendonly/ }, 'a valid stream.start: authorised and answered (test/stream-e2e.test.ts watches it in Chromium)');
  const stopUnknown = makeCommand({ issuer: real, deviceId, action: 'stream.stop', overrides: { sid: 's-nonexistent' } });
  t.match(await request(stopUnknown.payload), { ok: false, code: 'unknown_session' }, 'stream.stop of a session that does not exist');
  const stopIt = makeCommand({ issuer: real, deviceId, action: 'stream.stop', overrides: { sid: accepted.sid } });
  t.match(await request(stopIt.payload), { ok: true, sid: accepted.sid }, 'stream.stop of the accepted one');

  // 3. Replay, before and after an agent restart (the replay cache is in SQLite).
  // The longest lifetime the policy allows: it must outlive the restart below on a loaded machine, or
  // the answer after it would be "expired", not "replayed" (expiry is checked first).
  const once = makeCommand({ issuer: real, deviceId, action: 'record.stop', lifetimeS: 300 });
  t.match(await request(once.payload), { ok: true }, 'first use accepted');
  t.match(await request(once.payload), { ok: false, code: 'replayed' }, 'second use: replayed');
  t.equal((await agent.stop('SIGTERM')).code, 0);
  agent = spawnAgent(['run', '--config', config], env);
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.online === true, 30_000, 'online again');
  t.match(await request(once.payload), { ok: false, code: 'replayed' }, 'after a restart: still replayed');

  // 4. The audit: every decision, published over MQTT and verifiable from the capture and the db.
  await recorder.waitFor(() => recorder.on('audit').filter((m) => (m.json?.entry as { type?: string } | undefined)?.type === 'command.decision').length >= 14, 30_000, 'audit entries');
  const decisions = recorder
    .on('audit')
    .map((m) => m.json?.entry as { type: string; decision: string; code: string | null; operator: string | null } | undefined)
    .filter((e) => e?.type === 'command.decision');
  const codes = decisions.map((d) => d!.code ?? 'accepted');
  for (const code of ['accepted', 'unknown_key', 'wrong_device', 'reason_not_allowed', 'too_long_lived', 'malformed', 'too_large', 'expired', 'unsupported_alg', 'offer_mismatch', 'offer_missing', 'replayed']) {
    t.ok(codes.includes(code), `audited: ${code}`);
  }
  t.ok(decisions.some((d) => d!.operator === 'sgt-1234' && d!.decision === 'accepted'), 'the audit names the operator who asked');
  t.ok(recorder.on('audit').some((m) => (m.json?.entry as { type?: string } | undefined)?.type === 'command.result'), 'the stream.stop of an unknown session is audited as a result');

  t.equal((await agent.stop('SIGTERM')).code, 0);
  await recorder.waitFor(() => recorder.on('audit').some((m) => m.json?.kind === 'checkpoint'), 10_000, 'a checkpoint (the final one at stop)');
  const capture = path.join(stateDir, 'audit-capture.jsonl');
  await writeFile(capture, recorder.on('audit').map((m) => m.payload).join('\n'));
  const fromCapture = await cli(['audit', 'verify', '--file', capture]);
  t.equal(fromCapture.code, 0, `audit verify --file: ${fromCapture.stdout.trim()}${fromCapture.stderr.trim()}`);
  const fromDb = await cli(['audit', 'verify', '--state-dir', stateDir]);
  t.equal(fromDb.code, 0, `audit verify --state-dir: ${fromDb.stdout.trim()}${fromDb.stderr.trim()}`);
  t.match(fromDb.stdout, new RegExp(publicKey!.kid), 'signed by the key the device published');
});
