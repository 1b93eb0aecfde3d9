// `bwc-agent audit verify`: checks a camera's database (--state-dir) or a capture of the fleet's
// `audit` topic (--file) and prints one line. Exit 0 the chain is intact, 1 it is broken, 2 bad
// usage or nothing readable to check.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { JWK } from 'jose';
import { deviceKeyFile } from '../keys/device-key.ts';
import { parseAuditHead, verifyAuditCapture, verifyAuditDatabase, type AuditHead, type AuditVerifyOptions, type AuditVerifyResult } from './verify.ts';
import { errorMessage } from '../errors.ts';

export interface AuditVerifyArgs {
  stateDir?: string;
  file?: string;
  /** The device's registered public key: a JWK (JSON, or JSON with a `publicJwk` member) or a PEM. */
  publicKeyFile?: string;
  /** `SEQ:HASH`, the newest audit head the fleet saw (state.auditHead): a rollback or fork fails. */
  expectHead?: string;
}

class UsageProblem extends Error {}

export async function auditVerifyCommand(args: AuditVerifyArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  try {
    if ((args.stateDir === undefined) === (args.file === undefined)) throw new UsageProblem('audit verify needs exactly one of --state-dir DIR or --file CAPTURE');
    let expectHead: AuditHead | undefined;
    if (args.expectHead !== undefined) {
      try {
        expectHead = parseAuditHead(args.expectHead);
      } catch (e) {
        throw new UsageProblem(`--expect-head: ${errorMessage(e)}`);
      }
    }
    let publicJwk = args.publicKeyFile === undefined ? undefined : readPublicKey(args.publicKeyFile);
    let result: AuditVerifyResult;
    let keySource = args.publicKeyFile === undefined ? '' : ` (${path.basename(args.publicKeyFile)})`;
    if (args.stateDir !== undefined) {
      if (!publicJwk) {
        // Better than nothing, but it is the camera's own key file: an auditor who does not trust
        // the camera passes --public-key with the key the fleet registered.
        const own = path.join(args.stateDir, deviceKeyFile);
        if (existsSync(own)) {
          publicJwk = publicJwkOf(readFileSync(own, 'utf8'), own);
          keySource = ' (key read from the state folder)';
        }
      }
      result = verifyDatabaseFile(path.join(args.stateDir, 'agent.db'), { ...(publicJwk ? { publicJwk } : {}), ...(expectHead ? { expectHead } : {}) });
    } else {
      let text: string;
      try {
        text = readFileSync(args.file!, 'utf8');
      } catch (e) {
        throw new UsageProblem(`cannot read ${args.file}: ${errorMessage(e)}`);
      }
      if (!publicJwk) keySource = ' (the key the checkpoints carry: compare it with the device\'s registered key)';
      result = verifyAuditCapture(text, { ...(publicJwk ? { publicJwk } : {}), ...(expectHead ? { expectHead } : {}) });
    }
    out.write(`${summary(result, keySource)}\n`);
    return result.ok ? 0 : 1;
  } catch (e) {
    err.write(`bwc-agent audit verify: ${errorMessage(e)}\n`);
    return 2;
  }
}

function verifyDatabaseFile(file: string, opts: AuditVerifyOptions): AuditVerifyResult {
  let db: Database.Database;
  try {
    // Read-only and no migrations: the verifier must not change what it is checking.
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (e) {
    throw new UsageProblem(`cannot open ${file}: ${errorMessage(e)}`);
  }
  try {
    return verifyAuditDatabase(db, opts);
  } catch (e) {
    throw new UsageProblem(`cannot read the audit tables in ${file}: ${errorMessage(e)}`);
  } finally {
    db.close();
  }
}

function readPublicKey(file: string): JWK {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageProblem(`cannot read ${file}: ${errorMessage(e)}`);
  }
  return publicJwkOf(text, file);
}

function publicJwkOf(text: string, file: string): JWK {
  try {
    if (text.trimStart().startsWith('-----BEGIN')) {
      const key = text.includes('PRIVATE KEY') ? createPublicKey(createPrivateKey(text)) : createPublicKey(text);
      return key.export({ format: 'jwk' }) as JWK;
    }
    const json = JSON.parse(text) as { kty?: unknown; publicJwk?: unknown };
    const jwk = typeof json.kty === 'string' ? json : json.publicJwk;
    if (typeof jwk !== 'object' || jwk === null) throw new Error('neither a JWK nor an object with a publicJwk member');
    // Only the public members: a private JWK handed over by mistake must not be used as such.
    return createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ format: 'jwk' }) as JWK;
  } catch (e) {
    throw new UsageProblem(`${file} holds no usable public key: ${errorMessage(e)}`);
  }
}

function summary(r: AuditVerifyResult, keySource: string): string {
  if (r.firstProblem) {
    const p = r.firstProblem;
    return `audit chain BROKEN at seq ${p.seq}: ${p.kind}: ${p.message}`;
  }
  const parts = [`audit chain OK: ${r.entries} entries, ${r.checkpoints} checkpoints`];
  if (r.head) parts.push(`head seq ${r.head.seq} hash ${r.head.hash.slice(0, 16)}…`);
  if (r.expectedHeadFound) parts.push('the expected head is in the chain');
  if (!r.signaturesChecked) parts.push('checkpoint signatures NOT checked (no public key; pass --public-key)');
  else if (r.kid) parts.push(`signed by kid ${r.kid}${keySource}`);
  else parts.push('no checkpoints, nothing signed');
  let line = parts.join(', ');
  if (r.unsignedEntries > 0 && r.checkpoints > 0) line += `; the last ${r.unsignedEntries} entries are after the last checkpoint and not yet signed`;
  return line;
}
