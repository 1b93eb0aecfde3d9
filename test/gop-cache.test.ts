// The live view's GOP cache (src/stream/gop-cache.ts): which RTP packets start an H.264 keyframe,
// and what the cache keeps, from real packet layouts (RFC 6184 single NAL, STAP-A, FU-A).
import t from 'tap';
import { GopCache, isKeyframeStart } from '../src/stream/gop-cache.ts';
import { h264Frame, h264Rtp } from './helpers/stream-rig.ts';

t.test('isKeyframeStart: SPS or IDR, single, aggregated or the first fragment', async (t) => {
  t.ok(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x67, 0x42] })), 'single SPS');
  t.ok(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x65, 0x88] })), 'single IDR slice');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x41, 0x9a] })), 'single non-IDR slice');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x68, 0xce] })), 'PPS alone does not start a picture');
  t.ok(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [24, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce] })), 'STAP-A with SPS and PPS');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [24, 0, 2, 0x06, 0x05, 0, 2, 0x68, 0xce] })), 'STAP-A with SEI and PPS');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [24, 0, 40, 0x67, 0x42] })), 'STAP-A whose size runs past the packet');
  t.ok(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x7c, 0x85] })), 'FU-A start of an IDR');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x7c, 0x05] })), 'FU-A middle of an IDR');
  t.notOk(isKeyframeStart(h264Rtp({ seq: 1, ts: 1, nal: [0x7c, 0x81] })), 'FU-A start of a P slice');
  // Header extension (transport-cc style, one word) and a CSRC before the payload.
  const withExt = h264Rtp({ seq: 1, ts: 1, nal: [0xbe, 0xde, 0, 1, 0x10, 0, 0, 0, 0x65, 0x88] });
  withExt[0] = 0x90;
  t.ok(isKeyframeStart(withExt), 'after a header extension');
  const withCsrc = h264Rtp({ seq: 1, ts: 1, nal: [0, 0, 0, 9, 0x67] });
  withCsrc[0] = 0x81;
  t.ok(isKeyframeStart(withCsrc), 'after a CSRC');
  t.notOk(isKeyframeStart(Buffer.from([0x80, 96, 0, 1])), 'too short');
  t.notOk(isKeyframeStart(Buffer.concat([Buffer.from([0x40]), Buffer.alloc(14)])), 'not RTP version 2');
});

t.test('the cache keeps the latest keyframe and what follows, in order', async (t) => {
  const cache = new GopCache(1 << 20);
  let seq = 0;
  const feed = (frames: Buffer[], now: number) => {
    for (const p of frames) cache.push(p, isKeyframeStart(p), now);
    seq += frames.length;
  };
  feed(h264Frame({ seq, ts: 0, keyframe: false }), 0);
  t.equal(cache.snapshot(0), undefined, 'P-frames alone: nothing to start a viewer with');
  const kf1 = h264Frame({ seq, ts: 3000, keyframe: true });
  feed(kf1, 100);
  const p1 = h264Frame({ seq, ts: 6000, keyframe: false });
  feed(p1, 133);
  t.same(cache.snapshot(150)?.packets, [...kf1, ...p1], 'keyframe (STAP-A + FU-A) then the P-frame');
  t.equal(cache.snapshot(150)?.ageMs, 50, 'age from the keyframe');
  const kf2 = h264Frame({ seq, ts: 9000, keyframe: true });
  feed(kf2, 200);
  t.same(cache.snapshot(200)?.packets, kf2, 'a new keyframe starts a new GOP');
  cache.clear();
  t.equal(cache.snapshot(200), undefined, 'cleared');
});

t.test('a keyframe whose first packet is not its SPS still starts whole', async (t) => {
  const cache = new GopCache(1 << 20);
  const sei = h264Rtp({ seq: 1, ts: 3000, nal: [0x06, 0x05, 0x01] });
  const sps = h264Rtp({ seq: 2, ts: 3000, nal: [0x67, 0x42] });
  const idr = h264Rtp({ seq: 3, ts: 3000, marker: true, nal: [0x65, 0x88] });
  for (const p of [sei, sps, idr]) cache.push(p, isKeyframeStart(p), 0);
  t.same(cache.snapshot(0)?.packets, [sei, sps, idr], 'the SEI before the SPS, same picture, kept; the IDR does not restart the GOP');
});

t.test('bounded in bytes: past the bound it waits for the next keyframe', async (t) => {
  const cache = new GopCache(5000);
  let seq = 0;
  const feed = (frames: Buffer[]) => {
    for (const p of frames) cache.push(p, isKeyframeStart(p), 0);
    seq += frames.length;
  };
  feed(h264Frame({ seq, ts: 0, keyframe: true }));
  t.ok(cache.snapshot(0), 'one keyframe fits');
  feed(h264Frame({ seq, ts: 3000, keyframe: false }));
  feed(h264Frame({ seq, ts: 6000, keyframe: false }));
  t.equal(cache.snapshot(0), undefined, 'over 5000 bytes: dropped');
  t.equal(cache.overflows, 1);
  feed(h264Frame({ seq, ts: 9000, keyframe: false }));
  t.equal(cache.snapshot(0), undefined, 'P-frames do not start a GOP again');
  const kf = h264Frame({ seq, ts: 12000, keyframe: true });
  feed(kf);
  t.same(cache.snapshot(0)?.packets, kf, 'the next keyframe does');
});
