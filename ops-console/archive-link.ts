// What joins the console to its archive (ops-console/archive/): every audit message a camera
// publishes goes to the chain verifier (stored, verified incrementally, gaps asked for with a
// signed audit.fetch), every state is judged against the camera's enrolled key before anything in
// it is believed (its auditHead, its key for ICE restart offers), state changes and live views
// are recorded, and the audit view reads the archive. The server calls it in a few places only.
import type { JWK } from 'jose';
import type { AuditEntry } from '../src/audit/audit-log.ts';
import { jwkThumbprint } from '../src/audit/verify.ts';
import { signCommand } from '../src/cli/fleet-tools.ts';
import type { Archive, Enrolment } from './archive/archive.ts';
import { ChainVerifier } from './chain-verifier.ts';
import type { CameraRecord, Fleet } from './fleet.ts';

export interface ArchiveLinkOptions {
  fleet: Fleet;
  archive: Archive;
  issuerKeyFile: string;
  issuer: string;
  /** The `sub` of the audit.fetch commands the console signs itself (no operator asked for them). */
  consoleOperator?: string;
  /** An operator's unit, for the oversight report's filter (null when unknown). */
  unitOf?: (operator: string) => string | null;
  gapGraceMs?: number;
  log: (line: string) => void;
}

/** Whether a camera's state may be believed: only when it carries the key pinned at enrolment. */
export interface CameraTrust {
  enrolled: boolean;
  /** The state's devicePublicKey is the enrolled one (null: not enrolled, nothing to compare). */
  keyMatches: boolean | null;
  /** Words for the page when the state is not trusted. */
  problem?: string;
}

/** Shown in the audit view: the newest entries only (the archive keeps them all). */
const auditViewEntries = 500;

export class ArchiveLink {
  readonly archive: Archive;
  readonly verifier: ChainVerifier;
  readonly #o: ArchiveLinkOptions;
  readonly #enrolments = new Map<string, Enrolment>();
  readonly #online = new Map<string, boolean>();
  readonly #untrustedKids = new Set<string>();
  readonly #judged = new WeakMap<CameraRecord, CameraTrust>();

  private constructor(o: ArchiveLinkOptions) {
    this.#o = o;
    this.archive = o.archive;
    this.verifier = new ChainVerifier({
      archive: o.archive,
      log: o.log,
      ...(o.gapGraceMs === undefined ? {} : { gapGraceMs: o.gapGraceMs }),
      fetchRange: (deviceId, fromSeq, toSeq) => this.#fetch(deviceId, fromSeq, toSeq),
    });
    this.verifier.on('verified', ({ deviceId, entries }) => {
      this.#recordLiveViews(deviceId, entries).catch((err: unknown) => o.log(`live-view record of ${deviceId}: ${(err as Error).message}`));
    });
    o.fleet.on('audit', ({ deviceId, message }) => void this.verifier.receive(deviceId, message));
    o.fleet.on('camera', (record) => void this.trustFor(record));
  }

  /** The trust of a state record as received (judged once per record: the server asks again to show it). */
  trustFor(record: CameraRecord): CameraTrust {
    let trust = this.#judged.get(record);
    if (!trust) {
      trust = this.#onState(record);
      this.#judged.set(record, trust);
    }
    return trust;
  }

  static async open(o: ArchiveLinkOptions): Promise<ArchiveLink> {
    const link = new ArchiveLink(o);
    for (const e of await o.archive.enrolments()) link.#enrolments.set(e.deviceId, e);
    return link;
  }

  /** The key ICE restart offers and checkpoints are checked with: the enrolled one, never the state's. */
  pinnedKey(deviceId: string): JWK | undefined {
    return this.#enrolments.get(deviceId)?.publicJwk;
  }

  /** A fleet admin pins a camera's device key (ops-console/enrol.ts, or the admin route). */
  async enrol(deviceId: string, publicJwk: JWK, by: string): Promise<Enrolment> {
    const e: Enrolment = { deviceId, publicJwk, kid: jwkThumbprint(publicJwk), enrolledBy: by, enrolledAt: new Date().toISOString() };
    await this.archive.enrol(e);
    this.#enrolments.set(deviceId, e);
    await this.archive.addEvent({ deviceId, type: 'enrolled', at: e.enrolledAt, detail: { kid: e.kid, by } });
    await this.verifier.enrolled(deviceId);
    return e;
  }

  /** Re-reads the enrolments (a CLI may have changed them while the console runs). */
  async reloadEnrolments(): Promise<void> {
    const now = await this.archive.enrolments();
    const changed = now.filter((e) => this.#enrolments.get(e.deviceId)?.kid !== e.kid);
    this.#enrolments.clear();
    for (const e of now) this.#enrolments.set(e.deviceId, e);
    for (const e of changed) await this.verifier.enrolled(e.deviceId);
  }

  /**
   * A camera's state as received: its trust (the page shows it), and when trusted its auditHead
   * goes to the verifier (rollback, fork, gap). A state with another key raises untrusted_key.
   */
  #onState(record: CameraRecord): CameraTrust {
    const { deviceId, state } = record;
    const enrolment = this.#enrolments.get(deviceId);
    let kid: string | undefined;
    try {
      kid = state.devicePublicKey && typeof state.devicePublicKey === 'object' ? jwkThumbprint(state.devicePublicKey as JWK) : undefined;
    } catch {
      kid = undefined;
    }
    let trust: CameraTrust;
    if (!enrolment) trust = { enrolled: false, keyMatches: null, problem: 'not enrolled: its state, video offers and audit are not trusted until a fleet admin pins its device key' };
    else if (state.online === false && state.devicePublicKey === undefined) trust = { enrolled: true, keyMatches: null }; // the broker's Will: no key to compare
    else if (kid !== enrolment.kid) {
      trust = { enrolled: true, keyMatches: false, problem: `its state carries key ${kid ?? '(none)'}, not the enrolled ${enrolment.kid}: not trusted` };
      const key = `${deviceId}/${kid}`;
      if (!this.#untrustedKids.has(key)) {
        this.#untrustedKids.add(key);
        this.#o.log(`ALERT untrusted_key ${deviceId}: ${trust.problem}`);
        void this.archive.alerts
          .insert({ rule: 'untrusted_key', severity: 'critical', deviceId, operator: null, at: record.receivedAt, auditRefs: [], detail: { message: `a state for ${deviceId} ${trust.problem}`, kid: kid ?? null, enrolledKid: enrolment.kid } })
          .catch((err: unknown) => this.#o.log(`alert: ${(err as Error).message}`));
      }
    } else trust = { enrolled: true, keyMatches: true };
    if (trust.problem) {
      void this.archive.addEvent({ deviceId, type: 'state.untrusted', at: record.receivedAt, detail: { problem: trust.problem } }).catch(() => {});
      return trust;
    }
    const online = state.online === true;
    if (this.#online.get(deviceId) !== online) {
      this.#online.set(deviceId, online);
      void this.archive.addEvent({ deviceId, type: online ? 'state.online' : 'state.offline', at: record.receivedAt, detail: {} }).catch(() => {});
    }
    const head = state.auditHead as { seq?: unknown; hash?: unknown } | undefined;
    if (trust.enrolled && head && Number.isSafeInteger(head.seq) && (head.seq as number) >= 1 && typeof head.hash === 'string' && /^[0-9a-f]{64}$/.test(head.hash)) {
      void this.verifier.observeHead(deviceId, { seq: head.seq as number, hash: head.hash });
    }
    return trust;
  }

  /** The audit view: the newest entries from the archive and the verifier's verdict. */
  async auditView(deviceId: string): Promise<{ entries: AuditEntry[]; total: number; verification: { ok: boolean | null; summary: string } }> {
    const status = await this.verifier.status(deviceId);
    const total = status.head.highestSeenSeq;
    const fromSeq = Math.max(1, Math.max(status.head.seq, total) - auditViewEntries + 1);
    const entries = await this.archive.entries(deviceId, { fromSeq, limit: auditViewEntries });
    return { entries, total, verification: { ok: status.ok, summary: status.summary } };
  }

  async close(): Promise<void> {
    await this.verifier.close();
  }

  /** Signs an audit.fetch (the console's own request: `sub` is the console) and sends it. */
  async #fetch(deviceId: string, fromSeq: number, toSeq: number): Promise<void> {
    const token = await signCommand({
      keyFile: this.#o.issuerKeyFile, device: deviceId, action: 'audit.fetch', reason: 'audit-gap',
      operator: this.#o.consoleOperator ?? this.#o.issuer, issuer: this.#o.issuer, fromSeq, toSeq,
    });
    const reply = await this.#o.fleet.request(deviceId, { token });
    this.#o.log(`${deviceId} answered audit.fetch ${fromSeq}..${toSeq}: ${reply.ok === true ? `${String(reply.entries)} entries` : `${String(reply.code)} ${String(reply.message ?? '')}`}`);
  }

  /** Live views as the camera audited them (verified entries only): started, and how they ended. */
  async #recordLiveViews(deviceId: string, entries: AuditEntry[]): Promise<void> {
    for (const e of entries) {
      const sid = typeof e.detail?.sid === 'string' ? e.detail.sid : undefined;
      if (!sid) continue;
      if (e.type === 'stream.start' && e.operator) {
        await this.archive.openLiveView({ deviceId, sid, operator: e.operator, unit: this.#o.unitOf?.(e.operator) ?? null, reason: e.reason ?? '', startedAt: e.time, auditSeqs: [e.seq] });
      } else if (e.type === 'stream.stop') {
        await this.archive.closeLiveView(deviceId, sid, { at: e.time, cause: String(e.detail.cause ?? e.reason ?? 'unknown'), by: e.operator, auditSeqs: [e.seq] });
      }
    }
  }
}
