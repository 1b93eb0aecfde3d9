// Threat: a broker client publishes huge payloads (hundreds of MiB) to the camera's `cmd` topic.
// Without an MQTT 5 Maximum Packet Size in its CONNECT, the agent takes each whole packet into
// memory before refusing it as too_large: its memory peaked from 235 to 417 MB on two 200 MiB
// publishes and it lost its broker connection three times. The defence: the agent announces a
// Maximum Packet Size (commands.maxPayloadBytes plus headroom), so the broker drops larger
// messages for this client (MQTT 5 section 3.1.2.11.4) and they never reach the camera. This test
// publishes a payload above the limit to `cmd` with a real mqtt.js client: the agent never sees
// it (no reply, no audit), stays connected, and answers a valid command after it.
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import t from 'tap';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';

const deviceId = 'cam-big';

t.test('a payload above the Maximum Packet Size', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { broker, recorder, agent } = await startAgentOnBroker(t, { deviceId, issuers: [issuer], logLevel: 'info' });
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  const replies: { topic: string; body: string; correlation: string | undefined }[] = [];
  let onReply = () => {};
  attacker.on('message', (topic, payload, packet) => {
    replies.push({ topic, body: payload.toString('utf8'), correlation: packet.properties?.correlationData?.toString('hex') });
    onReply();
  });
  await attacker.subscribeAsync('attacker/replies', { qos: 1 });
  t.teardown(() => attacker.endAsync(true));
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  const connections = () => agent.output.split('\n').filter((l) => l.includes('connected to the broker') && !l.includes('disconnected')).length;
  const connectedBefore = connections();

  const cmd = `bwc/v1/${deviceId}/cmd`;
  const big = randomBytes(8);
  await attacker.publishAsync(cmd, Buffer.alloc(8 * 1024 * 1024, 0x41), { qos: 1, properties: { responseTopic: 'attacker/replies', correlationData: big } });
  const valid = makeCommand({ issuer, deviceId, action: 'record.stop' });
  const small = randomBytes(8);
  // Commands are handled in order: when the valid one is answered, a delivered big one would have been too.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no reply to the valid command within 30 s; replies: ${JSON.stringify(replies)}`)), 30_000);
    onReply = () => {
      if (replies.some((r) => r.correlation === small.toString('hex'))) {
        clearTimeout(timer);
        resolve();
      }
    };
    attacker.publish(cmd, valid.payload, { qos: 1, properties: { responseTopic: 'attacker/replies', correlationData: small } });
  });
  t.match(JSON.parse(replies.find((r) => r.correlation === small.toString('hex'))!.body), { code: 'not_recording' }, 'the valid command after it is answered');
  t.same(replies.filter((r) => r.correlation === big.toString('hex')).map((r) => r.body), [], 'the oversized publish never reached the agent (no reply to it)');
  t.notOk(/"code":"too_large"/.test(agent.output), 'and the agent logged no too_large refusal for it');
  t.equal(connections(), connectedBefore, 'the agent did not reconnect');
  t.notOk(recorder.on('state').some((m) => m.json?.online === false), 'the agent never went offline');
});
