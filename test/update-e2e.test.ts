// agent.update end to end, with real bundles built by the project (scripts/dist-host.sh and
// versions of it), the real agent run from `<releasesDir>/current` under a supervisor that
// restarts it as systemd does, the unit's boot check (ExecStartPre, from `committed`) before each
// start, a real mosquitto, and a loopback HTTP server with Range support:
//   1. a good update (0.1.0 -> 0.2.0) whose download is cut part way: resumed, installed, restarted,
//      committed once online and capturing;
//   2. a release built to exit at start (0.3.0): after update.maxFailedStarts failed starts the
//      boot check puts 0.2.0 back, which audits the rollback; the camera is online again;
//   3. a release that starts and connects but never captures (0.4.0): not healthy within
//      update.healthTimeout, it switches back to 0.2.0 itself and exits for the restart.
import t from 'tap';
import { mkdtempSync, readlinkSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { commandClaims, envelope, makeIssuer, signToken, writeTrustStore } from './helpers/command-tokens.ts';
import { FleetClient } from './helpers/fleet-client.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';
import { hostBundle, installBase, startReleaseServer, variantBundle } from './helpers/release-bundles.ts';
import { ServiceSupervisor } from './helpers/service-supervisor.ts';
import { releaseKeygen, signRelease } from '../src/cli/release-tools.ts';

const deviceId = 'cam-update';

const base = await hostBundle();
const good = await variantBundle(base, '0.2.0');
const broken = await variantBundle(base, '0.3.0', { exitAtStart: true });
const noCapture = await variantBundle(base, '0.4.0', { noCapture: true });

const work = mkdtempSync(path.join(os.tmpdir(), 'bwc-update-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const releasesDir = path.join(work, 'releases');
installBase(releasesDir, base);
const releaseKey = await releaseKeygen(path.join(work, 'release-key'));
const issuer = await makeIssuer();
const stateDir = await tempStateDir();
t.teardown(() => rmSync(stateDir, { recursive: true, force: true }));

const broker = await startBroker();
const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
const fleet = await FleetClient.connect(broker.url);
const server = await startReleaseServer({ 'good.tar.gz': good, 'broken.tar.gz': broken, 'no-capture.tar.gz': noCapture });
const agentConfig = (healthTimeout: number) =>
  writeAgentConfig(stateDir, {
    commands: { trustStore: writeTrustStore(stateDir, [issuer]), unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
    update: { releasesDir, releaseKeys: releaseKey.publicFile, minVersion: '0.1.0', healthTimeout, maxFailedStarts: 2 },
  });
const config = await agentConfig(90);
const supervisor = new ServiceSupervisor({
  args: ['run', '--config', config],
  env: { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' },
  command: [path.join(releasesDir, 'current', 'bin', 'bwc-agent')],
  execStartPre: [path.join(releasesDir, 'committed', 'bin', 'bwc-agent'), 'update', 'boot-check', '--config', config],
  // The unit's StartLimitBurst=5 in 5 min holds one update and its rollback (at most 2 +
  // update.maxFailedStarts starts, docs/operations.md); the three updates here, a minute apart,
  // make 8 starts, which systemd would only allow after a `systemctl reset-failed`.
  policy: { restartSecMs: 200, startLimitBurst: 10 },
});
t.teardown(async () => {
  await supervisor.dispose();
  await fleet.close();
  await recorder.close();
  await server.close();
  await broker.dispose();
});

const events = (type: string) => recorder.on('event').filter((m) => m.json?.type === type);
const audited = (type: string) => recorder.on('audit').filter((m) => m.payload.includes(`"type":"${type}"`));
const onlineAs = (version: string) => () => {
  const last = recorder.on('state').at(-1)?.json;
  return last?.online === true && last.agentVersion === version && (last.capture as { status?: string } | null)?.status === 'running';
};
/** recorder.waitFor, failing with the last agent run's output and the supervisor's events. */
async function waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
  try {
    await recorder.waitFor(pred, timeoutMs, what);
  } catch (err) {
    throw new Error(`${(err as Error).message}\nsupervisor: ${JSON.stringify(supervisor.events.filter((e) => e.type !== 'watchdog'))}\nlast run:\n${supervisor.runs.at(-1)?.output.slice(-4000) ?? ''}`);
  }
}
const link = (name: string) => readlinkSync(path.join(releasesDir, name));

async function sendUpdate(bundle: string, name: string, version: string) {
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle, url: server.url(name), version });
  const claims = commandClaims({ issuer, deviceId, action: 'agent.update', overrides: { release } });
  return fleet.request(deviceId, envelope(signToken({ issuer, claims })));
}

await supervisor.start();
await waitFor(onlineAs(base.version), 90_000, `release ${base.version} online and capturing`);

t.test('a good update, its download cut part way: resumed, installed, restarted, committed', async (t) => {
  const cutAt = 4 * 1024 * 1024;
  server.cutNext('good.tar.gz', cutAt);
  const reply = await sendUpdate(good, 'good.tar.gz', '0.2.0');
  t.match(reply, { ok: true, status: 'downloading', version: '0.2.0' }, 'accepted');
  await waitFor(() => events('update.committed').some((m) => m.json?.version === '0.2.0'), 180_000, 'update.committed 0.2.0');
  await waitFor(onlineAs('0.2.0'), 60_000, 'release 0.2.0 online and capturing');
  t.equal(link('current'), '0.2.0', 'current is 0.2.0');
  t.equal(link('committed'), '0.2.0', 'committed is 0.2.0');
  const cut = events('update.download_cut');
  t.equal(cut.length, 1, 'the cut download was reported once');
  const requests = server.requests.filter((r) => r.path === 'good.tar.gz');
  t.equal(requests.length, 2, 'two requests: the cut one and the resumed one');
  const installed = events('update.installed').at(-1)?.json as { resumedFrom: number } | undefined;
  t.match(installed, { version: '0.2.0', previous: base.version }, 'installed');
  const resumedFrom = installed?.resumedFrom ?? 0;
  // What reached the camera before the cut; the bytes in flight when the socket was destroyed are
  // the only ones sent twice.
  t.ok(resumedFrom > 0 && resumedFrom <= cutAt, `resumed from ${resumedFrom} of the ${cutAt} bytes sent before the cut`);
  t.equal(requests[1]?.range, `bytes=${resumedFrom}-`, 'the second request asked for the rest only');
  const size = statSync(good).size;
  const resent = (server.sent.get('good.tar.gz') ?? 0) - size;
  t.equal(resent, cutAt - resumedFrom, `bytes sent twice: ${resent} of ${size}`);
  t.ok(audited('update.committed').length > 0, 'the commit is audited');
  const exit = supervisor.events.find((e) => e.type === 'exit');
  t.match(exit, { code: 75, willRestart: true }, 'the agent exited with the restart status and was restarted');
});

t.test('a release built to exit at start is rolled back by the boot check', async (t) => {
  const fromEvent = supervisor.events.length;
  const reply = await sendUpdate(broken, 'broken.tar.gz', '0.3.0');
  t.match(reply, { ok: true, version: '0.3.0' }, 'accepted');
  await waitFor(() => events('update.rolled_back').some((m) => m.json?.version === '0.3.0'), 180_000, 'update.rolled_back 0.3.0');
  await waitFor(onlineAs('0.2.0'), 60_000, 'release 0.2.0 online again');
  const rolledBack = events('update.rolled_back').at(-1)?.json;
  t.match(rolledBack, { version: '0.3.0', previous: '0.2.0', running: '0.2.0', reason: /started 2 time\(s\) without coming up healthy/ }, 'why, in the event');
  t.ok(audited('update.rolled_back').length > 0, 'and in the audit trail');
  t.equal(link('current'), '0.2.0', 'current is back on 0.2.0');
  t.equal(link('committed'), '0.2.0', 'committed never moved');
  const failedStarts = supervisor.events.slice(fromEvent).filter((e) => e.type === 'exit' && e.code === 1);
  t.equal(failedStarts.length, 2, 'the broken release was started twice (update.maxFailedStarts) and exited 1 each time');
  t.notOk(supervisor.events.some((e) => e.type === 'failed'), 'the service never gave up (StartLimitBurst)');
});

t.test('a release that never becomes healthy puts the previous one back itself (update.healthTimeout)', async (t) => {
  // Read by the next release at its start: a short trial for this one.
  await agentConfig(15);
  const fromEvent = supervisor.events.length;
  const reply = await sendUpdate(noCapture, 'no-capture.tar.gz', '0.4.0');
  t.match(reply, { ok: true, version: '0.4.0' }, 'accepted');
  await waitFor(() => events('update.rolled_back').some((m) => m.json?.version === '0.4.0'), 180_000, 'update.rolled_back 0.4.0');
  await waitFor(onlineAs('0.2.0'), 60_000, 'release 0.2.0 online again');
  t.match(events('update.reverting').at(-1)?.json, { version: '0.4.0', previous: '0.2.0', reason: /not online with the capture running within update\.healthTimeout 15 s/ }, 'the new release said why it went back');
  t.match(events('update.rolled_back').at(-1)?.json, { version: '0.4.0', running: '0.2.0' }, 'and the previous one audited the rollback');
  t.equal(link('current'), '0.2.0');
  t.equal(link('committed'), '0.2.0');
  const exits = supervisor.events.slice(fromEvent).filter((e) => e.type === 'exit');
  t.match(exits, [{ code: 75 }, { code: 75 }], 'two restarts: into 0.4.0, and out of it');
});
