// The agent end to end with real gpsd replaying real receiver logs: the positions on MQTT are the
// log's, and a receiver without a fix is reported as such, never as a made-up position.
import t, { type Test } from 'tap';
import { spawnAgent, tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { gpsLogPath, startGpsfake } from './helpers/gpsfake.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

t.jobs = 2;

async function runAgentOn(t: Test, log: string, deviceId: string) {
  const broker = await startBroker();
  const gps = await startGpsfake(gpsLogPath(log), { cycleS: 0.05, maxSeconds: 120 });
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir)], {
    BWC_DEVICE_ID: deviceId,
    BWC_MQTT_URL: broker.url,
    BWC_STATE_DIR: stateDir,
    BWC_GPSD: `127.0.0.1:${gps.port}`,
  });
  t.teardown(async () => {
    await agent.stop('SIGTERM');
    await recorder.close();
    await gps.stop();
    await broker.dispose();
  });
  return { recorder, agent, broker };
}

t.test('bu353s4.log (SiRF-IV, Hamilton NZ): positions near 37.78 S, 175.31 E', async (t) => {
  const { recorder, broker } = await runAgentOn(t, 'bu353s4.log', 'cam-gps-fix');
  // The first TPVs come from GGA alone (no date yet, no speed); wait for one after an RMC.
  const complete = () => recorder.on('gps').find((m) => m.json?.fix !== 'no-fix' && m.json?.gpsTime !== null && m.json?.speedMps !== null);
  await recorder.waitFor(() => complete() !== undefined, 30_000, 'a fix with GPS time and speed');
  const fix = complete()!.json!;
  t.ok(Math.abs(Number(fix.lat) - -37.7848) < 0.01, `lat ${String(fix.lat)}`);
  t.ok(Math.abs(Number(fix.lon) - 175.3149) < 0.01, `lon ${String(fix.lon)}`);
  t.equal(fix.gpsd, 'connected');
  t.type(fix.accuracyM, 'number', 'horizontal accuracy reported');
  t.type(fix.speedMps, 'number');
  t.type(fix.seq, 'number');
  t.match(String(fix.gpsTime), /T03:0\d:\d\d/, 'GPS time from the log (time of day 03:07 UTC)');
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true && (m.json?.gps as { fix?: string } | null)?.fix !== undefined && (m.json?.gps as { fix: string }).fix !== 'no-fix'), 30_000, 'state with the fix');
  const state = recorder.on('state').filter((m) => m.json?.online === true).at(-1)!;
  t.equal(state.json?.agentVersion, '0.1.0');
  t.ok(state.json?.health, 'health in state');
  // A console that subscribes later gets the state at once: it is retained.
  const late = await MqttRecorder.connect(broker.url, 'bwc/v1/cam-gps-fix/state');
  t.teardown(() => late.close());
  await late.waitFor(() => late.messages.length > 0, 10_000, 'retained state');
  t.equal(late.messages[0]!.retain, true, 'state is retained');
  t.equal(late.messages[0]!.json?.online, true);
});

t.test('bu303-nofix.log (binary SiRF, no fix): "no-fix", never a position', async (t) => {
  const { recorder } = await runAgentOn(t, 'bu303-nofix.log', 'cam-gps-nofix');
  await recorder.waitFor(() => recorder.on('gps').filter((m) => m.json?.gpsd === 'connected').length >= 5, 30_000, 'five reports while gpsd is connected');
  const reports = recorder.on('gps').map((m) => m.json!);
  t.ok(reports.every((r) => r.fix === 'no-fix'), 'every report says no-fix');
  t.ok(reports.every((r) => r.lat === null && r.lon === null && r.accuracyM === null), 'no position, no accuracy');
});
