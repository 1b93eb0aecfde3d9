// The live encoder's latest group of pictures (its last keyframe and every packet after it), kept in
// the agent so a viewer whose DTLS has just completed is sent a decodable picture at once instead
// of waiting for a keyframe asked of the encoder at that moment (IPC, x264, RTP: 20-60 ms measured,
// more on a loaded board). Bounded in bytes: past the bound the cache gives up until the next
// keyframe rather than hold an ever longer run of P-frames.
//
// Written here rather than taken from a library: it is a few header reads per packet (RFC 3550 and
// RFC 6184), and no maintained npm package parses H.264 RTP without pulling in a whole media stack.
// The Buffers kept are the capture socket's datagrams (node:dgram allocates each), never copied;
// werift parses them without writing to them.

/** The packet's H.264 payload offset (after CSRCs and a header extension), or -1 if malformed. */
function payloadOffset(p: Buffer): number {
  if (p.length < 13 || p[0]! >> 6 !== 2) return -1;
  let off = 12 + 4 * (p[0]! & 0x0f);
  if (p[0]! & 0x10) {
    if (p.length < off + 4) return -1;
    off += 4 + 4 * p.readUInt16BE(off + 2);
  }
  return off < p.length ? off : -1;
}

const startsPicture = (nalType: number) => nalType === 5 || nalType === 7; // IDR slice, SPS

/**
 * Whether this RTP packet starts an H.264 keyframe: a single SPS or IDR NAL unit, a STAP-A holding
 * one, or the first fragment (FU-A, S bit) of an IDR slice.
 */
export function isKeyframeStart(p: Buffer): boolean {
  const off = payloadOffset(p);
  if (off < 0) return false;
  const type = p[off]! & 0x1f;
  if (type >= 1 && type <= 23) return startsPicture(type);
  if (type === 24) {
    // STAP-A: 16-bit size, then the NAL unit; any SPS or IDR inside makes it a keyframe.
    for (let i = off + 1; i + 2 < p.length; ) {
      const size = p.readUInt16BE(i);
      if (size === 0 || i + 2 + size > p.length) return false;
      if (startsPicture(p[i + 2]! & 0x1f)) return true;
      i += 2 + size;
    }
    return false;
  }
  if (type === 28) return off + 1 < p.length && (p[off + 1]! & 0x80) !== 0 && startsPicture(p[off + 1]! & 0x1f);
  return false;
}

export interface GopSnapshot {
  /** The packets from the keyframe's first on, in the order they came. */
  packets: readonly Buffer[];
  /** How long ago the keyframe came in. */
  ageMs: number;
  bytes: number;
}

export class GopCache {
  readonly #maxBytes: number;
  /** The current GOP's packets (empty: no keyframe seen since the last clear or overflow). */
  #gop: Buffer[] = [];
  #gopBytes = 0;
  #gopTimestamp = -1;
  #gopAt = 0;
  /** Packets of the access unit under way (same RTP timestamp), so a keyframe whose first packet is not its SPS still starts whole. */
  #au: Buffer[] = [];
  #auTimestamp = -1;
  /** GOPs dropped for being over maxBytes. */
  overflows = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** A live video packet from the capture worker; `keyframe` is isKeyframeStart(packet). Returns true if a new GOP began here. */
  push(packet: Buffer, keyframe: boolean, now: number): boolean {
    if (packet.length < 12) return false;
    const ts = packet.readUInt32BE(4);
    if (ts !== this.#auTimestamp) {
      this.#auTimestamp = ts;
      this.#au = [];
    }
    this.#au.push(packet);
    if (keyframe && !(this.#gop.length > 0 && ts === this.#gopTimestamp)) {
      this.#gop = [...this.#au];
      this.#gopBytes = this.#gop.reduce((n, b) => n + b.length, 0);
      this.#gopTimestamp = ts;
      this.#gopAt = now;
      this.#checkBound();
      return this.#gop.length > 0;
    }
    if (this.#gop.length === 0) return false;
    this.#gop.push(packet);
    this.#gopBytes += packet.length;
    this.#checkBound();
    return false;
  }

  #checkBound(): void {
    if (this.#gopBytes <= this.#maxBytes) return;
    this.overflows++;
    this.clear();
  }

  /** The cached GOP, or undefined when there is none to start a viewer with. */
  snapshot(now: number): GopSnapshot | undefined {
    if (this.#gop.length === 0) return undefined;
    return { packets: this.#gop.slice(), ageMs: now - this.#gopAt, bytes: this.#gopBytes };
  }

  /** Forget everything: a new source (worker restart) or a closed valve (the next frames need a new keyframe anyway). */
  clear(): void {
    this.#gop = [];
    this.#gopBytes = 0;
    this.#gopTimestamp = -1;
    this.#au = [];
    this.#auTimestamp = -1;
  }
}
