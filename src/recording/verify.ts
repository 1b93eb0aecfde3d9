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
// How a deleted row shows: the file it named is on disk but unindexed; the next row's index jumps
// (or, renumbered, its prev_sha256 no longer matches); a deleted last row is still listed by the
// manifest of a closed or interrupted recording, and of an open one the file remains unindexed.
import { createPrivateKey, createPublicKey, verify } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { JWK } from 'jose';
import { jwkThumbprint } from '../audit/verify.ts';
import { deviceKeyFile } from '../keys/device-key.ts';
import type { Db } from '../store/database.ts';
import { isManifestName, manifestFile, recordingsDirOf, signatureFile } from './layout.ts';
import { genesisSha256, hashFile, manifestSegment, segmentRows, type Manifest, type ManifestSegment, type RecordingRow } from './manifest.ts';
import { canonicalJson } from '../audit/canonical-json.ts';

export type EvidenceProblemKind = 'modified' | 'missing' | 'unindexed' | 'chain_broken' | 'row_missing' | 'manifest_mismatch' | 'bad_signature';

export interface EvidenceProblem {
  kind: EvidenceProblemKind;
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
}

export interface EvidenceVerifyOptions {
  db: Db;
  evidenceDir: string;
  /** The device's public key; without it signatures are not checked. */
  publicJwk?: JWK;
}

export async function verifyEvidence(o: EvidenceVerifyOptions): Promise<EvidenceVerifyResult> {
  const tables = o.db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('recording', 'evidence_segment')").all();
  if (tables.length !== 2) throw new Error('this database has no evidence tables (schema older than version 4?)');
  const problems: EvidenceProblem[] = [];
  const kid = o.publicJwk ? jwkThumbprint(o.publicJwk) : undefined;
  const key = o.publicJwk ? createPublicKey({ key: o.publicJwk as import('node:crypto').JsonWebKey, format: 'jwk' }) : undefined;
  const recordings = o.db.prepare<[], RecordingRow>('SELECT * FROM recording ORDER BY started_at, id').all();
  let segments = 0;
  let bytes = 0;
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
      const st = statSync(abs, { throwIfNoEntry: false });
      if (!st?.isFile()) {
        p('missing', `segment ${row.idx} is indexed but its file is gone`, row.file);
        continue;
      }
      bytes += st.size;
      if (st.size !== row.bytes) {
        p('modified', `segment ${row.idx} is ${st.size} bytes, the index says ${row.bytes}`, row.file);
        continue;
      }
      const { sha256 } = await hashFile(abs);
      if (sha256 !== row.sha256) p('modified', `segment ${row.idx}'s SHA-256 is ${sha256.slice(0, 12)}…, the index says ${row.sha256.slice(0, 12)}…`, row.file);
    }
    if (rec.status !== 'recording') checkManifest(o, rec, rows.map(manifestSegment), key, kid, p);
  }
  problems.push(...unindexed(o, recordings));
  return { ok: problems.length === 0, recordings: recordings.length, segments, bytes, problems, signaturesChecked: key !== undefined, ...(kid ? { kid } : {}) };
}

function checkManifest(
  o: EvidenceVerifyOptions,
  rec: RecordingRow,
  indexed: ManifestSegment[],
  key: ReturnType<typeof createPublicKey> | undefined,
  kid: string | undefined,
  p: (kind: EvidenceProblemKind, message: string, file?: string) => void,
): void {
  const dirRel = `recordings/${rec.id}`;
  if (rec.manifest === null || rec.manifest_sig === null) {
    p('manifest_mismatch', `the recording is ${rec.status} but has no manifest in the database`);
    return;
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
  const diskText = onDisk(manifestFile);
  const diskSig = onDisk(signatureFile);
  if (diskText === undefined) p('missing', 'manifest.json is gone', `${dirRel}/${manifestFile}`);
  else if (diskText !== rec.manifest) p('manifest_mismatch', 'manifest.json differs from the manifest in the database', `${dirRel}/${manifestFile}`);
  if (diskSig === undefined) p('missing', 'manifest.sig is gone', `${dirRel}/${signatureFile}`);
  else if (diskSig.trim() !== rec.manifest_sig) p('bad_signature', 'manifest.sig differs from the signature in the database', `${dirRel}/${signatureFile}`);

  let m: Manifest;
  try {
    m = JSON.parse(rec.manifest) as Manifest;
    if (!Array.isArray(m.segments)) throw new Error('no segments');
  } catch (e) {
    p('manifest_mismatch', `the manifest is not readable: ${(e as Error).message}`);
    return;
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
}

function unindexed(o: EvidenceVerifyOptions, recordings: RecordingRow[]): EvidenceProblem[] {
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
      if (isManifestName(f) || indexed.has(`${rel}/${f}`)) continue;
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
