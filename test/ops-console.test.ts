// The ops console's server on its own, through a real mosquitto: sign-in and sessions, the rules
// every request meets (JSON only, signed in), the audit view's chain check on a genuine and on a
// tampered copy, a camera's refusal handed back with words, and ICE restarts: a camera's signed
// restart offer reaches only the page that started that view, and only that sign-in's answer is
// signed and published; and, in Chromium, the page answering a restart on its own peer connection
// (the "camera" there is a second Chromium page). The whole product flow is test/demo.test.ts.
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compactVerify, exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import mqtt from 'mqtt';
import t from 'tap';
import { generateIssuerKeys } from '../src/cli/fleet-tools.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { ConsoleServer } from '../ops-console/server.ts';
import { hashPassword, UserStore, verifyPassword } from '../ops-console/users.ts';
import { buildAuditChain, clone, entryIndex, entryOf } from './helpers/audit-fixtures.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { openCanvasCamera, signInToConsole } from './helpers/console-page.ts';
import { startBroker } from './helpers/mosquitto.ts';

t.test('passwords', async (t) => {
  const stored = hashPassword('correct horse');
  t.match(stored, /^scrypt\$16384\$8\$1\$[\w-]+\$[\w-]+$/);
  t.equal(await verifyPassword('correct horse', stored), true);
  t.equal(await verifyPassword('correct horsf', stored), false);
  t.equal(await verifyPassword('x', 'md5$abc'), false, 'an unknown scheme never verifies');
  const users = new UserStore([{ user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: stored }]);
  t.same(await users.authenticate('sgt1', 'correct horse'), { operator: 'sgt-0001', name: 'Sgt One', roles: ['supervisor'], unit: null, shift: null }, 'a user without roles is a supervisor, as every user was before roles');
  t.equal(await users.authenticate('sgt1', 'wrong'), undefined);
  t.equal(await users.authenticate('nobody', 'correct horse'), undefined);
});

t.test('users.ts add: roles, unit and shift; a bad one named', async (t) => {
  const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'bwc-users-')), 'users.json');
  const run = (args: string[]) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [fileURLToPath(new URL('../ops-console/users.ts', import.meta.url)), 'add', '--file', file, ...args], (err, out, errOut) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, out, err: errOut }));
  });
  const ok = await run(['--user', 'psd1', '--operator', 'psd-0001', '--role', 'standards', '--role', 'duty-officer', '--unit', 'north', '--shift', '07:00-19:00', '--password', 'pw']);
  t.match(ok, { code: 0, out: /user psd1 \(operator psd-0001; standards, duty-officer; unit north; shift 07:00-19:00\)/ });
  const users = UserStore.load(file);
  t.same(await users.authenticate('psd1', 'pw'), { operator: 'psd-0001', name: 'psd1', roles: ['standards', 'duty-officer'], unit: 'north', shift: '07:00-19:00' });
  t.match(await run(['--user', 'x', '--operator', 'x', '--role', 'admin', '--password', 'pw']), { code: 2, err: /roles must be a list of supervisor, duty-officer, standards, fleet-admin \(got \["admin"\]\)/ });
  t.match(await run(['--user', 'x', '--operator', 'x', '--shift', '7-19', '--password', 'pw']), { code: 2, err: /shift: a shift is HH:MM-HH:MM, e.g. 07:00-19:00 \(got "7-19"\)/ });
  await writeFile(file, JSON.stringify([{ user: 'a', operator: 'a', name: 'a', password: 'x', roles: ['root'] }]));
  t.throws(() => UserStore.load(file), /\[0\]: user "a": roles must be a list of/, 'a hand-edited users.json is checked on load');
});

t.test('the console server', async (t) => {
  const broker = await startBroker();
  const logs: string[] = [];
  const keys = await generateIssuerKeys(await mkdtemp(path.join(os.tmpdir(), 'bwc-console-keys-')), ['stream.start', 'stream.stop']);
  const fleet = await Fleet.connect(broker.url, `console-test-${process.pid}`);
  const server = new ConsoleServer({
    fleet,
    users: new UserStore([
      { user: 'sgt1', operator: 'sgt-0001', name: 'Sgt One', password: hashPassword('pw-1') },
      { user: 'sgt2', operator: 'sgt-0002', name: 'Sgt Two', password: hashPassword('pw-2') },
    ]),
    issuerKeyFile: keys.privateJwkFile,
    issuer: 'test-console',
    maxDurationS: 600,
    log: (line) => logs.push(line),
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
  const callAs = async (as: string, method: string, route: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(new URL(route, base), {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(as ? { cookie: as } : {}), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    const json = res.headers.get('content-type')?.startsWith('application/json') ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    return { status: res.status, headers: res.headers, json, text };
  };
  const call = (method: string, route: string, body?: unknown, headers: Record<string, string> = {}) => callAs(cookie, method, route, body, headers);

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
  t.same((await call('GET', '/api/me')).json, { operator: 'sgt-0001', name: 'Sgt One', roles: ['supervisor'], unit: null, shift: null });
  t.match((await call('GET', '/api/config')).json, { reasons: [{ code: 'officer-safety' }], maxDurationS: 600 });

  await t.test('audit view: a genuine chain verifies, a tampered one is named', async (t) => {
    const chain = await buildAuditChain(12, 5);
    // Enrolled: the key a fleet admin pinned is the one the chain is checked with.
    const link = await server.archive;
    for (const cam of ['cam-0042', 'cam-0043', 'cam-0044']) await link.enrol(cam, chain.key.publicJwk, 'admin-test');
    for (const m of chain.messages) await device.publishAsync('bwc/v1/cam-0042/audit', JSON.stringify(m), { qos: 1 });
    const tampered = clone(chain.messages);
    entryOf(tampered[entryIndex(tampered, 4)]!).operator = 'someone-else';
    for (const m of tampered) await device.publishAsync('bwc/v1/cam-0043/audit', JSON.stringify(m), { qos: 1 });
    await device.publishAsync('bwc/v1/cam-0044/audit', JSON.stringify(chain.messages.at(-2)), { qos: 1 });
    const view = async (id: string, entries: number) => {
      // A hang guard, not a speed check: 30 s, as a loaded machine may need (it was 100 polls of 50 ms).
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
        const r = (await call('GET', `/api/audit/${id}`)).json as { entries: unknown[]; verification: { ok: boolean | null; summary: string } };
        if (r.entries.length >= entries) return r;
        await new Promise((res) => setTimeout(res, 50));
      }
      throw new Error(`audit of ${id} never reached ${entries} entries`);
    };
    t.match((await view('cam-0042', 12)).verification, { ok: true, summary: /12 entries verified, signed to seq 12/ });
    t.match((await view('cam-0043', 12)).verification, { ok: false, summary: /entry 4 edited/ });
    t.match((await view('cam-0044', 1)).verification, { ok: null, summary: /no audit entries|asked the camera/ }, 'a copy that starts mid-chain: not yet checked (its start is asked of the camera), not "broken"');
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

  await t.test('ICE restart: the camera\'s offer to the page that started the view only, its answer signed for that sign-in only', async (t) => {
    const cam = 'cam-0050';
    const deviceKeys = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    const strangerKeys = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const devicePublicKey: JWK = { ...(await exportJWK(deviceKeys.publicKey)), kid: 'device-key-0050' };
    // Offers are checked with the key pinned at enrolment, not the one in the state.
    await (await server.archive).enrol(cam, devicePublicKey, 'admin-test');
    await device.publishAsync(`bwc/v1/${cam}/state`, JSON.stringify({ online: true, deviceId: cam, devicePublicKey, streaming: { sessions: 0, bitrateKbps: null, list: [] } }), { qos: 1, retain: true });
    await until(() => fleet.cameras.has(cam), 'the camera\'s state reaches the console');

    // The camera: accepts every stream.start (sid by operator) and collects the answers it is sent.
    const answers: { topic: string; body: { token: string; answer: string } }[] = [];
    await device.subscribeAsync([`bwc/v1/${cam}/cmd`, `bwc/v1/${cam}/stream/+/ice-answer`], { qos: 1 });
    device.on('message', (topic, payload, packet) => {
      if (topic.startsWith(`bwc/v1/${cam}/stream/`)) return void answers.push({ topic, body: JSON.parse(payload.toString()) as { token: string; answer: string } });
      if (topic !== `bwc/v1/${cam}/cmd`) return;
      const { token } = JSON.parse(payload.toString()) as { token: string };
      const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { sub: string };
      const sid = claims.sub === 'sgt-0001' ? 's-own-1' : 's-other-1';
      void device.publishAsync(packet.properties!.responseTopic!, JSON.stringify({ ok: true, sid, answer: 'v=0\r\n', endsBy: new Date(Date.now() + 120_000).toISOString() }), {
        qos: 1,
        properties: { correlationData: packet.properties!.correlationData! },
      });
    });
    const offerMessage = async (o: { sid: string; gen: number; offer?: string; key?: CryptoKey; claimSid?: string; typ?: string; sentOffer?: string }) => {
      const offer = o.offer ?? `v=0\r\no=- ${o.gen} restart ${o.sid}\r\n`;
      const token = await new SignJWT({ sid: o.claimSid ?? o.sid, gen: o.gen, cause: 'network_changed', offer_sha256: createHash('sha256').update(offer).digest('base64url') })
        .setProtectedHeader({ alg: 'EdDSA', typ: o.typ ?? 'bwc-ice-offer+jwt', kid: devicePublicKey.kid! })
        .setIssuer(cam)
        .setIssuedAt()
        .sign(o.key ?? deviceKeys.privateKey);
      return JSON.stringify({ token, offer: o.sentOffer ?? offer });
    };
    const publishOffer = async (sid: string, message: string, deviceId = cam) => device.publishAsync(`bwc/v1/${deviceId}/stream/${sid}/ice-offer`, message, { qos: 1 });

    const second = await callAs('', 'POST', '/api/login', { user: 'sgt2', password: 'pw-2' });
    const cookie2 = (second.headers.get('set-cookie') ?? '').split(';')[0]!;
    const pageA = await openEvents(base, cookie, 'page-aaaaaaaa'); // sgt1's tab that asks for the view
    const pageA2 = await openEvents(base, cookie, 'page-bbbbbbbb'); // another tab of the same sign-in
    const pageB = await openEvents(base, cookie2); // another operator's page
    t.teardown(() => [pageA, pageA2, pageB].forEach((p) => p.close()));
    t.match((await call('POST', '/api/live', { deviceId: cam, reason: 'public-safety', durationS: 120, offer: 'v=0\r\n', page: 'page-aaaaaaaa' })).json, { ok: true, sid: 's-own-1' });
    t.match((await callAs(cookie2, 'POST', '/api/live', { deviceId: cam, reason: 'public-safety', durationS: 120, offer: 'v=0\r\n' })).json, { ok: true, sid: 's-other-1' });

    await t.test('before the camera restarts, there is nothing to answer', async (t) => {
      t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 1, answer: 'v=0\r\n' }), { status: 409, json: { error: /has not restarted/ } });
    });

    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 1 }));
    const first = await pageA.next((e) => e.event === 'ice-offer');
    t.same(first.data, { deviceId: cam, sid: 's-own-1', gen: 1, cause: 'network_changed', offer: 'v=0\r\no=- 1 restart s-own-1\r\n' }, 'a camera-signed offer for its view reaches the page that started it');

    const dropped = logs.length;
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2, key: strangerKeys.privateKey }));
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2, sentOffer: 'v=0\r\no=- evil\r\n' }));
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2, typ: 'bwc-cmd+jwt' }));
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2, claimSid: 's-other-1' }));
    await publishOffer('s-nobody', await offerMessage({ sid: 's-nobody', gen: 1 }));
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2 }), 'cam-0051');
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 1 }));
    await publishOffer('s-own-1', JSON.stringify({ token: 'x' }));
    const drops = () => logs.slice(dropped).filter((l) => l.startsWith('dropped '));
    await until(() => drops().length >= 8, 'eight offers dropped');
    t.match(drops(), [
      /dropped .* s-own-1: ICE offer not signed by the camera: signature verification failed/,
      /dropped .* s-own-1: ICE offer does not match its offer_sha256/,
      /dropped .* s-own-1: ICE offer not signed by the camera: typ is not bwc-ice-offer\+jwt/,
      /dropped .* s-own-1: its token is for session "s-other-1"/,
      /dropped .* s-nobody: not a live view this console started on that camera/,
      /dropped .* from cam-0051 for s-own-1: not a live view this console started on that camera/,
      /dropped .* s-own-1: generation 1 is not newer than 1/,
      /dropped .* s-own-1: an ICE offer message is/,
    ], 'a bad signature, a changed offer, a command token, another session\'s token, an unknown sid, another camera, a repeat, junk: logged and dropped');

    await publishOffer('s-other-1', await offerMessage({ sid: 's-other-1', gen: 1 }));
    await publishOffer('s-own-1', await offerMessage({ sid: 's-own-1', gen: 2 }));
    await pageA.next((e) => e.event === 'ice-offer' && e.data.gen === 2);
    // A state sent to every page after all of the above: each page has had everything meant for it.
    await device.publishAsync('bwc/v1/cam-0052/state', JSON.stringify({ online: true, deviceId: 'cam-0052' }), { qos: 1 });
    for (const p of [pageA, pageA2, pageB]) await p.next((e) => e.event === 'camera' && e.data.deviceId === 'cam-0052');
    const offers = (p: typeof pageA) => p.events.filter((e) => e.event === 'ice-offer').map((e) => `${e.data.sid}#${e.data.gen}`);
    t.same(offers(pageA), ['s-own-1#1', 's-own-1#2'], 'the starting page: its own view\'s genuine offers, once each');
    t.same(offers(pageA2), [], 'another tab of the same sign-in: none');
    t.same(offers(pageB), ['s-other-1#1'], 'another operator: only the offer of the view it started');

    const answer = 'v=0\r\no=- 4242 3 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 AB:CD\r\n';
    t.match(await callAs(cookie2, 'POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 2, answer }), { status: 403, json: { error: 'this live view was not started by this sign-in' } }, 'another operator cannot answer for it');
    t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-other-1', gen: 1, answer }), { status: 403 }, 'nor can this operator answer for the other\'s view');
    t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-nobody', gen: 1, answer }), { status: 403 }, 'an unknown sid gets the same answer');
    t.match(await call('POST', '/api/live/ice', { deviceId: 'cam-0051', sid: 's-own-1', gen: 2, answer }), { status: 403 }, 'its sid on another camera');
    t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 1, answer }), { status: 409, json: { error: /generation 1 is not the camera's open restart \(2\)/ } }, 'an overtaken restart');
    t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: '2', answer }), { status: 400, json: { error: /needs deviceId, sid, gen/ } });
    t.match(await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 2 }), { status: 400 });
    t.equal((await call('POST', '/api/live/ice', 'deviceId=cam-0050', { 'content-type': 'application/x-www-form-urlencoded' })).status, 415, 'JSON only');
    t.equal((await callAs('', 'POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 2, answer })).status, 401, 'signed in only');
    t.same((await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 2, answer })).json, { ok: true });
    t.same((await callAs(cookie2, 'POST', '/api/live/ice', { deviceId: cam, sid: 's-other-1', gen: 1, answer: 'v=0\r\n' })).json, { ok: true });
    await until(() => answers.length >= 2, 'the camera receives the answers');
    t.same(answers.map((a) => a.topic), [`bwc/v1/${cam}/stream/s-own-1/ice-answer`, `bwc/v1/${cam}/stream/s-other-1/ice-answer`], 'only the two accepted answers were published');
    t.equal(answers[0]!.body.answer, answer, 'the answer travels with its token');

    const trust = JSON.parse(await readFile(keys.trustStoreFile, 'utf8')) as { keys: JWK[] };
    const verified = await compactVerify(answers[0]!.body.token, await importJWK(trust.keys[0]!, 'EdDSA'), { algorithms: ['EdDSA'] });
    t.match(verified.protectedHeader, { alg: 'EdDSA', typ: 'bwc-ice+jwt', kid: keys.kid });
    const claims = JSON.parse(Buffer.from(verified.payload).toString()) as Record<string, unknown>;
    t.match(claims, { aud: cam, sid: 's-own-1', gen: 2, answer_sha256: createHash('sha256').update(answer).digest('base64url'), sub: 'sgt-0001', iss: 'test-console', jti: String, iat: Number, exp: Number }, 'the token verifies with the issuer key and binds device, session, restart, answer and operator');
    t.equal(JSON.parse(Buffer.from(answers[1]!.body.token.split('.')[1]!, 'base64url').toString()).sub, 'sgt-0002');

    // Signing out ends what the sign-in owned: its pages' streams, and the right to answer.
    t.equal((await call('POST', '/api/logout', {})).status, 204);
    await pageA.ended;
    await pageA2.ended;
    t.pass('the signed-out sign-in\'s event streams are closed');
    const again = await callAs('', 'POST', '/api/login', { user: 'sgt1', password: 'pw-1' });
    cookie = (again.headers.get('set-cookie') ?? '').split(';')[0]!;
    t.equal((await call('POST', '/api/live/ice', { deviceId: cam, sid: 's-own-1', gen: 2, answer })).status, 403, 'a new sign-in of the same operator does not inherit the view');
  });

  t.equal((await call('POST', '/api/logout', {})).status, 204);
  t.equal((await call('GET', '/api/me')).status, 401, 'signed out again');
});

async function until(check: () => boolean, what: string): Promise<void> {
  // A hang guard, not a speed check (it was 400 polls of 25 ms: 10 s, short on a loaded machine).
  for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
    if (check()) return;
    await new Promise((res) => setTimeout(res, 25));
  }
  if (check()) return;
  throw new Error(`never happened within 30 s: ${what}`);
}

interface ConsoleEvent {
  event: string;
  data: Record<string, unknown>;
}

/** A page's Server-Sent Events stream, read as it arrives. */
async function openEvents(base: string, cookie: string, page?: string) {
  const abort = new AbortController();
  const res = await fetch(new URL(`/api/events${page ? `?page=${page}` : ''}`, base), { headers: { cookie }, signal: abort.signal });
  if (res.status !== 200 || !res.body) throw new Error(`/api/events answered ${res.status}`);
  const events: ConsoleEvent[] = [];
  const ended = (async () => {
    let buffer = '';
    try {
      const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
      for (let r = await reader.read(); !r.done; r = await reader.read()) {
        buffer += r.value;
        for (let i = buffer.indexOf('\n\n'); i >= 0; i = buffer.indexOf('\n\n')) {
          const lines = buffer.slice(0, i).split('\n');
          buffer = buffer.slice(i + 2);
          const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
          const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
          events.push({ event, data: JSON.parse(data) as Record<string, unknown> });
        }
      }
    } catch {
      // aborted
    }
  })();
  return {
    events,
    ended,
    async next(match: (e: ConsoleEvent) => boolean): Promise<ConsoleEvent> {
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
        const found = events.find(match);
        if (found) return found;
        await new Promise((r) => setTimeout(r, 25));
      }
      const found = events.find(match);
      if (found) return found;
      throw new Error(`no such event within 30 s; got ${JSON.stringify(events.map((e) => e.event))}`);
    },
    close: () => abort.abort(),
  };
}

t.test('in Chromium: the page answers a camera\'s ICE restart on the same connection and says so', async (t) => {
  const cam = 'cam-0060';
  const broker = await startBroker();
  const keys = await generateIssuerKeys(await mkdtemp(path.join(os.tmpdir(), 'bwc-console-keys-')), ['stream.start', 'stream.stop']);
  const fleet = await Fleet.connect(broker.url, `console-test-chromium-${process.pid}`);
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
  const device = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  // Two Chromium pages talking to each other: real loopback addresses rather than mDNS names.
  const viewers = await ChromiumViewers.launch(['--disable-features=WebRtcHideLocalIpsWithMdns']);
  t.teardown(async () => {
    await viewers.close();
    await device.endAsync(true);
    await server.close();
    await fleet.close();
    await broker.dispose();
  });

  // The camera's WebRTC side: a Chromium page sending a canvas, answering and then offering.
  const camera = await openCanvasCamera(viewers);
  await camera.evaluate(() => {
    // No trickle: every candidate in the one SDP.
    // (After an ICE restart's setLocalDescription the state may still say "complete" from before.)
    (globalThis as unknown as { gathered: (pc: RTCPeerConnection) => Promise<void> }).gathered = (pc) => new Promise<void>((resolve) => {
      const check = () => pc.iceGatheringState === 'complete' && /\r\na=candidate:/.test(pc.localDescription?.sdp ?? '') && resolve();
      pc.addEventListener('icegatheringstatechange', check);
      pc.addEventListener('icecandidate', check);
      check();
    });
  });
  type CameraPage = { pc: RTCPeerConnection; track: MediaStreamTrack; gathered: (pc: RTCPeerConnection) => Promise<void> };
  const cameraAnswers = (offer: string) => camera.evaluate(async (offer) => {
    const g = globalThis as unknown as CameraPage;
    const pc = (g.pc = new RTCPeerConnection());
    await pc.setRemoteDescription({ type: 'offer', sdp: offer });
    const transceiver = pc.getTransceivers()[0]!;
    transceiver.direction = 'sendonly';
    await transceiver.sender.replaceTrack(g.track);
    await pc.setLocalDescription(await pc.createAnswer());
    await g.gathered(pc);
    return pc.localDescription!.sdp;
  }, offer);
  const cameraRestarts = () => camera.evaluate(async () => {
    const g = globalThis as unknown as CameraPage;
    await g.pc.setLocalDescription(await g.pc.createOffer({ iceRestart: true }));
    await g.gathered(g.pc);
    return g.pc.localDescription!.sdp;
  });

  const deviceKeys = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const devicePublicKey: JWK = { ...(await exportJWK(deviceKeys.publicKey)), kid: 'device-key-0060' };
  await (await server.archive).enrol(cam, devicePublicKey, 'admin-test');
  const sid = 's-chromium-1';
  const state = (list: unknown[]) => JSON.stringify({
    online: true, deviceId: cam, devicePublicKey,
    commandPolicy: { reasons: ['public-safety'], maxStreamDurationS: 600, maxConcurrentStreams: 2 },
    streaming: { sessions: list.length, bitrateKbps: null, list },
  });
  await device.publishAsync(`bwc/v1/${cam}/state`, state([]), { qos: 1, retain: true });
  let viewerOffer = '';
  const answers: { token: string; answer: string }[] = [];
  await device.subscribeAsync([`bwc/v1/${cam}/cmd`, `bwc/v1/${cam}/stream/+/ice-answer`], { qos: 1 });
  device.on('message', (topic, payload, packet) => {
    if (topic === `bwc/v1/${cam}/stream/${sid}/ice-answer`) return void answers.push(JSON.parse(payload.toString()) as { token: string; answer: string });
    if (topic !== `bwc/v1/${cam}/cmd`) return;
    viewerOffer = (JSON.parse(payload.toString()) as { offer: string }).offer;
    void cameraAnswers(viewerOffer).then(async (answer) => {
      const endsBy = new Date(Date.now() + 300_000).toISOString();
      await device.publishAsync(packet.properties!.responseTopic!, JSON.stringify({ ok: true, sid, answer, endsBy }), { qos: 1, properties: { correlationData: packet.properties!.correlationData! } });
      await device.publishAsync(`bwc/v1/${cam}/state`, state([{ sid, operator: 'sgt-0001', reason: 'public-safety', state: 'connected', startedAt: new Date().toISOString(), endsBy, covert: false }]), { qos: 1, retain: true });
    });
  });

  const { page } = await signInToConsole(viewers, { base, user: 'sgt1', password: 'pw-1', camera: cam, timeoutMs: 20_000 });
  await page.getByTestId(`camera-${cam}`).getByRole('button').click();
  await page.getByTestId('reason-select').selectOption('public-safety');
  await page.getByTestId('request-live').click();
  const playedPast = (t0: number) => page.waitForFunction((t0) => (document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')?.currentTime ?? 0) > t0, t0);
  await playedPast(0.3);
  t.pass('the live view plays');
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="live-status"]')!;
    const seen: string[] = ((globalThis as unknown as { statusSeen: string[] }).statusSeen = []);
    new MutationObserver(() => seen.push(el.textContent ?? '')).observe(el, { childList: true, characterData: true, subtree: true });
  });

  const restartOffer = await cameraRestarts();
  const token = await new SignJWT({ sid, gen: 1, cause: 'network_changed', offer_sha256: createHash('sha256').update(restartOffer).digest('base64url') })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'bwc-ice-offer+jwt', kid: devicePublicKey.kid! })
    .setIssuer(cam)
    .setIssuedAt()
    .sign(deviceKeys.privateKey);
  await device.publishAsync(`bwc/v1/${cam}/stream/${sid}/ice-offer`, JSON.stringify({ token, offer: restartOffer }), { qos: 1 });
  await until(() => answers.length > 0, 'the page\'s answer reaches the camera');
  const { answer } = answers[0]!;
  const trust = JSON.parse(await readFile(keys.trustStoreFile, 'utf8')) as { keys: JWK[] };
  const claims = JSON.parse(Buffer.from((await compactVerify(answers[0]!.token, await importJWK(trust.keys[0]!, 'EdDSA'))).payload).toString()) as Record<string, unknown>;
  t.match(claims, { aud: cam, sid, gen: 1, sub: 'sgt-0001', answer_sha256: createHash('sha256').update(answer).digest('base64url') }, 'the answer is signed for the signed-in operator');
  const line = (sdp: string, name: string) => sdp.split('\r\n').find((l) => l.startsWith(`a=${name}:`));
  t.equal(line(answer, 'fingerprint'), line(viewerOffer, 'fingerprint'), 'the same DTLS fingerprint as the page\'s first offer (what the camera checks)');
  t.not(line(answer, 'ice-ufrag'), line(viewerOffer, 'ice-ufrag'), 'new ICE credentials: ICE restarted');
  t.match(answer, /a=candidate:/, 'with its candidates (no trickle)');

  await camera.evaluate(async (sdp) => (globalThis as unknown as { pc: RTCPeerConnection }).pc.setRemoteDescription({ type: 'answer', sdp }), answer);
  await page.getByTestId('live-status').filter({ hasText: `Live view of ${cam} reconnected (${sid}).` }).waitFor();
  const seen = await page.evaluate(() => (globalThis as unknown as { statusSeen: string[] }).statusSeen);
  t.ok(seen.includes('Camera changed network — reconnecting…'), `the page said it was reconnecting (${JSON.stringify(seen)})`);
  const time = await page.getByTestId('live-video').evaluate((v: HTMLVideoElement) => v.currentTime);
  await playedPast(time + 0.5);
  t.pass('and the picture carries on');
  t.equal(await camera.evaluate(() => (globalThis as unknown as { pc: RTCPeerConnection }).pc.connectionState), 'connected');
  t.match(logs, [/asked cam-0060 for a live view/, /restarted ICE for s-chromium-1 \(generation 1, network_changed\): sent to sgt-0001's page/, /sgt-0001 answered cam-0060's ICE restart/]);
});
