// Threat: someone who can publish on a camera's `cmd` topic (a stolen or lesser fleet key, a
// recorded command played back, a forged claim) makes an officer's emergency look handled when it
// is not, or writes into the evidence. Concretely: acknowledging or clearing an officer-down alert
// with a key the trust store never allowed to (`bwc_actions` without alert.ack), acknowledging an
// alert id other than the one raised (a stale one, or a guess), replaying a genuine acknowledgement
// (so a second "acknowledged" reaches the wearer, or a clear lands later), and a bookmark whose note
// is not the short string the contract allows (10 KB of text in the signed manifest, or an object).
// The defence: alert.ack and recording.bookmark are actions a key must be granted; the verifier
// types their claims (alert_id a string, clear a boolean, note a string of at most 200 characters)
// and refuses a replayed jti; the officer extension acts only on the open alert's id
// (`unknown_alert` otherwise). Each refusal leaves the emergency raised, as the retained state shows.
// The same agent runs with stream.whileNotRecording "refuse": a signed stream.start on a camera that
// is not recording is refused (not_recording), audited, and no live view opens (what is watched is
// recorded; test/officer-agent.test.ts has the default, "start-recording").
// Runs the real agent (sim firmware backend, driven by `bwc-agent ctl`) on a real mosquitto.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { agentBin } from '../helpers/agent-process.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import type { CommandAction } from '../../src/command/types.ts';

const run = promisify(execFile);
const deviceId = 'cam-officer-attack';

t.test('alert.ack and recording.bookmark: no grant, wrong alert, replay, bad note are refused; the emergency stays raised', async (t) => {
  const supervisor = await makeIssuer({ kid: 'console', actions: ['record.start', 'record.stop', 'stream.start', 'stream.stop', 'alert.ack', 'recording.bookmark'] as CommandAction[] });
  // A key the force issued for recording only (e.g. a dispatch system's): no alert.ack, no bookmark.
  const recordOnly = await makeIssuer({ kid: 'record-only', actions: ['record.start', 'record.stop'] });
  const rig = await startAgentOnBroker(t, { deviceId, issuers: [supervisor, recordOnly], capturing: true, config: { stream: { whileNotRecording: 'refuse' } } });
  const { recorder, stateDir } = rig;
  const fleet = await FleetClient.connect(rig.broker.url);
  t.teardown(() => fleet.close());
  const ctl = async (...args: string[]) => JSON.parse((await run(agentBin, ['ctl', ...args, '--state-dir', stateDir])).stdout) as Record<string, unknown>;
  type Officer = { emergency: null | { alertId: string; acknowledgedBy: string | null } };
  const officer = () => recorder.on('state').at(-1)?.json?.officer as Officer | undefined;
  const events = (type: string) => recorder.on('event').filter((m) => m.json?.type === type).map((m) => m.json!);
  const send = (action: CommandAction, claims: Record<string, unknown>, issuer = supervisor) => {
    const command = makeCommand({ issuer, deviceId, action, overrides: claims });
    return { command, reply: fleet.request(deviceId, command.payload) };
  };

  // What is watched is recorded, "refuse": no live view of a camera that is not recording.
  t.match(await send('stream.start', {}).reply, { ok: false, code: 'not_recording', message: /whileNotRecording/ }, 'stream.start while not recording, policy refuse: not_recording');
  await recorder.waitFor(() => recorder.on('audit').some((m) => (m.json?.entry as { type?: string; code?: string } | undefined)?.code === 'not_recording'), 15_000, 'the refusal audited');
  t.equal(events('stream.started').length + events('recording.started').length, 0, 'no live view opened, no recording started by it');

  await ctl('button', 'function', 'hold');
  await recorder.waitFor(() => events('officer.emergency').length === 1 && officer()?.emergency != null, 30_000, 'the emergency raised (event and state)');
  const alertId = events('officer.emergency')[0]!.alertId as string;
  t.match(alertId, /\S/, 'the alert has an id');

  // 1. A key without the alert.ack grant.
  t.match(await send('alert.ack', { alert_id: alertId, clear: true }, recordOnly).reply, { ok: false, code: 'action_not_permitted' }, 'alert.ack by a key without the grant: action_not_permitted');
  // 2. Another alert id (a stale one, or a guess).
  const wrong = await send('alert.ack', { alert_id: 'alert-00000000', clear: true }).reply;
  t.match(wrong, { ok: false, code: 'unknown_alert' }, 'an ack naming another alert: unknown_alert');
  t.match(wrong.message, /alert-00000000/, 'the refusal names the alert id it did not know');
  // 3. Malformed claims, named.
  t.match(await send('alert.ack', { alert_id: 42 }).reply, { ok: false, code: 'malformed', message: /alert_id/ }, 'alert_id not a string: malformed, naming alert_id');
  t.match(await send('alert.ack', { alert_id: alertId, clear: 'yes' }).reply, { ok: false, code: 'malformed', message: /clear/ }, 'clear not a boolean: malformed, naming clear');
  t.match(await send('alert.ack', {}).reply, { ok: false, code: 'malformed', message: /alert_id/ }, 'no alert_id: malformed');
  t.equal(events('officer.emergency_acknowledged').length + events('officer.emergency_cleared').length, 0, 'no refused command acknowledged or cleared anything');
  t.same(officer()?.emergency?.acknowledgedBy, null, 'the emergency is still raised and unacknowledged');

  // 4. A genuine acknowledgement, then the same payload again.
  const genuine = send('alert.ack', { alert_id: alertId });
  t.match(await genuine.reply, { ok: true, alertId }, 'the genuine acknowledgement is accepted');
  await recorder.waitFor(() => officer()?.emergency?.acknowledgedBy === 'operator:PC-4711', 15_000, 'acknowledgedBy in state');
  t.match(await fleet.request(deviceId, genuine.command.payload), { ok: false, code: 'replayed' }, 'the same acknowledgement again: replayed');
  t.equal(events('officer.emergency_acknowledged').length, 1, 'one acknowledgement event, not two');
  t.not(officer()?.emergency, null, 'an acknowledgement without clear leaves the emergency raised');

  // 5. Bookmarks: the grant, and the note.
  t.match(await send('recording.bookmark', { note: 'suspect left in a red car' }, recordOnly).reply, { ok: false, code: 'action_not_permitted' }, 'a bookmark by a key without the grant: action_not_permitted');
  t.match(await send('recording.bookmark', { note: 'x'.repeat(10_000) }).reply, { ok: false, code: 'malformed', message: /note/ }, 'a 10 KB note: malformed, naming note');
  t.match(await send('recording.bookmark', { note: { text: 'x' } }).reply, { ok: false, code: 'malformed', message: /note/ }, 'a note that is not a string: malformed, naming note');
  t.match(await send('recording.bookmark', { note: 'stopped the car here' }).reply, { ok: true }, 'a short note is accepted');
  await recorder.waitFor(() => events('recording.bookmark').length >= 1, 15_000, 'the bookmark event');
  t.same(events('recording.bookmark').map((e) => e.note), ['stopped the car here'], 'only the accepted bookmark marked anything');

  // 6. The clearing acknowledgement, once; its replay changes nothing.
  const clear = send('alert.ack', { alert_id: alertId, clear: true });
  t.match(await clear.reply, { ok: true }, 'a clearing acknowledgement is accepted');
  await recorder.waitFor(() => officer()?.emergency === null, 15_000, 'the emergency cleared in state');
  t.match(await fleet.request(deviceId, clear.command.payload), { ok: false, code: 'replayed' }, 'its replay: replayed');
  t.match(await send('alert.ack', { alert_id: alertId, clear: true }).reply, { ok: false, code: 'unknown_alert' }, 'a fresh ack of the cleared alert: unknown_alert');
  t.match(events('officer.emergency_cleared'), [{ alertId, by: 'operator', operator: 'operator:PC-4711' }], 'cleared once, by the operator');
});
