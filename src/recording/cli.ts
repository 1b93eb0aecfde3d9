// `bwc-agent evidence verify [--state-dir DIR] [--expect-head SEQ:HASH] [--identity FILE]`: checks
// every evidence file against the index, the hash chains and the signed manifests, and every
// recording the audit trail names against the index, and prints one line per problem then a
// summary; with an age identity file it also decrypts every encrypted file and checks the content.
// `bwc-agent evidence export --identity FILE --recording ID --out DIR`: the same checks for one
// recording, then its segments decrypted to playable .ts files, its manifest and signature, its
// track decrypted, and verification-report.json.
// Exit 0 all intact, 1 something differs (each line names the kind, recording and file), 2 bad
// usage or nothing readable to check.
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { evidenceDirOf } from './layout.ts';
import { parseAuditHead, type AuditHead } from '../audit/verify.ts';
import { deviceJwkFromStateDir, verifyEvidence, type EvidenceProblem, type EvidenceVerifyResult } from './verify.ts';
import { ageSuffix, decryptFileTo, decryptSmallFile, readIdentityFile, TsVideoCheck } from './encryption.ts';
import { manifestFile, signatureFile, trackFile } from './layout.ts';
import { segmentRows, type Manifest, type RecordingRow } from './manifest.ts';
import { errorMessage } from '../errors.ts';

export interface EvidenceVerifyArgs {
  stateDir: string;
  /** Default `<stateDir>/evidence`. */
  evidenceDir?: string;
  /** `SEQ:HASH`, the newest audit head the fleet saw: the audit trail checked against it. */
  expectHead?: string | undefined;
  /** An age identity file: encrypted files are decrypted and their content checked too. */
  identityFile?: string | undefined;
}

function loadIdentities(file: string | undefined, verb: string, err: NodeJS.WritableStream): string[] | undefined | null {
  if (file === undefined) return undefined;
  try {
    return readIdentityFile(file);
  } catch (e) {
    err.write(`bwc-agent evidence ${verb}: --identity: ${errorMessage(e)}\n`);
    return null;
  }
}

function openReadOnly(stateDir: string, verb: string, err: NodeJS.WritableStream): Database.Database | undefined {
  const file = path.join(stateDir, 'agent.db');
  try {
    // Read-only and no migrations: the verifier must not change what it is checking.
    return new Database(file, { readonly: true, fileMustExist: true });
  } catch (e) {
    err.write(`bwc-agent evidence ${verb}: cannot open ${file}: ${errorMessage(e)}\n`);
    return undefined;
  }
}

const problemLine = (p: EvidenceProblem) => `${p.kind}: ${p.recordingId === '' ? 'audit trail' : `recording ${p.recordingId}`}${p.file ? ` ${p.file}` : ''}: ${p.message}\n`;

export async function evidenceVerifyCommand(args: EvidenceVerifyArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  let expectHead: AuditHead | undefined;
  try {
    expectHead = args.expectHead === undefined ? undefined : parseAuditHead(args.expectHead);
  } catch (e) {
    err.write(`bwc-agent evidence verify: --expect-head: ${errorMessage(e)}\n`);
    return 2;
  }
  const identities = loadIdentities(args.identityFile, 'verify', err);
  if (identities === null) return 2;
  const db = openReadOnly(args.stateDir, 'verify', err);
  if (!db) return 2;
  try {
    // The camera's own key file: enough to catch tampering with files or rows; an auditor who
    // does not trust the camera compares the printed kid with the one the fleet registered.
    const publicJwk = deviceJwkFromStateDir(args.stateDir);
    const result = await verifyEvidence({
      db,
      evidenceDir: args.evidenceDir ?? evidenceDirOf(args.stateDir),
      ...(publicJwk ? { publicJwk } : {}),
      ...(expectHead ? { expectHead } : {}),
      ...(identities ? { identities } : {}),
    });
    for (const p of result.problems) out.write(problemLine(p));
    // The bookmarks, as signed, so an investigator finds the marked moments.
    for (const m of result.marks) out.write(`mark ${m.markId} in ${m.recordingId} at ${m.time} (+${m.offsetS} s after its start) by ${m.source === 'command' ? m.operator : 'the wearer'}${m.note === null ? '' : `: ${JSON.stringify(m.note)}`}\n`);
    out.write(`${summary(result)}\n`);
    return result.ok ? 0 : 1;
  } catch (e) {
    err.write(`bwc-agent evidence verify: ${errorMessage(e)}\n`);
    return 2;
  } finally {
    db.close();
  }
}

function summary(r: EvidenceVerifyResult): string {
  const counts = `${r.recordings} recordings, ${r.segments} segments, ${r.bytes} bytes`;
  const keyNote = r.signaturesChecked ? `manifests signed by kid ${r.kid}` : 'manifest signatures NOT checked (no device key in the state folder)';
  if (!r.ok) return `evidence verify FAILED: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} (${counts})`;
  const auditNote = `all ${r.audit.recordingsNamed} recordings the audit trail names are there (audit head seq ${r.audit.head?.seq ?? 0})`;
  const decryptNote = r.decrypted ? `; ${r.decrypted.segments} encrypted segments decrypted to MPEG-TS with an H.264 keyframe, ${r.decrypted.tracks} GPS tracks decrypted` : '';
  return `evidence OK: ${counts}; ${keyNote}; ${auditNote}${decryptNote}`;
}

export interface EvidenceExportArgs {
  stateDir: string;
  identityFile: string;
  recordingId: string;
  outDir: string;
}

interface ExportedSegment {
  index: number;
  /** As stored on the camera (the ciphertext the manifest hashes). */
  file: string;
  sha256: string;
  /** The plaintext written into the export folder. */
  out: string | null;
  plaintextSha256: string | null;
  plaintextBytes: number | null;
  problem: string | null;
}

/** A pass-through that hashes and counts what flows through it. */
function hashing(): Transform & { sha256: () => string; bytes: () => number } {
  const h = createHash('sha256');
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      h.update(chunk);
      n += chunk.length;
      done(null, chunk);
    },
  });
  return Object.assign(t, { sha256: () => h.digest('hex'), bytes: () => n });
}

export async function evidenceExportCommand(args: EvidenceExportArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const identities = loadIdentities(args.identityFile, 'export', err);
  if (!identities) return 2;
  const db = openReadOnly(args.stateDir, 'export', err);
  if (!db) return 2;
  try {
    const rec = db.prepare<[string], RecordingRow>('SELECT * FROM recording WHERE id = ?').get(args.recordingId);
    if (!rec) {
      err.write(`bwc-agent evidence export: --recording: no recording ${JSON.stringify(args.recordingId)} in ${args.stateDir}\n`);
      return 2;
    }
    const evidenceDir = evidenceDirOf(args.stateDir);
    const publicJwk = deviceJwkFromStateDir(args.stateDir);
    const result = await verifyEvidence({ db, evidenceDir, recordingId: rec.id, identities, ...(publicJwk ? { publicJwk } : {}) });
    await mkdir(args.outDir, { recursive: true });
    const segments: ExportedSegment[] = [];
    for (const row of segmentRows(db, rec.id)) {
      const src = path.join(evidenceDir, ...row.file.split('/'));
      const name = path.basename(row.file).replace(/\.age$/, '');
      const entry: ExportedSegment = { index: row.idx, file: row.file, sha256: row.sha256, out: null, plaintextSha256: null, plaintextBytes: null, problem: null };
      segments.push(entry);
      if (!existsSync(src)) {
        entry.problem = 'missing';
        continue;
      }
      const dest = path.join(args.outDir, name);
      const hash = hashing();
      try {
        if (row.file.endsWith(ageSuffix)) await decryptFileTo(src, identities, createWriteStream(dest, { mode: 0o600 }), hash);
        else await pipeline(createReadStream(src), hash, createWriteStream(dest));
        const check = new TsVideoCheck();
        await pipeline(createReadStream(dest), check);
        entry.out = name;
        entry.plaintextSha256 = hash.sha256();
        entry.plaintextBytes = hash.bytes();
        entry.problem = check.problem() ?? null;
      } catch (e) {
        await rm(dest, { force: true });
        entry.problem = `does not decrypt: ${errorMessage(e)}`;
      }
    }
    const copied: string[] = [];
    for (const name of [manifestFile, signatureFile]) {
      const src = path.join(evidenceDir, 'recordings', rec.id, name);
      if (existsSync(src)) {
        await copyFile(src, path.join(args.outDir, name));
        copied.push(name);
      }
    }
    let manifest: Manifest | null = null;
    try {
      manifest = rec.manifest === null ? null : (JSON.parse(rec.manifest) as Manifest);
    } catch {
      manifest = null; // verify reported it
    }
    let track: string | null = null;
    const trackSrc = path.join(evidenceDir, 'recordings', rec.id, trackFile);
    if (existsSync(trackSrc)) {
      try {
        await writeFile(path.join(args.outDir, 'track.json'), await decryptSmallFile(trackSrc, identities));
        track = 'track.json';
      } catch {
        track = null; // verify reported it (undecryptable)
      }
    }
    const report = {
      recordingId: rec.id,
      deviceId: manifest?.deviceId ?? null,
      status: rec.status,
      exportedAt: new Date().toISOString(),
      ok: result.ok && segments.every((s) => s.problem === null),
      signaturesChecked: result.signaturesChecked,
      kid: result.kid ?? null,
      manifestSha256: rec.manifest === null ? null : createHash('sha256').update(rec.manifest).digest('hex'),
      encryption: manifest?.encryption ?? null,
      files: { manifest: copied.includes(manifestFile) ? manifestFile : null, signature: copied.includes(signatureFile) ? signatureFile : null, track },
      segments,
      problems: result.problems,
      audit: result.audit,
    };
    await writeFile(path.join(args.outDir, 'verification-report.json'), `${JSON.stringify(report, null, 2)}\n`);
    for (const p of result.problems) out.write(problemLine(p));
    for (const sgm of segments) if (sgm.problem !== null && !result.problems.some((p) => p.file === sgm.file)) out.write(`export: recording ${rec.id} ${sgm.file}: ${sgm.problem}\n`);
    const written = segments.filter((x) => x.out !== null).length;
    out.write(`${report.ok ? 'export OK' : 'export FAILED verification'}: ${written} of ${segments.length} segments written to ${args.outDir}, with ${[...copied, ...(track ? [track] : []), 'verification-report.json'].join(', ')}\n`);
    return report.ok ? 0 : 1;
  } finally {
    db.close();
  }
}
