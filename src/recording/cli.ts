// `bwc-agent evidence verify [--state-dir DIR] [--expect-head SEQ:HASH]`: checks every evidence
// file against the index, the hash chains and the signed manifests, and every recording the audit
// trail names against the index, and prints one line per problem then a summary.
// Exit 0 all intact, 1 something differs (each line names the kind, recording and file), 2 bad
// usage or nothing readable to check.
import path from 'node:path';
import Database from 'better-sqlite3';
import { evidenceDirOf } from './layout.ts';
import { parseAuditHead, type AuditHead } from '../audit/verify.ts';
import { deviceJwkFromStateDir, verifyEvidence, type EvidenceVerifyResult } from './verify.ts';
import { errorMessage } from '../errors.ts';

export interface EvidenceVerifyArgs {
  stateDir: string;
  /** Default `<stateDir>/evidence`. */
  evidenceDir?: string;
  /** `SEQ:HASH`, the newest audit head the fleet saw: the audit trail checked against it. */
  expectHead?: string;
}

export async function evidenceVerifyCommand(args: EvidenceVerifyArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  let expectHead: AuditHead | undefined;
  try {
    expectHead = args.expectHead === undefined ? undefined : parseAuditHead(args.expectHead);
  } catch (e) {
    err.write(`bwc-agent evidence verify: --expect-head: ${errorMessage(e)}\n`);
    return 2;
  }
  let db: Database.Database;
  const file = path.join(args.stateDir, 'agent.db');
  try {
    // Read-only and no migrations: the verifier must not change what it is checking.
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (e) {
    err.write(`bwc-agent evidence verify: cannot open ${file}: ${errorMessage(e)}\n`);
    return 2;
  }
  try {
    // The camera's own key file: enough to catch tampering with files or rows; an auditor who
    // does not trust the camera compares the printed kid with the one the fleet registered.
    const publicJwk = deviceJwkFromStateDir(args.stateDir);
    const result = await verifyEvidence({ db, evidenceDir: args.evidenceDir ?? evidenceDirOf(args.stateDir), ...(publicJwk ? { publicJwk } : {}), ...(expectHead ? { expectHead } : {}) });
    for (const p of result.problems) out.write(`${p.kind}: ${p.recordingId === '' ? 'audit trail' : `recording ${p.recordingId}`}${p.file ? ` ${p.file}` : ''}: ${p.message}\n`);
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
  return `evidence OK: ${counts}; ${keyNote}; ${auditNote}`;
}
