// Smoke test of the whole arm64 bundle under qemu-user (scripts/test-arm64.sh runs it; not part of
// tap's test/**/*.test.ts). This harness runs natively; everything of the agent runs emulated from
// the unpacked bundle named by BWC_ARM64_BUNDLE: its node, its built dist/, its arm64 addons, and the
// capture worker (the `test` preset on the arm64 GStreamer plugins), started through
// capture.workerLauncher = ["qemu-aarch64-static"] because no binfmt handler is registered. The
// broker is the host's own (x86) mosquitto on 127.0.0.1.
// Checked: the online state reaches the broker, a 5 s recording is made, `evidence verify` (run
// by the bundle, emulated) passes, and the clean stop publishes the offline state.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { spawnAgent, tempStateDir } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { startBroker } from '../helpers/mosquitto.ts';
import { MqttRecorder } from '../helpers/mqtt-recorder.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const qemu = 'qemu-aarch64-static';

const bundle = process.env.BWC_ARM64_BUNDLE;
if (!bundle || !existsSync(path.join(bundle, 'node', 'bin', 'node'))) {
  // Fails rather than skips: run without a bundle this test has checked nothing.
  throw new Error(`BWC_ARM64_BUNDLE must name an unpacked arm64 bundle (scripts/test-arm64.sh sets it); got ${bundle}`);
}
const agentCommand = [qemu, path.join(bundle, 'node', 'bin', 'node'), path.join(bundle, 'dist', 'src', 'cli', 'main.js')];
// Emulation is ~5-10x slower than native: every wait is a generous hang guard, never a timing check.
const slow = 180_000;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(agentCommand[0]!, [...agentCommand.slice(1), ...args], { timeout: slow });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = slow): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

interface Status {
  recording: boolean;
  capture: { status: string; pid: number | null } | null;
}

t.test('the arm64 agent, emulated: online at a native broker, a 5 s recording that verifies', async (t) => {
  const deviceId = 'cam-arm64';
  const broker = await startBroker();
  const stateDir = await tempStateDir('bwc-arm64-');
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  // stallTimeoutS 60 (default 10): an emulated x264 pipeline may take longer than 10 s to produce
  // its first frames on a loaded machine, and a stall restart would only slow the test down.
  const config = await writeAgentConfig(stateDir, {
    capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, workerLauncher: [qemu], stallTimeoutS: 60 },
  });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' }, agentCommand);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await recorder.close();
    await broker.dispose();
  });

  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), slow, 'the online state at the broker');
  const online = recorder.on('state').find((m) => m.json?.online === true)!;
  t.equal(online.json?.deviceId, deviceId, 'retained online state reached the native broker');

  const status = async () => JSON.parse((await cli(['ctl', 'status', '--state-dir', stateDir])).stdout) as Status;
  await until('capture running', async () => (await status()).capture?.status === 'running');
  const pid = (await status()).capture?.pid;
  t.ok(pid, `capture worker running (pid ${pid})`);
  // The worker is the emulator running the bundle's arm64 node: what workerLauncher + process.execPath made.
  t.equal(path.basename(readlinkSync(`/proc/${pid}/exe`)), qemu, 'the worker process is qemu-aarch64-static');
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  t.equal(argv[1], path.join(bundle, 'node', 'bin', 'node'), "its program is the bundle's arm64 node (process.execPath under qemu-user)");

  t.equal((await cli(['ctl', 'record', 'start', '--state-dir', stateDir])).code, 0, 'ctl record start');
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.recording === true), slow, 'recording in the state');
  await sleep(5000);
  t.equal((await cli(['ctl', 'record', 'stop', '--state-dir', stateDir])).code, 0, 'ctl record stop');
  await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.recording === false, slow, 'not recording in the state');

  // The guard timer is unref'd so it cannot keep this process alive once the agent has exited.
  const stopped = await Promise.race([
    agent.stop('SIGTERM'),
    new Promise<{ code: number }>((resolve) => setTimeout(() => resolve({ code: -1 }), slow).unref()),
  ]);
  t.equal(stopped.code, 0, 'clean stop (SIGTERM): exit 0');
  await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.online === false, 30_000, 'the offline state').catch((err: Error) => {
    // What the broker sent last and how the agent stopped, so a failure here can be diagnosed from CI's log.
    throw new Error(`${err.message}; last state: ${recorder.on('state').at(-1)?.payload}; agent log tail:\n${agent.output.slice(-4000)}`);
  });
  t.pass('offline state published on the clean stop');

  const root = path.join(stateDir, 'evidence', 'recordings');
  const dirs = await readdir(root);
  t.equal(dirs.length, 1, 'one recording folder');
  const segments = (await readdir(path.join(root, dirs[0]!))).filter((f) => f.endsWith('.ts.age'));
  t.ok(segments.length >= 2, `segments written (${segments.length})`);
  const verify = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(verify.code, 0, `evidence verify (arm64, emulated) passes: ${verify.stdout.trim().split('\n').at(-1)}`);
});
