// The live view, measured against a real headless Chromium through a real mosquitto and the real
// agent process (test preset, 1280x720@30, 2000 kbit/s):
//  (a) time to first picture: the fleet publishes a signed stream.start -> the viewer decodes its
//      first frame, broken into its steps (bench/lib/first-frame.ts): --rounds (3) rounds, each with
//      fresh agents for stream.firstFrame "gop-cache" and the old "keyframe-on-connect" side by
//      side, views alternating: the first view after start-up (cold), --runs (20) views each on
//      loopback, then --turn-runs (10) each through TURN only (coturn on loopback).
//  (b) CPU per viewer, side by side with GStreamer's webrtcbin sending the same stream (same
//      source, encoder settings and payloader, bench/lib/webrtcbin-sender.py) to the same
//      Chromium: for 0 and --cpu-viewers (1,2,4) viewers, --window-s (15) seconds each, in
//      --cpu-rounds (3) rounds (the goal asks for stability across three runs: median and min-max). The agent's cost is its
//      JS (main) thread and its whole process (the capture worker encodes once for any number of
//      viewers); webrtcbin's is its process over its own encoding alone (--encode-only, which has
//      no payloader: webrtcbin needs one per viewer). Per viewer: (cost(N) - cost(0)) / N.
//  (c) RSS added per viewer, the same way.
// Writes bench/results/stream.json and a markdown table.
//
// Usage: node bench/stream.ts [--runs 20] [--rounds 3] [--turn-runs 10] [--window-s 15]
//        [--cpu-viewers 1,2,4] [--cpu-rounds 3] [--first-only | --cpu-only]
// (--first-only: (a) alone, writing bench/results/stream-first-frame.json; --cpu-only: (b), (c)
// alone, writing bench/results/stream-cpu.json)
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { spawnAgent, tempStateDir, type AgentProcess } from '../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../test/helpers/agent-config.ts';
import { ChromiumViewers, type Viewer } from '../test/helpers/chromium-viewer.ts';
import { makeCommand, makeIssuer, writeTrustStore, type Issuer } from '../test/helpers/command-tokens.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { FleetClient } from '../test/helpers/fleet-client.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, repoRoot, round, sleep, trackChild, writeResult } from './lib/common.ts';
import { cpuMs, threadCpuMs } from './lib/proc.ts';
import { failedViews, firstFrameMarkdown, runFirstFrame, summariseFirstFrame } from './lib/first-frame.ts';
import { startCoturn } from '../test/helpers/coturn.ts';

const width = 1280;
const height = 720;
const fps = 30;
const bitrateKbps = 2000;
const deviceId = 'bench-live';

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface Window {
  viewers: number;
  /** % of one core over the window. */
  cpu: Record<string, number>;
  /** mean RSS over the window, MiB. */
  rssMiB: Record<string, number>;
  /** frames the viewers decoded during the window, each. */
  framesDecoded: number[];
}

interface PerViewer {
  viewers: number;
  agentJsThreadPct: number;
  agentProcessPct: number;
  webrtcbinOverEncodingPct: number;
  ratioJsThread: number;
  ratioProcess: number;
  agentRssAddedMiB: number;
  webrtcbinRssAddedMiB: number;
}

interface CpuRound {
  agentWindows: Window[];
  afterWindow: Window;
  encodeWindow: Window;
  gstWindows: Window[];
  perViewer: PerViewer[];
}

const round2 = (x: number) => round(x, 2);

/** Samples CPU and RSS of the named pids (and threads) over windowMs while the viewers play. */
async function measureWindow(viewers: Viewer[], targets: Record<string, { pid: number; tid?: number; rss?: boolean }>, windowMs: number): Promise<Window> {
  const cpuNow = (t: { pid: number; tid?: number }) => (t.tid !== undefined ? threadCpuMs(t.pid, t.tid)! : cpuMs(t.pid)!);
  const start = Object.fromEntries(Object.entries(targets).map(([k, t]) => [k, cpuNow(t)]));
  const framesBefore = await Promise.all(viewers.map(async (v) => (await v.inboundVideo()).framesDecoded));
  const rss: Record<string, number[]> = {};
  const t0 = performance.now();
  while (performance.now() - t0 < windowMs) {
    for (const [k, t] of Object.entries(targets)) if (t.rss) (rss[k] ??= []).push(rssKiB(t.pid));
    await sleep(500);
  }
  const elapsed = performance.now() - t0;
  const cpu = Object.fromEntries(Object.entries(targets).map(([k, t]) => [k, round(((cpuNow(t) - start[k]!) / elapsed) * 100)]));
  const rssMiB = Object.fromEntries(Object.entries(rss).map(([k, v]) => [k, round(v.reduce((a, b) => a + b, 0) / v.length / 1024)]));
  const framesAfter = await Promise.all(viewers.map(async (v) => (await v.inboundVideo()).framesDecoded));
  return { viewers: viewers.length, cpu, rssMiB, framesDecoded: framesAfter.map((f, i) => f - framesBefore[i]!) };
}

/** The webrtcbin baseline process and its JSON-lines protocol. */
class WebrtcbinSender {
  readonly child: ChildProcess;
  readonly #waiting = new Map<string, (m: Record<string, unknown>) => void>();
  readonly ready: Promise<void>;

  constructor(encodeOnly: boolean) {
    const args = [path.join(repoRoot, 'bench/lib/webrtcbin-sender.py'), '--width', String(width), '--height', String(height), '--fps', String(fps), '--bitrate-kbps', String(bitrateKbps)];
    if (encodeOnly) args.push('--encode-only');
    // Debian's python3, which has PyGObject (a pyenv python3 first on PATH would not).
    this.child = trackChild(spawn('/usr/bin/python3', args, { stdio: ['pipe', 'pipe', 'inherit'] }));
    let markReady: () => void;
    this.ready = new Promise((r) => (markReady = r));
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const m = JSON.parse(line) as Record<string, unknown>;
      if (m.ready) markReady();
      else if (typeof m.id === 'string') this.#waiting.get(m.id)?.(m);
      else if (m.error) process.stderr.write(`webrtcbin-sender: ${String(m.error)}\n`);
    });
  }

  answer(id: string, offer: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, (m) => (typeof m.answer === 'string' ? resolve(m.answer) : reject(new Error(`webrtcbin: ${String(m.error)}`))));
      this.child.stdin!.write(`${JSON.stringify({ id, offer })}\n`);
    });
  }

  async stop(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin!.end();
    await exited;
  }
}

async function waitForState(recorderClient: mqtt.MqttClient, predicate: (s: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('state not reached')), timeoutMs);
    const on = (_t: string, payload: Buffer) => {
      const s = JSON.parse(payload.toString()) as Record<string, unknown>;
      if (predicate(s)) {
        clearTimeout(timer);
        recorderClient.off('message', on);
        resolve(s);
      }
    };
    recorderClient.on('message', on);
  });
}

/** (a): the first picture, new and old side by side, warm, cold and through TURN. */
async function measureFirstFrame(o: { broker: { url: string }; issuer: Issuer; runs: number; rounds: number; turnRuns: number }): Promise<{ firstFrame: ReturnType<typeof summariseFirstFrame>; firstFrameViews: Awaited<ReturnType<typeof runFirstFrame>> }> {
  const { broker, issuer, runs, rounds, turnRuns } = o;
  const ffViewers = await ChromiumViewers.launch();
  const ffFleet = await FleetClient.connect(broker.url);
  // coturn's own upper bound (600 s by default) is shorter than a loaded run: round 2's TURN views all failed when it expired.
  const turn = turnRuns > 0 ? await startCoturn({ listenAddress: '127.0.0.1', maxSeconds: 7200 }) : undefined;
  try {
    const firstFrameViews = await runFirstFrame({
      brokerUrl: broker.url,
      issuer,
      viewers: ffViewers,
      fleet: ffFleet,
      capture: { width, height, framerate: fps, bitrateKbps },
      rounds,
      runs,
      turnRuns,
      turn,
      log: (line) => process.stderr.write(`stream: ${line}\n`),
      onRound: (views, done) => writeResult('stream-first-frame-partial', { roundsDone: done, views, failedViews }),
    });
    return { firstFrame: summariseFirstFrame(firstFrameViews, rounds), firstFrameViews };
  } finally {
    await ffFleet.close();
    await ffViewers.close();
    await turn?.stop();
  }
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const runs = intFlag(flags, 'runs', 20);
  const rounds = intFlag(flags, 'rounds', 3);
  const turnRuns = flags.get('turn-runs') === '0' ? 0 : intFlag(flags, 'turn-runs', 10);
  const firstOnly = flags.has('first-only');
  const cpuOnly = flags.has('cpu-only');
  const windowMs = intFlag(flags, 'window-s', 15) * 1000;
  // The goal: per-viewer CPU at 1, 2 and 4 viewers, stable across three runs.
  const cpuViewers = (flags.get('cpu-viewers') ?? '1,2,4').split(',').map(Number);
  if (cpuViewers.some((n) => !Number.isInteger(n) || n < 1 || n > 8)) throw new Error(`--cpu-viewers: whole numbers 1-8, got ${flags.get('cpu-viewers')}`);
  const cpuRoundCount = intFlag(flags, 'cpu-rounds', 3);
  const issuer = await makeIssuer({ iss: 'bench-fleet' });
  const broker = await startBroker();

  // (a) first picture, new and old side by side (skipped with --cpu-only).
  let firstFrame: ReturnType<typeof summariseFirstFrame> | undefined;
  let firstFrameViews: Awaited<ReturnType<typeof runFirstFrame>> = [];
  if (!cpuOnly) ({ firstFrame, firstFrameViews } = await measureFirstFrame({ broker, issuer, runs, rounds, turnRuns }));
  const sqliteVersion = (new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v;
  if (firstOnly && firstFrame) {
    const firstMd = [
      `### Live view first frame: ${width}x${height}@${fps}, ${bitrateKbps} kbit/s, headless Chromium`,
      '',
      firstFrameMarkdown(firstFrame, runs, turnRuns, rounds),
      `Machine: ${machineLine(machineFacts(sqliteVersion))}. Two agents (one per mode) and Chromium share 2 cores: expect noise.`,
    ].join('\n');
    writeResult('stream-first-frame', { machine: machineFacts(sqliteVersion), width, height, fps, bitrateKbps, runs, rounds, turnRuns, firstFrame, views: firstFrameViews, failedViews, markdown: firstMd });
    process.stdout.write(`${firstMd}\n`);
    await broker.dispose();
    return;
  }

  const stateDir = await tempStateDir('bwc-bench-live-');
  const config = await writeAgentConfig(stateDir, {
    commands: { trustStore: writeTrustStore(stateDir, [issuer]), unsynchronisedClock: 'accept', maxConcurrentStreams: Math.max(...cpuViewers) },
    capture: { width, height, framerate: fps, bitrateKbps },
    stream: { ice: { interfaces: ['lo'] } },
  });
  const agent: AgentProcess = spawnAgent(['run', '--config', config], {
    BWC_DEVICE_ID: deviceId,
    BWC_MQTT_URL: broker.url,
    BWC_STATE_DIR: stateDir,
    BWC_GPSD: `127.0.0.1:${await freeLoopbackPort()}`,
    BWC_LOG_LEVEL: 'warn',
  });
  trackChild(agent.child);
  const stateClient = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  await stateClient.subscribeAsync(`bwc/v1/${deviceId}/state`, { qos: 1 });
  const viewers = await ChromiumViewers.launch();
  const fleet = await FleetClient.connect(broker.url);
  try {
    const ready = await waitForState(stateClient, (s) => s.online === true && (s.capture as { status?: string } | null)?.status === 'running', 60_000);
    const agentPid = agent.child.pid!;
    const workerPid = (ready.capture as { pid: number }).pid;
    await sleep(2000);

    const open = async (): Promise<{ viewer: Viewer; sid: string }> => {
      const viewer = await viewers.open();
      const offer = await viewer.createOffer();
      const command = makeCommand({ issuer, deviceId, action: 'stream.start', offer, overrides: { sub: 'bench', reason: 'officer-safety' } });
      const reply = await fleet.request(deviceId, command.payload);
      if (reply.ok !== true) throw new Error(`stream.start refused: ${JSON.stringify(reply)}`);
      await viewer.applyAnswer(reply.answer as string);
      await viewer.firstFrame(20_000);
      return { viewer, sid: reply.sid as string };
    };
    const close = async (v: { viewer: Viewer; sid: string }) => {
      const reply = await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.stop', overrides: { sid: v.sid, sub: 'bench' } }).payload);
      if (reply.ok !== true) throw new Error(`stream.stop refused: ${JSON.stringify(reply)}`);
      await v.viewer.vanish();
    };

    await close(await open()); // warms the JIT, DTLS and Chromium's decoder

    const agentTargets = { agentJsThread: { pid: agentPid, tid: agentPid }, agentProcess: { pid: agentPid, rss: true }, captureWorker: { pid: workerPid, rss: true } };
    /** One round of (b), (c): the agent at 0 and each viewer count, then webrtcbin the same way. */
    const cpuRound = async (round: number): Promise<CpuRound> => {
      process.stderr.write(`stream: CPU round ${round}: the agent with 0, ${cpuViewers.join(', ')} viewers\n`);
      const agentWindows: Window[] = [await measureWindow([], agentTargets, windowMs)];
      for (const n of cpuViewers) {
        const watching: Awaited<ReturnType<typeof open>>[] = [];
        for (let i = 0; i < n; i++) watching.push(await open());
        await sleep(3000);
        agentWindows.push(await measureWindow(watching.map((w) => w.viewer), agentTargets, windowMs));
        for (const w of watching) await close(w);
        await sleep(2000);
      }
      // 0 viewers again: what the agent keeps after its viewers left (V8 heap it does not give back).
      const afterWindow = await measureWindow([], agentTargets, windowMs);

      process.stderr.write(`stream: CPU round ${round}: webrtcbin encoding alone, then ${cpuViewers.join(', ')} viewers\n`);
      const encodeOnly = new WebrtcbinSender(true);
      await encodeOnly.ready;
      await sleep(3000);
      const encodeWindow = await measureWindow([], { webrtcbin: { pid: encodeOnly.child.pid!, rss: true } }, windowMs);
      await encodeOnly.stop();
      const gstWindows: Window[] = [];
      for (const n of cpuViewers) {
        // A fresh sender per count, as the agent's views are fresh per count.
        const sender = new WebrtcbinSender(false);
        await sender.ready;
        await sleep(2000);
        const gstViewers: Viewer[] = [];
        for (let i = 0; i < n; i++) {
          const viewer = await viewers.open();
          await viewer.applyAnswer(await sender.answer(`r${round}-n${n}-v${i}`, await viewer.createOffer()));
          await viewer.waitForVideo((v) => v.framesDecoded > 0, 20_000, `webrtcbin viewer ${i + 1} of ${n} decodes`);
          gstViewers.push(viewer);
        }
        await sleep(3000);
        gstWindows.push(await measureWindow(gstViewers, { webrtcbin: { pid: sender.child.pid!, rss: true } }, windowMs));
        for (const v of gstViewers) await v.vanish();
        await sender.stop();
      }

      const base = agentWindows[0]!;
      const perViewer = agentWindows.slice(1).map((w, i): PerViewer => {
        const n = w.viewers;
        const js = (w.cpu.agentJsThread! - base.cpu.agentJsThread!) / n;
        // The capture worker is left out: it encodes and payloads once whatever the number of viewers
        // (its figures are in the absolute line); the fan-out to viewers is all in the agent process.
        const whole = (w.cpu.agentProcess! - base.cpu.agentProcess!) / n;
        const gst = gstWindows[i]!;
        const gstPer = (gst.cpu.webrtcbin! - encodeWindow.cpu.webrtcbin!) / n;
        return {
          viewers: n,
          agentJsThreadPct: round2(js),
          agentProcessPct: round2(whole),
          webrtcbinOverEncodingPct: round2(gstPer),
          ratioJsThread: round2(js / gstPer),
          ratioProcess: round2(whole / gstPer),
          agentRssAddedMiB: round2((w.rssMiB.agentProcess! - base.rssMiB.agentProcess!) / n),
          webrtcbinRssAddedMiB: round2((gst.rssMiB.webrtcbin! - encodeWindow.rssMiB.webrtcbin!) / n),
        };
      });
      return { agentWindows, afterWindow, encodeWindow, gstWindows, perViewer };
    };
    const cpuRounds: CpuRound[] = [];
    for (let r = 1; r <= cpuRoundCount; r++) cpuRounds.push(await cpuRound(r));

    // Results: each figure as the median over the rounds with its min-max, the spread the goal asks for.
    const spread = (values: number[]) => {
      const sorted = [...values].sort((x, y) => x - y);
      return { median: round2(sorted[Math.floor((sorted.length - 1) / 2)]!), min: round2(sorted[0]!), max: round2(sorted.at(-1)!), values };
    };
    const show = (sp: { median: number; min: number; max: number }) => (cpuRounds.length > 1 ? `${sp.median} (${sp.min}–${sp.max})` : String(sp.median));
    const keys = ['agentJsThreadPct', 'agentProcessPct', 'webrtcbinOverEncodingPct', 'ratioJsThread', 'ratioProcess', 'agentRssAddedMiB', 'webrtcbinRssAddedMiB'] as const;
    const rows = cpuViewers.map((n, i) => ({ viewers: n, ...Object.fromEntries(keys.map((k) => [k, spread(cpuRounds.map((c) => c.perViewer[i]![k]))])) }) as { viewers: number } & Record<(typeof keys)[number], ReturnType<typeof spread>>);
    const machine = machineFacts(sqliteVersion);
    const md = [
      `### Live view: ${width}x${height}@${fps}, ${bitrateKbps} kbit/s, headless Chromium on loopback`,
      '',
      ...(firstFrame ? [firstFrameMarkdown(firstFrame, runs, turnRuns, rounds)] : ['(a) first frame: not measured in this run (--cpu-only).', '']),
      `(b, c) Cost per viewer, ${windowMs / 1000} s windows, (cost(N) - cost(0)) / N; % of one core; median (min–max) over ${cpuRounds.length} rounds, each measuring the agent and then webrtcbin. webrtcbin (bench/lib/webrtcbin-sender.py) sends the same source with the same encoder and payloader settings to the same Chromium (one payloader per viewer, which webrtcbin needs); its base is its own encoding alone.`,
      '',
      markdownTable(
        ['viewers', 'agent JS thread %', 'agent process (all threads) %', 'webrtcbin over encoding %', 'ratio JS thread / webrtcbin', 'ratio agent process / webrtcbin', 'agent RSS added MiB', 'webrtcbin RSS added MiB'],
        rows.map((r) => [r.viewers, ...keys.map((k) => show(r[k]))]),
      ),
      '',
      ...cpuRounds.map(
        (c, i) =>
          `Round ${i + 1}, absolute: agent JS thread ${c.agentWindows.map((w) => w.cpu.agentJsThread).join(' / ')} %, agent process ${c.agentWindows.map((w) => w.cpu.agentProcess).join(' / ')} %, capture worker ${c.agentWindows.map((w) => w.cpu.captureWorker).join(' / ')} %, agent RSS ${c.agentWindows.map((w) => w.rssMiB.agentProcess).join(' / ')} MiB at 0 / ${cpuViewers.join(' / ')} viewers and ${c.afterWindow.rssMiB.agentProcess} MiB (CPU ${c.afterWindow.cpu.agentProcess} %) once they left; webrtcbin ${c.encodeWindow.cpu.webrtcbin} % encoding alone, ${c.gstWindows.map((w) => w.cpu.webrtcbin).join(' / ')} % at ${cpuViewers.join(' / ')} viewers. Frames decoded per viewer per window: agent ${c.agentWindows.slice(1).map((w) => w.framesDecoded.join('+')).join(', ')}; webrtcbin ${c.gstWindows.map((w) => w.framesDecoded.join('+')).join(', ')}.`,
      ),
      '',
      `Machine: ${machineLine(machine)}. Chromium decodes on the same 2 cores.`,
    ].join('\n');
    writeResult(cpuOnly ? 'stream-cpu' : 'stream', { machine, width, height, fps, bitrateKbps, runs, windowS: windowMs / 1000, cpuViewers, firstFrame, firstFrameViews, failedViews, cpuRounds, perViewer: rows, markdown: md });
    process.stdout.write(`${md}\n`);
  } finally {
    await fleet.close();
    await viewers.close();
    await stateClient.endAsync();
    await agent.stop('SIGTERM');
    await broker.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`stream bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

