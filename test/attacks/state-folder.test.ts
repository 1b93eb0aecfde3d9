// Attack surface: the state folder (the camera's SD card).
// Threat: someone who holds the SD card, or a copy of the state folder (agent.db, evidence/, the
// device key), makes evidence or decisions disappear without a trace: (a) deletes a whole
// recording, folder and index rows, or drops a segment and re-signs the manifest with the device
// key that sits on the card; (b) puts back an older agent.db, so the audit trail forgets what
// happened since (a rollback), or writes a different continuation (a fork); (c) swaps the command
// trust store between two starts, so other issuers (or the same issuers with more actions) are
// trusted and nothing says so; (d) on a board running the agent without systemd's UMask=0077,
// reads agent.db and its WAL, or drives the agent through its control socket, as another local
// user because the files were created world-readable (the socket: for the moment between bind
// and chmod).
// Each test runs the real agent (bin/bwc-agent, umask 022) against a real mosquitto, and checks
// with the real CLI (`evidence verify`, `audit verify`) or stat(2).
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import t, { type Test } from 'tap';
import pino from 'pino';
import { AuditLog } from '../../src/audit/audit-log.ts';
import { canonicalJson } from '../../src/audit/canonical-json.ts';
import { TrustStore } from '../../src/command/trust-store.ts';
import { loadOrCreateDeviceKey } from '../../src/keys/device-key.ts';
import { buildManifest, segmentRows, type RecordingRow } from '../../src/recording/manifest.ts';
import { agentBin, repoRoot, runCli, spawnAgent, tempStateDir, type AgentProcess } from '../helpers/agent-process.ts';
import { writeAgentConfig } from '../helpers/agent-config.ts';
import { makeIssuer, trustStoreJwks, writeTrustStore } from '../helpers/command-tokens.ts';
import { startBroker, type Broker } from '../helpers/mosquitto.ts';
import { MqttRecorder } from '../helpers/mqtt-recorder.ts';

const run = promisify(execFile);
const startTimeoutMs = 60_000;

/** The agent as a board without systemd runs it: umask 022. */
const withUmask022 = ['sh', '-c', 'umask 022; exec "$0" "$@"', agentBin];

const cli = runCli;

interface Running {
  agent: AgentProcess;
  stateDir: string;
}

async function startAgent(t: Test, o: { broker: Broker; stateDir: string; deviceId: string; config?: Record<string, unknown>; env?: Record<string, string> }): Promise<Running> {
  const config = await writeAgentConfig(o.stateDir, o.config ?? {});
  const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: o.deviceId, BWC_MQTT_URL: o.broker.url, BWC_STATE_DIR: o.stateDir, BWC_GPSD: '127.0.0.1:9', ...o.env }, withUmask022);
  t.teardown(() => agent.stop('SIGKILL'));
  await agent.waitForOutput(/"msg":"bwc-agent running"/, startTimeoutMs);
  return { agent, stateDir: o.stateDir };
}

async function stopAgent(t: Test, r: Running): Promise<void> {
  const exit = await r.agent.stop('SIGTERM');
  t.equal(exit.code, 0, 'the agent stops cleanly');
}

const json = (m: { json: Record<string, unknown> | undefined }) => m.json ?? {};
const states = (fleet: MqttRecorder) => fleet.on('state').map(json);
const events = (fleet: MqttRecorder) => fleet.on('event').map(json);
type Head = { seq: number; hash: string };
const headOf = (s: Record<string, unknown>) => s.auditHead as Head | null | undefined;

async function brokerAndFleet(t: Test, deviceId: string): Promise<{ broker: Broker; fleet: MqttRecorder }> {
  const broker = await startBroker();
  t.teardown(() => broker.dispose());
  const fleet = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  t.teardown(() => fleet.close());
  return { broker, fleet };
}

t.test('(a) a recording deleted from the SD card, or re-signed short, is named by evidence verify', async (t) => {
  const deviceId = 'cam-sd-evidence';
  const { broker, fleet } = await brokerAndFleet(t, deviceId);
  const stateDir = await tempStateDir();
  const running = await startAgent(t, { broker, stateDir, deviceId, config: { recording: { preEvent: 2 } } });
  await fleet.waitFor(() => states(fleet).some((s) => (s.capture as { status?: string } | null)?.status === 'running'), startTimeoutMs, 'capture running in the retained state');

  const recordOnce = async (): Promise<string> => {
    const started = await cli(['ctl', 'record', 'start', '--state-dir', stateDir]);
    t.equal(started.code, 0, `ctl record start: ${started.stderr}`);
    const { recordingId } = JSON.parse(started.stdout) as { recordingId: string };
    t.equal((await cli(['ctl', 'record', 'stop', '--state-dir', stateDir])).code, 0, 'ctl record stop');
    // Closed = the segment open at stop has joined and the manifest is signed.
    await fleet.waitFor(() => events(fleet).some((e) => e.type === 'recording.closed' && e.recordingId === recordingId), startTimeoutMs, `recording.closed for ${recordingId}`);
    return recordingId;
  };
  const victim = await recordOnce();
  const kept = await recordOnce();
  await stopAgent(t, running);
  const clean = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(clean.code, 0, `the untouched evidence verifies: ${clean.stdout}`);

  // The whole recording goes: its folder, its segment rows, its recording row.
  rmSync(path.join(stateDir, 'evidence', 'recordings', victim), { recursive: true });
  const db = new Database(path.join(stateDir, 'agent.db'));
  db.prepare('DELETE FROM evidence_segment WHERE recording_id = ?').run(victim);
  db.prepare('DELETE FROM recording WHERE id = ?').run(victim);
  db.close();
  const deleted = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(deleted.code, 1, `evidence verify fails once a recording is deleted; it said:\n${deleted.stdout}${deleted.stderr}`);
  t.match(deleted.stdout, `missing: recording ${victim}`, 'naming the deleted recording');
  t.notMatch(deleted.stdout, kept, 'and not the intact one');

  // The kept recording loses its last segment; the manifest is rebuilt and re-signed with the
  // device key from the card, so index, files and signature all agree again.
  const key = await loadOrCreateDeviceKey(stateDir);
  const db2 = new Database(path.join(stateDir, 'agent.db'));
  const row = db2.prepare<[string], RecordingRow>('SELECT * FROM recording WHERE id = ?').get(kept)!;
  const rows = segmentRows(db2, kept);
  const last = rows.at(-1)!;
  db2.prepare('DELETE FROM evidence_segment WHERE recording_id = ? AND idx = ?').run(kept, last.idx);
  rmSync(path.join(stateDir, 'evidence', ...last.file.split('/')));
  const text = canonicalJson(buildManifest(row, 'closed', row.stopped_at, rows.slice(0, -1), deviceId, key.kid));
  const sig = key.sign(text);
  db2.prepare('UPDATE recording SET manifest = ?, manifest_sig = ? WHERE id = ?').run(text, sig, kept);
  db2.close();
  writeFileSync(path.join(stateDir, 'evidence', 'recordings', kept, 'manifest.json'), text);
  writeFileSync(path.join(stateDir, 'evidence', 'recordings', kept, 'manifest.sig'), `${sig}\n`);
  const resigned = await cli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(resigned.code, 1, `evidence verify fails on a re-signed manifest; it said:\n${resigned.stdout}${resigned.stderr}`);
  t.match(resigned.stdout, new RegExp(`manifest_mismatch: recording ${kept}\\b.*the audit trail`), 'the manifest differs from the digest the audit trail holds');
});

t.test('(b) an older agent.db put back (rollback) or continued differently (fork) fails audit verify --expect-head', async (t) => {
  const deviceId = 'cam-sd-rollback';
  const { broker, fleet } = await brokerAndFleet(t, deviceId);
  const stateDir = await tempStateDir();
  const dbFile = path.join(stateDir, 'agent.db');
  /** The newest head the fleet has seen in the retained state (the offline one after a stop). */
  const newestHead = () => states(fleet).map(headOf).filter((h): h is Head => !!h).at(-1);
  const offlineWithHeadAfter = (seq: number) => () => states(fleet).some((s) => s.online === false && (headOf(s)?.seq ?? 0) > seq);

  await stopAgent(t, await startAgent(t, { broker, stateDir, deviceId }));
  await fleet.waitFor(offlineWithHeadAfter(0), startTimeoutMs, 'the offline state with an audit head');
  const older = newestHead()!;
  const backup = path.join(stateDir, 'agent.db.copy');
  copyFileSync(dbFile, backup); // closed cleanly: the WAL is checkpointed into agent.db

  await stopAgent(t, await startAgent(t, { broker, stateDir, deviceId }));
  await fleet.waitFor(offlineWithHeadAfter(older.seq), startTimeoutMs, 'a newer audit head in the retained state');
  const newer = newestHead()!;
  t.ok(newer.seq > older.seq, `the second run moved the head from ${older.seq} to ${newer.seq}`);

  // The rollback: the older database goes back.
  for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) rmSync(f, { force: true });
  copyFileSync(backup, dbFile);
  const plain = await cli(['audit', 'verify', '--state-dir', stateDir]);
  t.equal(plain.code, 0, `on its own the older chain is intact (which is why the fleet's head is needed): ${plain.stdout}`);
  const expect = `${newer.seq}:${newer.hash}`;
  const rolledBack = await cli(['audit', 'verify', '--state-dir', stateDir, '--expect-head', expect]);
  t.equal(rolledBack.code, 1, `audit verify --expect-head fails on a rolled-back database; it said:\n${rolledBack.stdout}${rolledBack.stderr}`);
  t.match(rolledBack.stdout, /rollback/, 'and says rollback');
  t.match(rolledBack.stdout, `seq ${newer.seq}`, 'naming the expected head');

  // The fork: the attacker, with the device key from the card, appends other entries up to and
  // past the fleet's head; the chain and its checkpoints are consistent and signed.
  const db = new Database(dbFile);
  const log = new AuditLog({ db, deviceId, deviceKey: await loadOrCreateDeviceKey(stateDir), publish: () => {}, logger: pino({ level: 'silent' }) });
  while (log.head().seq <= newer.seq) log.append({ type: 'agent.start', detail: { forged: true } });
  log.stop();
  db.close();
  t.equal((await cli(['audit', 'verify', '--state-dir', stateDir])).code, 0, 'the forked chain verifies on its own');
  const forked = await cli(['audit', 'verify', '--state-dir', stateDir, '--expect-head', expect]);
  t.equal(forked.code, 1, `audit verify --expect-head fails on a fork; it said:\n${forked.stdout}${forked.stderr}`);
  t.match(forked.stdout, /fork/, 'and says fork');
  t.equal((await cli(['audit', 'verify', '--state-dir', stateDir, '--expect-head', 'seven'])).code, 2, 'a malformed --expect-head is a usage error');
});

t.test('(c) a trust store changed between two starts shows in the audit trail', async (t) => {
  const deviceId = 'cam-sd-trust';
  const { broker } = await brokerAndFleet(t, deviceId);
  const stateDir = await tempStateDir();
  const a = await makeIssuer({ kid: 'issuer-a', actions: ['record.start'] });
  const b = await makeIssuer({ kid: 'issuer-b' });
  const trustStore = writeTrustStore(stateDir, [a]);
  const config = { commands: { trustStore } };
  await stopAgent(t, await startAgent(t, { broker, stateDir, deviceId, config }));
  // The same file name and the same config: only the file's contents change.
  writeFileSync(trustStore, JSON.stringify(trustStoreJwks([{ ...a, publicJwk: { ...a.publicJwk, bwc_actions: ['record.start', 'stream.start'] } }, b])));
  await stopAgent(t, await startAgent(t, { broker, stateDir, deviceId, config }));

  const db = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  const entries = db.prepare<[], { entry: string }>('SELECT entry FROM audit_entry ORDER BY seq').all().map((r) => JSON.parse(r.entry) as { type: string; detail: Record<string, unknown> });
  db.close();
  const starts = entries.filter((e) => e.type === 'agent.start');
  t.equal(starts.length, 2);
  const [first, second] = starts.map((e) => e.detail.trustStore as { digest?: string; kids?: string[] } | undefined);
  t.same(first?.kids, ['issuer-a'], 'the first start names the trusted kids');
  t.same(second?.kids, ['issuer-a', 'issuer-b'], 'the second start names the new set');
  t.ok(first?.digest && second?.digest && first.digest !== second.digest, 'and the trust digests differ');
  t.ok(entries.some((e) => e.type === 'config.change'), 'the change is a config.change entry (the config digest covers the trust store)');

  // The digest covers bwc_actions (and revocations) too, not only the kids.
  const only = TrustStore.fromJwks(trustStoreJwks([a]), []);
  const wider = TrustStore.fromJwks({ keys: [{ ...a.publicJwk, bwc_actions: ['record.start', 'record.stop'] }] }, []);
  const revoked = TrustStore.fromJwks(trustStoreJwks([a]), ['issuer-a']);
  t.not(only.digest(), wider.digest(), 'more actions for the same kid change the digest');
  t.not(only.digest(), revoked.digest(), 'a revocation changes the digest');
  t.equal(only.digest(), TrustStore.fromJwks(JSON.parse(JSON.stringify(trustStoreJwks([a]))), []).digest(), 'the same store digests the same');
});

t.test('(d) agent.db, its WAL and the control socket are owner-only under umask 022, the socket from the moment it is bound', async (t) => {
  const deviceId = 'cam-sd-modes';
  const { broker } = await brokerAndFleet(t, deviceId);
  const stateDir = await tempStateDir();
  const probe = pathToFileURL(path.join(repoRoot, 'test', 'helpers', 'bind-mode-probe.ts')).href;
  const running = await startAgent(t, { broker, stateDir, deviceId, env: { NODE_OPTIONS: `--import=${probe}` } });
  const socket = path.join(stateDir, 'control.sock');
  const bound = new RegExp(`bind-mode-probe: ${socket.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} mode (\\S+) when listen\\(\\) returned`).exec(running.agent.output);
  t.ok(bound, 'the probe saw the control socket bound');
  t.equal(bound?.[1], '0600', 'the control socket is owner-only the moment it exists (no window before a chmod)');
  const modeOf = (f: string) => (statSync(f).mode & 0o777).toString(8).padStart(4, '0');
  t.equal(modeOf(socket), '0600', 'control.sock');
  for (const name of ['agent.db', 'agent.db-wal', 'agent.db-shm']) {
    const file = path.join(stateDir, name);
    t.ok(existsSync(file), `${name} exists while the agent runs`);
    t.equal(modeOf(file), '0600', name);
  }
  await stopAgent(t, running);
});
