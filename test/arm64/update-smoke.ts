// agent.update on the arm64 bundle under qemu-user (scripts/test-arm64.sh runs it, natively, like
// agent-smoke.ts): the unpacked bundle named by BWC_ARM64_BUNDLE is installed as the first release;
// a copy of it with another version, packed as make dist-arm64 packs it, is offered by a loopback
// HTTP server and signed with a release key. The agent (emulated, under the test supervisor with
// the boot check before each start, both run from the releases folder's symlinks) downloads,
// verifies, unpacks and switches `current`, exits 75, is started again as the new release, and
// commits it once online with its (emulated) capture running.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { tempStateDir } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { commandClaims, envelope, makeIssuer, signToken, writeTrustStore } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { startBroker } from '../helpers/mosquitto.ts';
import { MqttRecorder } from '../helpers/mqtt-recorder.ts';
import { startReleaseServer } from '../helpers/release-bundles.ts';
import { ServiceSupervisor } from '../helpers/service-supervisor.ts';
import { releaseKeygen, signRelease } from '../../src/cli/release-tools.ts';

const run = promisify(execFile);
const qemu = 'qemu-aarch64-static';
const bundle = process.env.BWC_ARM64_BUNDLE;
if (!bundle || !existsSync(path.join(bundle, 'node', 'bin', 'node'))) {
  throw new Error(`BWC_ARM64_BUNDLE must name an unpacked arm64 bundle (scripts/test-arm64.sh sets it); got ${bundle}`);
}
// Emulation is slow: every wait is a generous hang guard, never a timing check.
const slow = 300_000;

t.test('the arm64 agent, emulated, installs and starts an update and commits it', async (t) => {
  const deviceId = 'cam-arm64-update';
  const baseVersion = (JSON.parse(readFileSync(path.join(bundle, 'package.json'), 'utf8')) as { version: string }).version;
  const work = mkdtempSync(path.join(os.tmpdir(), 'bwc-arm64-update-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const releasesDir = path.join(work, 'releases');
  mkdirSync(releasesDir);
  symlinkSync(bundle, path.join(releasesDir, baseVersion));
  for (const link of ['current', 'committed']) symlinkSync(baseVersion, path.join(releasesDir, link));

  // The new release: the same bundle with version 0.98.0 (hard links; package.json replaced).
  const version = '0.98.0';
  const name = `bwc-agent-${version}-linux-arm64`;
  const staged = path.join(work, 'stage', name);
  mkdirSync(path.dirname(staged), { recursive: true });
  await run('cp', ['-al', bundle, staged]);
  const pkgFile = path.join(staged, 'package.json');
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { version: string };
  unlinkSync(pkgFile);
  writeFileSync(pkgFile, `${JSON.stringify({ ...pkg, version }, null, 2)}\n`);
  // Without the test tree scripts/test-arm64.sh adds beside the bundle (src/, test/): as shipped.
  for (const extra of ['src', 'test', 'firmware-bridge', 'tsconfig.json']) rmSync(path.join(staged, extra), { recursive: true, force: true });
  const tarball = path.join(work, `${name}.tar.gz`);
  await run('sh', ['-c', `tar --sort=name --owner=0 --group=0 --numeric-owner -C "$1" -cf - "$2" | gzip -1 > "$3"`, 'sh', path.dirname(staged), name, tarball]);

  const releaseKey = await releaseKeygen(path.join(work, 'release-key'));
  const issuer = await makeIssuer();
  const stateDir = await tempStateDir('bwc-arm64-update-');
  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const fleet = await FleetClient.connect(broker.url);
  const server = await startReleaseServer({ [name]: tarball });
  const config = await writeAgentConfig(stateDir, {
    capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, workerLauncher: [qemu], stallTimeoutS: 60 },
    commands: { trustStore: writeTrustStore(stateDir, [issuer]), unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
    update: { releasesDir, releaseKeys: releaseKey.publicFile, healthTimeout: 600 },
  });
  const viaLink = (link: string) => [qemu, path.join(releasesDir, link, 'node', 'bin', 'node'), path.join(releasesDir, link, 'dist', 'src', 'cli', 'main.js')];
  const supervisor = new ServiceSupervisor({
    args: ['run', '--config', config],
    env: { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' },
    command: viaLink('current'),
    execStartPre: [...viaLink('committed'), 'update', 'boot-check', '--config', config],
    // Emulated, the agent may ping the watchdog late; this test is about the update.
    policy: { restartSecMs: 200, watchdogSecMs: 0 },
  });
  t.teardown(async () => {
    await supervisor.dispose();
    await fleet.close();
    await recorder.close();
    await server.close();
    await broker.dispose();
    rmSync(stateDir, { recursive: true, force: true });
  });
  const onlineAs = (v: string) => () => {
    const last = recorder.on('state').at(-1)?.json;
    return last?.online === true && last.agentVersion === v && (last.capture as { status?: string } | null)?.status === 'running';
  };

  await supervisor.start();
  await recorder.waitFor(onlineAs(baseVersion), slow, `the arm64 release ${baseVersion} online and capturing`);
  const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: tarball, url: server.url(name), version });
  const claims = commandClaims({ issuer, deviceId, action: 'agent.update', overrides: { release } });
  const reply = await fleet.request(deviceId, envelope(signToken({ issuer, claims })), slow);
  t.match(reply, { ok: true, status: 'downloading', version }, 'agent.update accepted by the emulated agent');
  await recorder.waitFor(() => recorder.on('event').some((m) => m.json?.type === 'update.committed' && m.json.version === version), slow, 'update.committed');
  await recorder.waitFor(onlineAs(version), slow, `the arm64 release ${version} online`);
  t.equal(readlinkSync(path.join(releasesDir, 'current')), version, 'current is the new release');
  t.equal(readlinkSync(path.join(releasesDir, 'committed')), version, 'and it is committed');
  t.ok(existsSync(path.join(releasesDir, version, 'node', 'bin', 'node')), 'unpacked side by side');
  t.match(supervisor.events.find((e) => e.type === 'exit'), { code: 75, willRestart: true }, 'restarted through the supervisor (exit 75)');
});
