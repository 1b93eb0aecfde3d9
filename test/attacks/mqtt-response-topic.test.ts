// Threat: a broker client names the camera's own topics as the MQTT 5 Response Topic of a junk
// command, so the camera publishes its refusal onto e.g. `bwc/v1/<device>/audit`: the fleet's
// captured audit stream then holds a message that is not an audit record and `audit verify
// --file` of it breaks (or another device's topics are written in this camera's name). The
// defence: a Response Topic under the topic root (outside `commands.replyTopicPrefixes`) is
// refused, the command is not acted on, the refusal is audited, and nothing is published there.
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import t from 'tap';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { MqttRecorder } from '../helpers/mqtt-recorder.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';

const deviceId = 'cam-reply';

t.test('a Response Topic on the camera\'s own topics', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { broker } = await startAgentOnBroker(t, { deviceId, issuers: [issuer], logLevel: 'info' });
  // Beside the rig's own recorder (the device's topics): this one also sees another device's.
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/#');
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await attacker.endAsync(true);
    await fleet.close();
    await recorder.close();
  });

  const cmd = `bwc/v1/${deviceId}/cmd`;
  const hostile = [`bwc/v1/${deviceId}/audit`, `bwc/v1/${deviceId}/state`, 'bwc/v1/cam-other/event'];
  for (const responseTopic of hostile) {
    await attacker.publishAsync(cmd, '{"token":"junk"}', { qos: 1, properties: { responseTopic, correlationData: randomBytes(8) } });
  }
  // A signed, valid command aimed at the audit topic is not acted on either.
  const signed = makeCommand({ issuer, deviceId, action: 'record.start' });
  await attacker.publishAsync(cmd, signed.payload, { qos: 1, properties: { responseTopic: `bwc/v1/${deviceId}/audit`, correlationData: randomBytes(8) } });

  // Commands are handled in order: when this one is answered, the hostile ones have been handled.
  const after = makeCommand({ issuer, deviceId, action: 'record.stop' });
  const reply = await fleet.request(deviceId, after.payload, 30_000);
  t.match(reply, { code: 'not_recording' }, 'a later valid command is answered, and the signed command with a hostile Response Topic did not start a recording');

  const notAudit = recorder.on('audit').filter((m) => m.json?.kind !== 'entry' && m.json?.kind !== 'checkpoint');
  t.same(notAudit.map((m) => m.payload), [], 'nothing but audit records on the audit topic');
  t.same(recorder.messages.filter((m) => m.topic.endsWith('/state') && m.json?.ok !== undefined).map((m) => m.payload), [], 'no reply on the state topic');
  t.same(recorder.messages.filter((m) => m.topic.startsWith('bwc/v1/cam-other/')).map((m) => m.payload), [], "no reply on another device's topics");

  const refusalAudited = () =>
    recorder
      .on('audit')
      .map((m) => m.json?.entry as { type?: string; code?: string; detail?: { responseTopic?: string; count?: number } } | undefined)
      .filter((e) => e?.code === 'response_topic_refused');
  await recorder.waitFor(() => refusalAudited().length > 0, 30_000, 'the refused Response Topic in the audit');
  t.match(refusalAudited()[0], { detail: { responseTopic: `bwc/v1/${deviceId}/audit` } }, 'the audit names the refused Response Topic');
  t.same(recorder.on('audit').filter((m) => m.json?.kind !== 'entry' && m.json?.kind !== 'checkpoint').length, 0, 'still nothing but audit records on the audit topic');
});
