// What the camera accepts as a viewer's offer, checked before any socket is opened: a receive-only
// viewer (it must not send media to the camera), a DTLS fingerprint (the identity the token binds
// through offer_sha256), and H.264 constrained baseline with packetization-mode 1, the one stream
// the capture pipeline makes. Audio is answered only if the viewer asks for Opus.
import { SessionDescription } from 'werift';

export interface OfferSummary {
  /** sha-256 DTLS fingerprint of the viewer: recorded in the audit so the view names its receiver. */
  fingerprint: string;
  /** Whether the viewer also asks for (receive-only) Opus audio. */
  audio: boolean;
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
    throw new OfferError(`the offer is not SDP: ${(err as Error).message}`);
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
  const fingerprints = v.dtlsParams?.fingerprints ?? parsed.dtlsFingerprints;
  const sha256 = fingerprints.find((f) => f.algorithm.toLowerCase() === 'sha-256');
  if (!sha256) throw new OfferError('the offer has no sha-256 DTLS fingerprint');
  for (const m of parsed.media) {
    if (m.kind === 'audio' && m.port !== 0 && m.direction !== 'recvonly' && m.direction !== 'inactive') {
      throw new OfferError(`the viewer's audio must be recvonly, it is ${m.direction ?? 'unset'}`);
    }
  }
  const audio = parsed.media.some((m) => m.kind === 'audio' && m.port !== 0 && m.direction === 'recvonly' && m.rtp.codecs.some((c) => c.mimeType.toLowerCase() === 'audio/opus'));
  return { fingerprint: `sha-256 ${sha256.value}`, audio };
}
