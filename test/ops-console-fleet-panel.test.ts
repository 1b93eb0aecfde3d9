// The console's Fleet panel end to end: the real agent process on a real mosquitto, the real
// console (ConsoleServer with its fleet-admin key, its archive, its Fleet), and a fleet admin in
// headless Chromium. The admin sees the camera's row (agent version, config version and digest,
// enrolment), confirms its first-seen device key with one click (pinned in the archive, logged with
// who and when), applies a config patch (the camera's state.config.version rises), revokes the
// console's everyday key (its next command is refused revoked_key), collects diagnostics (size and
// SHA-256 shown, the reassembled bundle downloads with that digest) and watches an update's
// progress from the camera's update.* events. A supervisor's page has no Fleet panel.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import { signCommand } from '../src/cli/fleet-tools.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { ConsoleServer } from '../ops-console/server.ts';
import { hashPassword, UserStore } from '../ops-console/users.ts';
import { runCli, tempStateDir } from './helpers/agent-process.ts';
import { startAgentOnBroker } from './helpers/agent-on-broker.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { signInToConsole } from './helpers/console-page.ts';

const cam = 'cam-panel';
const other = 'cam-updating';

t.test('a fleet admin runs the Fleet panel against the real agent', async (t) => {
  const keys = await mkdtemp(path.join(os.tmpdir(), 'bwc-panel-keys-'));
  const admin = path.join(keys, 'admin');
  const stream = path.join(keys, 'stream');
  t.equal((await runCli(['keys', 'generate', '--out', admin, '--actions', 'config.apply,trust.update,diag.collect,agent.update'])).code, 0);
  t.equal((await runCli(['keys', 'generate', '--out', stream, '--actions', 'stream.start,stream.stop,record.start,record.stop'])).code, 0);
  const jwks = async (dir: string) => (JSON.parse(await readFile(path.join(dir, 'trust.jwks.json'), 'utf8')) as { keys: { kid: string }[] }).keys;
  const streamKeys = await jwks(stream);
  const stateDir = await tempStateDir();
  const trustStore = path.join(stateDir, 'trust.jwks.json');
  await writeFile(trustStore, JSON.stringify({ keys: [...(await jwks(admin)), ...streamKeys] }));
  const rig = await startAgentOnBroker(t, { deviceId: cam, stateDir, config: { commands: { trustStore } } });

  const fleet = await Fleet.connect(rig.broker.url, `console-panel-${process.pid}`);
  const users = new UserStore([
    { user: 'admin1', operator: 'fa-0001', name: 'Admin One', password: hashPassword('pw-1'), roles: ['fleet-admin'] },
    { user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: hashPassword('pw-2'), roles: ['supervisor'] },
  ]);
  const logs: string[] = [];
  const server = new ConsoleServer({
    fleet, users, issuerKeyFile: path.join(stream, 'issuer.private.jwk.json'), issuer: 'test-console', maxDurationS: 600,
    log: (l) => logs.push(l), fleetAdminKeyFile: path.join(admin, 'issuer.private.jwk.json'),
  });
  const base = await server.listen(0);
  const device = await mqtt.connectAsync(rig.broker.url, { protocolVersion: 5 });
  const viewers = await ChromiumViewers.launch();
  t.teardown(async () => {
    await viewers.close();
    await device.endAsync(true);
    await server.close();
    await fleet.close();
  });

  const signIn = (user: string, password: string) => signInToConsole(viewers, { base, user, password, camera: cam, timeoutMs: 30_000 });

  const { page, errors } = await signIn('admin1', 'pw-1');
  const row = (id: string) => page.getByTestId(`fleet-row-${id}`);
  await row(cam).waitFor();
  t.match(await page.getByTestId(`fleet-agent-${cam}`).textContent(), /^\d+\.\d+\.\d+/, 'the row shows the agent version');
  await page.locator(`[data-testid="fleet-config-${cam}"]`, { hasText: 'v0' }).waitFor();
  t.pass('and its config version');
  t.equal(await page.getByTestId(`fleet-enrolment-${cam}`).getAttribute('data-state'), 'not-enrolled', 'the camera is not enrolled yet');

  // Enrolment: one click pins the first-seen key, and the console logs who and when.
  const kid = await page.getByTestId(`fleet-enrol-${cam}`).getAttribute('data-kid');
  await page.getByTestId(`fleet-enrol-${cam}`).click();
  await page.locator(`[data-testid="fleet-enrolment-${cam}"][data-state="enrolled"]`).waitFor();
  t.ok(logs.some((l) => new RegExp(`fa-0001 enrolled ${cam} with its first-seen device key ${kid} at \\d{4}-`).test(l)), 'the enrolment is logged with who and when');
  t.equal((await server.archive).pinnedKey(cam) !== undefined, true, 'the key is pinned in the archive');

  // A config patch: the camera's state.config.version rises to 1.
  await page.getByTestId('fleet-device').selectOption(cam);
  await page.getByTestId('fleet-patch').fill('{"commands": {"maxStreamDuration": 600}}');
  await page.getByTestId('fleet-base').fill('0');
  await page.getByTestId('fleet-apply').click();
  await page.locator('[data-testid="fleet-result"]', { hasText: 'now runs config version 1' }).waitFor();
  await page.locator(`[data-testid="fleet-config-${cam}"]`, { hasText: 'v1' }).waitFor();
  t.equal((fleet.cameras.get(cam)!.state.config as { version: number }).version, 1, "the camera's own state says version 1");

  // Revoking the console's stream key: the camera refuses that key's next command.
  await page.getByTestId('fleet-kid').fill(streamKeys[0]!.kid);
  await page.getByTestId('fleet-revoke').click();
  await page.locator('[data-testid="fleet-result"]', { hasText: `revoked key ${streamKeys[0]!.kid}` }).waitFor();
  const token = await signCommand({ keyFile: path.join(stream, 'issuer.private.jwk.json'), device: cam, action: 'record.stop', reason: 'officer-safety' });
  t.equal((await fleet.request(cam, { token })).code, 'revoked_key', "the revoked key's next command is refused");

  // Diagnostics: size and digest shown, the bundle downloads with that digest.
  await page.getByTestId('fleet-diag').click();
  await page.locator('[data-testid="fleet-result"]:not(:text("Sending"))').waitFor();
  t.match(await page.getByTestId('fleet-result').textContent(), /Diagnostics of cam-panel collected/, 'the panel says the diagnostics were collected');
  await page.getByTestId('fleet-diag-sha256').waitFor();
  const shown = (await page.getByTestId('fleet-diag-sha256').textContent())!;
  const href = (await page.getByTestId('fleet-diag-download').getAttribute('href'))!;
  const downloaded = await page.evaluate(async (u) => Array.from(new Uint8Array(await (await fetch(u)).arrayBuffer())), href);
  t.equal(createHash('sha256').update(Buffer.from(downloaded)).digest('hex'), shown, 'the downloaded bundle has the SHA-256 shown');
  t.match(JSON.parse(Buffer.from(downloaded).toString('utf8')), { config: { version: 1 } }, 'it is the camera\'s bundle, with the new config version');

  // An update through the panel reaches the real agent, signed with the desk's key: this camera
  // has no update.releaseKeys, so it answers updates_disabled, and the panel says so.
  const releaseDir = path.join(keys, 'release');
  t.equal((await runCli(['release', 'keygen', '--out', releaseDir])).code, 0);
  const bundle = path.join(keys, 'bwc-agent-9.0.0-linux-x64.tar.gz');
  await writeFile(bundle, 'not really a bundle');
  const signed = await runCli(['release', 'sign', '--key', path.join(releaseDir, 'release-key.private.jwk.json'), '--bundle', bundle, '--url', 'https://releases.example/b.tar.gz']);
  t.equal(signed.code, 0, 'release sign');
  await page.getByTestId('fleet-release').fill(signed.stdout);
  await page.getByTestId('fleet-update').click();
  await page.locator('[data-testid="fleet-result"]', { hasText: 'updates_disabled' }).waitFor();
  t.match(await page.getByTestId('fleet-result').textContent(), /Refused by cam-panel: updates_disabled/, "the camera's refusal is shown");
  t.ok(logs.some((l) => /fa-0001 sent cam-panel an update to 9\.0\.0: updates_disabled/.test(l)), 'and logged with who asked');

  // An update's progress: the camera's update.* events show in its row.
  await device.publishAsync(`bwc/v1/${other}/state`, JSON.stringify({ online: true, deviceId: other, agentVersion: '0.1.0' }), { qos: 1, retain: true });
  await row(other).waitFor();
  for (const type of ['update.downloading', 'update.installed']) {
    await device.publishAsync(`bwc/v1/${other}/event`, JSON.stringify({ type, time: new Date().toISOString(), version: '0.2.0' }), { qos: 1 });
  }
  await page.locator(`[data-testid="fleet-update-${other}"]`, { hasText: 'installed 0.2.0' }).waitFor();
  t.match(await page.getByTestId(`fleet-update-${other}`).textContent(), /downloading → installed/, 'the steps so far are shown');
  t.same(errors, [], 'no page errors');

  const sgt = await signIn('sgt1', 'pw-2');
  t.equal(await sgt.page.getByTestId('fleet-card').isHidden(), true, 'a supervisor has no Fleet panel');
});
