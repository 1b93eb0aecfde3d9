// The live view's policy without sockets: the manager driven with stand-in sessions (the real
// StreamSession is exercised against Chromium in stream-e2e.test.ts), real authorised commands
// from the real verifier, and a real audit log on a real SQLite database.
// The stand-ins are in helpers/stream-rig.ts; ICE restarts are tested in ice-restart.test.ts, the bitrate loop in bitrate.test.ts.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { AuthorisedCommand } from '../src/command/authorised-command.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { IceTopics } from '../src/link/ice-topics.ts';
import { RequestChannel } from '../src/link/request-channel.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { SignedTokenVerifier } from '../src/command/signed-token.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { CommandVerifier } from '../src/command/verifier.ts';
import { streamConfigSchema } from '../src/stream/config.ts';
import { IceSignalling, type IceAnswer } from '../src/stream/ice-signalling.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { NetworkWatcher, type NetworkChange } from '../src/net/network-watcher.ts';
import { signIceAnswer, verifyIceOffer } from '../src/cli/fleet-tools.ts';
import { hostAddresses, IceConfigError, resolveIce } from '../src/stream/ice.ts';
import { inspectOffer, OfferError } from '../src/stream/offer.ts';
import { StreamSession } from '../src/stream/session.ts';
import { StreamManager } from '../src/stream/stream-manager.ts';
import { newSessionId } from '../src/stream/session-id.ts';
import { openDatabase } from '../src/store/database.ts';
import { makeCommand, makeIssuer, sdpOffer, signToken, testPolicy, trustStoreJwks } from './helpers/command-tokens.ts';
import { answerSdp, authorised, deviceId, FakeSession, h264Frame, logger, rig, rtp, until } from './helpers/stream-rig.ts';


t.test('a session: valve, keyframes, wearer, state, audit; stream.stop ends it', async (t) => {
  // The valve and keyframe as they were before the GOP cache (stream.firstFrame keyframe-on-connect).
  const r = rig({ firstFrame: 'keyframe-on-connect' });
  const start = await authorised('stream.start', { sub: 'sgt-7' });
  const reply = await r.manager.startStream(start);
  t.match(reply, { ok: true, sid: /^s-/, answer: 'v=0\r\n', endsBy: /Z$/ });
  const sid = (reply as unknown as { sid: string }).sid;
  t.equal(r.manager.activeCount, 1, 'counted from acceptance (the verifier sees it for busy)');
  t.same(r.live, [], 'valve still closed while the viewer connects');
  t.match(r.state(), { sessions: 1, list: [{ sid, operator: 'sgt-7', state: 'connecting', covert: false }] });
  t.match(r.audit[0], { type: 'stream.start', operator: 'sgt-7', detail: { sid, viewerFingerprint: 'sha-256 AA:BB', covert: false, wearerNotified: true } });

  r.manager.onVideo(rtp(1));
  t.equal(r.sessions[0]!.video.length, 0, 'no media before the viewer connects');
  r.sessions[0]!.setConnection('connected');
  t.same(r.live, [true], 'valve opens when the first viewer connects');
  t.ok(r.keyframes >= 1, 'a keyframe for the viewer that just joined');
  t.same(r.wearer, ['start', 'led-on'], 'the wearer is told');
  const packet = rtp(1);
  r.manager.onVideo(packet);
  t.equal(r.sessions[0]!.video[0], packet, 'the very packet, not a copy');
  r.manager.onVideo(Buffer.alloc(8));
  t.equal(r.sessions[0]!.video.length, 1, 'a datagram shorter than an RTP header is dropped');
  t.same(r.sessions[0]!.sourceChanges, [], 'same SSRC: same source');
  r.manager.onVideo(rtp(2));
  t.same(r.sessions[0]!.sourceChanges, ['video'], 'a new SSRC (a restarted worker): the session rebases its stream');
  r.manager.onAudio(rtp(7));
  r.manager.onAudio(rtp(8));
  t.same(r.sessions[0]!.sourceChanges, ['video', 'audio']);
  const before = r.keyframes;
  r.sessions[0]!.emit('pictureLoss');
  t.equal(r.keyframes, before + 1, 'PLI asks the capture for a keyframe');
  t.match(r.state().list[0], { state: 'connected' });

  const stop = await authorised('stream.stop', { sid, sub: 'insp-1' });
  t.match(await r.manager.stopStream(stop), { ok: true, sid });
  t.ok(r.sessions[0]!.closed, 'peer connection closed');
  t.same(r.live, [true, false], 'valve closes with the last viewer');
  t.same(r.wearer, ['start', 'led-on', 'led-off', 'stop']);
  t.match(r.audit.at(-1), { type: 'stream.stop', operator: 'insp-1', detail: { sid, cause: 'stream_stop', startedBy: 'sgt-7', videoPackets: 2 } });
  t.same(r.state(), { sessions: 0, bitrateKbps: null, list: [] });
  t.match(r.events.map((e) => e.type), ['stream.started', 'stream.connected', 'stream.stopped']);
  t.match(await r.manager.stopStream(stop), { ok: false, code: 'unknown_session' }, 'the same sid again');
  await r.manager.stop();
});

t.test('GOP cache: the encoder starts at stream.start, the viewer gets the cached keyframe at DTLS connect', async (t) => {
  const r = rig();
  const ssrc = 0x1234;
  let seq = 0;
  const send = (frames: Buffer[]) => {
    for (const p of frames) r.manager.onVideo(p);
    seq += frames.length;
  };
  const reply = await r.manager.startStream(await authorised('stream.start'));
  t.match(reply, { ok: true });
  t.same(r.live, [true], 'valve open from the accepted stream.start, while ICE and DTLS run');
  t.same(r.bitrates, [800], 'the live encoder at its starting bitrate');
  send(h264Frame({ ssrc, seq, ts: 0, keyframe: false }));
  const keyframe = h264Frame({ ssrc, seq, ts: 3000, keyframe: true });
  send(keyframe);
  const after = h264Frame({ ssrc, seq, ts: 6000, keyframe: false });
  send(after);
  const session = r.sessions[0]!;
  t.equal(session.video.length, 0, 'nothing sent before the viewer connects');
  const keyframesAsked = r.keyframes;
  session.setConnection('connected');
  t.same(session.video, [...keyframe, ...after], 'on connect: the cached keyframe and what followed it, in order, the P-frame before it left out');
  t.equal(r.keyframes, keyframesAsked, 'no keyframe asked of the encoder: the cached one was fresh');
  const live = h264Frame({ ssrc, seq, ts: 9000, keyframe: false });
  send(live);
  t.same(session.video.slice(-live.length), live, 'then the live packets');

  // A second viewer joins while the first watches: it starts from the cache too.
  const second = await r.manager.startStream(await authorised('stream.start'));
  t.match(second, { ok: true });
  t.same(r.live, [true], 'the valve stays open');
  r.sessions[1]!.setConnection('connected');
  t.same(r.sessions[1]!.video, [...keyframe, ...after, ...live], 'the second viewer gets the same GOP');

  // Both leave: the valve closes and the cache is emptied (the encoder's next frames need a new keyframe).
  for (const s of r.sessions) s.setConnection('closed');
  await until('valve closed', () => r.live.at(-1) === false);
  t.same(r.live, [true, false]);
  await r.manager.startStream(await authorised('stream.start'));
  const third = r.sessions[2]!;
  const asked = r.keyframes;
  third.setConnection('connected');
  t.same(third.video, [], 'no stale GOP after the valve closed');
  t.equal(r.keyframes, asked + 1, 'so a keyframe is asked of the encoder, as before');
  const fresh = h264Frame({ ssrc, seq, ts: 12000, keyframe: true });
  send(fresh);
  t.same(third.video, fresh);
  await r.manager.stop();
});

t.test('GOP cache: a view that does not open never starts the live encoder', async (t) => {
  const r = rig({}, { open: async () => Promise.reject(Object.assign(new Error('bad offer'), { code: 'unsupported_offer' })) });
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: false, code: 'unsupported_offer' });
  t.same(r.live, [], 'valve left closed');
  t.equal(r.keyframes, 0, 'no keyframe asked for');
  const ok = rig();
  await ok.manager.startStream(await authorised('stream.start'));
  ok.sessions[0]!.setConnection('closed');
  await until('valve closed', () => ok.live.at(-1) === false);
  t.same(ok.live, [true, false], 'an accepted view that ends before connecting closes the valve it opened');
  await ok.manager.stop();
  await r.manager.stop();
});

t.test('each way a session ends, audited with its cause', async (t) => {
  const r = rig();
  // connect_timeout: a viewer that never connects.
  const a = await r.manager.startStream(await authorised('stream.start'));
  await until('connect_timeout', () => r.audit.some((e) => e.type === 'stream.stop' && e.detail?.cause === 'connect_timeout'));
  t.match(r.audit.find((e) => e.detail?.cause === 'connect_timeout'), { detail: { sid: (a as unknown as { sid: string }).sid, connectedS: null } });
  t.same(r.wearer, [], 'a view that never connected was never felt, so no stop either');

  // viewer_lost: connected, then not heard for the grace. Its own rig with a 4 s grace: silence shows
  // as interrupted from half the grace until the grace ends, and with the 1 s grace that window was
  // 0.4 s, which one stall of a loaded machine could skip (straight to viewer_lost, never shown).
  const lost = rig({ viewerLostGrace: 4 });
  t.teardown(() => lost.manager.stop());
  await lost.manager.startStream(await authorised('stream.start'));
  lost.sessions.at(-1)!.setConnection('connected');
  lost.sessions.at(-1)!.alive = false;
  lost.sessions.at(-1)!.setConnection('failed');
  t.equal(lost.state().list[0]?.state, 'interrupted', 'state shows the interruption within the grace');
  lost.sessions.at(-1)!.setConnection('connected');
  lost.sessions.at(-1)!.lastHeardAt = Date.now() - 2100;
  await until('silence alone shown as interrupted', () => lost.state().list[0]?.state === 'interrupted');
  await until('viewer_lost', () => lost.audit.some((e) => e.detail?.cause === 'viewer_lost'), 30_000);
  t.ok((lost.audit.find((e) => e.detail?.cause === 'viewer_lost')!.detail!.lastHeardS as number) >= 4, 'silent for the whole grace');

  // viewer_closed: the viewer's side closed the connection.
  await r.manager.startStream(await authorised('stream.start'));
  r.sessions.at(-1)!.setConnection('connected');
  r.sessions.at(-1)!.setConnection('closed');
  await until('viewer_closed', () => r.audit.some((e) => e.detail?.cause === 'viewer_closed'));

  // max_duration: max_s from the command's arrival.
  await r.manager.startStream(await authorised('stream.start', { max_s: 1 }));
  r.sessions.at(-1)!.setConnection('connected');
  await until('max_duration', () => r.audit.some((e) => e.detail?.cause === 'max_duration'), 20_000);

  // capture_failed: the camera down past captureLossGrace; a new view is refused meanwhile.
  await r.manager.startStream(await authorised('stream.start'));
  r.sessions.at(-1)!.setConnection('connected');
  r.manager.captureRunning(false);
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: false, code: 'capture_unavailable' });
  await until('capture_failed', () => r.audit.some((e) => e.detail?.cause === 'capture_failed'));
  r.manager.captureRunning(true);

  // A capture that comes back within the grace keeps the view.
  await r.manager.startStream(await authorised('stream.start'));
  const survivor = r.sessions.at(-1)!;
  survivor.setConnection('connected');
  r.manager.captureRunning(false);
  r.manager.captureRunning(true);
  await new Promise((res) => setTimeout(res, 1300));
  t.equal(r.manager.activeCount, 1, 'a capture restart within the grace does not end the view');

  // agent_shutdown.
  await r.manager.stop();
  t.ok(r.audit.some((e) => e.detail?.cause === 'agent_shutdown' && e.detail.sid === survivor.sid), 'agent_shutdown');
  t.ok(r.sessions.every((s) => s.closed), 'every peer connection closed');
  t.equal(r.audit.filter((e) => e.type === 'stream.start').length, r.audit.filter((e) => e.type === 'stream.stop').length, 'every start has its stop');
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: false, code: 'unavailable' }, 'nothing new while stopping');
});

t.test('limits: busy at maxSessions, even past the verifier', async (t) => {
  const r = rig({}, { maxSessions: 1 });
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: true });
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: false, code: 'busy' });
  t.equal(r.sessions.length, 1, 'no second peer connection made');
  await r.manager.stop();
});

t.test('covert mode: the wearer is not told, and the audit says so', async (t) => {
  const r = rig({ covert: true });
  const reply = await r.manager.startStream(await authorised('stream.start'));
  r.sessions[0]!.setConnection('connected');
  t.match(r.audit[0], { type: 'stream.start', detail: { covert: true, wearerNotified: false } });
  t.match(r.events[0], { type: 'stream.started', covert: true });
  t.match(r.state().list[0], { covert: true });
  await r.manager.stopStream(await authorised('stream.stop', { sid: (reply as unknown as { sid: string }).sid }));
  t.same(r.wearer, [], 'no haptic, tone or LED');
  t.same(r.live, [true, false], 'the valve still follows the viewers');
  await r.manager.stop();
});

t.test('a start that cannot be audited is refused and its connection closed', async (t) => {
  const r = rig({}, { failAudit: true });
  t.match(await r.manager.startStream(await authorised('stream.start')), { ok: false, code: 'audit_failed', message: /SQLITE_FULL/ });
  t.ok(r.sessions[0]!.closed);
  t.equal(r.manager.activeCount, 0);
  await r.manager.stop();
});

t.test('offer and network problems are refused with their code', async (t) => {
  const offerRig = rig({}, { open: StreamSession.open });
  const sendrecv = await authorised('stream.start', {});
  // The verifier bound the offer it was given; a real session is asked to open it.
  t.match(await offerRig.manager.startStream(sendrecv), { ok: true }, 'the helper offer (recvonly H.264 + Opus) is accepted by a real session');
  await offerRig.manager.stop();

  const noNet = new StreamManager({
    config: streamConfigSchema.parse({ ice: { interfaces: ['nonexistent0'] } }),
    audio: false,
    maxSessions: 2,
    capture: { setLive: () => {}, requestKeyframe: () => {}, setLiveBitrate: () => {}, liveBitrateAdjustable: () => false },
    audit: { append: () => undefined as never },
    sendEvent: () => {},
    state: { update: () => {} },
    wearer: { streamStarted: () => {}, streamStopped: () => {}, streaming: () => {} },
    logger,
  });
  t.match(await noNet.startStream(await authorised('stream.start')), { ok: false, code: 'no_network', message: /nonexistent0/ });
});

t.test('StreamSession.open accepts only an authorised stream.start', async (t) => {
  const ice = { servers: [], transportPolicy: 'all' as const, hostAddresses: ['127.0.0.1'], portRange: undefined };
  const real = await authorised('stream.start');
  const forged = Object.create(Object.getPrototypeOf(real), Object.getOwnPropertyDescriptors(real)) as AuthorisedCommand;
  await t.rejects(StreamSession.open({ sid: 's-x', command: forged, ice, audio: false, logger }), TypeError, 'a copy of an authorised command is not one');
  await t.rejects(StreamSession.open({ sid: 's-x', command: await authorised('stream.stop'), ice, audio: false, logger }), TypeError, 'stream.stop is not a start');
  const { session, answer } = await StreamSession.open({ sid: 's-x', command: real, ice, audio: true, logger });
  t.match(answer, /a=sendonly/);
  t.match(answer, /a=setup:passive/, 'the camera is the DTLS server (the browser starts the handshake as soon as its ICE check succeeds)');
  t.match(answer, /a=fmtp:96 [^\r\n]*profile-level-id=42e01f/, 'constrained baseline, the offer\'s payload type');
  t.match(answer, /packetization-mode=1/);
  t.match(answer, /a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host/, 'a host candidate on the configured address only');
  t.notMatch(answer, /stun\.l\.google|typ srflx/, 'no public STUN server');
  t.match(answer, /m=audio [^\r\n]*111[\s\S]*a=rtpmap:111 opus\/48000\/2/, 'Opus answered when audio is on and asked for');
  t.equal(session.audio, true);
  await session.close();
  t.ok(session.closed);

  const ranged = await StreamSession.open({ sid: 's-y', command: await authorised('stream.start'), ice: { ...ice, portRange: [42_000, 42_100] }, audio: false, logger });
  const ports = [...ranged.answer.matchAll(/a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/g)].map((m) => Number(m[1]));
  t.ok(ports.length > 0 && ports.every((p) => p >= 42_000 && p <= 42_100), `candidate ports ${ports.join(', ')} within stream.ice.portRange`);
  await ranged.session.close();
});

t.test('inspectOffer', async (t) => {
  const { offer } = sdpOffer('inspect');
  t.match(inspectOffer(offer), { fingerprint: /^sha-256 7B:8B/, audio: true });
  const cases: [string, string, RegExp][] = [
    ['not SDP', 'hello', /not SDP/],
    ['sendrecv', offer.replace('a=recvonly', 'a=sendrecv'), /video must be recvonly/],
    ['no video', offer.replace('m=video 9', 'm=video 0'), /exactly one video/],
    ['VP8 only', offer.replace(/H264\/90000/, 'VP8/90000'), /no H.264 constrained baseline/],
    ['packetization-mode 0', offer.replace('packetization-mode=1', 'packetization-mode=0'), /no H.264 constrained baseline/],
    ['high profile', offer.replace('42e01f', '640c1f'), /no H.264 constrained baseline/],
    ['no fingerprint', offer.replace(/a=fingerprint:[^\r\n]*\r\n/, ''), /no sha-256 DTLS fingerprint/],
    ['two audio m-lines', `${offer}${offer.slice(offer.indexOf('m=audio'))}`, /at most one audio m-line/],
  ];
  for (const [name, sdp, message] of cases) {
    t.throws(() => inspectOffer(sdp), { constructor: OfferError, code: 'unsupported_offer', message }, name);
  }
  t.equal(inspectOffer(offer.replace(/m=audio[\s\S]*$/, '')).audio, false, 'no audio m-line: video only');
  // Talk-back (issue 19): the console's push-to-talk offer is accepted; whether the camera listens
  // is the token's grant's to decide (session.ts), not the offer's.
  t.match(inspectOffer(offer.replace(/(m=audio[\s\S]*?)a=recvonly/, '$1a=sendrecv')), { audio: true, talk: true }, 'audio sendrecv: a talk offer');
  t.match(inspectOffer(offer.replace(/(m=audio[\s\S]*?)a=recvonly/, '$1a=sendonly')), { audio: false, talk: true }, 'audio sendonly: talk, no listening');
  t.match(inspectOffer(offer), { talk: false }, 'audio recvonly: no talk');
});

t.test('ICE settings', async (t) => {
  const ifaces = {
    lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '255.0.0.0', mac: '00', cidr: null }],
    wwan0: [
      { address: '10.64.1.2', family: 'IPv4', internal: false, netmask: '255.255.255.0', mac: '00', cidr: null },
      { address: 'fe80::1', family: 'IPv6', internal: false, netmask: 'ffff::', mac: '00', cidr: null, scopeid: 1 },
    ],
    wlan0: [{ address: '192.168.4.7', family: 'IPv4', internal: false, netmask: '255.255.255.0', mac: '00', cidr: null }],
  } as unknown as ReturnType<typeof os.networkInterfaces>;
  t.same(hostAddresses([], ifaces), ['10.64.1.2', '192.168.4.7'], 'default: every interface but loopback, IPv4');
  t.same(hostAddresses(['wwan0'], ifaces), ['10.64.1.2'], 'named interfaces only');
  t.same(hostAddresses(['lo'], ifaces), ['127.0.0.1'], 'loopback when named');

  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-ice-'));
  const secret = path.join(dir, 'turn.secret');
  await writeFile(secret, 's3cret\n');
  const ice = streamConfigSchema.parse({
    ice: { servers: [{ urls: 'turns:turn.example.police.uk:443', username: 'cam', credentialFile: secret }], transportPolicy: 'relay', portRange: { min: 40000, max: 40100 } },
  }).ice;
  t.same(await resolveIce(ice, ifaces), {
    servers: [{ urls: ['turns:turn.example.police.uk:443'], username: 'cam', credential: 's3cret' }],
    transportPolicy: 'relay',
    hostAddresses: ['10.64.1.2', '192.168.4.7'],
    portRange: [40000, 40100],
  });
  await t.rejects(resolveIce({ ...ice, servers: [{ urls: ['turn:x:3478'], credentialFile: path.join(dir, 'missing') }] }, ifaces), { constructor: IceConfigError, message: /missing: ENOENT/ });
  await t.rejects(resolveIce({ ...ice, interfaces: ['eth9'], servers: [] }, ifaces), { code: 'no_network', message: /eth9/ });
  t.throws(() => streamConfigSchema.parse({ ice: { servers: [{ urls: 'http://stun.example' }] } }), /stun:, turn: or turns: URL/);
  t.throws(() => streamConfigSchema.parse({ ice: { portRange: { min: 5000, max: 5000 } } }), /min must be below max/);
});

t.test('ICE answers: the signalling verifies the token before the manager sees it', async (t) => {
  const issuer = await makeIssuer();
  const viewerOnly = await makeIssuer({ actions: ['record.start'] });
  const outsider = await makeIssuer();
  const trust = TrustStore.fromJwks(trustStoreJwks([issuer, viewerOnly]), []);
  const bus = new EventEmitter();
  const published: { topic: string; payload: string }[] = [];
  const session = Object.assign(bus, {
    publish: (topic: string, payload: string | Buffer, _o: unknown, cb?: (e?: Error) => void) => {
      published.push({ topic, payload: String(payload) });
      cb?.();
    },
    subscribe: async () => {},
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-ice-'));
  const deviceKey = await loadOrCreateDeviceKey(dir);
  const answers: IceAnswer[] = [];
  const refusals: string[] = [];
  // Session ids of the shape the camera mints: any other is refused before the payload is read.
  const [s1, s2] = [newSessionId(), newSessionId()];
  const signalling = new IceSignalling({
    topics: new IceTopics({ bus: session as never, topic: (suffix) => `bwc/v1/cam-1/${suffix}` }),
    deviceId: 'cam-1',
    deviceKey,
    tokens: new SignedTokenVerifier({
      deviceId: 'cam-1',
      trustStore: trust,
      replayCache: new ReplayCache(openDatabase({ stateDir: dir })),
      clock: { nowMs: () => Date.now(), synchronised: () => true },
      policy: { clockSkewS: 30, maxTokenLifetimeS: 300, unsynchronisedClock: 'reject' },
      logger,
    }),
    nowMs: () => Date.now(),
    maxPayloadBytes: 65_536,
    onAnswer: async (a) => {
      answers.push(a);
      return { ok: true };
    },
    onRefused: (r) => refusals.push(r.code),
    logger,
  });
  signalling.start();
  t.teardown(() => signalling.stop());

  signalling.publishOffer(s1, 3, answerSdp('AA:BB'), 'network_changed');
  t.equal(published[0]!.topic, `bwc/v1/cam-1/stream/${s1}/ice-offer`);
  const offerClaims = await verifyIceOffer(JSON.parse(published[0]!.payload), deviceKey.publicJwk);
  t.match(offerClaims, { sid: s1, gen: 3, cause: 'network_changed' }, 'the viewer can check the camera signed its offer');
  const otherDevice = await loadOrCreateDeviceKey(await mkdtemp(path.join(os.tmpdir(), 'bwc-ice-')));
  await t.rejects(verifyIceOffer(JSON.parse(published[0]!.payload), otherDevice.publicJwk), /not signed by the camera/);
  await t.rejects(verifyIceOffer({ ...JSON.parse(published[0]!.payload), offer: 'v=0\r\nother' }, deviceKey.publicJwk), /does not match/);

  const keyFile = async (i: typeof issuer) => {
    const f = path.join(dir, `${i.kid}.jwk.json`);
    await writeFile(f, JSON.stringify({ ...i.privateKey.export({ format: 'jwk' }), kid: i.kid, alg: 'EdDSA' }));
    return f;
  };
  const answer = answerSdp('AA:BB');
  const send = async (sid: string, payload: unknown) => {
    // Every answer ends in exactly one of the two callbacks: wait for it, not for a guess of how
    // long verification takes (a fixed 50 ms failed under load).
    const before = answers.length + refusals.length;
    bus.emit('message', `bwc/v1/cam-1/stream/${sid}/ice-answer`, Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)), {});
    await until('the answer accepted or refused', () => answers.length + refusals.length > before);
  };
  const good = await signIceAnswer({ keyFile: await keyFile(issuer), device: 'cam-1', sid: s1, generation: 3, answer, operator: 'sgt-7' });
  const expiredAnswer = () => {
    const iat = Math.floor(Date.now() / 1000) - 300;
    const claims = { iss: 'bwc-fleet', sub: 'sgt-7', aud: 'cam-1', iat, exp: iat + 60, jti: `old-${iat}`, sid: s1, gen: 3, answer_sha256: createHash('sha256').update(answer).digest('base64url') };
    return signToken({ issuer, claims, header: { typ: 'bwc-ice+jwt' } });
  };
  await send(s1, { token: good, answer });
  t.match(answers, [{ sid: s1, generation: 3, answer, operator: 'sgt-7' }], 'a good answer reaches the manager');

  const cases: [string, unknown, string][] = [
    ['not JSON', '{', 'malformed'],
    ['an extra member', { token: good, answer, offer: 'x' }, 'malformed'],
    ['another answer than signed', { token: good, answer: answerSdp('CC:DD') }, 'answer_mismatch'],
    ['an outsider key', { token: await signIceAnswer({ keyFile: await keyFile(outsider), device: 'cam-1', sid: s1, generation: 3, answer }), answer }, 'unknown_key'],
    ['a key not trusted for live views', { token: await signIceAnswer({ keyFile: await keyFile(viewerOnly), device: 'cam-1', sid: s1, generation: 3, answer }), answer }, 'action_not_permitted'],
    ['another device', { token: await signIceAnswer({ keyFile: await keyFile(issuer), device: 'cam-2', sid: s1, generation: 3, answer }), answer }, 'wrong_device'],
    // exp before iat is a malformed token (as for commands); an expired one has both in the past.
    ['exp before iat', { token: await signIceAnswer({ keyFile: await keyFile(issuer), device: 'cam-1', sid: s1, generation: 3, answer, ttlS: -120 }), answer }, 'malformed'],
    ['expired', { token: expiredAnswer(), answer }, 'expired'],
    ['too long-lived', { token: await signIceAnswer({ keyFile: await keyFile(issuer), device: 'cam-1', sid: s1, generation: 3, answer, ttlS: 3600 }), answer }, 'too_long_lived'],
    ['a command token', { token: await makeCommand({ issuer, deviceId: 'cam-1', action: 'stream.stop', overrides: { sid: s1 } }).token, answer }, 'wrong_type'],
  ];
  for (const [what, payload, code] of cases) {
    await send(s1, payload);
    t.equal(refusals.at(-1), code, what);
  }
  await send(s2, { token: good, answer });
  t.equal(refusals.at(-1), 'wrong_session', 'a token for one session published on another\'s topic');
  const [h, p] = good.split('.');
  await send(s1, { token: `${h}.${p}.${Buffer.alloc(64).toString('base64url')}`, answer });
  t.equal(refusals.at(-1), 'bad_signature', 'a forged signature');
  t.equal(answers.length, 1, 'nothing refused reached the manager');
  await send('s-1', { token: good, answer });
  t.equal(refusals.at(-1), 'bad_sid', 'a topic whose sid is not of the shape the camera mints');
  await send('x'.repeat(60_000), '{');
  t.equal(refusals.at(-1), 'bad_sid', 'nor a 60 KB one');
});

t.test('network watcher: a change of address is noticed once, whatever the order', async (t) => {
  let table: ReturnType<typeof os.networkInterfaces> = {
    lo: [{ address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' }],
    wwan0: [{ address: '10.1.2.3', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: '10.1.2.3/24' }],
  };
  const watcher = new NetworkWatcher({ interfaces: [], logger, read: () => table, intervalMs: 60_000 });
  const changes: NetworkChange[] = [];
  watcher.on('change', (c) => changes.push(c));
  watcher.start();
  t.teardown(() => watcher.stop());
  t.same(watcher.addresses, ['10.1.2.3'], 'loopback does not count when no interface is named');
  watcher.check();
  t.equal(changes.length, 0, 'nothing changed');
  table = { ...table, wwan0: [table.wwan0![0]!, { ...table.wwan0![0]!, address: '10.9.9.9', cidr: '10.9.9.9/24' }] };
  watcher.check();
  t.equal(changes.length, 0, 'a reading seen once is not yet a change (the old address may be on its way out)');
  table = { ...table, wwan0: [{ ...table.wwan0![0]!, address: '10.9.9.9', cidr: '10.9.9.9/24' }] };
  watcher.check();
  await new Promise((r) => setTimeout(r, 400));
  watcher.check();
  t.same(changes, [{ before: ['10.1.2.3'], after: ['10.9.9.9'] }], 'the modem\'s new address once settled, reported once');
  const named = new NetworkWatcher({ interfaces: ['wlan0'], logger, read: () => table });
  named.start();
  named.stop();
  t.same(named.addresses, [], 'only the named interfaces count');
});

t.test('stream.start gathering does not hold the command queue, and its slot counts as busy meanwhile', async (t) => {
  let release: () => void = () => {};
  const gathered = new Promise<void>((resolve) => (release = resolve));
  const r = rig({}, {
    maxSessions: 1,
    open: async (o) => {
      await gathered; // ICE gathering, held until the test lets it finish
      return { session: new FakeSession(o.sid, o.command), answer: 'v=0\r\n' };
    },
  });
  t.teardown(() => r.manager.stop());
  const issuer = await makeIssuer();
  const db = openDatabase({ stateDir: await mkdtemp(path.join(os.tmpdir(), 'bwc-queue-')) });
  t.teardown(() => db.close());
  const verifier = new CommandVerifier({
    deviceId,
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), [], 'test'),
    policy: { ...testPolicy, maxConcurrentStreams: 1 },
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => Date.now(), synchronised: () => true },
    activeStreams: () => r.manager.activeCount,
    logger,
  });
  const replies = new Map<string, Record<string, unknown>>();
  const session = Object.assign(new EventEmitter(), {
    connected: true,
    subscribe: async () => undefined,
    publish: (_topic: string, payload: string | Buffer, o: { properties?: { correlationData?: Buffer } }, cb?: (e?: Error) => void) => {
      replies.set(String(o.properties?.correlationData), JSON.parse(String(payload)) as Record<string, unknown>);
      cb?.();
    },
  });
  const handler = new CommandHandler({
    requests: new RequestChannel({ bus: session as never, topic: 'cmd', logger }),
    verifier,
    audit: { append: () => undefined as never },
    concurrentActions: ['stream.start'],
    executors: {
      'stream.start': (c) => r.manager.startStream(c),
      'stream.stop': (c) => r.manager.stopStream(c),
      'record.start': () => ({ ok: true }),
      'record.stop': () => ({ ok: true }),
      'agent.update': () => ({ ok: true }),
      'audit.fetch': () => ({ ok: true }),
    },
    logger,
  });
  handler.start();
  const send = (id: string, payload: Buffer) => session.emit('message', 'cmd', payload, { properties: { responseTopic: 'r', correlationData: Buffer.from(id) } });

  send('view-1', makeCommand({ issuer, deviceId, action: 'stream.start' }).payload);
  send('record', makeCommand({ issuer, deviceId, action: 'record.start' }).payload);
  send('view-2', makeCommand({ issuer, deviceId, action: 'stream.start' }).payload);
  await until('the record.start and second stream.start answered', () => replies.has('record') && replies.has('view-2'));
  t.same(replies.get('record'), { ok: true }, 'record.start answered while the first view is still gathering');
  t.match(replies.get('view-2'), { ok: false, code: 'busy' }, 'the gathering view holds the only slot');
  t.notOk(replies.has('view-1'), 'the first view has not answered yet');
  release();
  await until('the first view answered', () => replies.has('view-1'));
  t.match(replies.get('view-1'), { ok: true, sid: /^s-/, answer: 'v=0\r\n' }, 'the first view answers once gathered');
  t.equal(r.manager.activeCount, 1);
  await handler.stop();
});
