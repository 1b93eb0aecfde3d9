// `bwc-agent evidence verify` against a real evidence set (a closed recording and an open one,
// made by the recorder), then against copies tampered with in each way the issue names: the exit
// code and the line naming the kind, the recording and the file.
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import t from 'tap';
import { evidenceVerifyCommand } from '../src/recording/cli.ts';
import type { SegmentRow } from '../src/recording/manifest.ts';
import { makeRig, runSegments } from './helpers/recording.ts';

interface EvidenceSet {
  stateDir: string;
  evidenceDir: string;
  closedId: string;
  openId: string;
  closed: SegmentRow[];
  open: SegmentRow[];
  db: () => Database.Database;
}

async function evidenceSet(): Promise<EvidenceSet> {
  const rig = await makeRig({ preEventS: 4 });
  rig.recorder.captureRunning(true);
  await runSegments(rig, 3);
  const a = rig.recorder.start({ kind: 'ctl' });
  await runSegments(rig, 2);
  rig.clock.advance(1);
  rig.recorder.stop({ kind: 'ctl' });
  rig.clock.advance(1);
  await rig.segment(2);
  await runSegments(rig, 3);
  const b = rig.recorder.start({ kind: 'button' });
  await runSegments(rig, 2);
  await rig.recorder.flush();
  const closedId = a.ok ? a.recordingId : '';
  const openId = b.ok ? b.recordingId : '';
  const rows = (id: string) => rig.db.prepare<[string], SegmentRow>('SELECT * FROM evidence_segment WHERE recording_id = ? ORDER BY idx').all(id);
  const set = { stateDir: rig.stateDir, evidenceDir: rig.evidenceDir, closedId, openId, closed: rows(closedId), open: rows(openId) };
  await rig.shutdown(); // the open recording stays 'recording', as on a running camera
  return { ...set, db: () => new Database(path.join(set.stateDir, 'agent.db')) };
}

async function run(stateDir: string): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (append: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, cb) {
        append(String(chunk));
        cb();
      },
    });
  const code = await evidenceVerifyCommand({ stateDir }, sink((s) => (out += s)), sink((s) => (err += s)));
  return { code, out, err };
}

const sql = (set: EvidenceSet, statement: string, ...params: unknown[]) => {
  const db = set.db();
  db.prepare(statement).run(...params);
  db.close();
};

t.test('a clean set verifies', async (t) => {
  const set = await evidenceSet();
  t.equal(set.closed.length, 2 + 2 + 1);
  t.equal(set.open.length, 2 + 2);
  const r = await run(set.stateDir);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /^evidence OK: 2 recordings, 9 segments, 4608 bytes; manifests signed by kid \S+; all 2 recordings the audit trail names are there \(audit head seq \d+\)\n$/);
  t.equal(r.err, '');
});

t.test('one flipped byte in one segment fails naming that segment', async (t) => {
  const set = await evidenceSet();
  const victim = set.closed[2]!;
  const file = path.join(set.evidenceDir, victim.file);
  const bytes = readFileSync(file);
  bytes[100] = bytes[100]! ^ 0x01;
  writeFileSync(file, bytes);
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.equal(r.out.split('\n')[0], `modified: recording ${set.closedId} ${victim.file}: segment 2's SHA-256 is ${(await import('../src/recording/manifest.ts').then((m) => m.hashFile(file))).sha256.slice(0, 12)}…, the index says ${victim.sha256.slice(0, 12)}…`);
  t.match(r.out, /evidence verify FAILED: 1 problem \(/);
});

t.test('a truncated or extended segment is modified (size)', async (t) => {
  const set = await evidenceSet();
  appendFileSync(path.join(set.evidenceDir, set.open[1]!.file), 'x');
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `modified: recording ${set.openId} ${set.open[1]!.file}: segment 1 is 513 bytes, the index says 512`);
});

t.test('a deleted segment file is missing', async (t) => {
  const set = await evidenceSet();
  rmSync(path.join(set.evidenceDir, set.closed[0]!.file));
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `missing: recording ${set.closedId} ${set.closed[0]!.file}: segment 0 is indexed but its file is gone`);
});

t.test('a deleted middle row: the gap, and its file is unindexed', async (t) => {
  const set = await evidenceSet();
  sql(set, 'DELETE FROM evidence_segment WHERE recording_id = ? AND idx = 1', set.openId);
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `row_missing: recording ${set.openId} ${set.open[2]!.file}: index row 1 is missing`);
  t.match(r.out, `unindexed: recording ${set.openId} ${set.open[1]!.file}`);
});

t.test('a deleted row with the rest renumbered: the chain breaks, the manifest disagrees', async (t) => {
  const set = await evidenceSet();
  const db = set.db();
  db.transaction(() => {
    db.prepare('DELETE FROM evidence_segment WHERE recording_id = ? AND idx = 1').run(set.closedId);
    for (let i = 2; i < set.closed.length; i += 1) db.prepare('UPDATE evidence_segment SET idx = ? WHERE recording_id = ? AND idx = ?').run(i - 1, set.closedId, i);
  })();
  db.close();
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `chain_broken: recording ${set.closedId} ${set.closed[2]!.file}: segment 1's prev_sha256`);
  t.match(r.out, `unindexed: recording ${set.closedId} ${set.closed[1]!.file}`);
  t.match(r.out, /manifest_mismatch: recording \S+ \S+: segment 1's index row differs from the signed manifest/);
});

t.test("a deleted last row of a closed recording is caught by the manifest", async (t) => {
  const set = await evidenceSet();
  const last = set.closed.at(-1)!;
  sql(set, 'DELETE FROM evidence_segment WHERE recording_id = ? AND idx = ?', set.closedId, last.idx);
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `row_missing: recording ${set.closedId} ${last.file}: the manifest lists segment ${last.idx} but the index has no row for it`);
  t.match(r.out, `manifest_mismatch: recording ${set.closedId}: the manifest's chainHead`);
  t.match(r.out, `unindexed: recording ${set.closedId} ${last.file}`);
});

t.test('a deleted last row of an open recording leaves its file unindexed', async (t) => {
  const set = await evidenceSet();
  const last = set.open.at(-1)!;
  sql(set, 'DELETE FROM evidence_segment WHERE recording_id = ? AND idx = ?', set.openId, last.idx);
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.equal(r.out.split('\n')[0], `unindexed: recording ${set.openId} ${last.file}: a file in the recording folder that the index does not list`);
});

t.test('an added file in a recording folder, and an unknown recording folder, are unindexed', async (t) => {
  const set = await evidenceSet();
  writeFileSync(path.join(set.evidenceDir, 'recordings', set.closedId, 'extra.ts'), 'planted');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(path.join(set.evidenceDir, 'recordings', 'not-a-recording'));
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `unindexed: recording ${set.closedId} recordings/${set.closedId}/extra.ts`);
  t.match(r.out, 'unindexed: recording not-a-recording recordings/not-a-recording: a recording folder the index does not know');
});

t.test('a file and its row both rewritten: the chain or the manifest shows it', async (t) => {
  const set = await evidenceSet();
  const victim = set.closed[1]!;
  const file = path.join(set.evidenceDir, victim.file);
  writeFileSync(file, Buffer.alloc(512, 7));
  const { hashFile } = await import('../src/recording/manifest.ts');
  const { sha256 } = await hashFile(file);
  sql(set, 'UPDATE evidence_segment SET sha256 = ? WHERE recording_id = ? AND idx = 1', sha256, set.closedId);
  const r = await run(set.stateDir);
  t.equal(r.code, 1);
  t.match(r.out, `chain_broken: recording ${set.closedId} ${set.closed[2]!.file}`);
  t.match(r.out, `manifest_mismatch: recording ${set.closedId} ${victim.file}: segment 1's index row differs from the signed manifest`);
});

t.test('manifest tampering: manifest.json, the stored manifest, the signature', async (t) => {
  const dirOf = (set: EvidenceSet) => path.join(set.evidenceDir, 'recordings', set.closedId);
  {
    const set = await evidenceSet();
    const file = path.join(dirOf(set), 'manifest.json');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"status":"closed"', '"status":"closedx"'));
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `manifest_mismatch: recording ${set.closedId} recordings/${set.closedId}/manifest.json: manifest.json differs from the manifest in the database`);
  }
  {
    const set = await evidenceSet();
    const db = set.db();
    const text = db.prepare<[string], { manifest: string }>('SELECT manifest FROM recording WHERE id = ?').get(set.closedId)!.manifest;
    db.prepare('UPDATE recording SET manifest = ? WHERE id = ?').run(text.replace(set.closed[0]!.sha256, 'f'.repeat(64)), set.closedId);
    db.close();
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `bad_signature: recording ${set.closedId} recordings/${set.closedId}/manifest.sig: the manifest in the database does not verify with the device key`);
    t.match(r.out, 'manifest_mismatch');
  }
  {
    const set = await evidenceSet();
    const sigFile = path.join(dirOf(set), 'manifest.sig');
    const sig = Buffer.from(readFileSync(sigFile, 'utf8').trim(), 'base64url');
    sig[0] = sig[0]! ^ 1;
    writeFileSync(sigFile, sig.toString('base64url'));
    sql(set, 'UPDATE recording SET manifest_sig = ? WHERE id = ?', sig.toString('base64url'), set.closedId);
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `bad_signature: recording ${set.closedId} recordings/${set.closedId}/manifest.sig: the manifest in the database does not verify`);
  }
  {
    const set = await evidenceSet();
    rmSync(path.join(dirOf(set), 'manifest.json'));
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `missing: recording ${set.closedId} recordings/${set.closedId}/manifest.json: manifest.json is gone`);
  }
  {
    const set = await evidenceSet();
    sql(set, 'UPDATE recording SET manifest = NULL WHERE id = ?', set.closedId);
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `manifest_mismatch: recording ${set.closedId}: the recording is closed but has no manifest in the database`);
  }
});

t.test('nothing to check: exit 2', async (t) => {
  const r = await run(path.join(path.sep, 'nonexistent-bwc-state'));
  t.equal(r.code, 2);
  t.match(r.err, /bwc-agent evidence verify: cannot open/);
});

t.test('the audit trail names every recording: one deleted whole is missing, a sealed one un-sealed is a mismatch', async (t) => {
  {
    const set = await evidenceSet();
    rmSync(path.join(set.evidenceDir, 'recordings', set.closedId), { recursive: true });
    sql(set, 'DELETE FROM evidence_segment WHERE recording_id = ?', set.closedId);
    sql(set, 'DELETE FROM recording WHERE id = ?', set.closedId);
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.equal(r.out.split('\n')[0], `missing: recording ${set.closedId} recordings/${set.closedId}: the audit trail names this recording (recording.start, seq 1) but the index has no row for it and its folder is gone: the recording was deleted`);
  }
  {
    const set = await evidenceSet();
    // Back to 'recording' with no manifest: the index's own checks skip an open recording's manifest.
    sql(set, "UPDATE recording SET status = 'recording', manifest = NULL, manifest_sig = NULL WHERE id = ?", set.closedId);
    rmSync(path.join(set.evidenceDir, 'recordings', set.closedId, 'manifest.json'));
    rmSync(path.join(set.evidenceDir, 'recordings', set.closedId, 'manifest.sig'));
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, `manifest_mismatch: recording ${set.closedId}: the audit trail says it was sealed (recording.sealed, seq `);
  }
  {
    const set = await evidenceSet();
    sql(set, "UPDATE audit_entry SET entry = json_set(entry, '$.operator', 'x') WHERE seq = 2");
    const r = await run(set.stateDir);
    t.equal(r.code, 1);
    t.match(r.out, /^audit_chain: audit trail: the audit trail this check relies on is broken at seq 2: edited: /m);
  }
});
