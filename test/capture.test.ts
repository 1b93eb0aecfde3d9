// Capture: presets, the real `test` pipeline in a supervised worker (segments, kill -9, stop,
// live RTP, keyframes), a pipeline that cannot start, and the supervisor's stall and rate limits.
import { execFile, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once, type EventEmitter } from 'node:events';
import { statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import t from 'tap';
import { captureConfigSchema, type CaptureConfig } from '../src/capture/config.ts';
import { buildPipeline, h264Level, liveBitrateChange, liveBitrateProperty, resolvePreset, type CaptureSettings } from '../src/capture/presets.ts';
import { CaptureSupervisor, type CaptureHealth, type SegmentInfo } from '../src/capture/supervisor.ts';
import { decodedVideo } from './helpers/decode.ts';

const run = promisify(execFile);
const logger = pino({ level: 'silent' });
const fakeWorker = fileURLToPath(new URL('./helpers/capture-fake-worker.ts', import.meta.url));
const gstAvailable = spawnSync('gst-inspect-1.0', ['x264enc'], { stdio: 'ignore' }).status === 0;

// Deadlines only stop a test that would otherwise hang; nothing asserts how fast things are.
const DEADLINE_MS = 30_000;

function config(overrides: Record<string, unknown>): CaptureConfig {
  return captureConfigSchema.parse(overrides);
}

function settings(overrides: Record<string, unknown>): CaptureSettings {
  return { ...config(overrides), segmentDir: '/tmp/seg dir', segmentPrefix: 'p', rtpPort: 5004, rtpAudioPort: 5006, liveBitrateKbps: 700 };
}

/** Resolves with the first event of `name` whose arguments satisfy `match`. */
function waitFor<A extends unknown[]>(emitter: EventEmitter, name: string, match: (...args: A) => boolean = () => true): Promise<A> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`no matching "${name}" event within ${DEADLINE_MS} ms`));
    }, DEADLINE_MS);
    const listener = (...args: unknown[]) => {
      if (!match(...(args as A))) return;
      clearTimeout(timer);
      emitter.off(name, listener);
      resolve(args as A);
    };
    emitter.on(name, listener);
  });
}

function sizeOf(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** gst-discoverer-1.0 sees an H.264 stream. (Its Duration reads 0 for TS files under ~64 KB, as the
 * ball pattern makes them, so the duration is checked by decoding instead.) */
async function discoversH264(file: string): Promise<boolean> {
  const { stdout } = await run('gst-discoverer-1.0', [file]);
  return /video #\d+: H\.264/.test(stdout);
}

/** Decoded frames, or -1 when decoding fails; avdec_h264 (gstreamer1.0-libav) is not installed here, openh264dec is. */
async function decodedFrames(file: string): Promise<number> {
  const decoder = spawnSync('gst-inspect-1.0', ['avdec_h264'], { stdio: 'ignore' }).status === 0 ? 'avdec_h264' : 'openh264dec';
  try {
    const { stdout } = await run(
      'gst-launch-1.0',
      ['-v', 'filesrc', `location=${file}`, '!', 'tsdemux', '!', 'h264parse', '!', decoder, '!', 'fakesink', 'silent=false'],
      { maxBuffer: 64 << 20 },
    );
    return stdout.split('\n').filter((l) => /fakesink0: last-message = chain/.test(l)).length;
  } catch {
    return -1;
  }
}

t.test('settings: defaults, refusals', async (t) => {
  const c = config({});
  t.match(c, { preset: 'test', width: 1280, height: 720, framerate: 30, bitrateKbps: 2000, keyframeIntervalS: 1, segmentSeconds: 2, audio: false });
  t.same(c.workerLauncher, []);
  t.equal(captureConfigSchema.parse(undefined).preset, 'test');
  t.throws(() => config({ keyframeIntervalS: 4, segmentSeconds: 2 }), /keyframeIntervalS/);
  t.throws(() => config({ preset: 'gopro' }));
  t.throws(() => config({ colour: 'red' }));
  t.throws(() => config({ restartMinDelayMs: 5000, restartMaxDelayMs: 1000 }), /restartMinDelayMs/);
});

t.test('presets: element names, caps, the recording encoder and the live one', async (t) => {
  const test = buildPipeline(settings({ bitrateKbps: 1500, keyframeIntervalS: 0.5, segmentSeconds: 3 }));
  t.same(test.elements, {
    encoder: 'enc',
    keyframe: 'kf',
    segments: 'segments',
    live: 'live',
    meter: 'meter',
    rtpSink: 'rtpsink',
    liveAudio: 'liveaudio',
    liveEncoder: 'liveenc',
    liveKeyframe: 'livekf',
  });
  t.equal(test.liveEncoderSeparate, true, 'a live encoder of its own by default');
  t.match(test.description, /^videotestsrc is-live=true pattern=ball ! video\/x-raw,format=I420,width=1280,height=720,framerate=30\/1 ! tee name=vt/);
  t.match(test.description, /vt\. ! queue [^!]* ! x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max=15 bitrate=1500 ! capsfilter name=kf caps="video\/x-h264,profile=\(string\)constrained-baseline" ! h264parse config-interval=-1 ! tee name=t/);
  t.match(
    test.description,
    /vt\. ! queue leaky=downstream [^!]* ! valve name=live drop=true [^!]* ! x264enc name=liveenc [^!]*bitrate=700 ! capsfilter name=livekf [^!]* ! h264parse config-interval=-1 ! rtph264pay config-interval=0 mtu=1200 pt=96 aggregate-mode=zero-latency ! udpsink name=rtpsink host=127.0.0.1 port=5004/,
    'the live branch: closed valve before its own encoder, at the live bitrate',
  );
  t.match(test.description, /t\. ! queue [^!]* ! splitmuxsink name=segments muxer=mpegtsmux sink="filesink buffer-mode=unbuffered" send-keyframe-requests=true max-size-time=3000000000 location="\/tmp\/seg dir\/p-%06d.ts"/);
  t.notMatch(test.description, /(?<!v)t\. ! queue[^!]*! valve name=live/, 'the live branch does not hang off the recording tee');
  t.equal(test.description.match(/x264enc/g)?.length, 2);
  t.same(liveBitrateProperty(settings({}), 450), { property: 'bitrate', value: 450 });
  t.notMatch(test.description, /audiotestsrc/);

  const shared = buildPipeline(settings({ liveEncoder: 'shared' }));
  t.equal(shared.liveEncoderSeparate, false);
  t.equal(shared.description.match(/x264enc/g)?.length, 1, 'shared: one encoder feeds every branch');
  t.match(shared.description, /t\. ! queue leaky=downstream [^!]* ! valve name=live drop=true [^!]* ! rtph264pay/);
  t.match(shared.elements, { liveEncoder: 'enc', liveKeyframe: 'kf' }, 'keyframe requests go to the one encoder');
  t.equal(liveBitrateProperty(settings({ liveEncoder: 'shared' }), 450), undefined, 'nothing to adapt when shared');

  const withAudio = buildPipeline(settings({ audio: true })).description;
  t.match(withAudio, /audiotestsrc .* opusenc bitrate=32000 ! tee name=at .*at\. ! queue max-size-time=1000000000 ! segments\.audio_0/);
  t.match(withAudio, /at\. ! queue leaky=downstream [^!]* ! valve name=liveaudio drop=true [^!]* ! rtpopuspay pt=111 ! udpsink host=127.0.0.1 port=5006/, 'a closed live audio branch off the same Opus encoder');
  t.equal(withAudio.match(/opusenc/g)?.length, 1, 'one Opus encoder for segments and live view');

  const rpi = buildPipeline(settings({ preset: 'rpi', audio: true, audioDevice: 'hw:1' }));
  t.match(rpi.description, /^libcamerasrc ! video\/x-raw,format=NV12,width=1280,height=720,framerate=30\/1 ! tee name=vt/);
  t.match(rpi.description, /v4l2h264enc name=enc extra-controls="controls,repeat_sequence_header=1,video_bitrate=2000000,h264_i_frame_period=30"/);
  t.match(rpi.description, /v4l2h264enc name=liveenc extra-controls="controls,repeat_sequence_header=1,video_bitrate=700000,h264_i_frame_period=30"/);
  t.match(rpi.description, /capsfilter name=kf caps="video\/x-h264,profile=\(string\)constrained-baseline,level=\(string\)3.1"/);
  t.match(rpi.description, /alsasrc device="hw:1"/);
  t.equal(liveBitrateProperty(settings({ preset: 'rpi' }), 450), undefined, 'the Pi encoder\'s bitrate is no element property');
  t.same(liveBitrateChange(settings({ preset: 'rpi' }), 450), { kind: 'v4l2-control', control: 'video_bitrate', bps: 450_000 }, 'it is the V4L2 control, in bit/s');
  t.equal(liveBitrateChange(settings({ preset: 'rpi', liveEncoder: 'shared' }), 450), undefined, 'shared with the recording: never');
  t.equal(h264Level({ width: 1920, height: 1080, framerate: 30 }), '4');
  t.equal(h264Level({ width: 1920, height: 1080, framerate: 60 }), '4.2');

  const pi5 = buildPipeline(settings({ preset: 'rpi5' }));
  t.match(pi5.description, /^libcamerasrc ! video\/x-raw,format=NV12,width=1280,height=720,framerate=30\/1 ! tee name=vt/);
  t.match(pi5.description, /x264enc name=enc tune=zerolatency speed-preset=ultrafast threads=2 key-int-max=30 bitrate=2000 ! capsfilter name=kf/, 'the recording keeps its own encoder and bitrate');
  t.match(pi5.description, /valve name=live [^!]* ! x264enc name=liveenc tune=zerolatency speed-preset=ultrafast threads=2 key-int-max=30 bitrate=700 /);
  t.notMatch(pi5.description, /v4l2h264enc/);
  t.equal(pi5.liveEncoderSeparate, true);
  t.same(liveBitrateChange(settings({ preset: 'rpi5' }), 450), { kind: 'property', property: 'bitrate', value: 450 }, 'the Pi 5\'s live bitrate is x264enc\'s own property');
  t.throws(() => buildPipeline(settings({ preset: 'auto' })), /auto" must be resolved/);

  const uvc = buildPipeline(settings({ preset: 'v4l2', v4l2: { device: '/dev/video2' } }));
  t.match(uvc.description, /^v4l2src device="\/dev\/video2" do-timestamp=true ! video\/x-raw,.* ! videoconvert ! video\/x-raw,format=I420 ! tee name=vt .*x264enc name=enc/);
  const pass = buildPipeline(settings({ preset: 'v4l2', v4l2: { device: '/dev/video2', h264Passthrough: true } }));
  t.match(pass.description, /^v4l2src name=enc device="\/dev\/video2" do-timestamp=true ! video\/x-h264,width=1280,height=720,framerate=30\/1 ! capsfilter name=kf/);
  t.notMatch(pass.description, /x264enc/);
  t.equal(pass.liveEncoderSeparate, false, 'a camera that encodes itself always shares');
});

t.test('presets auto and rpi: the Pi 5 (no /dev/video11) gets rpi5, said in the log', async (t) => {
  t.same(resolvePreset('auto', true), { preset: 'rpi', note: 'capture.preset auto: /dev/video11 (the Pi hardware H.264 encoder) is present, using rpi' });
  t.match(resolvePreset('auto', false), { preset: 'rpi5', note: /^capture.preset auto: no \/dev\/video11 .* using rpi5/ });
  t.match(resolvePreset('rpi', false), { preset: 'rpi5', note: /^capture.preset rpi: no \/dev\/video11 .* using rpi5 .* instead/ });
  t.same(resolvePreset('rpi', true), { preset: 'rpi' });
  for (const p of ['test', 'v4l2', 'rpi5'] as const) t.same(resolvePreset(p, false), { preset: p }, `${p} is left alone`);
  t.equal(config({ preset: 'auto' }).preset, 'auto', 'capture.preset auto is a valid setting');

  const lines: { msg: string; level: number; preset?: string; configured?: string }[] = [];
  const sink = new PassThrough();
  sink.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as (typeof lines)[number])));
  const sup = new CaptureSupervisor({ settings: config({ preset: 'rpi' }), segmentDir: '/tmp', logger: pino(sink), piEncoderPresent: false });
  t.equal(sup.preset, 'rpi5');
  t.equal(sup.liveBitrateAdjustable, true);
  await until(() => lines.length > 0, 'the log line');
  t.match(lines[0], { level: 40, configured: 'rpi', preset: 'rpi5', msg: /no \/dev\/video11/ }, 'a warning: the configured preset was not what runs');
  t.equal(new CaptureSupervisor({ settings: config({ preset: 'auto' }), segmentDir: '/tmp', logger, piEncoderPresent: true }).preset, 'rpi');
});

t.test('presets parse with the real GStreamer', { skip: !gstAvailable && 'GStreamer not installed' }, async (t) => {
  // libcamerasrc and v4l2h264enc exist only on the Pi: the rpi pipeline is parsed with stand-ins for
  // those two elements, which checks everything around them (caps, tee, branches, element names).
  const rpi = buildPipeline(settings({ preset: 'rpi', audio: true }))
    .description.replace('libcamerasrc', 'videotestsrc')
    .replace(/v4l2h264enc name=(\w+) extra-controls="[^"]*"/g, 'x264enc name=$1')
    .replace(/alsasrc device="[^"]*"/, 'audiotestsrc');
  const descriptions = {
    test: buildPipeline(settings({ audio: true })).description,
    v4l2: buildPipeline(settings({ preset: 'v4l2' })).description,
    v4l2Passthrough: buildPipeline(settings({ preset: 'v4l2', v4l2: { h264Passthrough: true } })).description,
    testShared: buildPipeline(settings({ liveEncoder: 'shared' })).description,
    rpi,
    rpi5: buildPipeline(settings({ preset: 'rpi5', audio: true }))
      .description.replace('libcamerasrc', 'videotestsrc')
      .replace(/alsasrc device="[^"]*"/, 'audiotestsrc'),
  };
  // In a child: the binding never frees a pipeline, and this process should not load GStreamer.
  const script = `
    const gst = require('gstreamer-superficial');
    const names = ['enc', 'kf', 'segments', 'live', 'meter', 'rtpsink'];
    const separate = ['liveenc', 'livekf'];
    const out = {};
    for (const [k, d] of Object.entries(JSON.parse(process.argv[1]))) {
      try { const p = new gst.Pipeline(d); out[k] = [...names, ...(/liveenc/.test(d) ? separate : [])].filter((n) => p.findChild(n) === undefined); }
      catch (e) { out[k] = String(e.message); }
    }
    console.log(JSON.stringify(out));`;
  const { stdout } = await run(process.execPath, ['-e', script, JSON.stringify(descriptions)], { cwd: fileURLToPath(new URL('..', import.meta.url)) });
  const result = JSON.parse(stdout) as Record<string, unknown>;
  for (const key of Object.keys(descriptions)) t.same(result[key], [], `${key} parses and has every named element`);
});

t.test('the live bitrate changes at run time; the recording encoder keeps its own', { skip: !gstAvailable && 'GStreamer not installed' }, async (t) => {
  const description = buildPipeline(settings({ width: 320, height: 180, bitrateKbps: 1500 })).description;
  const x264 = liveBitrateProperty(settings({}), 450)!;
  const script = `
    const gst = require('gstreamer-superficial');
    const [d, x] = JSON.parse(process.argv[1]);
    const p = new gst.Pipeline(d);
    p.play();
    setTimeout(() => {
      const live = p.findChild('liveenc'), rec = p.findChild('enc');
      live[x.property] = x.value;
      const out = { live: live.bitrate, recording: rec.bitrate };
      p.stop();
      console.log(JSON.stringify(out));
      process.exit(0);
    }, 500);`;
  const { stdout } = await run(process.execPath, ['-e', script, JSON.stringify([description, x264])], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    timeout: DEADLINE_MS,
  });
  const out = JSON.parse(stdout) as { live: number; recording: number };
  t.equal(out.live, 450, 'the playing live encoder took the new bitrate');
  t.equal(out.recording, 1500, 'the recording encoder did not change');
});

t.test('the test preset under the supervisor', { skip: !gstAvailable && 'GStreamer not installed' }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-capture-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const packets: Buffer[] = [];
  const sup = new CaptureSupervisor({
    settings: config({ width: 640, height: 360, segmentSeconds: 2, keyframeIntervalS: 1, bitrateKbps: 800, restartMinDelayMs: 100 }),
    segmentDir: dir,
    logger,
    onRtp: (p) => packets.push(p),
  });
  const segments: SegmentInfo[] = [];
  const opened: string[] = [];
  const faults: { reason: string; restartInMs: number }[] = [];
  sup.on('segment', (s) => segments.push(s));
  sup.on('segment-opened', (s) => opened.push(s.file));
  sup.on('fault', (f) => faults.push(f));
  t.teardown(() => sup.stop());
  await sup.start();
  await waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'running');
  t.ok(sup.health().pid, 'worker pid exposed');

  await t.test('segments are H.264 MPEG-TS of about segmentSeconds', async (t) => {
    await until(() => segments.length >= 3, 'three closed segments');
    for (const s of segments.slice(0, 3)) {
      t.ok(path.isAbsolute(s.file) && s.file.startsWith(dir) && s.file.endsWith('.ts'), s.file);
      t.ok(Math.abs(s.durationS - 2) < 0.5, `reported duration ${s.durationS}`);
      t.equal(Date.parse(s.endedAt) - Date.parse(s.startedAt), Math.round(s.durationS * 1000));
      t.ok(await discoversH264(s.file), 'gst-discoverer sees H.264');
      const decoded = await decodedVideo(s.file);
      t.ok(Math.abs(decoded.seconds - 2) < 0.5, `${decoded.frames} frames decode, ${decoded.seconds.toFixed(2)} s of video, about 2 s`);
    }
  });

  await t.test('live RTP only while open, IDR after a keyframe request', async (t) => {
    await new Promise((r) => setTimeout(r, 300));
    t.equal(packets.length, 0, 'nothing flows while the valve is closed');
    sup.setLive(true);
    await until(() => packets.length > 50, 'RTP packets');
    const p = packets[0]!;
    t.equal(p[0]! >> 6, 2, 'RTP version 2');
    t.equal(p[1]! & 0x7f, 96, 'payload type 96');
    t.ok(packets.some((q) => (q[1]! & 0x80) !== 0), 'marker bits end access units');
    t.ok(packets.every((q) => q.length <= 1200), 'MTU 1200');
    const before = packets.length;
    sup.requestKeyframe();
    const idrAt = () => packets.slice(before).findIndex(isIdrStart);
    await until(() => idrAt() >= 0, 'an IDR after the request');
    t.pass(`IDR arrived ${idrAt()} packets after the request`);
    sup.setLive(false);
    await new Promise((r) => setTimeout(r, 300)); // packets already in flight on loopback
    const stopped = packets.length;
    await new Promise((r) => setTimeout(r, 1000));
    t.equal(packets.length, stopped, 'no packets after setLive(false)');
  });

  await t.test('live RTP from any process but the worker is refused', async (t) => {
    sup.setLive(true);
    await until(() => packets.length > 0, 'worker RTP flowing');
    const marker = Buffer.from('80600001000000010badc0de' + 'ff'.repeat(20), 'hex');
    const rogue = dgram.createSocket('udp4');
    await new Promise<void>((r) => rogue.bind(0, '127.0.0.1', r));
    for (let i = 0; i < 20; i++) {
      rogue.send(marker, sup.rtpPort!, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 20));
    }
    const count = packets.length;
    await until(() => packets.length > count + 30, 'the worker\'s packets still flow');
    t.notOk(packets.some((p) => p.equals(marker)), 'no injected packet reached the live view');
    rogue.close();
    sup.setLive(false);
    await new Promise((r) => setTimeout(r, 300));
  });

  await t.test('kill -9: fault, restart, and the interrupted segment still decodes', async (t) => {
    const pid = sup.health().pid!;
    const interrupted = opened.at(-1)!;
    // Something of it on disk first (splitmuxsink writes a GOP at a time), or there is nothing to play.
    await until(() => sizeOf(interrupted) > 0, 'the open segment on disk');
    const closedBefore = segments.length;
    const fault = waitFor(sup, 'fault');
    process.kill(pid, 'SIGKILL');
    const [f] = (await fault) as [{ reason: string; restartInMs: number }];
    t.match(f.reason, /SIGKILL/);
    t.equal(f.restartInMs, 100);
    await waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'running' && h.pid !== pid);
    t.equal(sup.health().restarts, 1);
    await until(() => segments.length >= closedBefore + 2, 'segments from the new worker');
    t.notOk(segments.some((s) => s.file === interrupted), 'the killed segment never reported closed');
    t.ok(await discoversH264(interrupted), 'gst-discoverer reads the interrupted segment');
    t.ok((await decodedFrames(interrupted)) > 0, 'the interrupted segment decodes');
    t.equal(sup.health().consecutiveFaults, 0, 'a closed segment clears the fault run');
  });

  await t.test('stop() finalises the open segment', async (t) => {
    const last = opened.at(-1)!;
    await sup.stop();
    t.equal(sup.health().status, 'stopped');
    t.equal(sup.health().pid, undefined);
    const final = segments.find((s) => s.file === last);
    t.ok(final, 'the open segment was reported closed');
    t.ok((await decodedFrames(last)) > 0, 'and decodes');
    t.equal(faults.length, 1, 'only the kill was a fault');
  });
});

/** First packet of an IDR access unit: SPS in a STAP-A, an IDR slice, or an FU-A start of one. */
function isIdrStart(p: Buffer): boolean {
  const nal = p[12]! & 0x1f;
  if (nal === 5 || nal === 7) return true;
  if (nal === 24) return (p[15]! & 0x1f) === 7 || (p[15]! & 0x1f) === 5;
  if (nal === 28) return (p[13]! & 0x80) !== 0 && (p[13]! & 0x1f) === 5;
  return false;
}

t.test('a pipeline that cannot start: faults with growing back-off, never a throw', { skip: !gstAvailable && 'GStreamer not installed' }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-capture-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sup = new CaptureSupervisor({
    settings: config({ preset: 'v4l2', v4l2: { device: '/dev/video-missing' }, restartMinDelayMs: 50, restartMaxDelayMs: 200 }),
    segmentDir: dir,
    logger,
    failedAfterFaults: 3,
    startTimeoutMs: 1000,
  });
  t.teardown(() => sup.stop());
  const faults: { reason: string; restartInMs: number }[] = [];
  sup.on('fault', (f) => faults.push(f));
  await sup.start();
  await until(() => faults.length >= 4, 'four faults');
  await sup.stop();
  t.same(
    faults.slice(0, 4).map((f) => f.restartInMs),
    [50, 100, 200, 200],
    'back-off doubles up to the cap',
  );
  t.match(faults[0]!.reason, /video-missing|Cannot identify|not exist|open/i);
  t.ok(sup.health().restarts >= 3);
  t.equal(sup.health().lastFault?.reason, faults.at(-1)!.reason);
});

t.test('status failed after repeated faults; launcher that does not exist', async (t) => {
  const sup = new CaptureSupervisor({
    settings: config({ workerLauncher: ['/nonexistent/launcher'], restartMinDelayMs: 10, restartMaxDelayMs: 20 }),
    segmentDir: os.tmpdir(),
    logger,
    failedAfterFaults: 2,
  });
  const states: CaptureHealth[] = [];
  sup.on('state', (h) => states.push(h));
  await sup.start();
  await waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'failed');
  await sup.stop();
  t.match(sup.health().lastFault?.reason, /ENOENT/);
  t.ok(states.some((s) => s.status === 'restarting'));
});

t.test('stall: no frame progress for stallTimeoutS kills and restarts the worker', async (t) => {
  const sup = new CaptureSupervisor({
    settings: config({ workerLauncher: ['env', 'FAKE_MODE=stall'], stallTimeoutS: 1, restartMinDelayMs: 10 }),
    segmentDir: os.tmpdir(),
    logger,
    workerPath: fakeWorker,
    statsIntervalMs: 100,
    // The stall clock starts when the worker runs; however long a loaded machine takes to start
    // it, only this bound (far above any start-up) could end it before.
    startTimeoutMs: DEADLINE_MS,
  });
  t.teardown(() => sup.stop());
  await sup.start();
  const [f] = (await waitFor(sup, 'fault')) as [{ reason: string }];
  t.match(f.reason, /stalled/);
  await waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'running' && h.restarts === 1);
  await sup.stop();
  t.equal(sup.health().status, 'stopped');
});

/** A logger whose lines the test can wait for: resolves with the first line whose msg matches. */
function watchedLogger(): { logger: pino.Logger; line(msg: RegExp): Promise<Record<string, unknown>> } {
  const lines = new PassThrough();
  const seen: Record<string, unknown>[] = [];
  const waiting = new Set<() => void>();
  lines.setEncoding('utf8').on('data', (chunk: string) => {
    for (const text of chunk.split('\n')) if (text) seen.push(JSON.parse(text) as Record<string, unknown>);
    for (const w of waiting) w();
  });
  return {
    logger: pino({ level: 'info' }, lines),
    line: (msg) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = seen.find((l) => msg.test(String(l.msg)));
          if (!found) return;
          waiting.delete(check);
          clearTimeout(timer);
          resolve(found);
        };
        const timer = setTimeout(() => {
          waiting.delete(check);
          reject(new Error(`no log line matching ${msg} within ${DEADLINE_MS} ms`));
        }, DEADLINE_MS);
        waiting.add(check);
        check();
      }),
  };
}

t.test('a worker slower to start than stallTimeoutS (a slow board) is not taken for a stalled one', async (t) => {
  const watched = watchedLogger();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'capture-slow-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const release = path.join(dir, 'started');
  const sup = new CaptureSupervisor({
    settings: config({ workerLauncher: ['env', 'FAKE_MODE=slow-start', `FAKE_RELEASE=${release}`], stallTimeoutS: 1, restartMinDelayMs: 10 }),
    segmentDir: os.tmpdir(),
    logger: watched.logger,
    workerPath: fakeWorker,
    statsIntervalMs: 100,
    startTimeoutMs: DEADLINE_MS,
  });
  t.teardown(() => sup.stop());
  const faults: { reason: string }[] = [];
  sup.on('fault', (f) => faults.push(f));
  await sup.start();
  // The supervisor says when the worker has been starting for longer than stallTimeoutS: the point
  // where a stall clock running since the launch kills it. Only then does the fake report ready.
  const slow = await Promise.race([watched.line(/slow to start/), waitFor<[{ reason: string }]>(sup, 'fault').then(([f]) => f)]);
  t.notOk('reason' in slow, `the starting worker is left to start (${JSON.stringify(slow)})`);
  if ('reason' in slow) return;
  // Listen before releasing: the worker sees the file as soon as it is created, and its `ready`
  // can be handled before writeFile's own completion (seen once under load: the event was missed).
  const running = waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'running');
  await writeFile(release, '');
  await running;
  await until(() => sup.health().frames > 3, 'frames from the worker');
  t.same(faults, [], 'no fault');
  t.equal(sup.health().restarts, 0, 'the worker was not restarted');
  await sup.stop();
});

t.test('a worker that never reports running is killed startTimeoutMs + stallTimeoutS after its launch', async (t) => {
  const sup = new CaptureSupervisor({
    settings: config({ workerLauncher: ['env', 'FAKE_MODE=hang'], stallTimeoutS: 1, restartMinDelayMs: 10 }),
    segmentDir: os.tmpdir(),
    logger,
    workerPath: fakeWorker,
    statsIntervalMs: 100,
    startTimeoutMs: 100,
  });
  t.teardown(() => sup.stop());
  await sup.start();
  const [f] = (await waitFor(sup, 'fault')) as [{ reason: string }];
  t.match(f.reason, /capture worker did not start: not running \d+ s after its launch/);
  await sup.stop();
});

t.test('keyframe requests are rate limited, the last one of a burst is kept', async (t) => {
  const sup = new CaptureSupervisor({
    settings: config({ workerLauncher: ['env', 'FAKE_MODE=count'] }),
    segmentDir: os.tmpdir(),
    logger,
    workerPath: fakeWorker,
    keyframeMinIntervalMs: 200,
  });
  t.teardown(() => sup.stop());
  await sup.start();
  await waitFor<[CaptureHealth]>(sup, 'state', (h) => h.status === 'running');
  for (let i = 0; i < 10; i++) sup.requestKeyframe();
  await until(() => sup.health().frames === 2, 'the immediate and the trailing request');
  await new Promise((r) => setTimeout(r, 400));
  t.equal(sup.health().frames, 2, 'ten requests in a burst reach the worker as two');
  await sup.stop();
});
