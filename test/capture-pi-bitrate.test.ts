// The `rpi` preset's live bitrate, set on the Pi's hardware encoder while it runs (VIDIOC_S_CTRL on the
// descriptor v4l2h264enc opened; src/capture/v4l2-control.ts), tested at the GStreamer element and
// ioctl interface: this machine has no camera and no /dev/video11, so test/fixtures/fake-v4l2 stands in
// for both (libcamerasrc and v4l2h264enc as a plugin, with device-fd on a plain file; the two V4L2
// control ioctls answered and logged by an LD_PRELOAD interposer). Everything else is real: the
// pipeline buildPipeline makes for `rpi`, the capture worker and its supervisor, LiveBitrateLoop
// deciding the bitrate, koffi's ioctl. What the VideoCore encoder then does with the bitrate is for
// the field test (docs/field-test-raspberry-pi.md).
import { execFile, spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pino from 'pino';
import t from 'tap';
import { captureConfigSchema } from '../src/capture/config.ts';
import { CaptureSupervisor, type CaptureHealth } from '../src/capture/supervisor.ts';
import { V4L2_CID_MPEG_VIDEO_BITRATE, V4l2Control, VIDIOC_G_CTRL, VIDIOC_S_CTRL } from '../src/capture/v4l2-control.ts';
import { LiveBitrateLoop, type PathSample, type SampledViewer } from '../src/stream/bitrate.ts';

const run = promisify(execFile);
const source = fileURLToPath(new URL('./fixtures/fake-v4l2/fake-v4l2.c', import.meta.url));
const canBuild =
  spawnSync('gcc', ['--version'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('pkg-config', ['--exists', 'gstreamer-1.0'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('gst-inspect-1.0', ['x264enc'], { stdio: 'ignore' }).status === 0;

// Deadlines only stop a test that would otherwise hang; nothing asserts how fast things are.
const DEADLINE_MS = 60_000;

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + DEADLINE_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('the ioctl through koffi reaches the kernel, whose refusals are named', async (t) => {
  t.equal(VIDIOC_G_CTRL, 0xc008561b, '_IOWR(\'V\', 27, struct v4l2_control)');
  t.equal(VIDIOC_S_CTRL, 0xc008561c, '_IOWR(\'V\', 28, struct v4l2_control)');
  t.equal(V4L2_CID_MPEG_VIDEO_BITRATE, 0x9909cf, 'V4L2_CID_CODEC_BASE + 207');
  const control = new V4l2Control();
  const fd = openSync('/dev/null', 'r');
  t.teardown(() => closeSync(fd));
  t.throws(() => control.set(fd, '/dev/null', V4L2_CID_MPEG_VIDEO_BITRATE, 500_000), /^VIDIOC_S_CTRL video_bitrate=500000 on \/dev\/null \(fd \d+\): ENOTTY: not a V4L2 device$/);
  t.throws(() => control.get(-1, '/dev/video11', V4L2_CID_MPEG_VIDEO_BITRATE), /EBADF: the descriptor is not open/);
});

t.test('rpi: the bitrate LiveBitrateLoop chooses reaches the live encoder as VIDIOC_S_CTRL video_bitrate', { skip: !canBuild && 'needs gcc, the GStreamer headers and x264enc' }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-fake-v4l2-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const lib = path.join(dir, 'libfakev4l2.so');
  const pkg = (await run('pkg-config', ['--cflags', '--libs', 'gstreamer-1.0'])).stdout.trim().split(/\s+/);
  await run('gcc', ['-shared', '-fPIC', '-O1', '-o', lib, source, ...pkg, '-ldl']);
  const device = path.join(dir, 'video11');
  writeFileSync(device, '');
  const log = path.join(dir, 'v4l2.log');
  writeFileSync(log, '');
  // A registry of its own: the stand-ins must never reach the machine's real one.
  const env = { GST_PLUGIN_PATH: dir, GST_REGISTRY: path.join(dir, 'registry.bin'), FAKE_V4L2_DEVICE: device, FAKE_V4L2_LOG: log };
  // Built once here (and checked), so the worker does not scan every plugin while it starts.
  const inspect = await run('gst-inspect-1.0', ['v4l2h264enc'], { env: { ...process.env, ...env } });
  t.match(inspect.stdout, /device-fd/, 'the stand-in v4l2h264enc has device-fd');

  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
        done();
      },
    }),
  );
  const calls = () => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => l.split('\t'));
  const setCalls = () => calls().filter((c) => c[0] === 'S_CTRL');

  const settings = captureConfigSchema.parse({
    preset: 'rpi',
    width: 320,
    height: 240,
    framerate: 15,
    bitrateKbps: 600,
    restartMinDelayMs: 100,
    workerLauncher: ['env', ...Object.entries({ ...env, LD_PRELOAD: lib }).map(([k, v]) => `${k}=${v}`)],
  });
  // The stand-in device plays /dev/video11 (without it, rpi would become rpi5).
  const sup = new CaptureSupervisor({ settings, segmentDir: dir, logger, liveBitrateKbps: 800, startTimeoutMs: 30_000, piEncoderPresent: true });
  const states: CaptureHealth[] = [];
  sup.on('state', (h) => states.push(h));
  t.teardown(() => sup.stop());
  t.equal(sup.liveBitrateAdjustable, true, 'the rpi preset with a live encoder of its own adapts now');
  await sup.start();
  await until(() => sup.health().status === 'running', 'the rpi pipeline running on the stand-ins');

  const opened = calls().filter((c) => c[0] === 'open');
  t.same(
    opened.map((c) => [c[1], c[3], c[4]]).sort(),
    [
      ['enc', device, '600000'],
      ['liveenc', device, '800000'],
    ],
    'both encoders opened the device, each a context of its own, at their starting bitrates (extra-controls)',
  );
  const liveFd = opened.find((c) => c[1] === 'liveenc')![2]!;

  const loop = new LiveBitrateLoop(
    { adapt: true, minKbps: 150, maxKbps: 2000, startKbps: 800 },
    { setLiveBitrate: (kbps) => sup.setLiveBitrate(kbps), liveBitrateAdjustable: () => sup.liveBitrateAdjustable },
    logger,
  );
  t.equal(loop.adaptive(), true);
  sup.setLive(true);
  loop.firstViewer();
  let sample: PathSample = { sendKbps: 800, lossFraction: 0.5, deliveredKbps: undefined, intervalMs: 1000 };
  const viewer: SampledViewer = { sid: 'viewer-1', bitrate: loop.newLink(false), sample: () => sample };

  await t.test('heavy loss: the loop drops to 90 % of what was delivered, set on the live encoder only', async (t) => {
    t.equal(loop.tick(10_000, true, () => [viewer]), true, 'the loop changed the bitrate');
    t.equal(loop.shownKbps(true), 360);
    await until(() => setCalls().length >= 1, 'VIDIOC_S_CTRL');
    t.same(setCalls()[0], ['S_CTRL', 'liveenc', liveFd, 'video_bitrate', '360000'], 'video_bitrate=360000 on the live encoder\'s own descriptor');
    await until(() => lines.some((l) => l.msg === 'live bitrate set on the V4L2 encoder'), 'the worker\'s report');
    t.match(lines.find((l) => l.msg === 'live bitrate set on the V4L2 encoder'), { kbps: 360, device, appliedBps: 360000 }, 'read back from the same context (VIDIOC_G_CTRL)');
    t.notOk(setCalls().some((c) => c[1] === 'enc'), 'the recording encoder is never touched');
  });

  await t.test('the link recovers: the loop probes upward and the encoder follows', async (t) => {
    sample = { sendKbps: 360, lossFraction: 0, deliveredKbps: 360, intervalMs: 1000 };
    let now = 10_000;
    // Congestion is remembered for 10 s (cautious growth), then growth is 10 % a second.
    for (let i = 0; i < 30 && (loop.shownKbps(true) ?? 0) < 400; i++) loop.tick((now += 1000), true, () => [viewer]);
    const kbps = loop.shownKbps(true)!;
    t.ok(kbps >= 400, `the loop went up to ${kbps} kbit/s`);
    await until(() => setCalls().at(-1)?.[4] === String(kbps * 1000), `video_bitrate=${kbps * 1000}`);
  });

  await t.test('a burst of changes: at most one a second, the latest wins', async (t) => {
    const before = setCalls().length;
    sup.setLiveBitrate(300);
    sup.setLiveBitrate(250);
    sup.setLiveBitrate(200);
    await until(() => setCalls().at(-1)?.[4] === '200000', 'video_bitrate=200000');
    const burst = setCalls().slice(before).map((c) => c[4]);
    t.notOk(burst.includes('250000'), `the superseded 250 kbit/s never reached the encoder (set: ${burst.join(', ')})`);
    t.ok(burst.length <= 2, 'at most the first at once and the last after the gap');
  });

  await t.test('the driver refuses a value: logged once, shown in the health, never fatal', async (t) => {
    writeFileSync(`${log}.fail-s-ctrl`, '');
    sup.setLiveBitrate(500);
    await until(() => sup.health().liveBitrateError !== undefined, 'the failure in the health');
    t.match(sup.health().liveBitrateError, /^VIDIOC_S_CTRL video_bitrate=500000 on .*video11 \(fd \d+\): ERANGE/, 'names the ioctl, the value, the device and the errno');
    t.ok(states.some((s) => s.liveBitrateError !== undefined), 'a state event carried it');
    sup.setLiveBitrate(450);
    await until(() => calls().filter((c) => c[0] === 'S_CTRL' && c[5] === 'ERANGE').length >= 2, 'the second refused change');
    await until(() => sup.health().liveBitrateError?.includes('450000') === true, 'the latest reason');
    t.equal(lines.filter((l) => l.msg === 'cannot set the live bitrate on the encoder; the live view keeps its last rate').length, 1, 'logged once');
    t.equal(sup.health().status, 'running', 'capture goes on');
    t.equal(sup.health().restarts, 0, 'no restart');
    unlinkSync(`${log}.fail-s-ctrl`);
    sup.setLiveBitrate(700);
    await until(() => sup.health().liveBitrateError === undefined, 'the error cleared by a success');
    t.equal(setCalls().at(-1)?.[4], '700000');
  });

  await t.test('a restarted worker starts its live encoder at the last bitrate set', async (t) => {
    const pid = sup.health().pid!;
    process.kill(pid, 'SIGKILL');
    await until(() => sup.health().restarts === 1 && sup.health().status === 'running', 'the restarted worker running');
    const reopened = calls().filter((c) => c[0] === 'open' && c[1] === 'liveenc');
    t.equal(reopened.at(-1)?.[4], '700000', 'extra-controls video_bitrate=700000 at open');
  });
});
