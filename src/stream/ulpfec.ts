// Forward error correction for one viewer: RED (RFC 2198) + ULPFEC (RFC 5109), the video FEC
// every Chromium decodes (it offers red/90000 and ulpfec/90000). A lost packet that an FEC
// packet covers is rebuilt by the viewer a few milliseconds later, instead of a NACK and a
// retransmission a round trip later (a freeze at 200 ms RTT and 15 fps).
//
// Why here, per viewer, and written out rather than GStreamer's rtpulpfecenc/rtpredenc in the
// capture worker: ULPFEC's recovery fields are XORs over the RTP headers as the viewer receives
// them (payload type, sequence number base, timestamp, the header extension block), and those are
// per viewer: werift rewrites the payload type to each viewer's own numbers and rebases sequence
// numbers and timestamps after a worker restart (RtpSender.dispatchRtp: `header.payloadType =
// codec.payloadType`, `header.sequenceNumber = uint16Add(..., this.seqOffset)`), and it adds
// the transport-wide-cc extension to every packet. FEC made once in the worker would be wrong for
// any viewer whose numbers differ, and a viewer that did not offer FEC would see gaps in the
// sequence numbers. Here each viewer's packets get their final sequence numbers and timestamps
// before werift sees them (werift's offsets stay 0: see StreamSession), so the XOR is over what
// the viewer gets. No npm library implements ULPFEC; the encoder is an XOR over byte arrays.
//
// Shape of the stream (what libwebrtc sends and its UlpfecReceiver expects): every media packet
// in RED with one block header (F=0, the H.264 payload type); after a group of media packets
// (one frame, or up to maxFramesPerGroup small frames), FEC packets in RED with the ulpfec payload
// type, in the same SSRC and sequence number space. With a FEC rate of 0 (a clean link) no FEC
// packet is sent: the cost is the RED header, one byte a packet.
//
// A limit worth knowing (measured in bench/bad-link.ts): for H.264, libwebrtc's packet buffer
// releases a delta frame only when no sequence number before it is missing, and FEC packets share
// that sequence space, so a lost FEC packet holds the picture until its retransmission (NACK) like
// a lost media packet would. FEC therefore cuts the number of stalls by about the ratio of FEC to
// media packets, not to zero; the jitter buffer target (the console's setting) hides what is left.

/** The viewer's payload types for this stream. */
export interface RedFecPayloadTypes {
  red: number;
  ulpfec: number;
  /** H.264, the media inside RED. */
  media: number;
}

export interface UlpfecOptions {
  payloadTypes: RedFecPayloadTypes;
  /**
   * The header extension block werift will put on every packet, with mutable values zeroed
   * (what libwebrtc XORs): see extensionBlock().
   */
  extensionBlock: Buffer;
  /** Hands a finished RTP packet (RED media or RED+ULPFEC) to the transport. */
  send: (packet: Buffer) => void;
  /** First sequence number (random in use; fixed in tests). */
  firstSequence?: number;
}

// libwebrtc's packet masks: L=0 covers 16 packets, L=1 48.
const maxMaskBits = 48;
// Small frames are protected together up to this many frames, so a calm scene (a packet or two a
// frame) does not need an FEC packet per frame; the viewer then waits at most two frame intervals
// (133 ms at 15 fps) for a packet it rebuilds, under Chromium's freeze threshold.
export const maxFramesPerGroup = 3;

/** The FEC rate (FEC packets per media packet) for a measured loss fraction: none on a clean link. */
export function fecRateFor(loss: number): number {
  if (!(loss >= 0.005)) return 0;
  return Math.min(0.5, Math.max(0.1, 4 * loss + 0.05));
}

/**
 * The header extension block werift writes (one-byte form, RFC 8285) for these negotiated
 * extension ids, every value zeroed: werift fills only transport-wide-cc (2 bytes) on our
 * packets, a value libwebrtc zeroes before FEC (a "mutable" extension). Undefined when werift
 * writes none.
 */
export function extensionBlock(extensions: { id: number; length: number }[]): Buffer {
  if (extensions.length === 0) return Buffer.alloc(0);
  const size = extensions.reduce((n, e) => n + 1 + e.length, 0);
  const words = Math.ceil(size / 4);
  const block = Buffer.alloc(4 + words * 4);
  block.writeUInt16BE(0xbede, 0);
  block.writeUInt16BE(words, 2);
  let at = 4;
  for (const e of [...extensions].sort((a, b) => a.id - b.id)) {
    block[at] = (e.id << 4) | (e.length - 1);
    at += 1 + e.length;
  }
  return block;
}

interface Protected {
  /** First two header bytes as the viewer rebuilds the packet (V/P/X/CC, M/PT). */
  b0: number;
  b1: number;
  seq: number;
  ts: number;
  /** Everything after the 12-byte fixed header: the extension block, then the H.264 payload. */
  body: Buffer[];
  bodyLength: number;
}

/** What the encoder has done, for the session's counters. */
export interface UlpfecCounters {
  mediaPackets: number;
  fecPackets: number;
}

export class UlpfecEncoder {
  /** FEC packets per media packet, 0..0.5; set from the viewer's loss reports. */
  rate = 0;
  readonly counters: UlpfecCounters = { mediaPackets: 0, fecPackets: 0 };
  readonly #pt: RedFecPayloadTypes;
  readonly #ext: Buffer;
  readonly #send: (packet: Buffer) => void;
  #seq: number;
  /** Added to the worker's timestamps: 0 until a new worker (new SSRC) needs rebasing. */
  #tsOffset = 0;
  #lastTs: number | undefined;
  #rebase = false;
  #group: Protected[] = [];
  #framesInGroup = 0;

  constructor(o: UlpfecOptions) {
    this.#pt = o.payloadTypes;
    this.#ext = o.extensionBlock;
    this.#send = o.send;
    this.#seq = (o.firstSequence ?? Math.floor(Math.random() * 0x10000)) & 0xffff;
  }

  /** The capture worker restarted (new SSRC, random sequence and timestamp): continue where we were. */
  sourceChanged(): void {
    this.#rebase = true;
    this.#group = [];
    this.#framesInGroup = 0;
  }

  /** One RTP packet from the capture worker (H.264, any payload type): sent on in RED, then FEC at a group's end. */
  push(packet: Buffer): void {
    if (packet.length < 12) return;
    const cc = packet[0]! & 0x0f;
    let start = 12 + 4 * cc;
    if (packet[0]! & 0x10) {
      if (packet.length < start + 4) return;
      start += 4 + 4 * packet.readUInt16BE(start + 2);
    }
    let end = packet.length;
    if (packet[0]! & 0x20) end -= packet[end - 1]!;
    if (end < start) return;
    const payload = packet.subarray(start, end);
    const marker = packet[1]! & 0x80;
    const inTs = packet.readUInt32BE(4);
    if (this.#rebase) {
      this.#rebase = false;
      if (this.#lastTs !== undefined) this.#tsOffset = (this.#lastTs + 1 - inTs) >>> 0;
    }
    const ts = (inTs + this.#tsOffset) >>> 0;
    this.#lastTs = ts;
    const seq = this.#nextSeq();
    // Out: the fixed header (werift sets SSRC and the RED payload type and adds its extensions), the RED block header, the payload.
    const out = Buffer.allocUnsafe(13 + payload.length);
    out[0] = 0x80;
    out[1] = marker | this.#pt.red;
    out.writeUInt16BE(seq, 2);
    out.writeUInt32BE(ts, 4);
    out.writeUInt32BE(0, 8);
    out[12] = this.#pt.media;
    payload.copy(out, 13);
    this.counters.mediaPackets++;
    this.#send(out);
    if (this.rate <= 0) {
      if (this.#group.length > 0) this.#group = [];
      return;
    }
    this.#group.push({
      b0: 0x80 | (this.#ext.length > 0 ? 0x10 : 0),
      b1: marker | this.#pt.media,
      seq,
      ts,
      body: this.#ext.length > 0 ? [this.#ext, payload] : [payload],
      bodyLength: this.#ext.length + payload.length,
    });
    if (marker) this.#framesInGroup++;
    const wanted = Math.ceil(1 / this.rate);
    if (this.#group.length >= maxMaskBits || (marker && (this.#group.length >= wanted || this.#framesInGroup >= maxFramesPerGroup))) this.#protect();
  }

  #nextSeq(): number {
    const s = this.#seq;
    this.#seq = (this.#seq + 1) & 0xffff;
    return s;
  }

  /** FEC packets for the group: packet j covers media packets j, j+m, j+2m... (spread, so one loss in each is rebuilt). */
  #protect(): void {
    const group = this.#group;
    this.#group = [];
    this.#framesInGroup = 0;
    const k = group.length;
    const m = Math.min(k, Math.max(1, Math.round(k * this.rate)));
    const longMask = k > 16;
    const maskBytes = longMask ? 6 : 2;
    const base = group[0]!.seq;
    const lastTs = group[k - 1]!.ts;
    for (let j = 0; j < m; j++) {
      const covered = group.filter((_, i) => i % m === j);
      const protectionLength = Math.max(...covered.map((p) => p.bodyLength));
      const headerAt = 13;
      const levelAt = headerAt + 10;
      const dataAt = levelAt + 2 + maskBytes;
      const out = Buffer.alloc(dataAt + protectionLength);
      out[0] = 0x80;
      out[1] = this.#pt.red;
      out.writeUInt16BE(this.#nextSeq(), 2);
      out.writeUInt32BE(lastTs, 4);
      out[12] = this.#pt.ulpfec;
      let b0 = 0;
      let b1 = 0;
      let ts = 0;
      let length = 0;
      for (const p of covered) {
        b0 ^= p.b0;
        b1 ^= p.b1;
        ts = (ts ^ p.ts) >>> 0;
        length ^= p.bodyLength;
        let at = dataAt;
        for (const part of p.body) {
          for (let i = 0; i < part.length; i++) out[at + i]! ^= part[i]!;
          at += part.length;
        }
        const bit = (p.seq - base) & 0xffff;
        out[levelAt + 2 + (bit >> 3)]! |= 0x80 >> (bit & 7);
      }
      // E=0; L says which mask length follows (RFC 5109 §7.3).
      out[headerAt] = (b0 & 0x3f) | (longMask ? 0x40 : 0);
      out[headerAt + 1] = b1;
      out.writeUInt16BE(base, headerAt + 2);
      out.writeUInt32BE(ts, headerAt + 4);
      out.writeUInt16BE(length, headerAt + 8);
      out.writeUInt16BE(protectionLength, levelAt);
      this.counters.fecPackets++;
      this.#send(out);
    }
  }
}
