// Issue 20's archive acceptance, with the real agent process, real mosquitto and the console's
// receiving side (Fleet with its fixed client id and persistent session, the archive link and chain
// verifier) for each backend, SQLite and a real PostgreSQL:
// - the console restarted mid-stream keeps the chain "verified" (what the camera published while
//   it was down waited in its broker session);
// - the console away longer than the broker kept its session: the gap is back-filled through a
//   signed audit.fetch the agent answers by republishing the range through its outbox;
// - the camera's database put back to an older copy: its head goes backwards, the alarm is raised.
// Entries are made by commands the agent audits (each audit.fetch it accepts is one entry).
import { copyFile } from 'node:fs/promises';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { JWK } from 'jose';
import mqtt from 'mqtt';
import t from 'tap';
import { generateIssuerKeys, signCommand } from '../src/cli/fleet-tools.ts';
import { openArchive, type Archive } from '../ops-console/archive/archive.ts';
import { ArchiveLink } from '../ops-console/archive-link.ts';
import type { ChainStatus } from '../ops-console/chain-verifier.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { startAgentOnBroker } from './helpers/agent-on-broker.ts';
import { spawnAgent } from './helpers/agent-process.ts';
import { FleetClient } from './helpers/fleet-client.ts';
import { startPostgres } from './helpers/postgres.ts';

const device = 'cam-e2e-1';

t.test('the archive with a real agent', async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.dispose());
  const keys = await generateIssuerKeys(await mkdtemp(path.join(os.tmpdir(), 'bwc-archive-e2e-keys-')), ['stream.start', 'stream.stop', 'audit.fetch']);
  let dbs = 0;

  for (const backend of ['sqlite', 'postgresql'] as const) {
    t.test(backend, async (t) => {
      const spec = backend === 'sqlite' ? `sqlite:${path.join(await mkdtemp(path.join(os.tmpdir(), 'bwc-archive-e2e-')), 'archive.sqlite')}` : await freshPgDatabase(pg.url, `e2e${++dbs}`);
      const rig = await startAgentOnBroker(t, { deviceId: device, config: { commands: { trustStore: keys.trustStoreFile }, audit: { checkpointEvery: 3 } } });
      const fleetClient = await FleetClient.connect(rig.broker.url);
      t.teardown(() => fleetClient.close());
      // One accepted command, one audit entry on the camera.
      const entry = async () => {
        const token = await signCommand({ keyFile: keys.privateJwkFile, device, action: 'audit.fetch', reason: 'audit-gap', operator: 'test', issuer: 'test', fromSeq: 1, toSeq: 1 });
        const reply = await fleetClient.request(device, JSON.stringify({ token }));
        if (!reply.ok) throw new Error(`the agent refused: ${JSON.stringify(reply)}`);
      };
      const cameraHead = () => {
        const states = rig.recorder.on('state').filter((m) => m.json?.online === true);
        return (states.at(-1)?.json?.auditHead as { seq: number; hash: string } | undefined)?.seq ?? 0;
      };
      const waitHead = async (seq: number) => rig.recorder.waitFor(() => cameraHead() >= seq, 20_000, `the camera's auditHead at ${seq}`);

      // Enrolled at issue: the device key read from the camera itself, not from the broker.
      const pem = await readFile(path.join(rig.stateDir, 'device-key.private.pem'), 'utf8');
      const publicJwk = createPublicKey(createPrivateKey(pem)).export({ format: 'jwk' }) as JWK;
      const admin = await openArchive(spec);
      await admin.enrol({ deviceId: device, publicJwk, kid: (await import('../src/audit/verify.ts')).jwkThumbprint(publicJwk), enrolledBy: 'fleet-admin', enrolledAt: new Date().toISOString() });
      await admin.close();

      interface Console { fleet: Fleet; link: ArchiveLink; archive: Archive; logs: string[] }
      const consoles: Console[] = [];
      const startConsole = async (): Promise<Console> => {
        const archive = await openArchive(spec);
        const logs: string[] = [];
        const fleet = await Fleet.connect(rig.broker.url, `ops-console-e2e-${backend}`);
        const link = await ArchiveLink.open({ fleet, archive, issuerKeyFile: keys.privateJwkFile, issuer: 'e2e-console', gapGraceMs: 300, log: (l) => logs.push(l) });
        const c = { fleet, link, archive, logs };
        consoles.push(c);
        return c;
      };
      const stopConsole = async (c: Console) => {
        await c.fleet.close();
        await c.link.close();
        await c.archive.close();
        consoles.splice(consoles.indexOf(c), 1);
      };
      t.teardown(async () => {
        for (const c of [...consoles]) await stopConsole(c);
      });
      /** Resolves with the first status at or past `seq` that is verified; rejects (naming the last) after the hang guard. */
      const verifiedAt = (c: Console, seq: number) =>
        new Promise<ChainStatus>((resolve, reject) => {
          let last: ChainStatus | undefined;
          const timer = setTimeout(() => reject(new Error(`not verified to ${seq} within 30 s; last: ${JSON.stringify(last?.summary)}\n${c.logs.join('\n')}`)), 30_000);
          const check = (s: ChainStatus) => {
            if (s.deviceId !== device) return;
            last = s;
            if (s.ok === true && s.head.seq >= seq) {
              clearTimeout(timer);
              c.link.verifier.off('status', check);
              resolve(s);
            }
          };
          c.link.verifier.on('status', check);
          void c.link.verifier.status(device).then(check);
        });

      // 1. Verified while it runs.
      let c = await startConsole();
      for (let i = 0; i < 4; i += 1) await entry();
      await waitHead(5);
      let st = await verifiedAt(c, cameraHead());
      t.equal(st.ok, true, st.summary);

      // 2. Restarted mid-stream: what the camera published meanwhile waited in the broker session.
      await stopConsole(c);
      for (let i = 0; i < 4; i += 1) await entry();
      await waitHead(9);
      c = await startConsole();
      st = await verifiedAt(c, cameraHead());
      t.equal(st.ok, true, `after a restart: ${st.summary}`);
      t.notOk(c.logs.some((l) => /asking .* audit\.fetch/.test(l)), 'nothing had to be asked for');

      // 3. Away longer than the broker kept the session (here: the session is dropped): a gap.
      await stopConsole(c);
      for (let i = 0; i < 5; i += 1) await entry();
      await waitHead(14);
      const dropper = await mqtt.connectAsync(rig.broker.url, { protocolVersion: 5, clientId: `ops-console-e2e-${backend}`, clean: true });
      await dropper.endAsync();
      for (let i = 0; i < 2; i += 1) await entry();
      await waitHead(16);
      c = await startConsole();
      // The console's own audit.fetch commands are entries too: wait for the camera's head after them.
      st = await verifiedAt(c, 16);
      t.equal(st.ok, true, `after a gap: ${st.summary}`);
      t.ok(c.logs.some((l) => /asking cam-e2e-1 for audit entries \d+ to \d+ \(audit\.fetch\)/.test(l)), 'the gap was asked of the camera');
      const fetched = await c.archive.events({ deviceId: device, type: 'audit.fetch.sent' });
      t.ok(fetched.length >= 1, 'and recorded');
      const audited = (await c.archive.entries(device)).filter((e) => e.action === 'audit.fetch' && e.operator === 'e2e-console');
      t.ok(audited.length >= 1, 'the camera audited the console\'s audit.fetch');
      t.same(await c.archive.alerts.list({ deviceId: device }), [], 'no alert on a normal day');

      // 4. The camera's database put back to an older copy: its head goes backwards.
      await rig.agent.stop('SIGTERM');
      const db = path.join(rig.stateDir, 'agent.db');
      await copyFile(db, `${db}.old`);
      const agent2 = spawnAgent(['run', '--config', path.join(rig.stateDir, 'config.yaml')], { BWC_DEVICE_ID: device, BWC_MQTT_URL: rig.broker.url, BWC_STATE_DIR: rig.stateDir, BWC_GPSD: '127.0.0.1:9' });
      t.teardown(() => agent2.stop('SIGKILL'));
      const before = rig.recorder.on('state').length;
      await rig.recorder.waitFor(() => rig.recorder.on('state').slice(before).some((m) => m.json?.online === true), 60_000, 'the agent back online');
      for (let i = 0; i < 3; i += 1) await entry();
      const ahead = cameraHead();
      await verifiedAt(c, ahead);
      await agent2.stop('SIGTERM');
      await copyFile(`${db}.old`, db);
      const alarm = new Promise<void>((resolve) => c.link.verifier.on('alert', (a) => a.rule === 'chain_rollback' && resolve()));
      const agent3 = spawnAgent(['run', '--config', path.join(rig.stateDir, 'config.yaml')], { BWC_DEVICE_ID: device, BWC_MQTT_URL: rig.broker.url, BWC_STATE_DIR: rig.stateDir, BWC_GPSD: '127.0.0.1:9' });
      t.teardown(() => agent3.stop('SIGKILL'));
      await Promise.race([alarm, agent3.exited.then(() => Promise.reject(new Error(`the agent exited:\n${agent3.output.slice(-2000)}`)))]);
      const alerts = await c.archive.alerts.list({ deviceId: device, rule: 'chain_rollback' });
      t.equal(alerts.length, 1, 'the rolled-back camera raised the alarm');
      t.match(alerts[0], { severity: 'critical', detail: { message: /went back from seq \d+ to \d+/ } });
    });
  }
});

async function freshPgDatabase(url: string, name: string): Promise<string> {
  const pg = await import('pg');
  const c = new pg.default.Client({ connectionString: url });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  return url.replace('/postgres?', `/${name}?`);
}
