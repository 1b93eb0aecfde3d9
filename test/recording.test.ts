// The recording state machine over real files, database, device key and audit log, with the
// capture supervisor stood in by an EventEmitter and time on a test clock.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { AuthorisedCommand } from '../src/command/authorised-command.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { defaultReasonCodes, type CommandAction } from '../src/command/types.ts';
import { CommandVerifier } from '../src/command/verifier.ts';
import { verifyDeviceSignature } from '../src/keys/device-key.ts';
import { parseSegmentFileName, segmentFileName } from '../src/recording/layout.ts';
import { manifestDigest, type Manifest, type RecordingRow, type SegmentRow } from '../src/recording/manifest.ts';
import { Recorder, type RecorderOptions, type RecorderStatus } from '../src/recording/recorder.ts';
import { verifyEvidence } from '../src/recording/verify.ts';
import { makeCommand, makeIssuer, trustStoreJwks } from './helpers/command-tokens.ts';
import { makeRig, runSegments, silent, type Rig } from './helpers/recording.ts';

const recordings = (rig: Rig) => rig.db.prepare<[], RecordingRow>('SELECT * FROM recording ORDER BY started_at, id').all();
const segments = (rig: Rig, id: string) => rig.db.prepare<[string], SegmentRow>('SELECT * FROM evidence_segment WHERE recording_id = ? ORDER BY idx').all(id);
const bufferFiles = (rig: Rig) => readdirSync(rig.recorder.bufferDir).sort();
const recordingFiles = (rig: Rig, id: string) => readdirSync(path.join(rig.recorder.recordingsDir, id)).sort();
const verify = async (rig: Rig) => verifyEvidence({ db: rig.db, evidenceDir: rig.evidenceDir, publicJwk: rig.key.publicJwk });

t.test('idle -> buffering -> recording -> buffering; the segment open at stop joins, then the manifest is signed', async (t) => {
  const rig = await makeRig();
  const states: RecorderStatus[] = [];
  rig.recorder.on('state', (s) => states.push(s));
  t.equal(rig.recorder.status().state, 'idle');
  rig.recorder.captureRunning(true);
  t.equal(rig.recorder.status().state, 'buffering');
  await runSegments(rig, 3);
  const started = rig.recorder.start({ kind: 'ctl' });
  t.ok(started.ok);
  const id = started.ok ? started.recordingId : '';
  t.match(id, /^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
  t.same(rig.recorder.status(), { state: 'recording', recording: true, recordingId: id, closingId: null, preEventS: 10, preEventAudio: false });
  t.same(rig.stateUpdates, [false, true], 'recording: true published at once');
  t.same(rig.recorder.start({ kind: 'button' }), { ok: true, recordingId: id, already: true }, 'a second start is a no-op');
  await runSegments(rig, 2);
  rig.clock.advance(1); // mid-segment
  t.same(rig.recorder.stop({ kind: 'button' }), { ok: true, recordingId: id });
  t.equal(rig.stateUpdates.at(-1), false, 'recording: false at once');
  t.equal(rig.recorder.status().state, 'buffering');
  t.equal(rig.recorder.status().closingId, id, 'closing until the open segment closes');
  await rig.recorder.flush();
  t.equal(recordings(rig)[0]!.status, 'recording', 'not sealed before the open segment arrives');
  rig.clock.advance(1);
  await rig.segment(2); // started 1 s before the stop
  rig.clock.advance(2);
  const after = await rig.segment(2); // started after the stop: buffer
  await rig.recorder.flush();
  const [rec] = recordings(rig);
  t.equal(rec!.status, 'closed');
  t.equal(rec!.stop_trigger, 'button');
  const rows = segments(rig, id);
  t.equal(rows.length, 3 + 2 + 1, 'pre-event 3 + 2 during + the one open at stop');
  t.same(rows.map((r) => r.idx), [0, 1, 2, 3, 4, 5]);
  t.equal(rows[0]!.prev_sha256, '0'.repeat(64));
  for (let i = 1; i < rows.length; i += 1) t.equal(rows[i]!.prev_sha256, rows[i - 1]!.sha256, `chain at ${i}`);
  t.same(bufferFiles(rig), [path.basename(after.file)], 'the segment after the stop stays in the buffer');
  t.same(recordingFiles(rig, id), [...rows.map((r) => path.basename(r.file)), 'manifest.json', 'manifest.sig'].sort());
  const manifestText = readFileSync(path.join(rig.recorder.recordingsDir, id, 'manifest.json'), 'utf8');
  t.equal(manifestText, rec!.manifest);
  const sig = readFileSync(path.join(rig.recorder.recordingsDir, id, 'manifest.sig'), 'utf8').trim();
  t.ok(verifyDeviceSignature(rig.key.publicJwk, manifestText, sig), 'manifest signed by the device key');
  const m = JSON.parse(manifestText) as Manifest;
  t.equal(m.recordingId, id);
  t.equal(m.deviceId, 'cam-r');
  t.equal(m.status, 'closed');
  t.equal(m.segments.length, 6);
  t.equal(m.chainHead, rows.at(-1)!.sha256);
  t.same(m.trigger, { kind: 'ctl', operator: null, reason: null });
  t.same(m.stopTrigger, { kind: 'button', operator: null, reason: null });
  t.same(
    states.map((s) => [s.state, s.recording, s.closingId !== null]),
    [
      ['buffering', false, false],
      ['recording', true, false],
      ['buffering', false, true],
      ['buffering', false, false],
    ],
  );
  t.same(rig.events.map((e) => e.type), ['recording.started', 'recording.stopped', 'recording.closed']);
  t.ok((await verify(rig)).ok);
  t.same(rig.recorder.stop({ kind: 'ctl' }), { ok: false, code: 'not_recording', message: 'no recording is running' });
  await rig.shutdown();
});

t.test('pre-event: the buffered segments overlapping the last preEventS join; older ones rotate', async (t) => {
  const rig = await makeRig({ preEventS: 10 });
  rig.recorder.captureRunning(true);
  const all = await runSegments(rig, 10); // 20 s of 2 s segments
  await rig.recorder.flush();
  // Segments ending at or before now - 10 s are gone: the last five remain.
  t.same(bufferFiles(rig), all.slice(5).map((s) => path.basename(s.file)).sort());
  rig.clock.advance(1);
  const r = rig.recorder.start({ kind: 'ctl' });
  await rig.recorder.flush();
  const id = r.ok ? r.recordingId : '';
  const rows = segments(rig, id);
  // Window [now-10, now] with now 1 s into a segment: ends at now-1, -3, -5, -7, -9 overlap it.
  t.same(rows.map((x) => x.started_at), all.slice(5).map((s) => s.startedAt));
  t.ok(Date.parse(rig.clock.now().toISOString()) - Date.parse(rows[0]!.started_at) >= 10_000, 'covers at least preEventS');
  t.same(bufferFiles(rig), []);
  t.ok(rows.every((x) => parseSegmentFileName(path.basename(x.file))?.index === x.idx), 'names carry the index');
  await rig.shutdown();
});

t.test('preEventS 0: nothing from the buffer, the open segment still joins; out-of-range values are refused', async (t) => {
  const rig = await makeRig({ preEventS: 0 });
  rig.recorder.captureRunning(true);
  await runSegments(rig, 3);
  rig.clock.advance(1);
  const r = rig.recorder.start({ kind: 'ctl' });
  rig.clock.advance(1);
  await rig.segment(2);
  await rig.recorder.flush();
  const rows = segments(rig, r.ok ? r.recordingId : '');
  t.equal(rows.length, 1);
  t.same(bufferFiles(rig), []);
  await rig.shutdown();
  for (const preEventS of [-1, 121, Number.NaN]) {
    t.throws(() => new Recorder({ preEventS, logger: silent } as unknown as RecorderOptions), RangeError);
  }
});

t.test('buffer rotation never touches recording files', async (t) => {
  const rig = await makeRig({ preEventS: 4 });
  rig.recorder.captureRunning(true);
  await runSegments(rig, 5);
  const r = rig.recorder.start({ kind: 'ctl' });
  const id = r.ok ? r.recordingId : '';
  await runSegments(rig, 20); // 40 s recording, far beyond the window
  rig.clock.advance(1);
  rig.recorder.stop({ kind: 'ctl' });
  rig.clock.advance(1);
  await rig.segment(2);
  await runSegments(rig, 30); // 60 s buffering afterwards
  await rig.recorder.flush();
  const rows = segments(rig, id);
  t.equal(rows.length, 2 + 20 + 1);
  for (const row of rows) t.ok(existsSync(path.join(rig.evidenceDir, row.file)), `${row.file} still there`);
  t.equal(bufferFiles(rig).length, 2, 'the buffer holds only the window');
  t.ok((await verify(rig)).ok);
  await rig.shutdown();
});

t.test('position at a segment start is the one when the previous segment closed', async (t) => {
  const rig = await makeRig({ preEventS: 0 });
  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'ctl' });
  rig.position.value = { lat: 1, lon: 2 };
  await runSegments(rig, 1); // first segment: sampled on arrival
  rig.position.value = { lat: 3, lon: 4 };
  await runSegments(rig, 1); // started when the first closed, at (1, 2)
  rig.position.value = null;
  await runSegments(rig, 1); // started at (3, 4)
  await runSegments(rig, 1); // no fix when it started
  await rig.recorder.flush();
  t.same(segments(rig, r.ok ? r.recordingId : '').map((s) => [s.lat, s.lon]), [[1, 2], [1, 2], [3, 4], [null, null]]);
  await rig.shutdown();
});

t.test('signed commands: only a verifier-made AuthorisedCommand for the right action is accepted', async (t) => {
  const rig = await makeRig();
  const issuer = await makeIssuer();
  const verifier = new CommandVerifier({
    deviceId: 'cam-r',
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), []),
    policy: { allowedReasons: defaultReasonCodes, maxTokenLifetimeS: 300, maxStreamDurationS: 1800, clockSkewS: 30, maxConcurrentStreams: 2, unsynchronisedClock: 'accept', maxPayloadBytes: 65_536 },
    replayCache: new ReplayCache(rig.db),
    clock: { nowMs: () => Date.now(), synchronised: () => false },
    activeStreams: () => 0,
    logger: silent,
  });
  const authorise = async (action: CommandAction) => {
    const v = await verifier.verify(makeCommand({ issuer, deviceId: 'cam-r', action }).payload);
    if (!v.ok) throw new Error(v.message);
    return v.command;
  };
  const startCmd = await authorise('record.start');
  const stopCmd = await authorise('record.stop');
  const forged = Object.create(AuthorisedCommand.prototype) as AuthorisedCommand;
  t.throws(() => rig.recorder.start({ kind: 'command', command: forged }), TypeError, 'Object.create fake');
  t.throws(() => rig.recorder.start({ kind: 'command', command: { ...startCmd } as AuthorisedCommand }), TypeError, 'a copy');
  t.throws(() => rig.recorder.start({ kind: 'command', command: stopCmd }), /record\.stop cannot record\.start/);
  t.throws(() => rig.recorder.start({ kind: 'nonsense' } as never), TypeError);
  t.equal(recordings(rig).length, 0, 'nothing started');
  t.equal(rig.auditEntries().length, 0);

  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'command', command: startCmd });
  t.ok(r.ok);
  t.throws(() => rig.recorder.stop({ kind: 'command', command: startCmd }), TypeError);
  rig.recorder.stop({ kind: 'command', command: stopCmd });
  await rig.recorder.flush();
  const [rec] = recordings(rig);
  t.equal(rec!.trigger, 'command');
  t.equal(rec!.operator, 'operator:PC-4711');
  t.equal(rec!.reason, 'officer-safety');
  t.equal(rec!.stop_trigger, 'command');
  const entries = rig.auditEntries();
  t.same(entries.map((e) => e.type), ['recording.start', 'recording.stop']);
  t.equal(entries[0]!.operator, 'operator:PC-4711');
  t.equal(entries[0]!.reason, 'officer-safety');
  t.match(entries[0]!.detail, { recordingId: rec!.id, preEventS: 10, trigger: 'command', issuer: issuer.iss, tokenDigest: startCmd.tokenDigest });
  t.match(entries[1]!.detail, { recordingId: rec!.id, trigger: 'command', tokenDigest: stopCmd.tokenDigest });
  t.match(rig.events[0], { type: 'recording.started', recordingId: rec!.id, trigger: 'command', operator: 'operator:PC-4711', reason: 'officer-safety', preEventS: 10 });
  t.match(rig.events[1], { type: 'recording.stopped', recordingId: rec!.id, trigger: 'command' });
  await rig.shutdown();
});

t.test('ctl and button starts are audited without an operator; stopping while capture is down closes at once', async (t) => {
  const rig = await makeRig();
  const r = rig.recorder.start({ kind: 'button' }); // capture not running: recording anyway
  t.equal(rig.recorder.status().recording, true);
  rig.recorder.stop({ kind: 'ctl' });
  await rig.recorder.flush();
  t.equal(recordings(rig)[0]!.status, 'closed');
  const [start, stop] = rig.auditEntries();
  t.match(start, { type: 'recording.start', operator: null, detail: { recordingId: r.ok ? r.recordingId : '', trigger: 'button', preEventS: 10 } });
  t.match(stop, { type: 'recording.stop', operator: null, detail: { trigger: 'ctl' } });
  await rig.shutdown();
});

t.test('capture stopping closes a recording waiting for its last segment', async (t) => {
  const rig = await makeRig();
  rig.recorder.captureRunning(true);
  rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 2);
  rig.recorder.stop({ kind: 'ctl' });
  rig.recorder.captureRunning(false);
  t.equal(rig.recorder.status().state, 'idle');
  await rig.recorder.flush();
  t.equal(recordings(rig)[0]!.status, 'closed');
  await rig.shutdown();
});

t.test('a segment that cannot join is an event and the recording carries on', async (t) => {
  const rig = await makeRig({ preEventS: 0 });
  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'ctl' });
  rig.clock.advance(2);
  rig.capture.emit('segment', { file: path.join(rig.recorder.bufferDir, 'never-written.ts'), startedAt: new Date(rig.clock.ms - 2000).toISOString(), endedAt: rig.clock.now().toISOString(), durationS: 2 });
  await runSegments(rig, 2);
  await rig.recorder.flush();
  t.match(rig.events.find((e) => e.type === 'recording.segment_failed'), { recordingId: r.ok ? r.recordingId : '' });
  t.equal(segments(rig, r.ok ? r.recordingId : '').length, 2);
  t.equal(rig.recorder.status().recording, true);
  await rig.shutdown();
});

t.test('restart after a crash while recording: interrupted, recovered files indexed, a linked recording resumes', async (t) => {
  let rig = await makeRig({ preEventS: 4 });
  rig.recorder.captureRunning(true);
  await runSegments(rig, 3);
  const r = rig.recorder.start({ kind: 'ctl' });
  const firstId = r.ok ? r.recordingId : '';
  await runSegments(rig, 3);
  await rig.recorder.flush();
  // The crash fell between a rename and its index row, and capture had closed one more segment
  // into the buffer that the dead process never handled.
  const dir = path.join(rig.recorder.recordingsDir, firstId);
  const renamedName = segmentFileName(5, new Date(rig.clock.ms).toISOString(), 2, '.ts');
  writeFileSync(path.join(dir, renamedName), 'renamed, not indexed');
  writeFileSync(path.join(rig.recorder.bufferDir, 'capture-left-behind.ts'), 'closed, never reported');
  const indexedBefore = segments(rig, firstId).length;
  t.equal(indexedBefore, 5, 'two pre-event + three');
  rig.events.length = 0;
  rig = await rig.restart();
  t.equal(recordings(rig)[0]!.status, 'recording', 'interrupted is sealed on the queue');
  await rig.recorder.flush();
  const [old] = recordings(rig);
  t.equal(old!.status, 'interrupted');
  const rows = segments(rig, firstId);
  t.equal(rows.length, 7);
  t.same(rows.map((x) => x.recovered), [0, 0, 0, 0, 0, 1, 1]);
  t.equal(path.basename(rows[5]!.file), renamedName);
  t.equal(rows[6]!.prev_sha256, rows[5]!.sha256, 'recovered segments continue the chain');
  t.same(bufferFiles(rig), [], 'the left-behind buffer segment joined the recording');
  const m = JSON.parse(old!.manifest!) as Manifest;
  t.equal(m.status, 'interrupted');
  t.equal(m.segments.length, 7);
  t.same(rig.events.map((e) => e.type), ['recording.interrupted', 'recording.sealed_interrupted']);
  t.match(rig.auditEntries().at(-2), { type: 'recording.interrupted', detail: { recordingId: firstId, stopRequested: false } });
  t.match(rig.auditEntries().at(-1), { type: 'recording.sealed', detail: { recordingId: firstId, status: 'interrupted', segments: 7, manifestSha256: manifestDigest(old!.manifest!) } });
  t.equal(rig.recorder.status().recording, false, 'nothing runs before capture does');

  rig.recorder.captureRunning(true);
  const status = rig.recorder.status();
  t.equal(status.recording, true, 'resumed as soon as capture runs');
  await runSegments(rig, 2);
  await rig.recorder.flush();
  const resumed = recordings(rig).find((x) => x.id !== firstId)!;
  t.equal(resumed.resumed_from, firstId);
  t.equal(resumed.trigger, 'resume');
  t.equal(resumed.status, 'recording');
  t.equal(segments(rig, resumed.id).length, 2);
  t.match(rig.auditEntries().at(-1), { type: 'recording.start', detail: { recordingId: resumed.id, trigger: 'resume', resumedFrom: firstId } });
  t.ok((await verify(rig)).ok, 'everything verifies, the open resumed recording included');

  // A second restart: the resumed one is interrupted in turn, and is resumed again.
  rig = await rig.restart();
  rig.recorder.captureRunning(true);
  await rig.recorder.flush();
  const third = recordings(rig).find((x) => x.resumed_from === resumed.id);
  t.ok(third, 'a chain of resumptions');
  t.equal(recordings(rig).find((x) => x.id === resumed.id)!.status, 'interrupted');
  await rig.shutdown();
});

t.test('restart after a crash while closing: interrupted, not resumed', async (t) => {
  let rig = await makeRig();
  rig.recorder.captureRunning(true);
  rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 2);
  rig.recorder.stop({ kind: 'ctl' });
  await rig.recorder.flush();
  rig = await rig.restart();
  rig.recorder.captureRunning(true);
  await runSegments(rig, 1);
  await rig.recorder.flush();
  t.same(recordings(rig).map((x) => x.status), ['interrupted']);
  t.equal(rig.recorder.status().recording, false);
  t.ok((await verify(rig)).ok);
  await rig.shutdown();
});

t.test('restart with nothing recording: stale buffer segments rotate, a lost manifest file is rewritten', async (t) => {
  let rig = await makeRig();
  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 1);
  rig.recorder.stop({ kind: 'ctl' });
  rig.recorder.captureRunning(false);
  await rig.recorder.flush();
  writeFileSync(path.join(rig.recorder.bufferDir, 'stale.ts'), 'old buffer');
  const id = r.ok ? r.recordingId : '';
  const manifestPath = path.join(rig.recorder.recordingsDir, id, 'manifest.json');
  const text = readFileSync(manifestPath, 'utf8');
  const { rmSync } = await import('node:fs');
  rmSync(manifestPath);
  rig = await rig.restart();
  await rig.recorder.flush();
  t.same(bufferFiles(rig), []);
  t.equal(readFileSync(manifestPath, 'utf8'), text);
  t.same(recordings(rig).map((x) => x.status), ['closed']);
  await rig.shutdown();
});

t.test('with no segment after a stop, the recording closes after stopGraceMs', async (t) => {
  const rig = await makeRig({ stopGraceMs: 5 });
  rig.recorder.captureRunning(true);
  rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 1);
  rig.recorder.stop({ kind: 'ctl' });
  while (rig.recorder.status().closingId !== null) await new Promise((resolve) => setTimeout(resolve, 5));
  await rig.recorder.flush();
  t.equal(recordings(rig)[0]!.status, 'closed');
  t.equal(segments(rig, recordings(rig)[0]!.id).length, 1);
  await rig.shutdown();
});

t.test('an audit log that cannot commit does not stop a recording', async (t) => {
  const rig = await makeRig({
    audit: {
      append: () => {
        throw new Error('SQLITE_FULL');
      },
    },
  });
  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'ctl' });
  t.ok(r.ok);
  t.equal(rig.recorder.status().recording, true);
  t.match(rig.events[0], { type: 'recording.audit_failed', auditType: 'recording.start', error: 'SQLITE_FULL' });
  t.match(rig.events[1], { type: 'recording.started' });
  await rig.shutdown();
});

t.test('a segment whose worker died before closing it is kept as a partial segment', async (t) => {
  const rig = await makeRig({ preEventS: 4 });
  rig.recorder.captureRunning(true);
  const r = rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 1);
  const partial = path.join(rig.recorder.bufferDir, 'segment-killed-000007.ts');
  rig.capture.emit('segment-opened', { file: partial, startedAt: rig.clock.now().toISOString() });
  writeFileSync(partial, 'half a segment');
  rig.clock.advance(1.5);
  rig.recorder.captureRunning(false); // the worker was killed
  t.equal(rig.recorder.status().state, 'idle');
  t.equal(rig.recorder.status().recording, true, 'recording goes on across a capture restart');
  rig.recorder.captureRunning(true);
  // A file opened but never written by a worker that died at once is skipped.
  rig.capture.emit('segment-opened', { file: path.join(rig.recorder.bufferDir, 'never.ts'), startedAt: rig.clock.now().toISOString() });
  rig.recorder.captureRunning(false);
  await runSegments(rig, 1);
  await rig.recorder.flush();
  const rows = segments(rig, r.ok ? r.recordingId : '');
  t.same(rows.map((x) => x.recovered), [0, 1, 0]);
  t.equal(readFileSync(path.join(rig.evidenceDir, rows[1]!.file), 'utf8'), 'half a segment');
  t.same(bufferFiles(rig), []);
  t.ok((await verify(rig)).ok);
  await rig.shutdown();
});

t.test('encryption at rest: the capture writes in RAM, the buffer and recordings hold age ciphertext, positions only in the encrypted track', async (t) => {
  const { testAgeIdentity, testAgeRecipient, testPlaintextDir } = await import('./helpers/age-keys.ts');
  const { Decrypter } = await import('age-encryption');
  const decrypt = async (file: string) => {
    const d = new Decrypter();
    d.addIdentity(testAgeIdentity);
    return Buffer.from(await d.decrypt(new Uint8Array(readFileSync(file))));
  };
  const plaintextDir = testPlaintextDir();
  let rig = await makeRig({ preEventS: 4, encryption: { recipients: [testAgeRecipient], plaintextDir } });
  t.equal(rig.recorder.captureDir, path.join(plaintextDir, 'segments'), 'the capture writes into the RAM folder');
  rig.recorder.captureRunning(true);
  const buffered = await runSegments(rig, 3);
  const plain = readFileSync(buffered.at(-1)!.file);
  await rig.recorder.flush();
  t.same(readdirSync(rig.recorder.captureDir), [], 'closed segments leave RAM');
  t.ok(bufferFiles(rig).length > 0 && bufferFiles(rig).every((f) => f.endsWith('.ts.age')), `the pre-event buffer is ciphertext: ${bufferFiles(rig).join(' ')}`);
  t.same(await decrypt(path.join(rig.recorder.bufferDir, `${path.basename(buffered.at(-1)!.file)}.age`)), plain, 'and decrypts to the segment');

  const r = rig.recorder.start({ kind: 'ctl' });
  const id = r.ok ? r.recordingId : '';
  await runSegments(rig, 2);
  rig.recorder.stop({ kind: 'ctl' });
  await runSegments(rig, 1);
  await rig.recorder.flush();
  const files = recordingFiles(rig, id);
  t.ok(files.filter((f) => f.endsWith('.ts.age')).length >= 4, `the recording's segments are .ts.age: ${files.join(' ')}`);
  t.ok(files.includes('track.json.age') && files.includes('manifest.json') && files.includes('manifest.sig'));
  const rows = segments(rig, id);
  t.ok(rows.every((x) => x.lat === null && x.lon === null), 'no position in the index');
  const m = JSON.parse(recordings(rig)[0]!.manifest!) as Manifest;
  t.same(m.encryption, { format: 'age-v1', recipients: [testAgeRecipient] });
  t.ok(m.segments.every((x) => x.lat === null), 'nor in the manifest');
  const track = JSON.parse((await decrypt(path.join(rig.recorder.recordingsDir, id, 'track.json.age'))).toString('utf8')) as { points: { index: number; lat: number }[] };
  t.same(track.points.map((p) => p.index), rows.map((x) => x.idx), 'the encrypted track has each segment\'s position');
  t.ok(track.points.every((p) => p.lat === 51.5));
  t.same(readdirSync(path.join(plaintextDir, 'tracks')), [], 'the track in RAM is gone once sealed');
  t.ok((await verify(rig)).ok, 'verifies without the key');
  const withKey = await verifyEvidence({ db: rig.db, evidenceDir: rig.evidenceDir, publicJwk: rig.key.publicJwk, identities: [testAgeIdentity] });
  t.match(withKey.problems, [{ kind: 'not_video' }], 'with the key, the random test segments are found not to be video');

  // A kill -9: a recording runs, one segment closed but never handled and one open are left in RAM.
  const r2 = rig.recorder.start({ kind: 'ctl' });
  const id2 = r2.ok ? r2.recordingId : '';
  await runSegments(rig, 1);
  await rig.recorder.flush();
  writeFileSync(path.join(rig.recorder.captureDir, 'capture-left-in-ram.ts'), 'the open segment at the kill');
  writeFileSync(path.join(rig.recorder.bufferDir, '.capture-9.ts.age.tmp'), 'an interrupted encryption');
  rig = await rig.restart({ encryption: { recipients: [testAgeRecipient], plaintextDir } });
  await rig.recorder.flush();
  t.same(readdirSync(rig.recorder.captureDir), [], 'the plaintext left in RAM is encrypted at start');
  t.same(bufferFiles(rig).filter((f) => f.endsWith('.tmp')), [], 'the interrupted encryption\'s temporary file is gone');
  const recovered = segments(rig, id2).filter((x) => x.recovered === 1);
  t.equal(recovered.length, 1, 'and joins the interrupted recording as recovered');
  t.match(recovered[0]!.file, /\.ts\.age$/);
  t.equal((await decrypt(path.join(rig.evidenceDir, recovered[0]!.file))).toString(), 'the open segment at the kill');
  await rig.shutdown();
});
