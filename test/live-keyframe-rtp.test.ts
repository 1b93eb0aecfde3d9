// The live view's keyframes as they leave the capture pipeline, for real: the live branch that
// buildPipeline makes (x264 with tune=zerolatency, which cuts a frame into slices) run by
// gst-launch with its valve open, its RTP caught on a UDP socket. Each keyframe must be one H.264
// access unit: SPS and PPS once before its first slice, never between its slices (a parameter set
// after a slice starts a new access unit, H.264 7.4.1.2.3; Chromium then decoded half a keyframe,
// dropped a frame and asked for another keyframe, ~225 times a minute at 0 % loss).
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import t from 'tap';
import { buildPipeline, type CaptureSettings } from '../src/capture/presets.ts';
import { captureConfigSchema } from '../src/capture/config.ts';

interface Packet {
  ts: number;
  /** NAL unit types in the packet (a STAP-A's inside; an FU-A's with S when it starts the unit). */
  nals: string[];
}

function nalsOf(p: Buffer): string[] {
  const type = p[12]! & 0x1f;
  if (type === 24) {
    const out: string[] = [];
    for (let o = 13; o + 2 < p.length; o += 2 + p.readUInt16BE(o)) out.push(String(p[o + 2]! & 0x1f));
    return out;
  }
  if (type === 28) return [(p[13]! & 0x80) !== 0 ? `${p[13]! & 0x1f}S` : `${p[13]! & 0x1f}`];
  return [String(type)];
}

t.test('a live keyframe carries SPS and PPS once, before its first slice, none between slices', async (t) => {
  const socket = dgram.createSocket('udp4');
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  const port = socket.address().port;
  const settings: CaptureSettings = {
    ...captureConfigSchema.parse({ testPattern: 'snow', width: 640, height: 360, framerate: 15 }),
    segmentDir: '/tmp',
    segmentPrefix: 'unused',
    rtpPort: port,
    rtpAudioPort: port + 1,
    liveBitrateKbps: 800,
  };
  const { description } = buildPipeline(settings);
  // The live branch exactly as built, fed by the test source, its valve open.
  const live = /vt\. ! (queue leaky=downstream[^]*?udpsink name=rtpsink [^ ]+ [^ ]+ sync=false async=false)/.exec(description)?.[1];
  t.ok(live, 'the live branch found in the pipeline');
  const source = description.split(' ! tee name=vt')[0]!.replace('is-live=true', 'is-live=true num-buffers=45');
  // Not leaky here: the leak drops frames when x264 falls behind (a loaded machine), which would leave
  // fewer keyframes to judge; it has nothing to do with where SPS and PPS go.
  const args = `${source} ! ${live!.replace('drop=true', 'drop=false').replace('queue leaky=downstream', 'queue')}`.split(' ').filter(Boolean);
  const packets: Packet[] = [];
  socket.on('message', (p: Buffer) => packets.push({ ts: p.readUInt32BE(4), nals: nalsOf(p) }));
  const gst = spawn('gst-launch-1.0', ['-q', ...args.map((a) => a.replace(/^caps="(.*)"$/, 'caps=$1'))], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  gst.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(gst, 'exit')) as [number | null];
  socket.close();
  t.equal(code, 0, `gst-launch ran the live branch (${stderr.trim().slice(0, 300)})`);
  // Group by RTP timestamp: one access unit each.
  const units = new Map<number, string[]>();
  for (const p of packets) units.set(p.ts, [...(units.get(p.ts) ?? []), ...p.nals]);
  const keyframes = [...units.values()].filter((nals) => nals.some((n) => n.startsWith('5')));
  t.ok(keyframes.length >= 3, `${keyframes.length} keyframes caught (1 s GOP over 3 s)`);
  t.ok(keyframes.some((nals) => nals.filter((n) => n === '5S').length > 1), 'x264 sliced the keyframes (the case that broke)');
  for (const nals of keyframes) {
    const firstSlice = nals.findIndex((n) => n.startsWith('5'));
    t.ok(nals.slice(0, firstSlice).includes('7') && nals.slice(0, firstSlice).includes('8'), `SPS and PPS before the first slice: ${nals.join(' ')}`);
    t.notOk(nals.slice(firstSlice).some((n) => n === '7' || n === '8'), `no SPS or PPS after a slice: ${nals.join(' ')}`);
  }
});
