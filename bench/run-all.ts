// Runs every benchmark, each in its own Node process (so one's heap and handles do not colour the
// next), then writes bench/results/summary.md with their tables and the README's live view goals
// table (bench/lib/readme-table.ts).
//
// Usage: node bench/run-all.ts [--runs N] [--messages N] [--configs 20:100,200:200] [--cpu-prof | --no-prof] [--preset test|rpi|v4l2]
//        [--short-shift] (the memory-over-a-shift run in 8 minutes instead of 60)
// (flags are passed on to the benchmark that knows them)
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { parseFlags, repoRoot, resultsDir } from './lib/common.ts';
import { writeReadmeTable } from './lib/readme-table.ts';

interface Bench {
  name: string;
  file: string;
  flags: string[];
  /** Always passed. */
  args?: string[];
}

const benches: Bench[] = [
  { name: 'startup', file: 'bench/startup.ts', flags: ['runs'] },
  { name: 'outbox-drain', file: 'bench/outbox-drain.ts', flags: ['messages', 'configs', 'timeout-s', 'cpu-prof', 'no-prof'] },
  { name: 'command-verify', file: 'bench/command-verify.ts', flags: [] },
  { name: 'rtp-guard', file: 'bench/rtp-guard.ts', flags: [] },
  { name: 'command-roundtrip', file: 'bench/command-roundtrip.ts', flags: ['runs'] },
  { name: 'capture', file: 'bench/capture.ts', flags: ['preset', 'seconds', 'requests'] },
  { name: 'encryption', file: 'bench/encryption.ts', flags: ['window-s', 'rounds'] },
  { name: 'stream', file: 'bench/stream.ts', flags: ['runs', 'rounds', 'turn-runs', 'window-s', 'cpu-viewers', 'cpu-rounds'] },
  { name: 'live-encoder', file: 'bench/live-encoder.ts', flags: ['window-s'] },
  { name: 'pi5-encoder', file: 'bench/pi5-encoder.ts', flags: ['frames', 'rounds'] },
  { name: 'bad-link', file: 'bench/bad-link.ts', flags: ['moves', 'window-s', 'variants'] },
  { name: 'glass-to-glass', file: 'bench/glass-to-glass.ts', flags: ['window-s', 'rounds'] },
  { name: 'offload', file: 'bench/offload.ts', flags: ['window-s'] },
  { name: 'update', file: 'bench/update.ts', flags: ['runs'] },
  { name: 'talkback', file: 'bench/talkback.ts', flags: ['rounds', 'talk-s', 'jitter'] },
  // The figure is a shift: 60 min recording, 30 of them with a viewer, the baseline beside it
  // (most of make bench's time). --short-shift: 8 minutes (4 with a viewer), too short for a slope.
  { name: 'shift-memory', file: 'bench/shift-memory.ts', flags: [] },
];
const shortShift: Bench = { name: 'shift-memory-short', file: 'bench/shift-memory.ts', flags: [], args: ['--short'] };

function run(file: string, args: string[]): Promise<number | null> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(repoRoot, file), ...args], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
    const forward = (sig: NodeJS.Signals) => child.kill(sig);
    process.once('SIGINT', forward);
    process.once('SIGTERM', forward);
    child.once('exit', (code) => {
      process.off('SIGINT', forward);
      process.off('SIGTERM', forward);
      resolve(code);
    });
  });
}

/** Warns when dist/ is older than src/: the agent benchmarks run the built agent. */
function staleBuild(): string | undefined {
  const main = path.join(repoRoot, 'dist', 'src', 'cli', 'main.js');
  if (!existsSync(main)) return 'dist/ is missing: run `make build` first';
  const built = statSync(main).mtimeMs;
  const newer: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && statSync(p).mtimeMs > built) newer.push(path.relative(repoRoot, p));
    }
  };
  walk(path.join(repoRoot, 'src'));
  return newer.length ? `src changed after the last build (${newer.slice(0, 5).join(', ')}): the figures are for the old dist/` : undefined;
}

async function main(argv: string[]): Promise<number> {
  const flags = parseFlags(argv);
  const started = performance.now();
  const stale = staleBuild();
  if (stale?.startsWith('dist/ is missing')) {
    process.stderr.write(`run-all: ${stale}\n`);
    return 2;
  }
  if (stale) process.stderr.write(`run-all: warning: ${stale}\n`);
  mkdirSync(resultsDir, { recursive: true });
  const sections: string[] = [];
  let failed = 0;
  const selected = flags.has('short-shift') ? benches.map((b) => (b.name === 'shift-memory' ? shortShift : b)) : benches;
  for (const bench of selected) {
    const args = [...(bench.args ?? [])].concat(...bench.flags.map((f) => {
      const v = flags.get(f);
      if (v === undefined) return [];
      return v === 'true' ? [`--${f}`] : [`--${f}`, v];
    }));
    process.stderr.write(`\n== ${bench.name} ==\n`);
    const t0 = performance.now();
    const code = await run(bench.file, args);
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    const resultFile = path.join(resultsDir, `${bench.name}.json`);
    if (code !== 0) {
      failed += 1;
      sections.push(`## ${bench.name}\n\nFAILED (exit ${String(code)}) after ${seconds} s; see the console output.`);
      continue;
    }
    const result = JSON.parse(readFileSync(resultFile, 'utf8')) as { markdown?: string };
    if (typeof result.markdown !== 'string') {
      failed += 1;
      sections.push(`## ${bench.name}\n\nFAILED: ${resultFile} has no markdown table.`);
      continue;
    }
    sections.push(`## ${bench.name} (${seconds} s)\n\n${result.markdown.replace(/^### /, '#### ')}\n\nRaw figures: bench/results/${bench.name}.json`);
  }
  const totalS = ((performance.now() - started) / 1000).toFixed(1);
  const summary = [
    '# bwc-agent benchmarks',
    '',
    `Written by \`scripts/bench.sh\` (bench/run-all.ts) on ${new Date().toISOString()}; total ${totalS} s.` +
      (stale ? ` Warning: ${stale}.` : ''),
    'Benchmarks measure and report; nothing here passes or fails on timing.',
    '',
    ...sections.flatMap((s) => [s, '']),
  ].join('\n');
  writeFileSync(path.join(resultsDir, 'summary.md'), summary);
  // The README's live-view goals table, from the result files (each row dated by its own file, so a
  // benchmark that failed here leaves its older row visibly older, not silently current).
  const rows = writeReadmeTable(path.join(repoRoot, 'README.md'), resultsDir, writeFileSync);
  const unmet = rows.filter((r) => r.verdict !== 'met').length;
  process.stdout.write(`\nrun-all: wrote bench/results/summary.md (${totalS} s) and README.md's live view goals table (${rows.length} rows, ${unmet} not met or not measured)\n`);
  return failed === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`run-all failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
