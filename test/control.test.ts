// `bwc-agent ctl status` against a running agent, the socket's permissions, the clean shutdown's
// retained offline state, and the errors an operator sees when something is off.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { agentBin, spawnAgent, tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const run = promisify(execFile);

t.test('ctl status, one agent per state folder, clean shutdown', async (t) => {
  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/cam-ctl/#');
  const stateDir = await tempStateDir();
  const env = { BWC_DEVICE_ID: 'cam-ctl', BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' };
  const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir)], env);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await recorder.close();
    await broker.dispose();
  });
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 30_000, 'online');

  const mode = (await stat(path.join(stateDir, 'control.sock'))).mode & 0o777;
  t.equal(mode.toString(8), '600', 'control socket is 0600');

  const viaEnv = await run(agentBin, ['ctl', 'status'], { env: { ...process.env, BWC_STATE_DIR: stateDir } });
  const status = JSON.parse(viaEnv.stdout) as Record<string, unknown>;
  t.equal(status.deviceId, 'cam-ctl');
  t.equal(status.online, true);
  t.equal((status.link as { connected: boolean }).connected, true);
  t.same(status.extensions, ['health', 'gps', 'firmware', 'officer', 'capture', 'network', 'talkback', 'stream', 'ice-signalling', 'fleet-management', 'update', 'commands']);
  const viaFlag = await run(agentBin, ['ctl', 'status', '--state-dir', stateDir], { env: { ...process.env, BWC_STATE_DIR: '' } });
  t.equal((JSON.parse(viaFlag.stdout) as { deviceId: string }).deviceId, 'cam-ctl', '--state-dir works too');

  const second = spawnAgent(['run', '--config', await writeAgentConfig(stateDir)], env);
  const r = await second.exited;
  t.equal(r.code, 1, 'a second agent on the same state folder refuses to start');
  t.match(second.output, /another agent is already running/);

  const unknown = await run(agentBin, ['ctl', 'reboot'], { env: { ...process.env, BWC_STATE_DIR: stateDir } }).catch((e: { code: number; stderr: string }) => e);
  t.equal((unknown as { code: number }).code, 2);
  t.match((unknown as { stderr: string }).stderr, /unknown ctl verb "reboot"/);

  const states = recorder.on('state').length;
  t.equal((await agent.stop('SIGTERM')).code, 0, 'SIGTERM: clean exit');
  await recorder.waitFor(() => recorder.on('state').length > states && recorder.on('state').at(-1)?.json?.online === false, 10_000, 'offline state');
  t.equal(recorder.on('state').at(-1)?.json?.reason, 'SIGTERM', 'the offline state says why');
  // Published (PUBACKed) before the agent exited; the broker's hand-off to this subscriber may trail the state by a moment.
  await recorder.waitFor(() => recorder.on('event').some((m) => m.json?.type === 'agent.stopping'), 30_000, 'agent.stopping event');
  t.pass('agent.stopping event delivered before exit');
});

t.test('ctl with no agent running says so and exits 3', async (t) => {
  const stateDir = await tempStateDir();
  const result = await run(agentBin, ['ctl', 'status', '--state-dir', stateDir]).catch((e: { code: number; stderr: string }) => e);
  t.equal((result as { code: number }).code, 3);
  t.match((result as { stderr: string }).stderr, /cannot reach the agent's control socket .*is the agent running\?/);
});

t.test('a dead broker: the agent starts, stays up, says what is wrong and keeps retrying', async (t) => {
  const stateDir = await tempStateDir();
  const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir)], { BWC_DEVICE_ID: 'cam-nobroker', BWC_MQTT_URL: 'mqtt://127.0.0.1:9', BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  t.teardown(() => agent.stop('SIGKILL'));
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  await agent.waitForOutput(/ECONNREFUSED 127\.0\.0\.1:9[\s\S]*reconnecting after back-off[\s\S]*reconnecting after back-off/, 30_000);
  const status = JSON.parse((await run(agentBin, ['ctl', 'status', '--state-dir', stateDir])).stdout) as { link: { connected: boolean; lastError: string; outbox: { queued: number } } };
  t.equal(status.link.connected, false);
  t.match(status.link.lastError, /ECONNREFUSED/);
  t.ok(status.link.outbox.queued >= 1, 'telemetry is kept for later');
  t.equal((await agent.stop('SIGTERM')).code, 0);
});
