// The README's live-view goals table (issue 18), written from bench/results by `make bench`
// (bench/run-all.ts calls writeReadmeTable at its end; `node bench/readme-table.ts` does it alone
// after one benchmark was rerun). Each row is built from the newest result file that holds its
// figure and carries that file's date and commit, so a row measured on another day says so
// instead of passing for this run's. A figure with no result file yet is a row that says which
// benchmark writes it; nothing here is typed in by hand.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const tableBegin = '<!-- make bench: live view goals (begin; written by bench/lib/readme-table.ts from bench/results, do not edit by hand) -->';
export const tableEnd = '<!-- make bench: live view goals (end) -->';

export type Verdict = 'met' | 'not met' | 'not measured';

export interface GoalRow {
  figure: string;
  goal: string;
  measured: string;
  /** The baseline the same run measured beside it. */
  baseline: string;
  verdict: Verdict;
  /** "2026-12-02 15:08 UTC, commit 958c9cf, bench/results/stream.json" */
  source: string;
}

interface Machine {
  date: string;
  gitCommit: string;
}

interface Spread {
  median: number;
  min: number;
  max: number;
}

interface FirstFrameMode {
  total: { n: number; p50: number; p95: number };
  steps: Record<string, { p50: number; p95: number }>;
  /** Runs from 3 Dec: total is to the first frame presented; this is getStats' framesDecoded, for comparison. */
  statsDecodedP50?: number;
  /** Runs before 3 Dec: total was to getStats' framesDecoded; this the requestVideoFrameCallback. */
  presentedP50?: number | null;
  roundsP50: number[];
}

interface StreamResult {
  machine: Machine;
  firstFrame?: Partial<Record<'warm' | 'cold' | 'turn', Record<string, FirstFrameMode>>>;
  perViewer?: ({ viewers: number } & Record<'ratioJsThread' | 'ratioProcess' | 'agentJsThreadPct' | 'agentProcessPct' | 'webrtcbinOverEncodingPct', Spread>)[];
  cpuRounds?: unknown[];
}

interface FreezeRow {
  variant?: string;
  testPattern: 'snow' | 'ball';
  lossPercent: number;
  rttMs: number;
  freezeSPerMin: number;
  freezesPerMin: number;
}

interface BadLinkResult {
  machine: Machine;
  windowS: number;
  freezes: FreezeRow[];
}

interface GlassRow {
  testPattern: 'snow' | 'ball';
  fec: string;
  frames: number;
  totalMs: { p50: number; p95: number };
  capturedToReceivedMs: { p50: number };
  receivedToDisplayedMs: { p50: number };
}

interface ProcessFigures {
  growthAfterWarmupMiB: number;
  fdsMin: number;
  fdsMax: number;
  slopeWithoutViewerMiBPerHour: number;
}

interface Sample {
  t: number;
  rssKiB: number;
  pssKiB: number;
}

interface ShiftResult {
  machine: Machine;
  minutes: number;
  viewerMinutes: number;
  results: { variant: string; agent: ProcessFigures; worker: ProcessFigures; env: string }[];
  samples: Record<string, { agent: Sample[]; worker: Sample[] }>;
}

/** A result file's JSON, with its name; undefined when the file is absent. */
interface Loaded<T> {
  file: string;
  data: T;
}

function load<T>(dir: string, name: string): Loaded<T> | undefined {
  const file = path.join(dir, `${name}.json`);
  if (!existsSync(file)) return undefined;
  return { file: `bench/results/${name}.json`, data: JSON.parse(readFileSync(file, 'utf8')) as T };
}

function newest<T extends { machine: Machine }>(candidates: (Loaded<T> | undefined)[]): Loaded<T> | undefined {
  const present = candidates.filter((c): c is Loaded<T> => c !== undefined);
  return present.sort((a, b) => Date.parse(b.data.machine.date) - Date.parse(a.data.machine.date))[0];
}

function sourceOf(l: Loaded<{ machine: Machine }>, extra = ''): string {
  const d = new Date(l.data.machine.date);
  const when = Number.isNaN(d.getTime()) ? l.data.machine.date : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  return `${when}, commit ${l.data.machine.gitCommit}${extra}, ${l.file}`;
}

const ms = (v: number) => `${Math.round(v)} ms`;
const list = (values: number[]) => values.map((v) => Math.round(v)).join(', ');

function missing(figure: string, goal: string, how: string): GoalRow {
  return { figure, goal, measured: `not measured yet: ${how}`, baseline: '—', verdict: 'not measured', source: '—' };
}

/** What the total is measured to: how the bench saw the first frame (it changed on 3 Dec). */
function measuredTo(mode: FirstFrameMode): string {
  if (mode.statsDecodedP50 !== undefined) return `to the first frame presented (requestVideoFrameCallback presentationTime); getStats' framesDecoded polled: p50 ${Math.round(mode.statsDecodedP50)} ms`;
  return `to getStats' framesDecoded polled; first frame presented (requestVideoFrameCallback) p50 ${mode.presentedP50 ?? '—'} ms`;
}

/** The three steps that took longest at p50, the first frame's "what limits it". */
function topSteps(mode: FirstFrameMode): string {
  return Object.entries(mode.steps)
    .sort((a, b) => b[1].p50 - a[1].p50)
    .slice(0, 3)
    .map(([k, v]) => `${k} ${Math.round(v.p50)}`)
    .join(', ');
}

/** One first-frame row (warm, cold or TURN): the default mode measured beside keyframe-on-connect. */
function firstFrameRow(
  stream: Loaded<StreamResult> | undefined,
  kind: 'warm' | 'cold' | 'turn',
  figure: string,
  goal: string,
  how: string,
  judge: (g: FirstFrameMode, b: FirstFrameMode) => Pick<GoalRow, 'measured' | 'baseline' | 'verdict'>,
): GoalRow {
  const modes = stream?.data.firstFrame?.[kind];
  const g = modes?.['gop-cache'];
  const b = modes?.['keyframe-on-connect'];
  if (!stream || !g || !b) return missing(figure, goal, how);
  return { figure, goal, ...judge(g, b), source: sourceOf(stream) };
}

function firstFrameRows(stream: Loaded<StreamResult> | undefined): GoalRow[] {
  const how = 'bench/stream.ts';
  return [
    firstFrameRow(
      stream,
      'warm',
      'signed stream.start published → first decoded frame, loopback, views after a warm-up (`stream.firstFrame: gop-cache`, the default)',
      'p50 ≤ 150 ms, p95 ≤ 250 ms, three runs with their spread',
      how,
      (g, b) => ({
        measured: `**p50 ${ms(g.total.p50)}, p95 ${ms(g.total.p95)}** (${g.total.n} views; round p50s ${list(g.roundsP50)}); ${measuredTo(g)}; longest steps at p50: ${topSteps(g)} ms`,
        baseline: `keyframe-on-connect (the old way): p50 ${ms(b.total.p50)}, p95 ${ms(b.total.p95)}; round p50s ${list(b.roundsP50)}`,
        verdict: g.total.p50 <= 150 && g.total.p95 <= 250 ? 'met' : 'not met',
      }),
    ),
    firstFrameRow(stream, 'cold', 'the first view after agent start-up (cold), one per round', '≤ 500 ms', how, (g, b) => ({
      measured: `**${list(g.roundsP50)} ms**; longest steps at p50: ${topSteps(g)} ms`,
      baseline: `keyframe-on-connect: ${list(b.roundsP50)} ms`,
      verdict: g.roundsP50.every((v) => v <= 500) ? 'met' : 'not met',
    })),
    firstFrameRow(stream, 'turn', 'the same through TURN only (coturn on loopback, relay policy on both ends)', 'p50 ≤ 300 ms', `${how} (without --turn-runs 0)`, (g, b) => ({
      measured: `**p50 ${ms(g.total.p50)}**, p95 ${ms(g.total.p95)} (${g.total.n} views; round p50s ${list(g.roundsP50)}); gather ${Math.round(g.steps.gather?.p50 ?? NaN)}, DTLS ${Math.round(g.steps.dtls?.p50 ?? NaN)} ms at p50; longest: ${topSteps(g)} ms`,
      baseline: `keyframe-on-connect: p50 ${ms(b.total.p50)}, p95 ${ms(b.total.p95)}`,
      verdict: g.total.p50 <= 300 ? 'met' : 'not met',
    })),
  ];
}

function cpuRow(stream: Loaded<StreamResult> | undefined): GoalRow {
  const figure = 'live view CPU per viewer, agent process against GStreamer webrtcbin (same source, encoder and Chromium), (cost(N) − cost(0)) / N';
  const goal = '≤ 1.0x at 1, 2 and 4 viewers, stable across three runs';
  const pv = stream?.data.perViewer;
  if (!stream || !pv?.length) return missing(figure, goal, 'bench/stream.ts');
  const rounds = stream.data.cpuRounds?.length ?? 0;
  const show = (sp: Spread) => `${sp.median} (${sp.min}–${sp.max})`;
  // A ratio is only a figure when webrtcbin's own per-viewer cost was above zero in every round:
  // it is a small difference of two larger numbers (its encoding alone is ~15 % of a core) and can
  // come out at or below zero, which would make any agent cost look "within the goal".
  const undefinedRatio = pv.filter((r) => r.webrtcbinOverEncodingPct.min <= 0);
  const ratios = pv.map((r) => `${r.viewers} viewer${r.viewers === 1 ? '' : 's'} ${r.webrtcbinOverEncodingPct.min <= 0 ? 'undefined' : `**${show(r.ratioProcess)}**`}`).join('; ');
  return {
    figure,
    goal,
    measured:
      `agent process, % of a core per viewer, median (min–max) over ${rounds} rounds: ${pv.map((r) => `${r.viewers}: **${show(r.agentProcessPct)}**`).join('; ')}; ratio to webrtcbin: ${ratios}` +
      (undefinedRatio.length ? ` (webrtcbin's per-viewer cost was at or below zero in some rounds at ${undefinedRatio.map((r) => r.viewers).join(', ')} viewer(s): below what this method resolves)` : ''),
    baseline: `webrtcbin over its encoding, % each: ${pv.map((r) => `${r.viewers}: ${show(r.webrtcbinOverEncodingPct)}`).join('; ')}`,
    verdict: undefinedRatio.length === 0 && pv.every((r) => r.ratioProcess.max <= 1.0) ? 'met' : 'not met',
    source: sourceOf(stream),
  };
}

function freezeRow(bad: Loaded<BadLinkResult> | undefined): GoalRow {
  const figure = 'frozen time per minute at 200 ms RTT, 3 % loss each way, TURN forced, 640x360@15 (Chromium\'s totalFreezesDuration)';
  const goal = '≤ 1 s/min, calm and busy picture';
  const lossy = bad?.data.freezes.filter((f) => f.lossPercent === 3) ?? [];
  if (!bad || lossy.length === 0) return missing(figure, goal, 'bench/bad-link.ts (root)');
  const byVariant = new Map<string, FreezeRow[]>();
  for (const f of lossy) {
    const v = f.variant ?? 'baseline (NACK + RTX)';
    byVariant.set(v, [...(byVariant.get(v) ?? []), f]);
  }
  const describe = (rows: FreezeRow[]) =>
    (['ball', 'snow'] as const)
      .map((p) => rows.find((r) => r.testPattern === p))
      .filter((r): r is FreezeRow => r !== undefined)
      .map((r) => `${r.testPattern === 'ball' ? 'calm' : 'busy'} ${r.freezeSPerMin} s/min`)
      .join(', ');
  const baselineName = [...byVariant.keys()].find((k) => k.startsWith('baseline')) ?? [...byVariant.keys()][0]!;
  const options = [...byVariant.entries()].filter(([k]) => k !== baselineName);
  const shown = options.length ? options : [[baselineName, byVariant.get(baselineName)!] as const];
  return {
    figure,
    goal,
    measured: shown.map(([k, rows]) => `${k}: **${describe(rows)}**`).join('; ') + ` (${bad.data.windowS} s windows)`,
    baseline: `${baselineName}: ${describe(byVariant.get(baselineName)!)}`,
    // Met when some way of sending (the options or the baseline) keeps both pictures under the goal.
    verdict: [...byVariant.values()].some((rows) => rows.length >= 2 && rows.every((r) => r.freezeSPerMin <= 1)) ? 'met' : 'not met',
    source: sourceOf(bad),
  };
}

function glassRow(glass: Loaded<{ machine: Machine; windowS: number; rows: GlassRow[] }> | undefined): GoalRow {
  const figure = 'glass to glass: captured (time drawn into the frame) → displayed in Chromium, no impairment';
  const goal = 'measured, p50 ≤ 150 ms';
  const rows = glass?.data.rows ?? [];
  const plain = rows.filter((r) => r.fec === 'off');
  if (!glass || plain.length === 0) return missing(figure, goal, 'bench/glass-to-glass.ts (root)');
  const describe = (r: GlassRow) =>
    `${r.testPattern === 'ball' ? 'calm' : 'busy'} p50 ${ms(r.totalMs.p50)}, p95 ${ms(r.totalMs.p95)} (to Chromium's receipt ${ms(r.capturedToReceivedMs.p50)}, receipt → display ${ms(r.receivedToDisplayedMs.p50)})`;
  const fec = rows.filter((r) => r.fec !== 'off');
  return {
    figure,
    goal,
    measured: plain.map((r) => `**${describe(r)}**`).join('; '),
    baseline: fec.length ? `with RED + ULPFEC, same run: ${fec.map((r) => `${r.testPattern === 'ball' ? 'calm' : 'busy'} p50 ${ms(r.totalMs.p50)}`).join(', ')}` : '—',
    verdict: plain.every((r) => r.totalMs.p50 <= 150) ? 'met' : 'not met',
    source: sourceOf(glass),
  };
}

/** Mean RSS (or PSS) of agent + worker over the last five minutes the viewer watched, MiB. */
function withViewerMiB(shift: ShiftResult, variant: string, key: 'rssKiB' | 'pssKiB'): number {
  const s = shift.samples[variant];
  if (!s) return NaN;
  const end = shift.viewerMinutes * 60;
  const window = (xs: Sample[]) => xs.filter((x) => x.t > end - 300 && x.t <= end);
  const mean = (xs: Sample[]) => xs.reduce((a, x) => a + x[key], 0) / (xs.length || NaN);
  return (mean(window(s.agent)) + mean(window(s.worker))) / 1024;
}

function memoryRows(full: Loaded<ShiftResult> | undefined, short: Loaded<ShiftResult> | undefined): GoalRow[] {
  const shift = newest([full, short]);
  const figureRss = 'RSS of the agent + capture worker, 720p30 2 Mbit/s, recording and streaming to one viewer (mean of the viewer\'s last 5 minutes)';
  const figureShift = 'memory over a shift: recording 1 h, a viewer for 30 min of it; RSS growth after a 5 min warm-up, open fds';
  const current = shift?.data.results.find((r) => r.variant === 'current');
  const baseline = shift?.data.results.find((r) => r.variant === 'baseline');
  if (!shift || !current || !baseline) return [missing(figureRss, '≤ 150 MB together', 'bench/shift-memory.ts'), missing(figureShift, '≤ 5 MB per process, fds flat', 'bench/shift-memory.ts')];
  const rss = withViewerMiB(shift.data, 'current', 'rssKiB');
  const pss = withViewerMiB(shift.data, 'current', 'pssKiB');
  const mb = (mib: number) => Math.round((mib * 2 ** 20) / 1e6);
  const note = shift.data.minutes < 60 ? ` (a ${shift.data.minutes}-minute run: too short for the goal's hour)` : '';
  const fdFlat = (p: ProcessFigures) => p.fdsMax - p.fdsMin <= 2;
  const procLine = (p: ProcessFigures) => `${p.growthAfterWarmupMiB} MiB (slope without a viewer ${p.slopeWithoutViewerMiBPerHour} MiB/h), fds ${p.fdsMin}-${p.fdsMax}`;
  return [
    {
      figure: figureRss,
      goal: '≤ 150 MB together',
      measured: `**${mb(rss)} MB RSS** (${Math.round(rss)} MiB; ${Math.round(pss)} MiB PSS: RSS counts the node binary's shared pages in each process)`,
      baseline: `old launch (\`BWC_MEMORY_FLAGS=off\`): ${mb(withViewerMiB(shift.data, 'baseline', 'rssKiB'))} MB RSS`,
      verdict: mb(rss) <= 150 ? 'met' : 'not met',
      source: sourceOf(shift, `, ${shift.data.minutes} min`),
    },
    {
      figure: figureShift + note,
      goal: '≤ 5 MB per process, fds flat',
      measured: `agent **${procLine(current.agent)}**; worker **${procLine(current.worker)}**`,
      baseline: `old launch: agent ${procLine(baseline.agent)}; worker ${procLine(baseline.worker)}`,
      verdict:
        shift.data.minutes >= 60 && [current.agent, current.worker].every((p) => p.growthAfterWarmupMiB * 2 ** 20 <= 5e6 && fdFlat(p)) ? 'met' : 'not met',
      source: sourceOf(shift, `, ${shift.data.minutes} min`),
    },
  ];
}

/** Every live-view goal of issue 18 as a row, from what bench/results holds. */
export function liveViewRows(dir: string): GoalRow[] {
  const full = load<StreamResult>(dir, 'stream');
  const stream = newest([full, load<StreamResult>(dir, 'stream-first-frame')]);
  // --cpu-only writes stream-cpu.json; the full run writes both parts into stream.json.
  const cpu = newest([full, load<StreamResult>(dir, 'stream-cpu')].filter((l) => l?.data.perViewer?.length));
  const bad = newest([load<BadLinkResult>(dir, 'bad-link'), load<BadLinkResult>(dir, 'bad-link-freezes')].filter((l) => l?.data.freezes.some((f) => f.lossPercent === 3)));
  return [
    ...firstFrameRows(stream),
    ...memoryRows(load<ShiftResult>(dir, 'shift-memory'), load<ShiftResult>(dir, 'shift-memory-short')),
    freezeRow(bad),
    glassRow(load(dir, 'glass-to-glass')),
    cpuRow(cpu),
  ];
}

export function renderTable(rows: GoalRow[]): string {
  const esc = (s: string) => s.replaceAll('|', '\\|').replaceAll('\n', ' ');
  const lines = [
    '| figure | goal | measured | baseline, same run | verdict | when, commit, raw figures |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${[r.figure, r.goal, r.measured, r.baseline, r.verdict === 'met' ? '**met**' : r.verdict, r.source].map(esc).join(' | ')} |`),
  ];
  return lines.join('\n');
}

/** The README with the text between the two markers replaced; throws naming a missing marker. */
export function replaceTable(readme: string, table: string): string {
  const begin = readme.indexOf(tableBegin);
  const end = readme.indexOf(tableEnd);
  if (begin < 0) throw new Error(`README.md has no line "${tableBegin}": put it (and the end marker) where the table goes`);
  if (end < begin) throw new Error(`README.md has no line "${tableEnd}" after the begin marker`);
  return `${readme.slice(0, begin + tableBegin.length)}\n${table}\n${readme.slice(end)}`;
}

/** Rewrites the README's table in place from the result files; returns the rows written. */
export function writeReadmeTable(readmeFile: string, dir: string, write: (file: string, text: string) => void): GoalRow[] {
  const rows = liveViewRows(dir);
  const before = readFileSync(readmeFile, 'utf8');
  const after = replaceTable(before, renderTable(rows));
  if (after !== before) write(readmeFile, after);
  return rows;
}
