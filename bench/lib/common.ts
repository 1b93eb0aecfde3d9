// Shared bits of the benchmarks: machine facts, percentiles, markdown tables, result files,
// argument parsing and a cleanup registry so a failed run leaves no process or temp dir behind.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const resultsDir = path.join(repoRoot, 'bench', 'results');

export interface MachineFacts {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  platform: string;
  kernel: string;
  node: string;
  mosquitto: string;
  sqlite: string;
  gitCommit: string;
  date: string;
}

export function machineFacts(sqliteVersion: string): MachineFacts {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.platform()} ${os.arch()}`,
    kernel: os.release(),
    node: process.version,
    mosquitto: tryRun('mosquitto', ['-h']).split('\n')[0]?.trim() ?? 'unknown',
    sqlite: sqliteVersion,
    gitCommit: tryRun('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']).trim() || 'unknown',
    date: new Date().toISOString(),
  };
}

function tryRun(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    // mosquitto -h exits 3 but prints its version on stdout.
    const out = (err as { stdout?: string }).stdout;
    return typeof out === 'string' ? out : '';
  }
}

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p95: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentiles. */
export function summarise(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
  const mean = sorted.reduce((s, v) => s + v, 0) / (sorted.length || 1);
  return { n: sorted.length, min: sorted[0] ?? NaN, p50: rank(50), p95: rank(95), max: sorted.at(-1) ?? NaN, mean };
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.map(String).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function machineLine(m: MachineFacts): string {
  return `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB, ${m.platform}, Node ${m.node}, ${m.mosquitto}, SQLite ${m.sqlite}, commit ${m.gitCommit}, ${m.date}`;
}

export function writeResult(name: string, result: object): string {
  mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}

/** `--name value` and `--flag` arguments. */
export function parseFlags(argv: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) continue;
    const eq = arg.indexOf('=');
    if (eq > 0) flags.set(arg.slice(2, eq), arg.slice(eq + 1));
    else if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) flags.set(arg.slice(2), argv[++i]!);
    else flags.set(arg.slice(2), 'true');
  }
  return flags;
}

export function intFlag(flags: Map<string, string>, name: string, dflt: number): number {
  const raw = flags.get(name);
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}: expected a positive whole number, got ${raw}`);
  return n;
}

// Cleanup registry: children are killed and temp dirs removed even when a run throws or the
// benchmark is interrupted.
const children = new Set<ChildProcess>();
const dirs = new Set<string>();

export function trackChild(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function trackDir(dir: string): string {
  dirs.add(dir);
  return dir;
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  dirs.delete(dir);
}

function cleanupNow(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

let installed = false;
export function installCleanup(): void {
  if (installed) return;
  installed = true;
  process.on('exit', cleanupNow);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      cleanupNow();
      process.exit(130);
    });
  }
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Epoch ms of the first JSON log line whose msg matches, from the agent's pino output. */
export function logTime(output: string, msg: string): number | undefined {
  for (const line of output.split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      const rec = JSON.parse(line) as { msg?: string; time?: string | number };
      if (rec.msg === msg && rec.time !== undefined) return typeof rec.time === 'number' ? rec.time : Date.parse(rec.time);
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

export function logRecord(output: string, msg: string): Record<string, unknown> | undefined {
  for (const line of output.split('\n')) {
    if (!line.includes(msg)) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec.msg === msg) return rec;
    } catch {
      // not a JSON line
    }
  }
  return undefined;
}

/** Runs a benchmark's main() when its file is the entry point; exit 0, or 1 naming the failure. */
export function runIfMain(name: string, moduleFile: string, main: (argv: string[]) => Promise<unknown>): void {
  if (!process.argv[1] || path.resolve(process.argv[1]) !== path.resolve(moduleFile)) return;
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    },
  );
}
