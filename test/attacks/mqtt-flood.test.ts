// Threat: anyone who may publish on the broker (no key, no token) floods the camera's `cmd` topic
// with junk commands and its `stream/+/ice-answer` topic with one-byte answers on ~60 KB topics.
// Before the defence every refusal became a fsync'd audit row and an outbox copy carrying the
// topic's sid unclipped, so the flood grew the state database by megabytes a second until the
// disk was full and evidence could not be written. The defence: the sid's shape is checked
// before anything is written, repeated refusals fold into counted summary entries, and the
// command queue is bounded. This test floods the real agent through a real mosquitto with a real
// mqtt.js client and checks that the database grew by well under 2 MB, that the audit still
// accounts for every refusal by code, and that a valid command right after is answered.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import t from 'tap';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';

const deviceId = 'cam-flood';
const junkCommands = 3000;
const longTopicAnswers = 200;

async function databaseBytes(stateDir: string): Promise<number> {
  let total = 0;
  for (const name of ['agent.db', 'agent.db-wal']) {
    total += await stat(path.join(stateDir, name)).then((s) => s.size, () => 0);
  }
  return total;
}

interface Entry {
  type: string;
  decision: string | null;
  code: string | null;
  detail: Record<string, unknown>;
}

t.test('a flood of junk commands and long-topic ICE answers', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { broker, recorder, agent, stateDir } = await startAgentOnBroker(t, { deviceId, issuers: [issuer], logLevel: 'info' });
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await attacker.endAsync(true);
    await fleet.close();
  });
  await agent.waitForOutput(/bwc-agent running/, 30_000);
  const before = await databaseBytes(stateDir);

  const cmdTopic = `bwc/v1/${deviceId}/cmd`;
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < junkCommands; i++) {
    sends.push(attacker.publishAsync(cmdTopic, `{"token":"junk-${i}"}`, { qos: 1, properties: { responseTopic: 'attacker/replies', correlationData: randomBytes(8) } }));
  }
  const longSid = 'x'.repeat(60_000);
  for (let i = 0; i < longTopicAnswers; i++) {
    sends.push(attacker.publishAsync(`bwc/v1/${deviceId}/stream/${longSid}${i}/ice-answer`, 'x', { qos: 1 }));
  }
  await Promise.all(sends);

  const valid = makeCommand({ issuer, deviceId, action: 'record.start' });
  const reply = await fleet.request(deviceId, valid.payload, 60_000);
  t.match(reply, { ok: true }, 'a valid command right after the flood is answered');

  // Every refusal is accounted for: a full entry counts one, a summary its count.
  const entries = () => recorder.on('audit').map((m) => (m.json?.kind === 'entry' ? (m.json.entry as Entry) : undefined)).filter((e): e is Entry => e !== undefined);
  const tally = () => {
    const byCode = new Map<string, number>();
    let commands = 0;
    let answers = 0;
    for (const e of entries()) {
      let source: string | undefined;
      let n = 0;
      if (e.type === 'command.decision' && e.decision === 'rejected') [source, n] = ['cmd', 1];
      else if (e.type === 'stream.ice_refused') [source, n] = ['ice-answer', 1];
      else if (e.type === 'refusals.summarised') [source, n] = [String(e.detail.source), Number(e.detail.count)];
      if (source === undefined) continue;
      if (source === 'cmd') commands += n;
      else answers += n;
      byCode.set(`${source}:${e.code}`, (byCode.get(`${source}:${e.code}`) ?? 0) + n);
    }
    return { commands, answers, byCode };
  };
  await recorder.waitFor(() => {
    const { commands, answers } = tally();
    return commands >= junkCommands && answers >= longTopicAnswers;
  }, 90_000, `the audit to account for ${junkCommands} refused commands and ${longTopicAnswers} refused answers`);
  const { commands, answers, byCode } = tally();
  t.equal(commands, junkCommands, 'every junk command is counted in the audit');
  t.equal(answers, longTopicAnswers, 'every long-topic answer is counted in the audit');
  t.comment(`refusals by source and code: ${JSON.stringify([...byCode])}`);
  const largest = Math.max(...entries().map((e) => JSON.stringify(e).length));
  t.ok(largest < 4096, `no audit entry carries the attacker's bulk (largest ${largest} bytes)`);

  const grown = (await databaseBytes(stateDir)) - before;
  t.comment(`state database + WAL grew by ${grown} bytes`);
  t.ok(grown < 2 * 1024 * 1024, `the state database grew by ${(grown / 1048576).toFixed(2)} MB, under 2 MB`);
  t.equal(agent.child.exitCode, null, 'the agent is still running');
});

// The same flood while the disk is already nearly full: free space inside the evidence reserve
// (recording.evidenceReservePercent, default 5 %). Refusals must not take it (counted, summarised
// once space is back), the outbox holds rather than writes, and recording may still start.
t.test('a flood while free space is inside the evidence reserve', { skip: process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : false }, async (t) => {
  const run = promisify(execFile);
  const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'bwc-reserve-'));
  await run('mount', ['-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', mountPoint]);
  t.teardown(async () => {
    await run('umount', ['-l', mountPoint]).catch(() => undefined);
    await rm(mountPoint, { recursive: true, force: true });
  });
  const stateDir = path.join(mountPoint, 'state');
  await mkdir(stateDir);
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  // A short pre-event buffer, so the capture's own segments stay small beside the reserve.
  const { broker, recorder, agent } = await startAgentOnBroker(t, { deviceId, issuers: [issuer], logLevel: 'info', stateDir, config: { recording: { preEvent: 2 } } });
  const attacker = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(async () => {
    await attacker.endAsync(true);
    await fleet.close();
  });

  // Fill until 1.5 MiB is free: inside the 5 % reserve (3.2 MiB of 64 MiB).
  const fs = await statfs(mountPoint);
  const filler = path.join(mountPoint, 'filler');
  await writeFile(filler, Buffer.alloc(Math.max(0, fs.bavail * fs.bsize - 1.5 * 1024 * 1024)));
  const freeAfterFill = (await statfs(mountPoint)).bavail * (await statfs(mountPoint)).bsize;
  t.comment(`free after filling: ${Math.round(freeAfterFill / 1024)} KiB`);

  const floods = 300;
  const sends: Promise<unknown>[] = [];
  for (let i = 0; i < floods; i++) {
    sends.push(attacker.publishAsync(`bwc/v1/${deviceId}/cmd`, `{"token":"junk-${i}"}`, { qos: 1, properties: { responseTopic: 'attacker/replies', correlationData: randomBytes(8) } }));
  }
  await Promise.all(sends);
  t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'record.start' }).payload, 30_000), { ok: true }, 'recording starts inside the reserve: evidence may use it');
  await agent.waitForOutput(/refusal could not be audited; counted for the next summary/, 30_000);
  await agent.waitForOutput(/inside the evidence reserve/, 30_000);
  t.pass('the refusals were counted, not written, and the log names the evidence reserve');
  const refusedWhileFull = () => recorder.on('audit').filter((m) => (m.json?.entry as Entry | undefined)?.code === 'malformed').length;
  t.equal(refusedWhileFull(), 0, 'no refusal reached the audit while inside the reserve');

  await rm(filler);
  await agent.waitForOutput(/outbox writable again/, 30_000);
  t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'record.stop' }).payload, 30_000), { ok: true }, 'a valid command once space is back');
  const counted = () =>
    recorder
      .on('audit')
      .map((m) => m.json?.entry as Entry | undefined)
      .filter((e): e is Entry => e?.type === 'refusals.summarised' && e.detail.source === 'cmd')
      .reduce((n, e) => n + Number(e.detail.count), 0);
  await recorder.waitFor(() => counted() >= floods, 30_000, `a summary counting all ${floods} refusals`);
  t.equal(counted(), floods, 'once space is back the audit counts every refusal made while inside the reserve');
  t.equal(agent.child.exitCode, null, 'the agent is still running');
});
