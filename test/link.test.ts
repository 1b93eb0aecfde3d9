// The acceptance of the MQTT link: a broker outage and an agent restart delay telemetry but lose
// none of it, and a killed agent is marked offline by its Last Will.
import path from 'node:path';
import t, { type Test } from 'tap';
import { controlRequest } from '../src/control/control-socket.ts';
import { spawnAgent, tempStateDir, type AgentProcess } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { gpsLogPath, startGpsfake } from './helpers/gpsfake.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder, type Received } from './helpers/mqtt-recorder.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const deviceId = 'cam-link';

/** First-seen order of seq per channel, plus how many duplicates arrived. */
function sequence(messages: Received[]): { seqs: number[]; duplicates: number } {
  const seen = new Set<number>();
  const seqs: number[] = [];
  let duplicates = 0;
  for (const m of messages) {
    const seq = m.json?.seq;
    if (typeof seq !== 'number') continue;
    if (seen.has(seq)) duplicates += 1;
    else {
      seen.add(seq);
      seqs.push(seq);
    }
  }
  return { seqs, duplicates };
}

function assertContiguous(t: Test, messages: Received[], channel: string): number {
  const { seqs, duplicates } = sequence(messages);
  t.ok(seqs.length > 0, `${channel}: messages arrived`);
  t.same(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `${channel}: seq 1..${seqs.length}, in order, no gaps (${duplicates} duplicate deliveries)`);
  return seqs.length;
}

async function queued(stateDir: string): Promise<number> {
  const status = (await controlRequest(path.join(stateDir, 'control.sock'), 'status')) as { link: { outbox: { queued: number } } };
  return status.link.outbox.queued;
}

t.test('broker outage, agent restart, kill -9', async (t) => {
  const broker = await startBroker();
  const gps = await startGpsfake(gpsLogPath('bu353s4.log'), { cycleS: 0.05, maxSeconds: 300 });
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir);
  const env = { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: `127.0.0.1:${gps.port}` };
  let agent: AgentProcess = spawnAgent(['run', '--config', config], env);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await recorder.close();
    await gps.stop();
    await broker.dispose();
  });

  await recorder.waitFor(() => recorder.on('gps').length >= 3, 30_000, 'gps messages before the outage');

  // 1. The broker is down for 30 s while fixes keep coming.
  await broker.stop();
  const outageStart = Date.now();
  await sleep(30_000);
  const queuedDuringOutage = await queued(stateDir);
  t.ok(queuedDuringOutage >= 20, `fixes were queued during the outage (${queuedDuringOutage})`);
  await broker.start();
  await recorder.waitFor(() => recorder.on('event').some((m) => m.json?.type === 'link.restored'), 60_000, 'link.restored');
  await recorder.waitFor(() => recorder.on('gps').length >= 40, 60_000, 'the backlog');
  const duringOutage = recorder.on('gps').filter((m) => {
    const time = Date.parse(String(m.json?.time));
    return time > outageStart + 1000 && time < outageStart + 29_000;
  });
  t.ok(duringOutage.length >= 20, `fixes taken during the outage arrived afterwards (${duringOutage.length})`);
  const restored = recorder.on('event').find((m) => m.json?.type === 'link.restored');
  t.ok(Number(restored?.json?.outageS) >= 25, `link.restored reports the outage (${String(restored?.json?.outageS)} s)`);

  // 2. Broker down again, and the agent restarts while it is: the outbox lives in SQLite.
  await broker.stop();
  // A backlog for the next process to find: fixes queued since the broker went (not "3 s must be enough").
  const queuing = Date.now() + 30_000;
  while ((await queued(stateDir)) === 0 && Date.now() < queuing) await sleep(200);
  const beforeRestart = (await agent.stop('SIGTERM')).code;
  t.equal(beforeRestart, 0, 'clean exit with the broker down');
  t.match(agent.output, /"msg":"bwc-agent stopped"/);
  agent = spawnAgent(['run', '--config', config], env);
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  t.ok((await queued(stateDir)) > 0, 'the new process holds the old backlog');
  await broker.start();
  await recorder.waitFor(() => recorder.on('event').filter((m) => m.json?.type === 'agent.started').length >= 2, 60_000, 'second agent.started');
  await recorder.waitFor(() => recorder.on('event').filter((m) => m.json?.type === 'link.restored').length >= 1, 60_000, 'events');
  // Let the backlog drain and a few fresh fixes arrive after it.
  const drained = Date.now() + 60_000;
  // The reading that ended the wait is the one judged: the agent keeps queueing fixes (one a second),
  // so asking again can catch a fresh one before its PUBACK.
  let left = await queued(stateDir);
  while (left > 0 && Date.now() < drained) {
    await sleep(200);
    left = await queued(stateDir);
  }
  t.equal(left, 0, 'outbox drained');
  // Acknowledged by the broker is not yet delivered to the recorder: wait for what is checked below.
  await recorder
    .waitFor(
      () => sequence(recorder.on('gps')).seqs.length > 40 && sequence(recorder.on('event')).seqs.length >= 4 && recorder.on('event').some((m) => m.json?.type === 'agent.stopping'),
      30_000,
      'the drained backlog at the recorder',
    )
    .catch(() => undefined); // the assertions below name what is missing

  const gpsCount = assertContiguous(t, recorder.on('gps'), 'gps');
  const eventCount = assertContiguous(t, recorder.on('event'), 'event');
  const types = recorder.on('event').map((m) => m.json?.type);
  t.ok(types.includes('agent.stopping'), 'the first process said it was stopping');
  t.ok(gpsCount > 40 && eventCount >= 4, `gps ${gpsCount}, events ${eventCount}`);

  // 3. kill -9: the broker publishes the retained Last Will.
  await recorder.waitFor(() => recorder.on('state').some((m) => m.json?.online === true), 10_000, 'online state');
  const statesBefore = recorder.on('state').length;
  const killed = await agent.stop('SIGKILL');
  t.equal(killed.signal, 'SIGKILL');
  await recorder.waitFor(() => recorder.on('state').length > statesBefore && recorder.on('state').at(-1)?.json?.online === false, 30_000, 'the Last Will');
  const will = recorder.on('state').at(-1)!;
  t.equal(will.json?.reason, 'connection lost');
  t.equal(will.json?.deviceId, deviceId);

  // The Last Will is retained: a console that connects later still sees the camera offline.
  const late = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/state`);
  t.teardown(() => late.close());
  await late.waitFor(() => late.messages.length > 0, 10_000, 'retained state');
  t.equal(late.messages[0]!.retain, true);
  t.equal(late.messages[0]!.json?.online, false);

  // 4. After kill -9 the outbox and its sequence numbers carry on where they were.
  agent = spawnAgent(['run', '--config', config], env);
  await recorder.waitFor(() => recorder.on('event').filter((m) => m.json?.type === 'agent.started').length >= 3, 30_000, 'third agent.started');
  await recorder.waitFor(() => recorder.on('gps').length >= gpsCount + 3, 30_000, 'fixes after the restart');
  assertContiguous(t, recorder.on('gps'), 'gps after kill -9 and restart');
  assertContiguous(t, recorder.on('event'), 'event after kill -9 and restart');
  await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.online === true, 10_000, 'online again');
  t.equal((await agent.stop('SIGTERM')).code, 0);
});
