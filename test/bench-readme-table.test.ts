// The README's live-view goals table is written by make bench from bench/results
// (bench/lib/readme-table.ts): each row from the result file that measured it, dated by it, with the
// baseline the same run measured, and a verdict computed from the goal, never typed in.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { liveViewRows, renderTable, replaceTable, tableBegin, tableEnd, writeReadmeTable } from '../bench/lib/readme-table.ts';

const machine = (date: string, gitCommit = 'abc1234') => ({ date, gitCommit });
const mode = (p50: number, p95: number, roundsP50: number[]) => ({
  total: { n: 60, p50, p95 },
  steps: { reply: { p50: 80, p95: 200 }, dtls: { p50: 60, p95: 300 }, decode: { p50: 140, p95: 250 }, gather: { p50: 3, p95: 20 } },
  statsDecodedP50: p50 + 20,
  roundsP50,
});
const spread = (median: number, min: number, max: number) => ({ median, min, max, values: [min, median, max] });

function resultsDir(files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'readme-table-'));
  for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, `${name}.json`), JSON.stringify(data));
  return dir;
}

const stream = {
  machine: machine('2026-12-02T15:08:21.050Z', '958c9cf'),
  firstFrame: {
    warm: { 'gop-cache': mode(343, 907, [330, 389, 343]), 'keyframe-on-connect': mode(414, 1098, [386, 476, 344]) },
    cold: { 'gop-cache': mode(1361, 2540, [2540, 1163, 1361]), 'keyframe-on-connect': mode(1342, 2410, [573, 1342, 2410]) },
    turn: { 'gop-cache': mode(280, 400, [270, 290, 280]), 'keyframe-on-connect': mode(478, 981, [348, 454, 532]) },
  },
  cpuRounds: [{}, {}, {}],
  perViewer: [1, 2, 4].map((viewers) => ({
    viewers,
    ratioProcess: spread(0.92, 0.85, viewers === 1 ? 0.99 : 1.2),
    ratioJsThread: spread(1, 1, 1),
    agentJsThreadPct: spread(4.5, 4.1, 4.9),
    agentProcessPct: spread(4, 3.5, 4.5),
    webrtcbinOverEncodingPct: spread(4.4, 4.1, 4.8),
  })),
};

t.test('every goal is a row; a result file that is absent says which benchmark writes it', async (t) => {
  const rows = liveViewRows(resultsDir({}));
  t.equal(rows.length, 8, 'first frame warm, cold, TURN; RSS; shift; freezes; glass to glass; CPU');
  t.ok(rows.every((r) => r.verdict === 'not measured'));
  t.match(rows[0]!.measured, /not measured yet: bench\/stream\.ts/);
  t.match(rows.find((r) => r.figure.startsWith('frozen'))!.measured, /bench\/bad-link\.ts/);
});

t.test('first frame and CPU rows: figures, spreads, baseline and verdict from stream.json', async (t) => {
  const rows = liveViewRows(resultsDir({ stream }));
  const [warm, cold, turn] = rows;
  t.match(warm!.measured, /p50 343 ms, p95 907 ms/);
  t.match(warm!.measured, /round p50s 330, 389, 343\); to the first frame presented \(requestVideoFrameCallback presentationTime\); getStats' framesDecoded polled: p50 363 ms/);
  t.match(warm!.measured, /decode 140, reply 80, dtls 60/, 'the longest steps, what limits it');
  t.match(warm!.baseline, /keyframe-on-connect .*p50 414 ms, p95 1098 ms/);
  t.equal(warm!.verdict, 'not met');
  t.match(warm!.source, /^2026-12-02 15:08 UTC, commit 958c9cf, bench\/results\/stream\.json$/);
  t.equal(cold!.verdict, 'not met', 'any cold view over 500 ms');
  t.match(cold!.measured, /2540, 1163, 1361 ms/);
  t.equal(turn!.verdict, 'met', 'p50 280 <= 300');
  const cpu = rows.at(-1)!;
  t.match(cpu.measured, /ratio to webrtcbin: 1 viewer \*\*0\.92 \(0\.85–0\.99\)\*\*; 2 viewers \*\*0\.92 \(0\.85–1\.2\)\*\*/);
  t.match(cpu.measured, /1: \*\*4 \(3\.5–4\.5\)\*\*/);
  t.equal(cpu.verdict, 'not met', 'a round over 1.0x at 2 viewers: not stable under the goal');
});

t.test("CPU: webrtcbin's per-viewer cost at or below zero makes the ratio undefined, never a pass", async (t) => {
  const noisy = {
    ...stream,
    perViewer: [1, 2, 4].map((viewers) => ({
      viewers,
      ratioProcess: spread(-4.5, -14.5, 0.5),
      ratioJsThread: spread(-4, -12, 0.5),
      agentJsThreadPct: spread(3.2, 3, 3.4),
      agentProcessPct: spread(3, 2.8, 3.3),
      webrtcbinOverEncodingPct: spread(-0.2, -0.8, 0.6),
    })),
  };
  const cpu = liveViewRows(resultsDir({ stream: noisy })).at(-1)!;
  t.equal(cpu.verdict, 'not met', 'negative ratios are not "under 1.0x"');
  t.match(cpu.measured, /1 viewer undefined; 2 viewers undefined; 4 viewers undefined \(webrtcbin's per-viewer cost was at or below zero in some rounds at 1, 2, 4 viewer\(s\)/);
});

t.test('the newest of stream.json and stream-first-frame.json gives the first frame', async (t) => {
  const later = { ...stream, machine: machine('2026-12-03T02:00:00.000Z', 'def5678'), firstFrame: { ...stream.firstFrame, warm: { 'gop-cache': mode(140, 240, [139, 141, 140]), 'keyframe-on-connect': mode(300, 600, [300, 300, 300]) } } };
  const rows = liveViewRows(resultsDir({ stream, 'stream-first-frame': later }));
  t.equal(rows[0]!.verdict, 'met');
  t.match(rows[0]!.source, /2026-12-03 02:00 UTC, commit def5678, bench\/results\/stream-first-frame\.json/);
  t.match(rows.at(-1)!.source, /stream\.json/, 'the CPU row stays with the file that measured it');
});

t.test('freezes: options beside the NACK + RTX baseline; met only when one way keeps both pictures under 1 s/min', async (t) => {
  const f = (variant: string, testPattern: string, freezeSPerMin: number) => ({ variant, testPattern, lossPercent: 3, rttMs: 205, freezeSPerMin, freezesPerMin: 10 });
  const clean = { variant: 'baseline (NACK + RTX)', testPattern: 'snow', lossPercent: 0, rttMs: 205, freezeSPerMin: 0, freezesPerMin: 0 };
  const bad = {
    machine: machine('2026-12-02T11:39:29.709Z'),
    windowS: 20,
    freezes: [clean, f('baseline (NACK + RTX)', 'snow', 27.6), f('RED + ULPFEC', 'snow', 8.5), f('baseline (NACK + RTX)', 'ball', 9), f('RED + ULPFEC', 'ball', 0.5)],
  };
  let row = liveViewRows(resultsDir({ 'bad-link-freezes': bad })).find((r) => r.figure.startsWith('frozen'))!;
  t.match(row.measured, /RED \+ ULPFEC: \*\*calm 0\.5 s\/min, busy 8\.5 s\/min\*\*/);
  t.match(row.baseline, /baseline \(NACK \+ RTX\): calm 9 s\/min, busy 27\.6 s\/min/);
  t.equal(row.verdict, 'not met', 'calm under, busy over');
  bad.freezes[2] = f('RED + ULPFEC', 'snow', 0.9);
  row = liveViewRows(resultsDir({ 'bad-link-freezes': bad })).find((r) => r.figure.startsWith('frozen'))!;
  t.equal(row.verdict, 'met');
});

t.test('memory: RSS while the viewer watched and growth over the shift; a short run cannot meet the hour goal', async (t) => {
  const proc = (growthAfterWarmupMiB: number) => ({ growthAfterWarmupMiB, fdsMin: 31, fdsMax: 31, slopeWithoutViewerMiBPerHour: 0 });
  const samples = (agentKiB: number, workerKiB: number) => ({
    agent: [{ t: 1500, rssKiB: agentKiB, pssKiB: agentKiB / 2 }, { t: 1790, rssKiB: agentKiB, pssKiB: agentKiB / 2 }, { t: 3000, rssKiB: 1, pssKiB: 1 }],
    worker: [{ t: 1500, rssKiB: workerKiB, pssKiB: workerKiB / 2 }, { t: 1790, rssKiB: workerKiB, pssKiB: workerKiB / 2 }],
  });
  const shift = (minutes: number, growth: number) => ({
    machine: machine('2026-12-02T14:48:38.402Z', '554720f'),
    minutes,
    viewerMinutes: 30,
    results: [
      { variant: 'current', agent: proc(-3.3), worker: proc(growth), env: '' },
      { variant: 'baseline', agent: proc(-18), worker: proc(9.8), env: 'BWC_MEMORY_FLAGS=off' },
    ],
    samples: { current: samples(100 * 1024, 30 * 1024), baseline: samples(180 * 1024, 118 * 1024) },
  });
  let rows = liveViewRows(resultsDir({ 'shift-memory': shift(60, 8.1) }));
  const rss = rows.find((r) => r.figure.startsWith('RSS'))!;
  t.match(rss.measured, /\*\*136 MB RSS\*\* \(130 MiB; 65 MiB PSS/, 'the samples in the viewer\'s last 5 minutes only');
  t.equal(rss.verdict, 'met');
  t.match(rss.baseline, /312 MB RSS/);
  const grow = rows.find((r) => r.figure.startsWith('memory over a shift'))!;
  t.equal(grow.verdict, 'not met', 'worker 8.1 MiB');
  rows = liveViewRows(resultsDir({ 'shift-memory': shift(60, 2) }));
  t.equal(rows.find((r) => r.figure.startsWith('memory over a shift'))!.verdict, 'met');
  rows = liveViewRows(resultsDir({ 'shift-memory-short': { ...shift(8, 2), machine: machine('2026-12-03T01:00:00.000Z') } }));
  const short = rows.find((r) => r.figure.startsWith('memory over a shift'))!;
  t.equal(short.verdict, 'not met');
  t.match(short.figure, /8-minute run: too short/);
});

t.test('glass to glass: the plain rows are the figure, FEC the comparison', async (t) => {
  const row = (testPattern: string, fec: string, p50: number) => ({ testPattern, fec, frames: 200, totalMs: { p50, p95: p50 * 2 }, capturedToReceivedMs: { p50: 9 }, receivedToDisplayedMs: { p50: 68 } });
  const glass = { machine: machine('2026-12-02T11:11:09.392Z'), windowS: 20, rows: [row('ball', 'off', 90.4), row('ball', 'auto', 131.5), row('snow', 'off', 116.6)] };
  const g = liveViewRows(resultsDir({ 'glass-to-glass': glass })).find((r) => r.figure.startsWith('glass'))!;
  t.match(g.measured, /calm p50 90 ms, p95 181 ms .*busy p50 117 ms/);
  t.match(g.baseline, /RED \+ ULPFEC, same run: calm p50 132 ms/);
  t.equal(g.verdict, 'met');
});

t.test('the README between its markers is replaced and nothing else; a missing marker is named', async (t) => {
  const table = renderTable(liveViewRows(resultsDir({ stream })));
  t.match(table, /^\| figure \| goal \| measured \| baseline, same run \| verdict \|/);
  t.equal(table.split('\n').length, 2 + 8);
  const readme = `# x\n\nbefore\n${tableBegin}\nold table\n${tableEnd}\n\nafter\n`;
  const out = replaceTable(readme, table);
  t.ok(out.startsWith(`# x\n\nbefore\n${tableBegin}\n| figure`));
  t.ok(out.endsWith(`${tableEnd}\n\nafter\n`));
  t.notMatch(out, /old table/);
  t.equal(replaceTable(out, table), out, 'idempotent');
  t.throws(() => replaceTable('# x\n', table), /README\.md has no line "<!-- make bench: live view goals \(begin/);
  t.throws(() => replaceTable(`${tableBegin}\n`, table), /no line "<!-- make bench: live view goals \(end\) -->" after/);

  const dir = mkdtempSync(join(tmpdir(), 'readme-file-'));
  const file = join(dir, 'README.md');
  writeFileSync(file, readme);
  writeReadmeTable(file, resultsDir({ stream }), writeFileSync);
  t.match(readFileSync(file, 'utf8'), /p50 343 ms, p95 907 ms/);
});

t.test('the repository README holds the table as the results in bench/results write it', async (t) => {
  const root = new URL('../', import.meta.url).pathname;
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const expected = replaceTable(readme, renderTable(liveViewRows(join(root, 'bench', 'results'))));
  t.equal(readme, expected, 'README.md is out of date with bench/results: run `.runtime/node/bin/node bench/readme-table.ts`');
});
