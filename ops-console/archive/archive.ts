// The console's durable archive: ONE interface, two backends (sqlite-archive.ts, the embedded
// default `make demo` uses; pg-archive.ts, PostgreSQL for a force). Everything the fleet side keeps
// of what cameras publish: each camera's audit entries and checkpoints, its pinned device key
// (enrolment), the verified head of its chain, events, live-view sessions, and the alerts the
// misuse rules raise (AlertStore, the part the rules write through).
//
// Every method is async because PostgreSQL is; the SQLite backend answers at once. Both backends
// are tested by the SAME file (test/ops-console-archive.test.ts), so they mean the same thing.
import type { JWK } from 'jose';
import type { AuditCheckpoint, AuditEntry } from '../../src/audit/audit-log.ts';

/** A checkpoint as a camera publishes it (with the key it says it signed with; never trusted alone). */
export type PublishedCheckpoint = AuditCheckpoint & { publicJwk: JWK };

/** What the archive did with an audit entry it was given. */
export type EntryOutcome =
  /** Stored; nothing was stored at its seq before. */
  | 'new'
  /** The identical entry was stored already (at-least-once delivery repeats messages). */
  | 'duplicate'
  /** A DIFFERENT entry is stored at that seq: two chains claim it (a fork, or a rollback rewritten). Both are kept. */
  | 'conflict';

/** A camera's chain as verified so far: every entry 1..seq is stored and chains, hash is entry seq's. */
export interface VerifiedHead {
  deviceId: string;
  /** 0 with the genesis hash: nothing verified yet. */
  seq: number;
  hash: string;
  /** The newest checkpoint whose signature (pinned key) and head hash matched the verified chain. */
  checkpointSeq: number;
  /** The highest seq the camera has ever claimed (entries, checkpoints, state.auditHead): below it is a gap or a rollback. */
  highestSeenSeq: number;
  /** The chain is broken (a bad entry, fork, rollback): verification stops here until an operator looks. */
  broken: { seq: number; kind: string; message: string } | null;
  updatedAt: string;
}

/** A camera's device public key, pinned by a fleet admin: the only key its state, offers and audit are checked with. */
export interface Enrolment {
  deviceId: string;
  publicJwk: JWK;
  /** RFC 7638 thumbprint of publicJwk (the device's kid). */
  kid: string;
  enrolledBy: string;
  enrolledAt: string;
}

/** Something a camera did that the console keeps: state changes worth keeping, refusals, gaps asked for. */
export interface FleetEvent {
  id?: number;
  deviceId: string;
  /** e.g. 'state.online', 'state.offline', 'audit.fetch.sent', 'untrusted.state' */
  type: string;
  at: string;
  detail: Record<string, unknown>;
}

/** How a live view ended (the camera's end cause when it told us; 'unknown' when it never did). */
export type LiveViewEnd = string;

/** One live view started through this console (who, which camera, why, when, how it ended). */
export interface LiveViewSession {
  deviceId: string;
  sid: string;
  operator: string;
  /** The operator's unit when known (users.json), for the oversight report's filter. */
  unit: string | null;
  reason: string;
  startedAt: string;
  endedAt: string | null;
  /** e.g. 'operator-stop', 'max-duration', 'camera-ended', 'viewer-gone' (docs/protocol.md end causes). */
  endCause: LiveViewEnd | null;
  /** Who stopped it, when an operator did. */
  endedBy: string | null;
  /** Audit entries (seq) behind the view on the camera: its command.decision and stream entries. */
  auditSeqs: number[];
}

export interface LiveViewFilter {
  from?: string;
  to?: string;
  operator?: string;
  deviceId?: string;
  unit?: string;
}

// ---- alerts (written by the misuse rules, ops-console/rules*; read by the page and the report) ----

export type AlertSeverity = 'info' | 'warning' | 'critical';

/** What a rule hands to AlertStore.insert. */
export interface NewAlert {
  /** The rule's name, e.g. 'chain_rollback', 'chain_fork', 'untrusted_key', 'too_many_views'. */
  rule: string;
  severity: AlertSeverity;
  deviceId: string | null;
  operator: string | null;
  /** When what the alert is about happened (ISO 8601). */
  at: string;
  /** The camera audit entries behind it, by device and seq: the report links to them. */
  auditRefs: { deviceId: string; seq: number }[];
  /** Words for a person and whatever the rule measured. */
  detail: Record<string, unknown>;
}

export interface Alert extends NewAlert {
  id: number;
  /** When the console raised it. */
  raisedAt: string;
  acknowledgedBy: string | null;
  acknowledgedAt: string | null;
}

export interface AlertFilter {
  from?: string;
  to?: string;
  rule?: string;
  deviceId?: string;
  operator?: string;
  /** true: only acknowledged; false: only open. */
  acknowledged?: boolean;
  /** Newest first; default 1000. */
  limit?: number;
}

/** The part of the archive the misuse rules write through. */
export interface AlertStore {
  insert(alert: NewAlert): Promise<Alert>;
  /** Newest first. */
  list(filter?: AlertFilter): Promise<Alert[]>;
  /** Undefined when there is no such alert; an alert acknowledged already keeps its first acknowledgement. */
  acknowledge(id: number, by: string, at?: string): Promise<Alert | undefined>;
}

// ---- officer alerts (issue 19: the wearer's watch-me and emergency, from the camera's events) -------

export type OfficerAlertKind = 'watch-me' | 'emergency';

/**
 * One watch-me request or emergency as the console keeps it: raised by the camera's event, dealt
 * with by the camera's own acknowledgement/clearance (an emergency) or by a live view answering it
 * (a watch-me). Key: deviceId + alertId (the watch-me's requestId).
 */
export interface OfficerAlert {
  deviceId: string;
  alertId: string;
  kind: OfficerAlertKind;
  /** The camera's time of the event. */
  at: string;
  /** 'button' | 'fall' | 'trigger' (emergency); null for a watch-me. */
  source: string | null;
  /** The trigger source's name when source is 'trigger'. */
  trigger: string | null;
  position: { lat: number; lon: number; accuracyM?: number | null } | null;
  recordingId: string | null;
  /** When the console received it. */
  raisedAt: string;
  /** Emergency: who the camera says acknowledged it (officer.emergency_acknowledged). */
  acknowledgedBy: string | null;
  acknowledgedAt: string | null;
  /** Emergency: cleared by the wearer (a false alarm) or an operator (officer.emergency_cleared). */
  clearedBy: 'wearer' | 'operator' | null;
  clearedOperator: string | null;
  clearedAt: string | null;
  /** Watch-me: the operator whose officer-request live view answered it. */
  answeredBy: string | null;
  answeredAt: string | null;
}

export type NewOfficerAlert = Pick<OfficerAlert, 'deviceId' | 'alertId' | 'kind' | 'at' | 'source' | 'trigger' | 'position' | 'recordingId'>;

export interface OfficerAlertStore {
  /** Stores a new one; a repeat of one held (at-least-once delivery) returns it unchanged with `repeat`. */
  raise(a: NewOfficerAlert): Promise<{ alert: OfficerAlert; repeat: boolean }>;
  /** Undefined when there is no such alert; the first acknowledgement is kept. */
  acknowledge(deviceId: string, alertId: string, by: string, at: string): Promise<OfficerAlert | undefined>;
  clear(deviceId: string, alertId: string, by: 'wearer' | 'operator', operator: string | null, at: string): Promise<OfficerAlert | undefined>;
  /** Marks the camera's open watch-me requests answered by a live view of this operator; returns those changed. */
  answerWatchMe(deviceId: string, operator: string, at: string): Promise<OfficerAlert[]>;
  /** Newest first (by the camera's time). */
  list(filter?: { deviceId?: string; limit?: number }): Promise<OfficerAlert[]>;
}

// ---- the archive --------------------------------------------------------------------------------

export interface Archive {
  readonly backend: 'sqlite' | 'postgresql';
  readonly alerts: AlertStore;
  readonly officerAlerts: OfficerAlertStore;

  // audit
  /** Stores one entry; checked or not (verification is the chain verifier's, ops-console/chain-verifier.ts). */
  addEntry(deviceId: string, entry: AuditEntry): Promise<EntryOutcome>;
  /** Stores a checkpoint; false when the identical one was there. */
  addCheckpoint(deviceId: string, checkpoint: PublishedCheckpoint): Promise<boolean>;
  /**
   * Entries by seq, fromSeq..toSeq inclusive; for a seq held twice (a conflict), the first stored,
   * or with allVersions every one stored (in the order stored).
   */
  entries(deviceId: string, range?: { fromSeq?: number; toSeq?: number; limit?: number; allVersions?: boolean }): Promise<AuditEntry[]>;
  /** The entry stored at seq with that hash (either side of a conflict), else the first stored. */
  entryAt(deviceId: string, seq: number): Promise<AuditEntry | undefined>;
  checkpoints(deviceId: string, range?: { fromSeq?: number; toSeq?: number }): Promise<PublishedCheckpoint[]>;
  /** The lowest seq above `afterSeq` that is stored, if any (to see where a gap ends). */
  nextStoredSeq(deviceId: string, afterSeq: number): Promise<number | undefined>;
  head(deviceId: string): Promise<VerifiedHead | undefined>;
  setHead(head: VerifiedHead): Promise<void>;
  /** Every camera the archive holds a chain for. */
  heads(): Promise<VerifiedHead[]>;

  // enrolment
  enrol(e: Enrolment): Promise<void>;
  enrolment(deviceId: string): Promise<Enrolment | undefined>;
  enrolments(): Promise<Enrolment[]>;
  unenrol(deviceId: string): Promise<boolean>;

  // events
  addEvent(e: FleetEvent): Promise<void>;
  events(filter: { deviceId?: string; type?: string; from?: string; to?: string; limit?: number }): Promise<FleetEvent[]>;

  // live views
  /** Records a view the camera accepted (deviceId+sid is its key; a repeat is ignored). */
  openLiveView(v: Omit<LiveViewSession, 'endedAt' | 'endCause' | 'endedBy'>): Promise<void>;
  /** Records how a view ended; only the first end is kept. False when no such open view. */
  closeLiveView(deviceId: string, sid: string, end: { at: string; cause: string; by?: string | null; auditSeqs?: number[] }): Promise<boolean>;
  liveViews(filter?: LiveViewFilter): Promise<LiveViewSession[]>;
  openLiveViews(): Promise<LiveViewSession[]>;

  close(): Promise<void>;
}

/** Opens the archive a console option names: `sqlite:FILE` (or a bare path) or `postgres://...` / `postgresql://...`. */
export async function openArchive(spec: string): Promise<Archive> {
  if (/^postgres(ql)?:\/\//.test(spec)) {
    const { PgArchive } = await import('./pg-archive.ts');
    return PgArchive.open(spec);
  }
  const { SqliteArchive } = await import('./sqlite-archive.ts');
  return SqliteArchive.open(spec.replace(/^sqlite:/, ''));
}

export const genesisHead = (deviceId: string, now: string): VerifiedHead => ({
  deviceId, seq: 0, hash: '0'.repeat(64), checkpointSeq: 0, highestSeenSeq: 0, broken: null, updatedAt: now,
});
