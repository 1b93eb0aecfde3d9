// Forward error correction of the live view (src/stream/ulpfec.ts, session.ts): the ULPFEC the
// camera sends must rebuild a lost packet exactly as a receiver following RFC 5109 (libwebrtc's
// UlpfecReceiver) does, over the header the viewer sees; RED and ULPFEC are answered only to a
// viewer that offered them and only with stream.fec "auto". Chromium decoding it for real, under
// loss, is measured in bench/bad-link.ts.
import t from 'tap';
import { extensionBlock, fecRateFor, maxFramesPerGroup, UlpfecEncoder } from '../src/stream/ulpfec.ts';
import { inspectOffer } from '../src/stream/offer.ts';
import { StreamSession } from '../src/stream/session.ts';
import { sdpOffer } from './helpers/command-tokens.ts';
import { authorised, logger } from './helpers/stream-rig.ts';

const pts = { red: 118, ulpfec: 120, media: 102 };
const twccBlock = extensionBlock([{ id: 4, length: 2 }]);

/** An RTP packet as rtph264pay makes it (payload type 96, no extensions). */
function workerPacket(seq: number, ts: number, marker: boolean, payload: Buffer): Buffer {
  const p = Buffer.alloc(12 + payload.length);
  p[0] = 0x80;
  p[1] = (marker ? 0x80 : 0) | 96;
  p.writeUInt16BE(seq & 0xffff, 2);
  p.writeUInt32BE(ts >>> 0, 4);
  p.writeUInt32BE(0x1234_5678, 8);
  payload.copy(p, 12);
  return p;
}

/** A packet as the viewer holds it after taking off RED: the fields FEC recovers. */
interface Received {
  b0: number;
  b1: number;
  seq: number;
  ts: number;
  body: Buffer;
}

/** What the viewer receives of a sent packet: werift adds the extension block (value zeroed here, as libwebrtc XORs it). */
function asReceived(sent: Buffer): { red: boolean; block: number; pkt: Received } {
  const block = sent[12]! & 0x7f;
  const body = Buffer.concat([twccBlock, sent.subarray(13)]);
  return {
    red: (sent[1]! & 0x7f) === pts.red && (sent[12]! & 0x80) === 0,
    block,
    pkt: { b0: 0x90, b1: (sent[1]! & 0x80) | block, seq: sent.readUInt16BE(2), ts: sent.readUInt32BE(4), body },
  };
}

/** RFC 5109 recovery of the one missing packet an FEC packet covers (what the viewer does). */
function recover(fec: Buffer, have: Map<number, Received>): Received | undefined {
  const f = fec.subarray(13);
  const longMask = (f[0]! & 0x40) !== 0;
  const base = f.readUInt16BE(2);
  const maskBytes = longMask ? 6 : 2;
  const protectionLength = f.readUInt16BE(10);
  const data = f.subarray(12 + maskBytes);
  const covered: number[] = [];
  for (let bit = 0; bit < maskBytes * 8; bit++) if (f[12 + (bit >> 3)]! & (0x80 >> (bit & 7))) covered.push((base + bit) & 0xffff);
  const missing = covered.filter((s) => !have.has(s));
  if (missing.length !== 1) return undefined;
  let b0 = f[0]!;
  let b1 = f[1]!;
  let ts = f.readUInt32BE(4);
  let length = f.readUInt16BE(8);
  const body = Buffer.from(data.subarray(0, protectionLength));
  for (const s of covered) {
    const p = have.get(s);
    if (!p) continue;
    b0 ^= p.b0;
    b1 ^= p.b1;
    ts = (ts ^ p.ts) >>> 0;
    length ^= p.body.length;
    for (let i = 0; i < p.body.length; i++) body[i]! ^= p.body[i]!;
  }
  // The receiver restores the version bits (libwebrtc: set the first, clear the second).
  b0 = (b0 | 0x80) & 0xbf;
  return { b0, b1, seq: missing[0]!, ts, body: body.subarray(0, length) };
}

function frames(sizes: number[][], firstSeq = 40_000, firstTs = 90_000): Buffer[] {
  const out: Buffer[] = [];
  let seq = firstSeq;
  sizes.forEach((frame, f) =>
    frame.forEach((size, i) => {
      const payload = Buffer.alloc(size);
      for (let b = 0; b < size; b++) payload[b] = (seq * 31 + b * 7) & 0xff;
      out.push(workerPacket(seq++, firstTs + f * 6000, i === frame.length - 1, payload));
    }),
  );
  return out;
}

t.test('ULPFEC rebuilds any one lost media packet of a group, header and payload, as RFC 5109 says', async (t) => {
  for (const [name, sizes, rate] of [
    ['a busy frame (12 packets, FEC 25 %)', [[1100, 1180, 1000, 1180, 900, 1180, 1180, 700, 1180, 1180, 1180, 433]], 0.25],
    ['a keyframe (30 packets, the 48-bit mask)', [Array.from({ length: 30 }, (_, i) => 600 + i * 20)], 0.2],
    ['calm frames, a packet each, protected together', [[300], [280], [310]], 0.2],
  ] as const) {
    const sent: Buffer[] = [];
    const enc = new UlpfecEncoder({ payloadTypes: pts, extensionBlock: twccBlock, send: (p) => sent.push(p), firstSequence: 65_530 });
    enc.rate = rate;
    const input = frames(sizes.map((f) => [...f]));
    for (const p of input) enc.push(p);
    const received = sent.map(asReceived);
    t.ok(received.every((r) => r.red), `${name}: every packet is RED with one block header`);
    const media = received.filter((r) => r.block === pts.media).map((r) => r.pkt);
    const fec = sent.filter((_, i) => received[i]!.block === pts.ulpfec);
    t.equal(media.length, input.length, `${name}: every media packet sent`);
    t.ok(fec.length > 0, `${name}: ${fec.length} FEC packet(s)`);
    t.same(
      sent.map((p) => p.readUInt16BE(2)),
      sent.map((_, i) => (65_530 + i) & 0xffff),
      `${name}: one sequence space, no gaps, wrapping at 65535`,
    );
    if (name.startsWith('a keyframe')) t.ok(fec.every((f) => (f[13]! & 0x40) !== 0), 'the L bit: a 48-bit mask for a group over 16 packets');
    const wrong: number[] = [];
    for (const lost of media) {
      const have = new Map(media.filter((m) => m !== lost).map((m) => [m.seq, m]));
      const got = fec.map((f) => recover(f, have)).find((r) => r !== undefined);
      if (!got || JSON.stringify(got) !== JSON.stringify(lost)) wrong.push(lost.seq);
    }
    t.same(wrong, [], `${name}: each of the ${media.length} media packets, lost alone, is rebuilt exactly (header fields, extension block, payload)`);
  }
});

t.test('FEC groups: small frames together, up to a limit; a clean link sends no FEC at all', async (t) => {
  const sent: Buffer[] = [];
  const enc = new UlpfecEncoder({ payloadTypes: pts, extensionBlock: twccBlock, send: (p) => sent.push(p) });
  enc.rate = 0.1; // wants 10 packets a group: capped at maxFramesPerGroup frames
  for (const p of frames(Array.from({ length: maxFramesPerGroup * 2 }, () => [200]))) enc.push(p);
  const blocks = sent.map((p) => p[12]! & 0x7f);
  t.same(blocks, [...Array(maxFramesPerGroup).fill(pts.media), pts.ulpfec, ...Array(maxFramesPerGroup).fill(pts.media), pts.ulpfec], `an FEC packet after every ${maxFramesPerGroup} one-packet frames`);

  sent.length = 0;
  enc.rate = 0;
  const input = frames([[1000, 1000, 500], [800]]);
  for (const p of input) enc.push(p);
  t.equal(sent.length, input.length, 'rate 0: no FEC packet');
  t.same(
    sent.map((p) => p.length - input[sent.indexOf(p)]!.length),
    input.map(() => 1),
    'the only cost of RED on a clean link: one byte a packet',
  );
});

t.test('a restarted capture worker (new SSRC, sequence, timestamp) continues the same stream', async (t) => {
  const sent: Buffer[] = [];
  const enc = new UlpfecEncoder({ payloadTypes: pts, extensionBlock: twccBlock, send: (p) => sent.push(p), firstSequence: 100 });
  for (const p of frames([[500], [500]], 7, 1_000_000)) enc.push(p);
  enc.sourceChanged();
  for (const p of frames([[500], [500]], 50_000, 4_000_000_000)) enc.push(p);
  t.same(sent.map((p) => p.readUInt16BE(2)), [100, 101, 102, 103], 'sequence numbers run on');
  t.same(sent.map((p) => p.readUInt32BE(4)), [1_000_000, 1_006_000, 1_006_001, 1_012_001], 'timestamps run on (one tick over the gap), then at the new worker\'s pace');
});

t.test('the FEC rate follows the loss: nothing on a clean link', async (t) => {
  t.equal(fecRateFor(0), 0);
  t.equal(fecRateFor(0.004), 0, 'under 0.5 %: none');
  t.ok(fecRateFor(0.03) > fecRateFor(0.01), 'more loss, more FEC');
  t.equal(fecRateFor(0.5), 0.5, 'capped at one FEC packet for two media packets');
});

/** The helper offer with Chromium's video RED, RTX-for-RED and ULPFEC lines (payload types as Chromium 156 offers them). */
function offerWithFec(): string {
  return sdpOffer('fec')
    .offer.replace('m=video 9 UDP/TLS/RTP/SAVPF 96 97', 'm=video 9 UDP/TLS/RTP/SAVPF 96 97 118 119 120')
    .replace('a=fmtp:97 apt=96\r\n', 'a=fmtp:97 apt=96\r\na=rtpmap:118 red/90000\r\na=rtpmap:119 rtx/90000\r\na=fmtp:119 apt=118\r\na=rtpmap:120 ulpfec/90000\r\n');
}

t.test('RED and ULPFEC are answered when the viewer offers them and stream.fec is "auto", not otherwise', async (t) => {
  const offer = offerWithFec();
  t.same(inspectOffer(offer).redUlpfec, { red: 118, ulpfec: 120, rtx: 119 }, "the viewer's payload types read from its offer");
  t.equal(inspectOffer(sdpOffer('plain').offer).redUlpfec, undefined, 'an offer without them');
  const ice = { servers: [], transportPolicy: 'all' as const, hostAddresses: ['127.0.0.1'], portRange: undefined };
  const open = async (sdp: string, fec: boolean) => StreamSession.open({ sid: `s-${fec}`, command: await authorised('stream.start', {}, sdp), ice, audio: false, fec, logger });

  const withFec = await open(offer, true);
  t.match(withFec.answer, /^m=video \d+ [A-Z/]+ 96 97 118 120 119\r$/m, 'the video m-line lists H.264, its RTX, RED, ULPFEC and RTX-for-RED');
  t.match(withFec.answer, /a=rtpmap:118 red\/90000\r\na=rtpmap:120 ulpfec\/90000\r\na=rtpmap:119 rtx\/90000\r\na=fmtp:119 apt=118\r\n/);
  t.match(withFec.answer, /a=fmtp:96 [^\r\n]*profile-level-id=42e01f/, 'H.264 still the offer\'s constrained baseline');
  t.match(withFec.session.fec, { red: true, rate: 0 }, 'RED on; no FEC until the viewer reports loss');
  await withFec.session.close();

  const off = await open(offer, false);
  t.notMatch(off.answer, /red\/90000|ulpfec/, 'stream.fec "off": not answered');
  t.match(off.session.fec, { red: false });
  await off.session.close();

  const plain = await open(sdpOffer('plain').offer, true);
  t.notMatch(plain.answer, /red\/90000|ulpfec/, 'a viewer that did not offer them: plain H.264');
  await plain.session.close();
});
