// Threat: the officer-in-the-loop features (issue 19) used to watch, hear or silence without cause.
// - A professional-standards reviewer (read-only) acknowledges or clears an officer's emergency:
//   the wearer would feel "help is coming" from someone who is not dealing with it.
// - Someone who can publish on a camera's `event` topic (a stolen camera credential, a loose ACL,
//   or a supervisor's accomplice) sends a forged `officer.watch_me`, so a supervisor's pretext view
//   with reason `officer-request` no longer raises `officer_request_unasked`: the rule must count
//   only the camera's own signed, verified audit entry, never the bare event.
// - Talk-back on a console that turned it off: a supervisor's page (or a hand-made request) asks for
//   `talk: true` anyway; nothing may be signed.
// - A malformed officer alert (a position off the globe, an id of kilobytes) reaches every
//   supervisor's page and the archive unless it is refused with words.
// Real console process (ops-console/server.ts), real mosquitto, a real MQTT client as the camera.
import t from 'tap';
import { liveChain } from '../helpers/audit-fixtures.ts';
import { startConsole } from '../helpers/console-process.ts';
import { startFakeCamera } from '../helpers/fake-camera.ts';
import { startBroker } from '../helpers/mosquitto.ts';
import mqtt from 'mqtt';

const users = [
  { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
  { user: 'duty1', operator: 'duty-0001', password: 'pw-2', roles: ['duty-officer'] },
  { user: 'psd1', operator: 'psd-0001', password: 'pw-3', roles: ['standards'] },
];

t.test('officer alerts, watch-me and talk-back cannot be misused', async (t) => {
  const broker = await startBroker();
  const console_ = await startConsole(broker.url, users);
  const camera = await startFakeCamera(broker.url, 'cam-0204');
  const device = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  t.teardown(async () => {
    await device.endAsync(true);
    await camera.close();
    await console_.stop();
    await broker.dispose();
  });
  const supervisor = await console_.login('sgt1', 'pw-1');
  const duty = await console_.login('duty1', 'pw-2');
  const standards = await console_.login('psd1', 'pw-3');

  await t.test('standards may neither acknowledge nor clear an emergency, nor read officer alerts', async (t) => {
    await device.publishAsync('bwc/v1/cam-0204/event', JSON.stringify({ type: 'officer.emergency', time: new Date().toISOString(), seq: 1, alertId: 'em-1', source: 'button', position: null, recordingId: 'rec-1' }), { qos: 1 });
    await console_.waitForLog(/officer emergency em-1 from cam-0204/, 'the emergency stored');
    const ack = { deviceId: 'cam-0204', alertId: 'em-1' };
    t.match(await console_.call(standards, 'POST', '/api/officer/ack', ack), { status: 403, json: { error: /needs the supervisor or duty-officer role/ } });
    t.match(await console_.call(standards, 'POST', '/api/officer/ack', { ...ack, clear: true }), { status: 403 });
    t.match(await console_.call(standards, 'GET', '/api/officer/alerts'), { status: 403 });
    t.equal(camera.commands.length, 0, 'nothing was signed for them');
    t.equal((await console_.call(supervisor, 'GET', '/api/officer/alerts')).status, 200, 'a supervisor reads them');
    t.match((await console_.call(duty, 'POST', '/api/officer/ack', ack)).json, { ok: true }, 'a duty officer acknowledges');
    t.match(camera.commands, [{ act: 'alert.ack', sub: 'duty-0001', reason: 'officer-safety', alert_id: 'em-1' }], 'signed for the duty officer who clicked, with reason officer-safety');
    t.match(await console_.call(duty, 'POST', '/api/officer/ack', { deviceId: 'cam-0204', alertId: 'x'.repeat(200) }), { status: 400, json: { error: /alertId/ } }, 'a bad alert id is named');
    t.match(await console_.call(duty, 'POST', '/api/officer/ack', { deviceId: 'cam-0204', alertId: 'em-nobody-saw' }), { status: 404, json: { error: /no emergency em-nobody-saw on cam-0204/ } }, 'nor an emergency nobody saw');
    t.equal(camera.commands.length, 1, 'only the one acknowledgement was signed');
  });

  /** Enrols a camera with the console and returns how to append records to its signed audit chain, published as the camera would. */
  const enrolledAuditChain = async (deviceId: string) => {
    const chain = await liveChain(deviceId);
    await console_.enrol(deviceId, chain.key.publicJwk);
    return async (record: Parameters<typeof chain.append>[0]) => {
      for (const m of chain.append(record)) await device.publishAsync(`bwc/v1/${deviceId}/audit`, JSON.stringify(m), { qos: 1 });
    };
  };

  await t.test('a forged officer.watch_me on the event topic does not cover an officer-request view', async (t) => {
    const forged = 'cam-0201';
    const publish = await enrolledAuditChain(forged);
    await publish({ type: 'agent.start', detail: { version: 'test' } });
    // The bare event, with no audit entry behind it: what anyone with the camera's topics can send.
    await device.publishAsync(`bwc/v1/${forged}/event`, JSON.stringify({ type: 'officer.watch_me', time: new Date().toISOString(), seq: 7, requestId: 'wm-forged', position: null, recordingId: null }), { qos: 1 });
    await publish({ type: 'stream.start', operator: 'sgt-0001', action: 'stream.start', reason: 'officer-request', detail: { sid: 's-pretext' } });
    const line = await console_.waitForLog(new RegExp(`alert \\d+ officer_request_unasked: sgt-0001 gave "officer-request" for a view of ${forged}`), 'the officer_request_unasked alert');
    t.pass(`raised: ${line}`);
  });

  await t.test('the camera\'s own signed officer.watch_me does cover it', async (t) => {
    const genuine = 'cam-0202';
    const publish = await enrolledAuditChain(genuine);
    await publish({ type: 'agent.start', detail: { version: 'test' } });
    const watchMe = { requestId: 'wm-1', position: { lat: 51.5, lon: -0.14, accuracyM: 6 }, recordingId: 'rec-1' };
    await publish({ type: 'officer.watch_me', detail: watchMe });
    await device.publishAsync(`bwc/v1/${genuine}/event`, JSON.stringify({ type: 'officer.watch_me', time: new Date().toISOString(), seq: 2, ...watchMe }), { qos: 1 });
    await publish({ type: 'stream.start', operator: 'sgt-0001', action: 'stream.start', reason: 'officer-request', detail: { sid: 's-asked' } });
    // A later covert view raises an alert of its own: once it is logged, the view before it was judged.
    await publish({ type: 'stream.start', operator: 'sgt-0001', action: 'stream.start', reason: 'public-safety', detail: { sid: 's-later', covert: true } });
    await console_.waitForLog(new RegExp(`alert \\d+ covert_view: sgt-0001 started a covert view of ${genuine}`), 'the later covert_view alert');
    t.notOk(console_.log.some((l) => l.includes(`officer_request_unasked: sgt-0001 gave "officer-request" for a view of ${genuine}`)), 'no officer_request_unasked for the view the officer asked for');
  });

  await t.test('a malformed officer alert is refused with words, and not shown', async (t) => {
    const cam = 'cam-0203';
    await device.publishAsync(`bwc/v1/${cam}/event`, JSON.stringify({ type: 'officer.emergency', time: new Date().toISOString(), seq: 1, alertId: 'em-9', source: 'button', position: { lat: 999, lon: 0, accuracyM: 5 }, recordingId: null }), { qos: 1 });
    t.match(await console_.waitForLog(new RegExp(`refused an event from ${cam}: position.lat`), 'the refusal of the bad position'), /position\.lat: Too big/);
    // Another camera: the console logs the first refusal of each kind per camera (a flood in counts).
    const cam2 = 'cam-0205';
    await device.publishAsync(`bwc/v1/${cam2}/event`, JSON.stringify({ type: 'officer.watch_me', time: new Date().toISOString(), seq: 2, requestId: 'w'.repeat(5000), position: null, recordingId: null }), { qos: 1 });
    t.match(await console_.waitForLog(new RegExp(`refused an event from ${cam2}: requestId`), 'the refusal of the long id'), /requestId: Too big/);
    const { json } = await console_.call(supervisor, 'GET', '/api/officer/alerts');
    t.same((json!.alerts as { deviceId: string }[]).filter((a) => a.deviceId === cam || a.deviceId === cam2), [], 'neither became an alert');
  });

  await t.test('talk-back turned off on the console: a talk request is refused and nothing is signed', async (t) => {
    const offer = 'v=0\r\n';
    const quiet = await startConsole(broker.url, users, ['--talkback', 'off']);
    t.teardown(() => quiet.stop());
    const quietSupervisor = await quiet.login('sgt1', 'pw-1');
    const before = camera.commands.length;
    t.match(await quiet.call(quietSupervisor, 'POST', '/api/live', { deviceId: 'cam-0204', reason: 'officer-safety', durationS: 60, offer, talk: true }), { status: 403, json: { error: /talk-back is off on this console \(--talkback off\)/ } });
    t.equal(camera.commands.length, before, 'nothing was signed');
    t.match((await quiet.call(quietSupervisor, 'GET', '/api/config')).json, { talk: false }, 'the page is told, so it offers no talk button');
    t.match((await console_.call(supervisor, 'POST', '/api/live', { deviceId: 'cam-0204', reason: 'officer-safety', durationS: 60, offer, talk: true })).json, { ok: true });
    t.match(camera.commands.at(-1), { act: 'stream.start', sub: 'sgt-0001', talk: true }, 'where it is on, the token carries the talk claim');
  });
});
