// The live view over a bad link (test/helpers/bad-link-rig.ts: the agent in its own network
// namespace, real GStreamer, real coturn, real Chromium):
//  (a) time to recover video after a network change: the camera's address is moved mid-stream,
//      --moves (5) times; from the move to the viewer decoding again, split into move -> the
//      camera's signed restart offer at the fleet, offer -> answer published (Chromium answers,
//      the fleet signs), answer -> frames again.
//  (b) freeze time per minute at 200 ms RTT (the UDP delay relay in front of coturn, TURN
//      forced), --window-s (60) seconds each: "snow" at 0 % loss, then "snow" and "ball" at 3 %
//      random loss each way, each picture with the baseline (NACK + RTX, stream.fec "off") and the
//      options beside it in the same run: RED + ULPFEC (stream.fec "auto"), and each of those
//      with the viewer's jitterBufferTarget at 400 ms (the console's setting). Chromium's own
//      freezeCount and totalFreezesDuration, PLIs, FEC and RTX counters, and the agent's.
// The picture is videotestsrc at 640x360@15: "snow", noise the encoder cannot compress, so every
// frame is many packets (the worst case for loss), and "ball", a calm scene.
// Writes bench/results/bad-link.json (bad-link-freezes.json with --only freezes) and a markdown
// table. Needs root (ip netns, iptables).
//
// Usage: node bench/bad-link.ts [--moves 5] [--window-s 60] [--only freezes] [--variants 0,1,2,3]
import Database from 'better-sqlite3';
import { createBadLinkRig, type Rig } from '../test/helpers/bad-link-rig.ts';
import type { Viewer } from '../test/helpers/chromium-viewer.ts';
import { defaultPlayoutDelayMs } from '../ops-console/server.ts';
import { installCleanup, intFlag, logRecord, machineFacts, machineLine, markdownTable, parseFlags, round, sleep, summarise, writeResult, type Summary } from './lib/common.ts';

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

const rounded = (s: Summary): Summary => ({ n: s.n, min: round(s.min), p50: round(s.p50), p95: round(s.p95), max: round(s.max), mean: round(s.mean) });

async function recovery(rig: Rig, moves: number) {
  await rig.startAgent({ ice: { interfaces: [rig.net.cameraInterface] } });
  const { viewer, sid } = await rig.watch({}, 1800);
  rig.answerRestarts(viewer, sid);
  const runs: { totalMs: number; offerMs: number; answerMs: number; framesMs: number }[] = [];
  for (let i = 0; i < moves; i++) {
    await sleep(3000);
    const before = rig.restarts.length;
    await rig.net.changeAddress();
    const movedAt = Date.now();
    const frames = (await viewer.inboundVideo()).framesDecoded;
    await until('frames after the move', async () => (await viewer.inboundVideo()).framesDecoded > frames + 2, 60_000);
    const back = Date.now();
    const r = rig.restarts.slice(before).find((x) => x.cause === 'network_changed') ?? rig.restarts.at(-1);
    if (!r) throw new Error('video came back without a restart answered');
    runs.push({ totalMs: back - movedAt, offerMs: r.offerAt - movedAt, answerMs: r.answerAt - r.offerAt, framesMs: back - r.answerAt });
    process.stderr.write(`move ${i + 1}: video back after ${back - movedAt} ms\n`);
  }
  await viewer.vanish();
  await rig.stopAgent();
  return runs;
}

/** The inbound video counters this bench reads (more than the shared helper's). */
interface VideoStats {
  framesDecoded: number;
  keyFramesDecoded: number;
  framesDropped: number;
  freezeCount: number;
  totalFreezesDuration: number;
  nackCount: number;
  retransmittedPacketsReceived: number;
  pliCount: number;
  packetsLost: number;
  packetsReceived: number;
  fecPacketsReceived: number;
  fecPacketsDiscarded: number;
  bytesReceived: number;
  jitterBufferDelay: number;
  jitterBufferEmittedCount: number;
}

async function videoStats(viewer: Viewer): Promise<VideoStats> {
  return viewer.page.evaluate(async () => {
    const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
    const out: Record<string, number> = {
      framesDecoded: 0, keyFramesDecoded: 0, framesDropped: 0, freezeCount: 0, totalFreezesDuration: 0, nackCount: 0, retransmittedPacketsReceived: 0,
      pliCount: 0, packetsLost: 0, packetsReceived: 0, fecPacketsReceived: 0, fecPacketsDiscarded: 0, bytesReceived: 0, jitterBufferDelay: 0, jitterBufferEmittedCount: 0,
    };
    (await pc.getStats()).forEach((s: Record<string, unknown>) => {
      if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
      for (const k of Object.keys(out)) if (typeof s[k] === 'number') out[k] = s[k] as number;
    });
    return out as unknown as VideoStats;
  });
}

/** The viewer's jitter buffer target (RTCRtpReceiver.jitterBufferTarget, ms): what the console's setting sets. */
async function setJitterTarget(viewer: Viewer, ms: number): Promise<void> {
  await viewer.page.evaluate((ms) => {
    const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
    for (const r of pc.getReceivers()) if (r.track.kind === 'video') (r as unknown as { jitterBufferTarget: number }).jitterBufferTarget = ms;
  }, ms);
}

/** One way of sending the live view: the baseline (NACK + RTX only) or one of the options. */
interface Variant {
  name: string;
  fec: 'auto' | 'off';
  /** The viewer's jitterBufferTarget, ms (undefined: Chromium's default). */
  jitterTargetMs?: number;
}

export const variants: Variant[] = [
  { name: 'baseline (NACK + RTX)', fec: 'off' },
  { name: 'RED + ULPFEC', fec: 'auto' },
  // The console's default playout delay (its viewer page sets jitterBufferTarget to it), as shipped.
  { name: `NACK + RTX, the console's playout delay ${defaultPlayoutDelayMs} ms`, fec: 'off', jitterTargetMs: defaultPlayoutDelayMs },
  { name: `RED + ULPFEC, the console's playout delay ${defaultPlayoutDelayMs} ms`, fec: 'auto', jitterTargetMs: defaultPlayoutDelayMs },
];

async function freezes(rig: Rig, windowMs: number, lossPercent: number, testPattern: 'snow' | 'ball', variant: Variant) {
  await rig.startAgent({ ice: rig.relayOnlyIce(await rig.delayedTurn(100)), fec: variant.fec }, { testPattern });
  const { viewer } = await rig.watch(rig.viewerTurn(), 1800);
  if (variant.jitterTargetMs !== undefined) await setJitterTarget(viewer, variant.jitterTargetMs);
  if (lossPercent > 0) await rig.net.setLoss({ percent: lossPercent, direction: 'both', protocol: 'udp' });
  await sleep(3000);
  const a = await videoStats(viewer);
  await sleep(windowMs);
  const b = await videoStats(viewer);
  const path = await viewer.selectedPath();
  await rig.net.clearLoss();
  await viewer.vanish();
  await rig.stopAgent();
  const output = rig.agentOutput();
  const totals = logRecord(output, 'live view totals') as { plis: number; nacks: number; retransmitted: number; videoPackets: number; fec: { red: boolean; rate: number; mediaPackets: number; fecPackets: number }; lossEstimate: number } | undefined;
  const keyframeRequests = output.split('\n').filter((l) => l.includes('"keyframe requested"')).length;
  const perMin = 60_000 / windowMs;
  const d = (k: keyof VideoStats) => b[k] - a[k];
  return {
    variant: variant.name,
    fec: variant.fec,
    jitterTargetMs: variant.jitterTargetMs ?? null,
    testPattern,
    lossPercent,
    rttMs: path?.rttMs ?? null,
    frames: d('framesDecoded'),
    fps: round(d('framesDecoded') / (windowMs / 1000)),
    freezesPerMin: round(d('freezeCount') * perMin),
    freezeSPerMin: round(d('totalFreezesDuration') * perMin, 2),
    nacks: d('nackCount'),
    retransmitted: d('retransmittedPacketsReceived'),
    plis: d('pliCount'),
    keyFramesDecoded: d('keyFramesDecoded'),
    framesDropped: d('framesDropped'),
    packetsLost: d('packetsLost'),
    packetsReceived: d('packetsReceived'),
    fecReceived: d('fecPacketsReceived'),
    fecDiscarded: d('fecPacketsDiscarded'),
    jitterBufferMs: d('jitterBufferEmittedCount') > 0 ? Math.round((d('jitterBufferDelay') / d('jitterBufferEmittedCount')) * 1000) : null,
    kbps: Math.round((d('bytesReceived') * 8) / windowMs),
    // The agent's own counts for the whole view (not just the window).
    agent: totals ?? null,
  };
}

type FreezeRow = Awaited<ReturnType<typeof freezes>>;

const freezeTable = (rows: FreezeRow[]) =>
  markdownTable(
    ['picture', 'loss', 'sending', 'path RTT ms', 'fps decoded', 'freezes / min', 'frozen s / min', 'jitter buffer ms', 'NACKs', 'RTX packets', 'FEC packets received', 'PLIs', 'packets lost', 'kbit/s received'],
    rows.map((w) => [w.testPattern, `${w.lossPercent} %`, w.variant, w.rttMs ?? '-', w.fps, w.freezesPerMin, w.freezeSPerMin, w.jitterBufferMs ?? '-', w.nacks, w.retransmitted, w.fecReceived, w.plis, w.packetsLost, w.kbps]),
  );

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const moves = intFlag(flags, 'moves', 5);
  const windowMs = intFlag(flags, 'window-s', 60) * 1000;
  // --only freezes: skip (a), the address moves.
  const only = flags.get('only');
  // --variants 0,1: which of `variants` (default all); the baseline always runs.
  const chosen = (flags.get('variants') ?? variants.map((_, i) => i).join(','))
    .split(',')
    .map(Number)
    .filter((i) => variants[i] !== undefined);
  if (!chosen.includes(0)) chosen.unshift(0);
  if (process.getuid?.() !== 0) throw new Error('needs root: ip netns, iptables and tc');
  const rig = await createBadLinkRig({ turn: true });
  try {
    const runs = only === 'freezes' ? [] : await recovery(rig, moves);
    // The baseline and each option in the same run, alternating per picture, so other load on the
    // machine falls on all alike.
    const clean: FreezeRow[] = [];
    for (const i of [0, 1]) if (chosen.includes(i)) clean.push(await freezes(rig, windowMs, 0, 'snow', variants[i]!));
    const lossy: FreezeRow[] = [];
    for (const pattern of ['snow', 'ball'] as const) for (const i of chosen) lossy.push(await freezes(rig, windowMs, 3, pattern, variants[i]!));
    const rec = runs.length === 0 ? undefined : {
      totalMs: rounded(summarise(runs.map((r) => r.totalMs))),
      offerMs: rounded(summarise(runs.map((r) => r.offerMs))),
      answerMs: rounded(summarise(runs.map((r) => r.answerMs))),
      framesMs: rounded(summarise(runs.map((r) => r.framesMs))),
    };
    const machine = machineFacts((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v);
    const md = [
      '### Live view over a bad link: 640x360@15, agent in a network namespace, headless Chromium',
      '',
      ...(rec
        ? [
            `(a) Recovery after the camera's address changes mid-stream (${runs.length} moves; ICE restart signed both ways over MQTT; no new stream.start):`,
            '',
            markdownTable(
              ['step', 'p50 ms', 'p95 ms', 'min ms', 'max ms'],
              [
                ['address moved -> the camera\'s restart offer at the fleet (change noticed, broker reconnected, candidates gathered)', rec.offerMs.p50, rec.offerMs.p95, rec.offerMs.min, rec.offerMs.max],
                ['offer -> answer published (verify, Chromium answers, sign)', rec.answerMs.p50, rec.answerMs.p95, rec.answerMs.min, rec.answerMs.max],
                ['answer -> frames decoded again (ICE checks, keyframe)', rec.framesMs.p50, rec.framesMs.p95, rec.framesMs.min, rec.framesMs.max],
                ['**total: address moved -> video again**', rec.totalMs.p50, rec.totalMs.p95, rec.totalMs.min, rec.totalMs.max],
              ],
            ),
            '',
          ]
        : []),
      `(b) ${windowMs / 1000} s windows at 200 ms RTT through coturn (TURN forced), 0 % and 3 % random loss each way, "snow" (noise: every frame many packets) and "ball" (a calm scene, a packet or two per frame); per minute, from Chromium's stats. The baseline is NACK + RTX (stream.fec "off"): a frame missing a packet waits a round trip. Beside it in the same run: RED + ULPFEC (stream.fec "auto"), and each with the viewer's jitterBufferTarget at 400 ms (the console's setting):`,
      '',
      freezeTable([...clean, ...lossy]),
      '',
      `Machine: ${machineLine(machine)}. The agent, two x264 encoders, coturn and Chromium share 2 cores: single runs, expect noise.`,
    ].join('\n');
    writeResult(only === 'freezes' ? 'bad-link-freezes' : 'bad-link', { machine, moves: runs, recovery: rec, windowS: windowMs / 1000, freezes: [...clean, ...lossy], markdown: md });
    process.stdout.write(`${md}\n`);
  } finally {
    await rig.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bad-link bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
