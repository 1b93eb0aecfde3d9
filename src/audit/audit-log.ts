// The tamper-evident audit trail: every decision about authority (commands accepted or rejected,
// streams and recordings started and stopped, faults, configuration changes) becomes one entry
// of a SHA-256 hash chain in SQLite, and every so often the device signs the chain's head with
// its own key (a checkpoint). Both go out on the durable `audit` channel, so someone who does not
// trust the camera can check the fleet's copy, the camera's database, or both, with verify.ts.
//
// Formats (docs/protocol.md):
//   entry fields  = { seq, time, device, type, operator, action, reason, decision, code,
//                     tokenDigest, detail }                     (every member always present)
//   hash          = hex SHA-256 of  prevHash + "\n" + canonicalJson(entry fields)
//   prevHash      = hash of entry seq-1; 64 "0" for seq 1
//   checkpoint    = { seq, headHash, time, device, kid }, signature = Ed25519 over its
//                   canonicalJson, base64url; seq and headHash are the audit head when signed
//   head          = { seq, hash } of the newest entry, passed to onHead after every append (the
//                   agent puts it in the retained state as auditHead): the fleet keeps the newest
//                   and `audit verify --expect-head` finds a rolled-back or forked chain with it
//   MQTT payload  = { seq: <outbox transport seq>, kind: "entry", entry: { ...fields, prevHash, hash } }
//                 | { seq: <outbox transport seq>, kind: "checkpoint", checkpoint: { ...checkpoint, signature, publicJwk } }
// The audit record is nested, not spread into the payload, because the outbox writes
// `{ seq, ...body }`: a top-level audit `seq` would silently replace the transport sequence that
// receivers de-duplicate by, and entry 5 and the checkpoint at 5 would then collide.
import { createHash } from 'node:crypto';
import type { JWK } from 'jose';
import type { Logger } from 'pino';
import type { DeviceKey } from '../keys/device-key.ts';
import type { Db } from '../store/database.ts';
import { canonicalJson } from './canonical-json.ts';
import { errorMessage } from '../errors.ts';

/** What callers pass to AuditLog.append. */
export interface AuditRecord {
  /** e.g. 'command.decision', 'stream.start', 'stream.stop', 'recording.start', 'recording.stop', 'recording.sealed', 'capture.fault', 'config.change', 'agent.start' */
  type: string;
  operator?: string | null;
  action?: string | null;
  reason?: string | null;
  decision?: 'accepted' | 'rejected' | null;
  /** The rejection code (src/command/types.ts). */
  code?: string | null;
  /** base64url SHA-256 of the command token (see auditTokenDigest): names the token without storing it. */
  tokenDigest?: string | null;
  /** Anything else; must be JSON. */
  detail?: Record<string, unknown>;
}

export interface AuditEntry extends Required<AuditRecord> {
  seq: number;
  time: string;
  device: string;
  prevHash: string;
  hash: string;
}

/** A checkpoint as stored in `audit_checkpoint`. */
export interface AuditCheckpoint {
  seq: number;
  headHash: string;
  time: string;
  device: string;
  kid: string;
  signature: string;
}

export type AuditMessage =
  | { kind: 'entry'; entry: AuditEntry }
  | { kind: 'checkpoint'; checkpoint: AuditCheckpoint & { publicJwk: JWK } };

export const genesisHash = '0'.repeat(64);

/** The hashed part of an entry: everything but prevHash and hash. */
export function entryFields(entry: Record<string, unknown>): Record<string, unknown> {
  const { prevHash: _p, hash: _h, ...fields } = entry;
  return fields;
}

export function entryHash(prevHash: string, fieldsJson: string): string {
  return createHash('sha256').update(`${prevHash}\n${fieldsJson}`).digest('hex');
}

/** The bytes a checkpoint signature covers. */
export function checkpointSigningInput(c: Pick<AuditCheckpoint, 'seq' | 'headHash' | 'time' | 'device' | 'kid'>): string {
  return canonicalJson({ seq: c.seq, headHash: c.headHash, time: c.time, device: c.device, kid: c.kid });
}

/** base64url SHA-256 of a command token, for AuditRecord.tokenDigest. */
export function auditTokenDigest(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
}

export interface AuditLogOptions {
  db: Db;
  deviceId: string;
  deviceKey: DeviceKey;
  publish: (m: AuditMessage) => void;
  /** Told the new head after every committed entry (the retained state carries it); must not throw. */
  onHead?: (head: { seq: number; hash: string }) => void;
  /** A checkpoint after this many entries (default 100)... */
  checkpointEvery?: number;
  /** ...and at this interval when there is something new (default 10 min). */
  checkpointIntervalMs?: number;
  logger: Logger;
  now?: () => Date;
}

/** A row of audit_entry (migration 2). */
export interface EntryRow {
  seq: number;
  time: string;
  entry: string;
  prev_hash: string;
  hash: string;
}

/** A row of audit_checkpoint (migration 2). */
export interface CheckpointRow {
  seq: number;
  head_hash: string;
  time: string;
  kid: string;
  signature: string;
}

export class AuditLog {
  readonly #db: Db;
  readonly #deviceId: string;
  readonly #key: DeviceKey;
  readonly #publish: (m: AuditMessage) => void;
  readonly #onHead: ((head: { seq: number; hash: string }) => void) | undefined;
  readonly #every: number;
  readonly #logger: Logger;
  readonly #now: () => Date;
  readonly #insertEntry;
  readonly #insertCheckpoint;
  #head: { seq: number; hash: string };
  #checkpointedSeq: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(o: AuditLogOptions) {
    this.#db = o.db;
    this.#deviceId = o.deviceId;
    this.#key = o.deviceKey;
    this.#publish = o.publish;
    this.#onHead = o.onHead;
    this.#every = o.checkpointEvery ?? 100;
    this.#logger = o.logger.child({ module: 'audit' });
    this.#now = o.now ?? (() => new Date());
    if (!Number.isInteger(this.#every) || this.#every < 1) throw new RangeError('checkpointEvery must be a positive integer');
    this.#insertEntry = this.#db.prepare<[number, string, string, string, string]>(
      'INSERT INTO audit_entry (seq, time, entry, prev_hash, hash) VALUES (?, ?, ?, ?, ?)',
    );
    this.#insertCheckpoint = this.#db.prepare<[number, string, string, string, string]>(
      'INSERT INTO audit_checkpoint (seq, head_hash, time, kid, signature) VALUES (?, ?, ?, ?, ?)',
    );
    // Continue from what is there; checking it is the verifier's job, not the writer's.
    const last = this.#db.prepare<[], { seq: number; hash: string }>('SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1').get();
    this.#head = last ? { seq: last.seq, hash: last.hash } : { seq: 0, hash: genesisHash };
    const lastCheckpoint = this.#db.prepare<[], CheckpointRow>('SELECT * FROM audit_checkpoint ORDER BY seq DESC LIMIT 1').get();
    this.#checkpointedSeq = lastCheckpoint?.seq ?? 0;
    this.#republishTail(lastCheckpoint);
    const intervalMs = o.checkpointIntervalMs ?? 600_000;
    this.#timer = setInterval(() => {
      try {
        this.checkpoint();
      } catch (err) {
        this.#logger.error({ err: errorMessage(err) }, 'periodic audit checkpoint failed; will retry');
      }
    }, intervalMs);
    this.#timer.unref();
  }

  /**
   * Records a decision. Returns only once the entry is committed (synchronous=FULL), so a caller
   * can write the decision before acting on it; throws if it cannot be committed, and then the
   * caller must not act. Publishing and checkpointing follow and never make append fail.
   */
  append(record: AuditRecord): AuditEntry {
    const seq = this.#head.seq + 1;
    const fields = {
      seq,
      time: this.#now().toISOString(),
      device: this.#deviceId,
      type: record.type,
      operator: record.operator ?? null,
      action: record.action ?? null,
      reason: record.reason ?? null,
      decision: record.decision ?? null,
      code: record.code ?? null,
      tokenDigest: record.tokenDigest ?? null,
      // Round-tripped so what is hashed is exactly what a receiver will parse (Dates become
      // strings, undefined members disappear).
      detail: record.detail === undefined ? {} : (JSON.parse(JSON.stringify(record.detail)) as Record<string, unknown>),
    };
    const fieldsJson = canonicalJson(fields);
    const prevHash = this.#head.hash;
    const hash = entryHash(prevHash, fieldsJson);
    this.#insertEntry.run(seq, fields.time, fieldsJson, prevHash, hash);
    this.#head = { seq, hash };
    const entry: AuditEntry = { ...fields, prevHash, hash };
    this.#send({ kind: 'entry', entry });
    try {
      this.#onHead?.({ seq, hash });
    } catch (err) {
      this.#logger.error({ err: errorMessage(err), seq }, 'the new audit head could not be passed on');
    }
    if (seq - this.#checkpointedSeq >= this.#every) {
      try {
        this.checkpoint();
      } catch (err) {
        // The entry is committed; the next append or the timer tries again.
        this.#logger.error({ err: errorMessage(err), seq }, 'audit checkpoint failed; will retry');
      }
    }
    return entry;
  }

  /** Signs and stores the current head, then publishes it; undefined when nothing is new. */
  checkpoint(): AuditMessage | undefined {
    if (this.#head.seq === 0 || this.#head.seq === this.#checkpointedSeq) return undefined;
    const unsigned = { seq: this.#head.seq, headHash: this.#head.hash, time: this.#now().toISOString(), device: this.#deviceId, kid: this.#key.kid };
    const checkpoint: AuditCheckpoint = { ...unsigned, signature: this.#key.sign(checkpointSigningInput(unsigned)) };
    this.#insertCheckpoint.run(checkpoint.seq, checkpoint.headHash, checkpoint.time, checkpoint.kid, checkpoint.signature);
    this.#checkpointedSeq = checkpoint.seq;
    const message: AuditMessage = { kind: 'checkpoint', checkpoint: { ...checkpoint, publicJwk: this.#key.publicJwk } };
    this.#send(message);
    return message;
  }

  /**
   * The configuration digest the newest `agent.start` entry recorded: null when that entry had
   * none, undefined when the trail holds no start yet. The agent audits a `config.change` when
   * the digest of this start differs.
   */
  lastStartDigest(): string | null | undefined {
    const last = this.#db
      .prepare<[], { digest: string | null }>("SELECT json_extract(entry, '$.detail.configDigest') AS digest FROM audit_entry WHERE json_extract(entry, '$.type') = 'agent.start' ORDER BY seq DESC LIMIT 1")
      .get();
    return last?.digest;
  }

  /**
   * audit.fetch (docs/protocol.md): publishes entries fromSeq..toSeq again (clipped to the head),
   * with the checkpoints among them and the first one after them (so the fleet can check the range
   * is signed), through the same outbox as the originals. Checkpoints signed by an earlier key are
   * not sent (this process cannot name its public key). The caller bounds the range.
   */
  republish(fromSeq: number, toSeq: number): { fromSeq: number; toSeq: number; entries: number; checkpoints: number } {
    const to = Math.min(toSeq, this.#head.seq);
    const rows = this.#db.prepare<[number, number], EntryRow>('SELECT * FROM audit_entry WHERE seq >= ? AND seq <= ? ORDER BY seq').all(fromSeq, to);
    for (const row of rows) {
      const fields = JSON.parse(row.entry) as Omit<AuditEntry, 'prevHash' | 'hash'>;
      this.#send({ kind: 'entry', entry: { ...fields, prevHash: row.prev_hash, hash: row.hash } });
    }
    const checkpoints = this.#db
      .prepare<[number, number, number], CheckpointRow>(
        'SELECT * FROM audit_checkpoint WHERE (seq >= ? AND seq <= ?) OR seq = (SELECT MIN(seq) FROM audit_checkpoint WHERE seq > ?) ORDER BY seq',
      )
      .all(fromSeq, to, to);
    let sent = 0;
    for (const c of checkpoints) {
      if (c.kid !== this.#key.kid) continue;
      const device = this.#db.prepare<[number], { device: string }>("SELECT json_extract(entry, '$.device') AS device FROM audit_entry WHERE seq = ?").get(c.seq)?.device;
      if (device === undefined) continue;
      this.#send({ kind: 'checkpoint', checkpoint: { seq: c.seq, headHash: c.head_hash, time: c.time, device, kid: c.kid, signature: c.signature, publicJwk: this.#key.publicJwk } });
      sent += 1;
    }
    this.#logger.info({ fromSeq, toSeq: to, entries: rows.length, checkpoints: sent }, 'audit entries published again (audit.fetch)');
    return { fromSeq, toSeq: to, entries: rows.length, checkpoints: sent };
  }

  head(): { seq: number; hash: string } {
    return { ...this.#head };
  }

  /** Final checkpoint, timers cleared. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    try {
      this.checkpoint();
    } catch (err) {
      // Shutting down must not fail on it: the entries are committed and the next start's
      // first checkpoint covers them.
      this.#logger.error({ err: errorMessage(err) }, 'final audit checkpoint failed');
    }
  }

  #send(message: AuditMessage): void {
    try {
      this.#publish(message);
    } catch (err) {
      // Committed already; the tail is sent again at the next start (see #republishTail).
      this.#logger.error({ err: errorMessage(err) }, 'audit message could not be queued for sending');
    }
  }

  /**
   * A crash between committing an entry and queueing its message would leave a gap in the
   * fleet's copy. Every entry up to the last checkpoint was queued before that checkpoint was
   * made, so sending the last checkpoint and everything after it again closes any such gap;
   * receivers (and the verifier) drop the identical duplicates.
   */
  #republishTail(lastCheckpoint: CheckpointRow | undefined): void {
    // The table does not store the device id: the signed one is the entry's at that seq. A
    // checkpoint signed by an earlier key is not sent again: this process cannot name its key.
    const signedDevice = lastCheckpoint
      ? this.#db.prepare<[number], { device: string }>("SELECT json_extract(entry, '$.device') AS device FROM audit_entry WHERE seq = ?").get(lastCheckpoint.seq)?.device
      : undefined;
    if (lastCheckpoint && signedDevice !== undefined && lastCheckpoint.kid === this.#key.kid) {
      this.#send({
        kind: 'checkpoint',
        checkpoint: {
          seq: lastCheckpoint.seq,
          headHash: lastCheckpoint.head_hash,
          time: lastCheckpoint.time,
          device: signedDevice,
          kid: lastCheckpoint.kid,
          signature: lastCheckpoint.signature,
          publicJwk: this.#key.publicJwk,
        },
      });
    }
    const rows = this.#db.prepare<[number], EntryRow>('SELECT * FROM audit_entry WHERE seq > ? ORDER BY seq').all(this.#checkpointedSeq);
    for (const row of rows) {
      const fields = JSON.parse(row.entry) as Omit<AuditEntry, 'prevHash' | 'hash'>;
      this.#send({ kind: 'entry', entry: { ...fields, prevHash: row.prev_hash, hash: row.hash } });
    }
    if (rows.length > 0) this.#logger.info({ from: rows[0]!.seq, to: rows.at(-1)!.seq }, 'audit entries after the last checkpoint sent again');
  }
}
