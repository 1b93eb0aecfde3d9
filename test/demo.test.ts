// `make demo` as a reviewer and a supervisor would check it: the demo's broker shows the retained
// online state and GPS positions from the replayed log (bu353s4.log, near 37.78 S 175.31 E), and
// the ops console it prints, driven in a real headless Chromium, signs a supervisor in, shows both
// cameras, plays an authorised live view, stops it, shows the audit with a verified chain, and
// shows a camera's refusal in words.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { repoRoot } from './helpers/agent-process.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

// Four whole demos one after another (the console in Chromium, then three ways to stop it), each
// waiting on events with hang guards of a minute or more: more than the suite's 300 s per file on
// a loaded machine. A hang guard, not a speed check.
t.setTimeout(900_000);

t.test('the demo: telemetry on the broker, and the ops console in Chromium', async (t) => {
  // A fresh demo folder, as on a first run (no device key, no database yet).
  const demoDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-demo-'));
  const demo = spawn(path.join(repoRoot, 'scripts', 'demo.sh'), [], {
    // A small picture: two cameras encode and Chromium decodes on the machine's two cores.
    // DEMO_SECONDS is a hang guard only: the test ends the demo with Ctrl-C. (It was 170 s, and this
    // test takes ~150 s on a quiet machine: a loaded one could see the demo end by itself first.)
    env: { ...process.env, DEMO_SECONDS: '900', BWC_DEVICE_ID: 'demo-test-cam', BWC_DEVICE2_ID: 'demo-test-cam-2', DEMO_DIR: demoDir, DEMO_CAPTURE: '640x360@15' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  demo.stdout.on('data', (d: Buffer) => (output += d.toString()));
  demo.stderr.on('data', (d: Buffer) => (output += d.toString()));
  // 'close', not 'exit': the agents' log printers may still be writing the last lines when the script
  // exits, and the output is matched below.
  const closed = new Promise<number | null>((resolve) => demo.once('close', (code) => resolve(code)));
  t.teardown(() => {
    if (demo.exitCode === null) process.kill(-demo.pid!, 'SIGTERM');
  });
  const deadline = Date.now() + 90_000; // a hang guard: on a loaded machine the demo may take a minute to come up
  while (!/demo: console\s+http:\/\/127\.0\.0\.1:\d+\//.test(output) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const url = /demo: broker\s+(mqtt:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
  const consoleUrl = /demo: console\s+(http:\/\/127\.0\.0\.1:\d+\/)/.exec(output)?.[1];
  t.ok(url, `the demo prints its broker (${url})`);
  t.ok(consoleUrl, `the demo prints its console (${consoleUrl})`);
  if (!url || !consoleUrl) return;
  const recorder = await MqttRecorder.connect(url, 'bwc/v1/demo-test-cam/#');
  t.teardown(() => recorder.close());
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 60_000, 'online state').catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; demo output:\n${output.slice(-3000)}`);
  });
  // Subscribed before or after the agent's first publish: a new subscriber must get it retained.
  const late = await MqttRecorder.connect(url, 'bwc/v1/demo-test-cam/state');
  await late.waitFor(() => late.on('state').some((m) => m.retain && m.json?.online === true), 10_000, 'retained online state');
  await late.close();
  t.pass('the online state is retained');

  await t.test('the ops console', async (t) => {
    const viewers = await ChromiumViewers.launch();
    t.teardown(() => viewers.close());
    const page = (await viewers.open()).page;
    page.setDefaultTimeout(30_000);
    await page.setViewportSize({ width: 1440, height: 900 });
    await page.goto(consoleUrl);

    await page.getByTestId('login-user').fill('demo');
    await page.getByTestId('login-password').fill('not-the-password');
    await page.getByTestId('login-submit').click();
    await page.getByTestId('login-error').waitFor({ state: 'visible' });
    t.match(await page.getByTestId('login-error').textContent(), /wrong user name or password/, 'a wrong password is refused');
    await page.getByTestId('login-password').fill('demo-password');
    await page.getByTestId('login-submit').click();

    for (const id of ['demo-test-cam', 'demo-test-cam-2']) {
      await page.getByTestId(`camera-${id}`).waitFor({ state: 'visible' });
      t.pass(`camera ${id} listed`);
    }
    await page.getByTestId('camera-demo-test-cam').click();
    await page.getByTestId('reason-select').selectOption('public-safety');
    await page.getByTestId('request-live').click();
    const video = page.getByTestId('live-video');
    await page.waitForFunction(() => {
      const v = document.querySelector<HTMLVideoElement>('[data-testid="live-video"]');
      return v !== null && v.videoWidth > 0 && v.currentTime > 0.5;
    });
    const first = await video.evaluate((v: HTMLVideoElement) => ({ width: v.videoWidth, time: v.currentTime }));
    await page.waitForFunction((t0) => (document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')?.currentTime ?? 0) > t0 + 1, first.time);
    t.equal(first.width, 640, 'the live view plays the camera\'s picture (videoWidth 640)');
    t.pass('and its currentTime advances');
    await mkdir(path.join(repoRoot, '.tap'), { recursive: true });
    // docs/ops-console.png is a copy of this one (the test does not write into docs/).
    await page.screenshot({ path: path.join(repoRoot, '.tap', 'ops-console-live.png'), fullPage: true });

    await page.getByTestId('stop-live').click();
    await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.streaming !== undefined && (recorder.on('state').at(-1)!.json!.streaming as { sessions: number }).sessions === 0, 20_000, 'the camera has no live view');
    await recorder.waitFor(() => recorder.on('audit').some((m) => (m.json?.entry as { type?: string } | undefined)?.type === 'stream.stop'), 20_000, 'stream.stop audited');
    const audit = recorder.on('audit').map((m) => m.json?.entry as { type?: string; operator?: string } | undefined);
    t.ok(audit.some((e) => e?.type === 'command.decision' && e.operator === 'sgt-demo'), 'the camera\'s audit names the signed-in operator');
    await page.waitForFunction(() => {
      const rows = document.body.innerText;
      return /stream\.start/.test(rows) && /stream\.stop/.test(rows) && /verified/i.test(document.querySelector('[data-testid="audit-status"]')?.textContent ?? '');
    });
    t.match(await page.getByTestId('audit-status').textContent(), /verified/i, 'the audit view shows start and stop with a verified chain');

    await page.getByTestId('reason-select').selectOption('training-exercise');
    await page.getByTestId('request-live').click();
    await page.getByTestId('live-error').waitFor({ state: 'visible' });
    t.match(await page.getByTestId('live-error').textContent(), /not allowed on this camera/, 'a reason the camera does not allow: its refusal in words');
  });

  // The state carries the latest fix at once; the gps channel publishes on the embedded
  // default cadence (every 60 s when not recording), so the first one may take that long.
  await recorder.waitFor(() => recorder.on('state').some((m) => (m.json?.gps as { fix?: string } | null)?.fix === '3d'), 30_000, 'state with a fix');
  await recorder.waitFor(() => recorder.on('gps').some((m) => m.json?.fix !== 'no-fix'), 75_000, 'a gps message with a position');
  const fix = recorder.on('gps').find((m) => m.json?.fix !== 'no-fix')!.json!;
  t.ok(Math.abs(Number(fix.lat) + 37.78) < 0.05 && Math.abs(Number(fix.lon) - 175.31) < 0.05, `position ${String(fix.lat)}, ${String(fix.lon)}`);
  process.kill(-demo.pid!, 'SIGINT'); // Ctrl-C
  t.equal(await closed, 0, 'Ctrl-C stops the demo cleanly');
  t.match(output, /bwc-agent stopped/);
});

// Issue 14, finding 9: whatever ends the demo ends all of it. A demo stopped by a closed terminal or
// a process manager must not leave its broker, gpsd replays, console or cameras running (encoding
// video, holding their ports). Each case starts the demo with its own DEMO_DIR; every process the
// demo starts, however deep (gpsfake's gpsd, the agents' capture workers, the log printers),
// inherits that environment, so /proc tells which are still alive without trusting the script's own
// bookkeeping.
const demoScript = path.join(repoRoot, 'scripts', 'demo.sh');

interface RunningDemo {
  child: ChildProcess;
  dir: string;
  readonly output: string;
  waitForOutput(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
}

function startDemo(t: Test, dir: string, how: 'pipes' | 'terminal'): RunningDemo {
  const env = { ...process.env, DEMO_DIR: dir, DEMO_CAPTURE: '320x240@10', BWC_DEVICE_ID: 'demo-stop-cam', BWC_DEVICE2_ID: 'demo-stop-cam-2' };
  // `script` (util-linux) is the terminal: it runs the demo on a new pty as its controlling
  // terminal, the way a terminal emulator runs a shell; killing it closes the pty's master side.
  const [command, args] = how === 'terminal' ? ['script', ['-qfec', demoScript, '/dev/null']] : [demoScript, []];
  const child = spawn(command, args as string[], { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  const listeners = new Set<() => void>();
  const collect = (d: Buffer) => {
    output += d.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  // Whatever a failed case leaves behind must not outlive the test (its ports would shift the next demo's).
  t.teardown(() => {
    for (const p of demoProcesses(dir)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
  });
  return {
    child,
    dir,
    get output() {
      return output;
    },
    waitForOutput(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(output);
          if (!match) return;
          clearTimeout(timer);
          listeners.delete(check);
          resolve(match);
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`the demo did not print ${pattern} within ${timeoutMs} ms; output:\n${output.slice(-3000)}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
  };
}

/** Every live process whose environment carries this demo's DEMO_DIR (zombies have none). */
function demoProcesses(dir: string): { pid: number; command: string }[] {
  const tag = `DEMO_DIR=${dir}\0`;
  const found: { pid: number; command: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/environ`, 'latin1').includes(tag)) continue;
      found.push({ pid: Number(entry), command: readFileSync(`/proc/${entry}/cmdline`, 'latin1').replaceAll('\0', ' ').trim() });
    } catch {
      /* ended while we looked */
    }
  }
  return found;
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Up: the ready lines printed, and both cameras online on the demo's broker with a capture worker running. */
async function waitUntilUp(demo: RunningDemo): Promise<number[]> {
  const ready = await demo.waitForOutput(/demo: console\s+http:\/\/127\.0\.0\.1:(\d+)\//, 60_000);
  const out = demo.output;
  const mqttPort = Number(/demo: broker\s+mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
  const gpsd = /demo: gpsd\s+127\.0\.0\.1:(\d+) replaying \S+, 127\.0\.0\.1:(\d+)/.exec(out)!;
  const recorder = await MqttRecorder.connect(`mqtt://127.0.0.1:${mqttPort}`, 'bwc/v1/+/state');
  try {
    const capturing = (device: string) => {
      const last = recorder.messages.filter((m) => m.topic === `bwc/v1/${device}/state`).at(-1)?.json;
      return last?.online === true && (last.capture as { status?: string } | undefined)?.status === 'running';
    };
    await recorder.waitFor(() => capturing('demo-stop-cam') && capturing('demo-stop-cam-2'), 60_000, 'both cameras online and capturing').catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; demo output:\n${demo.output.slice(-3000)}`);
    });
  } finally {
    await recorder.close();
  }
  return [mqttPort, Number(gpsd[1]), Number(gpsd[2]), Number(ready[1])];
}

/** Resolves when no process of the demo is left and none of its ports answers; fails naming the survivors. */
async function waitAllGone(t: Test, demo: RunningDemo, ports: number[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = demoProcesses(demo.dir);
    const open: number[] = [];
    for (const port of ports) if (await portAnswers(port)) open.push(port);
    if (left.length === 0 && open.length === 0) {
      t.pass(`every process the demo started has ended and its ports ${ports.join(', ')} are free`);
      return;
    }
    if (Date.now() > deadline) {
      t.fail(`${timeoutMs / 1000} s after the demo was stopped, ${left.length} of its processes still run and ports [${open.join(', ')}] still answer`, {
        left: left.map((p) => `${p.pid} ${p.command.slice(0, 120)}`),
        output: demo.output.slice(-2000),
      });
      return;
    }
    // A poll of /proc, bounded by the deadline: a process's end has no event a non-parent can wait on.
    await new Promise((r) => setTimeout(r, 200));
  }
}

t.test('whatever ends the demo ends all of it', async (t) => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'bwc-demo-stop-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));

  await t.test('a closed terminal: the pty hangs up (SIGHUP) and can no longer be written to', async (t) => {
    const demo = startDemo(t, path.join(base, 'terminal'), 'terminal');
    const ports = await waitUntilUp(demo);
    t.ok(demoProcesses(demo.dir).length >= 8, 'the demo runs its processes');
    demo.child.kill('SIGKILL'); // the terminal window closes
    await waitAllGone(t, demo, ports);
  });

  await t.test('a process manager: SIGTERM after it stopped reading the demo\'s output', async (t) => {
    const demo = startDemo(t, path.join(base, 'manager'), 'pipes');
    const ports = await waitUntilUp(demo);
    demo.child.stdout!.destroy();
    demo.child.stderr!.destroy();
    process.kill(demo.child.pid!, 'SIGTERM');
    await waitAllGone(t, demo, ports);
  });

  await t.test('SIGHUP to the whole process group, and a second signal while the demo stops', async (t) => {
    const demo = startDemo(t, path.join(base, 'group'), 'pipes');
    const ports = await waitUntilUp(demo);
    // 'close': the demo and every holder of its output (the agents' log printers) are done.
    const closed = new Promise<void>((resolve) => demo.child.once('close', () => resolve()));
    process.kill(-demo.child.pid!, 'SIGHUP');
    await demo.waitForOutput(/demo: stopping/, 30_000);
    process.kill(-demo.child.pid!, 'SIGINT'); // an impatient Ctrl-C
    await closed;
    await waitAllGone(t, demo, ports);
    t.equal(demo.output.match(/bwc-agent stopped/g)?.length ?? 0, 2, 'both cameras stopped themselves (stopped first, not killed)', { output: demo.output.slice(-2500) });
  });
});
