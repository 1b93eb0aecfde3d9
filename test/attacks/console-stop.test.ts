// Threat: a signed-in console user ends another operator's live view: a colleague cutting off a
// supervisor mid-incident, or hiding what the other was watching. Before the defence any signed-in
// user could POST /api/live/stop with any camera and sid (both shown on every page), and the
// console signed a stream.stop in that user's name and sent it. The defence: the console stops a
// view only for the operator who started it (its own record, else the camera's state, which names
// each view's operator), or for a user with the duty-officer role; anyone else gets 403 and no
// command is signed. This test runs the real console process and a camera on a real mosquitto.
import t from 'tap';
import { startConsole } from '../helpers/console-process.ts';
import { startFakeCamera } from '../helpers/fake-camera.ts';
import { startBroker } from '../helpers/mosquitto.ts';

t.test('only the owner of a live view, or a duty officer, can stop it', async (t) => {
  const broker = await startBroker();
  const console_ = await startConsole(broker.url, [
    { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
    { user: 'sgt2', operator: 'sgt-0002', password: 'pw-2', roles: ['supervisor'] },
    { user: 'duty', operator: 'insp-0003', password: 'pw-3', roles: ['supervisor', 'duty-officer'] },
  ]);
  const camera = await startFakeCamera(broker.url, 'cam-0070');
  t.teardown(async () => {
    await camera.close();
    await console_.stop();
    await broker.dispose();
  });
  const sgt1 = await console_.login('sgt1', 'pw-1');
  const sgt2 = await console_.login('sgt2', 'pw-2');
  const duty = await console_.login('duty', 'pw-3');

  const start = async (cookie: string) => {
    const r = await console_.call(cookie, 'POST', '/api/live', { deviceId: 'cam-0070', reason: 'public-safety', durationS: 120, offer: 'v=0\r\n' });
    t.match(r.json, { ok: true, sid: String });
    return r.json!.sid as string;
  };
  const first = await start(sgt1);

  const stolen = await console_.call(sgt2, 'POST', '/api/live/stop', { deviceId: 'cam-0070', sid: first });
  t.match(stolen, { status: 403, json: { error: /not a live view of yours/ } }, 'another supervisor cannot stop it');
  const unknown = await console_.call(sgt2, 'POST', '/api/live/stop', { deviceId: 'cam-0070', sid: 's-nobody' });
  t.equal(unknown.status, 403, 'nor a sid nobody started (the same answer)');

  t.match((await console_.call(sgt1, 'POST', '/api/live/stop', { deviceId: 'cam-0070', sid: first })).json, { ok: true }, 'its owner can');
  const stops = () => camera.commands.filter((c) => c.act === 'stream.stop');
  await camera.next((c) => c.act === 'stream.stop' && c.sid === first, 'the owner\'s stop');
  t.same(stops().map((c) => c.sub), ['sgt-0001'], 'the camera was sent one stop, the owner\'s: the refused one was never signed');

  const second = await start(sgt1);
  t.match((await console_.call(duty, 'POST', '/api/live/stop', { deviceId: 'cam-0070', sid: second })).json, { ok: true }, 'a duty officer can stop anyone\'s view');
  await camera.next((c) => c.act === 'stream.stop' && c.sid === second, 'the duty officer\'s stop');
  t.same(stops().map((c) => c.sub), ['sgt-0001', 'insp-0003']);
  t.match(await console_.waitForLog(/insp-0003 stopped sgt-0001's live view .* on cam-0070/, 'the duty officer\'s stop'), /duty-officer/);
});
