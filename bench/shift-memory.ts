// Memory over a shift (issue 18): the real agent process recording (test preset, 1280x720@30,
// 2000 kbit/s, as the issue measured it) for --minutes (60), with one headless Chromium viewer
// for the first --viewer-minutes (30) of it, while RSS and open file descriptors of the agent and
// of its capture worker are sampled every --interval-s (10) seconds. Reported per process: RSS at
// the end of the warm-up (--warmup-minutes, 5), at the end, the growth after warm-up (mean of the
// last 5 minutes minus the mean of the 5 minutes after the warm-up; goal <= 5 MB), the slope over
// the phase without a viewer (MiB/h), and the open fds (goal: flat). In a short run the two windows
// are a third of the time after warm-up each.
//
// The baseline (the old memory settings: no V8/glibc flags from bin/bwc-agent and the worker
// launcher, BWC_MEMORY_FLAGS=off) runs in the SAME run as a second agent beside the first, with its
// own viewer at the same times, so the load from other work on the machine hits both alike
// (--variants current,baseline; "current" alone with --variants current).
//
// With --probe each process also loads bench/lib/mem-probe.ts (V8 heap, external, array buffers
// every interval, to split RSS into heap and native) and --heap-snapshots M1,M2 writes V8 heap
// snapshots of both processes at those minutes into the run's folder (kept with --keep) to compare
// by constructor.
//
// Usage: node bench/shift-memory.ts [--minutes 60] [--viewer-minutes 30] [--warmup-minutes 5]
//        [--interval-s 10] [--variants current,baseline] [--probe] [--heap-snapshots 10,40] [--keep]
//        [--short]  (make bench: 8 minutes, 4 with a viewer, 2 of warm-up)
// Writes bench/results/shift-memory.json (and shift-memory-short.json with --short) with a table.
import { readdirSync, readFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { spawnAgent, tempStateDir, type AgentProcess } from '../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../test/helpers/agent-config.ts';
import { ChromiumViewers, type Viewer } from '../test/helpers/chromium-viewer.ts';
import { makeCommand, makeIssuer, writeTrustStore, type Issuer } from '../test/helpers/command-tokens.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { FleetClient } from '../test/helpers/fleet-client.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { runCli } from '../test/helpers/agent-process.ts';
import { cpuMs } from './lib/proc.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, repoRoot, round, sleep, trackChild, trackDir, writeResult } from './lib/common.ts';

const width = 1280;
const height = 720;
const fps = 30;
const bitrateKbps = 2000;

export interface Sample {
  /** Seconds since recording started. */
  t: number;
  rssKiB: number | undefined;
  /** Proportional set size: shared pages (the node binary both processes map) split between them. */
  pssKiB: number | undefined;
  fds: number | undefined;
  pid: number | undefined;
}

/** VmRSS of `pid` in KiB. */
export function rssKiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function pssKiB(pid: number): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

export function openFds(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

/** The capture worker: the agent's child whose command line runs capture/worker.(js|ts). */
export function captureWorkerPid(agentPid: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== agentPid) continue;
      if (/capture[/\\]worker\.(js|ts)/.test(readFileSync(`/proc/${entry}/cmdline`, 'utf8'))) return Number(entry);
    } catch {
      continue;
    }
  }
  return undefined;
}

/** Anonymous / file-backed / heap split of a process's resident memory, KiB (smaps_rollup + smaps). */
export function smapsBreakdown(pid: number): Record<string, number> | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    const out: Record<string, number> = { heap: 0, anon: 0, stack: 0, file: 0, anonMappings64MiB: 0 };
    let name = '';
    let size = 0;
    for (const line of text.split('\n')) {
      const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
      if (header) {
        name = header[1] ?? '';
        continue;
      }
      const s = /^Size:\s+(\d+) kB/.exec(line);
      if (s) size = Number(s[1]);
      const r = /^Rss:\s+(\d+) kB/.exec(line);
      if (!r) continue;
      const rss = Number(r[1]);
      if (name === '[heap]') out.heap! += rss;
      else if (name.startsWith('[stack')) out.stack! += rss;
      else if (name === '' || name.startsWith('[anon')) {
        out.anon! += rss;
        // glibc's per-thread malloc arenas are reserved 64 MiB at a time (HEAP_MAX_SIZE).
        if (size === 65536 || size > 60000) out.anonMappings64MiB! += rss;
      } else if (name.startsWith('/')) {
        const key = `file:${path.basename(name)}`;
        out.file! += rss;
        out[key] = (out[key] ?? 0) + rss;
      }
    }
    // Keep only the larger file mappings by name.
    for (const k of Object.keys(out)) if (k.startsWith('file:') && out[k]! < 2048) delete out[k];
    return out;
  } catch {
    return undefined;
  }
}

export interface ProcessReport {
  warmupEndMiB: number;
  endMiB: number;
  /** PSS at the end: what the process costs once the pages it shares are split. */
  endPssMiB: number;
  maxMiB: number;
  /** Mean of the last 5 minutes minus the mean of the 5 minutes after warm-up. */
  growthAfterWarmupMiB: number;
  /** Least-squares slope after warm-up, MiB per hour, over the whole run and each phase. */
  slopeMiBPerHour: number;
  slopeWithViewerMiBPerHour: number | undefined;
  slopeWithoutViewerMiBPerHour: number | undefined;
  fdsMin: number;
  fdsMax: number;
  fdsWarmupEnd: number;
  fdsEnd: number;
  restarts: number;
}

function slope(points: { t: number; v: number }[]): number | undefined {
  if (points.length < 3) return undefined;
  const n = points.length;
  const mt = points.reduce((a, p) => a + p.t, 0) / n;
  const mv = points.reduce((a, p) => a + p.v, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.v - mv);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? undefined : num / den;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / (xs.length || 1);

export function report(samples: Sample[], warmupS: number, viewerEndS: number, endS: number): ProcessReport {
  const ok = samples.filter((s) => s.rssKiB !== undefined) as (Sample & { rssKiB: number })[];
  const after = ok.filter((s) => s.t >= warmupS);
  const mib = (kib: number) => kib / 1024;
  // 5 minutes each end; a third of the time after warm-up in a short run, so the two do not overlap.
  const window = Math.min(300, (endS - warmupS) / 3);
  const firstAfter = after.filter((s) => s.t < warmupS + window).map((s) => mib(s.rssKiB));
  const last = after.filter((s) => s.t >= endS - window).map((s) => mib(s.rssKiB));
  const perHour = (pts: Sample[]) => {
    const k = slope(pts.map((s) => ({ t: s.t, v: mib(s.rssKiB!) })));
    return k === undefined ? undefined : round(k * 3600, 2);
  };
  const fds = after.map((s) => s.fds).filter((f): f is number => f !== undefined);
  const pids = new Set(ok.map((s) => s.pid));
  return {
    warmupEndMiB: round(firstAfter[0] ?? NaN),
    endMiB: round(mib(ok.at(-1)?.rssKiB ?? NaN)),
    endPssMiB: round(mib(ok.at(-1)?.pssKiB ?? NaN)),
    maxMiB: round(Math.max(...after.map((s) => mib(s.rssKiB)))),
    growthAfterWarmupMiB: round(mean(last) - mean(firstAfter), 2),
    slopeMiBPerHour: perHour(after) ?? NaN,
    slopeWithViewerMiBPerHour: perHour(after.filter((s) => s.t < viewerEndS)),
    slopeWithoutViewerMiBPerHour: perHour(after.filter((s) => s.t >= viewerEndS + 60)),
    fdsMin: Math.min(...fds),
    fdsMax: Math.max(...fds),
    fdsWarmupEnd: fds[0] ?? NaN,
    fdsEnd: fds.at(-1) ?? NaN,
    restarts: pids.size - 1,
  };
}

interface Variant {
  name: string;
  env: Record<string, string>;
  deviceId: string;
  stateDir: string;
  agent?: AgentProcess;
  viewer?: { viewer: Viewer; sid: string };
  agentSamples: Sample[];
  workerSamples: Sample[];
  /** CPU ms of the agent and its worker at the first sample (the worker's own, for its pid then). */
  cpuStart?: { agent: number; worker: number; workerPid: number | undefined; at: number };
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const short = flags.has('short');
  const minutes = intFlag(flags, 'minutes', short ? 8 : 60);
  const viewerMinutes = intFlag(flags, 'viewer-minutes', short ? 4 : 30);
  const warmupMinutes = intFlag(flags, 'warmup-minutes', short ? 2 : 5);
  const intervalS = intFlag(flags, 'interval-s', 10);
  const variantNames = (flags.get('variants') ?? 'current,baseline').split(',');
  const probe = flags.has('probe');
  const keep = flags.has('keep');
  const snapshotsAt = (flags.get('heap-snapshots') ?? '').split(',').filter(Boolean).map(Number);
  if (viewerMinutes > 30) throw new Error('--viewer-minutes: at most 30 (the agent\'s stream.maxStreamDuration is 1800 s)');
  for (const v of variantNames) if (v !== 'current' && v !== 'baseline') throw new Error(`--variants: "current" or "baseline", got ${v}`);
  // Experiments: --env-variants 'name:KEY=VALUE;KEY=VALUE/name2:KEY=VALUE' adds agents run with that
  // environment on top of the current settings (e.g. NODE_OPTIONS=--max-semi-space-size=4).
  const envVariants = new Map<string, Record<string, string>>();
  for (const spec of (flags.get('env-variants') ?? '').split('/').filter(Boolean)) {
    const colon = spec.indexOf(':');
    if (colon <= 0) throw new Error(`--env-variants: expected name:KEY=VALUE;..., got ${spec}`);
    const env: Record<string, string> = {};
    for (const kv of spec.slice(colon + 1).split(';').filter(Boolean)) {
      const eq = kv.indexOf('=');
      if (eq <= 0) throw new Error(`--env-variants: expected KEY=VALUE in ${spec}, got ${kv}`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    envVariants.set(spec.slice(0, colon), env);
    variantNames.push(spec.slice(0, colon));
  }

  const issuer: Issuer = await makeIssuer({ iss: 'bench-fleet' });
  const broker = await startBroker();
  const runDir = keep ? path.join(repoRoot, '.exp', `shift-memory-${Date.now()}`) : trackDir(await tempStateDir('bwc-shift-'));
  mkdirSync(runDir, { recursive: true });
  const variants: Variant[] = [];
  for (const name of variantNames) {
    const stateDir = trackDir(await tempStateDir(`bwc-shift-${name}-`));
    const env: Record<string, string> = { ...envVariants.get(name) };
    if (name === 'baseline') env.BWC_MEMORY_FLAGS = 'off';
    if (probe || snapshotsAt.length) {
      const probeDir = path.join(runDir, name);
      mkdirSync(probeDir, { recursive: true });
      env.BWC_MEMPROBE_DIR = probeDir;
      env.BWC_MEMPROBE_INTERVAL_MS = String(intervalS * 1000);
      // NODE_OPTIONS reaches the worker too (it inherits the agent's environment); the snapshots
      // are written into the process's working directory, so both run there.
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ''} --import=${path.join(repoRoot, 'bench/lib/mem-probe.ts')} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${probeDir}`.trim();
    }
    variants.push({ name, env, deviceId: `shift-${name}`, stateDir, agentSamples: [], workerSamples: [] });
  }
  const fleet = await FleetClient.connect(broker.url);
  const stateClient = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  const viewers = await ChromiumViewers.launch();
  try {
    for (const v of variants) {
      const config = await writeAgentConfig(v.stateDir, {
        commands: { trustStore: writeTrustStore(v.stateDir, [issuer]), unsynchronisedClock: 'accept', maxConcurrentStreams: 1 },
        capture: { width, height, framerate: fps, bitrateKbps },
        stream: { ice: { interfaces: ['lo'] } },
      });
      v.agent = spawnAgent(['run', '--config', config], {
        BWC_DEVICE_ID: v.deviceId,
        BWC_MQTT_URL: broker.url,
        BWC_STATE_DIR: v.stateDir,
        BWC_GPSD: `127.0.0.1:${await freeLoopbackPort()}`,
        BWC_LOG_LEVEL: 'warn',
        ...v.env,
      });
      trackChild(v.agent.child);
    }
    // Each agent's retained state with the capture running.
    await stateClient.subscribeAsync(variants.map((v) => `bwc/v1/${v.deviceId}/state`), { qos: 1 });
    const running = new Set<string>();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`capture not running within 90 s: ${variants.filter((v) => !running.has(v.deviceId)).map((v) => v.name).join(', ')}`)), 90_000);
      stateClient.on('message', (topic, payload) => {
        const s = JSON.parse(payload.toString()) as { online?: boolean; capture?: { status?: string } | null };
        if (s.online && s.capture?.status === 'running') running.add(topic.split('/')[2]!);
        if (running.size === variants.length) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    for (const v of variants) {
      const r = await runCli(['ctl', 'record', 'start', '--state-dir', v.stateDir]);
      if (r.code !== 0) throw new Error(`${v.name}: ctl record start failed: ${r.stderr}`);
    }
    const startedAt = Date.now();
    const elapsedS = () => (Date.now() - startedAt) / 1000;
    const open = async (v: Variant) => {
      const viewer = await viewers.open();
      const offer = await viewer.createOffer();
      const command = makeCommand({ issuer, deviceId: v.deviceId, action: 'stream.start', offer, overrides: { sub: 'bench', reason: 'officer-safety', max_s: Math.min(1800, viewerMinutes * 60 + 60) } });
      const reply = await fleet.request(v.deviceId, command.payload);
      if (reply.ok !== true) throw new Error(`${v.name}: stream.start refused: ${JSON.stringify(reply)}`);
      await viewer.applyAnswer(reply.answer as string);
      await viewer.firstFrame(30_000);
      v.viewer = { viewer, sid: reply.sid as string };
    };
    // A stop that goes unanswered (an agent busy writing a heap snapshot) is reported, not fatal:
    // the viewer vanishing ends the session anyway (stream.viewerLostGrace).
    const close = async (v: Variant) => {
      if (!v.viewer) return;
      try {
        const reply = await fleet.request(v.deviceId, makeCommand({ issuer, deviceId: v.deviceId, action: 'stream.stop', overrides: { sid: v.viewer.sid, sub: 'bench' } }).payload, 60_000);
        if (reply.ok !== true) process.stderr.write(`shift-memory: ${v.name}: stream.stop refused: ${JSON.stringify(reply)}\n`);
      } catch (err) {
        process.stderr.write(`shift-memory: ${v.name}: stream.stop: ${err instanceof Error ? err.message : String(err)}\n`);
      }
      await v.viewer.viewer.vanish();
      v.viewer = undefined;
    };
    for (const v of variants) await open(v);
    for (const v of variants) {
      const workerPid = captureWorkerPid(v.agent!.child.pid!);
      v.cpuStart = { agent: cpuMs(v.agent!.child.pid!) ?? NaN, worker: cpuMs(workerPid) ?? NaN, workerPid, at: Date.now() };
    }
    process.stderr.write(`shift-memory: ${variants.map((v) => v.name).join(' + ')} recording for ${minutes} min, a viewer each for ${viewerMinutes} min\n`);
    const snapshotsLeft = [...snapshotsAt];
    let viewersOn = true;
    let nextAt = 0;
    const framesDecoded: Record<string, number> = {};
    while (elapsedS() < minutes * 60) {
      const t = elapsedS();
      for (const v of variants) {
        const agentPid = v.agent!.child.pid!;
        const workerPid = captureWorkerPid(agentPid);
        v.agentSamples.push({ t, rssKiB: rssKiB(agentPid), pssKiB: pssKiB(agentPid), fds: openFds(agentPid), pid: agentPid });
        v.workerSamples.push({ t, rssKiB: workerPid && rssKiB(workerPid), pssKiB: workerPid && pssKiB(workerPid), fds: workerPid && openFds(workerPid), pid: workerPid });
        if (v.agent!.child.exitCode !== null) throw new Error(`${v.name}: the agent exited: ${v.agent!.output.slice(-2000)}`);
      }
      if (snapshotsLeft.length && t >= snapshotsLeft[0]! * 60) {
        snapshotsLeft.shift();
        for (const v of variants) {
          const agentPid = v.agent!.child.pid!;
          const workerPid = captureWorkerPid(agentPid);
          process.kill(agentPid, 'SIGUSR2');
          if (workerPid) process.kill(workerPid, 'SIGUSR2');
        }
        process.stderr.write(`shift-memory: heap snapshots at ${round(t / 60)} min\n`);
      }
      if (viewersOn && t >= viewerMinutes * 60) {
        viewersOn = false;
        for (const v of variants) {
          if (v.viewer) framesDecoded[v.name] = (await v.viewer.viewer.inboundVideo()).framesDecoded;
          await close(v);
        }
        process.stderr.write(`shift-memory: viewers gone at ${round(t / 60)} min\n`);
      }
      if (Math.floor(t / 300) !== Math.floor((t - intervalS) / 300)) {
        process.stderr.write(`shift-memory: ${round(t / 60)} min: ${variants.map((v) => `${v.name} agent ${round((v.agentSamples.at(-1)!.rssKiB ?? NaN) / 1024)} MiB, worker ${round((v.workerSamples.at(-1)!.rssKiB ?? NaN) / 1024)} MiB`).join('; ')}\n`);
      }
      nextAt += intervalS * 1000;
      await sleep(Math.max(0, startedAt + nextAt - Date.now()));
    }
    const endS = elapsedS();
    // % of one core over the whole run (a restarted worker's CPU before the restart is lost: NaN).
    const cpu: Record<string, { agentPct: number; workerPct: number }> = {};
    for (const v of variants) {
      const workerPid = captureWorkerPid(v.agent!.child.pid!);
      const ms = Date.now() - v.cpuStart!.at;
      cpu[v.name] = {
        agentPct: round(((cpuMs(v.agent!.child.pid!)! - v.cpuStart!.agent) / ms) * 100),
        workerPct: workerPid === v.cpuStart!.workerPid ? round(((cpuMs(workerPid)! - v.cpuStart!.worker) / ms) * 100) : NaN,
      };
    }
    const breakdown: Record<string, unknown> = {};
    for (const v of variants) {
      const agentPid = v.agent!.child.pid!;
      const workerPid = captureWorkerPid(agentPid);
      breakdown[v.name] = { agent: smapsBreakdown(agentPid), worker: workerPid && smapsBreakdown(workerPid) };
    }
    for (const v of variants) await close(v);
    const results = variants.map((v) => ({
      variant: v.name,
      agent: report(v.agentSamples, warmupMinutes * 60, viewerMinutes * 60, endS),
      worker: report(v.workerSamples, warmupMinutes * 60, viewerMinutes * 60, endS),
      framesDecoded: framesDecoded[v.name],
      cpu: cpu[v.name],
      env: v.env.BWC_MEMORY_FLAGS === 'off' ? 'BWC_MEMORY_FLAGS=off' : Object.entries(envVariants.get(v.name) ?? {}).map(([k, val]) => `${k}=${val}`).join(' '),
    }));
    const machine = machineFacts('-');
    const rows = results.flatMap((r) =>
      (['agent', 'worker'] as const).map((p) => [
        r.variant,
        p,
        r[p].warmupEndMiB,
        r[p].endMiB,
        r[p].maxMiB,
        `**${r[p].growthAfterWarmupMiB}**`,
        r[p].slopeWithViewerMiBPerHour ?? '-',
        r[p].slopeWithoutViewerMiBPerHour ?? '-',
        `${r[p].fdsWarmupEnd} → ${r[p].fdsEnd} (${r[p].fdsMin}-${r[p].fdsMax})`,
        r[p].restarts,
      ]),
    );
    const together = results.map((r) => `${r.variant} ${round(r.agent.endMiB + r.worker.endMiB)} MiB RSS (${round(r.agent.endPssMiB + r.worker.endPssMiB)} MiB PSS), CPU agent ${r.cpu?.agentPct} % + worker ${r.cpu?.workerPct} % of a core${r.env ? ` [${r.env}]` : ''}`).join('; ');
    const md = [
      `### Memory over a shift: recording ${width}x${height}@${fps} ${bitrateKbps} kbit/s for ${round(endS / 60)} min, one Chromium viewer for the first ${viewerMinutes}, samples every ${intervalS} s, warm-up ${warmupMinutes} min`,
      '',
      markdownTable(
        ['settings', 'process', 'RSS after warm-up MiB', 'RSS at end MiB', 'max MiB', 'growth after warm-up MiB (goal <= 5 MB)', 'slope with viewer MiB/h', 'slope without viewer MiB/h', 'open fds (range)', 'worker restarts'],
        rows,
      ),
      '',
      `Agent + worker at the end: ${together}. "current": the memory settings of bin/bwc-agent and the worker launcher; "baseline": BWC_MEMORY_FLAGS=off (the old flags), run beside it in the same run. Growth = mean RSS of the last ${round(Math.min(300, (endS - warmupMinutes * 60) / 3) / 60)} min - mean of the first as long after warm-up.`,
      '',
      `Machine: ${machineLine(machine)}. Shared with other work: single run, noisy.`,
    ].join('\n');
    const name = short ? 'shift-memory-short' : 'shift-memory';
    writeResult(name, { machine, width, height, fps, bitrateKbps, minutes, viewerMinutes, warmupMinutes, intervalS, results, breakdownKiB: breakdown, samples: Object.fromEntries(variants.map((v) => [v.name, { agent: v.agentSamples, worker: v.workerSamples }])), runDir: keep ? path.relative(repoRoot, runDir) : undefined, markdown: md });
    process.stdout.write(`${md}\n`);
    if (existsSync(runDir) && keep) process.stderr.write(`shift-memory: probe files and snapshots in ${runDir}\n`);
  } finally {
    await fleet.close();
    await viewers.close();
    await stateClient.endAsync();
    for (const v of variants) await v.agent?.stop('SIGTERM');
    await broker.dispose();
  }
}

// Only when run as a script: the unit test imports the helpers above.
if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`shift-memory bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
