// The live view over a bad link (test/helpers/bad-link-rig.ts: the agent in its own network
// namespace, real GStreamer, real coturn, real Chromium):
//  (a) time to recover video after a network change: the camera's address is moved mid-stream,
//      --moves (5) times; from the move to the viewer decoding again, split into move -> the
//      camera's signed restart offer at the fleet, offer -> answer published (Chromium answers,
//      the fleet signs), answer -> frames again.
//  (b) freeze time per minute at 200 ms RTT (the UDP delay relay in front of coturn, TURN
//      forced), --window-s (60) seconds each, side by side: 0 % loss (the baseline) and 3 % random
//      loss each way; Chromium's own freezeCount and totalFreezesDuration.
// The picture is videotestsrc at 640x360@15: "snow", noise the encoder cannot compress, so every
// frame is many packets (the worst case for loss), and at 3 % loss also "ball", a calm scene.
// Writes bench/results/bad-link.json and a markdown table. Needs root (ip netns, iptables).
//
// Usage: node bench/bad-link.ts [--moves 5] [--window-s 60]
import Database from 'better-sqlite3';
import { createBadLinkRig, type Rig } from '../test/helpers/bad-link-rig.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, round, sleep, summarise, writeResult, type Summary } from './lib/common.ts';

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

async function freezes(rig: Rig, windowMs: number, lossPercent: number, testPattern: 'snow' | 'ball') {
  await rig.startAgent({ ice: rig.relayOnlyIce(await rig.delayedTurn(100)) }, { testPattern });
  const { viewer } = await rig.watch(rig.viewerTurn(), 1800);
  if (lossPercent > 0) await rig.net.setLoss({ percent: lossPercent, direction: 'both', protocol: 'udp' });
  await sleep(3000);
  const a = await viewer.inboundVideo();
  await sleep(windowMs);
  const b = await viewer.inboundVideo();
  const path = await viewer.selectedPath();
  await rig.net.clearLoss();
  await viewer.vanish();
  await rig.stopAgent();
  const perMin = 60_000 / windowMs;
  return {
    testPattern,
    lossPercent,
    rttMs: path?.rttMs ?? null,
    frames: b.framesDecoded - a.framesDecoded,
    fps: round((b.framesDecoded - a.framesDecoded) / (windowMs / 1000)),
    freezesPerMin: round((b.freezeCount - a.freezeCount) * perMin),
    freezeSPerMin: round((b.totalFreezesDuration - a.totalFreezesDuration) * perMin, 2),
    nacks: b.nackCount - a.nackCount,
    retransmitted: b.retransmittedPacketsReceived - a.retransmittedPacketsReceived,
    plis: b.pliCount - a.pliCount,
    packetsLost: b.packetsLost - a.packetsLost,
    kbps: Math.round(((b.bytesReceived - a.bytesReceived) * 8) / windowMs),
  };
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const moves = intFlag(flags, 'moves', 5);
  const windowMs = intFlag(flags, 'window-s', 60) * 1000;
  if (process.getuid?.() !== 0) throw new Error('needs root: ip netns, iptables and tc');
  const rig = await createBadLinkRig({ turn: true });
  try {
    const runs = await recovery(rig, moves);
    const clean = await freezes(rig, windowMs, 0, 'snow');
    const lossy = await freezes(rig, windowMs, 3, 'snow');
    const calm = await freezes(rig, windowMs, 3, 'ball');
    const rec = {
      totalMs: rounded(summarise(runs.map((r) => r.totalMs))),
      offerMs: rounded(summarise(runs.map((r) => r.offerMs))),
      answerMs: rounded(summarise(runs.map((r) => r.answerMs))),
      framesMs: rounded(summarise(runs.map((r) => r.framesMs))),
    };
    const machine = machineFacts((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v);
    const md = [
      '### Live view over a bad link: 640x360@15 "snow", agent in a network namespace, headless Chromium',
      '',
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
      `(b) ${windowMs / 1000} s windows at 200 ms RTT through coturn (TURN forced), 0 % (baseline) and 3 % random loss each way, "snow" (every frame many packets) and "ball" (a calm scene, a packet or two per frame); per minute, from Chromium's stats. Recovery is NACK + RTX (werift has no FEC): a frame missing a packet waits a round trip, which Chromium counts as a freeze at 15 fps and 200 ms RTT:`,
      '',
      markdownTable(
        ['picture', 'loss', 'path RTT ms', 'fps decoded', 'freezes / min', 'frozen s / min', 'NACKs', 'RTX packets', 'PLIs', 'packets lost', 'kbit/s received'],
        [clean, lossy, calm].map((w) => [w.testPattern, `${w.lossPercent} %`, w.rttMs ?? '-', w.fps, w.freezesPerMin, w.freezeSPerMin, w.nacks, w.retransmitted, w.plis, w.packetsLost, w.kbps]),
      ),
      '',
      `Machine: ${machineLine(machine)}. The agent, two x264 encoders, coturn and Chromium share 2 cores: single runs, expect noise.`,
    ].join('\n');
    writeResult('bad-link', { machine, moves: runs, recovery: rec, windowS: windowMs / 1000, freezes: [clean, lossy, calm], markdown: md });
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
