// The archive's logic, written once in the SQL both backends speak (`?` placeholders, ON CONFLICT
// DO NOTHING, ISO 8601 text times that sort as they compare): sqlite-archive.ts and pg-archive.ts
// give it a way to run a statement and their DDL, and nothing else, so the two cannot drift apart.
import type { JWK } from 'jose';
import type { AuditEntry } from '../../src/audit/audit-log.ts';
import { canonicalJson } from '../../src/audit/canonical-json.ts';
import type {
  Alert, AlertFilter, AlertStore, Archive, Enrolment, EntryOutcome, FleetEvent, LiveViewFilter, LiveViewSession, NewAlert, NewOfficerAlert, OfficerAlert,
  OfficerAlertStore, PublishedCheckpoint, VerifiedHead,
} from './archive.ts';

export type Row = Record<string, unknown>;

/** Runs one statement with `?` placeholders; resolves to its rows (none for a write). */
export type Query = (sql: string, params?: readonly unknown[]) => Promise<Row[]>;

/** The tables, one statement each; `$ID` is the backend's auto-increment primary key column type. */
export function schemaStatements(id: string): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS audit_entry (id ${id}, device_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, prev_hash TEXT NOT NULL, entry TEXT NOT NULL, received_at TEXT NOT NULL, UNIQUE (device_id, seq, hash))`,
    `CREATE TABLE IF NOT EXISTS audit_checkpoint (id ${id}, device_id TEXT NOT NULL, seq BIGINT NOT NULL, head_hash TEXT NOT NULL, signature TEXT NOT NULL, checkpoint TEXT NOT NULL, received_at TEXT NOT NULL, UNIQUE (device_id, seq, signature))`,
    'CREATE TABLE IF NOT EXISTS chain_head (device_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL, checkpoint_seq BIGINT NOT NULL, highest_seen_seq BIGINT NOT NULL, broken TEXT, updated_at TEXT NOT NULL)',
    'CREATE TABLE IF NOT EXISTS enrolment (device_id TEXT PRIMARY KEY, public_jwk TEXT NOT NULL, kid TEXT NOT NULL, enrolled_by TEXT NOT NULL, enrolled_at TEXT NOT NULL)',
    `CREATE TABLE IF NOT EXISTS fleet_event (id ${id}, device_id TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL, detail TEXT NOT NULL)`,
    'CREATE TABLE IF NOT EXISTS live_view (device_id TEXT NOT NULL, sid TEXT NOT NULL, operator TEXT NOT NULL, unit TEXT, reason TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, end_cause TEXT, ended_by TEXT, audit_seqs TEXT NOT NULL, PRIMARY KEY (device_id, sid))',
    `CREATE TABLE IF NOT EXISTS alerts (id ${id}, rule TEXT NOT NULL, severity TEXT NOT NULL, device_id TEXT, operator TEXT, at TEXT NOT NULL, audit_refs TEXT NOT NULL, detail TEXT NOT NULL, raised_at TEXT NOT NULL, acknowledged_by TEXT, acknowledged_at TEXT)`,
    'CREATE TABLE IF NOT EXISTS officer_alert (device_id TEXT NOT NULL, alert_id TEXT NOT NULL, kind TEXT NOT NULL, at TEXT NOT NULL, source TEXT, trig TEXT, position TEXT, recording_id TEXT, raised_at TEXT NOT NULL, acknowledged_by TEXT, acknowledged_at TEXT, cleared_by TEXT, cleared_operator TEXT, cleared_at TEXT, answered_by TEXT, answered_at TEXT, PRIMARY KEY (device_id, alert_id))',
    'CREATE INDEX IF NOT EXISTS fleet_event_at ON fleet_event (at)',
    'CREATE INDEX IF NOT EXISTS live_view_started ON live_view (started_at)',
    'CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at)',
  ];
}

const num = (v: unknown) => Number(v);
const str = (v: unknown) => (v === null || v === undefined ? null : String(v));
const now = () => new Date().toISOString();

/** WHERE clauses from optional filters; undefined members add nothing. */
function where(parts: [string, unknown][]): { sql: string; params: unknown[] } {
  const used = parts.filter(([, v]) => v !== undefined);
  return { sql: used.length ? ` WHERE ${used.map(([c]) => c).join(' AND ')}` : '', params: used.map(([, v]) => v) };
}

class SqlAlertStore implements AlertStore {
  readonly #q: Query;
  constructor(q: Query) {
    this.#q = q;
  }

  async insert(a: NewAlert): Promise<Alert> {
    const raisedAt = now();
    const rows = await this.#q(
      'INSERT INTO alerts (rule, severity, device_id, operator, at, audit_refs, detail, raised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id',
      [a.rule, a.severity, a.deviceId, a.operator, a.at, JSON.stringify(a.auditRefs), JSON.stringify(a.detail), raisedAt],
    );
    return { ...a, id: num(rows[0]!.id), raisedAt, acknowledgedBy: null, acknowledgedAt: null };
  }

  async list(f: AlertFilter = {}): Promise<Alert[]> {
    const w = where([['at >= ?', f.from], ['at < ?', f.to], ['rule = ?', f.rule], ['device_id = ?', f.deviceId], ['operator = ?', f.operator]]);
    const open = f.acknowledged === undefined ? '' : `acknowledged_at IS ${f.acknowledged ? 'NOT ' : ''}NULL`;
    const sql = open ? (w.sql ? `${w.sql} AND ${open}` : ` WHERE ${open}`) : w.sql;
    const rows = await this.#q(`SELECT * FROM alerts${sql} ORDER BY at DESC, id DESC LIMIT ${Math.max(1, Math.min(f.limit ?? 1000, 100_000))}`, w.params);
    return rows.map(alertOf);
  }

  async acknowledge(id: number, by: string, at = now()): Promise<Alert | undefined> {
    await this.#q('UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL', [by, at, id]);
    const rows = await this.#q('SELECT * FROM alerts WHERE id = ?', [id]);
    return rows[0] ? alertOf(rows[0]) : undefined;
  }
}

function alertOf(r: Row): Alert {
  return {
    id: num(r.id), rule: String(r.rule), severity: r.severity as Alert['severity'], deviceId: str(r.device_id), operator: str(r.operator), at: String(r.at),
    auditRefs: JSON.parse(String(r.audit_refs)) as Alert['auditRefs'], detail: JSON.parse(String(r.detail)) as Record<string, unknown>,
    raisedAt: String(r.raised_at), acknowledgedBy: str(r.acknowledged_by), acknowledgedAt: str(r.acknowledged_at),
  };
}

class SqlOfficerAlertStore implements OfficerAlertStore {
  readonly #q: Query;
  constructor(q: Query) {
    this.#q = q;
  }

  async #get(deviceId: string, alertId: string): Promise<OfficerAlert | undefined> {
    const rows = await this.#q('SELECT * FROM officer_alert WHERE device_id = ? AND alert_id = ?', [deviceId, alertId]);
    return rows[0] ? officerAlertOf(rows[0]) : undefined;
  }

  async raise(a: NewOfficerAlert): Promise<{ alert: OfficerAlert; repeat: boolean }> {
    const rows = await this.#q(
      'INSERT INTO officer_alert (device_id, alert_id, kind, at, source, trig, position, recording_id, raised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING alert_id',
      [a.deviceId, a.alertId, a.kind, a.at, a.source, a.trigger, a.position ? JSON.stringify(a.position) : null, a.recordingId, now()],
    );
    return { alert: (await this.#get(a.deviceId, a.alertId))!, repeat: rows.length === 0 };
  }

  async acknowledge(deviceId: string, alertId: string, by: string, at: string): Promise<OfficerAlert | undefined> {
    await this.#q('UPDATE officer_alert SET acknowledged_by = ?, acknowledged_at = ? WHERE device_id = ? AND alert_id = ? AND acknowledged_at IS NULL', [by, at, deviceId, alertId]);
    return this.#get(deviceId, alertId);
  }

  async clear(deviceId: string, alertId: string, by: 'wearer' | 'operator', operator: string | null, at: string): Promise<OfficerAlert | undefined> {
    await this.#q('UPDATE officer_alert SET cleared_by = ?, cleared_operator = ?, cleared_at = ? WHERE device_id = ? AND alert_id = ? AND cleared_at IS NULL', [by, operator, at, deviceId, alertId]);
    return this.#get(deviceId, alertId);
  }

  async answerWatchMe(deviceId: string, operator: string, at: string): Promise<OfficerAlert[]> {
    const rows = await this.#q("UPDATE officer_alert SET answered_by = ?, answered_at = ? WHERE device_id = ? AND kind = 'watch-me' AND answered_at IS NULL RETURNING alert_id", [operator, at, deviceId]);
    const out: OfficerAlert[] = [];
    for (const r of rows) out.push((await this.#get(deviceId, String(r.alert_id)))!);
    return out;
  }

  async list(f: { deviceId?: string; limit?: number } = {}): Promise<OfficerAlert[]> {
    const w = where([['device_id = ?', f.deviceId]]);
    const rows = await this.#q(`SELECT * FROM officer_alert${w.sql} ORDER BY at DESC, raised_at DESC LIMIT ${Math.max(1, Math.min(f.limit ?? 500, 100_000))}`, w.params);
    return rows.map(officerAlertOf);
  }
}

function officerAlertOf(r: Row): OfficerAlert {
  return {
    deviceId: String(r.device_id), alertId: String(r.alert_id), kind: r.kind as OfficerAlert['kind'], at: String(r.at), source: str(r.source), trigger: str(r.trig),
    position: r.position === null || r.position === undefined ? null : (JSON.parse(String(r.position)) as OfficerAlert['position']), recordingId: str(r.recording_id),
    raisedAt: String(r.raised_at), acknowledgedBy: str(r.acknowledged_by), acknowledgedAt: str(r.acknowledged_at),
    clearedBy: str(r.cleared_by) as OfficerAlert['clearedBy'], clearedOperator: str(r.cleared_operator), clearedAt: str(r.cleared_at),
    answeredBy: str(r.answered_by), answeredAt: str(r.answered_at),
  };
}

export abstract class SqlArchive implements Archive {
  abstract readonly backend: 'sqlite' | 'postgresql';
  readonly alerts: AlertStore;
  readonly officerAlerts: OfficerAlertStore;
  protected readonly q: Query;

  protected constructor(q: Query) {
    this.q = q;
    this.alerts = new SqlAlertStore(q);
    this.officerAlerts = new SqlOfficerAlertStore(q);
  }

  abstract close(): Promise<void>;

  async addEntry(deviceId: string, entry: AuditEntry): Promise<EntryOutcome> {
    const text = canonicalJson(entry);
    const there = await this.q('SELECT hash, entry FROM audit_entry WHERE device_id = ? AND seq = ?', [deviceId, entry.seq]);
    if (there.some((r) => r.entry === text)) return 'duplicate';
    await this.q('INSERT INTO audit_entry (device_id, seq, hash, prev_hash, entry, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING', [
      deviceId, entry.seq, entry.hash, entry.prevHash, text, now(),
    ]);
    return there.length ? 'conflict' : 'new';
  }

  async addCheckpoint(deviceId: string, c: PublishedCheckpoint): Promise<boolean> {
    const rows = await this.q(
      'INSERT INTO audit_checkpoint (device_id, seq, head_hash, signature, checkpoint, received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id',
      [deviceId, c.seq, c.headHash, c.signature, canonicalJson(c), now()],
    );
    return rows.length > 0;
  }

  async entries(deviceId: string, r: { fromSeq?: number; toSeq?: number; limit?: number; allVersions?: boolean } = {}): Promise<AuditEntry[]> {
    const w = where([['device_id = ?', deviceId], ['seq >= ?', r.fromSeq], ['seq <= ?', r.toSeq]]);
    const rows = await this.q(`SELECT seq, entry FROM audit_entry${w.sql} ORDER BY seq, id LIMIT ${Math.max(1, Math.min(r.limit ?? 100_000, 1_000_000))}`, w.params);
    const out: AuditEntry[] = [];
    let last = -1;
    for (const row of rows) {
      if (num(row.seq) === last && !r.allVersions) continue; // the first stored of a conflict
      last = num(row.seq);
      out.push(JSON.parse(String(row.entry)) as AuditEntry);
    }
    return out;
  }

  async entryAt(deviceId: string, seq: number): Promise<AuditEntry | undefined> {
    const rows = await this.q('SELECT entry FROM audit_entry WHERE device_id = ? AND seq = ? ORDER BY id LIMIT 1', [deviceId, seq]);
    return rows[0] ? (JSON.parse(String(rows[0].entry)) as AuditEntry) : undefined;
  }

  async checkpoints(deviceId: string, r: { fromSeq?: number; toSeq?: number } = {}): Promise<PublishedCheckpoint[]> {
    const w = where([['device_id = ?', deviceId], ['seq >= ?', r.fromSeq], ['seq <= ?', r.toSeq]]);
    const rows = await this.q(`SELECT checkpoint FROM audit_checkpoint${w.sql} ORDER BY seq, id`, w.params);
    return rows.map((row) => JSON.parse(String(row.checkpoint)) as PublishedCheckpoint);
  }

  async nextStoredSeq(deviceId: string, afterSeq: number): Promise<number | undefined> {
    const rows = await this.q('SELECT MIN(seq) AS seq FROM audit_entry WHERE device_id = ? AND seq > ?', [deviceId, afterSeq]);
    return rows[0]?.seq === null || rows[0]?.seq === undefined ? undefined : num(rows[0].seq);
  }

  async head(deviceId: string): Promise<VerifiedHead | undefined> {
    const rows = await this.q('SELECT * FROM chain_head WHERE device_id = ?', [deviceId]);
    return rows[0] ? headOf(rows[0]) : undefined;
  }

  async heads(): Promise<VerifiedHead[]> {
    return (await this.q('SELECT * FROM chain_head ORDER BY device_id')).map(headOf);
  }

  async setHead(h: VerifiedHead): Promise<void> {
    await this.q(
      'INSERT INTO chain_head (device_id, seq, hash, checkpoint_seq, highest_seen_seq, broken, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ' +
        'ON CONFLICT (device_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, checkpoint_seq = excluded.checkpoint_seq, highest_seen_seq = excluded.highest_seen_seq, broken = excluded.broken, updated_at = excluded.updated_at',
      [h.deviceId, h.seq, h.hash, h.checkpointSeq, h.highestSeenSeq, h.broken ? JSON.stringify(h.broken) : null, h.updatedAt],
    );
  }

  async enrol(e: Enrolment): Promise<void> {
    await this.q(
      'INSERT INTO enrolment (device_id, public_jwk, kid, enrolled_by, enrolled_at) VALUES (?, ?, ?, ?, ?) ' +
        'ON CONFLICT (device_id) DO UPDATE SET public_jwk = excluded.public_jwk, kid = excluded.kid, enrolled_by = excluded.enrolled_by, enrolled_at = excluded.enrolled_at',
      [e.deviceId, JSON.stringify(e.publicJwk), e.kid, e.enrolledBy, e.enrolledAt],
    );
  }

  async enrolment(deviceId: string): Promise<Enrolment | undefined> {
    const rows = await this.q('SELECT * FROM enrolment WHERE device_id = ?', [deviceId]);
    return rows[0] ? enrolmentOf(rows[0]) : undefined;
  }

  async enrolments(): Promise<Enrolment[]> {
    return (await this.q('SELECT * FROM enrolment ORDER BY device_id')).map(enrolmentOf);
  }

  async unenrol(deviceId: string): Promise<boolean> {
    return (await this.q('DELETE FROM enrolment WHERE device_id = ? RETURNING device_id', [deviceId])).length > 0;
  }

  async addEvent(e: FleetEvent): Promise<void> {
    await this.q('INSERT INTO fleet_event (device_id, type, at, detail) VALUES (?, ?, ?, ?)', [e.deviceId, e.type, e.at, JSON.stringify(e.detail)]);
  }

  async events(f: { deviceId?: string; type?: string; from?: string; to?: string; limit?: number }): Promise<FleetEvent[]> {
    const w = where([['device_id = ?', f.deviceId], ['type = ?', f.type], ['at >= ?', f.from], ['at < ?', f.to]]);
    const rows = await this.q(`SELECT * FROM fleet_event${w.sql} ORDER BY at, id LIMIT ${Math.max(1, Math.min(f.limit ?? 10_000, 1_000_000))}`, w.params);
    return rows.map((r) => ({ id: num(r.id), deviceId: String(r.device_id), type: String(r.type), at: String(r.at), detail: JSON.parse(String(r.detail)) as Record<string, unknown> }));
  }

  async openLiveView(v: Omit<LiveViewSession, 'endedAt' | 'endCause' | 'endedBy'>): Promise<void> {
    await this.q(
      'INSERT INTO live_view (device_id, sid, operator, unit, reason, started_at, audit_seqs) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING',
      [v.deviceId, v.sid, v.operator, v.unit, v.reason, v.startedAt, JSON.stringify(v.auditSeqs)],
    );
  }

  async closeLiveView(deviceId: string, sid: string, end: { at: string; cause: string; by?: string | null; auditSeqs?: number[] }): Promise<boolean> {
    const rows = await this.q('SELECT audit_seqs FROM live_view WHERE device_id = ? AND sid = ? AND ended_at IS NULL', [deviceId, sid]);
    if (!rows[0]) return false;
    const seqs = [...new Set([...(JSON.parse(String(rows[0].audit_seqs)) as number[]), ...(end.auditSeqs ?? [])])].sort((a, b) => a - b);
    const done = await this.q('UPDATE live_view SET ended_at = ?, end_cause = ?, ended_by = ?, audit_seqs = ? WHERE device_id = ? AND sid = ? AND ended_at IS NULL RETURNING sid', [
      end.at, end.cause, end.by ?? null, JSON.stringify(seqs), deviceId, sid,
    ]);
    return done.length > 0;
  }

  async liveViews(f: LiveViewFilter = {}): Promise<LiveViewSession[]> {
    // A view belongs to the period when it overlaps it.
    const w = where([['(ended_at IS NULL OR ended_at >= ?)', f.from], ['started_at < ?', f.to], ['operator = ?', f.operator], ['device_id = ?', f.deviceId], ['unit = ?', f.unit]]);
    return (await this.q(`SELECT * FROM live_view${w.sql} ORDER BY started_at, device_id, sid`, w.params)).map(liveViewOf);
  }

  async openLiveViews(): Promise<LiveViewSession[]> {
    return (await this.q('SELECT * FROM live_view WHERE ended_at IS NULL ORDER BY started_at')).map(liveViewOf);
  }
}

function headOf(r: Row): VerifiedHead {
  return {
    deviceId: String(r.device_id), seq: num(r.seq), hash: String(r.hash), checkpointSeq: num(r.checkpoint_seq), highestSeenSeq: num(r.highest_seen_seq),
    broken: r.broken === null || r.broken === undefined ? null : (JSON.parse(String(r.broken)) as VerifiedHead['broken']), updatedAt: String(r.updated_at),
  };
}

function enrolmentOf(r: Row): Enrolment {
  return { deviceId: String(r.device_id), publicJwk: JSON.parse(String(r.public_jwk)) as JWK, kid: String(r.kid), enrolledBy: String(r.enrolled_by), enrolledAt: String(r.enrolled_at) };
}

function liveViewOf(r: Row): LiveViewSession {
  return {
    deviceId: String(r.device_id), sid: String(r.sid), operator: String(r.operator), unit: str(r.unit), reason: String(r.reason), startedAt: String(r.started_at),
    endedAt: str(r.ended_at), endCause: str(r.end_cause), endedBy: str(r.ended_by), auditSeqs: JSON.parse(String(r.audit_seqs)) as number[],
  };
}
