// One live view: one werift RTCPeerConnection, made from an AuthorisedCommand and nothing else.
// It answers the viewer's receive-only offer with send-only H.264 (and Opus when enabled), hands
// the capture worker's RTP packets to the sender untouched, and reports what it hears of the
// viewer (RTCP, ICE) so the stream manager can tell when the viewer has gone.
//
// Talk-back (issue 19): the camera receives the viewer's audio only when the command grants it
// (claim talk: true, verified against the key's stream.talk grant), talkback is enabled, and the
// offer sends Opus; its audio m-line is then answered sendrecv (recvonly without capture.audio).
// Otherwise it is answered sendonly (or rejected), and every RTP packet the viewer sends anyway is
// dropped where werift's SRTP hands it to its router, before any receiver, jitter buffer or
// decoder: counted (talkRefusedPackets) and reported once (TalkHooks.refused).
//
// Hot path: sendVideo/sendAudio get the UDP datagram Buffer as the capture socket delivered it and
// pass it straight to werift's sender, which parses it once per session (RtpPacket.deSerialize) to
// rewrite SSRC, payload type and sequence for this viewer; nothing here copies or allocates.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import {
  MediaStreamTrack,
  RTCPeerConnection,
  RTCDtlsTransport,
  RTCRtpCodecParameters,
  RtcpRrPacket,
  useH264,
  useNACK,
  useOPUS,
  usePLI,
  useTransportWideCC,
  useTWCC,
  type RTCRtpSender,
  type RTCRtpTransceiver,
  type RtpPacket,
} from 'werift';
import type { PathSample } from './bitrate.ts';
import { isAuthorisedCommand, type AuthorisedCommand } from '../command/authorised-command.ts';
import type { ResolvedIce } from './ice.ts';
import { inspectOffer, type OfferSummary, type RedFecOffer } from './offer.ts';
import { guardDtlsTransports, type SessionGuard } from './werift-guard.ts';
import { extensionBlock, fecRateFor, UlpfecEncoder } from './ulpfec.ts';
import { errorMessage } from '../errors.ts';

/**
 * Makes werift's DTLS certificate (one per process, made by the first peer connection that needs
 * it) ahead of the first view. Failure is not fatal: the first view then makes it itself.
 */
export async function prepareDtlsCertificate(): Promise<void> {
  await RTCDtlsTransport.SetupCertificate().catch(() => undefined);
}

/** The viewer's connection (ICE and DTLS) as the stream manager sees it. */
export type ViewerConnectionState = 'connecting' | 'connected' | 'failed' | 'closed';

export interface StreamSessionEvents {
  connection: [ViewerConnectionState];
  /** The viewer reported picture loss (PLI): it needs a keyframe. */
  pictureLoss: [];
}

export interface StreamSessionOptions {
  sid: string;
  command: AuthorisedCommand;
  ice: ResolvedIce;
  /** Whether the camera sends audio (capture.audio); the viewer must also ask for it. */
  audio: boolean;
  /** stream.fec "auto": RED + ULPFEC when the viewer offers them (ulpfec.ts). */
  fec?: boolean;
  logger: Logger;
  /** Where granted talk-back audio goes and refused audio is reported (talkback.ts); none: never receive. */
  talk?: TalkHooks;
}

/** The talk-back side of a session (Talkback implements it; talkback.enabled: false passes none). */
export interface TalkHooks {
  /** One RTP packet of granted talk-back audio, as decrypted (Opus, the offer's payload type). */
  audio(sid: string, operator: string, packet: Buffer, payloadType: number): void;
  /** The first RTP packet the viewer sent without a talk grant (once per session). */
  refused(sid: string, operator: string, why: string): void;
}

/** Epoch ms of this session's first steps (0: not yet), for the first-frame breakdown (issue 18). */
export interface SessionTimings {
  /** The viewer's offer applied; gathering starts. */
  gatherStartedAt: number;
  /** Every candidate gathered: the answer is ready. */
  gatheredAt: number;
  /** ICE connectivity checks succeeded (DTLS starts). */
  iceConnectedAt: number;
}

export interface SessionCounters {
  videoPackets: number;
  audioPackets: number;
  videoBytes: number;
  /** Talk-back RTP from the viewer handed to the playback (granted). */
  talkPackets: number;
  /** RTP from the viewer dropped before any decoder: no talk grant, or not the talk audio. */
  talkRefusedPackets: number;
}

// Fewer packets than this between two samples' reports give no loss figure.
const minPacketsForLoss = 20;

// How long ICE gathering may take before the answer goes out with what it has: host candidates
// come at once, a STUN server's within werift's own 5 s gather timeout.
const gatherTimeoutMs = 5000;

// Constrained baseline, packetization-mode 1: what every browser decodes and the pipeline makes.
// Feedback: NACK (werift resends from its history, as RTX when the viewer offers it), PLI (a
// keyframe), transport-cc (the bandwidth estimate the live bitrate follows).
const h264PayloadType = 96;
const h264 = () =>
  useH264({
    payloadType: h264PayloadType,
    parameters: 'profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1',
    rtcpFeedback: [useNACK(), usePLI(), useTWCC()],
  });
// Retransmissions on their own SSRC and payload type (RFC 4588): the viewer's jitter buffer tells a
// resent packet from a late one, and its loss statistics stay true.
const rtx = () => new RTCRtpCodecParameters({ mimeType: 'video/rtx', clockRate: 90_000, payloadType: 97, parameters: `apt=${h264PayloadType}` });
// How far the FEC rate follows each receiver report's loss (over at least minPacketsForFec packets).
const fecLossSmoothing = 0.3;
const minPacketsForFec = 50;

/** The parts of werift's RTCRtpSender that RED touches (fields its types call private). */
interface RedSender {
  codec?: RTCRtpCodecParameters;
  rtxPayloadType?: number;
  headerExtensions: { id: number; uri: string }[];
  prepareSend(params: unknown): void;
}

/**
 * The SDP werift wrote (an answer, or an ICE restart offer) with the viewer's RED, ULPFEC and
 * RTX-for-RED payload types added to the video m-line, each with its rtpmap (and the RTX its apt).
 */
export function withRedFec(sdp: string, pts: RedFecOffer): string {
  const nl = sdp.includes('\r\n') ? '\r\n' : '\n';
  const lines = sdp.split(nl);
  const m = lines.findIndex((l) => l.startsWith('m=video '));
  if (m < 0) return sdp;
  let end = lines.findIndex((l, i) => i > m && l.startsWith('m='));
  if (end < 0) end = lines.length;
  const added = [pts.red, pts.ulpfec, ...(pts.rtx === undefined ? [] : [pts.rtx])];
  lines[m] = `${lines[m]} ${added.join(' ')}`;
  let last = m;
  for (let i = m + 1; i < end; i++) if (/^a=(rtpmap|fmtp|rtcp-fb):/.test(lines[i]!)) last = i;
  const maps = [`a=rtpmap:${pts.red} red/90000`, `a=rtpmap:${pts.ulpfec} ulpfec/90000`];
  if (pts.rtx !== undefined) maps.push(`a=rtpmap:${pts.rtx} rtx/90000`, `a=fmtp:${pts.rtx} apt=${pts.red}`);
  lines.splice(last + 1, 0, ...maps);
  return lines.join(nl);
}

export class StreamSession extends EventEmitter<StreamSessionEvents> {
  readonly sid: string;
  readonly command: AuthorisedCommand;
  readonly offer: OfferSummary;
  readonly audio: boolean;
  /** Whether the camera receives the viewer's audio: granted, enabled, and offered. */
  readonly talk: boolean;
  /** Date.now() of the last RTCP packet or ICE connection from the viewer. */
  lastHeardAt = 0;
  connection: ViewerConnectionState = 'connecting';
  readonly counters: SessionCounters = { videoPackets: 0, audioPackets: 0, videoBytes: 0, talkPackets: 0, talkRefusedPackets: 0 };
  readonly timings: SessionTimings = { gatherStartedAt: 0, gatheredAt: 0, iceConnectedAt: 0 };
  // The link since the last sample(): bytes sent, werift's delivered-rate estimates, a new loss report.
  #sampledAt = Date.now();
  #sampledBytes = 0;
  #deliveredSumBps = 0;
  #deliveredCount = 0;
  /** The viewer's latest receiver report (cumulative lost, extended highest sequence) and the one at the last sample. */
  #report: { lost: number; highest: number } | undefined;
  #sampledReport: { lost: number; highest: number } | undefined;
  readonly #pc: RTCPeerConnection;
  readonly #video: RTCRtpSender;
  readonly #audio: RTCRtpSender | undefined;
  readonly #audioTransceiver: RTCRtpTransceiver | undefined;
  readonly #talkHooks: TalkHooks | undefined;
  /** The viewer's Opus payload type (its offer's), the only RTP accepted with a talk grant. */
  #talkPayloadType = -1;
  #talkRefusedReported = false;
  /** RED + ULPFEC for this viewer, when it offered them and stream.fec is "auto" (set once answered). */
  #fec: UlpfecEncoder | undefined;
  /** The viewer's red, ulpfec and RTX-for-RED payload types, when it offered them and stream.fec is "auto". */
  readonly #redFec: RedFecOffer | undefined;
  #fecLoss = 0;
  #fecReport: { lost: number; highest: number } | undefined;
  readonly #log: Logger;
  #closed = false;
  /** Screens what reaches werift's DTLS (see werift-guard.ts); set once the transports exist. */
  #guard: SessionGuard | undefined;
  #outsiderWarned = false;
  /** Whether stream.ice.servers names a stun: server (else werift's default must be undone). */
  readonly #stunConfigured: boolean;
  readonly #onSendError = (err: unknown): void => {
    this.#log.debug({ err: errorMessage(err) }, 'RTP not sent');
  };

  /**
   * Checks the command and its offer, and only then opens sockets (ICE gathering). Throws an
   * OfferError (code unsupported_offer) or TypeError before any socket exists.
   */
  static async open(o: StreamSessionOptions): Promise<{ session: StreamSession; answer: string }> {
    // The type says AuthorisedCommand; a cast could say so of anything, so ask the command module.
    if (!isAuthorisedCommand(o.command) || o.command.action !== 'stream.start' || o.command.offer === undefined) {
      throw new TypeError('a stream session needs an authorised stream.start command');
    }
    const offer = inspectOffer(o.command.offer);
    const session = new StreamSession(o, offer);
    try {
      const answer = await session.#answer(o.command.offer);
      return { session, answer };
    } catch (err) {
      await session.close();
      throw err;
    }
  }

  private constructor(o: StreamSessionOptions, offer: OfferSummary) {
    super();
    this.sid = o.sid;
    this.command = o.command;
    this.offer = offer;
    this.audio = o.audio && offer.audio;
    this.talk = o.talk !== undefined && o.command.talk && offer.talk;
    this.#talkHooks = o.talk;
    this.#stunConfigured = o.ice.servers.some((server) => server.urls.some((u) => /^stuns?:/i.test(u)));
    this.#log = o.logger.child({ module: 'stream', sid: o.sid });
    this.#redFec = o.fec === true ? offer.redUlpfec : undefined;
    this.#pc = new RTCPeerConnection({
      codecs: { video: [h264(), rtx()], audio: this.audio || this.talk ? [useOPUS()] : [] },
      headerExtensions: { video: [useTransportWideCC()], audio: [] },
      // Never werift's default public STUN server: only what the force configured.
      iceServers: o.ice.servers,
      iceTransportPolicy: o.ice.transportPolicy,
      // werift enumerates interfaces itself unless both families are off; the addresses are ours.
      iceUseIpv4: false,
      iceUseIpv6: false,
      iceAdditionalHostAddresses: o.ice.hostAddresses,
      icePortRange: o.ice.portRange,
      ...(o.ice.turnTlsCa === undefined ? {} : { turnTlsOptions: { ca: o.ice.turnTlsCa } }),
    });
    // The tracks exist before the offer is applied so werift negotiates their exact codec
    // (42e01f, not the first H.264 the browser lists) on the transceivers they already have.
    this.#video = this.#pc.addTransceiver(new MediaStreamTrack({ kind: 'video', codec: h264() }), { direction: 'sendonly' }).sender;
    // The audio m-line's direction is the camera's: it receives only with the talk grant.
    const audioDirection = this.audio ? (this.talk ? 'sendrecv' : 'sendonly') : this.talk ? 'recvonly' : undefined;
    this.#audioTransceiver =
      audioDirection === undefined ? undefined : this.#pc.addTransceiver(new MediaStreamTrack({ kind: 'audio', codec: useOPUS() }), { direction: audioDirection });
    this.#audio = this.audio ? this.#audioTransceiver?.sender : undefined;
    if (this.talk) {
      // werift adds a remote track per SSRC the viewer's offer names (during setRemoteDescription):
      // its onReceiveRtp is the decrypted, SSRC-routed talk audio.
      this.#audioTransceiver!.onTrack.subscribe((track) => {
        track.onReceiveRtp.subscribe((packet) => this.#talkAudio(packet));
      });
    }
    this.#screenViewerRtp();
    this.#video.onPictureLossIndication.subscribe(() => this.emit('pictureLoss'));
    const heard = () => {
      this.lastHeardAt = Date.now();
    };
    this.#video.onRtcp.subscribe((packet) => {
      heard();
      if (packet instanceof RtcpRrPacket) {
        const report = packet.reports.find((r) => r.ssrc === this.#video.ssrc);
        if (report) {
          // The cumulative count is signed 24-bit (RFC 3550 §6.4.1): duplicates (a retransmission
          // of a packet that came after all) make it negative, which werift reads as ~16.7 million.
          const lost = report.packetsLost > 0x7f_ffff ? report.packetsLost - 0x100_0000 : report.packetsLost;
          this.#report = { lost, highest: report.highestSequence };
          this.#followLoss(this.#report);
        }
      }
    });
    this.#video.senderBWE.onAvailableBitrate.subscribe((bps) => {
      this.#deliveredSumBps += bps;
      this.#deliveredCount++;
    });
    this.#audio?.onRtcp.subscribe(heard);
    this.#pc.connectionStateChange.subscribe((state) => {
      if (state === 'connected') {
        heard();
        this.#setConnection('connected');
      } else if (state === 'failed') this.#setConnection('failed');
      else if (state === 'closed') this.#setConnection('closed');
    });
    this.#pc.iceConnectionStateChange.subscribe((state) => {
      this.#log.debug({ ice: state }, 'ICE state');
      if ((state === 'connected' || state === 'completed') && this.timings.iceConnectedAt === 0) this.timings.iceConnectedAt = Date.now();
      if (state === 'failed' || state === 'disconnected') this.#setConnection('failed');
      // ICE back within the grace: werift's connection state never left "connected", so no event
      // of its own says so.
      else if ((state === 'connected' || state === 'completed') && this.connection === 'failed' && this.#pc.connectionState === 'connected') {
        heard();
        this.#setConnection('connected');
      }
    });
  }

  /**
   * ICE restart as the offerer (the camera's network changed, or the path failed): new ICE
   * credentials and candidates on the addresses and TURN credentials of `ice`, the same DTLS
   * association (no new handshake, same SRTP keys). Returns the offer for the viewer.
   */
  async restartIce(ice: ResolvedIce): Promise<string> {
    const began = Date.now();
    this.#setConnection('failed');
    // werift reads its host addresses once, at construction: a modem's new address must be put
    // where the next gathering looks for it.
    for (const dtls of this.#pc.dtlsTransports) {
      (dtls.iceTransport.connection as unknown as { options: { additionalHostAddresses?: string[] } }).options.additionalHostAddresses = ice.hostAddresses;
    }
    const offer = await this.#pc.createOffer({ iceRestart: true });
    this.#pc.setConfiguration({ iceServers: ice.servers });
    this.#noDefaultStun();
    // werift gathers inside setLocalDescription: an address that is going away (a modem that
    // has a new one and is dropping the old) holds it for its 5 s gather timeout, which is why
    // the network watcher waits for the interface table to settle first.
    await this.#pc.setLocalDescription(offer);
    await this.#gathered();
    this.#log.debug({ afterMs: Date.now() - began }, 'ICE restart candidates gathered');
    const sdp = this.#pc.localDescription?.sdp;
    if (!sdp) throw new Error('werift made no restart offer');
    return this.#fec && this.#redFec ? withRedFec(sdp, this.#redFec) : sdp;
  }

  /** The viewer's answer to restartIce's offer (already verified as the viewer's). */
  async acceptRestartAnswer(sdp: string): Promise<void> {
    await this.#pc.setRemoteDescription({ type: 'answer', sdp });
    // werift starts ICE only for a transport whose DTLS is not connected; after a restart DTLS
    // still is, so the connectivity checks are started here (werift 0.25.2).
    for (const dtls of this.#pc.dtlsTransports) {
      const ice = dtls.iceTransport;
      if (ice.state === 'connected' || ice.state === 'closed') continue;
      ice.start().catch((err: unknown) => this.#log.warn({ err: errorMessage(err) }, 'ICE did not reconnect after the restart'));
    }
  }

  /** ICE restarts negotiated in this session. */
  get iceRestarts(): number {
    return this.#pc.dtlsTransports[0]?.iceTransport.iceRestarts ?? 0;
  }

  async #gathered(): Promise<void> {
    await new Promise<void>((resolve) => {
      if (this.#pc.iceGatheringState === 'complete') return resolve();
      const timer = setTimeout(resolve, gatherTimeoutMs);
      this.#pc.iceGatheringStateChange.subscribe((s) => {
        if (s === 'complete') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  /**
   * werift's ICE falls back to stun.l.google.com whenever no STUN server is configured (its
   * Connection has no way to say "none"), and would ask it on every gathering: a police camera
   * must not talk to a public server, and where DNS is slow (a cellular modem, a namespace
   * without a resolver) the lookup holds gathering for werift's 5 s timeout. Cleared on every
   * connection before each gathering (construction and setConfiguration both put it back).
   */
  #noDefaultStun(): void {
    if (this.#stunConfigured) return;
    for (const dtls of this.#pc.dtlsTransports) {
      (dtls.iceTransport.connection as unknown as { stunServer: unknown }).stunServer = undefined;
    }
  }

  /**
   * Every RTP packet from the viewer passes here first (werift's router, fed by its SRTP session):
   * only talk audio with a grant goes on to werift's receiver; anything else is dropped and
   * counted, before any jitter buffer or decoder sees it.
   */
  #screenViewerRtp(): void {
    const router = (this.#pc as unknown as { router: { routeRtp: (packet: RtpPacket) => void } }).router;
    const route = router.routeRtp;
    router.routeRtp = (packet: RtpPacket) => {
      if (this.talk && packet.header.payloadType === this.#talkPayloadType) {
        route(packet);
        return;
      }
      this.counters.talkRefusedPackets++;
      if (!this.#talkRefusedReported) {
        this.#talkRefusedReported = true;
        const why = this.talk
          ? `RTP with payload type ${packet.header.payloadType}, not the offer's Opus ${this.#talkPayloadType}`
          : this.command.talk
            ? 'talk granted but not offered (or talkback disabled): the camera does not receive'
            : 'the stream.start did not grant talk-back (claim talk: true from a key with stream.talk)';
        this.#log.warn({ why, payloadType: packet.header.payloadType }, 'RTP from the viewer dropped: no talk-back');
        this.#talkHooks?.refused(this.sid, this.command.operator, why);
      }
    };
  }

  #talkAudio(packet: RtpPacket): void {
    this.counters.talkPackets++;
    this.#talkHooks?.audio(this.sid, this.command.operator, packet.serialize(), packet.header.payloadType);
  }

  async #answer(offer: string): Promise<string> {
    if (this.talk) {
      const m = /^m=audio [^\r\n]*?RTP\/[A-Z/]+ ([\d ]+)\r?$/m.exec(offer);
      const opus = /^a=rtpmap:(\d+) opus\/48000/im.exec(offer.slice(offer.indexOf('m=audio')));
      if (m && opus) this.#talkPayloadType = Number(opus[1]);
    }
    await this.#pc.setRemoteDescription({ type: 'offer', sdp: offer });
    this.#noDefaultStun();
    // Before any socket exists (gathering is in setLocalDescription): only the viewer's ICE pairs
    // reach werift's DTLS and SRTP, only authenticated DTLS after the handshake, and only the
    // viewer's authenticated goodbye ends the session (werift-guard.ts).
    this.#guard = guardDtlsTransports(this.#pc.dtlsTransports, {
      refused: (reason, from, fromViewer) => {
        const fromText = `${from[0]}:${from[1]}`;
        // Once a view, for outsiders only: the viewer's own handshake retransmissions are routine.
        if (!fromViewer && !this.#outsiderWarned) {
          this.#outsiderWarned = true;
          this.#log.warn({ reason, from: fromText }, "datagrams refused: not the viewer's authenticated DTLS association (each is logged at debug)");
        }
        this.#log.debug({ reason, from: fromText, fromViewer, refused: this.#guard?.refusedCount }, 'datagram refused');
      },
      // A viewer that hangs up (RTCPeerConnection.close) sends an encrypted close_notify.
      peerClosed: (alert) => {
        this.#log.debug({ alert }, 'the viewer closed its DTLS association');
        if (!this.#closed) this.#setConnection('closed');
      },
    });
    // DTLS server (setup:passive, which RFC 8842 lets the answerer of an "actpass" offer choose, and
    // which werift takes from the local answer): the browser sends its ClientHello as soon as its
    // own ICE check succeeds. As client, werift's ClientHello arrives before that and the browser
    // sits on it: measured here, connected 110 ms after ICE as client, 55 ms as server.
    const answer = await this.#pc.createAnswer();
    this.timings.gatherStartedAt = Date.now();
    await this.#pc.setLocalDescription({ type: 'answer', sdp: answer.sdp.replace(/^a=setup:active\r?$/gm, (line) => line.replace('active', 'passive')) });
    // The command carries one SDP each way (no trickle over MQTT): wait for every candidate.
    await this.#gathered();
    this.timings.gatheredAt = Date.now();
    const sdp = this.#pc.localDescription?.sdp;
    if (!sdp) throw new Error('werift made no local description');
    return this.#redFec ? this.#startFec(sdp) : sdp;
  }

  /**
   * RED + ULPFEC for a viewer that offered them. werift 0.25.2 cannot negotiate them itself: it
   * matches a RED by the payload types its fmtp names, and reads a RED with no fmtp (how Chromium
   * offers video RED) as naming payload type 0 (transceiverManager.js resolveRemoteCodecSet,
   * `(codec.parameters ?? "").split("/").map(Number)` gives [0]), so it drops it; without a
   * track it would also pick the viewer's first H.264 rather than ours. So werift negotiates
   * H.264 + RTX as without FEC, and the viewer's own red, ulpfec and RTX-for-RED payload types
   * are added to the answer (and to each ICE restart offer) here; the sender stamps RED on every
   * packet and resends NACKed ones as RTX-for-RED (withRedFec below, after each negotiation).
   */
  #startFec(answer: string): string {
    const pts = this.#redFec;
    const sender = this.#video as unknown as RedSender;
    const h264Pt = sender.codec?.payloadType;
    if (!pts || h264Pt === undefined) return answer;
    const known: Record<string, number> = { [useTransportWideCC().uri]: 2 };
    const extensions = sender.headerExtensions.map((e) => ({ id: e.id, length: known[e.uri] ?? -1 }));
    this.#fec = new UlpfecEncoder({
      payloadTypes: { red: pts.red, media: h264Pt, ulpfec: pts.ulpfec },
      extensionBlock: extensionBlock(extensions.filter((e) => e.length > 0)),
      send: (packet) => void this.#video.sendRtp(packet).catch(this.#onSendError),
    });
    // FEC only where the XOR can match what the viewer receives: every extension werift writes is one we know.
    this.#fecUsable = extensions.every((e) => e.length > 0);
    const prepareSend = sender.prepareSend.bind(sender);
    const stampRed = () => {
      sender.codec = new RTCRtpCodecParameters({ mimeType: 'video/red', clockRate: 90_000, payloadType: pts.red });
      sender.rtxPayloadType = pts.rtx;
    };
    // werift sets the codec again on every negotiation (an ICE restart): RED stays.
    sender.prepareSend = (params) => {
      prepareSend(params);
      stampRed();
    };
    stampRed();
    this.#log.debug({ ...pts, h264: h264Pt, fec: this.#fecUsable }, 'RED and ULPFEC negotiated');
    return withRedFec(answer, pts);
  }

  #fecUsable = false;

  /** The FEC rate follows the viewer's loss (its receiver reports' cumulative counters, smoothed). */
  #followLoss(report: { lost: number; highest: number }): void {
    if (!this.#fec || !this.#fecUsable) return;
    const previous = this.#fecReport;
    if (!previous) {
      this.#fecReport = report;
      return;
    }
    const expected = report.highest - previous.highest;
    if (expected < minPacketsForFec) return;
    const loss = Math.min(1, Math.max(0, (report.lost - previous.lost) / expected));
    this.#fecReport = report;
    this.#fecLoss += fecLossSmoothing * (loss - this.#fecLoss);
    this.#fec.rate = fecRateFor(this.#fecLoss);
  }

  /** RED and FEC on this view: whether RED was negotiated, the FEC rate now, packets sent. */
  get fec(): { red: boolean; rate: number; mediaPackets: number; fecPackets: number } {
    return { red: this.#fec !== undefined, rate: this.#fec?.rate ?? 0, mediaPackets: this.#fec?.counters.mediaPackets ?? 0, fecPackets: this.#fec?.counters.fecPackets ?? 0 };
  }

  sendVideo(packet: Buffer): void {
    this.counters.videoPackets++;
    this.counters.videoBytes += packet.length;
    if (this.#fec) this.#fec.push(packet);
    else this.#video.sendRtp(packet).catch(this.#onSendError);
  }

  sendAudio(packet: Buffer): void {
    if (!this.#audio) return;
    this.counters.audioPackets++;
    this.#audio.sendRtp(packet).catch(this.#onSendError);
  }

  /** What the viewer's network path did since the last call (bandwidth adaptation). */
  sample(now: number): PathSample {
    const intervalMs = Math.max(1, now - this.#sampledAt);
    // Loss over the interval from the reports' cumulative counters (RFC 3550 §6.4.1), not their
    // fraction-lost byte: measured here under 3 % random loss Chromium's fraction read 12-33 % in
    // single reports while its cumulative count said 2 %. Too few packets say nothing.
    let lossFraction: number | undefined;
    const latest = this.#report;
    const previous = this.#sampledReport;
    if (latest && previous && latest !== previous) {
      const expected = latest.highest - previous.highest;
      if (expected >= minPacketsForLoss) lossFraction = Math.min(1, Math.max(0, (latest.lost - previous.lost) / expected));
    }
    // Too few packets: keep the older report, so the next sample spans a longer interval.
    if (latest && (lossFraction !== undefined || !previous)) this.#sampledReport = latest;
    const sample: PathSample = {
      sendKbps: ((this.counters.videoBytes - this.#sampledBytes) * 8) / intervalMs,
      lossFraction,
      deliveredKbps: this.#deliveredCount > 0 ? this.#deliveredSumBps / this.#deliveredCount / 1000 : undefined,
      intervalMs,
    };
    this.#sampledAt = now;
    this.#sampledBytes = this.counters.videoBytes;
    this.#deliveredSumBps = this.#deliveredCount = 0;
    return sample;
  }

  /** Round-trip time to the viewer from its receiver reports, in ms. */
  get rttMs(): number | undefined {
    // werift keeps the RTT from receiver reports in a field its types call private.
    const rtt = (this.#video as unknown as { rtt?: number }).rtt;
    return rtt === undefined ? undefined : Math.round(rtt * 1000);
  }

  /**
   * A new capture worker (after a crash) starts its RTP at a random sequence number and timestamp
   * under a new SSRC: rebase them so the viewer sees one continuous stream, not a jump it would
   * take for loss or reordering.
   */
  sourceChanged(kind: 'video' | 'audio'): void {
    // With RED the encoder numbers the packets itself (werift's offsets must stay 0: FEC XORs them).
    if (kind === 'video' && this.#fec) return this.#fec.sourceChanged();
    const sender = kind === 'video' ? this.#video : this.#audio;
    sender?.replaceRTP({ sequenceNumber: 0, timestamp: 0 });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // What the viewer asked of this view and what repaired it (bench/bad-link.ts reads this line).
    const sent = this.#video as unknown as { pliCount: number; nackCount: number; retransmittedPacketsSent: number };
    this.#log.info(
      { plis: sent.pliCount, nacks: sent.nackCount, retransmitted: sent.retransmittedPacketsSent, videoPackets: this.counters.videoPackets, fec: this.fec, lossEstimate: Math.round(this.#fecLoss * 1000) / 1000 },
      'live view totals',
    );
    try {
      await this.#pc.close();
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'peer connection did not close cleanly');
    }
    this.#setConnection('closed');
  }

  get closed(): boolean {
    return this.#closed;
  }

  #setConnection(state: ViewerConnectionState): void {
    if (this.connection === state || this.connection === 'closed') return;
    this.connection = state;
    this.emit('connection', state);
  }
}
