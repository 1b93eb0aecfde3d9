// `make demo` as a reviewer and a supervisor would check it: the demo's broker shows the retained
// online state and GPS positions from the replayed log (bu353s4.log, near 37.78 S 175.31 E), and
// the ops console it prints, driven in a real headless Chromium, signs a supervisor in, shows both
// cameras, plays an authorised live view, stops it, shows the audit with a verified chain, and
// shows a camera's refusal in words.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { repoRoot } from './helpers/agent-process.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

t.test('the demo: telemetry on the broker, and the ops console in Chromium', async (t) => {
  // A fresh demo folder, as on a first run (no device key, no database yet).
  const demoDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-demo-'));
  const demo = spawn(path.join(repoRoot, 'scripts', 'demo.sh'), [], {
    // A small picture: two cameras encode and Chromium decodes on the machine's two cores.
    env: { ...process.env, DEMO_SECONDS: '170', BWC_DEVICE_ID: 'demo-test-cam', BWC_DEVICE2_ID: 'demo-test-cam-2', DEMO_DIR: demoDir, DEMO_CAPTURE: '640x360@15' },
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
  const deadline = Date.now() + 30_000;
  while (!/demo: console\s+http:\/\/127\.0\.0\.1:\d+\//.test(output) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const url = /demo: broker\s+(mqtt:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1];
  const consoleUrl = /demo: console\s+(http:\/\/127\.0\.0\.1:\d+\/)/.exec(output)?.[1];
  t.ok(url, `the demo prints its broker (${url})`);
  t.ok(consoleUrl, `the demo prints its console (${consoleUrl})`);
  if (!url || !consoleUrl) return;
  const recorder = await MqttRecorder.connect(url, 'bwc/v1/demo-test-cam/#');
  t.teardown(() => recorder.close());
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 30_000, 'online state').catch((err: unknown) => {
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
  t.equal(await exited, 0, 'Ctrl-C stops the demo cleanly');
  t.match(output, /bwc-agent stopped/);
});
