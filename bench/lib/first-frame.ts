// The live view's first frame, broken into its steps (issue 18), for bench/stream.ts: agents with
// stream.firstFrame "gop-cache" (new) and "keyframe-on-connect" (the old way) run side by side on
// one broker and one Chromium, and views alternate between them, so the load of the machine
// (other work on its 2 cores) hits both alike. Per round: fresh agents, the first view after
// start-up (cold) on each, a warm-up view each, then --runs views each on loopback; then the same
// through TURN only (coturn on loopback, relay policy on both ends). Agent-side steps come from the
// agent's "live view first keyframe sent" log line, viewer-side ones from Chromium (getStats, its
// connection events, requestVideoFrameCallback).
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt from 'mqtt';
import { spawnAgent, tempStateDir, type AgentProcess } from '../../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../../test/helpers/agent-config.ts';
import type { ChromiumViewers, OfferOptions } from '../../test/helpers/chromium-viewer.ts';
import { makeCommand, writeTrustStore, type makeIssuer } from '../../test/helpers/command-tokens.ts';
import type { Coturn } from '../../test/helpers/coturn.ts';
import type { FleetClient } from '../../test/helpers/fleet-client.ts';
import { freeLoopbackPort } from '../../test/helpers/gpsfake.ts';
import { markdownTable, round, sleep, summarise, trackChild } from './common.ts';

export const firstFrameModes = ['gop-cache', 'keyframe-on-connect'] as const;
export type FirstFrameMode = (typeof firstFrameModes)[number];
type Issuer = Awaited<ReturnType<typeof makeIssuer>>;

/** The steps, in order; each is the time from the previous one's end. */
export const stepNames = ['broker', 'verify', 'offer', 'gather', 'audit', 'reply', 'ice', 'dtls', 'keyframe', 'decode'] as const;
export type StepName = (typeof stepNames)[number];
export const stepWords: Record<StepName, string> = {
  broker: 'publish -> command at the agent (mosquitto, MQTT)',
  verify: 'signature, claims, replay cache, queue (agent)',
  offer: 'ICE settings, offer applied, answer made (agent, werift)',
  gather: 'candidate gathering (agent, werift; TURN allocation)',
  audit: 'stream.start audit entry committed (agent)',
  reply: 'reply published -> answer applied in Chromium',
  ice: 'ICE checks (answer applied -> both sides ICE connected)',
  dtls: 'DTLS handshake (both ICE connected -> agent DTLS connected)',
  keyframe: 'DTLS connected -> first keyframe handed to werift (agent)',
  decode: 'keyframe sent -> first frame decoded and handed to the compositor in Chromium',
};

export interface ViewTiming {
  mode: FirstFrameMode;
  round: number;
  kind: 'cold' | 'warm' | 'turn';
  /** Publish -> the first frame decoded and presented (requestVideoFrameCallback's presentationTime). */
  totalMs: number;
  steps: Record<StepName, number>;
  /** Publish -> getStats' framesDecoded first above 0 (polled every 5 ms; Chromium caches stats): for comparison. */
  statsDecodedMs: number;
  keyframeSource: string | null;
  gopAgeMs: number | null;
}

interface FirstKeyframeLog {
  sid: string;
  receivedAt: number;
  source: string | null;
  gopAgeMs: number | null;
  steps: Record<string, number | null>;
}

export interface LiveAgent {
  mode: FirstFrameMode;
  deviceId: string;
  agent: AgentProcess;
  stop(): Promise<void>;
}

export interface AgentSetup {
  brokerUrl: string;
  issuer: Issuer;
  capture: Record<string, unknown>;
  /** stream.ice beyond interfaces ['lo'] (TURN). */
  ice?: Record<string, unknown>;
  /** TURN password, written to the agent's state dir for stream.ice.servers[].credentialFile. */
  turnPassword?: string;
}

/** Starts one agent per mode and waits until each is online and capturing. */
export async function startAgents(setup: AgentSetup, tag: string): Promise<LiveAgent[]> {
  const watcher = await mqtt.connectAsync(setup.brokerUrl, { protocolVersion: 5, clean: true });
  const ready = new Set<string>();
  const waiters = new Map<string, () => void>();
  watcher.on('message', (topic, payload) => {
    const s = JSON.parse(payload.toString()) as { online?: boolean; capture?: { status?: string } | null };
    const id = topic.split('/')[2]!;
    if (s.online === true && s.capture?.status === 'running' && !ready.has(id)) {
      ready.add(id);
      waiters.get(id)?.();
    }
  });
  await watcher.subscribeAsync('bwc/v1/+/state', { qos: 1 });
  try {
    const agents = await Promise.all(
      firstFrameModes.map(async (mode) => {
        const deviceId = `bench-ff-${tag}-${mode}`;
        const stateDir = await tempStateDir('bwc-bench-ff-');
        const ice: Record<string, unknown> = { interfaces: ['lo'], ...setup.ice };
        if (setup.turnPassword !== undefined) {
          const file = path.join(stateDir, 'turn-password');
          await writeFile(file, `${setup.turnPassword}\n`, { mode: 0o600 });
          ice.servers = (ice.servers as Record<string, unknown>[]).map((s) => ({ ...s, credentialFile: file }));
        }
        const config = await writeAgentConfig(stateDir, {
          commands: { trustStore: writeTrustStore(stateDir, [setup.issuer]), unsynchronisedClock: 'accept', maxConcurrentStreams: 2 },
          capture: setup.capture,
          // The old way in full for the baseline: keyframe on connect and no start-up warm-up (warm-up.ts).
          stream: { ice, firstFrame: mode, warmUp: mode === 'gop-cache' },
        });
        const readyNow = new Promise<void>((resolve) => waiters.set(deviceId, resolve));
        const agent = spawnAgent(['run', '--config', config], {
          BWC_DEVICE_ID: deviceId,
          BWC_MQTT_URL: setup.brokerUrl,
          BWC_STATE_DIR: stateDir,
          BWC_GPSD: `127.0.0.1:${await freeLoopbackPort()}`,
          // info: the "live view first keyframe sent" line with the agent's steps.
          BWC_LOG_LEVEL: 'info',
        });
        trackChild(agent.child);
        const timeout = sleep(180_000).then(() => {
          throw new Error(`${deviceId} not online and capturing within 180 s:\n${agent.output.slice(-2000)}`);
        });
        await Promise.race([readyNow, timeout]);
        return { mode, deviceId, agent, stop: async () => void (await agent.stop('SIGTERM')) };
      }),
    );
    return agents;
  } finally {
    await watcher.endAsync();
  }
}

function firstKeyframeLog(agent: AgentProcess, sid: string): FirstKeyframeLog | undefined {
  for (const line of agent.output.split('\n')) {
    if (!line.includes('live view first keyframe sent') || !line.includes(sid)) continue;
    try {
      const rec = JSON.parse(line) as FirstKeyframeLog & { msg?: string };
      if (rec.msg === 'live view first keyframe sent' && rec.sid === sid) return rec;
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

export interface ViewContext {
  viewers: ChromiumViewers;
  fleet: FleetClient;
  issuer: Issuer;
  offer?: OfferOptions;
}

/** One view: stream.start published -> first decoded frame; its steps; then stream.stop. */
export async function timeView(ctx: ViewContext, a: LiveAgent, kind: ViewTiming['kind'], roundNo: number): Promise<ViewTiming> {
  const viewer = await ctx.viewers.open();
  try {
    const offer = await viewer.createOffer(ctx.offer);
    const command = makeCommand({ issuer: ctx.issuer, deviceId: a.deviceId, action: 'stream.start', offer, overrides: { sub: 'bench', reason: 'officer-safety' } });
    const publishedAt = Date.now();
    const reply = await ctx.fleet.request(a.deviceId, command.payload);
    if (reply.ok !== true) throw new Error(`stream.start refused by ${a.deviceId}: ${JSON.stringify(reply)}`);
    await viewer.applyAnswer(reply.answer as string);
    const answerAppliedAt = Date.now();
    const { firstFrameAt, iceConnectedAt: viewerIceAt } = await viewer.firstFrame(60_000);
    const sid = reply.sid as string;
    await a.agent.waitForOutput(new RegExp(`"sid":"${sid}"[^\\n]*live view first keyframe sent`), 10_000);
    const log = firstKeyframeLog(a.agent, sid);
    if (!log) throw new Error(`no first-keyframe log line for ${sid}`);
    // requestVideoFrameCallback fires at the next composite after the frame: wait for it (a view
    // whose mark never comes is a failed view, as one with no decoded frame is).
    // (presentationTime is a fraction of a ms; the agent's steps are whole ms.)
    const presentedAt = Math.round(await viewer.presented(10_000));
    const R = log.receivedAt;
    const s = (k: string) => {
      const v = log.steps[k];
      if (typeof v !== 'number') throw new Error(`step ${k} missing for ${sid}: ${JSON.stringify(log.steps)}`);
      return v;
    };
    const steps: Record<StepName, number> = {
      broker: R - publishedAt,
      verify: s('verified'),
      offer: s('gatherStarted') - s('verified'),
      gather: s('gathered') - s('gatherStarted'),
      audit: s('audited') - s('gathered'),
      reply: answerAppliedAt - (R + s('audited')),
      // werift (controlled, with the offer's candidates) may succeed before the answer is even
      // applied; DTLS (the agent is its server) starts once Chromium's own check succeeded too.
      ice: Math.max(R + s('iceConnected'), viewerIceAt) - answerAppliedAt,
      dtls: R + s('dtlsConnected') - Math.max(R + s('iceConnected'), viewerIceAt),
      keyframe: s('keyframe') - s('dtlsConnected'),
      decode: presentedAt - (R + s('keyframe')),
    };
    const reply2 = await ctx.fleet.request(a.deviceId, makeCommand({ issuer: ctx.issuer, deviceId: a.deviceId, action: 'stream.stop', overrides: { sid, sub: 'bench' } }).payload);
    if (reply2.ok !== true) throw new Error(`stream.stop refused: ${JSON.stringify(reply2)}`);
    return {
      mode: a.mode,
      round: roundNo,
      kind,
      totalMs: presentedAt - publishedAt,
      steps,
      statsDecodedMs: firstFrameAt - publishedAt,
      keyframeSource: log.source,
      gopAgeMs: log.gopAgeMs,
    };
  } finally {
    await viewer.vanish();
  }
}

export interface FirstFrameRunOptions {
  brokerUrl: string;
  issuer: Issuer;
  viewers: ChromiumViewers;
  fleet: FleetClient;
  capture: Record<string, unknown>;
  rounds: number;
  runs: number;
  turnRuns: number;
  turn: Coturn | undefined;
  log: (line: string) => void;
  /** After each round, with every view so far (a long run keeps what it measured). */
  onRound?: (views: ViewTiming[], roundsDone: number) => void;
}

/** A view that failed (no frame within the bound, a refusal): counted, not timed. */
export interface FailedView {
  mode: FirstFrameMode;
  round: number;
  kind: ViewTiming['kind'];
  error: string;
}
export const failedViews: FailedView[] = [];

async function tryView(ctx: ViewContext, a: LiveAgent, kind: ViewTiming['kind'], roundNo: number, log: (line: string) => void): Promise<ViewTiming | undefined> {
  try {
    return await timeView(ctx, a, kind, roundNo);
  } catch (err) {
    const error = err instanceof Error ? err.message.split('\n')[0]! : String(err);
    failedViews.push({ mode: a.mode, round: roundNo, kind, error });
    log(`first frame: ${a.mode} ${kind} view failed: ${error}; agent log tail:\n${a.agent.output.slice(-1500)}`);
    return undefined;
  }
}

/** Rounds of cold, warm (loopback) and TURN views, the two modes alternating. */
export async function runFirstFrame(o: FirstFrameRunOptions): Promise<ViewTiming[]> {
  const out: ViewTiming[] = [];
  const ctx: ViewContext = { viewers: o.viewers, fleet: o.fleet, issuer: o.issuer };
  for (let roundNo = 1; roundNo <= o.rounds; roundNo++) {
    const agents = await startAgents({ brokerUrl: o.brokerUrl, issuer: o.issuer, capture: o.capture }, `r${roundNo}`);
    try {
      // Alternate which mode goes first, so neither always has the other's start-up behind it.
      const order = (i: number) => (i % 2 === 0 ? agents : [...agents].reverse());
      o.log(`first frame: round ${roundNo}: cold views`);
      const keep = (v: ViewTiming | undefined) => void (v && out.push(v));
      for (const a of order(roundNo)) keep(await tryView(ctx, a, 'cold', roundNo, o.log));
      for (const a of agents) await tryView(ctx, a, 'warm', roundNo, o.log); // warm-up, not kept
      o.log(`first frame: round ${roundNo}: ${o.runs} views each on loopback`);
      for (let i = 0; i < o.runs; i++) {
        for (const a of order(i)) {
          keep(await tryView(ctx, a, 'warm', roundNo, o.log));
          await sleep(200);
        }
      }
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
    }
    if (o.turn && o.turnRuns > 0) {
      const turn = o.turn;
      const turnAgents = await startAgents(
        {
          brokerUrl: o.brokerUrl,
          issuer: o.issuer,
          capture: o.capture,
          ice: { servers: [{ urls: turn.urls.udp, username: turn.username }], transportPolicy: 'relay' },
          turnPassword: turn.password,
        },
        `t${roundNo}`,
      );
      const turnCtx: ViewContext = { ...ctx, offer: { iceServers: [{ urls: [turn.urls.udp], username: turn.username, credential: turn.password }], iceTransportPolicy: 'relay' } };
      try {
        o.log(`first frame: round ${roundNo}: ${o.turnRuns} views each through TURN only`);
        for (const a of turnAgents) await tryView(turnCtx, a, 'turn', roundNo, o.log); // warm-up
        for (let i = 0; i < o.turnRuns; i++) {
          for (const a of i % 2 === 0 ? turnAgents : [...turnAgents].reverse()) {
            const v = await tryView(turnCtx, a, 'turn', roundNo, o.log);
            if (v) out.push(v);
            await sleep(200);
          }
        }
      } finally {
        await Promise.all(turnAgents.map((a) => a.stop()));
      }
    }
    o.onRound?.(out, roundNo);
  }
  return out;
}

const r0 = (v: number) => round(v, 0);

export interface FirstFrameSummary {
  /** kind -> mode -> figures over all rounds, and per round. */
  [kind: string]: Record<string, { total: ReturnType<typeof summarise>; steps: Record<StepName, { p50: number; p95: number }>; statsDecodedP50: number; roundsP50: number[]; roundsP95: number[]; stepRoundsP50: Record<StepName, number[]> }>;
}

export function summariseFirstFrame(views: ViewTiming[], rounds: number): FirstFrameSummary {
  const out: FirstFrameSummary = {};
  for (const kind of ['warm', 'cold', 'turn'] as const) {
    for (const mode of firstFrameModes) {
      const mine = views.filter((v) => v.kind === kind && v.mode === mode);
      if (mine.length === 0) continue;
      const steps = Object.fromEntries(stepNames.map((k) => {
        const s = summarise(mine.map((v) => v.steps[k]));
        return [k, { p50: r0(s.p50), p95: r0(s.p95) }];
      })) as Record<StepName, { p50: number; p95: number }>;
      const perRound = Array.from({ length: rounds }, (_, i) => mine.filter((v) => v.round === i + 1)).filter((r) => r.length > 0);
      const total = summarise(mine.map((v) => v.totalMs));
      (out[kind] ??= {})[mode] = {
        total: { ...total, mean: r0(total.mean) },
        steps,
        statsDecodedP50: r0(summarise(mine.map((v) => v.statsDecodedMs)).p50),
        roundsP50: perRound.map((r) => r0(summarise(r.map((v) => v.totalMs)).p50)),
        roundsP95: perRound.map((r) => r0(summarise(r.map((v) => v.totalMs)).p95)),
        stepRoundsP50: Object.fromEntries(stepNames.map((k) => [k, perRound.map((r) => r0(summarise(r.map((v) => v.steps[k])).p50))])) as Record<StepName, number[]>,
      };
    }
  }
  return out;
}

/** The step whose per-round p50 spreads most (max - min), per kind and mode. */
export function movingStep(s: FirstFrameSummary[string][string]): { step: StepName; spreadMs: number } {
  let best: { step: StepName; spreadMs: number } = { step: stepNames[0], spreadMs: -1 };
  for (const k of stepNames) {
    const v = s.stepRoundsP50[k];
    const spread = Math.max(...v) - Math.min(...v);
    if (spread > best.spreadMs) best = { step: k, spreadMs: spread };
  }
  return best;
}

export function firstFrameMarkdown(sum: FirstFrameSummary, runs: number, turnRuns: number, rounds: number): string {
  const lines: string[] = [];
  if (failedViews.length > 0) {
    lines.push(`Failed views (no decoded frame within 60 s, or refused), left out of the figures: ${failedViews.map((f) => `${f.mode} ${f.kind} round ${f.round} (${f.error})`).join('; ')}.`, '');
  }
  const kinds: [string, string][] = [
    ['warm', `loopback, ${runs} views per mode per round after a warm-up`],
    ['cold', 'the first view after agent start-up (online and capturing), one per mode per round'],
    ['turn', `TURN only (coturn on loopback over UDP, relay policy on both ends), ${turnRuns} views per mode per round after a warm-up`],
  ];
  for (const [kind, words] of kinds) {
    const k = sum[kind];
    if (!k) continue;
    const g = k['gop-cache'];
    const b = k['keyframe-on-connect'];
    if (!g || !b) continue;
    lines.push(`(a${kind === 'warm' ? '' : kind === 'cold' ? ', cold' : ', TURN'}) Signed stream.start published -> first frame decoded and presented in Chromium (requestVideoFrameCallback presentationTime), ${words}; ${rounds} rounds, modes alternating. "gop-cache" is the new default, "keyframe-on-connect" the old way measured in the same run:`, '');
    lines.push(
      markdownTable(
        ['', 'gop-cache p50 / p95 ms', 'keyframe-on-connect p50 / p95 ms'],
        [
          ['**total, all rounds**', `**${g.total.p50} / ${g.total.p95}**`, `${b.total.p50} / ${b.total.p95}`],
          ['total per round (p50)', g.roundsP50.join(', '), b.roundsP50.join(', ')],
          ['total per round (p95)', g.roundsP95.join(', '), b.roundsP95.join(', ')],
          ...stepNames.map((n) => [`${n}: ${stepWords[n]}`, `${g.steps[n].p50} / ${g.steps[n].p95}`, `${b.steps[n].p50} / ${b.steps[n].p95}`]),
          ["for comparison: publish -> getStats' framesDecoded above 0 (polled every 5 ms), p50", String(g.statsDecodedP50), String(b.statsDecodedP50)],
        ],
      ),
      '',
    );
    if (rounds > 1) {
      const mg = movingStep(g);
      const mb = movingStep(b);
      lines.push(`Moves most between rounds (spread of its per-round p50): gop-cache: ${mg.step} (${mg.spreadMs} ms); keyframe-on-connect: ${mb.step} (${mb.spreadMs} ms). Step p50s per round: ` +
        stepNames.map((n) => `${n} ${g.stepRoundsP50[n].join('/')} | ${b.stepRoundsP50[n].join('/')}`).join('; ') + '.', '');
    }
  }
  return lines.join('\n');
}
