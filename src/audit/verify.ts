// Checks an audit trail without trusting the camera: the database a camera holds, or the
// messages the fleet received on `bwc/v1/<deviceId>/audit`, by the same rules (one core below,
// two thin readers). It reports the first problem by seq; a clean result also names the key the
// checkpoints were signed with, so an auditor can compare it with the device's registered key.
//
// How the kinds are told apart. Each entry is first checked on its own ("intact": its hash
// recomputes from its prevHash and fields; in the database also: the entry text is canonical and
// the time column agrees), then against its place in the order read (rows by seq, messages in
// arrival order after identical duplicates are dropped). At position p:
//   intact, seq p, chains to p-1                 fine
//   intact, seq > p, seq p comes later           reordered at p
//   intact, seq > p, seq p nowhere               removed at p (the gap)
//   intact, seq < p, same as the earlier one     inserted at p (a second copy)
//   intact, seq < p, different                   inserted at that seq: two entries claim it and only
//                                                one can be genuine (entry seq+1 chains to it)
//   intact, seq p, chains to p-2                 inserted at p-1 (the rows after it were renumbered)
//   intact, seq p, chains elsewhere              edited at p-1 (changed, hash recomputed)
//   not intact, chains to p-1                    edited at p (any field, the seq inside it, the hashes)
//   not intact, chains to p-2                    inserted at p-1 (renumbered without recomputing)
//   not intact, chains to a later entry          reordered at p (swapped and renumbered)
//   not intact, hashes with a higher seq         removed at p (deleted, later ones renumbered)
//   not intact, otherwise                        edited at p
// Checkpoints, in seq order: a wrong key or a signature that fails is bad_checkpoint; a
// checkpoint beyond the end of the chain is truncated (at the first missing seq); a head hash
// that differs from the chain's hash at its seq is bad_checkpoint, unless dropping one entry
// after the last matching checkpoint and renumbering the rest reproduces the signed head, which
// proves an insertion whose hashes were recomputed (reported as inserted at that entry). An
// entry edited or removed with all later hashes recomputed cannot be located more exactly than
// "between the last good checkpoint and this one": the message says so.
//
// Limits, by construction: entries after the last checkpoint are protected by the chain only, so
// forged entries appended there with correct hashes, or a tail cut off together with its
// checkpoints, cannot be seen in one copy alone (unsignedEntries counts that tail; comparing the
// fleet's copy with the camera's closes it). Nor can a whole older copy put back (a rollback), or
// a chain rewritten and re-signed with the device key taken from the SD card (a fork): for those
// the fleet passes the newest head it saw (expectHead: state.auditHead or a checkpoint), and the
// chain must hold that entry with that hash. Without a pinned key, the first checkpoint's key is
// trusted for the rest (the result's kid says which), so an attacker who re-signs every
// checkpoint with their own key passes unless the kid is compared with the device's.
import { createHash } from 'node:crypto';
import type { JWK } from 'jose';
import { verifyDeviceSignature } from '../keys/device-key.ts';
import type { Db } from '../store/database.ts';
import { canonicalJson } from './canonical-json.ts';
import { checkpointSigningInput, entryFields, entryHash, genesisHash, type AuditCheckpoint, type AuditMessage, type CheckpointRow, type EntryRow } from './audit-log.ts';

export type AuditProblemKind = 'edited' | 'removed' | 'inserted' | 'reordered' | 'bad_checkpoint' | 'truncated' | 'malformed' | 'rollback' | 'fork';

export interface AuditProblem {
  seq: number;
  kind: AuditProblemKind;
  message: string;
  /** For a capture file: the line the problem was found on. */
  line?: number;
}

export interface AuditVerifyResult {
  ok: boolean;
  entries: number;
  checkpoints: number;
  head?: { seq: number; hash: string };
  firstProblem?: AuditProblem;
  /** The key the checkpoints were checked against (pinned, or the first checkpoint's). */
  kid?: string;
  /** False when reading a database without a public key: head hashes checked, signatures not. */
  signaturesChecked: boolean;
  /** Entries after the last checkpoint that matched: protected by the chain, not by a signature. */
  unsignedEntries: number;
  /** Set when an expected head was given: whether the chain holds that entry with that hash. */
  expectedHeadFound?: boolean;
}

/** An audit head as the fleet saw it (state.auditHead, or a checkpoint's seq and headHash). */
export interface AuditHead {
  seq: number;
  hash: string;
}

export interface AuditVerifyOptions {
  /** The device's registered public key: every checkpoint must be signed by it. */
  publicJwk?: JWK;
  /**
   * The newest head the fleet saw from this device: the chain must hold entry `seq` with this
   * hash. Missing means a rollback (an older copy put back, or the tail cut); a different hash a
   * fork (the chain rewritten from an earlier entry on). One copy alone cannot show either.
   */
  expectHead?: AuditHead;
}

/** RFC 7638 thumbprint (SHA-256, base64url), computed synchronously. */
export function jwkThumbprint(jwk: JWK): string {
  const required: Record<string, readonly string[]> = { OKP: ['crv', 'kty', 'x'], EC: ['crv', 'kty', 'x', 'y'], RSA: ['e', 'kty', 'n'], oct: ['k', 'kty'] };
  const names = required[jwk.kty ?? ''];
  if (!names) throw new Error(`unsupported key type ${String(jwk.kty)}`);
  const members: Record<string, unknown> = {};
  for (const name of names) {
    const v = (jwk as Record<string, unknown>)[name];
    if (typeof v !== 'string') throw new Error(`key lacks "${name}"`);
    members[name] = v;
  }
  return createHash('sha256').update(canonicalJson(members)).digest('base64url');
}

interface ChainItem {
  seq: number;
  fields: Record<string, unknown>;
  prevHash: string;
  hash: string;
  /** Why the entry does not verify on its own; undefined when it does. */
  damage: string | undefined;
  rowSeq?: number;
  where: string;
}

interface CheckpointItem {
  seq: number;
  headHash: string;
  time: string;
  device: string;
  kid: string;
  signature: string;
  publicJwk?: JWK;
  where: string;
}

interface Malformed {
  seq: number;
  message: string;
  line?: number;
}

// ---- the database ---------------------------------------------------------------------------


export function verifyAuditDatabase(db: Db, opts: AuditVerifyOptions = {}): AuditVerifyResult {
  const tables = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('audit_entry', 'audit_checkpoint')").all();
  if (tables.length !== 2) throw new Error('this database has no audit tables (schema older than version 2?)');
  const items: ChainItem[] = [];
  let malformed: Malformed | undefined;
  for (const row of db.prepare<[], EntryRow>('SELECT seq, time, entry, prev_hash, hash FROM audit_entry ORDER BY seq').iterate()) {
    const where = `row seq ${row.seq}`;
    let fields: unknown;
    try {
      fields = JSON.parse(row.entry);
    } catch {
      malformed = { seq: row.seq, message: `${where}: the entry is not JSON` };
      break;
    }
    const bad = entryShapeProblem(fields) ?? (typeof row.prev_hash === 'string' && typeof row.hash === 'string' ? undefined : 'hash columns are not text');
    if (bad) {
      malformed = { seq: row.seq, message: `${where}: ${bad}` };
      break;
    }
    const f = fields as Record<string, unknown> & { seq: number; time: string };
    const canonical = canonicalJson(f);
    let damage: string | undefined;
    if (entryHash(row.prev_hash, canonical) !== row.hash) damage = 'its hash does not match its contents';
    else if (row.entry !== canonical) damage = 'its entry text is not the canonical JSON that was hashed';
    else if (row.time !== f.time) damage = `its time column (${row.time}) differs from the hashed time (${f.time})`;
    items.push({ seq: f.seq, fields: f, prevHash: row.prev_hash, hash: row.hash, damage, rowSeq: row.seq, where });
  }
  const bySeq = new Map(items.map((it) => [it.seq, it]));
  const cps: CheckpointItem[] = db
    .prepare<[], CheckpointRow>('SELECT seq, head_hash, time, kid, signature FROM audit_checkpoint ORDER BY seq')
    .all()
    .map((r) => ({
      seq: r.seq,
      headHash: r.head_hash,
      time: r.time,
      // Not stored with the checkpoint: the device id it signed is the entry's at that seq.
      device: String((bySeq.get(r.seq) ?? items.at(-1))?.fields.device ?? ''),
      kid: r.kid,
      signature: r.signature,
      where: `checkpoint row seq ${r.seq}`,
    }));
  return finish(items, cps, opts, malformed, opts.publicJwk !== undefined);
}

// ---- the fleet's copy -----------------------------------------------------------------------

/** Line numbers of messages read from a capture, so problems can name them. */
const lineOf = new WeakMap<object, number>();

export class AuditCaptureError extends Error {
  readonly line: number;
  /** The messages on the lines before the bad one. */
  readonly parsed: AuditMessage[];
  constructor(line: number, reason: string, parsed: AuditMessage[]) {
    super(`line ${line}: ${reason}`);
    this.line = line;
    this.parsed = parsed;
  }
}

/**
 * Reads captured `audit` payloads, one JSON per line (as `mosquitto_sub -t 'bwc/v1/<id>/audit'`
 * prints them). Blank lines are skipped and the outbox's transport `seq` is dropped; the first
 * line that is not an audit message throws AuditCaptureError (verifyAuditCapture reports it).
 */
export function parseAuditCapture(text: string): AuditMessage[] {
  const out: AuditMessage[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new AuditCaptureError(i + 1, 'not JSON', out);
    }
    const bad = messageShapeProblem(value);
    if (bad) throw new AuditCaptureError(i + 1, bad, out);
    const { seq: _transportSeq, ...message } = value as AuditMessage & { seq?: unknown };
    lineOf.set(message, i + 1);
    out.push(message as AuditMessage);
  }
  return out;
}

/** parseAuditCapture then verifyAuditMessages; a bad line is a malformed problem unless an earlier one was found. */
export function verifyAuditCapture(text: string, opts: AuditVerifyOptions = {}): AuditVerifyResult {
  try {
    return verifyAuditMessages(parseAuditCapture(text), opts);
  } catch (err) {
    if (!(err instanceof AuditCaptureError)) throw err;
    const before = verifyAuditMessages(err.parsed, opts);
    if (before.firstProblem) return before;
    const problem: AuditProblem = { seq: (before.head?.seq ?? 0) + 1, kind: 'malformed', message: err.message, line: err.line };
    return { ...before, ok: false, firstProblem: problem };
  }
}

export function verifyAuditMessages(messages: AuditMessage[], opts: AuditVerifyOptions = {}): AuditVerifyResult {
  const items: ChainItem[] = [];
  const cps: CheckpointItem[] = [];
  const seenEntries = new Map<number, string[]>();
  const seenCheckpoints = new Set<string>();
  let malformed: Malformed | undefined;
  for (let i = 0; i < messages.length; i += 1) {
    const m = messages[i]!;
    const line = typeof m === 'object' && m !== null ? lineOf.get(m) : undefined;
    const where = line === undefined ? `message ${i + 1}` : `line ${line}`;
    const bad = messageShapeProblem(m);
    if (bad) {
      malformed = { seq: (items.at(-1)?.seq ?? 0) + 1, message: `${where}: ${bad}`, ...(line === undefined ? {} : { line }) };
      break;
    }
    if (m.kind === 'entry') {
      const e = m.entry as unknown as Record<string, unknown> & { seq: number; prevHash: string; hash: string };
      const fields = entryFields(e);
      const text = canonicalJson(e);
      // At-least-once delivery repeats messages; only an identical repeat is harmless.
      const seen = seenEntries.get(e.seq) ?? [];
      if (seen.includes(text)) continue;
      seenEntries.set(e.seq, [...seen, text]);
      const damage = entryHash(e.prevHash, canonicalJson(fields)) === e.hash ? undefined : 'its hash does not match its contents';
      items.push({ seq: e.seq, fields, prevHash: e.prevHash, hash: e.hash, damage, where });
    } else if (m.kind === 'checkpoint') {
      const text = canonicalJson(m.checkpoint);
      if (seenCheckpoints.has(text)) continue;
      seenCheckpoints.add(text);
      cps.push({ ...m.checkpoint, where });
    }
    // Other kinds are ignored: a later agent may add some, and hiding an entry by relabelling
    // it shows up as a gap in the chain anyway.
  }
  cps.sort((a, b) => a.seq - b.seq);
  return finish(items, cps, opts, malformed, true);
}

// ---- the rules, for both --------------------------------------------------------------------

function finish(items: ChainItem[], cps: CheckpointItem[], opts: AuditVerifyOptions, malformed: Malformed | undefined, signaturesChecked: boolean): AuditVerifyResult {
  const entryProblem = checkEntries(items);
  // Checkpoint problems are only looked for below the first entry problem (and below an
  // unreadable entry, where the readable part ends), so one found is the earlier.
  const below = Math.min(entryProblem?.seq ?? Number.POSITIVE_INFINITY, malformed?.seq ?? Number.POSITIVE_INFINITY);
  const { problem: checkpointProblem, kid, lastGood } = checkCheckpoints(items, cps, opts, below);
  let firstProblem = checkpointProblem ?? entryProblem;
  if (!firstProblem && malformed) firstProblem = { seq: malformed.seq, kind: 'malformed', message: malformed.message, ...(malformed.line === undefined ? {} : { line: malformed.line }) };
  const headProblem = opts.expectHead ? checkExpectedHead(items, opts.expectHead) : undefined;
  // The earlier problem is reported; at the same seq the chain's own finding is the more exact.
  if (headProblem && (!firstProblem || headProblem.seq < firstProblem.seq)) firstProblem = headProblem;
  const last = items.at(-1);
  return {
    ok: firstProblem === undefined,
    entries: items.length,
    checkpoints: cps.length,
    ...(last ? { head: { seq: last.seq, hash: last.hash } } : {}),
    ...(firstProblem ? { firstProblem } : {}),
    ...(kid ? { kid } : {}),
    signaturesChecked,
    unsignedEntries: Math.max(0, items.length - lastGood),
    ...(opts.expectHead ? { expectedHeadFound: headProblem === undefined } : {}),
  };
}

function checkExpectedHead(items: ChainItem[], expected: AuditHead): AuditProblem | undefined {
  const short = (h: string) => `${h.slice(0, 12)}…`;
  // Read by seq, not position: an entry problem below is reported on its own, and this looks only
  // at whether the fleet's head is there.
  const at = items.find((it) => it.seq === expected.seq);
  if (!at) {
    const end = items.at(-1)?.seq ?? 0;
    return {
      seq: end + 1,
      kind: 'rollback',
      message:
        `the chain ends at seq ${end} but the fleet saw head seq ${expected.seq} (hash ${short(expected.hash)}): ` +
        `${expected.seq === end + 1 ? `entry ${end + 1} is` : `entries ${end + 1} to ${expected.seq} are`} gone (an older copy of the database was put back, or the tail was cut)`,
    };
  }
  if (at.hash !== expected.hash) {
    return {
      seq: expected.seq,
      kind: 'fork',
      message: `${at.where} has hash ${short(at.hash)} but the fleet saw ${short(expected.hash)} at seq ${expected.seq}: the chain was rewritten from an earlier entry on (a fork)`,
    };
  }
  return undefined;
}

/** Parses `SEQ:HASH` (as `audit verify --expect-head` takes it); throws naming what is wrong. */
export function parseAuditHead(text: string): AuditHead {
  const m = /^(\d{1,15}):([0-9a-fA-F]{64})$/.exec(text.trim());
  const seq = m ? Number(m[1]) : 0;
  if (!m || seq < 1) {
    throw new Error(`expected SEQ:HASH, the audit head's seq (a whole number from 1) and its 64-hex-digit hash as state.auditHead gives them (got ${JSON.stringify(text)})`);
  }
  return { seq, hash: m[2]!.toLowerCase() };
}

function checkEntries(items: ChainItem[]): AuditProblem | undefined {
  const hashAt = (pos: number) => (pos === 0 ? genesisHash : items[pos - 1]!.hash);
  const positionsOfSeq = new Map<number, number[]>();
  const positionsOfHash = new Map<string, number[]>();
  items.forEach((it, i) => {
    positionsOfSeq.set(it.seq, [...(positionsOfSeq.get(it.seq) ?? []), i + 1]);
    positionsOfHash.set(it.hash, [...(positionsOfHash.get(it.hash) ?? []), i + 1]);
  });
  for (let p = 1; p <= items.length; p += 1) {
    const it = items[p - 1]!;
    const linked = it.prevHash === hashAt(p - 1);
    const chainsToTwoBack = p >= 2 && it.prevHash === hashAt(p - 2);
    if (it.damage === undefined) {
      if (it.seq > p) {
        if ((positionsOfSeq.get(p) ?? []).some((q) => q > p)) {
          return { seq: p, kind: 'reordered', message: `${it.where} holds entry ${it.seq} where entry ${p} belongs; entry ${p} comes later` };
        }
        const missing = it.seq === p + 1 ? `entry ${p} is missing` : `entries ${p} to ${it.seq - 1} are missing`;
        return { seq: p, kind: 'removed', message: `${missing} (${it.where} holds entry ${it.seq})` };
      }
      if (it.seq < p) {
        const first = items[it.seq - 1]!;
        if (first.hash === it.hash && canonicalJson(first.fields) === canonicalJson(it.fields)) {
          return { seq: p, kind: 'inserted', message: `${it.where} is a second copy of entry ${it.seq} (${first.where})` };
        }
        // The genuine one is the one the next entry chains to, when the next entry says.
        const next = items[p];
        const intruder = next?.prevHash === it.hash ? first : next?.prevHash === first.hash ? it : undefined;
        return {
          seq: it.seq,
          kind: 'inserted',
          message:
            `two different entries claim seq ${it.seq} (${first.where} and ${it.where}): ` +
            (intruder ? `${intruder.where} was inserted (entry ${it.seq + 1} chains to the other)` : `one was inserted; the genuine one is the one entry ${it.seq + 1} chains to`),
        };
      }
      if (!linked) {
        if (chainsToTwoBack) return insertedBefore(items, p);
        if (p === 1) return { seq: 1, kind: 'edited', message: `${it.where} does not start from the genesis hash` };
        return {
          seq: p - 1,
          kind: 'edited',
          message: `entry ${p - 1} (${items[p - 2]!.where}) was changed and its hash recomputed: entry ${p} chains to a different hash`,
        };
      }
      if (it.rowSeq !== undefined && it.rowSeq !== it.seq) {
        return { seq: p, kind: 'edited', message: `${it.where}: the seq column was changed; the hashed entry is seq ${it.seq}` };
      }
      continue;
    }
    if (linked) return { seq: p, kind: 'edited', message: `${it.where}: ${it.damage}` };
    if (chainsToTwoBack) return insertedBefore(items, p);
    if ((positionsOfHash.get(it.prevHash) ?? []).some((q) => q > p)) {
      return { seq: p, kind: 'reordered', message: `${it.where} chains to an entry that comes after it: entries were swapped and renumbered` };
    }
    // Removal with renumbering: the entry hashes correctly under a higher seq.
    for (let d = 1; d <= items.length; d += 1) {
      if (entryHash(it.prevHash, canonicalJson({ ...it.fields, seq: p + d })) === it.hash) {
        const missing = d === 1 ? `entry ${p} was removed` : `entries ${p} to ${p + d - 1} were removed`;
        return { seq: p, kind: 'removed', message: `${missing} and the entries after renumbered: ${it.where} is really entry ${p + d}` };
      }
    }
    return { seq: p, kind: 'edited', message: `${it.where}: ${it.damage}, and it does not chain to entry ${p - 1}` };
  }
  return undefined;
}

function insertedBefore(items: ChainItem[], p: number): AuditProblem {
  return {
    seq: p - 1,
    kind: 'inserted',
    message: `${items[p - 2]!.where} was inserted: ${items[p - 1]!.where} chains to entry ${p - 2}, and the entries after it were renumbered`,
  };
}

function checkCheckpoints(
  items: ChainItem[],
  cps: CheckpointItem[],
  opts: AuditVerifyOptions,
  below: number,
): { problem?: AuditProblem; kid?: string; lastGood: number } {
  let pinnedKid: string | undefined;
  // The device's kid is the key's thumbprint; a `kid` member in the auditor's file is not trusted.
  if (opts.publicJwk) pinnedKid = jwkThumbprint(opts.publicJwk);
  let chainKid = pinnedKid;
  let lastGood = 0;
  const bad = (cp: CheckpointItem, message: string) => ({ problem: { seq: cp.seq, kind: 'bad_checkpoint' as const, message: `${cp.where}: ${message}` }, kid: chainKid, lastGood });
  for (const cp of cps) {
    if (cp.seq >= below) break;
    let key: JWK | undefined;
    if (opts.publicJwk) {
      if (cp.kid !== pinnedKid) return bad(cp, `signed with kid ${cp.kid}, not the device key ${pinnedKid}`);
      key = opts.publicJwk;
    } else {
      if (cp.publicJwk) {
        let thumbprint: string | undefined;
        try {
          thumbprint = jwkThumbprint(cp.publicJwk);
        } catch {
          thumbprint = undefined;
        }
        if (thumbprint !== cp.kid) return bad(cp, `the public key it carries is not kid ${cp.kid}`);
        key = cp.publicJwk;
      }
      if (chainKid !== undefined && cp.kid !== chainKid) return bad(cp, `signed with kid ${cp.kid}, but earlier checkpoints with ${chainKid}`);
      chainKid = cp.kid;
    }
    if (key && !signatureVerifies(key, cp)) return bad(cp, `its signature does not verify with kid ${cp.kid}`);
    if (cp.seq > items.length) {
      return {
        problem: { seq: items.length + 1, kind: 'truncated', message: `${cp.where} covers ${cp.seq} entries but the chain ends at ${items.length}` },
        kid: chainKid,
        lastGood,
      };
    }
    const actual = items[cp.seq - 1]!.hash;
    if (actual !== cp.headHash) {
      const k = findRecomputedInsertion(items, lastGood, cp);
      if (k !== undefined) {
        return {
          problem: {
            seq: k,
            kind: 'inserted',
            message: `${items[k - 1]!.where} was inserted and the entries after it renumbered with recomputed hashes: without it the chain matches ${cp.where}`,
          },
          kid: chainKid,
          lastGood,
        };
      }
      return bad(
        cp,
        `the device signed head ${cp.headHash.slice(0, 12)}… at seq ${cp.seq} but the chain has ${actual.slice(0, 12)}…: ` +
          `an entry between seq ${lastGood + 1} and ${cp.seq} was edited, removed or inserted with the later hashes recomputed`,
      );
    }
    lastGood = cp.seq;
  }
  return { kid: chainKid, lastGood };
}

function signatureVerifies(key: JWK, cp: CheckpointItem): boolean {
  try {
    return verifyDeviceSignature(key, checkpointSigningInput(cp), cp.signature);
  } catch {
    return false;
  }
}

/** The position k in (good, cp.seq] whose removal, with the rest renumbered and rehashed, reproduces the signed head. */
function findRecomputedInsertion(items: ChainItem[], good: number, cp: CheckpointItem): number | undefined {
  if (items.length < cp.seq + 1) return undefined;
  const start = good === 0 ? genesisHash : items[good - 1]!.hash;
  for (let k = good + 1; k <= cp.seq + 1; k += 1) {
    let hash = start;
    let seq = good;
    for (let pos = good + 1; seq < cp.seq; pos += 1) {
      if (pos === k) continue;
      seq += 1;
      hash = entryHash(hash, canonicalJson({ ...items[pos - 1]!.fields, seq }));
    }
    if (hash === cp.headHash) return k;
  }
  return undefined;
}

// ---- shapes ---------------------------------------------------------------------------------

const isHash = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);

function entryShapeProblem(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'the entry is not an object';
  const e = v as Record<string, unknown>;
  if (!Number.isSafeInteger(e.seq) || (e.seq as number) < 1) return 'the entry has no valid seq';
  for (const name of ['time', 'device', 'type'] as const) {
    if (typeof e[name] !== 'string') return `the entry has no ${name}`;
  }
  return undefined;
}

function messageShapeProblem(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'not a JSON object';
  const m = v as Record<string, unknown>;
  if (typeof m.kind !== 'string') return 'no kind';
  if (m.kind === 'entry') {
    const bad = entryShapeProblem(m.entry);
    if (bad) return bad;
    const e = m.entry as Record<string, unknown>;
    if (!isHash(e.prevHash) || !isHash(e.hash)) return 'the entry has no valid prevHash and hash';
  } else if (m.kind === 'checkpoint') {
    const c = m.checkpoint as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null) return 'the checkpoint is not an object';
    if (!Number.isSafeInteger(c.seq) || (c.seq as number) < 1) return 'the checkpoint has no valid seq';
    for (const name of ['headHash', 'time', 'device', 'kid', 'signature'] as const) {
      if (typeof c[name] !== 'string') return `the checkpoint has no ${name}`;
    }
    if (typeof c.publicJwk !== 'object' || c.publicJwk === null) return 'the checkpoint carries no publicJwk';
  }
  return undefined;
}

// ---- incremental checking (the fleet's archive, ops-console/chain-verifier.ts) -------------------
// The same rules one entry or checkpoint at a time, against a head already verified: O(1) each,
// so a console keeping thousands of chains never re-reads one from its start.

/** Why a received audit message is not one (its shape), or undefined. */
export function auditMessageProblem(v: unknown): string | undefined {
  return messageShapeProblem(v);
}

/**
 * Whether `entry` (shape-checked) is the next link after `head`: seq head.seq + 1, prevHash the
 * head's hash, and its own hash recomputing from its fields. The problem names what is wrong.
 */
export function nextEntryProblem(head: AuditHead, entry: Record<string, unknown> & { seq: number; prevHash: string; hash: string }): AuditProblem | undefined {
  const at = head.seq + 1;
  if (entry.seq !== at) return { seq: at, kind: entry.seq > at ? 'removed' : 'inserted', message: `entry ${entry.seq} arrived where entry ${at} belongs` };
  if (entryHash(entry.prevHash, canonicalJson(entryFields(entry))) !== entry.hash) return { seq: at, kind: 'edited', message: `entry ${at}: its hash does not match its contents` };
  if (entry.prevHash !== (head.seq === 0 ? genesisHash : head.hash)) {
    return { seq: at, kind: 'fork', message: `entry ${at} chains to ${entry.prevHash.slice(0, 12)}…, not to the verified entry ${head.seq} (${head.hash.slice(0, 12)}…)` };
  }
  return undefined;
}

/**
 * A published checkpoint against the device's pinned key and the verified chain's hash at its seq
 * (undefined when the chain does not reach it yet: then only the signature is checked).
 */
export function checkpointProblem(
  publicJwk: JWK,
  checkpoint: Pick<AuditCheckpoint, 'seq' | 'headHash' | 'time' | 'device' | 'kid' | 'signature'>,
  chainHashAtSeq: string | undefined,
): AuditProblem | undefined {
  const kid = jwkThumbprint(publicJwk);
  const where = `checkpoint at seq ${checkpoint.seq}`;
  if (checkpoint.kid !== kid) return { seq: checkpoint.seq, kind: 'bad_checkpoint', message: `${where}: signed with kid ${checkpoint.kid}, not the device key ${kid}` };
  let good = false;
  try {
    good = verifyDeviceSignature(publicJwk, checkpointSigningInput(checkpoint), checkpoint.signature);
  } catch {
    good = false;
  }
  if (!good) return { seq: checkpoint.seq, kind: 'bad_checkpoint', message: `${where}: its signature does not verify with kid ${kid}` };
  if (chainHashAtSeq !== undefined && chainHashAtSeq !== checkpoint.headHash) {
    return { seq: checkpoint.seq, kind: 'fork', message: `${where}: the device signed head ${checkpoint.headHash.slice(0, 12)}… but the verified chain has ${chainHashAtSeq.slice(0, 12)}… there (a fork)` };
  }
  return undefined;
}
