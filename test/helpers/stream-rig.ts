// The stand-ins the live view's unit tests drive StreamManager with (stream-manager.test.ts,
// ice-restart.test.ts, bitrate.test.ts): sessions without sockets, real authorised commands from
// the real verifier, and a rig that records what the manager audits, sends and sets.
import { EventEmitter } from 'node:events';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { AuthorisedCommand } from '../../src/command/authorised-command.ts';
import { ReplayCache } from '../../src/command/replay-cache.ts';
import { TrustStore } from '../../src/command/trust-store.ts';
import { CommandVerifier } from '../../src/command/verifier.ts';
import type { StreamConfig } from '../../src/stream/config.ts';
import { streamConfigSchema } from '../../src/stream/config.ts';
import type { PathSample } from '../../src/stream/bitrate.ts';
import type { ResolvedIce } from '../../src/stream/ice.ts';
import type { ViewerConnectionState } from '../../src/stream/session.ts';
import { StreamManager, type LiveSession, type OpenSession } from '../../src/stream/stream-manager.ts';
import type { DeviceStateDoc } from '../../src/state/device-state.ts';
import { openDatabase } from '../../src/store/database.ts';
import { makeCommand, makeIssuer, testPolicy, trustStoreJwks } from './command-tokens.ts';

export const logger = pino({ level: 'silent' });
export const deviceId = 'cam-unit';

/** A command through the real verifier; `offer`: the stream.start's SDP (default a fresh sdpOffer()). */
export async function authorised(action: 'stream.start' | 'stream.stop', overrides: Record<string, unknown> = {}, offer?: string): Promise<AuthorisedCommand> {
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
  const verdict = await verifier.verify(makeCommand({ issuer, deviceId, action, overrides, ...(offer === undefined ? {} : { offer }) }).payload);
  db.close();
  if (!verdict.ok) throw new Error(`test command refused: ${verdict.code} ${verdict.message}`);
  return verdict.command;
}

export class FakeSession extends EventEmitter implements LiveSession {
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
  nextSample: PathSample = { sendKbps: 0, lossFraction: undefined, deliveredKbps: undefined, intervalMs: 1000 };
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
  sample(): PathSample {
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

export interface Rig {
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

export function rig(config: Partial<StreamConfig> = {}, options: { failAudit?: boolean; open?: OpenSession; maxSessions?: number } = {}): Rig {
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
export function rtp(ssrc: number): Buffer {
  const b = Buffer.alloc(24);
  b[0] = 0x80;
  b.writeUInt32BE(ssrc, 8);
  return b;
}

export const until = async (what: string, predicate: () => boolean, timeoutMs = 10_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

/** A viewer's SDP answer naming the DTLS certificate `fingerprint` (sha-256). */
export const answerSdp = (fingerprint: string) =>
  ['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 't=0 0', `a=fingerprint:sha-256 ${fingerprint}`, 'm=video 9 UDP/TLS/RTP/SAVPF 96', 'c=IN IP4 0.0.0.0', 'a=mid:0', 'a=recvonly', 'a=rtpmap:96 H264/90000', ''].join('\r\n');

/** An H.264 RTP packet (RFC 6184) whose payload is `nal` as given: single NAL, STAP-A or FU-A bytes. */
export function h264Rtp(o: { ssrc?: number; seq: number; ts: number; marker?: boolean; nal: number[]; size?: number }): Buffer {
  const payload = Buffer.alloc(Math.max(o.nal.length, o.size ?? 0));
  Buffer.from(o.nal).copy(payload);
  const b = Buffer.alloc(12 + payload.length);
  b[0] = 0x80;
  b[1] = (o.marker ? 0x80 : 0) | 96;
  b.writeUInt16BE(o.seq & 0xffff, 2);
  b.writeUInt32BE(o.ts >>> 0, 4);
  b.writeUInt32BE(o.ssrc ?? 1, 8);
  payload.copy(b, 12);
  return b;
}

/** One frame as x264 + rtph264pay send it: a keyframe is SPS+PPS in a STAP-A, then the IDR in FU-A fragments. */
export function h264Frame(o: { ssrc?: number; seq: number; ts: number; keyframe: boolean; fragments?: number }): Buffer[] {
  const n = o.fragments ?? 2;
  const out: Buffer[] = [];
  let seq = o.seq;
  if (o.keyframe) out.push(h264Rtp({ ssrc: o.ssrc, seq: seq++, ts: o.ts, nal: [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce] }));
  const type = o.keyframe ? 5 : 1;
  for (let i = 0; i < n; i++) {
    const fuHeader = (i === 0 ? 0x80 : 0) | (i === n - 1 ? 0x40 : 0) | type;
    out.push(h264Rtp({ ssrc: o.ssrc, seq: seq++, ts: o.ts, marker: i === n - 1, nal: [0x60 | 28, fuHeader], size: 1000 }));
  }
  return out;
}
