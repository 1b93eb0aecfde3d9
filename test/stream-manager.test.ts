// The live view's policy without sockets: the manager driven with stand-in sessions (the real
// StreamSession is exercised against Chromium in stream-e2e.test.ts), real authorised commands
// from the real verifier, and a real audit log on a real SQLite database.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import type { AuthorisedCommand } from '../src/command/authorised-command.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { SignedTokenVerifier } from '../src/command/signed-token.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { CommandVerifier } from '../src/command/verifier.ts';
import type { StreamConfig } from '../src/stream/config.ts';
import { streamConfigSchema } from '../src/stream/config.ts';
import { EncoderRateHysteresis, LinkBitrate, type LinkSample } from '../src/stream/bitrate.ts';
import { IceSignalling, type IceAnswer } from '../src/stream/ice-signalling.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { NetworkWatcher, type NetworkChange } from '../src/net/network-watcher.ts';
import { signIceAnswer, verifyIceOffer } from '../src/cli/fleet-tools.ts';
import { hostAddresses, IceConfigError, resolveIce, type ResolvedIce } from '../src/stream/ice.ts';
import { inspectOffer, OfferError } from '../src/stream/offer.ts';
import { StreamSession, type ViewerConnectionState } from '../src/stream/session.ts';
import { StreamManager, type LiveSession, type OpenSession } from '../src/stream/stream-manager.ts';
import { newSessionId } from '../src/stream/session-id.ts';
import type { DeviceStateDoc } from '../src/state/device-state.ts';
import { openDatabase } from '../src/store/database.ts';
import { makeCommand, makeIssuer, sdpOffer, signToken, testPolicy, trustStoreJwks } from './helpers/command-tokens.ts';

const logger = pino({ level: 'silent' });
const deviceId = 'cam-unit';

async function authorised(action: 'stream.start' | 'stream.stop', overrides: Record<string, unknown> = {}): Promise<AuthorisedCommand> {
  const issuer = await makeIssuer();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-stream-unit-'));
  const db = openDatabase({ stateDir: dir });
  const verifier = new CommandVerifier({
    deviceId,
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), [], 'test'),
    policy: { ...testPolicy, maxConcurrentStreams: 8 },
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => Date.now(), synchronised: () => true },
    activeStreams: () => 0,
    logger,
  });
  const verdict = await verifier.verify(makeCommand({ issuer, deviceId, action, overrides }).payload);
  db.close();
  if (!verdict.ok) throw new Error(`test command refused: ${verdict.code} ${verdict.message}`);
  return verdict.command;
}

class FakeSession extends EventEmitter implements LiveSession {
  readonly sid: string;
  readonly command: AuthorisedCommand;
  readonly offer = { fingerprint: 'sha-256 AA:BB' };
  readonly audio = false;
  /** While true and connected, the viewer is heard now (RTCP arriving). */
  alive = true;
  #heard = 0;
  connection: ViewerConnectionState = 'connecting';
  readonly counters = { videoPackets: 0, audioPackets: 0, videoBytes: 0 };
  readonly video: Buffer[] = [];
  /** What sample() reports next (the link as the test scripts it). */
  nextSample: LinkSample = { sendKbps: 0, lossFraction: undefined, deliveredKbps: undefined, intervalMs: 1000 };
  rttMs: number | undefined = 42;
  iceRestarts = 0;
  readonly restartOffers: ResolvedIce[] = [];
  readonly restartAnswers: string[] = [];
  get lastHeardAt(): number {
    return this.alive && this.connection === 'connected' ? Date.now() : this.#heard;
  }
  set lastHeardAt(at: number) {
    this.#heard = at;
  }
  closed = false;
  constructor(sid: string, command: AuthorisedCommand) {
    super();
    this.sid = sid;
    this.command = command;
  }
  setConnection(state: ViewerConnectionState): void {
    this.connection = state;
    if (state === 'connected') this.lastHeardAt = Date.now();
    this.emit('connection', state);
  }
  sendVideo(packet: Buffer): void {
    this.counters.videoPackets++;
    this.video.push(packet);
  }
  sendAudio(): void {
    this.counters.audioPackets++;
  }
  readonly sourceChanges: string[] = [];
  sourceChanged(kind: 'video' | 'audio'): void {
    this.sourceChanges.push(kind);
  }
  sample(): LinkSample {
    return this.nextSample;
  }
  async restartIce(ice: ResolvedIce): Promise<string> {
    this.restartOffers.push(ice);
    this.connection = 'failed';
    return `v=0\r\no=restart ${this.restartOffers.length}\r\n`;
  }
  async acceptRestartAnswer(sdp: string): Promise<void> {
    this.restartAnswers.push(sdp);
    this.iceRestarts++;
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

interface Rig {
  manager: StreamManager;
  sessions: FakeSession[];
  audit: { type: string; detail?: Record<string, unknown>; operator?: string | null }[];
  events: Record<string, unknown>[];
  live: boolean[];
  keyframes: number;
  wearer: string[];
  bitrates: number[];
  restartOffers: { sid: string; generation: number; offer: string; cause: string }[];
  state: () => DeviceStateDoc['streaming'];
}

function rig(config: Partial<StreamConfig> = {}, options: { failAudit?: boolean; open?: OpenSession; maxSessions?: number } = {}): Rig {
  const sessions: FakeSession[] = [];
  const r: Rig = {
    sessions,
    audit: [],
    events: [],
    live: [],
    keyframes: 0,
    wearer: [],
    bitrates: [],
    restartOffers: [],
    state: () => streaming,
    manager: undefined as unknown as StreamManager,
  };
  let streaming: DeviceStateDoc['streaming'] = { sessions: 0, bitrateKbps: null, list: [] };
  r.manager = new StreamManager({
    config: { ...streamConfigSchema.parse({}), viewerLostGrace: 1, connectTimeout: 2, captureLossGrace: 1, ...config },
    audio: false,
    maxSessions: options.maxSessions ?? 2,
    capture: {
      setLive: (open) => r.live.push(open),
      requestKeyframe: () => r.keyframes++,
      setLiveBitrate: (kbps) => r.bitrates.push(kbps),
      liveBitrateAdjustable: () => true,
    },
    publishRestartOffer: (sid, generation, offer, cause) => r.restartOffers.push({ sid, generation, offer, cause }),
    audit: {
      append: (record) => {
        if (options.failAudit && record.type === 'stream.start') throw new Error('SQLITE_FULL: database or disk is full');
        r.audit.push(record);
        return undefined as never;
      },
    },
    sendEvent: (body) => r.events.push(body),
    state: { update: (change) => (streaming = change.streaming ?? streaming) },
    wearer: { streamStarted: () => r.wearer.push('start'), streamStopped: () => r.wearer.push('stop'), streaming: (a) => r.wearer.push(a ? 'led-on' : 'led-off') },
    logger,
    resolveIce: async () => ({ servers: [], transportPolicy: 'all', hostAddresses: ['127.0.0.1'], portRange: undefined }),
    openSession:
      options.open ??
      (async (o) => {
        const s = new FakeSession(o.sid, o.command);
        sessions.push(s);
        return { session: s, answer: 'v=0\r\n' };
      }),
    checkIntervalMs: 50,
  });
  r.manager.start();
  return r;
}

/** An RTP header's worth of bytes with this SSRC. */
function rtp(ssrc: number): Buffer {
  const b = Buffer.alloc(24);
  b[0] = 0x80;
  b.writeUInt32BE(ssrc, 8);
  return b;
}

const until = async (what: string, predicate: () => boolean, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

t.test('a session: valve, keyframes, wearer, state, audit; stream.stop ends it', async (t) => {
  const r = rig();
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

t.test('each way a session ends, audited with its cause', async (t) => {
  const r = rig();
  // connect_timeout: a viewer that never connects.
  const a = await r.manager.startStream(await authorised('stream.start'));
  await until('connect_timeout', () => r.audit.some((e) => e.type === 'stream.stop' && e.detail?.cause === 'connect_timeout'));
  t.match(r.audit.find((e) => e.detail?.cause === 'connect_timeout'), { detail: { sid: (a as unknown as { sid: string }).sid, connectedS: null } });
  t.same(r.wearer, [], 'a view that never connected was never felt, so no stop either');

  // viewer_lost: connected, then not heard for the grace.
  await r.manager.startStream(await authorised('stream.start'));
  r.sessions.at(-1)!.setConnection('connected');
  r.sessions.at(-1)!.alive = false;
  r.sessions.at(-1)!.setConnection('failed');
  t.equal(r.state().list[0]?.state, 'interrupted', 'state shows the interruption within the grace');
  r.sessions.at(-1)!.setConnection('connected');
  r.sessions.at(-1)!.lastHeardAt = Date.now() - 600;
  await until('silence alone shown as interrupted', () => r.state().list[0]?.state === 'interrupted');
  await until('viewer_lost', () => r.audit.some((e) => e.detail?.cause === 'viewer_lost'));
  t.ok((r.audit.find((e) => e.detail?.cause === 'viewer_lost')!.detail!.lastHeardS as number) >= 1, 'silent for the whole grace');

  // viewer_closed: the viewer's side closed the connection.
  await r.manager.startStream(await authorised('stream.start'));
  r.sessions.at(-1)!.setConnection('connected');
  r.sessions.at(-1)!.setConnection('closed');
  await until('viewer_closed', () => r.audit.some((e) => e.detail?.cause === 'viewer_closed'));

  // max_duration: max_s from the command's arrival.
  await r.manager.startStream(await authorised('stream.start', { max_s: 1 }));
  r.sessions.at(-1)!.setConnection('connected');
  await until('max_duration', () => r.audit.some((e) => e.detail?.cause === 'max_duration'), 5000);

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
    ['audio sendrecv', offer.replace(/(m=audio[\s\S]*?)a=recvonly/, '$1a=sendrecv'), /audio must be recvonly/],
  ];
  for (const [name, sdp, message] of cases) {
    t.throws(() => inspectOffer(sdp), { constructor: OfferError, code: 'unsupported_offer', message }, name);
  }
  t.equal(inspectOffer(offer.replace(/m=audio[\s\S]*$/, '')).audio, false, 'no audio m-line: video only');
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

t.test('bandwidth: per-link target, then the encoder at the lowest, with hysteresis', async (t) => {
  const limits = { minKbps: 150, maxKbps: 2000, startKbps: 800 };
  const link = new LinkBitrate(limits);
  const s = (sendKbps: number, lossFraction?: number, deliveredKbps?: number): LinkSample => ({ sendKbps, lossFraction, deliveredKbps, intervalMs: 1000 });
  t.equal(link.update(s(800, 0.5), 0), 360, 'heavy loss: 90 % of what was delivered');
  t.equal(link.update(s(360, 0.03), 1000), 360, 'moderate (random) loss: hold');
  t.equal(link.update(s(360, 0), 2000), 360 * 1.01, 'no loss just under where the link gave way: cautious growth');
  const after = link.update(s(360, 0), 20_000);
  t.equal(after, 360 * 1.01 * 1.1, 'once the congestion is forgotten: probing growth');
  t.equal(link.update(s(100, 0), 21_000), after, 'no growth beyond what the encoder uses');
  t.equal(link.update(s(400, 0, 300), 22_000), 270, 'delivered rate falling behind the send rate, nothing lost: a queue is building');
  t.equal(link.update(s(270, 0.03, 150), 23_000), 270, 'under random loss werift\'s delivered estimate is not trusted');
  const floor = new LinkBitrate(limits);
  for (let i = 0; i < 20; i++) floor.update(s(800, 0.9), i * 1000);
  t.equal(floor.targetKbps, 150, 'never under minKbps');
  const ceiling = new LinkBitrate(limits);
  for (let i = 0; i < 40; i++) ceiling.update(s(ceiling.targetKbps, 0), i * 1000);
  t.equal(ceiling.targetKbps, 2000, 'never over maxKbps');

  const h = new EncoderRateHysteresis(800);
  t.equal(h.next(790, 0), undefined, 'a small change is not worth reconfiguring the encoder');
  t.equal(h.next(500, 10), 500, 'a decrease applies at once');
  t.equal(h.next(600, 20), 600, 'an increase of 10 % or more applies');
  t.equal(h.next(700, 500), undefined, 'but not twice within a second');
  t.equal(h.next(700, 1100), 700);
});

t.test('bandwidth: the manager sets the live encoder from its viewers', async (t) => {
  const r = rig({ bitrate: { adapt: true, minKbps: 150, maxKbps: 2000, startKbps: 800 } });
  t.teardown(() => r.manager.stop());
  await r.manager.startStream(await authorised('stream.start'));
  const s = r.sessions[0]!;
  s.setConnection('connected');
  t.same(r.bitrates, [800], 'the live encoder starts at startKbps when the valve opens');
  s.nextSample = { sendKbps: 800, lossFraction: 0.5, deliveredKbps: undefined, intervalMs: 1000 };
  await until('the bitrate down', () => r.bitrates.some((b) => b < 500));
  t.equal(r.bitrates.at(-1), 360);
  t.equal(r.state().bitrateKbps, 360, 'state shows the live bitrate');
  s.nextSample = { sendKbps: 360, lossFraction: 0, deliveredKbps: 360, intervalMs: 1000 };
  await until('the bitrate back up', () => r.bitrates.at(-1)! > 400, 20_000);
  t.ok(r.bitrates.every((b) => b >= 150 && b <= 2000), 'within the floor and ceiling');
  t.match(r.state().list[0], { rttMs: 42, iceRestarts: 0 });

  const fixed = rig();
  t.teardown(() => fixed.manager.stop());
  const off = rig({ bitrate: { adapt: false, minKbps: 150, maxKbps: 2000, startKbps: 800 } });
  t.teardown(() => off.manager.stop());
  await off.manager.startStream(await authorised('stream.start'));
  off.sessions[0]!.nextSample = { sendKbps: 800, lossFraction: 0.5, deliveredKbps: undefined, intervalMs: 1000 };
  off.sessions[0]!.setConnection('connected');
  await new Promise((res) => setTimeout(res, 1500));
  t.same(off.bitrates, [], 'adapt: false leaves the live encoder alone');
  t.equal(off.state().bitrateKbps, null);
});

const answerSdp = (fingerprint: string) =>
  ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', `a=fingerprint:sha-256 ${fingerprint}`, 'm=video 9 UDP/TLS/RTP/SAVPF 96', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=recvonly', 'a=rtpmap:96 H264/90000', ''].join('\r\n');

t.test('ICE restart: a network change offers one; only the viewer\'s answer to the open restart is taken', async (t) => {
  const r = rig({ viewerLostGrace: 30 });
  t.teardown(() => r.manager.stop());
  const accepted = await r.manager.startStream(await authorised('stream.start'));
  const sid = (accepted as unknown as { sid: string }).sid;
  const s = r.sessions[0]!;
  s.setConnection('connected');
  r.manager.networkChanged();
  await until('a restart offer', () => r.restartOffers.length === 1);
  t.match(r.restartOffers[0], { sid, generation: 1, cause: 'network_changed' });
  t.equal(s.restartOffers.length, 1, 'the session made the offer on freshly resolved ICE settings');
  t.match(r.audit.find((e) => e.type === 'stream.ice_restart'), { detail: { sid, generation: 1, cause: 'network_changed' } });
  const answer = { sid, generation: 1, answer: answerSdp('AA:BB'), operator: 'console', issuer: 'fleet', jti: 'j1', tokenDigest: 'd1' };
  t.match(await r.manager.acceptRestartAnswer({ ...answer, generation: 7 }), { ok: false, code: 'stale_generation' });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: answerSdp('CC:DD') }), { ok: false, code: 'wrong_viewer' });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, sid: 's-nope' }), { ok: false, code: 'unknown_session' });
  t.same(
    r.audit.filter((e) => e.type === 'stream.ice_refused').map((e) => e.detail?.code),
    ['stale_generation', 'wrong_viewer', 'unknown_session'],
    'each refusal audited',
  );
  t.same(s.restartAnswers, [], 'no refused answer reached the peer connection');
  t.match(await r.manager.acceptRestartAnswer(answer), { ok: true });
  t.same(s.restartAnswers, [answer.answer]);
  t.match(r.audit.find((e) => e.type === 'stream.ice_restarted'), { operator: 'console', detail: { sid, generation: 1, cause: 'network_changed' } });
  t.match(await r.manager.acceptRestartAnswer(answer), { ok: false, code: 'stale_generation' }, 'the same answer again is refused');
  t.ok(r.events.some((e) => e.type === 'stream.ice_restarted'));
  s.setConnection('connected');
  t.equal(r.state().list[0]?.iceRestarts, 1);
});

t.test('ICE restart: a failed path offers again until answered, and the grace still ends a gone viewer', async (t) => {
  const r = rig({ viewerLostGrace: 12 });
  t.teardown(() => r.manager.stop());
  await r.manager.startStream(await authorised('stream.start'));
  const s = r.sessions[0]!;
  s.setConnection('connected');
  s.alive = false;
  s.setConnection('failed');
  await until('a restart offer', () => r.restartOffers.length >= 1);
  t.equal(r.restartOffers[0]!.cause, 'ice_failed');
  await until('a second offer after the first went unanswered', () => r.restartOffers.length >= 2, 15_000);
  t.equal(r.restartOffers[1]!.generation, 2, 'with the next generation');
  await until('viewer_lost', () => r.audit.some((e) => e.detail?.cause === 'viewer_lost'), 20_000);
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
    session: session as never,
    topic: (suffix) => `bwc/v1/cam-1/${suffix}`,
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

t.test('ICE restart: an answer naming a second DTLS certificate beside the viewer\'s is refused (issue 14, finding 7)', async (t) => {
  const r = rig({ viewerLostGrace: 30 });
  t.teardown(() => r.manager.stop());
  const accepted = await r.manager.startStream(await authorised('stream.start'));
  const sid = (accepted as unknown as { sid: string }).sid;
  const s = r.sessions[0]!;
  s.setConnection('connected');
  r.manager.networkChanged();
  await until('a restart offer', () => r.restartOffers.length === 1);
  const answer = { sid, generation: 1, answer: answerSdp('AA:BB'), operator: 'console', issuer: 'fleet', jti: 'j1', tokenDigest: 'd1' };
  const withLine = (line: string) => answer.answer.replace('a=mid:0', `a=mid:0\r\n${line}`);
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-256 CC:DD') }), { ok: false, code: 'wrong_viewer', message: /names 2 DTLS certificates/ });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-512 CC:DD') }), { ok: false, code: 'wrong_viewer', message: /sha-512 DTLS fingerprint: only sha-256/ });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: 'not sdp' }), { ok: false, code: 'wrong_viewer' });
  t.same(s.restartAnswers, [], 'none reached the peer connection');
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-256 aa:bb') }), { ok: true }, 'the same certificate named twice is one: taken');
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
    topic: 'cmd',
    session: session as never,
    verifier,
    audit: { append: () => undefined as never },
    concurrentActions: ['stream.start'],
    executors: {
      'stream.start': (c) => r.manager.startStream(c),
      'stream.stop': (c) => r.manager.stopStream(c),
      'record.start': () => ({ ok: true }),
      'record.stop': () => ({ ok: true }),
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
