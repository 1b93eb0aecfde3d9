// Builds a real audit chain (database, device key, the messages it published) and gives tests the
// tools an attacker would use on it: raw SQL on a copy of the database, edits to the captured
// messages, and hashes (even checkpoint signatures, with another key) recomputed to cover tracks.
import { copyFile, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import pino from 'pino';
import { AuditLog, checkpointSigningInput, entryHash, genesisHash, type AuditEntry, type AuditMessage } from '../../src/audit/audit-log.ts';
import { canonicalJson } from '../../src/audit/canonical-json.ts';
import { auditVerifyCommand, type AuditVerifyArgs } from '../../src/audit/cli.ts';
import { loadOrCreateDeviceKey, type DeviceKey } from '../../src/keys/device-key.ts';
import { openDatabase } from '../../src/store/database.ts';

export const silentLogger = pino({ level: 'silent' });

export const tmpDir = (prefix = 'bwc-audit-') => mkdtemp(path.join(os.tmpdir(), prefix));

/** A clock that moves one second per call, so every entry has its own time. */
export function steppingClock(start = Date.parse('2026-11-24T13:00:00.000Z')): () => Date {
  let t = start;
  return () => new Date((t += 1000));
}

const records = [
  { type: 'agent.start', detail: { version: '0.1.0' } },
  { type: 'command.decision', operator: 'sgt.hale', action: 'stream.start', reason: 'officer-safety', decision: 'accepted' as const, tokenDigest: 'q1w2e3' },
  { type: 'stream.start', operator: 'sgt.hale', action: 'stream.start', detail: { sid: 's-1', viewer: { ip: '10.0.0.7' } } },
  { type: 'command.decision', operator: 'cst.moss', action: 'record.stop', decision: 'rejected' as const, code: 'action_not_permitted', tokenDigest: 'z9x8' },
  { type: 'stream.stop', detail: { sid: 's-1', durationS: 42.5 } },
  { type: 'config.change', detail: { key: 'gps.idleInterval', from: 60, to: 30 } },
];

export interface AuditChainFixture {
  stateDir: string;
  key: DeviceKey;
  /** What the AuditLog published, in order. */
  messages: AuditMessage[];
  /** A JWK file of the device's public key, as an auditor would hold it. */
  publicKeyFile: string;
}

/** A chain of `entries` entries with a checkpoint every `every` and a final one from stop(). */
export async function buildAuditChain(entries = 47, every = 10): Promise<AuditChainFixture> {
  const stateDir = await tmpDir();
  const key = await loadOrCreateDeviceKey(stateDir);
  const db = openDatabase({ stateDir });
  const messages: AuditMessage[] = [];
  const log = new AuditLog({ db, deviceId: 'cam-0042', deviceKey: key, publish: (m) => messages.push(m), checkpointEvery: every, logger: silentLogger, now: steppingClock() });
  for (let i = 0; i < entries; i += 1) log.append({ ...records[i % records.length]!, detail: { ...records[i % records.length]!.detail, n: i } });
  log.stop();
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const publicKeyFile = path.join(stateDir, 'device.jwk.json');
  await writeFile(publicKeyFile, JSON.stringify(key.publicJwk));
  return { stateDir, key, messages, publicKeyFile };
}

/** A copy of the fixture's database in a fresh state folder (no key file), opened read-write. */
export async function copyDatabase(f: AuditChainFixture): Promise<{ stateDir: string; db: Database.Database }> {
  const stateDir = await tmpDir('bwc-audit-copy-');
  await copyFile(path.join(f.stateDir, 'agent.db'), path.join(stateDir, 'agent.db'));
  return { stateDir, db: new Database(path.join(stateDir, 'agent.db')) };
}

// ---- database tampering ---------------------------------------------------------------------

export interface Row {
  seq: number;
  time: string;
  entry: string;
  prev_hash: string;
  hash: string;
}

export const rowsOf = (db: Database.Database) => db.prepare<[], Row>('SELECT * FROM audit_entry ORDER BY seq').all();

/** Rewrites a row's entry JSON (canonically), leaving its hashes alone. */
export function editRow(db: Database.Database, seq: number, edit: (e: Record<string, unknown>) => void): void {
  const row = db.prepare<[number], Row>('SELECT * FROM audit_entry WHERE seq = ?').get(seq)!;
  const e = JSON.parse(row.entry) as Record<string, unknown>;
  edit(e);
  db.prepare('UPDATE audit_entry SET entry = ?, time = ? WHERE seq = ?').run(canonicalJson(e), e.time, seq);
}

/** Moves every row with seq >= from by delta (in an order the primary key allows); optionally the JSON seq too. */
export function renumberRows(db: Database.Database, from: number, delta: number, alsoJson: boolean): void {
  const rows = rowsOf(db).filter((r) => r.seq >= from);
  if (delta > 0) rows.reverse();
  for (const r of rows) {
    db.prepare('UPDATE audit_entry SET seq = ? WHERE seq = ?').run(r.seq + delta, r.seq);
    if (alsoJson) editRow(db, r.seq + delta, (e) => (e.seq = (e.seq as number) + delta));
  }
}

/** What an attacker who knows the format does: recomputes prev_hash and hash from `from` on. */
export function rehashRows(db: Database.Database, from: number): void {
  let prev = from === 1 ? genesisHash : db.prepare<[number], Row>('SELECT * FROM audit_entry WHERE seq = ?').get(from - 1)!.hash;
  for (const r of rowsOf(db).filter((x) => x.seq >= from)) {
    const hash = entryHash(prev, r.entry);
    db.prepare('UPDATE audit_entry SET prev_hash = ?, hash = ? WHERE seq = ?').run(prev, hash, r.seq);
    prev = hash;
  }
}

export function forgedFields(seq: number, time = '2026-11-24T13:00:16.500Z'): Record<string, unknown> {
  return { seq, time, device: 'cam-0042', type: 'command.decision', operator: 'mallory', action: 'stream.start', reason: 'officer-safety', decision: 'accepted', code: null, tokenDigest: 'forged', detail: {} };
}

/** Inserts a well-formed forged row at `seq`, chained correctly to the row before it. */
export function insertForgedRow(db: Database.Database, seq: number): void {
  const prev = seq === 1 ? genesisHash : db.prepare<[number], Row>('SELECT * FROM audit_entry WHERE seq = ?').get(seq - 1)!.hash;
  const fields = forgedFields(seq);
  const text = canonicalJson(fields);
  db.prepare('INSERT INTO audit_entry (seq, time, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)').run(seq, fields.time, text, prev, entryHash(prev, text));
}

export function swapRows(db: Database.Database, a: number, b: number, alsoJson: boolean): void {
  const set = db.prepare('UPDATE audit_entry SET seq = ? WHERE seq = ?');
  set.run(-1, a);
  set.run(a, b);
  set.run(b, -1);
  if (alsoJson) {
    editRow(db, a, (e) => (e.seq = a));
    editRow(db, b, (e) => (e.seq = b));
  }
}

/** Re-signs the checkpoint rows at or after `from` over the current chain with `key`. */
export function resignCheckpointRows(db: Database.Database, from: number, key: DeviceKey): void {
  for (const c of db.prepare<[number], { seq: number; time: string }>('SELECT seq, time FROM audit_checkpoint WHERE seq >= ?').all(from)) {
    const row = db.prepare<[number], Row>('SELECT * FROM audit_entry WHERE seq = ?').get(c.seq)!;
    const unsigned = { seq: c.seq, headHash: row.hash, time: c.time, device: 'cam-0042', kid: key.kid };
    db.prepare('UPDATE audit_checkpoint SET head_hash = ?, kid = ?, signature = ? WHERE seq = ?').run(row.hash, key.kid, key.sign(checkpointSigningInput(unsigned)), c.seq);
  }
}

// ---- message tampering ----------------------------------------------------------------------

export const clone = <T>(v: T): T => structuredClone(v);

export const entryIndex = (ms: AuditMessage[], seq: number) => ms.findIndex((m) => m.kind === 'entry' && m.entry.seq === seq);

export function entryOf(m: AuditMessage): AuditEntry {
  if (m.kind !== 'entry') throw new Error('not an entry message');
  return m.entry;
}

/** A forged entry message chained to `prevHash`. */
export function forgedMessage(seq: number, prevHash: string): AuditMessage {
  const fields = forgedFields(seq);
  return { kind: 'entry', entry: { ...(fields as unknown as Omit<AuditEntry, 'prevHash' | 'hash'>), prevHash, hash: entryHash(prevHash, canonicalJson(fields)) } };
}

/** Recomputes prevHash and hash of every entry message from entry seq `from` on, in list order. */
export function rehashMessages(ms: AuditMessage[], from: number): void {
  let prev: string | undefined;
  for (const m of ms) {
    if (m.kind !== 'entry') continue;
    const e = m.entry;
    if (prev !== undefined && e.seq >= from) {
      const { prevHash: _p, hash: _h, ...fields } = e;
      e.prevHash = prev;
      e.hash = entryHash(prev, canonicalJson(fields));
    }
    prev = e.hash;
  }
}

/** The capture as `mosquitto_sub` prints it: the outbox's transport seq first, one JSON per line. */
export function captureText(ms: AuditMessage[]): string {
  return `${ms.map((m, i) => JSON.stringify({ seq: i + 1, ...m })).join('\n')}\n`;
}

export async function writeCapture(ms: AuditMessage[] | string): Promise<string> {
  const file = path.join(await tmpDir('bwc-audit-capture-'), 'audit.jsonl');
  await writeFile(file, typeof ms === 'string' ? ms : captureText(ms));
  return file;
}

export async function runVerifyCli(args: AuditVerifyArgs): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const sink = (append: (s: string) => void) =>
    new Writable({
      write(chunk, _enc, cb) {
        append(String(chunk));
        cb();
      },
    });
  const code = await auditVerifyCommand(args, sink((s) => (out += s)), sink((s) => (err += s)));
  return { code, out, err };
}

// ---- a camera's chain, entry by entry -------------------------------------------------------------

export interface LiveChain {
  key: DeviceKey;
  /** Appends one record (real clock) and returns the messages the AuditLog published for it. */
  append(record: Parameters<AuditLog['append']>[0]): AuditMessage[];
}

/**
 * A genuine, device-signed chain for `deviceId` that a test grows one entry at a time and publishes
 * as the camera would (the console verifies it against `key.publicJwk` once enrolled).
 */
export async function liveChain(deviceId: string, checkpointEvery = 1000): Promise<LiveChain> {
  const stateDir = await tmpDir();
  const key = await loadOrCreateDeviceKey(stateDir);
  const db = openDatabase({ stateDir });
  let out: AuditMessage[] = [];
  const log = new AuditLog({ db, deviceId, deviceKey: key, publish: (m) => out.push(m), checkpointEvery, logger: silentLogger });
  return {
    key,
    append(record) {
      out = [];
      log.append(record);
      return out;
    },
  };
}
