// The `rpi` and `rpi5` presets on arm64 GStreamer, emulated (scripts/test-arm64.sh runs this file with the
// bundle's node under qemu-aarch64-static, from a test tree inside the unpacked bundle, so
// gstreamer-superficial is the bundle's arm64 build and the plugins are Debian's arm64 ones:
// gstreamer1.0-libcamera for libcamerasrc, plugins-good for v4l2 and the rest).
// There is no camera and no Pi encoder here, so nothing is set to PLAYING: the check is that the
// pipeline description parses (gst_parse_launch) and that every element it names has a factory.
// v4l2h264enc is special: the v4l2 plugin registers it only when it finds the encoder's device
// (/dev/video11, bcm2835-codec, on a Pi); without one that check is reported as skipped, and the
// rest of the pipeline is parsed with x264enc standing in for it. The `rpi5` preset (the Pi 5: no
// hardware encoder, x264enc on its Cortex-A76) needs no stand-in: its whole pipeline is parsed.
import { closeSync, existsSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import t from 'tap';
import { captureConfigSchema } from '../../src/capture/config.ts';
import { buildPipeline, type CaptureSettings } from '../../src/capture/presets.ts';
import { V4L2_CID_MPEG_VIDEO_BITRATE, V4l2Control } from '../../src/capture/v4l2-control.ts';

interface GstPipeline {
  findChild(name: string): unknown;
}
const gst = createRequire(import.meta.url)('gstreamer-superficial') as { Pipeline: new (description: string) => GstPipeline };

const settings: CaptureSettings = {
  ...captureConfigSchema.parse({ preset: 'rpi', audio: true }),
  segmentDir: '/tmp/bwc-rpi-parse',
  segmentPrefix: 'p',
  rtpPort: 5004,
  rtpAudioPort: 5006,
  liveBitrateKbps: 800,
};
const built = buildPipeline(settings);

/** Factory names in a gst-launch description: the first word of every link, not caps or pad references. */
function factories(description: string): string[] {
  const names = new Set<string>();
  for (const branch of description.split(/\s{2,}/)) {
    for (const link of branch.split(' ! ')) {
      const word = link.trim().split(/\s+/)[0]!;
      if (word.includes('/') || word.includes('.')) continue; // caps (video/x-raw,...) or a pad reference (t., segments.audio_0)
      names.add(word);
    }
  }
  return [...names];
}

/** Whether GStreamer can make the element: parsed beside an unlinked identity so the result is a pipeline. */
function factoryExists(name: string): true | string {
  try {
    new gst.Pipeline(`${name}  identity`);
    return true;
  } catch (err) {
    return (err as Error).message;
  }
}

t.test('rpi preset: every element factory exists on arm64', async (t) => {
  t.equal(process.arch, 'arm64', 'running as arm64');
  const names = factories(built.description);
  t.ok(names.includes('libcamerasrc') && names.includes('v4l2h264enc'), `elements named: ${names.join(', ')}`);
  t.equal(factoryExists('libcamerasrc'), true, 'libcamerasrc exists (gstreamer1.0-libcamera:arm64)');
  t.equal(factoryExists('v4l2src'), true, 'the v4l2 plugin loads (v4l2src)');
  for (const name of names.filter((n) => n !== 'v4l2h264enc')) t.equal(factoryExists(name), true, `${name} exists`);
  const encoderDevice = '/dev/video11';
  t.test('v4l2h264enc exists', { skip: !existsSync(encoderDevice) && `no ${encoderDevice} (the Pi's bcm2835-codec encoder): the v4l2 plugin registers v4l2h264enc only for a device it finds` }, async (t) => {
    t.equal(factoryExists('v4l2h264enc'), true);
  });
});

t.test('rpi preset: the description parses with the real libcamerasrc, every named element present', async (t) => {
  const encoderReal = existsSync('/dev/video11');
  // Only the encoder is stood in for when its device is missing; libcamerasrc and alsasrc are real.
  const description = encoderReal ? built.description : built.description.replace(/v4l2h264enc name=(\w+) extra-controls="[^"]*"/g, 'x264enc name=$1');
  t.match(description, /^libcamerasrc ! /, 'libcamerasrc is the source');
  let pipeline: GstPipeline | undefined;
  try {
    pipeline = new gst.Pipeline(description);
  } catch (err) {
    t.fail(`gst_parse_launch: ${(err as Error).message}`);
    return;
  }
  for (const name of Object.values(built.elements)) t.ok(pipeline.findChild(name) !== undefined, `element ${name} is in the pipeline`);
});

t.test('rpi5 preset: the whole description parses on arm64, libcamerasrc and x264enc real, every named element present', async (t) => {
  t.equal(process.arch, 'arm64', 'running as arm64');
  const pi5 = buildPipeline({ ...settings, ...captureConfigSchema.parse({ preset: 'rpi5', audio: true }) });
  t.match(pi5.description, /^libcamerasrc ! /, 'libcamerasrc is the source');
  t.notMatch(pi5.description, /v4l2h264enc/, 'no hardware encoder');
  for (const name of factories(pi5.description)) t.equal(factoryExists(name), true, `${name} exists`);
  let pipeline: GstPipeline | undefined;
  try {
    pipeline = new gst.Pipeline(pi5.description);
  } catch (err) {
    t.fail(`gst_parse_launch: ${(err as Error).message}`);
    return;
  }
  for (const name of Object.values(pi5.elements)) t.ok(pipeline.findChild(name) !== undefined, `element ${name} is in the pipeline`);
  const live = pipeline.findChild(pi5.elements.liveEncoder) as Record<string, unknown>;
  live.bitrate = 450;
  t.equal(live.bitrate, 450, 'the live encoder\'s bitrate is a property the arm64 binding sets');
});

t.test('rpi: the live bitrate ioctl (koffi, variadic ioctl on the arm64 ABI) reaches the syscall, its refusal named', async (t) => {
  // No V4L2 device here. qemu-user 7.2 has no translation for the V4L2 ioctls and answers ENOSYS
  // itself (a kernel would say ENOTTY for /dev/null): either way the call went from koffi's variadic
  // arm64 call to the syscall, and the refusal is named, not thrown past the worker.
  const control = new V4l2Control();
  const fd = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(fd));
  t.throws(() => control.set(fd, '/dev/null', V4L2_CID_MPEG_VIDEO_BITRATE, 500_000), /^VIDIOC_S_CTRL video_bitrate=500000 on \/dev\/null \(fd \d+\): (ENOTTY|ENOSYS)/);
  t.throws(() => control.get(fd, '/dev/null', V4L2_CID_MPEG_VIDEO_BITRATE), /^VIDIOC_G_CTRL video_bitrate on \/dev\/null \(fd \d+\): (ENOTTY|ENOSYS)/);
});
