// The officer in the loop end to end (issue 19): one real agent, its MCU the reference simulator over
// a real pty (serial backend), gpsd replaying a real receiver log, mosquitto, signed commands. Watch
// me, emergencies (a trigger's alert, the wearer's cancel, the fall detector), 1 s GPS while an
// emergency is raised, the signed acknowledgement felt at the MCU (its NOTIFY output), every trigger
// source recorded and audited with its source, bookmarks in the signed manifest (evidence verify),
// and a stream.start on an idle camera starting a recording (stream.whileNotRecording default; the
// "refuse" side is in test/attacks/officer-commands.test.ts, whose agent is configured so).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { agentBin, spawnAgent, tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { makeCommand, makeIssuer, writeTrustStore } from './helpers/command-tokens.ts';
import { FleetClient } from './helpers/fleet-client.ts';
import { gpsLogPath, startGpsfake } from './helpers/gpsfake.ts';
import { McuSim } from './helpers/mcu-sim.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';
import { startPtyPair } from './helpers/pty.ts';
import type { CommandAction } from '../src/command/types.ts';

const run = promisify(execFile);
const deviceId = 'cam-officer';
// Slow enough outside an emergency that 1 s reports can only be the emergency's.
const recordingIntervalS = 5;

t.test('watch-me, emergencies, triggers, bookmarks and stream-started recording on one agent with the MCU simulator', async (t) => {
  const supervisor = await makeIssuer({ kid: 'console', actions: ['record.start', 'record.stop', 'stream.start', 'stream.stop', 'alert.ack', 'recording.bookmark'] as CommandAction[] });
  const pty = await startPtyPair();
  const mcu = new McuSim(pty.b, 'mcu-officer-1.0');
  const broker = await startBroker();
  const gps = await startGpsfake(gpsLogPath('bu353s4.log'), { cycleS: 0.05, maxSeconds: 300 });
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, {
    gps: { recordingInterval: recordingIntervalS, idleInterval: 30 },
    firmware: { backend: 'serial', serial: { path: pty.a }, reminderInterval: 0 },
    commands: { trustStore: writeTrustStore(stateDir, [supervisor]), unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
  });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: `127.0.0.1:${gps.port}` });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await fleet.close();
    await mcu.stop();
    await pty.stop();
    await recorder.close();
    await gps.stop();
    await broker.dispose();
  });
  type State = { recording?: boolean; firmware?: { linkUp: boolean }; gps?: { lat: number | null }; capture?: { status: string } | null; officer?: { emergency: null | { alertId: string; source: string; acknowledgedBy: string | null }; watchMe: null | { requestId: string } } };
  const state = () => recorder.on('state').at(-1)?.json as State | undefined;
  const events = (type: string) => recorder.on('event').filter((m) => m.json?.type === type).map((m) => m.json!);
  const audits = (type: string) => recorder.on('audit').map((m) => m.json?.entry as { type: string; operator: string | null; detail: Record<string, unknown> }).filter((e) => e?.type === type);
  const nextEvent = async (type: string, after: number, what: string) => {
    await recorder.waitFor(() => events(type).length > after, 30_000, what);
    return events(type)[after]!;
  };
  const send = (action: CommandAction, claims: Record<string, unknown> = {}) => fleet.request(deviceId, makeCommand({ issuer: supervisor, deviceId, action, overrides: claims }).payload);
  const notified = (pattern: string, from: number) => mcu.waitFor((l) => l.rx === 'NOTIFY' && l.pattern === pattern, `NOTIFY ${pattern}`, from);
  const stopRecording = async () => {
    const n = events('recording.stopped').length;
    mcu.send('long record');
    const stopped = await nextEvent('recording.stopped', n, 'the recording stopped by the record button');
    // The retained state is coalesced (100 ms): wait for it, so later checks read the new one.
    await recorder.waitFor(() => state()?.recording === false, 15_000, 'state: not recording');
    return stopped;
  };

  await recorder.waitFor(() => state()?.firmware?.linkUp === true && state()?.capture?.status === 'running' && typeof state()?.gps?.lat === 'number', 60_000, 'MCU link, capture and a GPS fix');
  t.same(state()?.officer, { emergency: null, watchMe: null }, 'state.officer: nothing raised');

  await t.test('a stream.start on an idle camera starts a recording (stream.whileNotRecording: start-recording)', async (t) => {
    t.equal(state()?.recording, false);
    const n = events('recording.started').length;
    const reply = await send('stream.start');
    t.match(reply, { ok: true, sid: String }, 'the live view is accepted');
    const started = await nextEvent('recording.started', n, 'recording.started');
    t.match(started, { trigger: 'stream', sid: reply.sid, operator: 'operator:PC-4711', reason: 'officer-safety' }, 'recording started by the stream, named with its sid and operator');
    t.match(audits('recording.start').at(-1)?.detail, { trigger: 'stream', sid: reply.sid }, 'audited with the trigger stream');
    t.match(await send('stream.stop', { sid: reply.sid }), { ok: true });
    await stopRecording();
  });

  await t.test('watch me: the double press records, sends the position, the wearer feels it was sent', async (t) => {
    const from = mcu.mark();
    const n = events('officer.watch_me').length;
    mcu.send('double function');
    const e = await nextEvent('officer.watch_me', n, 'officer.watch_me');
    t.match(e, { requestId: String, recordingId: String, position: { lat: Number, lon: Number } }, 'the event carries the request id, the recording and the position');
    t.ok(Math.abs((e.position as { lat: number }).lat - -37.7848) < 0.01, 'the position is the receiver\'s');
    t.match(events('recording.started').at(-1), { recordingId: e.recordingId, trigger: 'watch-me' }, 'recording started with trigger watch-me');
    await notified('watch-me-sent', from);
    t.pass('the MCU played watch-me-sent');
    await recorder.waitFor(() => state()?.officer?.watchMe?.requestId === e.requestId, 15_000, 'state.officer.watchMe');
    t.equal(audits('officer.watch_me').at(-1)?.detail.requestId, e.requestId, 'audited');
    t.equal(events('stream.started').length, 1, 'the camera opened no live view by itself (only the earlier signed one)');
  });

  await t.test('bookmarks: the short press and a signed command mark the recording; its manifest signs them (evidence verify)', async (t) => {
    const recordingId = state()?.recording ? (events('recording.started').at(-1)!.recordingId as string) : '';
    t.not(recordingId, '', 'still recording since watch-me');
    const from = mcu.mark();
    const n = events('recording.bookmark').length;
    mcu.send('press function');
    const byButton = await nextEvent('recording.bookmark', n, 'the button bookmark');
    t.match(byButton, { markId: String, recordingId, offsetS: Number, source: 'button', operator: null, note: null });
    await notified('bookmark', from);
    t.match(await send('recording.bookmark', { note: 'the car drove off here' }), { ok: true, recordingId }, 'signed bookmark accepted');
    const byCommand = await nextEvent('recording.bookmark', n + 1, 'the signed bookmark');
    t.match(byCommand, { source: 'command', operator: 'operator:PC-4711', note: 'the car drove off here', recordingId });
    const closed = events('recording.closed').length;
    await stopRecording();
    await recorder.waitFor(() => events('recording.closed').slice(closed).some((e) => e.recordingId === recordingId), 60_000, 'the recording sealed');
    const verify = await run(agentBin, ['evidence', 'verify', '--state-dir', stateDir]);
    t.match(verify.stdout, /evidence OK/, 'evidence verify passes');
    t.match(verify.stdout, new RegExp(`mark ${String(byButton.markId)} in ${recordingId} .* by the wearer`), 'and shows the button mark');
    t.match(verify.stdout, new RegExp(`mark ${String(byCommand.markId)} in ${recordingId} .* by operator:PC-4711: "the car drove off here"`), 'and the signed mark with its note');

    const none = events('recording.bookmark').length;
    mcu.send('press function');
    t.match(await nextEvent('recording.bookmark', none, 'a bookmark with no recording'), { recordingId: null, offsetS: null, source: 'button' }, 'no recording: an event only, recordingId null');
    t.equal(state()?.recording, false, 'a bookmark does not start a recording');
  });

  await t.test('each trigger source: recording with the source in the audit; an unconfigured one is audited and ignored', async (t) => {
    for (const source of ['holster', 'lightbar']) {
      const n = events('officer.trigger').length;
      mcu.send(`trigger ${source}`);
      const e = await nextEvent('officer.trigger', n, `officer.trigger ${source}`);
      t.match(e, { source, actions: ['record'], recordingId: String }, `${source}: event`);
      t.match(audits('recording.start').at(-1)?.detail, { recordingId: e.recordingId, trigger: 'trigger', source }, `${source}: recording.start audited with the source`);
      t.match(audits('officer.trigger').at(-1)?.detail, { source, actions: ['record'] }, `${source}: officer.trigger audited`);
      // A second trigger while recording never stops it.
      const again = events('officer.trigger').length;
      mcu.send(`trigger ${source}`);
      t.match(await nextEvent('officer.trigger', again, 'the same trigger again'), { recordingId: e.recordingId }, `${source} again: the same recording`);
      // The retained state is coalesced (100 ms), so it is waited on, never read at once; and the
      // next recording.stopped must be the record button's, not the second trigger's.
      await recorder.waitFor(() => state()?.recording === true, 15_000, 'state: recording');
      t.match(await stopRecording(), { recordingId: e.recordingId, trigger: 'button' }, `${source} again did not stop it: the record button did`);
    }
    const n = events('officer.trigger').length;
    mcu.send('trigger vehicle-door');
    t.match(await nextEvent('officer.trigger', n, 'officer.trigger vehicle-door'), { source: 'vehicle-door', actions: [], recordingId: null }, 'vehicle-door (not in officer.triggers): audited, nothing done');
    t.match(audits('officer.trigger').at(-1)?.detail, { source: 'vehicle-door', actions: [] }, 'vehicle-door: audited with no action');
  });

  await t.test('emergency from a weapon or taser trigger (record and alert), cancelled by the wearer', async (t) => {
    for (const [source, cancel] of [['weapon', 'hold function'], ['taser', 'hold record']] as const) {
      const n = events('officer.emergency').length;
      mcu.send(`trigger ${source}`);
      const e = await nextEvent('officer.emergency', n, `officer.emergency (${source})`);
      t.match(e, { alertId: String, source: 'trigger', trigger: source, recordingId: String, position: { lat: Number } }, `${source}: emergency raised`);
      t.match(audits('recording.start').at(-1)?.detail, { recordingId: e.recordingId, trigger: 'trigger', source }, `${source}: recording.start audited with the source`);
      t.match(audits('officer.trigger').at(-1)?.detail, { source, actions: ['record', 'alert'] }, `${source}: officer.trigger audited`);
      const from = mcu.mark();
      const c0 = events('officer.emergency_cleared').length;
      mcu.send(cancel);
      t.match(await nextEvent('officer.emergency_cleared', c0, 'cleared by the wearer'), { alertId: e.alertId, by: 'wearer', operator: null }, `${source}: cancelled by the wearer (${cancel})`);
      await notified('emergency-cleared', from);
      t.match(audits('officer.emergency_cleared').at(-1)?.detail, { alertId: e.alertId, by: 'wearer' }, 'the cancel is audited');
      await recorder.waitFor(() => state()?.officer?.emergency === null, 15_000, 'state: no emergency');
      await stopRecording();
    }
  });

  await t.test('emergency from the fall detector: 1 s GPS until a supervisor acknowledges and clears it; the MCU plays the acknowledgement', async (t) => {
    const n = events('officer.emergency').length;
    const from = mcu.mark();
    mcu.send('fall');
    const e = await nextEvent('officer.emergency', n, 'officer.emergency (fall)');
    t.match(e, { source: 'fall', recordingId: String });
    await notified('emergency-raised', from);
    await recorder.waitFor(() => state()?.officer?.emergency?.alertId === e.alertId, 15_000, 'state.officer.emergency');
    const gpsFrom = recorder.on('gps').length;
    await recorder.waitFor(() => recorder.on('gps').length >= gpsFrom + 5, 30_000, 'five GPS reports after the emergency');
    const times = recorder.on('gps').slice(gpsFrom, gpsFrom + 5).map((m) => Date.parse(String(m.json?.time)));
    const gaps = times.slice(1).map((x, i) => (x - times[i]!) / 1000);
    // The mean gap, not each one: a single stall of a loaded agent can stretch one gap, and the mean of
    // four still tells a 1 s cadence from the 5 s one.
    const meanGap = (times[4]! - times[0]!) / 4000;
    t.ok(meanGap < 2.5, `GPS every ~1 s while the emergency is raised (mean ${meanGap.toFixed(2)} s; gaps ${gaps.join(', ')} s; recording interval ${recordingIntervalS} s)`);

    const ackFrom = mcu.mark();
    t.match(await send('alert.ack', { alert_id: e.alertId }), { ok: true, alertId: e.alertId, cleared: false }, 'signed alert.ack accepted');
    await notified('emergency-acknowledged', ackFrom);
    t.pass('the MCU played emergency-acknowledged (the haptic output)');
    // The MCU's NOTIFY and the command's reply can both beat the event and the audit entry, which leave
    // through the outbox: a clean-clone run read them too early. Wait for both to reach the broker.
    await recorder.waitFor(() => events('officer.emergency_acknowledged').length > 0 && audits('officer.emergency_acknowledged').length > 0, 15_000, 'the acknowledgement event and audit entry');
    t.match(events('officer.emergency_acknowledged').at(-1), { alertId: e.alertId, operator: 'operator:PC-4711' });
    t.match(audits('officer.emergency_acknowledged').at(-1), { operator: 'operator:PC-4711', detail: { alertId: e.alertId } }, 'audited with the operator');
    await recorder.waitFor(() => state()?.officer?.emergency?.acknowledgedBy === 'operator:PC-4711', 15_000, 'acknowledgedBy in state');

    t.match(await send('alert.ack', { alert_id: e.alertId, clear: true }), { ok: true, cleared: true }, 'acknowledged and cleared');
    await recorder.waitFor(() => state()?.officer?.emergency === null, 15_000, 'cleared in state');
    // The retained state is published directly; the event follows through the outbox.
    await recorder.waitFor(() => events('officer.emergency_cleared').at(-1)?.by === 'operator', 15_000, 'the operator clear event');
    t.match(events('officer.emergency_cleared').at(-1), { alertId: e.alertId, by: 'operator', operator: 'operator:PC-4711' });
    // Back to the recording interval: two consecutive reports from the clear on are that far apart.
    const after = recorder.on('gps').length;
    await recorder.waitFor(() => recorder.on('gps').length >= after + 2, 30_000, 'GPS reports after the clear');
    const [b, c] = recorder.on('gps').slice(after, after + 2).map((m) => Date.parse(String(m.json?.time)));
    t.ok((c! - b!) / 1000 >= recordingIntervalS - 1, `GPS back to the recording interval after the clear (${(c! - b!) / 1000} s)`);
    await stopRecording();
  });

  t.equal((await agent.stop('SIGTERM')).code, 0, 'the agent stops cleanly');
});
