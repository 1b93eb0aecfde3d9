// Evidence offload: every closed (or interrupted and sealed) recording goes to the object store,
// one prefix per recording (docs/protocol.md, "Evidence offload"), and its local copy is deleted
// only under the retention policy and only once the store holds every object with our SHA-256.
//
// Progress lives in SQLite (offload_recording, offload_object; migration 6), written before and
// after each step, so a kill -9, a reboot, an outage or a dropped link resumes where it stopped:
//   - an object is HEADed before it is sent: one the store already holds with our size, ETag and
//     SHA-256 (a PUT that completed just before the crash) is not sent again;
//   - a large object goes up in parts, its upload id saved before the first part; ListParts
//     tells which parts the store holds (multipart uploads of segments are rare: they are small).
// The uploader runs one object at a time: a camera's uplink is one narrow pipe, and order (oldest
// recording first) matters more than parallelism. Network policy: only from an allowed
// interface's address, under a bandwidth cap, and held while a live view runs or ctl paused it.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { JWK } from 'jose';
import type { Logger } from 'pino';
import type { AuditRecord } from '../audit/audit-log.ts';
import { canonicalJson } from '../audit/canonical-json.ts';
import type { AgentConfig } from '../config/schema.ts';
import { errorMessage } from '../errors.ts';
import { manifestFile, offloadedExtraFiles, signatureFile } from '../recording/layout.ts';
import { hashFile, type Manifest } from '../recording/manifest.ts';
import type { OffloadState } from '../state/device-state.ts';
import type { Db } from '../store/database.ts';
import { CredentialsFile } from './credentials.ts';
import { ObjectStore, StoreError, VerifyMismatch, type ObjectSource } from './object-store.ts';
import { TokenBucket, UploadGate } from './throttle.ts';
import type { Extension } from '../agent/extension.ts';

export type OffloadConfig = AgentConfig['offload'];
type EnabledOffload = OffloadConfig & { enabled: true; endpoint: string; bucket: string; credentialsFile: string };

/** The object holding the device's public key (JWK) beside each recording: `evidence verify --bucket` reads it. */
export const deviceKeyObject = 'device.jwk.json';
const deviceKeySource = ':device-key';

export function recordingPrefix(prefix: string, deviceId: string, recordingId: string): string {
  return `${prefix}${deviceId}/${recordingId}/`;
}

export interface OffloaderOptions {
  config: OffloadConfig;
  deviceId: string;
  db: Db;
  evidenceDir: string;
  devicePublicJwk: JWK;
  audit: { append(record: AuditRecord): unknown };
  state: { update(change: { offload: OffloadState }): void };
  /** Throws while the disk is inside the evidence reserve (src/store/storage-reserve.ts). */
  reserve?: { check(): void };
  logger: Logger;
  now?: () => Date;
  /** The network interfaces (default os.networkInterfaces); tests pass their own. */
  interfaces?: () => ReturnType<typeof os.networkInterfaces>;
  /** How often an idle uploader looks again for work and retention (default 30 s). */
  idleScanMs?: number;
}

interface ObjectRow {
  recording_id: string;
  key: string;
  source: string;
  sha256: string;
  bytes: number;
  upload_id: string | null;
  attempts: number;
  verified_at: string | null;
}

export class Offloader implements Extension {
  readonly name = 'offload';
  readonly #o: EnabledOffload;
  readonly #opts: OffloaderOptions;
  readonly #log: Logger;
  readonly #now: () => Date;
  readonly #gate = new UploadGate();
  readonly #bucket: TokenBucket;
  readonly #credentials: CredentialsFile;
  readonly #deviceKey: Buffer;
  readonly #deviceKeySha256: string;
  #store: { store: ObjectStore; localAddress: string | undefined } | undefined;
  #abort = new AbortController();
  #passAbort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #woken = false;
  #failures = 0;
  #working = false;
  #waitingFor: string | null = null;
  #fullDiskAudited = false;
  #counters = { objectsSent: 0, bytesSent: 0, lastUploadAt: null as string | null, lastError: null as OffloadState['lastError'] };

  constructor(options: OffloaderOptions) {
    const c = options.config;
    if (!c.enabled || !c.endpoint || !c.bucket || !c.credentialsFile) throw new Error('offload is not enabled or lacks offload.endpoint, offload.bucket or offload.credentialsFile');
    this.#o = c as EnabledOffload;
    this.#opts = options;
    this.#log = options.logger.child({ module: 'offload' });
    this.#now = options.now ?? (() => new Date());
    this.#bucket = new TokenBucket(c.bandwidthKbps);
    this.#credentials = new CredentialsFile(c.credentialsFile);
    this.#deviceKey = Buffer.from(canonicalJson(options.devicePublicJwk));
    this.#deviceKeySha256 = createHash('sha256').update(this.#deviceKey).digest('hex');
    this.#gate.on('open', () => this.wake());
  }

  start(): void {
    this.#publish();
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#abort.abort(new Error('agent stopping'));
    this.wake();
    await this.#loop;
    this.#store?.store.destroy();
  }

  /** Something may be new (a recording closed, the network changed): look now, unless backing off. */
  wake(): void {
    this.#woken = true;
    this.#wake?.();
  }

  pause(by: 'ctl' | 'live-view'): void {
    if (!this.#gate.closedBy.includes(by)) {
      this.#gate.close(by);
      this.#passAbort?.abort(new Error(`offload paused (${by})`));
      if (by === 'ctl') this.#audit({ type: 'offload.pause', detail: { by } });
      this.#publish();
    }
  }

  resume(by: 'ctl' | 'live-view'): void {
    if (this.#gate.closedBy.includes(by)) {
      if (by === 'ctl') this.#audit({ type: 'offload.resume', detail: { by } });
      this.#gate.open(by);
      this.#publish();
    }
  }

  /** The live view's session count: uploads hold while there is one (offload.pauseDuringLiveView). */
  liveViews(sessions: number): void {
    if (!this.#o.pauseDuringLiveView) return;
    if (sessions > 0) this.pause('live-view');
    else this.resume('live-view');
  }

  /** Keeps a recording's local copy whatever the retention policy says, until released. Audited. */
  hold(recordingId: string, reason: string): { recordingId: string; held: true } {
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(recordingId)) throw new Error(`not a recording id: ${JSON.stringify(recordingId).slice(0, 80)}`);
    if (!reason.trim()) throw new Error('a hold needs a reason (e.g. a case or court reference)');
    const known = this.#opts.db.prepare<[string], { id: string }>('SELECT id FROM recording WHERE id = ?').get(recordingId);
    if (!known) throw new Error(`no recording ${recordingId}`);
    this.#opts.db.prepare('INSERT INTO offload_hold (recording_id, reason, held_at) VALUES (?, ?, ?) ON CONFLICT (recording_id) DO UPDATE SET reason = excluded.reason').run(recordingId, reason.slice(0, 500), this.#now().toISOString());
    this.#audit({ type: 'offload.hold', reason: reason.slice(0, 500), detail: { recordingId } });
    this.#publish();
    return { recordingId, held: true };
  }

  release(recordingId: string): { recordingId: string; held: false } {
    const r = this.#opts.db.prepare('DELETE FROM offload_hold WHERE recording_id = ?').run(recordingId);
    if (r.changes === 0) throw new Error(`recording ${recordingId} is not under hold`);
    this.#audit({ type: 'offload.release', detail: { recordingId } });
    this.#publish();
    this.wake();
    return { recordingId, held: false };
  }

  status(): OffloadState & { holds: { recordingId: string; reason: string; heldAt: string }[] } {
    const holds = this.#opts.db
      .prepare<[], { recording_id: string; reason: string; held_at: string }>('SELECT * FROM offload_hold ORDER BY held_at')
      .all()
      .map((h) => ({ recordingId: h.recording_id, reason: h.reason, heldAt: h.held_at }));
    return { ...this.#summary(), holds };
  }

  // ---- the loop ------------------------------------------------------------------------------

  async #run(): Promise<void> {
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      if (!this.#gate.isOpen) {
        this.#publish();
        await this.#sleep(this.#opts.idleScanMs ?? 30_000, true);
        continue;
      }
      // A pause aborts the pass's requests: bytes already in the socket's send buffer (hundreds
      // of KiB, seconds of a narrow uplink) would otherwise still compete with the live view. The
      // cut object goes again later (a multipart one from its last whole part).
      const pass = new AbortController();
      const stopPass = () => pass.abort(signal.reason);
      signal.addEventListener('abort', stopPass, { once: true });
      this.#passAbort = pass;
      try {
        const more = await this.#pass(pass.signal);
        this.#failures = 0;
        if (!more) await this.#sleep(this.#opts.idleScanMs ?? 30_000, true);
      } catch (err) {
        if (signal.aborted) break;
        if (pass.signal.aborted) {
          this.#working = false;
          continue; // paused: the loop waits for the gate
        }
        this.#failures++;
        const message = errorMessage(err);
        this.#counters.lastError = { message, at: this.#now().toISOString() };
        const delay = Math.min(this.#o.retryMaxDelay, this.#o.retryMinDelay * 2 ** Math.min(this.#failures - 1, 20));
        this.#log.warn({ err: message, setting: err instanceof StoreError ? err.setting : undefined, retryInMs: delay }, 'offload failed; will retry');
        this.#working = false;
        this.#publish();
        // A wake (a new recording) does not cut a back-off short: the store is what failed.
        await this.#sleep(delay, false);
      } finally {
        signal.removeEventListener('abort', stopPass);
        this.#passAbort = undefined;
      }
    }
  }

  #sleep(ms: number, wakeable: boolean): Promise<void> {
    if (wakeable && this.#woken) {
      this.#woken = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        this.#abort.signal.removeEventListener('abort', done);
        this.#woken = false;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#abort.signal.addEventListener('abort', done, { once: true });
      this.#wake = wakeable ? done : () => undefined;
    });
  }

  /** One pass over what is pending; true when it did something (look again at once). */
  async #pass(signal: AbortSignal): Promise<boolean> {
    await this.#enlist();
    this.#checkFullDisk();
    const pending = this.#opts.db
      .prepare<[], ObjectRow>(
        `SELECT o.* FROM offload_object o JOIN recording r ON r.id = o.recording_id
         WHERE o.verified_at IS NULL ORDER BY r.started_at, r.id, o.key`,
      )
      .all();
    const deletable = this.#deletable();
    if (pending.length === 0 && deletable.length === 0) {
      this.#working = false;
      this.#waitingFor = null;
      this.#publish();
      return false;
    }
    const store = this.#storeNow();
    this.#working = true;
    this.#publish();
    // Two objects in flight: one's request latency (HEAD, the store's write, the HEAD after)
    // overlaps the other's bytes, so the uplink stays full (bench/offload.ts). Both stop at the
    // first failure and the pass fails only once both have: never two passes at once.
    let next = 0;
    let failure: { err: unknown } | undefined;
    const worker = async () => {
      while (!failure && !signal.aborted && next < pending.length) {
        const obj = pending[next++]!;
        try {
          await this.#gate.waitOpen(signal);
          await this.#upload(store, obj, signal);
        } catch (err) {
          failure ??= { err };
          return;
        }
        this.#sealIfComplete(obj.recording_id);
        this.#counters.lastError = null;
        this.#publish();
      }
    };
    await Promise.all([worker(), worker()]);
    if (failure) throw failure.err;
    if (signal.aborted) return false;
    for (const rec of deletable) {
      if (signal.aborted) return false;
      await this.#retire(store, rec, signal);
    }
    this.#working = false;
    this.#publish();
    return pending.length > 0;
  }

  /** Enlists each sealed recording the uploader has not seen: its objects, their hashes and keys. */
  async #enlist(): Promise<void> {
    const rows = this.#opts.db
      .prepare<[], { id: string; manifest: string }>(
        `SELECT id, manifest FROM recording WHERE status IN ('closed', 'interrupted') AND manifest IS NOT NULL
         AND id NOT IN (SELECT recording_id FROM offload_recording) ORDER BY started_at, id`,
      )
      .all();
    for (const row of rows) {
      // The row is sealed before manifest.json and .sig are written: wait for the files (the
      // recorder's recording.closed event wakes the uploader once they are).
      const dirAbs = this.#abs(`recordings/${row.id}`);
      if (!existsSync(path.join(dirAbs, manifestFile)) || !existsSync(path.join(dirAbs, signatureFile))) continue;
      const m = JSON.parse(row.manifest) as Manifest;
      const prefix = recordingPrefix(this.#o.prefix, this.#opts.deviceId, row.id);
      const dirRel = `recordings/${row.id}`;
      const objects: { key: string; source: string; sha256: string; bytes: number }[] = [];
      // The segments with the hashes the index and the signed manifest hold: what is uploaded is
      // what was sealed (a file changed since shows as a checksum the store's HEAD cannot match).
      for (const s of m.segments) objects.push({ key: prefix + path.posix.basename(s.file), source: s.file, sha256: s.sha256, bytes: s.bytes });
      // Talk-back spurts (what the wearer was told) go with the evidence, as the manifest hashed them.
      for (const s of m.talk ?? []) objects.push({ key: prefix + path.posix.basename(s.file), source: s.file, sha256: s.sha256, bytes: s.bytes });
      for (const name of [manifestFile, signatureFile, ...offloadedExtraFiles]) {
        const rel = `${dirRel}/${name}`;
        const abs = this.#abs(rel);
        if (!existsSync(abs)) continue;
        const h = await hashFile(abs);
        objects.push({ key: prefix + name, source: rel, sha256: h.sha256, bytes: h.bytes });
      }
      objects.push({ key: prefix + deviceKeyObject, source: deviceKeySource, sha256: this.#deviceKeySha256, bytes: this.#deviceKey.length });
      const bytes = objects.reduce((a, o) => a + o.bytes, 0);
      this.#opts.db.transaction(() => {
        this.#opts.db.prepare("INSERT INTO offload_recording (recording_id, status, bytes) VALUES (?, 'pending', ?)").run(row.id, bytes);
        const ins = this.#opts.db.prepare('INSERT INTO offload_object (recording_id, key, source, sha256, bytes) VALUES (?, ?, ?, ?, ?)');
        for (const o of objects) ins.run(row.id, o.key, o.source, o.sha256, o.bytes);
      })();
      this.#log.info({ recordingId: row.id, objects: objects.length, bytes }, 'recording queued for offload');
    }
  }

  /** The store client for the credentials and the interface of now; throws naming the setting when neither will do. */
  #storeNow(): ObjectStore {
    const { credentials, changed } = this.#credentials.read();
    const localAddress = this.#localAddress();
    if (localAddress === null) {
      this.#waitingFor = `no address on offload.interfaces (${this.#o.interfaces.join(', ')})`;
      throw new StoreError('offload.interfaces', 'no_interface', `none of ${this.#o.interfaces.join(', ')} has an address: uploads wait`);
    }
    this.#waitingFor = null;
    if (!this.#store || changed || this.#store.localAddress !== localAddress) {
      if (changed && this.#store) this.#log.info('offload.credentialsFile changed: credentials re-read');
      this.#store?.store.destroy();
      this.#store = {
        store: new ObjectStore({
          endpoint: this.#o.endpoint,
          bucket: this.#o.bucket,
          region: this.#o.region,
          credentials,
          requestTimeoutMs: this.#o.requestTimeout,
          ...(localAddress ? { localAddress } : {}),
        }),
        localAddress,
      };
    }
    return this.#store.store;
  }

  /** undefined: any interface; null: none of the allowed ones is up. */
  #localAddress(): string | undefined | null {
    if (this.#o.interfaces.length === 0) return undefined;
    const table = (this.#opts.interfaces ?? os.networkInterfaces)();
    const host = new URL(this.#o.endpoint).hostname.replace(/^\[|\]$/g, '');
    const wantV6 = host.includes(':');
    for (const name of this.#o.interfaces) {
      const a = (table[name] ?? []).find((x) => (x.family === 'IPv6') === wantV6 && !(x.family === 'IPv6' && x.address.startsWith('fe80:')));
      if (a) return a.address;
    }
    return null;
  }

  async #upload(store: ObjectStore, obj: ObjectRow, signal: AbortSignal): Promise<void> {
    const src: ObjectSource = obj.source === deviceKeySource ? { data: this.#deviceKey, sha256: obj.sha256, bytes: obj.bytes } : { file: this.#abs(obj.source), sha256: obj.sha256, bytes: obj.bytes };
    if (src.file && !existsSync(src.file)) throw new StoreError('offload', 'local_missing', `${obj.source} is gone from the camera before it was uploaded (evidence verify will say more)`);
    const multipart = src.file !== undefined && obj.bytes >= this.#o.multipartThresholdBytes;
    const expectedEtag = multipart ? await multipartEtag(src.file!, obj.bytes, this.#o.partSizeBytes) : await md5Hex(src);
    const expected = { bytes: obj.bytes, sha256: obj.sha256, etag: expectedEtag };
    const detail = { recordingId: obj.recording_id, key: obj.key, sha256: obj.sha256, bytes: obj.bytes };
    // Already there (a PUT finished just before a crash, or by an earlier agent): not sent again.
    // Only an object a PUT was begun for can be (or a recording enlisted again after its rows were lost).
    const before = obj.attempts > 0 || obj.upload_id ? await store.head(obj.key, signal) : undefined;
    const alreadyStored = before !== undefined && before.bytes === obj.bytes && before.sha256 === obj.sha256 && before.etag === expectedEtag;
    if (!alreadyStored) {
      this.#opts.db.prepare('UPDATE offload_object SET attempts = attempts + 1 WHERE recording_id = ? AND key = ?').run(obj.recording_id, obj.key);
      const onBytes = (n: number) => {
        this.#counters.bytesSent += n;
      };
      if (multipart) {
        const r = await store.putMultipart(
          obj.key,
          { ...src, file: src.file! },
          this.#o.partSizeBytes,
          obj.upload_id,
          (id) => this.#opts.db.prepare('UPDATE offload_object SET upload_id = ? WHERE recording_id = ? AND key = ?').run(id, obj.recording_id, obj.key),
          this.#bucket,
          this.#gate,
          onBytes,
          signal,
        );
        this.#audit({ type: 'offload.upload', detail: { ...detail, etag: r.etag, parts: r.partsSent + r.partsKept, partsResumed: r.partsKept } });
      } else {
        await store.put(obj.key, { ...src, md5: expectedEtag }, this.#bucket, this.#gate, onBytes, signal);
        this.#audit({ type: 'offload.upload', detail: { ...detail, etag: expectedEtag } });
      }
      this.#counters.objectsSent++;
      this.#counters.lastUploadAt = this.#now().toISOString();
    }
    try {
      await store.verify(obj.key, expected, signal);
    } catch (err) {
      if (err instanceof VerifyMismatch) {
        this.#audit({ type: 'offload.verify', detail: { ...detail, etag: expectedEtag, result: 'mismatch', problem: err.message.slice(0, 300) } });
        this.#log.error({ key: obj.key, err: err.message }, 'the store does not hold what was sent: kept locally, sent again');
      }
      throw err;
    }
    this.#opts.db.prepare('UPDATE offload_object SET verified_at = ? WHERE recording_id = ? AND key = ?').run(this.#now().toISOString(), obj.recording_id, obj.key);
    this.#audit({ type: 'offload.verify', detail: { ...detail, etag: expectedEtag, result: 'ok', ...(alreadyStored ? { alreadyStored: true } : {}) } });
  }

  #sealIfComplete(recordingId: string): void {
    const left = this.#opts.db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM offload_object WHERE recording_id = ? AND verified_at IS NULL').get(recordingId)!.n;
    if (left > 0) return;
    const r = this.#opts.db.prepare("UPDATE offload_recording SET status = 'uploaded', uploaded_at = ? WHERE recording_id = ? AND status = 'pending'").run(this.#now().toISOString(), recordingId);
    if (r.changes === 0) return;
    const rec = this.#opts.db.prepare<[string], { bytes: number }>('SELECT bytes FROM offload_recording WHERE recording_id = ?').get(recordingId)!;
    const objects = this.#opts.db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM offload_object WHERE recording_id = ?').get(recordingId)!.n;
    const prefix = recordingPrefix(this.#o.prefix, this.#opts.deviceId, recordingId);
    this.#audit({ type: 'offload.recording', detail: { recordingId, prefix, bucket: this.#o.bucket, objects, bytes: rec.bytes } });
    this.#log.info({ recordingId, objects, bytes: rec.bytes }, 'recording offloaded and verified');
  }

  /** Uploaded recordings past offload.keepDays and not under hold. */
  #deletable(): { recording_id: string }[] {
    const cutoff = new Date(this.#now().getTime() - this.#o.keepDays * 86_400_000).toISOString();
    return this.#opts.db
      .prepare<[string], { recording_id: string }>(
        `SELECT o.recording_id FROM offload_recording o JOIN recording r ON r.id = o.recording_id
         WHERE o.status = 'uploaded' AND o.recording_id NOT IN (SELECT recording_id FROM offload_hold)
         AND coalesce(r.stopped_at, r.started_at) <= ? ORDER BY r.started_at`,
      )
      .all(cutoff);
  }

  /** Deletes a recording's local files once every object is checked again in the store. */
  async #retire(store: ObjectStore, rec: { recording_id: string }, signal: AbortSignal): Promise<void> {
    const objects = this.#opts.db.prepare<[string], ObjectRow>('SELECT * FROM offload_object WHERE recording_id = ? ORDER BY key').all(rec.recording_id);
    for (const obj of objects) {
      const src: ObjectSource = obj.source === deviceKeySource ? { data: this.#deviceKey, sha256: obj.sha256, bytes: obj.bytes } : { file: this.#abs(obj.source), sha256: obj.sha256, bytes: obj.bytes };
      const multipart = src.file !== undefined && obj.bytes >= this.#o.multipartThresholdBytes;
      const etag = multipart ? await multipartEtag(src.file!, obj.bytes, this.#o.partSizeBytes) : await md5Hex(src);
      try {
        await store.verify(obj.key, { bytes: obj.bytes, sha256: obj.sha256, etag }, signal);
      } catch (err) {
        if (err instanceof VerifyMismatch) {
          // The store lost or changed it: upload again, keep the local copy.
          this.#opts.db.transaction(() => {
            this.#opts.db.prepare('UPDATE offload_object SET verified_at = NULL WHERE recording_id = ? AND key = ?').run(obj.recording_id, obj.key);
            this.#opts.db.prepare("UPDATE offload_recording SET status = 'pending', uploaded_at = NULL WHERE recording_id = ?").run(obj.recording_id);
          })();
          this.#audit({ type: 'offload.verify', detail: { recordingId: obj.recording_id, key: obj.key, sha256: obj.sha256, bytes: obj.bytes, etag, result: 'mismatch', problem: err.message.slice(0, 300), before: 'delete' } });
        }
        throw err;
      }
    }
    // Audited before the first file goes: never a deletion the trail does not show.
    this.#audit({
      type: 'offload.delete',
      detail: { recordingId: rec.recording_id, keepDays: this.#o.keepDays, objects: objects.map((o) => ({ key: o.key, sha256: o.sha256 })) },
    });
    const dir = this.#abs(`recordings/${rec.recording_id}`);
    for (const obj of objects) {
      if (obj.source === deviceKeySource) continue;
      try {
        unlinkSync(this.#abs(obj.source));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    if (existsSync(dir) && statSync(dir).isDirectory() && readdirSync(dir).length === 0) rmdirSync(dir);
    this.#opts.db.prepare("UPDATE offload_recording SET status = 'deleted', deleted_at = ? WHERE recording_id = ?").run(this.#now().toISOString(), rec.recording_id);
    this.#log.info({ recordingId: rec.recording_id }, 'local copy deleted: the store holds every object with the same SHA-256');
    this.#publish();
  }

  /** Inside the evidence reserve with recordings not yet in the store: the policy keeps them; say so once. */
  #checkFullDisk(): void {
    if (!this.#opts.reserve) return;
    let full = false;
    let why = '';
    try {
      this.#opts.reserve.check();
    } catch (err) {
      full = true;
      why = errorMessage(err);
    }
    if (!full) {
      this.#fullDiskAudited = false;
      return;
    }
    const s = this.#summary();
    if (this.#fullDiskAudited || s.recordingsPending === 0) return;
    this.#fullDiskAudited = true;
    this.#audit({
      type: 'offload.backlog',
      detail: { policy: 'kept until uploaded', recordingsPending: s.recordingsPending, bytesPending: s.bytesPending, disk: why.slice(0, 300) },
    });
    this.#log.warn({ recordingsPending: s.recordingsPending, bytesPending: s.bytesPending }, 'disk inside the evidence reserve with recordings not yet offloaded: they are kept');
  }

  #summary(): OffloadState {
    const db = this.#opts.db;
    const notEnlisted = db
      .prepare<[], { n: number }>("SELECT count(*) AS n FROM recording WHERE status IN ('closed', 'interrupted') AND manifest IS NOT NULL AND id NOT IN (SELECT recording_id FROM offload_recording)")
      .get()!.n;
    const pending = db.prepare<[], { n: number }>("SELECT count(*) AS n FROM offload_recording WHERE status = 'pending'").get()!.n;
    const bytes = db.prepare<[], { b: number | null }>('SELECT sum(bytes) AS b FROM offload_object WHERE verified_at IS NULL').get()!.b ?? 0;
    const held = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM offload_hold').get()!.n;
    const pausedBy = this.#gate.closedBy as OffloadState['pausedBy'];
    const status: OffloadState['status'] = pausedBy.length > 0 ? 'paused' : this.#failures > 0 || this.#waitingFor ? 'waiting' : this.#working ? 'uploading' : 'idle';
    return { status, pausedBy, recordingsPending: pending + notEnlisted, bytesPending: bytes, ...this.#counters, held };
  }

  #publish(): void {
    this.#opts.state.update({ offload: this.#summary() });
  }

  #audit(record: AuditRecord): void {
    try {
      this.#opts.audit.append(record);
    } catch (err) {
      // The audit entry is a precondition of a delete: #retire's own append throws through.
      this.#log.error({ err: errorMessage(err), type: record.type }, 'cannot audit an offload step');
      if (record.type === 'offload.delete') throw err;
    }
  }

  #abs(rel: string): string {
    return path.join(this.#opts.evidenceDir, ...rel.split('/'));
  }
}

async function md5Hex(src: ObjectSource): Promise<string> {
  if (src.data) return createHash('md5').update(src.data).digest('hex');
  const h = createHash('md5');
  for await (const chunk of createReadStream(src.file!, { highWaterMark: 256 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** S3's multipart ETag: MD5 of the parts' binary MD5s, "-" and the part count. */
export async function multipartEtag(file: string, bytes: number, partSize: number): Promise<string> {
  const md5s: Buffer[] = [];
  for (let start = 0; start < bytes || md5s.length === 0; start += partSize) {
    const h = createHash('md5');
    const end = Math.min(bytes, start + partSize);
    if (end > start) for await (const chunk of createReadStream(file, { start, end: end - 1, highWaterMark: 256 * 1024 })) h.update(chunk as Buffer);
    md5s.push(h.digest());
    if (end >= bytes) break;
  }
  return `${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${md5s.length}`;
}
