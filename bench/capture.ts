// Capture cost and keyframe latency: a preset (--preset, default test; rpi on a Pi measures
// libcamerasrc and the hardware encoder v4l2h264enc) at 1280x720@30, 2000 kbit/s under the
// CaptureSupervisor: the time from start() to the first encoded data in a segment (the first
// `segment-opened`); for --seconds (default 20), CPU% and RSS of the worker and of this
// (supervising) process; then, live open, the time from requestKeyframe() to the first RTP packet
// of the IDR, over --requests (default 30). Writes bench/results/capture.json and prints a markdown table.
import { mkdtemp } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { capturePresets, captureConfigSchema } from '../src/capture/config.ts';
import { CaptureSupervisor } from '../src/capture/supervisor.ts';
import { installCleanup, intFlag, markdownTable, parseFlags, removeDir, round, sleep, summarise, trackDir, writeResult } from './lib/common.ts';
import { cpuMs } from './lib/proc.ts';

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? round(Number(m[1]) / 1024) : NaN;
}

function isIdrStart(p: Buffer): boolean {
  const nal = p[12]! & 0x1f;
  if (nal === 5 || nal === 7) return true;
  if (nal === 24) return [5, 7].includes(p[15]! & 0x1f);
  if (nal === 28) return (p[13]! & 0x80) !== 0 && (p[13]! & 0x1f) === 5;
  return false;
}

installCleanup();
const flags = parseFlags(process.argv.slice(2));
const seconds = intFlag(flags, 'seconds', 20);
const requests = intFlag(flags, 'requests', 30);
const preset = capturePresets.find((p) => p === (flags.get('preset') ?? 'test'));
if (!preset) throw new Error(`--preset: expected one of ${capturePresets.join(', ')}, got ${flags.get('preset')}`);
const dir = trackDir(await mkdtemp(path.join(os.tmpdir(), 'bwc-capture-bench-')));

let waitingSince: number | undefined;
let resolveIdr: ((ms: number) => void) | undefined;
const sup = new CaptureSupervisor({
  // keyframeIntervalS = segmentSeconds = 10 so that the periodic keyframes rarely land inside a measurement.
  settings: captureConfigSchema.parse({ preset, width: 1280, height: 720, framerate: 30, bitrateKbps: 2000, keyframeIntervalS: 10, segmentSeconds: 10 }),
  segmentDir: dir,
  logger: pino({ level: 'warn' }),
  keyframeMinIntervalMs: 1,
  onRtp: (p) => {
    if (waitingSince !== undefined && isIdrStart(p)) {
      const ms = performance.now() - waitingSince;
      waitingSince = undefined;
      resolveIdr?.(ms);
    }
  },
});
const startedAt = performance.now();
const firstData = new Promise<number>((resolve) => sup.once('segment-opened', () => resolve(performance.now() - startedAt)));
await sup.start();
const firstDataMs = await firstData;
while (sup.health().status !== 'running') await sleep(50);
await sleep(2000);
const pid = sup.health().pid!;
const w0 = cpuMs(pid)!;
const m0 = process.cpuUsage();
await sleep(seconds * 1000);
const workerCpu = ((cpuMs(pid)! - w0) / (seconds * 1000)) * 100;
const mu = process.cpuUsage(m0);
const mainCpu = ((mu.user + mu.system) / 1000 / (seconds * 1000)) * 100;
const workerRss = rssMiB(pid);
const mainRss = rssMiB(process.pid);

sup.setLive(true);
await sleep(1500);
const latencies: number[] = [];
for (let i = 0; i < requests; i++) {
  const got = new Promise<number>((resolve) => (resolveIdr = resolve));
  waitingSince = performance.now();
  sup.requestKeyframe();
  latencies.push(await got);
  await sleep(300 + Math.random() * 200);
}
sup.setLive(false);
await sup.stop();
removeDir(dir);

const k = summarise(latencies);
const result = {
  preset:
    preset === 'test'
      ? 'test 1280x720@30 2000 kbit/s (x264enc ultrafast zerolatency, videotestsrc ball)'
      : preset === 'rpi'
        ? 'rpi 1280x720@30 2000 kbit/s (libcamerasrc, v4l2h264enc)'
        : 'v4l2 1280x720@30 2000 kbit/s (v4l2src, x264enc)',
  firstDataMs: round(firstDataMs),
  seconds,
  workerCpuPct: round(workerCpu),
  workerRssMiB: workerRss,
  mainCpuPct: round(mainCpu),
  mainRssMiB: mainRss,
  keyframeLatencyMs: { ...k, p50: round(k.p50), p95: round(k.p95), min: round(k.min), max: round(k.max), mean: round(k.mean) },
  cores: os.cpus().length,
  cpu: os.cpus()[0]?.model,
};
const markdown = [
  `### Capture: ${result.preset}, ${seconds} s; keyframe requests with the live valve open`,
  '',
  markdownTable(
    ['what', 'value'],
    [
      ['start() -> first encoded data in a segment, ms (worker start, pipeline, first frame)', result.firstDataMs],
      ['capture worker CPU % (one core = 100)', result.workerCpuPct],
      ['capture worker RSS MiB', result.workerRssMiB],
      ['supervising process CPU % (valve closed)', result.mainCpuPct],
      ['supervising process RSS MiB (the whole Node process)', result.mainRssMiB],
      [`requestKeyframe() -> first RTP packet of the IDR, p50 / p95 ms (n=${k.n})`, `${result.keyframeLatencyMs.p50} / ${result.keyframeLatencyMs.p95}`],
    ],
  ),
].join('\n');
writeResult('capture', { ...result, markdown });
console.log(markdown);
