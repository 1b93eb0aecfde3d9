// The live view's policy: which sessions exist, how each one ends, and who is told. It runs the
// stream.start and stream.stop actions of authorised commands, opens the capture's live valve
// while someone watches (and closes it when the last viewer goes), asks for keyframes when a
// viewer connects or reports picture loss, and ends every session on each path: stream.stop,
// max_s, the viewer gone, a viewer that never connected, capture that does not come back, and
// agent shutdown. Each start and end is audited with its cause, sent as an event, shown in
// `state`, and (unless covert mode is configured) felt by the wearer.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import type { AuthorisedCommand } from '../command/authorised-command.ts';
import type { ActionResult } from '../command/command-handler.ts';
import type { DeviceState, StreamSessionState } from '../state/device-state.ts';
import { EncoderRateHysteresis, LinkBitrate, type LinkSample } from './bitrate.ts';
import type { StreamConfig } from './config.ts';
import { resolveIce, type ResolvedIce } from './ice.ts';
import { viewerFingerprint } from './offer.ts';
import type { IceAnswer, IceAnswerOutcome, IceAnswerRefusal } from './ice-signalling.ts';
import type { SessionLinkState, StreamSessionOptions } from './session.ts';
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

/** The capture side the live view needs (CaptureSupervisor). */
export interface LiveSource {
  setLive(open: boolean): void;
  requestKeyframe(): void;
  /** The live encoder's bitrate (bandwidth adaptation). */
  setLiveBitrate(kbps: number): void;
  /** Whether the live view has an encoder of its own whose bitrate can change. */
  liveBitrateAdjustable(): boolean;
}

/** Tells the wearer (firmware extension); never called in covert mode. */
export interface WearerNotice {
  streamStarted(): void;
  streamStopped(): void;
  /** Whether any live view is running, for the streaming LED. */
  streaming(active: boolean): void;
}

/** The parts of StreamSession the manager uses: lets tests drive it without sockets. */
export interface LiveSession {
  readonly sid: string;
  readonly command: AuthorisedCommand;
  readonly offer: { fingerprint: string };
  readonly audio: boolean;
  lastHeardAt: number;
  linkState: SessionLinkState;
  readonly counters: { videoPackets: number; audioPackets: number };
  on(event: 'link', listener: (s: SessionLinkState) => void): unknown;
  on(event: 'pictureLoss', listener: () => void): unknown;
  sendVideo(packet: Buffer): void;
  sendAudio(packet: Buffer): void;
  sourceChanged(kind: 'video' | 'audio'): void;
  /** The link since the last call: bandwidth adaptation. */
  sample(now: number): LinkSample;
  readonly rttMs: number | undefined;
  readonly iceRestarts: number;
  /** Starts an ICE restart as offerer; resolves with the offer for the viewer. */
  restartIce(ice: ResolvedIce): Promise<string>;
  acceptRestartAnswer(sdp: string): Promise<void>;
  close(): Promise<void>;
}

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
export const streamRefusalCodes = ['unavailable', 'busy', 'capture_unavailable', ...openRefusalCodes, 'internal_error', 'audit_failed', 'unknown_session'] as const;
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
  /** Sends an ICE restart offer to the viewer (IceSignalling.publishOffer). */
  publishRestartOffer?: (sid: string, generation: number, offer: string, cause: RestartCause) => void;
}

/** Why the camera restarted ICE (in the offer's claims, the audit and the ops console's words). */
export const restartCauses = ['network_changed', 'ice_failed', 'viewer_silent'] as const;
export type RestartCause = (typeof restartCauses)[number];

// A restart offer not answered (or not connecting) within this long is made again, with the
// next generation, until the viewer answers or viewerLostGrace ends the session.
const restartRetryMs = 5000;
// How often the live bitrate is reconsidered.
const adaptIntervalMs = 1000;

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
  link: LinkBitrate;
  /** Restart offers made (the generation of the latest). */
  generation: number;
  /** The restart offered and not yet answered. */
  restart: { generation: number; cause: RestartCause; offeredAt: number } | undefined;
  /** The device's addresses changed since the session's path was set up. */
  networkChanged: boolean;
}

export class StreamManager {
  readonly name = 'stream';
  readonly #o: StreamManagerOptions;
  readonly #log: Logger;
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
  readonly #rate: EncoderRateHysteresis;
  #lastAdaptAt = 0;

  constructor(options: StreamManagerOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'stream' });
    this.#open = options.openSession ?? openStreamSession;
    this.#resolveIce = options.resolveIce ?? resolveIce;
    this.#rate = new EncoderRateHysteresis(options.config.bitrate.startKbps);
  }

  /** The device's addresses changed: every connected session restarts ICE on the new ones. */
  networkChanged(): void {
    for (const r of this.#sessions.values()) if (r.connectedAt !== undefined) r.networkChanged = true;
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
    if (!this.#o.openSession) setTimeout(() => void loadSessionModule(), 1000).unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#checkTimer);
    await Promise.all([...this.#sessions.keys()].map((sid) => this.#end(sid, 'agent_shutdown')));
  }

  /** RTP from the capture worker: to every connected viewer, as it came. */
  onVideo(packet: Buffer): void {
    if (packet.length < 12) return;
    const r = this.#receivers;
    const ssrc = packet.readUInt32BE(8);
    if (ssrc !== this.#videoSsrc) this.#videoSsrc = this.#sourceChanged('video', this.#videoSsrc, ssrc);
    for (let i = 0; i < r.length; i++) r[i]!.sendVideo(packet);
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
    let ice: ResolvedIce;
    let opened: { session: LiveSession; answer: string };
    // The slot is taken before the first await and handed to #sessions in the same synchronous
    // step as it is given back, so activeCount never drops in between.
    this.#opening += 1;
    try {
      ice = await this.#resolveIce(this.#o.config.ice);
      opened = await this.#open({ sid, command, ice, audio: this.#o.audio, logger: this.#o.logger });
    } catch (err) {
      const errCode = (err as { code?: unknown }).code;
      const code = isOpenRefusalCode(errCode) ? errCode : 'internal_error';
      this.#log.warn({ sid, code, reason: errorMessage(err) }, 'live view not opened');
      return { ok: false, code, message: errorMessage(err) };
    } finally {
      this.#opening -= 1;
    }
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
      // A second viewer starts from the rate the first has: the encoder is theirs together.
      link: new LinkBitrate({ ...this.#o.config.bitrate, startKbps: this.#receivers.length > 0 ? this.#rate.appliedKbps : this.#o.config.bitrate.startKbps }),
      generation: 0,
      restart: undefined,
      networkChanged: false,
    };
    this.#sessions.set(sid, running);
    session.on('link', (s) => this.#onLink(sid, s));
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

  #onLink(sid: string, state: SessionLinkState): void {
    const r = this.#sessions.get(sid);
    if (!r) return;
    if (state === 'connected') {
      if (r.connectedAt === undefined) {
        r.connectedAt = Date.now();
        this.#log.info({ sid, afterMs: r.connectedAt - r.startedAt }, 'viewer connected');
        this.#o.sendEvent({ type: 'stream.connected', time: new Date(r.connectedAt).toISOString(), sid });
        if (!this.#o.config.covert && !r.notified) {
          r.notified = true;
          this.#o.wearer.streamStarted();
        }
      }
      r.session.sample(Date.now());
      this.#refreshReceivers();
      // A viewer joining mid-stream sees a picture now, not at the next GOP.
      this.#o.capture.requestKeyframe();
    } else if (state === 'closed') {
      void this.#end(sid, 'viewer_closed');
    } else {
      this.#refreshReceivers();
    }
    this.#publish();
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
      const interrupted = r.session.linkState !== 'connected' || silentMs > quietMs;
      if (interrupted !== r.interrupted) {
        r.interrupted = interrupted;
        changed = true;
      }
      const cause: RestartCause | undefined = r.networkChanged
        ? 'network_changed'
        : r.session.linkState === 'failed'
          ? 'ice_failed'
          : silentMs > quietMs
            ? 'viewer_silent'
            : undefined;
      // A new address overrides a restart still open: its offer named the old one.
      if (cause && this.#o.publishRestartOffer && (r.restart === undefined || cause === 'network_changed' || now - r.restart.offeredAt > restartRetryMs)) {
        r.networkChanged = false;
        void this.#restart(sid, r, cause);
      }
    }
    if (changed) this.#publish();
    if (now - this.#lastAdaptAt >= adaptIntervalMs) this.#adapt(now);
    if (this.#captureDownSince !== undefined && now - this.#captureDownSince > this.#o.config.captureLossGrace * 1000) {
      for (const sid of this.#sessions.keys()) void this.#end(sid, 'capture_failed');
    }
  }

  async #end(sid: string, cause: StreamEndCause, by?: AuthorisedCommand): Promise<void> {
    const r = this.#sessions.get(sid);
    if (!r) return;
    this.#sessions.delete(sid);
    clearTimeout(r.maxTimer);
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
      iceRestarts: session.iceRestarts,
    };
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
    for (const r of this.#sessions.values()) if (r.session.linkState === 'connected') next.push(r.session);
    const was = this.#receivers.length > 0;
    this.#receivers = next;
    if (was !== next.length > 0) {
      if (next.length > 0 && this.#adaptive()) {
        // The live encoder idled while nobody watched: a new view starts at the starting rate.
        this.#rate.reset(this.#o.config.bitrate.startKbps);
        this.#o.capture.setLiveBitrate(this.#o.config.bitrate.startKbps);
      }
      this.#o.capture.setLive(next.length > 0);
      if (!this.#o.config.covert) this.#o.wearer.streaming(next.length > 0);
    }
  }

  #publish(): void {
    const list: StreamSessionState[] = [...this.#sessions.values()].map((r) => ({
      sid: r.session.sid,
      operator: r.session.command.operator,
      reason: r.session.command.reason,
      state: r.connectedAt === undefined ? 'connecting' : r.interrupted || r.session.linkState !== 'connected' ? 'interrupted' : 'connected',
      startedAt: new Date(r.startedAt).toISOString(),
      endsBy: new Date(r.endsBy).toISOString(),
      covert: this.#o.config.covert,
      rttMs: r.session.rttMs ?? null,
      iceRestarts: r.session.iceRestarts,
    }));
    const bitrateKbps = this.#receivers.length > 0 && this.#adaptive() ? this.#rate.appliedKbps : null;
    this.#o.state.update({ streaming: { sessions: list.length, bitrateKbps, list } });
  }

  #adaptive(): boolean {
    return this.#o.config.bitrate.adapt && this.#o.capture.liveBitrateAdjustable();
  }

  /** The live encoder follows the worst connected viewer's link. */
  #adapt(now: number): void {
    this.#lastAdaptAt = now;
    if (this.#receivers.length === 0 || !this.#adaptive()) return;
    let lowest = Infinity;
    const links: { sid: string; sendKbps: number; loss: number | undefined; deliveredKbps: number | undefined; targetKbps: number }[] = [];
    for (const [sid, r] of this.#sessions) {
      if (r.session.linkState !== 'connected') continue;
      const sample = r.session.sample(now);
      const target = r.link.update(sample, now);
      lowest = Math.min(lowest, target);
      links.push({ sid, sendKbps: Math.round(sample.sendKbps), loss: sample.lossFraction, deliveredKbps: sample.deliveredKbps && Math.round(sample.deliveredKbps), targetKbps: Math.round(target) });
    }
    if (lowest === Infinity) return;
    const next = this.#rate.next(lowest, now);
    if (next === undefined) return;
    this.#o.capture.setLiveBitrate(next);
    this.#log.info({ kbps: next, links }, 'live bitrate');
    this.#publish();
  }

  async #restart(sid: string, r: Running, cause: RestartCause): Promise<void> {
    const generation = ++r.generation;
    r.restart = { generation, cause, offeredAt: Date.now() };
    let offer: string;
    try {
      const ice = await this.#resolveIce(this.#o.config.ice);
      offer = await r.session.restartIce(ice);
    } catch (err) {
      this.#log.warn({ sid, generation, cause, err: errorMessage(err) }, 'ICE restart not offered');
      return;
    }
    if (this.#sessions.get(sid) !== r || r.restart?.generation !== generation) return;
    try {
      this.#o.audit.append({ type: 'stream.ice_restart', operator: null, action: null, reason: cause, tokenDigest: null, detail: { sid, generation, cause } });
    } catch (err) {
      this.#log.error({ sid, err: errorMessage(err) }, 'ICE restart could not be audited');
    }
    this.#log.info({ sid, generation, cause }, 'ICE restart offered to the viewer');
    this.#o.publishRestartOffer?.(sid, generation, offer, cause);
  }

  /** A verified restart answer (IceSignalling): applied only to its session's current restart, from its viewer. */
  async acceptRestartAnswer(a: IceAnswer): Promise<IceAnswerOutcome> {
    const r = this.#sessions.get(a.sid);
    const refuse = (code: string, message: string): IceAnswerOutcome => {
      this.restartAnswerRefused({ sid: a.sid, code, message, tokenDigest: a.tokenDigest });
      return { ok: false, code, message };
    };
    if (!r) return refuse('unknown_session', `no live session ${JSON.stringify(a.sid)}`);
    if (r.restart?.generation !== a.generation) {
      return refuse('stale_generation', `answer is for restart ${a.generation}; the session's open restart is ${r.restart?.generation ?? 'none'}`);
    }
    // Only the viewer the stream.start named (its DTLS certificate, and no other beside it) may move the media.
    let fingerprint: string;
    try {
      fingerprint = viewerFingerprint(a.answer, 'the answer');
    } catch (err) {
      return refuse('wrong_viewer', errorMessage(err));
    }
    if (fingerprint !== r.session.offer.fingerprint) return refuse('wrong_viewer', "the answer's DTLS fingerprint is not the viewer's");
    const { cause } = r.restart;
    r.restart = undefined;
    // A signed answer is the viewer speaking: it is there, whatever the media path is doing.
    r.session.lastHeardAt = Date.now();
    try {
      await r.session.acceptRestartAnswer(a.answer);
    } catch (err) {
      return refuse('bad_answer', `the answer could not be applied: ${errorMessage(err)}`);
    }
    try {
      this.#o.audit.append({
        type: 'stream.ice_restarted',
        operator: a.operator,
        action: null,
        reason: cause,
        tokenDigest: a.tokenDigest,
        detail: { sid: a.sid, generation: a.generation, cause, issuer: a.issuer, jti: a.jti },
      });
    } catch (err) {
      this.#log.error({ sid: a.sid, err: errorMessage(err) }, 'ICE restart answer could not be audited');
    }
    this.#log.info({ sid: a.sid, generation: a.generation, cause, operator: a.operator }, 'ICE restart answered; reconnecting');
    this.#o.sendEvent({ type: 'stream.ice_restarted', time: new Date().toISOString(), sid: a.sid, generation: a.generation, cause });
    return { ok: true };
  }

  /** A restart answer refused (here or by IceSignalling): audited, as every decision about authority is. */
  restartAnswerRefused(refusal: { sid: string; code: IceAnswerRefusal | string; message: string; tokenDigest: string | undefined }): void {
    try {
      this.#o.audit.append({
        type: 'stream.ice_refused',
        operator: null,
        action: null,
        reason: refusal.code,
        tokenDigest: refusal.tokenDigest ?? null,
        detail: { sid: refusal.sid, code: refusal.code, message: refusal.message },
      });
    } catch (err) {
      this.#log.error({ sid: refusal.sid, err: errorMessage(err) }, 'refused ICE answer could not be audited');
    }
  }
}
