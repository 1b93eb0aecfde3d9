// CPU cost of encrypting evidence at rest (age, src/recording/encryption.ts) on the capture path,
// beside recording alone, in the same run. The real capture worker (preset test, 1280x720@30,
// 2000 kbit/s, 2 s segments, the embedded defaults; the "snow" picture, so the encoder writes its
// whole bitrate as a busy street would: "ball" gives ~0.3 Mbit/s) feeds a real Recorder (SQLite index, device
// key, hashing, a running recording) in alternating windows of --window-s (default 20) seconds:
//   plain      the worker writes segments into the buffer folder; the recorder moves, hashes and indexes them
//   encrypted  the worker writes into a tmpfs folder; the recorder first encrypts each segment
//              (streamed) into the buffer folder and unlinks the plaintext, then the same
// --rounds (default 3) rounds of both, in alternating order. For each window: the agent side's CPU
// (this process: recorder and its libuv pool threads) and the worker's, both in % of one core, and the
// video bitrate actually written (Mbit/s); the cost of encryption is the agent-side difference per
// Mbit/s of video. Also the event loop's delay (p99, max) in each window: encryption must not stall it.
// Writes bench/results/encryption.json and prints a markdown table.
import { mkdtemp } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { captureConfigSchema } from '../src/capture/config.ts';
import { CaptureSupervisor } from '../src/capture/supervisor.ts';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { evidenceDirOf, plaintextSegmentsDirOf } from '../src/recording/layout.ts';
import { Recorder } from '../src/recording/recorder.ts';
import { openDatabase } from '../src/store/database.ts';
import { installCleanup, intFlag, markdownTable, parseFlags, removeDir, round, sleep, summarise, trackDir, writeResult } from './lib/common.ts';
import { cpuMs } from './lib/proc.ts';

installCleanup();
const flags = parseFlags(process.argv.slice(2));
const windowS = intFlag(flags, 'window-s', 20);
const rounds = intFlag(flags, 'rounds', 3);
const recipient = await identityToRecipient(await generateX25519Identity());
const logger = pino({ level: 'warn' });
const settings = captureConfigSchema.parse({ preset: 'test', testPattern: 'snow', width: 1280, height: 720, framerate: 30, bitrateKbps: 2000 });

interface Window {
  mode: 'plain' | 'encrypted';
  agentCpuPct: number;
  workerCpuPct: number;
  videoMbps: number;
  segments: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

async function measure(mode: Window['mode']): Promise<Window> {
  const stateDir = trackDir(await mkdtemp(path.join(os.tmpdir(), 'bwc-enc-bench-')));
  const ram = trackDir(await mkdtemp('/dev/shm/bwc-enc-bench-'));
  const db = openDatabase({ stateDir });
  const deviceKey = await loadOrCreateDeviceKey(stateDir);
  const encryption = mode === 'encrypted' ? { recipients: [recipient], plaintextDir: ram } : undefined;
  const evidenceDir = evidenceDirOf(stateDir);
  const sup = new CaptureSupervisor({
    settings,
    segmentDir: encryption ? plaintextSegmentsDirOf(ram) : path.join(evidenceDir, 'buffer'),
    logger,
    keyframeMinIntervalMs: 250,
  });
  const recorder = new Recorder({
    db,
    evidenceDir,
    deviceId: 'bench-cam',
    deviceKey,
    source: sup,
    audit: { append: () => undefined },
    link: { send: () => undefined },
    ...(encryption ? { encryption } : {}),
    logger,
  });
  sup.on('state', (h) => recorder.captureRunning(h.status === 'running'));
  await sup.start();
  while (sup.health().status !== 'running') await sleep(50);
  recorder.start({ kind: 'ctl' });
  await sleep(4000); // past the first segments and the worker's start-up
  await recorder.flush();
  const before = (db.prepare('SELECT coalesce(sum(bytes), 0) AS b, count(*) AS n FROM evidence_segment').get() as { b: number; n: number });
  const pid = sup.health().pid!;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  const w0 = cpuMs(pid)!;
  const a0 = process.cpuUsage();
  const t0 = performance.now();
  loop.enable();
  await sleep(windowS * 1000);
  loop.disable();
  const elapsedMs = performance.now() - t0;
  const workerCpuPct = ((cpuMs(pid)! - w0) / elapsedMs) * 100;
  const a = process.cpuUsage(a0);
  const agentCpuPct = ((a.user + a.system) / 1000 / elapsedMs) * 100;
  await recorder.flush();
  const after = (db.prepare('SELECT coalesce(sum(bytes), 0) AS b, count(*) AS n FROM evidence_segment').get() as { b: number; n: number });
  const bytes = after.b - before.b;
  const segments = after.n - before.n;
  recorder.stop({ kind: 'ctl' });
  await sup.stop();
  await recorder.close();
  db.close();
  removeDir(stateDir);
  removeDir(ram);
  return {
    mode,
    agentCpuPct: round(agentCpuPct, 2),
    workerCpuPct: round(workerCpuPct, 1),
    // Bytes of the segments indexed during the window (ciphertext adds 16 B per 64 KiB: negligible).
    videoMbps: round((bytes * 8) / (elapsedMs / 1000) / 1e6, 2),
    segments,
    loopDelayP99Ms: round(loop.percentile(99) / 1e6, 1),
    loopDelayMaxMs: round(loop.max / 1e6, 1),
  };
}

const windows: Window[] = [];
for (let r = 0; r < rounds; r += 1) {
  const order: Window['mode'][] = r % 2 === 0 ? ['plain', 'encrypted'] : ['encrypted', 'plain'];
  for (const mode of order) {
    const w = await measure(mode);
    windows.push(w);
    process.stderr.write(`encryption bench: round ${r + 1} ${mode}: agent ${w.agentCpuPct} %, worker ${w.workerCpuPct} %, ${w.videoMbps} Mbit/s, loop p99 ${w.loopDelayP99Ms} ms\n`);
  }
}

const plain = windows.filter((w) => w.mode === 'plain');
const enc = windows.filter((w) => w.mode === 'encrypted');
// Per round: the encrypted window's agent CPU minus the plain window's, per Mbit/s of video.
const perRound = plain.map((p, i) => {
  const e = enc[i]!;
  const mbps = (p.videoMbps + e.videoMbps) / 2;
  return { extraPct: round(e.agentCpuPct - p.agentCpuPct, 2), perMbpsPct: round((e.agentCpuPct - p.agentCpuPct) / mbps, 2) };
});
const s = (xs: number[]) => {
  const k = summarise(xs);
  return { min: round(k.min, 2), p50: round(k.p50, 2), max: round(k.max, 2) };
};
const result = {
  capture: 'test 1280x720@30 2000 kbit/s (x264enc ultrafast zerolatency, videotestsrc snow), 2 s segments, recording',
  windowS,
  rounds,
  windows,
  plainAgentCpuPct: s(plain.map((w) => w.agentCpuPct)),
  encryptedAgentCpuPct: s(enc.map((w) => w.agentCpuPct)),
  extraAgentCpuPct: s(perRound.map((r) => r.extraPct)),
  extraCpuPctPerMbps: s(perRound.map((r) => r.perMbpsPct)),
  workerCpuPct: s(windows.map((w) => w.workerCpuPct)),
  videoMbps: s(windows.map((w) => w.videoMbps)),
  loopDelayP99Ms: { plain: s(plain.map((w) => w.loopDelayP99Ms)), encrypted: s(enc.map((w) => w.loopDelayP99Ms)) },
  loopDelayMaxMs: { plain: s(plain.map((w) => w.loopDelayMaxMs)), encrypted: s(enc.map((w) => w.loopDelayMaxMs)) },
  cores: os.cpus().length,
  cpu: os.cpus()[0]?.model,
};
const range = (x: { min: number; p50: number; max: number }) => `${x.p50} (${x.min}–${x.max})`;
const markdown = [
  `### Encryption at rest: ${result.capture}; ${rounds} rounds of ${windowS} s windows, alternating; median (min–max) over rounds`,
  '',
  markdownTable(
    ['what', 'value'],
    [
      ['video written, Mbit/s', range(result.videoMbps)],
      ['agent side CPU %, recording alone (move, hash, index)', range(result.plainAgentCpuPct)],
      ['agent side CPU %, recording + age encryption', range(result.encryptedAgentCpuPct)],
      ['**encryption, % of one core**', range(result.extraAgentCpuPct)],
      ['**encryption, % of one core per Mbit/s of video**', range(result.extraCpuPctPerMbps)],
      ['capture worker CPU % (encoder; the same either way)', range(result.workerCpuPct)],
      ['event loop delay p99 ms, plain / encrypted', `${range(result.loopDelayP99Ms.plain)} / ${range(result.loopDelayP99Ms.encrypted)}`],
      ['event loop delay max ms, plain / encrypted (a shared machine: other work shows here)', `${range(result.loopDelayMaxMs.plain)} / ${range(result.loopDelayMaxMs.encrypted)}`],
    ],
  ),
].join('\n');
writeResult('encryption', { ...result, markdown });
console.log(markdown);
