// Threat: a console user does what their role is not for. A professional-standards reviewer (who
// must only read: audit, alerts, reports) or a fleet administrator starts a live view of an
// officer's camera; a supervisor reads or acknowledges the alerts raised about supervisors. Before
// the defence every signed-in user could call every route. The defence (ops-console/roles.ts): each
// user has roles in users.json and each route names the roles it serves; anything else is 403,
// naming the role needed, and nothing is signed. Real console process, real mosquitto.
import t from 'tap';
import { startConsole } from '../helpers/console-process.ts';
import { startFakeCamera } from '../helpers/fake-camera.ts';
import { startBroker } from '../helpers/mosquitto.ts';

t.test('each route serves its roles only', async (t) => {
  const broker = await startBroker();
  const console_ = await startConsole(broker.url, [
    { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
    { user: 'psd1', operator: 'psd-0001', password: 'pw-2', roles: ['standards'] },
    { user: 'admin1', operator: 'fa-0001', password: 'pw-3', roles: ['fleet-admin'] },
  ]);
  const camera = await startFakeCamera(broker.url, 'cam-0080');
  t.teardown(async () => {
    await camera.close();
    await console_.stop();
    await broker.dispose();
  });
  const supervisor = await console_.login('sgt1', 'pw-1');
  const standards = await console_.login('psd1', 'pw-2');
  const admin = await console_.login('admin1', 'pw-3');
  const live = { deviceId: 'cam-0080', reason: 'public-safety', durationS: 60, offer: 'v=0\r\n' };

  t.match(await console_.call(standards, 'POST', '/api/live', live), { status: 403, json: { error: /needs the supervisor role/ } }, 'a standards user cannot start a view');
  t.match(await console_.call(admin, 'POST', '/api/live', live), { status: 403 }, 'nor can a fleet admin');
  t.match(await console_.call(standards, 'POST', '/api/live/ice', { deviceId: 'cam-0080', sid: 's-1', gen: 1, answer: 'v=0\r\n' }), { status: 403 });
  t.match((await console_.call(standards, 'GET', '/api/me')).json, { operator: 'psd-0001', roles: ['standards'] }, 'the page learns the roles, to show what each may do');
  t.equal((await console_.call(standards, 'GET', '/api/audit/cam-0080')).status, 200, 'standards reads the audit');
  t.equal((await console_.call(standards, 'GET', '/api/alerts')).status, 200, 'and the alerts');
  t.match(await console_.call(supervisor, 'GET', '/api/alerts'), { status: 403, json: { error: /needs the standards or duty-officer role/ } }, 'a supervisor does not read the alerts');
  t.match(await console_.call(supervisor, 'POST', '/api/alerts/1/ack', {}), { status: 403 }, 'nor acknowledge one');

  // A supervisor's request after all of the above: the only command the camera was ever sent.
  t.match((await console_.call(supervisor, 'POST', '/api/live', live)).json, { ok: true });
  t.same(camera.commands.map((c) => `${c.act} ${c.sub}`), ['stream.start sgt-0001'], 'nothing was signed for the refused requests');
});
