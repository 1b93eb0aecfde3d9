// `make demo`'s main job, as a reviewer would check it: the demo's own broker shows the retained
// online state and GPS positions from the replayed log (bu353s4.log, near 37.78 S 175.31 E).
import { spawn } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { repoRoot } from './helpers/agent-process.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

t.test('the demo publishes online state and the replayed positions', async (t) => {
  // A fresh demo folder, as on a first run (no device key, no database yet).
  const demoDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-demo-'));
  const demo = spawn(path.join(repoRoot, 'scripts', 'demo.sh'), [], {
    env: { ...process.env, DEMO_SECONDS: '85', BWC_DEVICE_ID: 'demo-test-cam', DEMO_DIR: demoDir },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  demo.stdout.on('data', (d: Buffer) => (output += d.toString()));
  demo.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => demo.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (demo.exitCode === null) process.kill(-demo.pid!, 'SIGTERM');
  });
  const deadline = Date.now() + 20_000;
  while (!/demo: broker\s+mqtt:\/\/127\.0\.0\.1:\d+/.test(output) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const url = /demo: broker\s+(mqtt:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
  t.ok(url, `the demo prints its broker (${url})`);
  if (!url) return;
  await new Promise((r) => setTimeout(r, 1000));
  const recorder = await MqttRecorder.connect(url, 'bwc/v1/demo-test-cam/#');
  t.teardown(() => recorder.close());
  await recorder.waitFor(() => recorder.on('state').some((m) => m.retain && m.json?.online === true), 20_000, 'retained online state');
  // The state carries the latest fix at once; the gps channel publishes on the embedded
  // default cadence (every 60 s when not recording), so the first one may take that long.
  await recorder.waitFor(() => recorder.on('state').some((m) => (m.json?.gps as { fix?: string } | null)?.fix === '3d'), 30_000, 'state with a fix');
  await recorder.waitFor(() => recorder.on('gps').some((m) => m.json?.fix !== 'no-fix'), 75_000, 'a gps message with a position');
  const fix = recorder.on('gps').find((m) => m.json?.fix !== 'no-fix')!.json!;
  t.ok(Math.abs(Number(fix.lat) + 37.78) < 0.05 && Math.abs(Number(fix.lon) - 175.31) < 0.05, `position ${String(fix.lat)}, ${String(fix.lon)}`);
  process.kill(-demo.pid!, 'SIGINT'); // Ctrl-C
  t.equal(await exited, 0, 'Ctrl-C stops the demo cleanly');
  t.match(output, /bwc-agent stopped/);
});
