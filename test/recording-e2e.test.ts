// Capture and evidence recording with the real `test` pipeline in its worker, driven the way an
// operator would (`bwc-agent ctl record start|stop`), checked the way an auditor would
// (`bwc-agent evidence verify`, GStreamer decoding the files, decrypted with the test's age key).
import { execFile } from 'node:child_process';
import { readdir, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import t from 'tap';
import { runCli, spawnAgent, tempStateDir, type AgentProcess } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { decodedVideo } from './helpers/decode.ts';
import { decryptedCopy } from './helpers/age-keys.ts';
import { startBroker } from './helpers/mosquitto.ts';

const run = promisify(execFile);
// Tap's 300 s per file is a quiet machine's figure: twelve kill -9 rounds of a 720p30 x264 worker
// took over 300 s once both cores were shared with other test files and builds. The bound here
// is a hang guard, not a speed requirement.
t.setTimeout(900_000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status {
  recording: boolean;
  capture: { status: string; pid: number | null; restarts: number } | null;
}

const cli = runCli;

async function status(stateDir: string): Promise<Status> {
  return JSON.parse((await cli(['ctl', 'status', '--state-dir', stateDir])).stdout) as Status;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

/**
 * Frames a real H.264 decoder gets out of a file (gst-discoverer reports no duration for small
 * MPEG-TS files, so frames are counted), or -1 when GStreamer fails to decode it.
 */
async function decodedFrames(file: string): Promise<number> {
  try {
    const { stdout } = await run(
      'gst-launch-1.0',
      ['-v', 'filesrc', `location=${file}`, '!', 'tsdemux', '!', 'h264parse', '!', 'openh264dec', '!', 'fakesink', 'silent=false'],
      { maxBuffer: 64 * 1024 * 1024 },
    );
    return stdout.split('\n').filter((l) => /fakesink0: last-message = chain/.test(l)).length;
  } catch {
    return -1;
  }
}

/** The newest recording's status in the agent's database (read-only, beside the running agent). */
async function lastRecordingStatus(stateDir: string): Promise<string | undefined> {
  const db = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  try {
    return (db.prepare('SELECT status FROM recording ORDER BY started_at DESC LIMIT 1').get() as { status: string } | undefined)?.status;
  } finally {
    db.close();
  }
}

async function recordingDirs(stateDir: string): Promise<string[]> {
  const root = path.join(stateDir, 'evidence', 'recordings');
  return (await readdir(root)).sort().map((d) => path.join(root, d));
}

async function segmentsOf(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.endsWith('.ts.age')).sort().map((f) => path.join(dir, f));
}

t.test('10 s recording with a 5 s pre-event buffer, verified and decoded; tampering is named', async (t) => {
  const broker = await startBroker();
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, { recording: { preEvent: 5 } });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: 'cam-rec', BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await broker.dispose();
  });
  await until('capture running', async () => (await status(stateDir)).capture?.status === 'running');
  // Fill more than the 5 s pre-event buffer: waited for on the segments themselves, not a fixed 7 s
  // from "running" (which the worker reports before its first segment; on a loaded machine the
  // buffer then held less than the test counts on). Index 3 in the buffer folder means at least
  // three 2 s segments have closed before it (four, once encrypted: a file lands there when closed).
  const bufferDir = path.join(stateDir, 'evidence', 'buffer');
  const newestIndex = async () => Math.max(-1, ...(await readdir(bufferDir)).map((n) => Number(/-(\d{6})\.ts(\.age)?$/.exec(n)?.[1] ?? -1)));
  await until('three segments in the pre-event buffer', async () => (await newestIndex()) >= 3);
  t.equal((await cli(['ctl', 'record', 'start', '--state-dir', stateDir])).code, 0, 'ctl record start');
  t.equal((await status(stateDir)).recording, true, 'state says recording at once');
  await sleep(10_000);
  t.equal((await cli(['ctl', 'record', 'stop', '--state-dir', stateDir])).code, 0, 'ctl record stop');
  t.equal((await status(stateDir)).recording, false);
  // The segment open at stop closes and joins, and the recording is sealed: waited for, not assumed of 4 s.
  await until('the recording closed', async () => (await lastRecordingStatus(stateDir)) === 'closed');
  t.equal((await agent.stop('SIGTERM')).code, 0);

  const [dir] = await recordingDirs(stateDir);
  t.ok(dir, 'one recording folder');
  const files = await segmentsOf(dir!);
  let total = 0;
  for (const f of files) {
    const { seconds } = await decodedVideo(await decryptedCopy(f));
    t.ok(seconds > 0, `${path.basename(f)} decodes with GStreamer (${seconds.toFixed(1)} s)`);
    total += Math.max(0, seconds);
  }
  const db = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  // The recording as the agent saw it (a loaded machine takes longer to run `ctl record stop`):
  // from start to stop, plus at least the 5 s pre-event and up to a 2 s segment more before, and
  // the segment open at stop.
  const rec = db.prepare('SELECT started_at, stopped_at, pre_event_s FROM recording').get() as { started_at: string; stopped_at: string; pre_event_s: number };
  const asked = (Date.parse(rec.stopped_at) - Date.parse(rec.started_at)) / 1000 + rec.pre_event_s;
  t.ok(total >= asked - 2 && total <= asked + 5, `about ${asked.toFixed(1)} s of video (10 s and the 5 s pre-event): ${total.toFixed(1)} s decoded from ${files.length} segments`);
  const rows = db.prepare('SELECT idx, started_at, ended_at FROM evidence_segment ORDER BY idx').all() as { idx: number; started_at: string; ended_at: string }[];
  db.close();
  const gaps = rows.slice(1).map((r, i) => Date.parse(r.started_at) - Date.parse(rows[i]!.ended_at));
  t.ok(gaps.every((g) => Math.abs(g) < 1000), `continuous: segment boundaries meet (gaps ${gaps.join(', ')} ms)`);

  const clean = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(clean.code, 0, `evidence verify passes: ${clean.stdout.trim().split('\n').at(-1)}`);

  // One flipped byte in one segment.
  const victim = files[Math.floor(files.length / 2)]!;
  const fh = await open(victim, 'r+');
  const byte = Buffer.alloc(1);
  await fh.read(byte, 0, 1, 1000);
  byte[0] = byte[0]! ^ 0x01;
  await fh.write(byte, 0, 1, 1000);
  await fh.close();
  const flipped = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(flipped.code, 1, 'a flipped byte fails');
  t.match(flipped.stdout + flipped.stderr, new RegExp(`modified.*${path.basename(victim)}`), 'naming that segment');
  byte[0] = byte[0]! ^ 0x01;
  const fh2 = await open(victim, 'r+');
  await fh2.write(byte, 0, 1, 1000);
  await fh2.close();
  t.equal((await cli(['evidence', 'verify', '--state-dir', stateDir])).code, 0, 'restored: passes again');

  // A deleted row.
  const rw = new Database(path.join(stateDir, 'agent.db'));
  rw.prepare('DELETE FROM evidence_segment WHERE idx = 1').run();
  rw.close();
  const noRow = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(noRow.code, 1, `a deleted row fails: ${noRow.stdout.trim().split('\n')[0]}`);

  // A deleted segment file.
  await rm(files.at(-1)!);
  const noFile = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(noFile.code, 1);
  t.match(noFile.stdout + noFile.stderr, new RegExp(`missing.*${path.basename(files.at(-1)!)}`), 'a deleted segment is named');
});

t.test('kill -9 of the worker and of the whole agent during recording, 12 times', async (t) => {
  const broker = await startBroker();
  const stateDir = await tempStateDir();
  const config = await writeAgentConfig(stateDir, { recording: { preEvent: 2 }, capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, segmentSeconds: 1, restartMinDelayMs: 200 } });
  const env = { BWC_DEVICE_ID: 'cam-kill', BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' };
  let agent: AgentProcess = spawnAgent(['run', '--config', config], env);
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await broker.dispose();
  });
  await until('capture running', async () => (await status(stateDir)).capture?.status === 'running');
  t.equal((await cli(['ctl', 'record', 'start', '--state-dir', stateDir])).code, 0);
  for (let round = 0; round < 12; round += 1) {
    await sleep(2500);
    if (round % 2 === 0) {
      const before = await status(stateDir);
      process.kill(before.capture!.pid!, 'SIGKILL');
      await until('the worker restarted', async () => {
        const s = await status(stateDir);
        return s.capture?.status === 'running' && s.capture.pid !== before.capture!.pid;
      });
      t.equal((await status(stateDir)).recording, true, `round ${round}: worker killed, still recording`);
    } else {
      await agent.stop('SIGKILL');
      agent = spawnAgent(['run', '--config', config], env);
      await until('recording resumed after the agent restart', async () => (await status(stateDir)).recording === true);
      t.pass(`round ${round}: agent killed, recording resumed`);
    }
  }
  await sleep(2500);
  await cli(['ctl', 'record', 'stop', '--state-dir', stateDir]);
  await until('the last recording closed', async () => (await lastRecordingStatus(stateDir)) === 'closed');
  t.equal((await agent.stop('SIGTERM')).code, 0);

  const verify = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(verify.code, 0, `every closed segment verifies: ${verify.stdout.trim().split('\n').at(-1)}`);
  const dirs = await recordingDirs(stateDir);
  t.ok(dirs.length >= 7, `the agent kills made linked recordings (${dirs.length})`);
  let unreadable = 0;
  let files = 0;
  for (const dir of dirs) {
    for (const f of await segmentsOf(dir)) {
      files += 1;
      if ((await stat(f)).size > 0 && (await decodedFrames(await decryptedCopy(f))) <= 0) unreadable += 1;
    }
  }
  t.equal(unreadable, 0, `all ${files} segments, the ones cut by a kill included, are readable video`);
  const db = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  const recs = db.prepare('SELECT id, status, resumed_from FROM recording ORDER BY started_at').all() as { id: string; status: string; resumed_from: string | null }[];
  db.close();
  t.ok(recs.slice(1).every((r, i) => r.resumed_from === recs[i]!.id), 'each recording after a kill is linked to the one it continues');
  t.ok(recs.slice(0, -1).every((r) => r.status === 'interrupted'), 'the killed ones are marked interrupted');
  t.equal(recs.at(-1)?.status, 'closed', 'the last one was stopped and closed');
});

t.test('a camera that fails: restarts with back-off, the fault in state, event and audit; the agent stays up', async (t) => {
  const broker = await startBroker();
  const stateDir = await tempStateDir();
  const { MqttRecorder } = await import('./helpers/mqtt-recorder.ts');
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/cam-broken/#');
  const config = await writeAgentConfig(stateDir, { capture: { preset: 'v4l2', v4l2: { device: '/dev/video-missing' }, restartMinDelayMs: 200, restartMaxDelayMs: 1000 } });
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: 'cam-broken', BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9' });
  t.teardown(async () => {
    await agent.stop('SIGKILL');
    await recorder.close();
    await broker.dispose();
  });
  await recorder.waitFor(() => recorder.on('event').filter((m) => m.json?.type === 'capture.fault').length >= 3, 60_000, 'three capture.fault events');
  const fault = recorder.on('event').find((m) => m.json?.type === 'capture.fault')!.json!;
  t.match(String(fault.reason), /video-missing|Cannot identify device|not PLAYING/i, `the event says what failed: ${String(fault.reason)}`);
  const s = (await status(stateDir)) as Status & { capture: { lastFault: { reason: string } | null } };
  t.ok(s.capture && ['restarting', 'failed', 'starting'].includes(s.capture.status), `state shows capture ${s.capture?.status}`);
  t.ok((s.capture?.restarts ?? 0) >= 2, `restarted ${s.capture?.restarts} times`);
  t.ok(s.capture?.lastFault?.reason, 'the last fault is in state');
  await recorder.waitFor(() => recorder.on('state').some((m) => (m.json?.capture as { lastFault?: unknown } | null)?.lastFault), 15_000, 'the fault in the retained state');
  await recorder.waitFor(() => recorder.on('audit').some((m) => (m.json?.entry as { type?: string } | undefined)?.type === 'capture.fault'), 15_000, 'capture.fault audited');
  t.equal(agent.child.exitCode, null, 'the agent is still running');
  t.equal((await agent.stop('SIGTERM')).code, 0, 'and stops cleanly');
});
