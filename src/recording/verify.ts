// Checks the evidence on disk against the evidence index and the signed manifests, trusting
// neither alone. Every problem is reported (not only the first), each naming the recording, the
// file and one kind:
//   missing            an indexed segment's file (or a sealed recording's manifest.json) is gone
//   modified           a file's size or SHA-256 differs from its index row
//   unindexed          a file in a recording folder (or a recording folder) the index does not know
//   chain_broken       a row's prev_sha256 is not the previous row's sha256
//   row_missing        an index row is gone: a gap in the indexes, or a segment the manifest lists
//   manifest_mismatch  the signed manifest and the index (or manifest.json and the database) differ
//   bad_signature      a manifest's signature does not verify with the device key, or another key signed it
//   audit_chain        the audit chain the cross-check below relies on is broken (or rolled back or
//                      forked against an expected head)
//   undecryptable      (with identities) an encrypted file does not decrypt: a bad age header, a key
//                      that is not among the identities, or a truncated or altered ciphertext
//   not_video          (with identities) a segment decrypts but is not MPEG-TS holding an H.264 keyframe
// Hashes, the chain and the manifest cover the files as stored (the ciphertext), so all but the last
// two need no private key.
// Then every recording the audit chain names must be indexed ("missing" names one deleted whole),
// and a sealed one's manifest must have the SHA-256 its recording.sealed entry holds
// ("manifest_mismatch": rebuilt and re-signed, e.g. with the device key from the SD card).
// How a deleted row shows: the file it named is on disk but unindexed; the next row's index jumps
// (or, renumbered, its prev_sha256 no longer matches); a deleted last row is still listed by the
// manifest of a closed or interrupted recording, and of an open one the file remains unindexed.
import { createPrivateKey, createPublicKey, verify } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { JWK } from 'jose';
import { jwkThumbprint, verifyAuditDatabase, type AuditHead } from '../audit/verify.ts';
import { deviceKeyFile } from '../keys/device-key.ts';
import type { Db } from '../store/database.ts';
import { isManifestName, isTalkFileName, manifestFile, recordingsDirOf, signatureFile } from './layout.ts';
import { TsVideoCheck, ageSuffix, decryptFileTo, decryptSmallFile } from './encryption.ts';
import { genesisSha256, hashFile, manifestDigest, manifestMark, manifestSegment, markRows, segmentRows, type Manifest, type ManifestMark, type ManifestSegment, type RecordingRow } from './manifest.ts';
import { canonicalJson } from '../audit/canonical-json.ts';
import { errorMessage } from '../errors.ts';

export type EvidenceProblemKind = 'modified' | 'missing' | 'unindexed' | 'chain_broken' | 'row_missing' | 'manifest_mismatch' | 'bad_signature' | 'audit_chain' | 'undecryptable' | 'not_video';

export interface EvidenceProblem {
  kind: EvidenceProblemKind;
  /** Empty for a problem with the audit trail itself (audit_chain). */
  recordingId: string;
  /** Relative to the evidence folder. */
  file?: string;
  message: string;
}

export interface EvidenceVerifyResult {
  ok: boolean;
  recordings: number;
  segments: number;
  bytes: number;
  problems: EvidenceProblem[];
  /** False when no device key was available: manifests compared with the index, signatures not checked. */
  signaturesChecked: boolean;
  kid?: string;
  /** Recordings the audit trail names, and its head: every one of them was looked for. */
  audit: { recordingsNamed: number; head: AuditHead | null };
  /** With identities: the encrypted segments decrypted and found to be MPEG-TS with an H.264 keyframe. */
  decrypted?: { segments: number; tracks: number };
  /** The bookmarks the verified manifests sign (docs/evidence.md, "Marks"), so an investigator finds the moments. */
  marks: (ManifestMark & { recordingId: string })[];
}

export interface EvidenceVerifyOptions {
  db: Db;
  evidenceDir: string;
  /** The device's public key; without it signatures are not checked. */
  publicJwk?: JWK;
  /** The newest audit head the fleet saw (see verifyAuditDatabase): the chain must hold it. */
  expectHead?: AuditHead;
  /** age identities (AGE-SECRET-KEY-1...): each encrypted file is also decrypted and its content checked. */
  identities?: readonly string[];
  /** Only this recording (export); the audit cross-check still runs. */
  recordingId?: string;
}

/** Decrypts one encrypted segment and checks its plaintext is playable video; a problem message or undefined. */
export async function checkEncryptedSegment(file: string, identities: readonly string[]): Promise<{ kind: 'undecryptable' | 'not_video'; message: string } | undefined> {
  const check = new TsVideoCheck();
  try {
    await decryptFileTo(file, identities, check);
  } catch (e) {
    return { kind: 'undecryptable', message: `does not decrypt with the given identity: ${errorMessage(e)}` };
  }
  const problem = check.problem();
  return problem ? { kind: 'not_video', message: problem } : undefined;
}

export async function verifyEvidence(o: EvidenceVerifyOptions): Promise<EvidenceVerifyResult> {
  const tables = o.db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('recording', 'evidence_segment')").all();
  if (tables.length !== 2) throw new Error('this database has no evidence tables (schema older than version 4?)');
  const problems: EvidenceProblem[] = [];
  const kid = o.publicJwk ? jwkThumbprint(o.publicJwk) : undefined;
  const key = o.publicJwk ? createPublicKey({ key: o.publicJwk as import('node:crypto').JsonWebKey, format: 'jwk' }) : undefined;
  const allRecordings = o.db.prepare<[], RecordingRow>('SELECT * FROM recording ORDER BY started_at, id').all();
  const recordings = allRecordings.filter((r) => o.recordingId === undefined || r.id === o.recordingId);
  const concerns = (p: EvidenceProblem) => o.recordingId === undefined || p.recordingId === o.recordingId || p.recordingId === '';
  // Recordings whose local copy the offload retention deleted once the store held every object
  // (src/offload/, audited as offload.delete): their files are checked in the store
  // (`evidence verify --bucket`), their rows and manifests here.
  const offloaded = offloadedRecordings(o.db);
  // Talk-back files the signed manifests list (checked below), so the folder scan does not call them unindexed.
  const listedTalk = new Set<string>();
  let segments = 0;
  let bytes = 0;
  const decrypted = { segments: 0, tracks: 0 };
  const marks: EvidenceVerifyResult['marks'] = [];
  const hasMarks = o.db.prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'recording_mark'").get()!.n > 0;
  for (const rec of recordings) {
    const p = (kind: EvidenceProblemKind, message: string, file?: string) => problems.push({ kind, recordingId: rec.id, message, ...(file === undefined ? {} : { file }) });
    const rows = segmentRows(o.db, rec.id);
    segments += rows.length;
    let expectedPrev = genesisSha256;
    let expectedIdx = 0;
    for (const row of rows) {
      if (row.idx !== expectedIdx) {
        const gap = row.idx === expectedIdx + 1 ? `index row ${expectedIdx} is missing` : `index rows ${expectedIdx} to ${row.idx - 1} are missing`;
        p('row_missing', `${gap} (the next row is segment ${row.idx})`, row.file);
      } else if (row.prev_sha256 !== expectedPrev) {
        p('chain_broken', `segment ${row.idx}'s prev_sha256 ${row.prev_sha256.slice(0, 12)}… is not ${row.idx === 0 ? 'the genesis hash' : `segment ${row.idx - 1}'s hash ${expectedPrev.slice(0, 12)}…`}: a row before it was removed, added or altered`, row.file);
      }
      expectedPrev = row.sha256;
      expectedIdx = row.idx + 1;
      const abs = path.join(o.evidenceDir, ...row.file.split('/'));
      if (offloaded.has(rec.id)) continue;
      const st = statSync(abs, { throwIfNoEntry: false });
      if (!st?.isFile()) {
        p('missing', `segment ${row.idx} is indexed but its file is gone`, row.file);
        continue;
      }
      bytes += st.size;
      if (o.identities && row.file.endsWith(ageSuffix)) {
        const bad = await checkEncryptedSegment(abs, o.identities);
        if (bad) p(bad.kind, `segment ${row.idx} ${bad.message}`, row.file);
        else decrypted.segments += 1;
      }
      if (st.size !== row.bytes) {
        p('modified', `segment ${row.idx} is ${st.size} bytes, the index says ${row.bytes}`, row.file);
        continue;
      }
      const { sha256 } = await hashFile(abs);
      if (sha256 !== row.sha256) p('modified', `segment ${row.idx}'s SHA-256 is ${sha256.slice(0, 12)}…, the index says ${row.sha256.slice(0, 12)}…`, row.file);
    }
    if (rec.status !== 'recording') {
      const m = checkManifest(o, rec, rows.map(manifestSegment), key, kid, p);
      // Marks: the signed list and the index's rows must agree (a mark added, removed or edited in either shows).
      if (m) {
        const indexedMarks = hasMarks ? markRows(o.db, rec.id).map(manifestMark) : [];
        if (canonicalJson(m.marks ?? []) !== canonicalJson(indexedMarks)) p('manifest_mismatch', `the signed manifest lists ${(m.marks ?? []).length} mark(s), the index ${indexedMarks.length}, or they differ`);
        for (const mark of m.marks ?? []) marks.push({ recordingId: rec.id, ...mark });
      }
      // An offloaded recording's track went to the store with its segments (offloadedExtraFiles).
      if (m?.track && !offloaded.has(rec.id)) {
        if (await checkTrack(o, m.track, p)) decrypted.tracks += 1;
      }
      // Talk-back spurts (issue 19): there, as the signed manifest hashed them.
      for (const s of offloaded.has(rec.id) ? [] : (m?.talk ?? [])) {
        listedTalk.add(s.file);
        const abs = path.join(o.evidenceDir, ...s.file.split('/'));
        if (!existsSync(abs)) {
          p('missing', 'a talk-back file the manifest lists is gone', s.file);
          continue;
        }
        const h = await hashFile(abs);
        if (h.sha256 !== s.sha256 || h.bytes !== s.bytes) p('modified', `the talk-back file's SHA-256 is ${h.sha256.slice(0, 12)}… (${h.bytes} bytes), the manifest says ${s.sha256.slice(0, 12)}… (${s.bytes} bytes)`, s.file);
      }
    }
  }
  problems.push(...unindexed(o, allRecordings, listedTalk).filter(concerns));
  const audit = auditCrossCheck(o, allRecordings);
  problems.push(...audit.problems.filter(concerns));
  return {
    ok: problems.length === 0,
    recordings: recordings.length,
    segments,
    bytes,
    problems,
    signaturesChecked: key !== undefined,
    ...(kid ? { kid } : {}),
    audit: { recordingsNamed: audit.named, head: audit.head },
    ...(o.identities ? { decrypted } : {}),
    marks,
  };
}

/** The encrypted track the manifest lists: there, as hashed; with identities, decrypts to JSON. True when decrypted. */
async function checkTrack(o: EvidenceVerifyOptions, track: NonNullable<Manifest['track']>, p: (kind: EvidenceProblemKind, message: string, file?: string) => void): Promise<boolean> {
  const abs = path.join(o.evidenceDir, ...track.file.split('/'));
  if (!existsSync(abs)) {
    p('missing', 'the GPS track the manifest lists is gone', track.file);
    return false;
  }
  const { sha256, bytes } = await hashFile(abs);
  if (sha256 !== track.sha256 || bytes !== track.bytes) p('modified', `the GPS track's SHA-256 is ${sha256.slice(0, 12)}… (${bytes} bytes), the manifest says ${track.sha256.slice(0, 12)}… (${track.bytes} bytes)`, track.file);
  if (!o.identities) return false;
  try {
    JSON.parse(await decryptSmallFile(abs, o.identities));
    return true;
  } catch (e) {
    p('undecryptable', `the GPS track does not decrypt to JSON with the given identity: ${errorMessage(e)}`, track.file);
    return false;
  }
}

/**
 * The index can only vouch for what it still lists: a recording deleted whole (folder, segment
 * rows, recording row) leaves nothing to check. The audit trail names every recording
 * (recording.start, .stop, .interrupted) and every sealed manifest's digest (recording.sealed), so
 * each one it names must still be indexed, and a sealed one's manifest must be the one whose
 * digest was audited (a manifest rebuilt and re-signed with the device key from the SD card is
 * not). The chain is verified first; a rewritten chain is only caught with the fleet's head.
 */
function auditCrossCheck(o: EvidenceVerifyOptions, recordings: RecordingRow[]): { problems: EvidenceProblem[]; named: number; head: AuditHead | null } {
  const out: EvidenceProblem[] = [];
  const chain = verifyAuditDatabase(o.db, { ...(o.publicJwk ? { publicJwk: o.publicJwk } : {}), ...(o.expectHead ? { expectHead: o.expectHead } : {}) });
  if (chain.firstProblem) {
    const f = chain.firstProblem;
    out.push({ kind: 'audit_chain', recordingId: '', message: `the audit trail this check relies on is broken at seq ${f.seq}: ${f.kind}: ${f.message}` });
  }
  const named = new Map<string, { seq: number; type: string }>();
  const sealed = new Map<string, { seq: number; manifestSha256: string }>();
  const rows = o.db.prepare<[], { seq: number; entry: string }>("SELECT seq, entry FROM audit_entry WHERE json_extract(entry, '$.type') LIKE 'recording.%' ORDER BY seq");
  for (const row of rows.iterate()) {
    let e: { type?: unknown; detail?: { recordingId?: unknown; manifestSha256?: unknown } };
    try {
      e = JSON.parse(row.entry) as typeof e;
    } catch {
      continue; // an unreadable entry is the chain's problem, reported above
    }
    const id = e.detail?.recordingId;
    if (typeof id !== 'string' || typeof e.type !== 'string') continue;
    if (!named.has(id)) named.set(id, { seq: row.seq, type: e.type });
    if (e.type === 'recording.sealed' && typeof e.detail?.manifestSha256 === 'string') sealed.set(id, { seq: row.seq, manifestSha256: e.detail.manifestSha256 });
  }
  const byId = new Map(recordings.map((r) => [r.id, r]));
  for (const [id, first] of named) {
    const rec = byId.get(id);
    if (!rec) {
      const folderGone = !existsSync(path.join(recordingsDirOf(o.evidenceDir), id));
      out.push({
        kind: 'missing',
        recordingId: id,
        file: `recordings/${id}`,
        message: `the audit trail names this recording (${first.type}, seq ${first.seq}) but the index has no row for it${folderGone ? ' and its folder is gone' : ''}: the recording was deleted`,
      });
      continue;
    }
    const seal = sealed.get(id);
    if (!seal) continue;
    if (rec.manifest === null) {
      out.push({ kind: 'manifest_mismatch', recordingId: id, message: `the audit trail says it was sealed (recording.sealed, seq ${seal.seq}) but the index has no manifest for it (status ${rec.status})` });
      continue;
    }
    const digest = manifestDigest(rec.manifest);
    if (digest !== seal.manifestSha256) {
      out.push({
        kind: 'manifest_mismatch',
        recordingId: id,
        file: `recordings/${id}/${manifestFile}`,
        message: `the manifest's SHA-256 is ${digest.slice(0, 12)}…, the audit trail says ${seal.manifestSha256.slice(0, 12)}… (recording.sealed, seq ${seal.seq}): the manifest was rebuilt and re-signed after sealing`,
      });
    }
  }
  return { problems: out, named: named.size, head: chain.head ?? null };
}

function checkManifest(
  o: EvidenceVerifyOptions,
  rec: RecordingRow,
  indexed: ManifestSegment[],
  key: ReturnType<typeof createPublicKey> | undefined,
  kid: string | undefined,
  p: (kind: EvidenceProblemKind, message: string, file?: string) => void,
): Manifest | undefined {
  const dirRel = `recordings/${rec.id}`;
  if (rec.manifest === null || rec.manifest_sig === null) {
    p('manifest_mismatch', `the recording is ${rec.status} but has no manifest in the database`);
    return undefined;
  }
  if (key) {
    if (rec.kid !== kid) p('bad_signature', `the manifest names key ${rec.kid}, not the device key ${kid}`, `${dirRel}/${signatureFile}`);
    else if (!verify(null, Buffer.from(rec.manifest), key, Buffer.from(rec.manifest_sig, 'base64url'))) p('bad_signature', 'the manifest in the database does not verify with the device key', `${dirRel}/${signatureFile}`);
  }
  // Files on disk: the same bytes as the database, and the same signature.
  const onDisk = (name: string) => {
    const file = path.join(o.evidenceDir, 'recordings', rec.id, name);
    return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  };
  const gone = offloadedRecordings(o.db).has(rec.id);
  const diskText = gone ? rec.manifest : onDisk(manifestFile);
  const diskSig = gone ? rec.manifest_sig : onDisk(signatureFile);
  if (diskText === undefined) p('missing', 'manifest.json is gone', `${dirRel}/${manifestFile}`);
  else if (diskText !== rec.manifest) p('manifest_mismatch', 'manifest.json differs from the manifest in the database', `${dirRel}/${manifestFile}`);
  if (diskSig === undefined) p('missing', 'manifest.sig is gone', `${dirRel}/${signatureFile}`);
  else if (diskSig.trim() !== rec.manifest_sig) p('bad_signature', 'manifest.sig differs from the signature in the database', `${dirRel}/${signatureFile}`);

  let m: Manifest;
  try {
    m = JSON.parse(rec.manifest) as Manifest;
    if (!Array.isArray(m.segments)) throw new Error('no segments');
  } catch (e) {
    p('manifest_mismatch', `the manifest is not readable: ${errorMessage(e)}`);
    return undefined;
  }
  const fields: [string, unknown, unknown][] = [
    ['recordingId', m.recordingId, rec.id],
    ['status', m.status, rec.status],
    ['startedAt', m.startedAt, rec.started_at],
    ['stoppedAt', m.stoppedAt, rec.stopped_at],
    ['resumedFrom', m.resumedFrom, rec.resumed_from],
    ['chainHead', m.chainHead, indexed.at(-1)?.sha256 ?? genesisSha256],
  ];
  for (const [name, signed, actual] of fields) {
    if (signed !== actual) p('manifest_mismatch', `the manifest's ${name} is ${String(signed)}, the index says ${String(actual)}`);
  }
  const byIndex = new Map(indexed.map((s) => [s.index, s]));
  for (const s of m.segments) {
    const row = byIndex.get(s.index);
    byIndex.delete(s.index);
    if (!row) p('row_missing', `the manifest lists segment ${s.index} but the index has no row for it`, s.file);
    else if (canonicalJson(row) !== canonicalJson(s)) p('manifest_mismatch', `segment ${s.index}'s index row differs from the signed manifest`, row.file);
  }
  for (const row of byIndex.values()) p('manifest_mismatch', `segment ${row.index} is indexed but not in the signed manifest`, row.file);
  return m;
}

function unindexed(o: EvidenceVerifyOptions, recordings: RecordingRow[], listedTalk: ReadonlySet<string>): EvidenceProblem[] {
  const out: EvidenceProblem[] = [];
  const dir = recordingsDirOf(o.evidenceDir);
  if (!existsSync(dir)) return out;
  const known = new Set(recordings.map((r) => r.id));
  const indexed = new Set(o.db.prepare<[], { file: string }>('SELECT file FROM evidence_segment').all().map((r) => r.file));
  for (const name of readdirSync(dir).sort()) {
    const rel = `recordings/${name}`;
    if (!known.has(name)) {
      out.push({ kind: 'unindexed', recordingId: name, file: rel, message: 'a recording folder the index does not know' });
      continue;
    }
    if (!statSync(path.join(dir, name)).isDirectory()) continue;
    for (const f of readdirSync(path.join(dir, name)).sort()) {
      if (isManifestName(f) || indexed.has(`${rel}/${f}`) || listedTalk.has(`${rel}/${f}`)) continue;
      // A spurt still running when its recording was sealed: audited (recording.talk_stored, with its hash), not in the manifest.
      if (isTalkFileName(f)) {
        out.push({ kind: 'unindexed', recordingId: name, file: `${rel}/${f}`, message: 'a talk-back file the manifest does not list (its hash is in the audit trail: recording.talk_stored)' });
        continue;
      }
      out.push({ kind: 'unindexed', recordingId: name, file: `${rel}/${f}`, message: 'a file in the recording folder that the index does not list' });
    }
  }
  return out;
}

/** The device's public JWK from the state folder's private key file, or undefined without one. */
export function deviceJwkFromStateDir(stateDir: string): JWK | undefined {
  const file = path.join(stateDir, deviceKeyFile);
  if (!existsSync(file)) return undefined;
  return createPublicKey(createPrivateKey(readFileSync(file))).export({ format: 'jwk' }) as JWK;
}

/** Ids of the recordings offload deleted locally (migration 6's table; none before it). */
function offloadedRecordings(db: Db): Set<string> {
  const has = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'offload_recording'").get()!.n > 0;
  if (!has) return new Set();
  return new Set(db.prepare<[], { recording_id: string }>("SELECT recording_id FROM offload_recording WHERE status = 'deleted'").all().map((r) => r.recording_id));
}
