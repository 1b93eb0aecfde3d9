// What the camera accepts as a viewer's offer, checked before any socket is opened: a viewer that
// sends the camera no video, a DTLS fingerprint (the identity the token binds through
// offer_sha256), and H.264 constrained baseline with packetization-mode 1, the one stream the
// capture pipeline makes. Audio is answered only if the viewer asks for Opus. The viewer's audio
// may be sendrecv (the console's push-to-talk offer, issue 19): whether the camera ever receives
// it is the session's decision from the token's talk grant, not the offer's (session.ts).
import { SessionDescription } from 'werift';
import { errorMessage } from '../errors.ts';

export interface OfferSummary {
  /** sha-256 DTLS fingerprint of the viewer: recorded in the audit so the view names its receiver. */
  fingerprint: string;
  /** Whether the viewer also asks to receive Opus audio (recvonly or sendrecv). */
  audio: boolean;
  /** Whether the viewer offers to send Opus audio (sendrecv or sendonly): talk-back, if granted. */
  talk: boolean;
  /** The viewer's video RED and ULPFEC payload types, when it offers both (session.ts, ulpfec.ts). */
  redUlpfec: RedFecOffer | undefined;
}

export interface RedFecOffer {
  red: number;
  ulpfec: number;
  /** Its RTX for RED (apt=red), if offered. */
  rtx: number | undefined;
}

export class OfferError extends Error {
  readonly code = 'unsupported_offer';
  override readonly name = 'OfferError';
}

/** Constrained baseline: profile_idc 0x42 with constraint_set1_flag (RFC 6184 profile-level-id). */
function isConstrainedBaseline(profileLevelId: string | undefined): boolean {
  if (!profileLevelId || !/^[0-9a-f]{6}$/i.test(profileLevelId)) return false;
  const profileIdc = parseInt(profileLevelId.slice(0, 2), 16);
  const constraints = parseInt(profileLevelId.slice(2, 4), 16);
  return profileIdc === 0x42 && (constraints & 0x40) !== 0;
}

function fmtp(parameters: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (parameters ?? '').split(';')) {
    const [k, v] = part.split('=');
    if (k && v !== undefined) out.set(k.trim().toLowerCase(), v.trim());
  }
  return out;
}

/** Throws OfferError naming what is wrong; the SDP text comes from the (authorised) command. */
export function inspectOffer(sdp: string): OfferSummary {
  let parsed: SessionDescription;
  try {
    parsed = SessionDescription.parse(sdp);
  } catch (err) {
    throw new OfferError(`the offer is not SDP: ${errorMessage(err)}`);
  }
  if (!/^v=0\r?\n/.test(sdp)) throw new OfferError('the offer is not SDP (no "v=0" first line)');
  const video = parsed.media.filter((m) => m.kind === 'video' && m.port !== 0);
  if (video.length !== 1) throw new OfferError(`the offer must have exactly one video m-line, it has ${video.length}`);
  const v = video[0]!;
  if (v.direction !== 'recvonly') {
    throw new OfferError(`the viewer's video must be recvonly (a viewer sends the camera no media), it is ${v.direction ?? 'unset'}`);
  }
  const h264 = v.rtp.codecs.some((c) => {
    if (c.mimeType.toLowerCase() !== 'video/h264' || c.clockRate !== 90_000) return false;
    const p = fmtp(c.parameters);
    return p.get('packetization-mode') === '1' && isConstrainedBaseline(p.get('profile-level-id'));
  });
  if (!h264) throw new OfferError('the offer has no H.264 constrained baseline with packetization-mode=1 (profile-level-id 42e01f)');
  const fingerprint = viewerFingerprint(sdp, 'the offer');
  const audioLines = parsed.media.filter((m) => m.kind === 'audio' && m.port !== 0);
  if (audioLines.length > 1) throw new OfferError(`the offer may have at most one audio m-line, it has ${audioLines.length}`);
  const a = audioLines[0];
  const opus = a !== undefined && a.rtp.codecs.some((c) => c.mimeType.toLowerCase() === 'audio/opus' && c.clockRate === 48_000);
  const direction = a?.direction ?? 'sendrecv';
  const audio = opus && (direction === 'recvonly' || direction === 'sendrecv');
  const talk = opus && (direction === 'sendrecv' || direction === 'sendonly');
  const named = (mime: string) => v.rtp.codecs.find((c) => c.mimeType.toLowerCase() === mime && c.clockRate === 90_000);
  const red = named('video/red');
  const ulpfec = named('video/ulpfec');
  const rtxForRed = red && v.rtp.codecs.find((c) => c.mimeType.toLowerCase() === 'video/rtx' && fmtp(c.parameters).get('apt') === String(red.payloadType));
  const redUlpfec = red && ulpfec ? { red: red.payloadType, ulpfec: ulpfec.payloadType, rtx: rtxForRed?.payloadType } : undefined;
  return { fingerprint, audio, talk, redUlpfec };
}

/**
 * The one DTLS certificate an SDP from the viewer names (its offer, or its answer to an ICE
 * restart), as `sha-256 HEX`. Every a=fingerprint line, at session and at media level, must be
 * sha-256 and name the same certificate; anything else is refused (OfferError, naming what is
 * wrong). Why: werift keeps every fingerprint it is given and accepts a peer matching any one of
 * the strongest algorithm present, so an SDP with two (or a sha-512 beside the sha-256) would let
 * the audit name viewer X while the DTLS peer is Y. The one place SDP fingerprints are read.
 */
export function viewerFingerprint(sdp: string, what: string): string {
  if (!/^v=0\r?\n/.test(sdp)) throw new OfferError(`${what} is not SDP (no "v=0" first line)`);
  // The text itself, not werift's parse of it: werift files session-level lines under each media
  // section and drops a section's lines when it has no a=setup, but its DTLS may still use them.
  const values = new Set<string>();
  for (const [, line] of sdp.matchAll(/^a=fingerprint:([^\r\n]*)$/gm)) {
    const [algorithm = '', value = '', ...rest] = line!.trim().split(/\s+/);
    if (algorithm.toLowerCase() !== 'sha-256') throw new OfferError(`${what} has a ${algorithm || 'nameless'} DTLS fingerprint: only sha-256 is accepted`);
    if (rest.length > 0 || !/^[0-9A-F]{2}(:[0-9A-F]{2})*$/i.test(value)) throw new OfferError(`${what} has a malformed sha-256 DTLS fingerprint ${JSON.stringify(line)}`);
    values.add(value.toUpperCase());
  }
  if (values.size === 0) throw new OfferError(`${what} has no sha-256 DTLS fingerprint`);
  if (values.size > 1) {
    throw new OfferError(`${what} names ${values.size} DTLS certificates (${[...values].map((v) => `${v.slice(0, 11)}...`).join(', ')}): exactly one is accepted, the viewer's`);
  }
  return `sha-256 ${[...values][0]!}`;
}
