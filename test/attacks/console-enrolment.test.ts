// Threat: anyone who can publish on a camera's topics (a stolen camera's broker credentials, a
// broker ACL too wide, a compromised bridge) impersonates a real camera to the ops console: they
// publish a retained `state` for the camera's id carrying THEIR OWN device key, and an audit chain
// they wrote and signed with that key (e.g. one hiding a live view). A console that takes the key
// from the state believes both: the forged chain shows "verified", and ICE restart offers signed
// with the attacker's key would be accepted. The console must check against the key pinned when
// the camera was enrolled, show the chain as not verified, and raise an alert.
//
// Real mosquitto, a real mqtt.js client as the attacker, the console server in-process over HTTP,
// a real chain built by the agent's AuditLog with a different device key.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import { generateIssuerKeys } from '../../src/cli/fleet-tools.ts';
import { Fleet } from '../../ops-console/fleet.ts';
import { ConsoleServer } from '../../ops-console/server.ts';
import { hashPassword, UserStore } from '../../ops-console/users.ts';
import { buildAuditChain } from '../helpers/audit-fixtures.ts';
import { startBroker } from '../helpers/mosquitto.ts';

t.test('a hostile client with its own key and a forged chain for a real camera id', async (t) => {
  const broker = await startBroker();
  const keys = await generateIssuerKeys(await mkdtemp(path.join(os.tmpdir(), 'bwc-enrol-attack-')), ['stream.start', 'stream.stop']);
  const fleet = await Fleet.connect(broker.url, `enrol-attack-${process.pid}`);
  const logs: string[] = [];
  const server = new ConsoleServer({
    fleet,
    users: new UserStore([{ user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: hashPassword('pw-1') }]),
    issuerKeyFile: keys.privateJwkFile,
    issuer: 'test-console',
    maxDurationS: 600,
    log: (line) => logs.push(line),
  });
  const base = await server.listen(0);
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: 'not-a-camera' });
  t.teardown(async () => {
    await attacker.endAsync(true);
    await server.close();
    await fleet.close();
    await broker.dispose();
  });

  // The real camera cam-0042, enrolled by a fleet admin with its own device key.
  const genuine = await buildAuditChain(3, 10);
  const link = await (server as unknown as { archive?: Promise<{ enrol(d: string, k: unknown, by: string): Promise<unknown>; archive: { alerts: { list(f?: object): Promise<{ rule: string; deviceId: string | null }[]> } } }> }).archive;
  await link?.enrol('cam-0042', genuine.key.publicJwk, 'fleet-admin-1');

  // The attacker: a chain of its own, signed with its own key, and a state carrying that key.
  const forged = await buildAuditChain(12, 5);
  t.not(forged.key.kid, genuine.key.kid);
  await attacker.publishAsync('bwc/v1/cam-0042/state', JSON.stringify({ online: true, deviceId: 'cam-0042', devicePublicKey: forged.key.publicJwk, auditHead: null, streaming: { sessions: 0, list: [] } }), { qos: 1, retain: true });
  for (const m of forged.messages) await attacker.publishAsync('bwc/v1/cam-0042/audit', JSON.stringify(m), { qos: 1 });

  const login = await fetch(new URL('/api/login', base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'sgt1', password: 'pw-1' }) });
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  // A hang guard, not a speed check: the view is read until every forged entry has arrived.
  let view: { entries: unknown[]; verification: { ok: boolean | null; summary: string } } = { entries: [], verification: { ok: null, summary: '' } };
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && view.entries.length < 12; ) {
    view = (await (await fetch(new URL('/api/audit/cam-0042', base), { headers: { cookie } })).json()) as typeof view;
    if (view.entries.length < 12) await new Promise((r) => setTimeout(r, 50));
  }
  t.equal(view.entries.length, 12, 'the forged entries reached the console (they are kept, as evidence)');
  t.not(view.verification.ok, true, `the forged chain is not shown verified (${view.verification.summary})`);
  t.match(view.verification.summary, /not signed by the enrolled device key|not the enrolled/, 'and the page says why');

  const alerts = (await link?.archive.alerts.list({ deviceId: 'cam-0042' })) ?? [];
  t.ok(alerts.some((a) => a.rule === 'untrusted_key'), `an untrusted_key alert was raised (got ${JSON.stringify(alerts.map((a) => a.rule))})`);
  t.ok(logs.some((l) => /ALERT untrusted_key cam-0042/.test(l)), 'and logged');
});
