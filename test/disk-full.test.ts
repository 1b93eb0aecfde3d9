// A full disk under the state folder: the agent says so (log, `ctl status`, retained state), keeps
// running and publishing state, holds telemetry in memory, and when space returns stores and
// delivers all of it in order. Needs root to mount a small tmpfs; skipped (and reported as
// skipped) without it.
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { controlRequest } from '../src/control/control-socket.ts';
import { spawnAgent } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { gpsLogPath, startGpsfake } from './helpers/gpsfake.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status {
  link: { outbox: { queued: number; held: number; writeError?: string } };
}

async function fillUp(file: string): Promise<void> {
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  try {
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

t.test('disk full under the state folder', { skip: process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : false }, async (t) => {
  const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'bwc-full-'));
  await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
  t.teardown(async () => {
    await run('umount', ['-l', mountPoint]).catch(() => undefined);
    await rm(mountPoint, { recursive: true, force: true });
  });
  const stateDir = path.join(mountPoint, 'state');
  const broker = await startBroker();
  const gps = await startGpsfake(gpsLogPath('bu353s4.log'), { cycleS: 0.05, maxSeconds: 200 });
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/cam-full/#');
  await run('mkdir', ['-p', stateDir]);
  const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir, { health: { interval: 5, storageLowPercent: 5 } })], {
    BWC_DEVICE_ID: 'cam-full',
    BWC_MQTT_URL: broker.url,
    BWC_STATE_DIR: stateDir,
    BWC_GPSD: `127.0.0.1:${gps.port}`,
  });
  t.teardown(async () => {
    await agent.stop('SIGTERM');
    await recorder.close();
    await gps.stop();
    await broker.dispose();
  });
  const status = async () => (await controlRequest(path.join(stateDir, 'control.sock'), 'status')) as Status;

  await recorder.waitFor(() => recorder.on('gps').length >= 3, 30_000, 'gps before the disk fills');
  const filler = path.join(mountPoint, 'filler');
  await fillUp(filler);
  const fullAt = Date.now();

  const deadline = Date.now() + 60_000;
  while ((await status()).link.outbox.writeError === undefined && Date.now() < deadline) await sleep(250);
  const failing = await status();
  t.match(failing.link.outbox.writeError, /SQLITE_FULL|full/i, `ctl status names the problem: ${failing.link.outbox.writeError}`);
  await agent.waitForOutput(/cannot write to the outbox \(disk full\?\)/, 10_000);
  await recorder.waitFor(() => recorder.on('state').some((m) => typeof (m.json?.link as { outboxWriteError?: unknown } | undefined)?.outboxWriteError === 'string'), 15_000, 'the retained state shows the write error');
  // While the disk is full: a health sample raises storage.low (every health.interval, 5 s), and
  // three messages wait in memory (at most one of them that event). Waited for, not assumed of a
  // fixed 4 s that a loaded machine may fill with fewer fixes and no health sample.
  await agent.waitForOutput(/"msg":"storage\.low"/, 30_000);
  let holding = await status();
  const holdDeadline = Date.now() + 60_000;
  while (holding.link.outbox.held < 3 && Date.now() < holdDeadline) {
    await sleep(250);
    holding = await status();
  }
  t.ok(holding.link.outbox.held >= 3, `telemetry held in memory meanwhile (${holding.link.outbox.held})`);
  t.equal(agent.child.exitCode, null, 'the agent is still running');

  await rm(filler);
  const freedAt = Date.now();
  const recovered = Date.now() + 60_000;
  while (Date.now() < recovered) {
    const s = await status();
    if (s.link.outbox.writeError === undefined && s.link.outbox.held === 0 && s.link.outbox.queued === 0) break;
    await sleep(250);
  }
  const after = await status();
  t.equal(after.link.outbox.writeError, undefined, 'the error clears when space returns');
  t.equal(after.link.outbox.held, 0, 'held messages were stored');
  await agent.waitForOutput(/outbox writable again/, 10_000);
  // Stored and published is not yet received here: wait for the held fixes themselves.
  const heldFixes = () =>
    recorder.on('gps').filter((m) => {
      const time = Date.parse(String(m.json?.time));
      return time > fullAt && time < freedAt;
    });
  await recorder.waitFor(() => heldFixes().length >= 2, 30_000, 'the fixes held while the disk was full').catch(() => undefined);
  t.ok(heldFixes().length >= 2, `fixes taken while the disk was full were delivered (${heldFixes().length})`);

  const seqs = recorder.on('gps').map((m) => Number(m.json?.seq));
  const unique = [...new Set(seqs)];
  t.same(unique, Array.from({ length: unique.length }, (_, i) => i + 1), `gps seq 1..${unique.length} contiguous and in order`);
  // storage.low was raised while the disk was full, so it waited in memory like the fixes.
  await recorder.waitFor(() => recorder.on('event').some((m) => m.json?.type === 'storage.low'), 15_000, 'storage.low');
  const events = recorder.on('event').map((m) => Number(m.json?.seq));
  t.same([...new Set(events)], Array.from({ length: new Set(events).size }, (_, i) => i + 1), 'events contiguous');
});
