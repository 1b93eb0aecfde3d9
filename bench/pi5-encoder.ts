// What the `rpi5` preset's software encoders cost (the Pi 5 has no hardware H.264 encoder): the
// recording encoder (2000 kbit/s) and the live view's own encoder (1000 kbit/s) together at 720p30,
// as while someone watches, measured here (x86) with the same GStreamer elements and settings, for
// the candidates the preset chose between and the `test` preset's encoders as the baseline.
// Each configuration encodes --frames (300: 10 s of 720p30) frames from a non-live videotestsrc in its
// own gst-launch-1.0, and its CPU time (user + system, from bash's `times`) is what it cost: CPU time,
// unlike a live pipeline's load over a wall-clock window, is little moved by other work on the
// machine, and every frame is encoded by both encoders (no leaky queue can hide a slow one). The
// source alone is measured the same way and subtracted (on the Pi, libcamerasrc hands over frames the
// ISP made). --rounds (3) rounds, the configurations alternating within each round.
// Writes bench/results/pi5-encoder.json and pi5-encoder.md.
//
// Usage: node bench/pi5-encoder.ts [--frames 300] [--rounds 3]
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { pi5X264 } from '../src/capture/presets.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, resultsDir, round, trackChild, writeResult } from './lib/common.ts';

const width = 1280;
const height = 720;
const fps = 30;
const recordingKbps = 2000;
const liveKbps = 1000;
const keyInt = 30;

// How much slower one Cortex-A76 core (2.4 GHz, NEON) does this work than one core here (AVX2):
// an assumption, not a measurement (see the note written with the results).
const a76Factor = { low: 2, mid: 2.5, high: 3 };

interface Candidate {
  name: string;
  /** Raw format the encoder takes (libcamerasrc gives NV12 or I420 alike). */
  format: 'NV12' | 'I420';
  /** The encoder element for `kbps`. */
  encoder: (kbps: number) => string;
}

const candidates: Candidate[] = [
  {
    name: 'baseline: the test preset\'s x264enc (ultrafast, threads auto)',
    format: 'NV12',
    encoder: (kbps) => `x264enc tune=zerolatency speed-preset=ultrafast key-int-max=${keyInt} bitrate=${kbps}`,
  },
  {
    name: 'x264enc ultrafast, 2 threads',
    format: 'NV12',
    encoder: (kbps) => `x264enc tune=zerolatency speed-preset=ultrafast threads=2 key-int-max=${keyInt} bitrate=${kbps}`,
  },
  {
    name: 'x264enc superfast, 2 threads',
    format: 'NV12',
    encoder: (kbps) => `x264enc tune=zerolatency speed-preset=superfast threads=2 key-int-max=${keyInt} bitrate=${kbps}`,
  },
  {
    name: 'openh264enc (complexity low, camera, 2 threads)',
    format: 'I420',
    encoder: (kbps) => `openh264enc complexity=low usage-type=camera rate-control=bitrate multi-thread=2 gop-size=${keyInt} bitrate=${kbps * 1000}`,
  },
];

function source(pattern: string, format: string, frames: number): string {
  return `videotestsrc num-buffers=${frames} pattern=${pattern} ! video/x-raw,format=${format},width=${width},height=${height},framerate=${fps}/1`;
}

/** Two encoders off one tee, as the rpi5 pipeline has them while a view runs. */
function description(c: Candidate | undefined, pattern: string, frames: number): string {
  if (!c) return `${source(pattern, 'NV12', frames)} ! fakesink sync=false`;
  const branch = (kbps: number) => `queue max-size-buffers=4 max-size-bytes=0 max-size-time=0 ! ${c.encoder(kbps)} ! video/x-h264,profile=constrained-baseline ! h264parse ! fakesink sync=false`;
  return [`${source(pattern, c.format, frames)} ! tee name=vt`, `vt. ! ${branch(recordingKbps)}`, `vt. ! ${branch(liveKbps)}`].join('  ');
}

/** CPU ms (user + system) gst-launch-1.0 took to run `desc` to its end. */
function measure(desc: string): Promise<number> {
  // bash's `times` prints the children's user and system time on its second line.
  const script = `gst-launch-1.0 -q ${desc} >/dev/null || exit 3; times`;
  return new Promise((resolve, reject) => {
    const child = trackChild(spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('exit', (code) => {
      const children = out.trim().split('\n')[1];
      const m = children && /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(children.trim());
      if (code !== 0 || !m) return reject(new Error(`gst-launch-1.0 failed (${code}): ${err.trim() || out.trim()}\n${desc}`));
      resolve(round((Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000, 0));
    });
  });
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : round((s[mid - 1]! + s[mid]!) / 2);
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const frames = intFlag(flags, 'frames', 300);
  const rounds = intFlag(flags, 'rounds', 3);
  const patterns = ['ball', 'snow'];
  const names = ['source alone', ...candidates.map((c) => c.name)];
  const samples = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const pattern of patterns) {
      for (const [i, name] of names.entries()) {
        // CPU ms for `frames` frames -> % of one core at fps frames a second.
        const pct = round((await measure(description(i === 0 ? undefined : candidates[i - 1], pattern, frames))) / ((frames / fps) * 1000) * 100);
        const key = `${pattern}\t${name}`;
        samples.set(key, [...(samples.get(key) ?? []), pct]);
        process.stderr.write(`pi5-encoder: round ${r + 1} ${pattern} ${name}: ${pct} %\n`);
      }
    }
  }
  const rows: { pattern: string; config: string; runsPct: number[]; medianPct: number; minPct: number; maxPct: number; encodersPct: number; a76CoresPct: { low: number; mid: number; high: number } }[] = [];
  for (const pattern of patterns) {
    const src = median(samples.get(`${pattern}\tsource alone`)!);
    for (const name of names) {
      const runs = samples.get(`${pattern}\t${name}`)!;
      const med = median(runs);
      const enc = name === 'source alone' ? med : round(Math.max(0, med - src));
      rows.push({
        pattern,
        config: name,
        runsPct: runs,
        medianPct: med,
        minPct: Math.min(...runs),
        maxPct: Math.max(...runs),
        encodersPct: enc,
        a76CoresPct: { low: round(enc * a76Factor.low), mid: round(enc * a76Factor.mid), high: round(enc * a76Factor.high) },
      });
    }
  }
  const machine = machineFacts((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v);
  const chosen = `x264enc ${pi5X264.speedPreset}, ${pi5X264.threads} threads`;
  const md = [
    `### The rpi5 preset's encoders: recording ${recordingKbps} kbit/s + live ${liveKbps} kbit/s at ${width}x${height}@${fps}, measured here (${rounds} alternating rounds of ${frames} frames each)`,
    '',
    markdownTable(
      ['picture', 'encoders', 'CPU at 30 fps, % of one core here: median (min–max)', 'the two encoders (source subtracted)', 'expected on the Pi 5: % of one A76 core (×2–3), of its 4 cores'],
      rows.map((r) => [
        r.pattern,
        r.config === chosen ? `**${r.config}** (rpi5)` : r.config,
        `${r.medianPct} (${r.minPct}–${r.maxPct})`,
        r.config === 'source alone' ? '—' : r.encodersPct,
        r.config === 'source alone' ? '—' : `${r.a76CoresPct.low}–${r.a76CoresPct.high} % (${round(r.a76CoresPct.low / 4)}–${round(r.a76CoresPct.high / 4)} % of the board)`,
      ]),
    ),
    '',
    `Scaling to the Pi 5 is an assumption, not a measurement: one Cortex-A76 core at 2.4 GHz is taken to do x264's (and openh264's) work at a third to a half of the speed of one core here (×2–3 the CPU time; x264's x86 kernels use AVX2, its arm64 ones NEON at a lower clock). The field test measures it on the board (docs/field-test-raspberry-pi.md). "ball" is a calm picture, "snow" noise no encoder can compress (a busy scene's upper bound). Without a viewer the live encoder idles behind its valve and only the recording's encoder runs (about half the figure). CPU time is less moved by other load than wall-clock figures, but the machine was shared with other work (caches, frequency): expect some spread between runs. Machine: ${machineLine(machine)}.`,
  ].join('\n');
  writeResult('pi5-encoder', { machine, frames, rounds, recordingKbps, liveKbps, a76Factor, chosen, samples: Object.fromEntries(samples), rows, markdown: md });
  writeFileSync(path.join(resultsDir, 'pi5-encoder.md'), `${md}\n`);
  process.stdout.write(`${md}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`pi5-encoder bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
