/// <reference lib="dom" />
// Issue 19's end-to-end acceptance for the console, with every component real: one agent (sim
// firmware backend, its buttons pressed with `bwc-agent ctl button`), mosquitto, the ops console
// process, headless Chromium. Watch-me: the wearer's double press -> the alert in the console ->
// one click on "Watch" -> the live view plays -> the camera's audit shows stream.start with reason
// officer-request, signed for that supervisor (and the misuse rule officer_request_unasked stays
// quiet: the camera's own officer.watch_me entry is behind it). Emergency: the wearer's hold ->
// the alert -> "Acknowledge" -> the agent's officer.emergency_acknowledged (shown in the console
// as who acknowledged) and the wearer's haptic pattern (the sim firmware's lastPattern in state);
// "Clear" ends it on the camera.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { agentBin, spawnAgent, tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { signInToConsole } from './helpers/console-page.ts';
import { startConsole } from './helpers/console-process.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const run = promisify(execFile);
const cam = 'cam-officer-e2e';

// One agent with a real x264 pipeline, the console and Chromium on a shared two-core machine: the
// waits below are hang guards, not speed checks.
t.setTimeout(300_000); // 92 s alone, 192 s with the other helpers loading the two cores (load average 30)

t.test('watch-me and emergency from the wearer\'s buttons to the console and back', async (t) => {
  const broker = await startBroker();
  const stateDir = await tempStateDir();
  const [console_, viewers, recorder] = await Promise.all([
    startConsole(broker.url, [{ user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] }]),
    ChromiumViewers.launch(),
    MqttRecorder.connect(broker.url, `bwc/v1/${cam}/#`),
  ]);
  // The camera trusts the console's issuer key (stream.start/stop, alert.ack, recording.bookmark).
  const config = await writeAgentConfig(stateDir, {
    commands: { trustStore: console_.trustStoreFile, unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
  });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: cam, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  t.teardown(async () => {
    await viewers.close();
    await agent.stop('SIGKILL');
    await recorder.close();
    await console_.stop();
    await broker.dispose();
  });
  type State = {
    online?: boolean; devicePublicKey?: object; capture?: { status: string } | null; firmware?: { linkUp: boolean; lastPattern: string | null };
    officer?: { emergency: null | { alertId: string; acknowledgedBy: string | null }; watchMe: null | { requestId: string } };
  };
  const state = () => recorder.on('state').at(-1)?.json as State | undefined;
  const events = (type: string) => recorder.on('event').filter((m) => m.json?.type === type).map((m) => m.json!);
  const ctl = (...args: string[]) => run(agentBin, ['ctl', ...args], { env: { ...process.env, BWC_STATE_DIR: stateDir } });

  await recorder.waitFor(() => state()?.online === true && state()?.capture?.status === 'running' && state()?.firmware?.linkUp === true, 90_000, 'the agent online, capturing, its sim firmware up');
  // A fleet admin pins the camera's key at issue; here it is taken from the agent's first state.
  await console_.enrol(cam, state()!.devicePublicKey!);

  const { page, errors } = await signInToConsole(viewers, { base: console_.url, user: 'sgt1', password: 'pw-1', camera: cam, timeoutMs: 60_000 });

  await t.test('watch-me -> alert -> one click -> live view playing, reason officer-request in the audit', async (t) => {
    await ctl('button', 'function', 'double');
    await recorder.waitFor(() => events('officer.watch_me').length > 0, 60_000, 'officer.watch_me');
    const { requestId } = events('officer.watch_me')[0]! as { requestId: string };
    const banner = page.getByTestId(`banner-${requestId}`);
    await banner.waitFor();
    t.match(await banner.textContent(), new RegExp(`${cam} asks to be watched`), 'the console shows the request at once');
    t.ok(Number(await page.getByTestId('officer-banner').getAttribute('data-beeps')) >= 1, 'with a sound');

    await banner.getByTestId(`watch-${requestId}`).click();
    await page.waitForFunction(() => (document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')?.currentTime ?? 0) > 0.5);
    t.pass('one click: the live view plays');
    await page.getByTestId(`officer-state-${requestId}`).filter({ hasText: 'Answered by sgt-0001' }).waitFor();
    await recorder.waitFor(() => state()?.officer?.watchMe === null, 30_000, 'the camera\'s watch-me answered');
    t.pass('the camera counts its watch-me as answered (state.officer.watchMe null)');

    // The camera's own audit, verified by the console with the pinned key.
    const row = page.locator('#audit tbody tr').filter({ hasText: 'stream.start' }).filter({ hasText: 'officer-request' });
    await row.first().waitFor();
    t.match(await row.first().textContent(), /sgt-0001/, 'the audit names the supervisor who clicked');
    await page.getByTestId('audit-status').filter({ hasText: 'Chain verified' }).waitFor();
    t.notOk(console_.log.some((l) => /officer_request_unasked/.test(l)), 'no officer_request_unasked: the officer asked (their signed officer.watch_me)');
    await page.getByTestId('stop-live').click();
    await page.locator('#viewer').waitFor({ state: 'hidden' });
  });

  await t.test('emergency -> alert -> acknowledge -> the agent\'s officer.emergency_acknowledged and the wearer\'s pattern', async (t) => {
    await ctl('button', 'function', 'hold');
    await recorder.waitFor(() => events('officer.emergency').length > 0, 60_000, 'officer.emergency');
    const { alertId } = events('officer.emergency')[0]! as { alertId: string };
    const banner = page.getByTestId(`banner-${alertId}`);
    await banner.waitFor();
    t.match(await banner.textContent(), new RegExp(`EMERGENCY: ${cam} \\(button\\)`));

    await banner.getByTestId(`officer-ack-${alertId}`).click();
    await page.getByTestId(`officer-state-${alertId}`).filter({ hasText: 'Acknowledged by sgt-0001' }).waitFor();
    t.match(events('officer.emergency_acknowledged').at(-1), { alertId, operator: 'sgt-0001' }, 'the agent published officer.emergency_acknowledged for the supervisor who clicked');
    await recorder.waitFor(() => state()?.firmware?.lastPattern === 'emergency-acknowledged' && state()?.officer?.emergency?.acknowledgedBy === 'sgt-0001', 30_000, 'the wearer\'s emergency-acknowledged pattern');
    t.pass('the wearer felt it: the sim firmware\'s lastPattern is emergency-acknowledged');

    await page.getByTestId(`officer-clear-${alertId}`).click();
    await page.getByTestId(`officer-state-${alertId}`).filter({ hasText: 'cleared by sgt-0001' }).waitFor();
    await recorder.waitFor(() => state()?.officer?.emergency === null, 30_000, 'the emergency ended on the camera');
    t.match(events('officer.emergency_cleared').at(-1), { alertId, by: 'operator', operator: 'sgt-0001' });
  });

  t.same(errors, [], 'no page errors');
});
