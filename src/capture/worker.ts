// The capture worker: a child process that owns ONE GStreamer pipeline for its whole life.
// gstreamer-superficial never frees a pipeline, parks a libuv pool thread per pollBus/pull, and a
// GStreamer crash cannot be caught; isolating the pipeline here turns each of those into a restart.
// The supervisor (supervisor.ts) starts it with an IPC channel and drives it with protocol.ts messages.
import { statSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { buildPipeline, clockMark, liveBitrateChange, type CaptureSettings, type PipelineElements } from './presets.ts';
import { isParentMessage, type ParentMessage, type WorkerMessage } from './protocol.ts';
import { V4L2_CID_MPEG_VIDEO_BITRATE, V4l2Control } from './v4l2-control.ts';
import { errorMessage } from '../errors.ts';

interface GstElement {
  [property: string]: unknown;
}

interface BusMessage {
  type: string;
  name?: string;
  message?: string;
  _src_element_name?: string;
  location?: string;
  'running-time'?: string;
  'new-state'?: string;
  [field: string]: unknown;
}

interface GstPipeline {
  play(): void;
  stop(): void;
  sendEOS(): void;
  forceKeyUnit(element: string, count: number): boolean;
  findChild(name: string): GstElement | undefined;
  pollBus(cb: (msg: BusMessage) => void): void;
}

interface GstModule {
  Pipeline: new (description: string) => GstPipeline;
}

// Time the pipeline gets to push EOS through and finalise the open segment before we give up on it.
const eosTimeoutMs = 5000;

let pipeline: GstPipeline | undefined;
let names: PipelineElements | undefined;
let liveValve: GstElement | undefined;
let liveAudioValve: GstElement | undefined;
let liveEncoder: GstElement | undefined;
let settings: CaptureSettings | undefined;
let meter: GstElement | undefined;
let statsTimer: NodeJS.Timeout | undefined;
let shuttingDown = false;
let playing = false;
let eosSeen: (() => void) | undefined;
const openSegments = new Map<string, { startedAtMs: number; runningTimeNs: bigint }>();

// The Pi encoder's bitrate goes through VIDIOC_S_CTRL (v4l2-control.ts). Each change reconfigures the
// VideoCore encoder, so changes come at most once per this gap, the latest bitrate winning (the
// bitrate loop already decides once a second; this bounds whatever else sends them).
const v4l2BitrateMinGapMs = 1000;
let v4l2Control: V4l2Control | undefined;
let v4l2LastSetAt = -Infinity;
let v4l2PendingKbps: number | undefined;
let v4l2Timer: NodeJS.Timeout | undefined;

function send(message: WorkerMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.connected || !process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/**
 * On EOS splitmuxsink may open one more fragment and close it with nothing in it; an empty file is
 * not evidence of anything and would only confuse the index, so it is neither reported nor kept.
 */
function isEmpty(file: string): boolean {
  try {
    if (statSync(file).size > 0) return false;
    unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}

function runningTime(msg: BusMessage): bigint {
  try {
    return BigInt(String(msg['running-time'] ?? '0'));
  } catch {
    return 0n;
  }
}

function onBus(msg: BusMessage): void {
  switch (msg.type) {
    case 'element':
      if (msg._src_element_name !== names?.segments || typeof msg.location !== 'string') return;
      if (msg.name === 'splitmuxsink-fragment-opened') {
        const startedAtMs = Date.now();
        openSegments.set(msg.location, { startedAtMs, runningTimeNs: runningTime(msg) });
        void send({ type: 'segment-opened', file: msg.location, startedAt: new Date(startedAtMs).toISOString() });
      } else if (msg.name === 'splitmuxsink-fragment-closed') {
        const opened = openSegments.get(msg.location);
        openSegments.delete(msg.location);
        if (isEmpty(msg.location)) return;
        const startedAtMs = opened?.startedAtMs ?? Date.now();
        const durationNs = opened ? runningTime(msg) - opened.runningTimeNs : 0n;
        const durationS = Number(durationNs) / 1e9;
        void send({
          type: 'segment-closed',
          file: msg.location,
          startedAt: new Date(startedAtMs).toISOString(),
          endedAt: new Date(startedAtMs + Math.round(durationS * 1000)).toISOString(),
          durationS,
        });
      }
      return;
    case 'state-changed':
      // Only the top-level bin's transition means the whole pipeline runs.
      if (/^pipeline\d*$/.test(msg._src_element_name ?? '') && msg['new-state'] === 'GST_STATE_PLAYING') {
        playing = true;
        void send({ type: 'ready', pid: process.pid });
      }
      return;
    case 'error':
      void fail(msg.message ?? 'pipeline error', msg.name ?? msg._src_element_name);
      return;
    case 'warning':
      process.stderr.write(`capture worker: GStreamer warning from ${msg._src_element_name ?? '?'}\n`);
      return;
    case 'eos':
      if (eosSeen) eosSeen();
      else if (!shuttingDown) void fail('unexpected end of stream from the camera pipeline');
      return;
    default:
      return;
  }
}

/** Encoded frames so far: the meter's count (see presets.ts for why not an appsink). */
function framesSoFar(): number {
  const count = meter?.['frames-rendered'];
  return typeof count === 'number' ? count : 0;
}

// PR_SET_THP_DISABLE from <linux/prctl.h>.
const prSetThpDisable = 41;

/**
 * Turns transparent huge pages off for this process (issue 18). x264 madvises its frame buffers
 * MADV_HUGEPAGE, so where THP is "madvise" or "always" each is rounded up to 2 MiB pages, all
 * resident: 24 MiB of the worker's RSS at 720p with two encoders, 9-14 MiB more than without
 * (bench/shift-memory.ts). Node has no prctl, hence koffi (already the agent's way to adjtimex).
 * Unless BWC_MEMORY_FLAGS=off (the old behaviour, the benchmark's baseline). A failure (an old
 * kernel, qemu-user) costs only the memory, so it is reported on stdout (the agent's debug log).
 */
function disableTransparentHugePages(): void {
  if (process.env.BWC_MEMORY_FLAGS === 'off' || process.platform !== 'linux') return;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const prctl = koffi.load('libc.so.6').func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)') as (...a: number[]) => number;
    if (prctl(prSetThpDisable, 1, 0, 0, 0) !== 0) process.stdout.write('capture worker: prctl(PR_SET_THP_DISABLE) refused; huge pages stay on\n');
  } catch (err) {
    process.stdout.write(`capture worker: cannot turn transparent huge pages off: ${errorMessage(err)}\n`);
  }
}

function start(message: Extract<ParentMessage, { type: 'start' }>): void {
  if (pipeline) return;
  disableTransparentHugePages();
  const built = buildPipeline(message.settings);
  names = built.elements;
  settings = message.settings;
  const gst = createRequire(import.meta.url)('gstreamer-superficial') as GstModule;
  try {
    pipeline = new gst.Pipeline(built.description);
  } catch (err) {
    void send({ type: 'error', message: `pipeline does not parse: ${errorMessage(err)}`, debug: built.description }).then(() =>
      process.exit(1),
    );
    return;
  }
  liveValve = pipeline.findChild(names.live);
  liveAudioValve = pipeline.findChild(names.liveAudio);
  liveEncoder = pipeline.findChild(names.liveEncoder);
  if (liveValve) liveValve.drop = !message.live;
  if (liveAudioValve) liveAudioValve.drop = !message.live;
  pipeline.pollBus(onBus);
  // The glass-to-glass mark (presets.ts clockMark): the time now, kept to within a few ms.
  const mark = pipeline.findChild(clockMark.element);
  if (mark) setInterval(() => (mark['pattern-data'] = Date.now() % 2 ** clockMark.bits), 2).unref();
  pipeline.play();
  meter = pipeline.findChild(names.meter);
  setTimeout(() => notStarted(message.startTimeoutMs), message.startTimeoutMs).unref();
  statsTimer = setInterval(() => void send({ type: 'stats', frames: framesSoFar() }), message.statsIntervalMs);
}

/**
 * The binding stops polling the bus once the pipeline is back in NULL, which is exactly where a
 * failed start (missing device, refused caps) leaves it: the error stays queued on the bus. So a
 * pipeline that has not reached PLAYING in time is treated as failed, and the bus is read a few
 * more times to name the cause.
 */
function notStarted(timeoutMs: number): void {
  if (playing || shuttingDown || !pipeline) return;
  const p = pipeline;
  let reason = `pipeline did not reach PLAYING within ${timeoutMs} ms`;
  let debug: string | undefined;
  let left = 32;
  // An empty bus blocks the read for good: give up on naming the cause once the bus has been quiet
  // for a moment. Quiet, not a fixed 500 ms from here: each message is its own pool round trip, ~20
  // state changes come before v4l2src's error, and on a loaded machine a fixed window ran out first
  // and the fault said "did not reach PLAYING" instead of naming the missing device.
  const quiet = setTimeout(() => void fail(reason, debug), 500).unref();
  const drain = (msg: BusMessage): void => {
    quiet.refresh();
    if (msg.type === 'error' && debug === undefined) {
      reason = msg.message ?? reason;
      debug = msg.name ?? msg._src_element_name;
      void fail(reason, debug);
    } else if (msg.type === 'state-changed' && msg['new-state'] === 'GST_STATE_PLAYING' && /^pipeline\d*$/.test(msg._src_element_name ?? '')) {
      onBus(msg); // slow, not broken
    } else if (--left > 0 && !shuttingDown) {
      p.pollBus(drain);
    }
  };
  p.pollBus(drain);
}

function queueV4l2Bitrate(kbps: number): void {
  v4l2PendingKbps = kbps;
  if (v4l2Timer) return;
  const wait = v4l2LastSetAt + v4l2BitrateMinGapMs - Date.now();
  if (wait <= 0) return applyV4l2Bitrate();
  v4l2Timer = setTimeout(() => {
    v4l2Timer = undefined;
    applyV4l2Bitrate();
  }, wait);
}

/** VIDIOC_S_CTRL video_bitrate on the live encoder's own descriptor, read back; never fatal. */
function applyV4l2Bitrate(): void {
  const kbps = v4l2PendingKbps;
  v4l2PendingKbps = undefined;
  if (kbps === undefined || !liveEncoder || shuttingDown) return;
  v4l2LastSetAt = Date.now();
  // v4l2h264enc's device-fd is -1 until it opens the device (READY); the device path names it in errors.
  const fd = Number(liveEncoder['device-fd']);
  const device = typeof liveEncoder.device === 'string' ? liveEncoder.device : 'the live encoder';
  try {
    if (!Number.isInteger(fd) || fd < 0) throw new Error(`the live encoder (${names?.liveEncoder}) has no open V4L2 device (device-fd ${String(liveEncoder['device-fd'])})`);
    v4l2Control ??= new V4l2Control();
    v4l2Control.set(fd, device, V4L2_CID_MPEG_VIDEO_BITRATE, kbps * 1000);
    const appliedBps = v4l2Control.get(fd, device, V4L2_CID_MPEG_VIDEO_BITRATE);
    void send({ type: 'live-bitrate-set', kbps, device, appliedBps });
  } catch (err) {
    void send({ type: 'live-bitrate-failed', kbps, message: errorMessage(err) });
  }
}

async function fail(message: string, debug?: string): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  await send(debug === undefined ? { type: 'error', message } : { type: 'error', message, debug });
  finish(1);
}

function finish(code: number): never {
  if (statsTimer) clearInterval(statsTimer);
  if (v4l2Timer) clearTimeout(v4l2Timer);
  // process.exit waits on the pool threads the binding parks in the bus; NULL state releases them.
  pipeline?.stop();
  process.exit(code);
}

/** EOS first so splitmuxsink closes the open segment cleanly, then tear down. */
async function shutdown(): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  if (pipeline) {
    const p = pipeline;
    const gotEos = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), eosTimeoutMs);
      eosSeen = () => {
        clearTimeout(timer);
        resolve(true);
      };
      p.sendEOS();
    });
    if (!gotEos) process.stderr.write('capture worker: no EOS in time, stopping anyway\n');
  }
  await send({ type: 'eos' });
  finish(0);
}

function onParentMessage(raw: unknown): void {
  if (!isParentMessage(raw)) return;
  switch (raw.type) {
    case 'start':
      start(raw);
      return;
    case 'keyframe':
      if (pipeline && names && !shuttingDown) pipeline.forceKeyUnit(names.liveKeyframe, 1);
      return;
    case 'live-bitrate': {
      const change = settings && liveBitrateChange(settings, raw.kbps);
      if (!change || !liveEncoder || shuttingDown) return;
      if (change.kind === 'property') liveEncoder[change.property] = change.value;
      else queueV4l2Bitrate(raw.kbps);
      return;
    }
    case 'live':
      if (liveValve) liveValve.drop = !raw.open;
      if (liveAudioValve) liveAudioValve.drop = !raw.open;
      return;
    case 'stop':
      void shutdown();
      return;
  }
}

if (!process.send) {
  process.stderr.write('capture worker: must be started by the capture supervisor (needs an IPC channel)\n');
  process.exit(2);
}
process.on('message', onParentMessage);
// The parent died or dropped us: finalise the open segment rather than leave an orphan pipeline.
process.on('disconnect', () => void shutdown());
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
