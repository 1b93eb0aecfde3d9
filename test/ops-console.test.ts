// The ops console's server on its own, through a real mosquitto: sign-in and sessions, the rules
// every request meets (JSON only, signed in), the audit view's chain check on a genuine and on a
// tampered copy, and a camera's refusal handed back with words. The whole product flow in
// Chromium is test/demo.test.ts.
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import t from 'tap';
import { generateIssuerKeys } from '../src/cli/fleet-tools.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { ConsoleServer } from '../ops-console/server.ts';
import { hashPassword, UserStore, verifyPassword } from '../ops-console/users.ts';
import { buildAuditChain, clone, entryIndex, entryOf } from './helpers/audit-fixtures.ts';
import { startBroker } from './helpers/mosquitto.ts';

t.test('passwords', async (t) => {
  const stored = hashPassword('correct horse');
  t.match(stored, /^scrypt\$16384\$8\$1\$[\w-]+\$[\w-]+$/);
  t.ok(verifyPassword('correct horse', stored));
  t.notOk(verifyPassword('correct horsf', stored));
  t.notOk(verifyPassword('x', 'md5$abc'), 'an unknown scheme never verifies');
  const users = new UserStore([{ user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: stored }]);
  t.same(users.authenticate('sgt1', 'correct horse'), { operator: 'sgt-0001', name: 'Sgt One' });
  t.equal(users.authenticate('sgt1', 'wrong'), undefined);
  t.equal(users.authenticate('nobody', 'correct horse'), undefined);
});

t.test('the console server', async (t) => {
  const broker = await startBroker();
  const keys = await generateIssuerKeys(await mkdtemp(path.join(os.tmpdir(), 'bwc-console-keys-')), ['stream.start', 'stream.stop']);
  const fleet = await Fleet.connect(broker.url, `console-test-${process.pid}`);
  const server = new ConsoleServer({
    fleet,
    users: new UserStore([{ user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: hashPassword('pw-1') }]),
    issuerKeyFile: keys.privateJwkFile,
    issuer: 'test-console',
    maxDurationS: 600,
  });
  const base = await server.listen(0);
  const device = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  t.teardown(async () => {
    await device.endAsync(true);
    await server.close();
    await fleet.close();
    await broker.dispose();
  });
  let cookie = '';
  const call = async (method: string, route: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(new URL(route, base), {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(cookie ? { cookie } : {}), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    const json = res.headers.get('content-type')?.startsWith('application/json') ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    return { status: res.status, headers: res.headers, json, text };
  };

  t.equal((await call('GET', '/api/me')).status, 401, 'signed out: 401');
  t.equal((await call('GET', '/api/audit/cam-0042')).status, 401, 'no data while signed out');
  const page = await call('GET', '/');
  t.equal(page.status, 200, 'the page is served');
  t.match(page.headers.get('content-security-policy'), /default-src 'self'/);
  t.equal((await call('GET', '/../server.ts')).status, 404, 'nothing outside public/');
  t.match(await call('POST', '/api/login', { user: 'sgt1', password: 'nope' }), { status: 401, json: { error: 'wrong user name or password' } });
  t.equal((await call('POST', '/api/login', 'user=sgt1&password=pw-1', { 'content-type': 'application/x-www-form-urlencoded' })).status, 415, 'a form post (what another site could make a browser send) is refused');
  const login = await call('POST', '/api/login', { user: 'sgt1', password: 'pw-1' });
  t.equal(login.status, 200);
  const setCookie = login.headers.get('set-cookie') ?? '';
  t.match(setCookie, /HttpOnly; SameSite=Strict/);
  cookie = setCookie.split(';')[0]!;
  t.same((await call('GET', '/api/me')).json, { operator: 'sgt-0001', name: 'Sgt One' });
  t.match((await call('GET', '/api/config')).json, { reasons: [{ code: 'officer-safety' }], maxDurationS: 600 });

  await t.test('audit view: a genuine chain verifies, a tampered one is named', async (t) => {
    const chain = await buildAuditChain(12, 5);
    for (const m of chain.messages) await device.publishAsync('bwc/v1/cam-0042/audit', JSON.stringify(m), { qos: 1 });
    const tampered = clone(chain.messages);
    entryOf(tampered[entryIndex(tampered, 4)]!).operator = 'someone-else';
    for (const m of tampered) await device.publishAsync('bwc/v1/cam-0043/audit', JSON.stringify(m), { qos: 1 });
    await device.publishAsync('bwc/v1/cam-0044/audit', JSON.stringify(chain.messages.at(-2)), { qos: 1 });
    const view = async (id: string, entries: number) => {
      for (let i = 0; i < 100; i++) {
        const r = (await call('GET', `/api/audit/${id}`)).json as { entries: unknown[]; verification: { ok: boolean | null; summary: string } };
        if (r.entries.length >= entries) return r;
        await new Promise((res) => setTimeout(res, 50));
      }
      throw new Error(`audit of ${id} never reached ${entries} entries`);
    };
    t.match((await view('cam-0042', 12)).verification, { ok: true, summary: /12 entries, 3 signed checkpoint/ });
    t.match((await view('cam-0043', 12)).verification, { ok: false, summary: /entry 4 edited/ });
    t.match((await view('cam-0044', 1)).verification, { ok: null, summary: /joined later/ }, 'a copy that starts mid-chain: not checkable, not "broken"');
    t.match((await view('cam-none', 0)).verification, { ok: null });
  });

  await t.test('a live view request: signed with the operator, the camera\'s refusal in words', async (t) => {
    const seen: { token: string; offer?: string }[] = [];
    await device.subscribeAsync('bwc/v1/cam-0042/cmd', { qos: 1 });
    device.on('message', (topic, payload, packet) => {
      if (topic !== 'bwc/v1/cam-0042/cmd') return;
      seen.push(JSON.parse(payload.toString()) as { token: string; offer?: string });
      void device.publishAsync(packet.properties!.responseTopic!, JSON.stringify({ ok: false, code: 'reason_not_allowed', message: 'reason "x" is not one of the allowed' }), {
        qos: 1,
        properties: { correlationData: packet.properties!.correlationData! },
      });
    });
    const reply = await call('POST', '/api/live', { deviceId: 'cam-0042', reason: 'training-exercise', durationS: 120, offer: 'v=0\r\n' });
    t.match(reply.json, { ok: false, code: 'reason_not_allowed', words: 'that reason is not allowed on this camera' });
    const claims = JSON.parse(Buffer.from(seen[0]!.token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    t.match(claims, { sub: 'sgt-0001', iss: 'test-console', aud: 'cam-0042', act: 'stream.start', reason: 'training-exercise', max_s: 120 }, 'the token names the signed-in operator');
    t.equal(seen[0]!.offer, 'v=0\r\n', 'the offer travels with the token');
    t.equal((await call('POST', '/api/live', { deviceId: 'cam-0042', reason: 'x', durationS: 99_999, offer: 'v=0' })).status, 400, 'a duration over the console\'s limit');
    t.match((await call('POST', '/api/live', { deviceId: 'cam-0042' })).json, { error: /needs deviceId, reason and offer/ });
  });

  t.equal((await call('POST', '/api/logout', {})).status, 204);
  t.equal((await call('GET', '/api/me')).status, 401, 'signed out again');
});
