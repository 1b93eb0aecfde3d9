// Threat: a camera is lost or stolen, or its SD card is pulled and read. Whoever holds it must
// not get the footage or where it was filmed: no frame in the clear may reach persistent storage
// (the open segment lives in RAM only), and what is on the card is age ciphertext that only the
// force's private key opens (the camera holds none). The same card may come back with files
// crafted by the thief (a truncated or forged .age file): `evidence verify` must name them, not
// crash, and the agent must not choke on them at start-up.
// Also here, because they need the same real recording (one real capture per file keeps the
// suite short): verify with and without the identity, export to playable MPEG-TS, the `age` tool
// decrypting the same files, and the configuration refusals.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import t from 'tap';
import { runCli, spawnAgent, tempStateDir, type AgentProcess } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { testAgeIdentityFile, testAgeRecipient, decryptedCopy } from '../helpers/age-keys.ts';
import { decodedVideo } from '../helpers/decode.ts';
import { gpsLogPath, startGpsfake } from '../helpers/gpsfake.ts';
import { startBroker } from '../helpers/mosquitto.ts';
import { filesUnder, findH264, findTsSync, openFilesOf, scanForPlaintext } from '../helpers/plaintext-scan.ts';

const run = promisify(execFile);
t.setTimeout(300_000);

interface Status {
  recording: boolean;
  capture: { status: string; pid: number | null } | null;
}

/** Re-checks a condition the agent brings about (a state, a database row) until it holds; fails clearly after timeoutMs. */
async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const status = async (stateDir: string) => JSON.parse((await runCli(['ctl', 'status', '--state-dir', stateDir])).stdout) as Status;

function query<T>(stateDir: string, sql: string): T[] {
  const db = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  try {
    return db.prepare(sql).all() as T[];
  } finally {
    db.close();
  }
}

const sha256 = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

// ---- one real recording, shared by the subtests -----------------------------------------------

const broker = await startBroker();
const gps = await startGpsfake(gpsLogPath('bu353s4.log'), { cycleS: 0.05, maxSeconds: 240 });
const stateDir = await tempStateDir('bwc-enc-');
const config = await writeAgentConfig(stateDir, {
  recording: { preEvent: 2 },
  capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, segmentSeconds: 1 },
});
const plaintextDir = (await readFile(config, 'utf8')).match(/plaintextDir: (\S+)/)![1]!;
const env = { BWC_DEVICE_ID: 'cam-enc', BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: `127.0.0.1:${gps.port}` };
let agent: AgentProcess = spawnAgent(['run', '--config', config], env);
t.teardown(async () => {
  await agent.stop('SIGKILL');
  await gps.stop();
  await broker.dispose();
});

let recordingId = '';
let segmentFiles: string[] = [];

t.test('no plaintext frame outside RAM, during and after a recording', async (t) => {
  await until('capture running', async () => (await status(stateDir)).capture?.status === 'running');
  // A position first, so the recording has a track to encrypt.
  await until('a GPS position in state', async () => {
    const s = (await status(stateDir)) as Status & { gps?: { lat: number | null } | null };
    return s.gps?.lat !== null && s.gps?.lat !== undefined;
  });
  const start = await runCli(['ctl', 'record', 'start', '--state-dir', stateDir]);
  t.equal(start.code, 0, 'ctl record start');
  recordingId = (JSON.parse(start.stdout) as { recordingId: string }).recordingId;
  await until('four segments indexed', async () => query<{ n: number }>(stateDir, 'SELECT count(*) AS n FROM evidence_segment')[0]!.n >= 4);

  // During: the state folder, and every regular file the agent and its capture worker hold open.
  const s = await status(stateDir);
  const open = [...openFilesOf(agent.child.pid!), ...(s.capture?.pid ? openFilesOf(s.capture.pid) : [])];
  const during = [...filesUnder(stateDir), ...open];
  t.ok(open.some((f) => f.startsWith(plaintextDir)), `the worker writes the open segment in RAM (${open.filter((f) => f.startsWith(plaintextDir)).join(', ')})`);
  t.ok(filesUnder(stateDir).some((f) => f.endsWith('.ts.age')), 'encrypted segments are on disk');
  t.same(scanForPlaintext(during, [plaintextDir]), [], `no plaintext video in ${new Set(during).size} files outside ${plaintextDir} while recording`);

  t.equal((await runCli(['ctl', 'record', 'stop', '--state-dir', stateDir])).code, 0, 'ctl record stop');
  await until('the recording sealed', async () => query<{ status: string }>(stateDir, `SELECT status FROM recording WHERE id = '${recordingId}'`)[0]?.status === 'closed');
  t.equal((await agent.stop('SIGTERM')).code, 0, 'the agent stops cleanly');

  const after = filesUnder(stateDir);
  t.same(scanForPlaintext(after), [], `no plaintext video in the ${after.length} files of the state folder after the recording`);
  t.same(filesUnder(plaintextDir), [], 'nothing left in RAM after a clean stop');
  segmentFiles = query<{ file: string }>(stateDir, `SELECT file FROM evidence_segment WHERE recording_id = '${recordingId}' ORDER BY idx`).map((r) => path.join(stateDir, 'evidence', r.file));
  t.ok(segmentFiles.length >= 4 && segmentFiles.every((f) => f.endsWith('.ts.age')), `${segmentFiles.length} segments, each .ts.age`);
  // The scanner is not blind: the same files decrypted are found to be video.
  const decrypted = await readFile(await decryptedCopy(segmentFiles[0]!));
  t.ok(findTsSync(decrypted), 'the scanner finds the MPEG-TS sync pattern in a decrypted segment');
  t.ok(findH264(decrypted), `and H.264 start codes (${findH264(decrypted)})`);

  const dirFiles = (await readdir(path.join(stateDir, 'evidence', 'recordings', recordingId))).sort();
  t.ok(dirFiles.includes('manifest.json') && dirFiles.includes('manifest.sig') && dirFiles.includes('track.json.age'), `the recording folder: ${dirFiles.join(' ')}`);
  const manifest = JSON.parse(await readFile(path.join(stateDir, 'evidence', 'recordings', recordingId, 'manifest.json'), 'utf8')) as {
    encryption: { format: string; recipients: string[] };
    track: { file: string; sha256: string } | null;
    segments: { lat: number | null; lon: number | null }[];
  };
  t.same(manifest.encryption, { format: 'age-v1', recipients: [testAgeRecipient] }, 'the manifest names the format and the force\'s public key');
  t.ok(manifest.segments.every((x) => x.lat === null && x.lon === null), 'no position in the manifest');
  t.equal(manifest.track?.sha256, await sha256(path.join(stateDir, 'evidence', manifest.track!.file)), 'the manifest hashes the encrypted track as stored');
  const rows = query<{ lat: number | null }>(stateDir, 'SELECT lat FROM evidence_segment');
  t.ok(rows.every((r) => r.lat === null), 'no position in the index');
});

t.test('evidence verify: without the key (hashes, chain, signature over the ciphertext), and with --identity (decrypts, checks the video)', async (t) => {
  const plain = await runCli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(plain.code, 0, `verify without a key: ${plain.stdout.trim()}`);
  t.notMatch(plain.stdout, /decrypted/);
  const withKey = await runCli(['evidence', 'verify', '--state-dir', stateDir, '--identity', testAgeIdentityFile]);
  t.equal(withKey.code, 0, `verify with the identity: ${withKey.stdout.trim()}`);
  t.match(withKey.stdout, new RegExp(`${segmentFiles.length} encrypted segments decrypted to MPEG-TS with an H.264 keyframe, 1 GPS tracks decrypted`));
});

t.test('evidence export writes playable MPEG-TS, the manifest, its signature, the track and a report', async (t) => {
  const out = await mkdtemp(path.join(os.tmpdir(), 'bwc-export-'));
  const r = await runCli(['evidence', 'export', '--state-dir', stateDir, '--identity', testAgeIdentityFile, '--recording', recordingId, '--out', out]);
  t.equal(r.code, 0, `export: ${r.stdout.trim()} ${r.stderr.trim()}`);
  const names = (await readdir(out)).sort();
  const ts = names.filter((n) => n.endsWith('.ts'));
  t.equal(ts.length, segmentFiles.length, `one .ts per segment: ${names.join(' ')}`);
  for (const n of ['manifest.json', 'manifest.sig', 'track.json', 'verification-report.json']) t.ok(names.includes(n), n);
  for (const n of ts) {
    const { seconds } = await decodedVideo(path.join(out, n));
    t.ok(seconds > 0, `${n} decodes with GStreamer (${seconds.toFixed(1)} s)`);
  }
  const report = JSON.parse(await readFile(path.join(out, 'verification-report.json'), 'utf8')) as { ok: boolean; problems: unknown[]; segments: { plaintextSha256: string; out: string }[] };
  t.equal(report.ok, true, 'the report says verified');
  t.same(report.problems, []);
  t.equal(report.segments[0]!.plaintextSha256, await sha256(path.join(out, report.segments[0]!.out)), 'the report hashes the plaintext written');
  const track = JSON.parse(await readFile(path.join(out, 'track.json'), 'utf8')) as { recordingId: string; points: { lat: number; lon: number }[] };
  t.equal(track.recordingId, recordingId);
  t.ok(track.points.length > 0 && track.points.every((p) => Math.abs(p.lat - -37.78) < 0.05 && Math.abs(p.lon - 175.31) < 0.05), `the track holds the replayed log's positions (${track.points.length})`);
  t.equal(await sha256(path.join(out, 'manifest.json')), await sha256(path.join(stateDir, 'evidence', 'recordings', recordingId, 'manifest.json')), 'the manifest as signed');

  // The age tool (a force's standard decryptor) opens the same files to the same bytes.
  for (const [i, f] of segmentFiles.entries()) {
    const dec = path.join(out, `age-${i}.ts`);
    await run('age', ['--decrypt', '-i', testAgeIdentityFile, '-o', dec, f]);
    t.equal(await sha256(dec), report.segments[i]!.plaintextSha256, `age -d ${path.basename(f)}: the same plaintext as the export`);
  }
  const { stdout } = await run('age', ['--decrypt', '-i', testAgeIdentityFile, path.join(stateDir, 'evidence', 'recordings', recordingId, 'track.json.age')]);
  t.same(JSON.parse(stdout), track, 'age -d track.json.age: the exported track');
  const bad = await runCli(['evidence', 'export', '--state-dir', stateDir, '--identity', testAgeIdentityFile, '--recording', 'no-such', '--out', out]);
  t.equal(bad.code, 2, 'an unknown recording is a usage error');
  t.match(bad.stderr, /--recording: no recording "no-such"/);
});

t.test('crafted .age files on the card: verify names each, the agent starts over them', async (t) => {
  // A copy of the state folder, so the other subtests keep the intact one.
  const copy = await tempStateDir('bwc-enc-crafted-');
  await run('cp', ['-a', `${stateDir}/.`, copy]);
  const rel = (f: string) => path.join(copy, path.relative(stateDir, f));
  const truncated = rel(segmentFiles[1]!);
  await truncate(truncated, 200);
  const forged = rel(segmentFiles[2]!);
  const body = await readFile(forged);
  await writeFile(forged, Buffer.concat([Buffer.from('age-encryption.org/v2\n'), body.subarray(22)]));
  // A stray file in the recording folder, and garbage in the buffer folder the agent takes stock of at start.
  await copyFile(forged, path.join(path.dirname(forged), '999999_20261124T140406.123Z_1000ms.ts.age'));
  await writeFile(path.join(copy, 'evidence', 'buffer', 'capture-000042.ts.age'), 'not age at all');

  const noKey = await runCli(['evidence', 'verify', '--state-dir', copy]);
  t.equal(noKey.code, 1, 'verify without the key fails');
  t.match(noKey.stdout, new RegExp(`modified: recording ${recordingId} \\S+${path.basename(truncated)}`), 'the truncated file is modified');
  t.match(noKey.stdout, new RegExp(`modified: recording ${recordingId} \\S+${path.basename(forged)}`), 'the forged header is modified');
  t.match(noKey.stdout, /unindexed: .*999999_/, 'the stray file is unindexed');
  const withKey = await runCli(['evidence', 'verify', '--state-dir', copy, '--identity', testAgeIdentityFile]);
  t.equal(withKey.code, 1, 'verify with the key fails, and does not crash');
  t.equal(withKey.stderr, '', 'nothing on stderr (no stack trace)');
  t.match(withKey.stdout, new RegExp(`undecryptable: recording ${recordingId} \\S+${path.basename(truncated)}: segment 1 does not decrypt`), 'the truncated file does not decrypt');
  t.match(withKey.stdout, new RegExp(`undecryptable: recording ${recordingId} \\S+${path.basename(forged)}: segment 2 does not decrypt.*invalid version`), 'the forged header is named');
  const out = await mkdtemp(path.join(os.tmpdir(), 'bwc-export-bad-'));
  const ex = await runCli(['evidence', 'export', '--state-dir', copy, '--identity', testAgeIdentityFile, '--recording', recordingId, '--out', out]);
  t.equal(ex.code, 1, 'export of the tampered recording exits 1');
  const report = JSON.parse(await readFile(path.join(out, 'verification-report.json'), 'utf8')) as { ok: boolean; segments: { problem: string | null }[] };
  t.equal(report.ok, false, 'and its report says so');
  t.match(report.segments[1]!.problem, /does not decrypt/);
  t.equal(report.segments[0]!.problem, null, 'the intact segments are exported');
  t.notOk(existsSync(path.join(out, path.basename(truncated).replace(/\.age$/, ''))), 'no partial plaintext of the bad segment');

  // The agent on the crafted card starts, records on, and stops cleanly.
  const cfg = await writeAgentConfig(copy, { capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, segmentSeconds: 1 } });
  agent = spawnAgent(['run', '--config', cfg], { ...env, BWC_STATE_DIR: copy, BWC_GPSD: '127.0.0.1:9' });
  await until('capture running on the crafted card', async () => (await status(copy)).capture?.status === 'running');
  t.equal((await agent.stop('SIGTERM')).code, 0, 'the agent ran over the crafted files and stopped cleanly');
  await rm(copy, { recursive: true, force: true });
});

t.test('kill -9 leaves the open segment in RAM; the next start encrypts it', async (t) => {
  const dir = await tempStateDir('bwc-enc-kill-');
  const cfg = await writeAgentConfig(dir, { recording: { preEvent: 2 }, capture: { width: 320, height: 240, framerate: 10, bitrateKbps: 300, segmentSeconds: 1 } });
  const ram = (await readFile(cfg, 'utf8')).match(/plaintextDir: (\S+)/)![1]!;
  const e = { ...env, BWC_STATE_DIR: dir, BWC_GPSD: '127.0.0.1:9' };
  agent = spawnAgent(['run', '--config', cfg], e);
  await until('capture running', async () => (await status(dir)).capture?.status === 'running');
  t.equal((await runCli(['ctl', 'record', 'start', '--state-dir', dir])).code, 0);
  await until('two segments indexed', async () => query<{ n: number }>(dir, 'SELECT count(*) AS n FROM evidence_segment')[0]!.n >= 2);
  const worker = (await status(dir)).capture!.pid!;
  // The whole process group: agent and worker die together, as in a crash of the board's userland.
  process.kill(worker, 'SIGKILL');
  await agent.stop('SIGKILL');
  const left = filesUnder(path.join(ram, 'segments'));
  t.ok(left.length >= 1, `plaintext left in RAM by the kill: ${left.map((f) => path.basename(f)).join(', ')}`);
  agent = spawnAgent(['run', '--config', cfg], e);
  await until('recording resumed', async () => (await status(dir)).recording === true);
  await until('the left-over plaintext encrypted and indexed', async () => left.every((f) => !existsSync(f)) && query<{ n: number }>(dir, 'SELECT count(*) AS n FROM evidence_segment WHERE recovered = 1')[0]!.n >= 1);
  t.pass('the plaintext left in RAM is gone and a recovered segment is indexed');
  t.equal((await runCli(['ctl', 'record', 'stop', '--state-dir', dir])).code, 0);
  await until('all sealed', async () => query<{ n: number }>(dir, "SELECT count(*) AS n FROM recording WHERE status = 'recording'")[0]!.n === 0);
  t.equal((await agent.stop('SIGTERM')).code, 0);
  t.same(scanForPlaintext(filesUnder(dir)), [], 'no plaintext on disk after the crash and the recovery');
  const v = await runCli(['evidence', 'verify', '--state-dir', dir, '--identity', testAgeIdentityFile]);
  t.equal(v.code, 0, `verify with the identity after the crash: ${v.stdout.trim()}`);
});

t.test('configuration refusals name the setting', async (t) => {
  const dir = await tempStateDir('bwc-enc-cfg-');
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a recipient that is not an age X25519 key', { recording: { encryption: { recipients: ['ssh-ed25519 AAAAC3Nza'] } } }, /recording\.encryption\.recipients\.0: expected an age X25519 public key/],
    ['a recipient with a bad checksum', { recording: { encryption: { recipients: [testAgeRecipient.slice(0, -1) + (testAgeRecipient.endsWith('q') ? 'p' : 'q')] } } }, /recording\.encryption\.recipients\.0: not a valid age X25519 public key/],
    ['no recipient with encryption on', { recording: { encryption: { recipients: [] } } }, /recording\.encryption\.recipients: no recipient configured/],
    ['a plaintext folder on disk', { recording: { plaintextDir: dir } }, /recording\.plaintextDir: .* is not on tmpfs or ramfs/],
  ];
  for (const [what, overrides, message] of cases) {
    const cfg = await writeAgentConfig(dir, overrides);
    const a = spawnAgent(['run', '--config', cfg], { ...env, BWC_STATE_DIR: dir, BWC_GPSD: '127.0.0.1:9' });
    const r = await a.exited;
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(a.output, message, `${what}: names the setting`);
  }
  t.notOk(existsSync(path.join(dir, 'evidence')), 'nothing was recorded');
});
