// The disk nearly full with the store unreachable: recording goes on inside the evidence reserve
// (recording.evidenceReservePercent), the retention policy keeps every recording that is not in
// the store (nothing is deleted to make room), and the agent says so once in the audit trail
// (`offload.backlog`), which reaches the fleet once the disk takes the outbox's writes again.
// Needs root to mount a small tmpfs, as test/disk-full.test.ts does.
import { execFile } from 'node:child_process';
import { statfsSync, readdirSync } from 'node:fs';
import { mkdtemp, open, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { runCli } from './helpers/agent-process.ts';
import { startAgentOnBroker } from './helpers/agent-on-broker.ts';
import { auditEntries, offloadConfig, waitAudit, waitForSegments, waitOffloadState } from './helpers/offload-rig.ts';

const run = promisify(execFile);
t.setTimeout(300_000);

t.test('disk nearly full, store unreachable: recording goes on in the reserve, nothing deleted, audited', { skip: process.getuid?.() !== 0 ? 'mounting a tmpfs needs root' : false }, async (t) => {
  const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'bwc-offload-full-'));
  await run('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mountPoint]);
  t.teardown(async () => {
    await run('umount', ['-l', mountPoint]).catch(() => undefined);
    await rm(mountPoint, { recursive: true, force: true });
  });
  const stateDir = path.join(mountPoint, 'state');
  await run('mkdir', ['-p', stateDir]);
  const credentialsFile = path.join(mountPoint, 'store.yaml');
  await (await open(credentialsFile, 'w')).writeFile('accessKeyId: "a"\nsecretAccessKey: "b"\n');
  const config = offloadConfig({ endpoint: 'http://127.0.0.1:9', bucket: 'evidence', credentialsFile });
  const a = await startAgentOnBroker(t, { deviceId: 'cam-offload-full', capturing: true, stateDir, config: { ...config, recording: { preEvent: 0, evidenceReservePercent: 40 } } });

  const start = await runCli(['ctl', 'record', 'start', '--state-dir', stateDir]);
  const id = (JSON.parse(start.stdout) as { recordingId: string }).recordingId;
  const dir = path.join(stateDir, 'evidence', 'recordings', id);
  await waitForSegments(dir, 1);
  // Fill the disk until a fifth of it is free: inside the 40 % reserve, room for segments.
  const fs = statfsSync(mountPoint);
  const keepFree = fs.blocks * fs.bsize * 0.2;
  const filler = path.join(mountPoint, 'filler');
  const h = await open(filler, 'w');
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  for (;;) {
    const s = statfsSync(mountPoint);
    if (s.bavail * s.bsize <= keepFree + chunk.length) break;
    await h.write(chunk);
  }
  await h.close();
  const segmentsAtFull = readdirSync(dir).filter((f) => /\.ts(\.age)?$/.test(f)).length;
  await waitForSegments(dir, segmentsAtFull + 2);
  t.pass('recording goes on inside the evidence reserve');
  await runCli(['ctl', 'record', 'stop', '--state-dir', stateDir]);
  const st = await waitOffloadState(a.recorder, (o) => o.recordingsPending === 1 && o.lastError !== null, 'state: one recording pending, the store unreachable');
  t.match(st.lastError!.message, /^offload\.endpoint: cannot reach the store/);

  // Space back: the outbox delivers what it held, the backlog entry among it.
  await unlink(filler);
  const backlog = await waitAudit(a.recorder, (e) => e.type === 'offload.backlog', 'offload.backlog audited');
  t.match(backlog[0]!.detail, { policy: 'kept until uploaded', recordingsPending: 1, disk: /evidence reserve/ });
  t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.delete'), 'nothing deleted');
  const verify = await runCli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(verify.code, 0, `every segment is still on the camera: ${verify.stdout}`);
});
