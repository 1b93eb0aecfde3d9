// Threat: someone who can get an agent.update to the camera (a stolen or over-privileged command
// issuer key, a compromised object store or HTTPS mirror, a man in the middle on the download, a
// hand in the state folder) makes it run code the fleet's release key never signed, or an old
// release with a known hole, or updates it mid-incident. Each attempt is sent to the real agent
// process over a real MQTT client (mqtt.js) and a real loopback HTTP server, and must be refused
// with a code and an audit entry naming what is wrong, the running release left as it was.
import t, { type Test } from 'tap';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readlinkSync, rmSync, statSync, watch, writeFileSync, writeSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exportJWK } from 'jose';
import { runCli, spawnAgent } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';
import { commandClaims, envelope, makeIssuer, signToken, writeTrustStore } from '../helpers/command-tokens.ts';
import { FleetClient, type Reply } from '../helpers/fleet-client.ts';
import { hostBundle, installBase, sha256File, startReleaseServer, variantBundle } from '../helpers/release-bundles.ts';
import { releaseKeygen, signRelease } from '../../src/cli/release-tools.ts';
import type { ReleaseClaim } from '../../src/update/release.ts';

const deviceId = 'cam-update-attacks';
const base = await hostBundle();
const good = await variantBundle(base, '0.2.0');
const work = mkdtempSync(path.join(os.tmpdir(), 'bwc-update-attacks-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const releasesDir = path.join(work, 'releases');
installBase(releasesDir, base);
const releaseKey = await releaseKeygen(path.join(work, 'release-key'));
const issuer = await makeIssuer();

// The same bundle with one byte changed, as a compromised mirror would serve it.
const tampered = path.join(work, 'tampered.tar.gz');
copyFileSync(good, tampered);
const fd = openSync(tampered, 'r+');
writeSync(fd, Buffer.from([0x42]), 0, 1, 1000);
closeSync(fd);
const server = await startReleaseServer({ 'good.tar.gz': good, 'tampered.tar.gz': tampered });
t.teardown(() => server.close());

const { broker, recorder, stateDir, agent } = await startAgentOnBroker(t, {
  deviceId,
  issuers: [issuer],
  capturing: true,
  config: { update: { releasesDir, releaseKeys: releaseKey.publicFile, minVersion: '0.1.0' } },
});
const agentArgs = agent.child.spawnargs.slice(1);
const fleet = await FleetClient.connect(broker.url);
t.teardown(() => fleet.close());

function update(release: Partial<ReleaseClaim>, extra: Record<string, unknown> = {}): Promise<Reply> {
  const claims = commandClaims({ issuer, deviceId, action: 'agent.update', overrides: { release, ...extra } });
  return fleet.request(deviceId, envelope(signToken({ issuer, claims })));
}
const audited = (pred: (entry: string) => boolean) => recorder.on('audit').some((m) => pred(m.payload));
const untouched = (t: Test) => {
  t.equal(readlinkSync(path.join(releasesDir, 'current')), base.version, `current still ${base.version}`);
  t.equal(readlinkSync(path.join(releasesDir, 'committed')), base.version, `committed still ${base.version}`);
  t.same(readdirSync(releasesDir).sort(), [base.version, 'committed', 'current'].sort(), 'no other release unpacked');
};

t.test('a release signed by a command issuer key (not a release key) is refused', async (t) => {
  const keyFile = path.join(work, 'issuer.private.jwk.json');
  writeFileSync(keyFile, JSON.stringify({ ...(await exportJWK(issuer.privateKey)), kid: issuer.kid }));
  const release = await signRelease({ keyFile, bundle: good, url: server.url('good.tar.gz'), version: '0.2.0' });
  const reply = await update(release);
  t.match(reply, { ok: false, code: 'bad_release_signature', message: /does not verify against update\.releaseKeys/ });
  await recorder.waitFor(() => audited((e) => e.includes('"code":"bad_release_signature"')), 10_000, 'the refusal audited');
  t.equal(server.requests.length, 0, 'nothing was downloaded');
  untouched(t);
});

t.test('a release signature lifted onto another bundle (version or SHA-256 changed) is refused', async (t) => {
  const real = await signRelease({ keyFile: releaseKey.privateFile, bundle: good, url: server.url('good.tar.gz'), version: '0.2.0' });
  const otherSha = await update({ ...real, sha256: sha256File(tampered) });
  t.match(otherSha, { ok: false, code: 'bad_release_signature', message: /signed version 0\.2\.0 with sha256 [0-9a-f]{64}, not/ });
  const otherVersion = await update({ ...real, version: '9.0.0' });
  t.match(otherVersion, { ok: false, code: 'bad_release_signature' });
  t.equal(server.requests.length, 0, 'nothing was downloaded');
  untouched(t);
});

t.test('a tampered bundle (the signed SHA-256, other bytes) is downloaded, refused and removed', async (t) => {
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: good, url: server.url('tampered.tar.gz'), version: '0.2.0' });
  const reply = await update(release);
  t.match(reply, { ok: true, status: 'downloading' }, 'accepted: the signature is good');
  await recorder.waitFor(
    () => recorder.on('event').some((m) => m.json?.type === 'update.refused'),
    60_000,
    'update.refused',
  );
  const refused = recorder.on('event').find((m) => m.json?.type === 'update.refused')?.json;
  t.match(refused, { code: 'sha256_mismatch', version: '0.2.0', reason: new RegExp(`not the signed ${release.sha256}`) });
  t.ok(audited((e) => e.includes('"type":"update.refused"') && e.includes('sha256_mismatch')), 'audited');
  t.notOk(existsSync(path.join(stateDir, 'update', '0.2.0.tar.gz')), 'the bundle is not kept');
  untouched(t);
  const state = recorder.on('state').at(-1)?.json;
  t.match(state, { online: true, agentVersion: base.version }, 'the agent runs on');
});

t.test('a validly signed release below the floor (update.minVersion) is refused', async (t) => {
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: good, url: server.url('good.tar.gz'), version: '0.0.9' });
  const reply = await update(release);
  t.match(reply, { ok: false, code: 'below_floor', message: 'release 0.0.9 is below the floor update.minVersion 0.1.0' });
  await recorder.waitFor(() => audited((e) => e.includes('"code":"below_floor"')), 10_000, 'the refusal audited');
  untouched(t);
});

t.test('no update while recording unless the command says force', async (t) => {
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: good, url: server.url('good.tar.gz'), version: '0.2.0' });
  const started = await runCli(['ctl', 'record', 'start', '--state-dir', stateDir]);
  t.equal(started.code, 0, 'recording', { stderr: started.stderr });
  try {
    const reply = await update(release);
    t.match(reply, { ok: false, code: 'busy_recording', message: /recording; send the update again later, or with force: true/ });
    await recorder.waitFor(() => audited((e) => e.includes('"code":"busy_recording"')), 10_000, 'the refusal audited');
  } finally {
    await runCli(['ctl', 'record', 'stop', '--state-dir', stateDir]);
  }
  untouched(t);
});

t.test('a crafted update marker in the state folder: the boot check removes it and keeps the committed release', async (t) => {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'bwc-marker-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const releases = path.join(folder, 'releases');
  installBase(releases, base);
  mkdirSync(path.join(folder, 'update'));
  writeFileSync(path.join(folder, 'update', 'pending.json'), '{"version":"../../etc","previous":"0.1.0","attempts":0}');
  const config = await writeAgentConfig(folder, { stateDir: folder, update: { releasesDir: releases } });
  const r = await runCli(['update', 'boot-check', '--config', config]);
  t.equal(r.code, 0);
  t.match(r.stdout, /removed a damaged update marker: pending\.json has no valid version/);
  t.equal(readlinkSync(path.join(releases, 'current')), base.version);
  t.notOk(existsSync(path.join(folder, 'update', 'pending.json')), 'the marker is gone');
  t.ok(existsSync(path.join(folder, 'update', 'outcome.json')), 'the next start audits what happened');
});

t.test('a command issuer key configured as a release key (another kid, the same public key): the agent refuses to start', async (t) => {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'bwc-releasekeys-'));
  t.teardown(() => rmSync(folder, { recursive: true, force: true }));
  const releaseKeys = path.join(folder, 'release-keys.jwks.json');
  const { bwc_actions: _actions, ...issuerPublic } = issuer.publicJwk;
  writeFileSync(releaseKeys, JSON.stringify({ keys: [{ ...issuerPublic, kid: 'release-looks-new' }] }));
  const config = await writeAgentConfig(folder, {
    stateDir: folder,
    commands: { trustStore: writeTrustStore(folder, [issuer]) },
    update: { releasesDir: path.join(folder, 'releases'), releaseKeys },
  });
  const r = await runCli(['run', '--config', config]);
  t.equal(r.code, 2, 'a configuration error');
  t.match(r.stderr, /update\.releaseKeys: key\(s\) release-looks-new are also in commands\.trustStore \(same kid or same public key\)/);
});

// Last: it ends with the update installed and the agent exited for its restart.
t.test('a download killed with the agent (kill -9) resumes from the partial file at the next agent.update', async (t) => {
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: good, url: server.url('good.tar.gz'), version: '0.2.0' });
  const heldAt = 8 * 1024 * 1024;
  const held = server.holdNext('good.tar.gz', heldAt);
  t.match(await update(release), { ok: true, status: 'downloading' });
  await held;
  const partial = path.join(stateDir, 'update', '0.2.0.tar.gz.partial');
  // Bytes the server sent are on their way to the file: wait for the file to hold some (fs events).
  await new Promise<void>((resolve, reject) => {
    const written = () => existsSync(partial) && statSync(partial).size > 0;
    const watcher = watch(path.dirname(partial), () => {
      if (written()) done();
    });
    const timer = setTimeout(() => {
      watcher.close();
      reject(new Error('the partial download never reached the state folder'));
    }, 30_000);
    const done = () => {
      clearTimeout(timer);
      watcher.close();
      resolve();
    };
    if (written()) done();
  });
  await agent.stop('SIGKILL');
  const kept = statSync(partial).size;
  t.ok(kept > 0 && kept <= heldAt, `${kept} bytes kept in the state folder after kill -9`);

  const from = recorder.messages.length;
  const again = spawnAgent(agentArgs, { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  t.teardown(() => again.stop('SIGKILL'));
  await recorder.waitFor(() => recorder.messages.slice(from).some((m) => m.topic.endsWith('/state') && m.json?.online === true), 60_000, 'the agent online again');
  const before = server.requests.length;
  t.match(await update(release), { ok: true, status: 'downloading' }, 'the same release sent again');
  await recorder.waitFor(() => recorder.messages.slice(from).some((m) => m.json?.type === 'update.installed'), 120_000, 'update.installed');
  t.equal(server.requests[before]?.range, `bytes=${kept}-`, 'the download asked for the rest only');
  const installed = recorder.messages.slice(from).find((m) => m.topic.endsWith('/event') && m.json?.type === 'update.installed')?.json;
  t.match(installed, { version: '0.2.0', resumedFrom: kept }, 'installed from the resumed download');
  t.equal(readlinkSync(path.join(releasesDir, 'current')), '0.2.0', 'current switched');
  t.match(await again.exited, { code: 75 }, 'the agent exited with the restart status for systemd');
});
