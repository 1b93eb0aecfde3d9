// The memory settings of issue 18 stay where they were put: the launcher the systemd unit runs
// (bin/bwc-agent: V8's young generation capped, two glibc arenas), the capture worker's launch
// (src/capture/supervisor.ts: the same for its node) and the worker itself (transparent huge pages
// off). Losing one of them costs the board 10-30 MB without any test noticing otherwise; what each
// saves is measured by bench/shift-memory.ts. BWC_MEMORY_FLAGS=off (the benchmark's baseline)
// turns them all off. No timing: each check reads what the process was started with.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';
import pino from 'pino';
import t, { type Test } from 'tap';
import { captureConfigSchema } from '../src/capture/config.ts';
import { CaptureSupervisor, workerMemoryFlags, type CaptureHealth } from '../src/capture/supervisor.ts';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const logger = pino({ level: 'silent' });
const gstAvailable = spawnSync('gst-inspect-1.0', ['x264enc'], { stdio: 'ignore' }).status === 0;
const expectedAgentFlags = ['--max-semi-space-size=1'];

/**
 * Runs the real bin/bwc-agent from a scratch app folder whose node is a stub that prints its
 * arguments and the variables it was given: what systemd's ExecStart ends up executing.
 */
async function launcherRun(t: Test, env: Record<string, string>): Promise<{ args: string[]; mallocArenaMax: string }> {
  const app = await mkdtemp(path.join(os.tmpdir(), 'bwc-launcher-'));
  t.teardown(() => rm(app, { recursive: true, force: true }));
  mkdirSync(path.join(app, 'bin'));
  mkdirSync(path.join(app, 'node', 'bin'), { recursive: true });
  mkdirSync(path.join(app, 'dist', 'src', 'cli'), { recursive: true });
  copyFileSync(path.join(repoRoot, 'bin', 'bwc-agent'), path.join(app, 'bin', 'bwc-agent'));
  chmodSync(path.join(app, 'bin', 'bwc-agent'), 0o755);
  writeFileSync(path.join(app, 'dist', 'src', 'cli', 'main.js'), '');
  const stub = path.join(app, 'node', 'bin', 'node');
  writeFileSync(stub, '#!/bin/sh\nprintf "%s\\n" "$@"\nprintf "MALLOC_ARENA_MAX=%s\\n" "${MALLOC_ARENA_MAX-unset}"\n');
  chmodSync(stub, 0o755);
  const base = { ...process.env };
  delete base.MALLOC_ARENA_MAX;
  delete base.BWC_MEMORY_FLAGS;
  const r = spawnSync(path.join(app, 'bin', 'bwc-agent'), ['run', '--config', '/etc/bwc-agent/config.yaml'], { encoding: 'utf8', env: { ...base, ...env } });
  t.equal(r.status, 0, `the launcher ran: ${r.stderr}`);
  const lines = r.stdout.trimEnd().split('\n');
  return { args: lines.slice(0, -1), mallocArenaMax: lines.at(-1)!.slice('MALLOC_ARENA_MAX='.length) };
}

t.test('the systemd unit runs the launcher and keeps its memory settings', async (t) => {
  const unit = readFileSync(path.join(repoRoot, 'systemd', 'bwc-agent.service'), 'utf8');
  const execStart = /^ExecStart=(\S+)/m.exec(unit)?.[1];
  t.equal(execStart, '/opt/bwc-agent/releases/current/bin/bwc-agent', 'ExecStart runs bin/bwc-agent, which sets the flags');
  const environment = [...unit.matchAll(/^Environment=(.*)$/gm)].map((m) => m[1]!);
  for (const name of ['BWC_MEMORY_FLAGS', 'NODE_OPTIONS']) {
    t.notOk(
      environment.some((e) => e.startsWith(`${name}=`) || e.includes(` ${name}=`)),
      `the unit does not set ${name} (it would switch the launcher's settings off or fight them)`,
    );
  }
  const arena = environment.find((e) => e.startsWith('MALLOC_ARENA_MAX='));
  if (arena) t.equal(arena, 'MALLOC_ARENA_MAX=2', 'a MALLOC_ARENA_MAX in the unit is the measured one');
});

t.test('bin/bwc-agent starts node with the V8 and glibc memory settings', async (t) => {
  const on = await launcherRun(t, {});
  t.same(on.args.slice(0, expectedAgentFlags.length), expectedAgentFlags, `node flags before main.js: ${on.args.join(' ')}`);
  t.match(on.args[expectedAgentFlags.length], /dist\/src\/cli\/main\.js$/, 'then the agent');
  t.same(on.args.slice(-3), ['run', '--config', '/etc/bwc-agent/config.yaml'], 'then its own arguments, untouched');
  t.equal(on.mallocArenaMax, '2', 'MALLOC_ARENA_MAX=2 (the capture worker inherits it too)');

  const kept = await launcherRun(t, { MALLOC_ARENA_MAX: '4' });
  t.equal(kept.mallocArenaMax, '4', "an administrator's own MALLOC_ARENA_MAX is kept");

  const off = await launcherRun(t, { BWC_MEMORY_FLAGS: 'off' });
  t.notOk(off.args.some((a) => a.startsWith('--max-')), 'BWC_MEMORY_FLAGS=off: no V8 flags (the old launch)');
  t.equal(off.mallocArenaMax, 'unset', 'BWC_MEMORY_FLAGS=off: glibc left at its default');
});

t.test('the worker launcher passes its own memory settings', async (t) => {
  t.same(workerMemoryFlags({}), { nodeArgs: ['--max-semi-space-size=1'], env: { MALLOC_ARENA_MAX: '2' } });
  t.same(workerMemoryFlags({ BWC_MEMORY_FLAGS: 'off' }), { nodeArgs: [], env: {} }, 'off: the old launch');

  // A stand-in worker that answers `start` with what its node was started with, as a pipeline error
  // (the supervisor reports it as the fault's reason): the real spawn, argv and environment.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-memflags-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const worker = path.join(dir, 'report-worker.mjs');
  writeFileSync(
    worker,
    "process.on('message', (m) => { if (m.type === 'start') process.send({ type: 'error', message: JSON.stringify({ execArgv: process.execArgv, arena: process.env.MALLOC_ARENA_MAX ?? null }) }, () => process.exit(1)); });\n",
  );
  const saved = { flags: process.env.BWC_MEMORY_FLAGS, arena: process.env.MALLOC_ARENA_MAX };
  t.teardown(() => {
    for (const [k, v] of [['BWC_MEMORY_FLAGS', saved.flags], ['MALLOC_ARENA_MAX', saved.arena]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  const launchOnce = async (): Promise<{ execArgv: string[]; arena: string | null }> => {
    // Generous start bounds: on a loaded machine node itself may take seconds to come up, and the
    // supervisor would otherwise kill the stand-in before it answers.
    const sup = new CaptureSupervisor({
      settings: captureConfigSchema.parse({ restartMinDelayMs: 60_000, restartMaxDelayMs: 60_000, stallTimeoutS: 600 }),
      segmentDir: dir,
      logger,
      workerPath: worker,
      startTimeoutMs: 120_000,
    });
    const fault = once(sup, 'fault');
    await sup.start();
    const [{ reason }] = (await fault) as [{ reason: string }];
    await sup.stop();
    return JSON.parse(reason) as { execArgv: string[]; arena: string | null };
  };
  delete process.env.BWC_MEMORY_FLAGS;
  delete process.env.MALLOC_ARENA_MAX;
  const on = await launchOnce();
  t.ok(on.execArgv.includes('--max-semi-space-size=1'), `the worker's node runs with --max-semi-space-size=1: ${on.execArgv.join(' ')}`);
  t.equal(on.arena, '2', 'and MALLOC_ARENA_MAX=2');
  process.env.BWC_MEMORY_FLAGS = 'off';
  const off = await launchOnce();
  t.notOk(off.execArgv.some((a) => a.startsWith('--max-semi-space-size')), 'BWC_MEMORY_FLAGS=off: none');
  t.equal(off.arena, null, 'BWC_MEMORY_FLAGS=off: no MALLOC_ARENA_MAX');
});

const thpReported = /^THP_enabled:/m.test(readFileSync('/proc/self/status', 'utf8'));

t.test('the real capture worker runs with transparent huge pages off', { skip: (!gstAvailable && 'GStreamer not installed') || (!thpReported && 'this kernel does not report THP_enabled') }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-memthp-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  delete process.env.BWC_MEMORY_FLAGS;
  const sup = new CaptureSupervisor({ settings: captureConfigSchema.parse({ width: 320, height: 240, framerate: 10, bitrateKbps: 300 }), segmentDir: dir, logger });
  t.teardown(() => sup.stop());
  const running = new Promise<CaptureHealth>((resolve) => {
    const on = (h: CaptureHealth) => {
      if (h.status !== 'running') return;
      sup.off('state', on);
      resolve(h);
    };
    sup.on('state', on);
  });
  await sup.start();
  const { pid } = await running;
  // `running` follows the worker's `ready`, sent once its pipeline plays: after the prctl.
  t.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^THP_enabled:\s+0$/m, 'prctl(PR_SET_THP_DISABLE) took effect in the worker');
});
