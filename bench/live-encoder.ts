// What the live view's own encoder costs (capture.liveEncoder): the capture worker at 720p30
// (`test` preset, x264enc ultrafast, 2000 kbit/s recording), --window-s (10) seconds each, in one
// run, for a calm ("ball") and a busy ("snow") picture: the valve closed (nobody watching), then open with a separate live encoder at 1000 kbit/s,
// then open with the recording's stream shared (the baseline: no second encode). CPU is % of one
// core from /proc; the live RTP is received and counted as the agent would.
// Writes bench/results/live-encoder.json and a markdown table.
//
// Usage: node bench/live-encoder.ts [--window-s 10]
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { captureConfigSchema } from '../src/capture/config.ts';
import { CaptureSupervisor } from '../src/capture/supervisor.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, removeDir, round, sleep, trackDir, writeResult } from './lib/common.ts';
import { cpuMs } from './lib/proc.ts';

async function measure(liveEncoder: 'separate' | 'shared', windowMs: number, testPattern: 'ball' | 'snow') {
  const dir = trackDir(await mkdtemp(path.join(os.tmpdir(), 'bwc-bench-live-')));
  let bytes = 0;
  const sup = new CaptureSupervisor({
    settings: captureConfigSchema.parse({ width: 1280, height: 720, framerate: 30, bitrateKbps: 2000, liveEncoder, testPattern }),
    segmentDir: dir,
    logger: pino({ level: 'warn' }),
    liveBitrateKbps: 1000,
    onRtp: (p) => (bytes += p.length),
  });
  await sup.start();
  while (sup.health().status !== 'running') await sleep(50);
  await sleep(2000);
  const window = async () => {
    const pid = sup.health().pid!;
    const c0 = cpuMs(pid)!;
    const b0 = bytes;
    await sleep(windowMs);
    return { workerPct: round(((cpuMs(pid)! - c0) / windowMs) * 100), liveKbps: Math.round(((bytes - b0) * 8) / windowMs) };
  };
  const closed = await window();
  sup.setLive(true);
  await sleep(1000);
  const open = await window();
  await sup.stop();
  removeDir(dir);
  return { liveEncoder, testPattern, closed, open };
}

async function main(): Promise<void> {
  installCleanup();
  const windowMs = intFlag(parseFlags(process.argv.slice(2)), 'window-s', 10) * 1000;
  const runs = [];
  for (const pattern of ['ball', 'snow'] as const) {
    runs.push(await measure('separate', windowMs, pattern), await measure('shared', windowMs, pattern));
  }
  const machine = machineFacts((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v);
  const md = [
    `### The live view's own encoder: capture worker CPU, 720p30, recording at 2000 kbit/s, ${windowMs / 1000} s windows`,
    '',
    markdownTable(
      ['picture', 'capture.liveEncoder', 'nobody watching %', 'live view open %', 'added by the live view %', 'live RTP kbit/s'],
      runs.map((m) => [m.testPattern, m.liveEncoder, m.closed.workerPct, m.open.workerPct, round(m.open.workerPct - m.closed.workerPct), m.open.liveKbps]),
    ),
    '',
    `"ball" is cheap to encode, "snow" is noise no encoder can compress (a busy scene's upper bound). "separate": a second x264enc at 1000 kbit/s, only while the valve is open; "shared": the recording's stream sent as it is (no second encode, no adaptation). Machine: ${machineLine(machine)}.`,
  ].join('\n');
  writeResult('live-encoder', { machine, windowS: windowMs / 1000, runs, markdown: md });
  process.stdout.write(`${md}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`live-encoder bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
