// Threat: a console user who is not a fleet administrator uses the fleet-admin desk: a supervisor or
// a professional-standards reviewer posts a config change (turning covert streaming or the stream
// limit), revokes the key another team signs with, pushes a software update, pulls a camera's
// diagnostics or pins a device key of their choosing. The console holds a fleet-admin key (config.apply,
// trust.update, agent.update, diag.collect), so any route that signs with it for the wrong user is a
// privilege escalation onto every camera. The defence: the desk's routes are in roles.ts's routeRoles
// with ['fleet-admin'] only and are refused with 403 before anything is read or signed; the desk
// signs with its own key (--fleet-admin-key), never the everyday stream key. Real console process,
// real mosquitto, and a real MQTT client watching the camera's cmd topic: nothing reaches it.
import t from 'tap';
import mqtt from 'mqtt';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateIssuerKeys } from '../../src/cli/fleet-tools.ts';
import { startConsole } from '../helpers/console-process.ts';
import { startFakeCamera } from '../helpers/fake-camera.ts';
import { startBroker } from '../helpers/mosquitto.ts';

const deviceId = 'cam-0081';

/** Each desk route with a body that the desk would sign and send, were the user allowed. */
const deskRequests: [string, string, unknown][] = [
  ['GET', '/api/fleet/cameras', undefined],
  ['POST', '/api/fleet/config', { deviceId, patch: { commands: { maxStreamDuration: 7200 } }, base: 0 }],
  ['POST', '/api/fleet/revoke', { deviceId, kid: 'the-stream-key' }],
  ['POST', '/api/fleet/update', { deviceId, release: { version: '9.9.9', url: 'https://releases.example/b.tar.gz', sha256: '0'.repeat(64), signature: 'a.b.c' } }],
  ['POST', '/api/fleet/diag', { deviceId }],
  ['GET', '/api/fleet/diag/1', undefined],
  ['POST', '/api/fleet/enrol', { deviceId, kid: 'attacker-kid' }],
];

t.test('the fleet-admin desk serves the fleet-admin role only, and signs with its own key', async (t) => {
  const broker = await startBroker();
  const adminKeys = await generateIssuerKeys(path.join(await mkdtemp(path.join(os.tmpdir(), 'bwc-fa-')), 'admin'), ['config.apply', 'trust.update', 'diag.collect', 'agent.update']);
  const console_ = await startConsole(broker.url, [
    { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
    { user: 'psd1', operator: 'psd-0001', password: 'pw-2', roles: ['standards'] },
    { user: 'duty1', operator: 'duty-0001', password: 'pw-4', roles: ['duty-officer'] },
    { user: 'admin1', operator: 'fa-0001', password: 'pw-3', roles: ['fleet-admin'] },
  ], ['--fleet-admin-key', adminKeys.privateJwkFile]);
  const camera = await startFakeCamera(broker.url, deviceId, { config: { version: 0, digest: 'd0', pending: false, trustDigest: 't0' } });
  const watcher = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  const seen: { kid: string; act: string; sub: string }[] = [];
  watcher.on('message', (_topic, payload) => {
    const { token } = JSON.parse(payload.toString()) as { token: string };
    const [header, claims] = token.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, string>);
    seen.push({ kid: header!.kid!, act: claims!.act!, sub: claims!.sub! });
  });
  await watcher.subscribeAsync(`bwc/v1/${deviceId}/cmd`, { qos: 1 });
  t.teardown(async () => {
    await watcher.endAsync(true);
    await camera.close();
    await console_.stop();
    await broker.dispose();
  });

  for (const [user, password] of [['sgt1', 'pw-1'], ['psd1', 'pw-2'], ['duty1', 'pw-4']] as const) {
    const cookie = await console_.login(user, password);
    for (const [method, route, body] of deskRequests) {
      t.match(await console_.call(cookie, method, route, body), { status: 403, json: { error: /needs the fleet-admin role/ } }, `${user}: ${method} ${route} is refused`);
    }
  }

  // The fleet admin's request after all of the above: the first command the camera's topic carries.
  const admin = await console_.login('admin1', 'pw-3');
  const reply = await console_.call(admin, 'POST', '/api/fleet/config', { deviceId, patch: { commands: { maxStreamDuration: 600 } }, base: 0 });
  t.match(reply, { status: 200, json: { ok: true } }, 'the fleet admin applies a config patch');
  await camera.next((c) => c.act === 'config.apply', 'the config.apply');
  t.same(seen.map((s) => `${s.act} ${s.sub}`), ['config.apply fa-0001'], 'nothing was signed or published for the refused requests');
  t.equal(seen[0]!.kid, (JSON.parse(await readFile(adminKeys.privateJwkFile, 'utf8')) as { kid: string }).kid, 'signed with the fleet-admin key, not the stream key');
  t.match(await console_.call(admin, 'POST', '/api/fleet/config', { deviceId: 'cam/+', base: 0, patch: {} }), { status: 400, json: { error: /needs deviceId/ } }, 'a bad request is 400 naming what is wrong');
  t.match(await console_.waitForLog(/fa-0001 applied a config change to cam-0081/, 'the desk\'s log line'), /fa-0001/);
});

t.test('without --fleet-admin-key the desk signs nothing and says which flag is missing', async (t) => {
  const broker = await startBroker();
  const console_ = await startConsole(broker.url, [{ user: 'admin1', operator: 'fa-0001', password: 'pw-3', roles: ['fleet-admin'] }]);
  t.teardown(async () => {
    await console_.stop();
    await broker.dispose();
  });
  const admin = await console_.login('admin1', 'pw-3');
  t.match(await console_.call(admin, 'POST', '/api/fleet/config', { deviceId, patch: {}, base: 0 }), { status: 503, json: { error: /--fleet-admin-key/ } });
  t.match(await console_.call(admin, 'GET', '/api/fleet/cameras'), { status: 200 }, 'the camera list signs nothing: it is served');
});
