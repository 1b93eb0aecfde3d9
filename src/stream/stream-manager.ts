// The live view's policy: which sessions exist, how each one ends, and who is told. It runs the
// stream.start and stream.stop actions of authorised commands, opens the capture's live valve
// while someone watches (and closes it when the last viewer goes), asks for keyframes when a
// viewer connects or reports picture loss, and ends every session on each path: stream.stop,
// max_s, the viewer gone, a viewer that never connected, capture that does not come back, and
// agent shutdown. Each start and end is audited with its cause, sent as an event, shown in
// `state`, and (unless covert mode is configured) felt by the wearer.
import type { Logger } from 'pino';
import type { Extension } from '../agent/extension.ts';
import type { AuditLog } from '../audit/audit-log.ts';
import type { AuthorisedCommand } from '../command/authorised-command.ts';
import type { ActionResult } from '../command/command-handler.ts';
import type { DeviceState, StreamSessionState } from '../state/device-state.ts';
import { LiveBitrateLoop, type PathBitrate, type PathSample, type LiveEncoder } from './bitrate.ts';
import type { StreamConfig } from './config.ts';
import { resolveIce, type ResolvedIce } from './ice.ts';
import { auditRefusedAnswer, IceRestart, type RestartableSession, type RestartCause } from './ice-restart.ts';
import type { IceAnswer, IceAnswerOutcome, IceAnswerRefusal } from './ice-signalling.ts';
import type { ViewerConnectionState, StreamSessionOptions, SessionTimings } from './session.ts';
import type { Talkback } from './talkback.ts';
import { GopCache, isKeyframeStart } from './gop-cache.ts';
import { newSessionId } from './session-id.ts';
import { errorMessage } from '../errors.ts';

/** Why a session ended: in the audit entry, the event and the log (and the ops console's words). */
export const streamEndCauses = [
  'stream_stop',
  'max_duration',
  'viewer_lost',
  'viewer_closed',
  'connect_timeout',
  'capture_failed',
  'agent_shutdown',
  'audit_failed',
] as const;
export type StreamEndCause = (typeof streamEndCauses)[number];

/** The capture side the live view needs (CaptureSupervisor); its bitrate is LiveBitrateLoop's. */
export interface LiveSource extends LiveEncoder {
  setLive(open: boolean): void;
  requestKeyframe(): void;
}

/** Tells the wearer (firmware extension); never called in covert mode. */
export interface WearerNotice {
  streamStarted(): void;
  streamStopped(): void;
  /** Whether any live view is running, for the streaming LED. */
  streaming(active: boolean): void;
}

/** The parts of StreamSession the manager uses: lets tests drive it without sockets. */
export interface LiveSession extends RestartableSession {
  readonly sid: string;
  readonly command: AuthorisedCommand;
  readonly audio: boolean;
  connection: ViewerConnectionState;
  readonly counters: { videoPackets: number; audioPackets: number; talkPackets?: number; talkRefusedPackets?: number };
  /** Talk-back granted (and enabled and offered): the camera receives the viewer's audio. */
  readonly talk?: boolean;
  on(event: 'connection', listener: (s: ViewerConnectionState) => void): unknown;
  on(event: 'pictureLoss', listener: () => void): unknown;
  sendVideo(packet: Buffer): void;
  sendAudio(packet: Buffer): void;
  sourceChanged(kind: 'video' | 'audio'): void;
  /** The viewer's network path since the last call: bandwidth adaptation. */
  sample(now: number): PathSample;
  readonly rttMs: number | undefined;
  readonly iceRestarts: number;
  /** When its first steps happened (StreamSession has them; a test double may not). */
  readonly timings?: SessionTimings;
  close(): Promise<void>;
}

/**
 * The first-frame breakdown of one session (issue 18), epoch ms, 0 until reached; logged once as
 * "live view first keyframe sent" with each step's offset from the command's arrival.
 */
interface FirstFrameSteps {
  /** The command reached the agent (before verification). */
  receivedAt: number;
  /** Verified and queued: the stream.start action began. */
  startedAt: number;
  /** Answer made (gathering done). */
  answeredAt: number;
  /** stream.start audit entry committed; the reply goes out next. */
  auditedAt: number;
  /** The viewer's DTLS handshake completed. */
  dtlsConnectedAt: number;
  /** First RTP packet handed to werift for this viewer. */
  firstPacketAt: number;
  /** First keyframe packet handed to werift for this viewer. */
  keyframeAt: number;
  /** Where that keyframe came from. */
  keyframeSource: 'gop-cache' | 'encoder' | undefined;
  /** Age of the cached GOP when it was sent. */
  gopAgeMs: number | undefined;
}

// The most a cached GOP may hold: a 1 s GOP at the 2000 kbit/s ceiling is ~250 KB; past this the
// cache waits for the next keyframe rather than keep an ever longer run of P-frames.
const gopCacheMaxBytes = 512 * 1024;
// A cached GOP older than this is not sent: the viewer would start that far behind and catch up
// in a burst; it gets a keyframe asked of the encoder instead (the old way). Above the default
// 1 s keyframe interval (capture.keyframeIntervalS) with room for a loaded encoder's late frames.
const gopFlushMaxAgeMs = 1500;
// A cached GOP older than this is sent, and a fresh keyframe asked for as well, so the viewer is
// at the live edge within one keyframe rather than one GOP.
const gopFreshMs = 300;

export type OpenSession = (o: StreamSessionOptions) => Promise<{ session: LiveSession; answer: string }>;

// werift takes ~120 ms to load: not on the way to the first `online` state, but in the background
// soon after start, and awaited by the first stream.start if that comes sooner.
let sessionModule: Promise<typeof import('./session.ts')> | undefined;
const loadSessionModule = () => (sessionModule ??= import('./session.ts'));
const openStreamSession: OpenSession = async (o) => (await loadSessionModule()).StreamSession.open(o);

/** Codes of the errors StreamSession.open and resolveIce throw for a bad offer or network. */
const openRefusalCodes = ['unsupported_offer', 'no_network'] as const;
const isOpenRefusalCode = (code: unknown): code is (typeof openRefusalCodes)[number] => (openRefusalCodes as readonly unknown[]).includes(code);

/**
 * The codes a stream.start or stream.stop reply can refuse with here (the verifier's and the
 * command handler's come on top); declared so the ops console's words are checked against them.
 */
export const streamRefusalCodes = ['unavailable', 'busy', 'capture_unavailable', ...openRefusalCodes, 'internal_error', 'audit_failed', 'unknown_session', 'not_recording'] as const;
export type StreamRefusalCode = (typeof streamRefusalCodes)[number];
/** An ActionResult whose refusal code is one of streamRefusalCodes. */
type StreamActionResult = Extract<ActionResult, { ok: true }> | { ok: false; code: StreamRefusalCode; message: string };

export interface StreamManagerOptions {
  config: StreamConfig;
  /** capture.audio: whether there is audio to send. */
  audio: boolean;
  /** commands.maxConcurrentStreams. */
  maxSessions: number;
  capture: LiveSource;
  audit: Pick<AuditLog, 'append'>;
  sendEvent: (body: Record<string, unknown>) => void;
  state: Pick<DeviceState, 'update'>;
  wearer: WearerNotice;
  logger: Logger;
  /** Default StreamSession.open; tests pass their own. */
  openSession?: OpenSession;
  /** Default resolveIce. */
  resolveIce?: (ice: StreamConfig['ice']) => Promise<ResolvedIce>;
  /** How often the viewer-lost and capture checks run. */
  checkIntervalMs?: number;
  /**
   * Runs where a stream.start is accepted, before the session opens (stream.whileNotRecording:
   * OfficerExtension.beforeStream starts a recording, or refuses): a refusal ends the start.
   */
  beforeStart?: (sid: string, command: AuthorisedCommand) => { ok: false; code: 'not_recording'; message: string } | { ok: true } | undefined;
  /** Sends an ICE restart offer to the viewer (IceSignalling.publishOffer). */
  publishRestartOffer?: (sid: string, generation: number, offer: string, cause: RestartCause) => void;
  /** Talk-back (talkback.ts); absent or talkback.enabled false: every view is receive-only. */
  talkback?: Pick<Talkback, 'audio' | 'refused' | 'warm' | 'sessionEnded'>;
}


interface Running {
  session: LiveSession;
  startedAt: number;
  /** When max_s runs out: the command's arrival plus max_s. */
  endsBy: number;
  connectedAt: number | undefined;
  notified: boolean;
  /** Shown in `state`: connected once, and the viewer not heard for a while (or ICE failed). */
  interrupted: boolean;
  maxTimer: NodeJS.Timeout;
  /** The viewer's target bitrate (LiveBitrateLoop). */
  bitrate: PathBitrate;
  /** Mends the session's path (ice-restart.ts). */
  iceRestart: IceRestart;
  steps: FirstFrameSteps;
}

export class StreamManager implements Extension {
  readonly name = 'stream';
  readonly #o: StreamManagerOptions;
  readonly #log: Logger;
  /** Aborts the start-up warm-up handshake (warm-up.ts) when the agent stops. */
  #warmUp: AbortController | undefined;
  readonly #open: OpenSession;
  readonly #resolveIce: (ice: StreamConfig['ice']) => Promise<ResolvedIce>;
  readonly #sessions = new Map<string, Running>();
  /** Connected sessions, as an array so the per-packet fan-out allocates nothing. */
  #receivers: LiveSession[] = [];
  #checkTimer: NodeJS.Timeout | undefined;
  #captureDownSince: number | undefined;
  /** SSRC of the capture worker's RTP: a new one means a new worker (a restart). */
  #videoSsrc = -1;
  #audioSsrc = -1;
  #stopped = false;
  readonly #bitrate: LiveBitrateLoop;
  /** stream.firstFrame "gop-cache": the latest GOP, kept while the valve is open. */
  readonly #gop: GopCache | undefined;
  /** Whether the capture's live valve is open (viewers connected, or, with the GOP cache, views opening). */
  #live = false;
  /** Connected sessions still waiting for their first keyframe from the encoder. */
  #awaitingKeyframe: Running[] = [];

  constructor(options: StreamManagerOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'stream' });
    this.#open = options.openSession ?? openStreamSession;
    this.#resolveIce = options.resolveIce ?? resolveIce;
    this.#bitrate = new LiveBitrateLoop(options.config.bitrate, options.capture, this.#log);
    this.#gop = options.config.firstFrame === 'gop-cache' ? new GopCache(gopCacheMaxBytes) : undefined;
  }

  /** The device's addresses changed: every connected session restarts ICE on the new ones. */
  networkChanged(): void {
    for (const r of this.#sessions.values()) if (r.connectedAt !== undefined) r.iceRestart.networkChanged();
    this.#check();
  }

  /**
   * Sessions accepted and not yet ended (opening, connecting or connected): the verifier's `busy`
   * count. A stream.start still gathering counts, so the command queue may move on meanwhile.
   */
  get activeCount(): number {
    return this.#sessions.size + this.#opening;
  }

  start(): void {
    this.#stopped = false;
    this.#checkTimer = setInterval(() => this.#check(), this.#o.checkIntervalMs ?? 500);
    this.#checkTimer.unref();
    this.#publish();
    // werift, and its DTLS certificate (made once per process, ~10-30 ms of crypto the first view
    // would otherwise wait for), ready before the first stream.start.
    // 1 s after start (before issue 18) kept the load off the way to the first `online`, but a
    // stream.start soon after start-up then waited for it; with the GOP cache it starts at 200 ms,
    // after the link is under way (its connect is mostly waiting on the network).
    const preloadMs = this.#gop ? 200 : 1000;
    if (!this.#o.openSession) setTimeout(() => void this.#prepareFirstView(), preloadMs).unref();
  }

  /** The certificate, then (stream.warmUp) one loopback handshake, unless a view is already under way. */
  async #prepareFirstView(): Promise<void> {
    await (await loadSessionModule()).prepareDtlsCertificate();
    if (!this.#o.config.warmUp || this.#stopped) return;
    if (this.activeCount > 0) {
      this.#log.info('live view warm-up skipped: a view is already under way');
      return;
    }
    this.#warmUp = new AbortController();
    await (await import('./warm-up.ts')).warmUpAndLog(this.#log, this.#warmUp.signal);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#checkTimer);
    this.#warmUp?.abort();
    await Promise.all([...this.#sessions.keys()].map((sid) => this.#end(sid, 'agent_shutdown')));
  }

  /** RTP from the capture worker: to every connected viewer, as it came. */
  onVideo(packet: Buffer): void {
    if (packet.length < 12) return;
    const r = this.#receivers;
    const ssrc = packet.readUInt32BE(8);
    if (ssrc !== this.#videoSsrc) this.#videoSsrc = this.#sourceChanged('video', this.#videoSsrc, ssrc);
    const keyframe = (this.#gop !== undefined || this.#awaitingKeyframe.length > 0) && isKeyframeStart(packet);
    this.#gop?.push(packet, keyframe, Date.now());
    for (let i = 0; i < r.length; i++) r[i]!.sendVideo(packet);
    if (this.#awaitingKeyframe.length > 0) this.#noteSent(keyframe);
  }

  /** First-frame breakdown of the viewers waiting for a keyframe from the encoder. */
  #noteSent(keyframe: boolean): void {
    const now = Date.now();
    const waiting: Running[] = [];
    for (const r of this.#awaitingKeyframe) {
      if (!this.#sessions.has(r.session.sid)) continue;
      if (r.session.connection !== 'connected') {
        waiting.push(r);
        continue;
      }
      if (r.steps.firstPacketAt === 0) r.steps.firstPacketAt = now;
      if (!keyframe) {
        waiting.push(r);
        continue;
      }
      r.steps.keyframeAt = now;
      r.steps.keyframeSource = 'encoder';
      this.#logFirstFrame(r);
    }
    this.#awaitingKeyframe = waiting;
  }

  #logFirstFrame(r: Running): void {
    const s = r.steps;
    const t = r.session.timings;
    const at = (ms: number) => (ms > 0 ? ms - s.receivedAt : null);
    this.#log.info(
      {
        sid: r.session.sid,
        firstFrame: this.#o.config.firstFrame,
        source: s.keyframeSource,
        gopAgeMs: s.gopAgeMs ?? null,
        receivedAt: s.receivedAt,
        // ms after the command reached the agent
        steps: {
          verified: at(s.startedAt),
          gatherStarted: at(t?.gatherStartedAt ?? 0),
          gathered: at(t?.gatheredAt ?? 0),
          answered: at(s.answeredAt),
          audited: at(s.auditedAt),
          iceConnected: at(t?.iceConnectedAt ?? 0),
          dtlsConnected: at(s.dtlsConnectedAt),
          firstPacket: at(s.firstPacketAt),
          keyframe: at(s.keyframeAt),
        },
      },
      'live view first keyframe sent',
    );
  }

  onAudio(packet: Buffer): void {
    if (packet.length < 12) return;
    const r = this.#receivers;
    const ssrc = packet.readUInt32BE(8);
    if (ssrc !== this.#audioSsrc) this.#audioSsrc = this.#sourceChanged('audio', this.#audioSsrc, ssrc);
    for (let i = 0; i < r.length; i++) r[i]!.sendAudio(packet);
  }

  #sourceChanged(kind: 'video' | 'audio', was: number, now: number): number {
    if (was !== -1) {
      this.#log.info({ kind, ssrc: now }, 'capture RTP source changed (worker restarted): rebasing the live streams');
      if (kind === 'video') this.#gop?.clear();
      for (const r of this.#sessions.values()) r.session.sourceChanged(kind);
    }
    return now;
  }

  /** Capture health: a live view cannot outlast a camera that does not come back. */
  captureRunning(running: boolean): void {
    if (running) this.#captureDownSince = undefined;
    else this.#captureDownSince ??= Date.now();
  }

  /** stream.starts past the busy check and still gathering (resolveIce, open). */
  #opening = 0;

  /** The stream.start action. */
  async startStream(command: AuthorisedCommand): Promise<StreamActionResult> {
    if (this.#stopped) return { ok: false, code: 'unavailable', message: 'the agent is shutting down' };
    // The verifier refuses `busy` in the same step as the replay check; this guards the invariant
    // even if a command reaches here some other way.
    if (this.activeCount >= this.#o.maxSessions) {
      return { ok: false, code: 'busy', message: `already ${this.activeCount} live stream(s), the most allowed` };
    }
    if (this.#captureDownSince !== undefined) {
      return { ok: false, code: 'capture_unavailable', message: 'the camera is not capturing (see state.capture); try again when it runs' };
    }
    const sid = newSessionId();
    const startedAt = Date.now();
    const policy = this.#o.beforeStart?.(sid, command);
    if (policy && !policy.ok) return policy;
    let ice: ResolvedIce;
    let opened: { session: LiveSession; answer: string };
    // The slot is taken before the first await and handed to #sessions in the same synchronous
    // step as it is given back, so activeCount never drops in between.
    this.#opening += 1;
    try {
      ice = await this.#resolveIce(this.#o.config.ice);
      opened = await this.#open({ sid, command, ice, audio: this.#o.audio, fec: this.#o.config.fec === 'auto', logger: this.#o.logger, ...(this.#o.talkback ? { talk: this.#o.talkback } : {}) });
    } catch (err) {
      const errCode = (err as { code?: unknown }).code;
      const code = isOpenRefusalCode(errCode) ? errCode : 'internal_error';
      this.#log.warn({ sid, code, reason: errorMessage(err) }, 'live view not opened');
      this.#opening -= 1;
      return { ok: false, code, message: errorMessage(err) };
    }
    this.#opening -= 1;
    const answeredAt = Date.now();
    const { session, answer } = opened;
    if (this.#stopped) {
      // The agent began stopping while this view was gathering: no view outlives it.
      await session.close();
      return { ok: false, code: 'unavailable', message: 'the agent is shutting down' };
    }
    const now = Date.now();
    const endsBy = command.receivedAt + (command.maxDurationS ?? 0) * 1000;
    const covert = this.#o.config.covert;
    try {
      this.#o.audit.append({
        type: 'stream.start',
        operator: command.operator,
        action: command.action,
        reason: command.reason,
        tokenDigest: command.tokenDigest,
        detail: {
          sid,
          jti: command.jti,
          issuer: command.issuer,
          maxDurationS: command.maxDurationS ?? null,
          endsBy: new Date(endsBy).toISOString(),
          viewerFingerprint: session.offer.fingerprint,
          audio: session.audio,
          talk: session.talk ?? false,
          covert,
          wearerNotified: !covert,
        },
      });
    } catch (err) {
      // No audit entry, no live view: authority that cannot be accounted for is not used.
      await session.close();
      this.#log.error({ sid, err: errorMessage(err) }, 'stream.start could not be audited; live view refused');
      return { ok: false, code: 'audit_failed', message: `the live view could not be audited: ${errorMessage(err)}` };
    }
    const running: Running = {
      session,
      startedAt: now,
      endsBy,
      connectedAt: undefined,
      notified: false,
      interrupted: false,
      maxTimer: setTimeout(() => void this.#end(sid, 'max_duration'), Math.max(0, endsBy - now)),
      bitrate: this.#bitrate.newLink(this.#receivers.length > 0),
      iceRestart: new IceRestart(
        sid,
        session,
        { config: this.#o.config, resolveIce: this.#resolveIce, audit: this.#o.audit, sendEvent: this.#o.sendEvent, publishRestartOffer: this.#o.publishRestartOffer, logger: this.#o.logger },
        this.#log,
      ),
      steps: {
        receivedAt: command.receivedAt,
        startedAt,
        answeredAt,
        auditedAt: Date.now(),
        dtlsConnectedAt: 0,
        firstPacketAt: 0,
        keyframeAt: 0,
        keyframeSource: undefined,
        gopAgeMs: undefined,
      },
    };
    this.#sessions.set(sid, running);
    if (session.talk) this.#o.talkback?.warm();
    // GOP cache: the live encoder starts now (or, already running, is asked for a keyframe), so a
    // picture is cached while the reply travels and ICE and DTLS run. Not earlier: on a busy board
    // the encoder would take CPU from verification and gathering, and a refused view never needs it.
    if (this.#gop && !this.#updateLive()) this.#o.capture.requestKeyframe();
    session.on('connection', (s) => this.#onConnection(sid, s));
    session.on('pictureLoss', () => this.#o.capture.requestKeyframe());
    this.#log.info({ sid, operator: command.operator, reason: command.reason, maxDurationS: command.maxDurationS, covert, audio: session.audio }, 'live view accepted');
    this.#o.sendEvent({ type: 'stream.started', time: new Date(now).toISOString(), sid, operator: command.operator, reason: command.reason, endsBy: new Date(endsBy).toISOString(), covert });
    this.#publish();
    return { ok: true, sid, answer, endsBy: new Date(endsBy).toISOString() };
  }

  /** The stream.stop action. */
  async stopStream(command: AuthorisedCommand): Promise<StreamActionResult> {
    const sid = command.sid ?? '';
    if (!this.#sessions.has(sid)) return { ok: false, code: 'unknown_session', message: `no live session ${JSON.stringify(sid)}` };
    await this.#end(sid, 'stream_stop', command);
    return { ok: true, sid };
  }

  #onConnection(sid: string, state: ViewerConnectionState): void {
    const r = this.#sessions.get(sid);
    if (!r) return;
    if (state === 'connected') {
      const first = r.connectedAt === undefined;
      if (first) r.connectedAt = r.steps.dtlsConnectedAt = Date.now();
      // With the GOP cache the picture goes first: the event below is a durable outbox write and
      // the wearer's notice a serial or GPIO write, measured at 50-700 ms on a loaded machine
      // between DTLS connected and the first packet when they came first (keyframe-on-connect
      // keeps that order, as before).
      if (this.#gop) this.#startMedia(r, first);
      if (first) {
        this.#log.info({ sid, afterMs: r.connectedAt! - r.startedAt }, 'viewer connected');
        this.#o.sendEvent({ type: 'stream.connected', time: new Date(r.connectedAt!).toISOString(), sid });
        if (!this.#o.config.covert && !r.notified) {
          r.notified = true;
          this.#o.wearer.streamStarted();
        }
      }
      if (!this.#gop) this.#startMedia(r, first);
    } else if (state === 'closed') {
      void this.#end(sid, 'viewer_closed');
    } else {
      this.#refreshReceivers();
    }
    this.#publish();
  }

  /** A viewer (re)connected: media to it from now on, starting with a decodable picture. */
  #startMedia(r: Running, first: boolean): void {
    r.session.sample(Date.now());
    // A viewer starts with the cached GOP if there is a recent one, sent before any live packet
    // (same tick); werift renumbers sequence and timestamps per viewer, continuing from it.
    const cached = first && this.#gop ? this.#gop.snapshot(Date.now()) : undefined;
    if (cached) r.steps.gopAgeMs = cached.ageMs;
    if (cached && cached.ageMs <= gopFlushMaxAgeMs) {
      // Stamped before the burst: its first packets are the keyframe's.
      r.steps.firstPacketAt = r.steps.keyframeAt = Date.now();
      for (const packet of cached.packets) r.session.sendVideo(packet);
      r.steps.keyframeSource = 'gop-cache';
      this.#refreshReceivers();
      if (cached.ageMs > gopFreshMs) this.#o.capture.requestKeyframe();
      this.#logFirstFrame(r);
    } else {
      if (first) this.#awaitingKeyframe.push(r);
      this.#refreshReceivers();
      // A viewer joining mid-stream sees a picture now, not at the next GOP.
      this.#o.capture.requestKeyframe();
    }
  }


  #check(): void {
    const now = Date.now();
    const graceMs = this.#o.config.viewerLostGrace * 1000;
    // Chromium sends RTCP about once a second: three missed mean trouble worth showing.
    const quietMs = Math.min(3000, graceMs / 2);
    let changed = false;
    for (const [sid, r] of this.#sessions) {
      if (r.connectedAt === undefined) {
        if (now - r.startedAt > this.#o.config.connectTimeout * 1000) void this.#end(sid, 'connect_timeout');
        continue;
      }
      const silentMs = now - r.session.lastHeardAt;
      if (silentMs > graceMs) {
        void this.#end(sid, 'viewer_lost');
        continue;
      }
      const interrupted = r.session.connection !== 'connected' || silentMs > quietMs;
      if (interrupted !== r.interrupted) {
        r.interrupted = interrupted;
        changed = true;
      }
      r.iceRestart.check(now, r.session.connection, silentMs, quietMs);
    }
    if (changed) this.#publish();
    if (this.#bitrate.tick(now, this.#receivers.length > 0, () => this.#connectedViewers())) this.#publish();
    if (this.#captureDownSince !== undefined && now - this.#captureDownSince > this.#o.config.captureLossGrace * 1000) {
      for (const sid of this.#sessions.keys()) void this.#end(sid, 'capture_failed');
    }
  }

  async #end(sid: string, cause: StreamEndCause, by?: AuthorisedCommand): Promise<void> {
    const r = this.#sessions.get(sid);
    if (!r) return;
    this.#sessions.delete(sid);
    clearTimeout(r.maxTimer);
    r.iceRestart.end();
    this.#refreshReceivers();
    const now = Date.now();
    const { session } = r;
    const detail = {
      sid,
      cause,
      startedBy: session.command.operator,
      durationS: Math.round((now - r.startedAt) / 100) / 10,
      connectedS: r.connectedAt === undefined ? null : Math.round((now - r.connectedAt) / 100) / 10,
      lastHeardS: session.lastHeardAt ? Math.round((now - session.lastHeardAt) / 100) / 10 : null,
      videoPackets: session.counters.videoPackets,
      audioPackets: session.counters.audioPackets,
      talkPackets: session.counters.talkPackets ?? 0,
      talkRefusedPackets: session.counters.talkRefusedPackets ?? 0,
      iceRestarts: session.iceRestarts,
    };
    this.#o.talkback?.sessionEnded(sid);
    try {
      this.#o.audit.append({
        type: 'stream.stop',
        operator: by?.operator ?? null,
        action: by?.action ?? null,
        reason: by?.reason ?? cause,
        tokenDigest: by?.tokenDigest ?? null,
        detail,
      });
    } catch (err) {
      this.#log.error({ sid, cause, err: errorMessage(err) }, 'stream.stop could not be audited');
    }
    this.#log.info(detail, 'live view ended');
    this.#o.sendEvent({ type: 'stream.stopped', time: new Date(now).toISOString(), ...detail });
    if (r.notified) this.#o.wearer.streamStopped();
    this.#publish();
    await session.close();
  }

  #refreshReceivers(): void {
    const next: LiveSession[] = [];
    for (const r of this.#sessions.values()) if (r.session.connection === 'connected') next.push(r.session);
    const was = this.#receivers.length > 0;
    this.#receivers = next;
    if (was !== next.length > 0) {
      if (!this.#o.config.covert) this.#o.wearer.streaming(next.length > 0);
    }
    this.#updateLive();
  }

  /**
   * Opens the capture's live valve while a viewer is connected or, with the GOP cache, while an
   * accepted view waits for the viewer's ICE and DTLS; closes it otherwise. Returns
   * true when this call opened it (the capture then asks for a keyframe itself).
   */
  #updateLive(): boolean {
    let wanted = this.#receivers.length > 0;
    if (!wanted && this.#gop) {
      for (const r of this.#sessions.values()) if (r.connectedAt === undefined) wanted = true;
    }
    if (wanted === this.#live) return false;
    this.#live = wanted;
    // The live encoder idled while the valve was closed, so a view starts at the starting rate.
    if (wanted) this.#bitrate.firstViewer();
    else this.#gop?.clear();
    this.#o.capture.setLive(wanted);
    return wanted;
  }

  #publish(): void {
    const list: StreamSessionState[] = [...this.#sessions.values()].map((r) => ({
      sid: r.session.sid,
      operator: r.session.command.operator,
      reason: r.session.command.reason,
      state: r.connectedAt === undefined ? 'connecting' : r.interrupted || r.session.connection !== 'connected' ? 'interrupted' : 'connected',
      startedAt: new Date(r.startedAt).toISOString(),
      endsBy: new Date(r.endsBy).toISOString(),
      covert: this.#o.config.covert,
      rttMs: r.session.rttMs ?? null,
      iceRestarts: r.session.iceRestarts,
    }));
    const bitrateKbps = this.#bitrate.shownKbps(this.#receivers.length > 0);
    this.#o.state.update({ streaming: { sessions: list.length, bitrateKbps, list } });
  }

  /** The viewers connected now, for the bitrate loop. */
  #connectedViewers(): { sid: string; sample: (now: number) => PathSample; bitrate: PathBitrate }[] {
    const out: { sid: string; sample: (now: number) => PathSample; bitrate: PathBitrate }[] = [];
    for (const [sid, r] of this.#sessions) if (r.session.connection === 'connected') out.push({ sid, sample: (now) => r.session.sample(now), bitrate: r.bitrate });
    return out;
  }

  /** A verified restart answer (IceSignalling): applied only to its session's current restart, from its viewer (ice-restart.ts). */
  async acceptRestartAnswer(a: IceAnswer): Promise<IceAnswerOutcome> {
    const r = this.#sessions.get(a.sid);
    if (!r) {
      const refusal = { ok: false as const, code: 'unknown_session', message: `no live session ${JSON.stringify(a.sid)}` };
      this.restartAnswerRefused({ sid: a.sid, code: refusal.code, message: refusal.message, tokenDigest: a.tokenDigest });
      return refusal;
    }
    return r.iceRestart.accept(a);
  }

  /** A restart answer refused (here or by IceSignalling): audited, as every decision about authority is. */
  restartAnswerRefused(refusal: { sid: string; code: IceAnswerRefusal | string; message: string; tokenDigest: string | undefined }): void {
    auditRefusedAnswer(this.#o.audit, this.#log, refusal);
  }
}
