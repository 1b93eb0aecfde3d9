// The ops console's fleet-admin desk (ops-console/fleet-admin.ts) against the real agent process
// and a real mosquitto, through the console's own Fleet (ops-console/fleet.ts): the camera's
// config version and digest as the desk lists them, a config change, a revoked key; the desk signs
// with its own fleet-admin key, made by `bwc-agent keys generate` as a force would.
import t from 'tap';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runCli, tempStateDir } from './helpers/agent-process.ts';
import { startAgentOnBroker } from './helpers/agent-on-broker.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { FleetAdminDesk } from '../ops-console/fleet-admin.ts';
import { signCommand } from '../src/cli/fleet-tools.ts';

const deviceId = 'cam-desk';

t.test('fleet-admin desk: config version and digest, a config change, a revoked key', async (t) => {
  const keys = await mkdtemp(path.join(os.tmpdir(), 'bwc-desk-keys-'));
  const admin = path.join(keys, 'admin');
  const console1 = path.join(keys, 'console');
  t.equal((await runCli(['keys', 'generate', '--out', admin, '--actions', 'config.apply,trust.update,diag.collect'])).code, 0);
  t.equal((await runCli(['keys', 'generate', '--out', console1, '--actions', 'record.start,record.stop'])).code, 0);
  const jwks = async (dir: string) => (JSON.parse(await readFile(path.join(dir, 'trust.jwks.json'), 'utf8')) as { keys: { kid: string }[] }).keys;
  const adminKeys = await jwks(admin);
  const consoleKeys = await jwks(console1);
  const stateDir = await tempStateDir();
  const trustStore = path.join(stateDir, 'trust.jwks.json');
  await writeFile(trustStore, JSON.stringify({ keys: [...adminKeys, ...consoleKeys] }));
  const rig = await startAgentOnBroker(t, { deviceId, stateDir, config: { commands: { trustStore } } });
  const fleet = await Fleet.connect(rig.broker.url, 'console-desk-test');
  t.teardown(() => fleet.close());
  const lines: string[] = [];
  const desk = new FleetAdminDesk({ fleet, keyFile: path.join(admin, 'issuer.private.jwk.json'), log: (l) => lines.push(l) });
  const row = () => desk.cameras().find((c) => c.deviceId === deviceId);
  const waitRow = (pred: (r: NonNullable<ReturnType<typeof row>>) => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        const r = row();
        if (r && pred(r)) {
          clearTimeout(timer);
          fleet.off('camera', check);
          resolve();
        }
      };
      const timer = setTimeout(() => reject(new Error(`desk never showed ${what}: ${JSON.stringify(row())}`)), 30_000);
      fleet.on('camera', check);
      check();
    });

  await waitRow((r) => r.online && r.config?.version === 0, 'version 0');
  const before = row()!.config!;

  const reply = await desk.handle('POST /api/fleet/config', 'admin-jo', { deviceId, patch: { commands: { maxStreamDuration: 600 } }, base: 0 });
  t.match(reply, { ok: true, applied: 'live', version: 1 });
  await waitRow((r) => r.config?.version === 1, 'version 1');
  t.not(row()!.config!.digest, before.digest, 'the digest changed with the settings');
  const stale = await desk.applyConfig('admin-jo', { deviceId, patch: { commands: { maxStreamDuration: 900 } }, base: 0 });
  t.equal(stale.code, 'config_conflict', 'a patch on an old version is refused');
  await t.rejects(desk.applyConfig('admin-jo', { deviceId }), { name: 'FleetAdminError', message: /needs deviceId and either document/ }, 'a request without a change is refused by the desk');

  const consoleKid = consoleKeys[0]!.kid;
  const revoked = await desk.handle('POST /api/fleet/revoke', 'admin-jo', { deviceId, kid: consoleKid });
  t.match(revoked, { ok: true });
  await waitRow((r) => r.config?.trustDigest !== before.trustDigest, 'the new trust digest');
  const token = await signCommand({ keyFile: path.join(console1, 'issuer.private.jwk.json'), device: deviceId, action: 'record.stop', reason: 'officer-safety' });
  t.equal((await fleet.request(deviceId, { token })).code, 'revoked_key', "the revoked key's next command is refused");
  t.ok(lines.some((l) => /admin-jo revoked key/.test(l)) && lines.some((l) => /admin-jo applied a config change/.test(l)), 'the desk logs who did what');
});
