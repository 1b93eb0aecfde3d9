// Keeps every camera's audit chain verified as it arrives, so no chain is ever "not checkable":
// - each entry is stored in the archive, then checked against the stored verified head only (O(1)
//   per entry; the SHA-256 and Ed25519 work runs in a worker thread, ops-console/verify-worker.ts,
//   with src/audit/verify.ts's incremental primitives), and each checkpoint against the device key
//   pinned at enrolment (never the key a message carries);
// - a gap (entries missing before the first stored one, a seq jump, or a head the camera's state
//   claims beyond what arrived) is filled by asking the camera: a signed `audit.fetch` of the range
//   (docs/protocol.md), bounded per command, asked again if the range has not arrived;
// - a camera whose head goes backwards (chain_rollback) or whose chain forks (chain_fork), and a
//   checkpoint not signed by the enrolled key (untrusted_key), raise alerts through the archive's
//   AlertStore (once per camera, rule and seq).
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { JWK } from 'jose';
import type { AuditEntry } from '../src/audit/audit-log.ts';
import { auditMessageProblem, type AuditHead, type AuditProblem } from '../src/audit/verify.ts';
import { genesisHead, type Archive, type Enrolment, type PublishedCheckpoint, type VerifiedHead } from './archive/archive.ts';
import type { EntriesJob, EntriesResult } from './verify-worker.ts';

export interface ChainStatus {
  deviceId: string;
  /** true: verified from entry 1 with the enrolled key; false: broken or forged; null: not yet (says why). */
  ok: boolean | null;
  summary: string;
  head: VerifiedHead;
  enrolled: boolean;
  /** The range asked of the camera with audit.fetch and not yet arrived. */
  fetching?: { fromSeq: number; toSeq: number };
}

export interface ChainVerifierOptions {
  archive: Archive;
  /** Sends a signed audit.fetch {fromSeq, toSeq} to the camera (the console's issuer key must be allowed it). */
  fetchRange?: (deviceId: string, fromSeq: number, toSeq: number) => Promise<void>;
  /** Most entries asked for in one audit.fetch (the agent's bound is the same, docs/protocol.md). */
  maxFetch?: number;
  /** A gap must last this long before it is asked for (entries may still be on their way). */
  gapGraceMs?: number;
  /** An unanswered fetch is asked again after this long. */
  refetchAfterMs?: number;
  log?: (line: string) => void;
}

/** Entries checked per worker job. */
const batch = 1000;

export interface ChainVerifierEvents {
  status: [ChainStatus];
  alert: [{ rule: string; deviceId: string }];
  /** Entries that just joined a camera's verified chain, in seq order (the live-view record is made from these). */
  verified: [{ deviceId: string; entries: AuditEntry[] }];
}

export class ChainVerifier extends EventEmitter<ChainVerifierEvents> {
  readonly #o: ChainVerifierOptions;
  readonly #a: Archive;
  readonly #worker: Worker;
  readonly #jobs = new Map<number, (r: EntriesResult | { id: number; error: string }) => void>();
  #jobId = 0;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #heads = new Map<string, VerifiedHead>();
  readonly #enrolments = new Map<string, Enrolment | null>();
  /** The entry at head + 1 that does not chain (verification waits for one that does). */
  readonly #stuck = new Map<string, AuditProblem>();
  /** The newest checkpoint not signed by the enrolled key: entries up to it may be forged. */
  readonly #untrusted = new Map<string, number>();
  readonly #asked = new Map<string, { fromSeq: number; toSeq: number; at: number }>();
  readonly #gapTimers = new Map<string, NodeJS.Timeout>();
  readonly #alerted = new Set<string>();
  readonly #log: (line: string) => void;
  #closed = false;

  constructor(options: ChainVerifierOptions) {
    super();
    this.#o = options;
    this.#a = options.archive;
    this.#log = options.log ?? ((line) => process.stderr.write(`ops-console: ${line}\n`));
    this.#worker = new Worker(new URL('./verify-worker.ts', import.meta.url));
    this.#worker.on('message', (r: EntriesResult | { id: number; error: string }) => {
      this.#jobs.get(r.id)?.(r);
      this.#jobs.delete(r.id);
    });
    this.#worker.on('error', (err) => this.#log(`chain verifier worker: ${err.message}`));
    this.#worker.unref();
  }

  /** One message received on `<root>/<deviceId>/audit` (anything: it is checked here). */
  receive(deviceId: string, message: unknown): Promise<void> {
    return this.#enqueue(deviceId, async () => {
      const bad = auditMessageProblem(message);
      if (bad) {
        await this.#a.addEvent({ deviceId, type: 'audit.malformed', at: new Date().toISOString(), detail: { problem: bad } });
        this.#log(`dropped an audit message from ${deviceId}: ${bad}`);
        return;
      }
      const m = message as { kind: string; entry?: AuditEntry & { seq?: unknown }; checkpoint?: PublishedCheckpoint };
      if (m.kind === 'entry') {
        // The outbox's transport seq sits beside the entry, never in it (audit-log.ts): only the entry is kept.
        const entry = m.entry!;
        const outcome = await this.#a.addEntry(deviceId, entry);
        const head = await this.#head(deviceId);
        if (outcome === 'conflict' && entry.seq <= head.seq) {
          await this.#alert('chain_fork', 'critical', deviceId, [entry.seq], `a second, different entry ${entry.seq} arrived for a chain verified to ${head.seq}: the chain was rewritten (a fork), or someone else publishes on this camera's topic`);
          return;
        }
        if (outcome === 'duplicate' && entry.seq <= head.seq) return;
      } else if (m.kind === 'checkpoint') {
        if (!(await this.#a.addCheckpoint(deviceId, m.checkpoint!))) return;
      } else return;
      await this.#advance(deviceId);
    });
  }

  /**
   * The audit head a camera's state claims (state.auditHead), when the state is trusted (its key is
   * the enrolled one): behind the verified head is a rollback; a different hash there a fork;
   * beyond what arrived a gap to fetch.
   */
  observeHead(deviceId: string, claimed: AuditHead): Promise<void> {
    return this.#enqueue(deviceId, async () => {
      const head = await this.#head(deviceId);
      const known = Math.max(head.seq, head.highestSeenSeq);
      if (claimed.seq < known) {
        await this.#alert('chain_rollback', 'critical', deviceId, [claimed.seq, known], `the camera's audit head went back from seq ${known} to ${claimed.seq}: an older copy of its database was put back, or its chain was cut`);
        return;
      }
      if (claimed.seq === head.seq && claimed.hash !== head.hash) {
        await this.#alert('chain_fork', 'critical', deviceId, [claimed.seq], `the camera's audit head at seq ${claimed.seq} is ${claimed.hash.slice(0, 12)}…, but the verified chain has ${head.hash.slice(0, 12)}… there (a fork)`);
        return;
      }
      if (claimed.seq > head.highestSeenSeq) await this.#setHead({ ...head, highestSeenSeq: claimed.seq });
      this.#scheduleGapCheck(deviceId);
    });
  }

  /** Forget the cached key: an admin enrolled (or re-enrolled) the camera; re-checks its checkpoints. */
  enrolled(deviceId: string): Promise<void> {
    this.#enrolments.delete(deviceId);
    this.#untrusted.delete(deviceId);
    return this.#enqueue(deviceId, () => this.#advance(deviceId));
  }

  async status(deviceId: string): Promise<ChainStatus> {
    await this.#queues.get(deviceId);
    return this.#statusNow(deviceId);
  }

  async #statusNow(deviceId: string): Promise<ChainStatus> {
    const head = await this.#head(deviceId);
    const enrolment = await this.#enrolment(deviceId);
    const asked = this.#asked.get(deviceId);
    const base = { deviceId, head, enrolled: enrolment !== undefined, ...(asked ? { fetching: { fromSeq: asked.fromSeq, toSeq: asked.toSeq } } : {}) };
    const stuck = this.#stuck.get(deviceId);
    const untrusted = this.#untrusted.get(deviceId) ?? 0;
    if (head.broken) return { ...base, ok: false, summary: `entry ${head.broken.seq} ${head.broken.kind}: ${head.broken.message}` };
    if (untrusted > head.checkpointSeq) return { ...base, ok: false, summary: `a checkpoint at seq ${untrusted} is not signed by the enrolled device key: entries up to it may be forged` };
    if (!enrolment) return { ...base, ok: null, summary: `this camera is not enrolled (no pinned device key): ${head.seq} entries held, not verified` };
    if (stuck) return { ...base, ok: false, summary: `verified to entry ${head.seq}; entry ${stuck.seq} ${stuck.kind}: ${stuck.message}` };
    if (head.seq === 0) return { ...base, ok: null, summary: asked ? `asked the camera for entries ${asked.fromSeq} to ${asked.toSeq}` : 'no audit entries received from this camera yet' };
    // As `bwc-agent audit verify` counts unsignedEntries: the chain is intact from entry 1, and the
    // tail after the last checkpoint (here all of it) is protected by the hash chain alone.
    if (head.checkpointSeq === 0) return { ...base, ok: true, summary: `${head.seq} entries verified by their hash chain from entry 1; none signed yet (no checkpoint from the enrolled key so far)` };
    const gap = head.highestSeenSeq > head.seq ? `; entries ${head.seq + 1} to ${head.highestSeenSeq} ${asked ? 'asked of the camera' : 'not received yet'}` : '';
    const tail = head.seq - head.checkpointSeq;
    return { ...base, ok: true, summary: `${head.seq} entries verified, signed to seq ${head.checkpointSeq}${tail ? `, ${tail} after the last checkpoint` : ''}${gap}; head ${head.hash.slice(0, 12)}…` };
  }

  /** Resolves when everything received so far has been processed. */
  async settled(): Promise<void> {
    while (this.#queues.size > 0) await Promise.all([...this.#queues.values()]);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const t of this.#gapTimers.values()) clearTimeout(t);
    await Promise.all([...this.#queues.values()]);
    await this.#worker.terminate();
  }

  #enqueue(deviceId: string, work: () => Promise<void>): Promise<void> {
    const next = (this.#queues.get(deviceId) ?? Promise.resolve()).then(work).catch((err: unknown) => this.#log(`audit of ${deviceId}: ${(err as Error).stack ?? String(err)}`));
    this.#queues.set(deviceId, next);
    void next.then(() => {
      if (this.#queues.get(deviceId) === next) this.#queues.delete(deviceId);
    });
    return next;
  }

  async #head(deviceId: string): Promise<VerifiedHead> {
    let head = this.#heads.get(deviceId);
    if (!head) {
      head = (await this.#a.head(deviceId)) ?? genesisHead(deviceId, new Date().toISOString());
      this.#heads.set(deviceId, head);
    }
    return head;
  }

  async #setHead(head: VerifiedHead): Promise<void> {
    const h = { ...head, updatedAt: new Date().toISOString() };
    await this.#a.setHead(h);
    this.#heads.set(head.deviceId, h);
  }

  async #enrolment(deviceId: string): Promise<Enrolment | undefined> {
    if (!this.#enrolments.has(deviceId)) this.#enrolments.set(deviceId, (await this.#a.enrolment(deviceId)) ?? null);
    return this.#enrolments.get(deviceId) ?? undefined;
  }

  #job(job: Omit<EntriesJob, 'id'>): Promise<EntriesResult> {
    const id = ++this.#jobId;
    return new Promise((resolve, reject) => {
      this.#jobs.set(id, (r) => ('error' in r ? reject(new Error(r.error)) : resolve(r)));
      this.#worker.postMessage({ ...job, id });
    });
  }

  /** Verifies whatever stored entries and checkpoints follow the head, in batches. */
  async #advance(deviceId: string): Promise<void> {
    const publicJwk = ((await this.#enrolment(deviceId))?.publicJwk ?? null) as JWK | null;
    for (;;) {
      const head = await this.#head(deviceId);
      if (head.broken) break;
      const entries = await this.#a.entries(deviceId, { fromSeq: head.seq + 1, toSeq: head.seq + batch, allVersions: true });
      const checkpoints = publicJwk ? await this.#a.checkpoints(deviceId, { fromSeq: head.checkpointSeq + 1 }) : [];
      if (entries.length === 0 && checkpoints.every((c) => c.seq > head.seq)) break;
      const storedHashes: Record<number, string[]> = {};
      for (const c of checkpoints) {
        if (c.seq <= head.seq) storedHashes[c.seq] = (await this.#a.entries(deviceId, { fromSeq: c.seq, toSeq: c.seq, allVersions: true })).map((e) => e.hash);
      }
      const r = await this.#job({ kind: 'entries', head: { seq: head.seq, hash: head.hash }, entries, checkpoints, publicJwk, storedHashes });
      for (const seq of r.conflicts) {
        await this.#alert('chain_fork', 'critical', deviceId, [seq], `two different entries claim seq ${seq}: only the one that chains to the verified entry ${seq - 1} was taken`);
      }
      let broken: VerifiedHead['broken'] = null;
      for (const p of r.checkpointProblems) {
        if (p.kind === 'fork') {
          broken = { seq: p.seq, kind: p.kind, message: p.message };
          await this.#alert('chain_fork', 'critical', deviceId, [p.seq], p.message);
        } else {
          this.#untrusted.set(deviceId, Math.max(this.#untrusted.get(deviceId) ?? 0, p.seq));
          // One alert per foreign key, not one per checkpoint it signed.
          const kid = checkpoints.find((c) => c.seq === p.seq)?.kid ?? '?';
          await this.#alert('untrusted_key', 'critical', deviceId, [p.seq], `${p.message}: not the key pinned at enrolment`, `untrusted_key/${deviceId}/${kid}`);
        }
      }
      if (r.problem) this.#stuck.set(deviceId, r.problem);
      else this.#stuck.delete(deviceId);
      const checkpointSeq = Math.max(head.checkpointSeq, r.checkpointSeq);
      const progressed = r.verified > 0 || checkpointSeq > head.checkpointSeq || broken !== null;
      if (r.verified > 0) this.emit('verified', { deviceId, entries: chainOf(entries, r.head) });
      if (progressed) {
        await this.#setHead({ ...head, seq: r.head.seq, hash: r.head.hash, checkpointSeq, highestSeenSeq: Math.max(head.highestSeenSeq, r.head.seq, checkpointSeq), broken });
        const asked = this.#asked.get(deviceId);
        if (asked && r.head.seq >= asked.toSeq) this.#asked.delete(deviceId);
      }
      if (!progressed || r.verified < batch) break;
    }
    this.#scheduleGapCheck(deviceId);
    this.emit('status', await this.#statusNow(deviceId));
  }

  /** After the grace period, asks the camera for a gap that is still there. */
  #scheduleGapCheck(deviceId: string): void {
    if (this.#closed || !this.#o.fetchRange || this.#gapTimers.has(deviceId)) return;
    const timer = setTimeout(() => {
      this.#gapTimers.delete(deviceId);
      void this.#enqueue(deviceId, () => this.#fetchGap(deviceId));
    }, this.#o.gapGraceMs ?? 3000);
    timer.unref();
    this.#gapTimers.set(deviceId, timer);
  }

  async #fetchGap(deviceId: string): Promise<void> {
    const head = await this.#head(deviceId);
    if (head.broken || this.#stuck.has(deviceId) || !(await this.#enrolment(deviceId))) return;
    const nextStored = await this.#a.nextStoredSeq(deviceId, head.seq);
    const end = nextStored !== undefined ? nextStored - 1 : head.highestSeenSeq;
    if (end <= head.seq) return; // no gap: head + 1 is there, or nothing is claimed beyond the head
    const fromSeq = head.seq + 1;
    const toSeq = Math.min(end, head.seq + (this.#o.maxFetch ?? 500));
    const asked = this.#asked.get(deviceId);
    if (asked && asked.fromSeq === fromSeq && Date.now() - asked.at < (this.#o.refetchAfterMs ?? 30_000)) {
      this.#scheduleGapCheck(deviceId);
      return;
    }
    this.#asked.set(deviceId, { fromSeq, toSeq, at: Date.now() });
    await this.#a.addEvent({ deviceId, type: 'audit.fetch.sent', at: new Date().toISOString(), detail: { fromSeq, toSeq } });
    this.#log(`asking ${deviceId} for audit entries ${fromSeq} to ${toSeq} (audit.fetch)`);
    // Not awaited: the camera's reply can take seconds, and this camera's queue must not wait for it.
    this.#o.fetchRange!(deviceId, fromSeq, toSeq).catch((err: unknown) => this.#log(`audit.fetch to ${deviceId} failed: ${(err as Error).message}`));
    this.#scheduleGapCheck(deviceId); // asked again if it does not arrive
  }

  async #alert(rule: string, severity: 'warning' | 'critical', deviceId: string, seqs: number[], message: string, dedupe?: string): Promise<void> {
    const key = dedupe ?? `${rule}/${deviceId}/${seqs.join(',')}`;
    if (this.#alerted.has(key)) return;
    this.#alerted.add(key);
    this.#log(`ALERT ${rule} ${deviceId}: ${message}`);
    await this.#a.alerts.insert({ rule, severity, deviceId, operator: null, at: new Date().toISOString(), auditRefs: seqs.map((seq) => ({ deviceId, seq })), detail: { message } });
    this.emit('alert', { rule, deviceId });
  }
}

/** The entries on the verified path ending at `head`, in seq order (candidates may hold a conflict's other side). */
function chainOf(candidates: AuditEntry[], head: AuditHead): AuditEntry[] {
  const byHash = new Map(candidates.map((e) => [e.hash, e]));
  const out: AuditEntry[] = [];
  for (let e = byHash.get(head.hash); e; e = byHash.get(e.prevHash)) out.push(e);
  return out.reverse();
}
