// The misuse rules: the "monitored for any unauthorised use" half of the live-view promise. A pure
// engine over typed inputs (the camera's own audit entries, its states and events, and time ticks)
// that raises alerts, each naming the audit entries behind it, through an AlertSink. It reads only
// what cameras publish (the camera's audit is the record of who viewed what, why and for how long)
// plus the console's own directory of operators (unit, shift) and of cameras' units. No I/O and no
// clock of its own: every input carries its time, so a test replays a shift exactly.
//
// The watch-me request (issue 19: the officer wearing the camera asks the control room to watch)
// counts only as the camera's own audit entry `officer.watch_me`, which reaches the rules after the
// chain verifier checked it: the same request also comes as an event on `<root>/<deviceId>/event`,
// but that topic is not signed, and a forged event there must not cover a pretext `officer-request`
// view (test/attacks/console-officer.test.ts).
//
// Alert has the shape of the archive's NewAlert (ops-console/archive/archive.ts on the archive
// branch): its AlertStore is an AlertSink as it is, and MemoryAlertStore below stands in until it
// is merged.
import type { AuditEntry } from '../src/audit/audit-log.ts';
import { inShift, parseShift, type Shift } from './roles.ts';

export type AlertSeverity = 'info' | 'warning' | 'critical';

export interface NewAlert {
  /** A RuleName here; a string as the archive stores it (its own alarms have other names). */
  rule: string;
  severity: AlertSeverity;
  deviceId: string | null;
  operator: string | null;
  /** When what the alert is about happened (ISO 8601). */
  at: string;
  /** The camera audit entries behind it. */
  auditRefs: { deviceId: string; seq: number }[];
  /** `summary` in words, and whatever the rule measured. */
  detail: Record<string, unknown>;
}

export interface Alert extends NewAlert {
  id: number;
  raisedAt: string;
  acknowledgedBy: string | null;
  acknowledgedAt: string | null;
}

/** Where alerts go: the archive's AlertStore, or MemoryAlertStore. */
export interface AlertSink {
  insert(alert: NewAlert): Promise<Alert> | Alert;
}

export const ruleNames = [
  'too_many_cameras', 'too_many_views', 'out_of_unit', 'long_view', 'covert_view',
  'officer_request_unasked', 'outside_shift', 'refusal_burst', 'silent_while_recording',
] as const;
export type RuleName = (typeof ruleNames)[number];

export interface RulesConfig {
  /** Distinct cameras one operator may view in a shift before an alert. */
  maxCamerasPerShift: number;
  /** Views one operator may start in a shift before an alert. */
  maxViewsPerShift: number;
  /** A live view longer than this (minutes) raises an alert. */
  maxViewMinutes: number;
  /** A covert view always raises an alert (for review), unless false. */
  alertCovert: boolean;
  /** The reason code that claims the officer asked to be watched. */
  officerRequestReason: string;
  /** How long before the view (minutes) the officer's officer.watch_me (its audit entry) must have come. */
  officerRequestWindowMin: number;
  /** Refused commands on one camera within refusalWindowS that make a probing burst. */
  refusalBurst: number;
  refusalWindowS: number;
  /** A recording camera not heard from for this long (seconds) raises an alert. */
  silentAfterS: number;
  /** An operator with no shift in users.json is counted over this many hours. */
  defaultShiftHours: number;
  /** Each camera's unit (the force's own list; an enrolment record later). */
  cameraUnits: Record<string, string>;
  /** Rules switched off by name. */
  disabled: RuleName[];
}

export const defaultRulesConfig: RulesConfig = {
  maxCamerasPerShift: 5,
  maxViewsPerShift: 10,
  maxViewMinutes: 30,
  alertCovert: true,
  officerRequestReason: 'officer-request',
  officerRequestWindowMin: 15,
  refusalBurst: 5,
  refusalWindowS: 60,
  silentAfterS: 300,
  defaultShiftHours: 12,
  cameraUnits: {},
  disabled: [],
};

/** Reads a rules file's JSON over the defaults; the error names the bad key. */
export function parseRulesConfig(value: unknown, where = 'rules'): RulesConfig {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${where}: expected a JSON object`);
  const out: Record<string, unknown> = { ...defaultRulesConfig };
  for (const [k, v] of Object.entries(value)) {
    const d = (defaultRulesConfig as unknown as Record<string, unknown>)[k];
    if (d === undefined) throw new Error(`${where}: unknown key ${JSON.stringify(k)} (known: ${Object.keys(defaultRulesConfig).join(', ')})`);
    if (typeof d === 'number' && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw new Error(`${where}: ${k} must be a number above 0 (got ${JSON.stringify(v)})`);
    if (typeof d === 'boolean' && typeof v !== 'boolean') throw new Error(`${where}: ${k} must be true or false`);
    if (typeof d === 'string' && typeof v !== 'string') throw new Error(`${where}: ${k} must be a string`);
    if (k === 'cameraUnits' && (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.values(v).every((u) => typeof u === 'string'))) throw new Error(`${where}: cameraUnits must map device ids to unit names`);
    if (k === 'disabled' && (!Array.isArray(v) || !v.every((r) => (ruleNames as readonly string[]).includes(r)))) throw new Error(`${where}: disabled must list rule names (${ruleNames.join(', ')})`);
    out[k] = v;
  }
  return out as unknown as RulesConfig;
}

/** The console's operators as the rules need them. */
export interface OperatorInfo {
  unit: string | null;
  shift: string | null;
}

export type RuleInput =
  | { kind: 'audit'; deviceId: string; entry: AuditEntry }
  | { kind: 'state'; deviceId: string; at: string; online: boolean; recording: boolean }
  | { kind: 'event'; deviceId: string; at: string; type: string }
  | { kind: 'tick'; at: string };

interface OpenView {
  deviceId: string;
  sid: string;
  operator: string;
  startSeq: number;
  startedAt: number;
  longAlerted: boolean;
}

const ms = (iso: string) => Date.parse(iso);
const minuteOfDay = (t: number) => {
  const d = new Date(t);
  return d.getHours() * 60 + d.getMinutes();
};

export class MisuseRules {
  readonly #c: RulesConfig;
  readonly #operator: (id: string) => OperatorInfo | undefined;
  readonly #sink: AlertSink;
  readonly #views = new Map<string, OpenView>();
  /** Per operator: the views started (time, camera, start entry), oldest first; pruned past a day. */
  readonly #started = new Map<string, { at: number; deviceId: string; seq: number }[]>();
  /** Thresholds already alerted: `${rule}|${operator}|${windowStart}`. */
  readonly #alerted = new Set<string>();
  readonly #watchMe = new Map<string, number[]>();
  readonly #refusals = new Map<string, { at: number; seq: number }[]>();
  readonly #cameras = new Map<string, { lastHeard: number; recording: boolean; online: boolean; silentAlerted: boolean }>();

  constructor(config: RulesConfig, operator: (id: string) => OperatorInfo | undefined, sink: AlertSink) {
    this.#c = config;
    this.#operator = operator;
    this.#sink = sink;
  }

  /** Feeds one input; returns the alerts it raised (already handed to the sink). */
  feed(input: RuleInput): NewAlert[] {
    const out: NewAlert[] = [];
    const raise = (a: NewAlert) => {
      if (this.#c.disabled.includes(a.rule as RuleName)) return;
      out.push(a);
      void Promise.resolve(this.#sink.insert(a)).catch(() => {});
    };
    if (input.kind === 'tick') this.#tick(ms(input.at), raise);
    else {
      const at = input.kind === 'audit' ? ms(input.entry.time) : ms(input.at);
      this.#heard(input.deviceId, Number.isFinite(at) ? at : undefined);
      if (input.kind === 'audit') this.#audit(input.deviceId, input.entry, raise);
      else if (input.kind === 'state') this.#state(input, raise);
      // An event only says the camera was heard from; officer.watch_me counts from the audit (above).
    }
    return out;
  }

  #heard(deviceId: string, at: number | undefined): void {
    const cam = this.#cameras.get(deviceId) ?? { lastHeard: 0, recording: false, online: true, silentAlerted: false };
    if (at !== undefined && at > cam.lastHeard) cam.lastHeard = at;
    cam.silentAlerted = false;
    this.#cameras.set(deviceId, cam);
  }

  #state(s: Extract<RuleInput, { kind: 'state' }>, raise: (a: NewAlert) => void): void {
    const cam = this.#cameras.get(s.deviceId)!;
    if (!s.online && cam.online && cam.recording) {
      raise({
        rule: 'silent_while_recording', severity: 'warning', deviceId: s.deviceId, operator: null, at: s.at, auditRefs: [],
        detail: { summary: `${s.deviceId} went offline while recording` },
      });
      cam.silentAlerted = true;
    }
    cam.online = s.online;
    // The Will (offline) says nothing of recording: the camera is taken as still recording.
    if (s.online) cam.recording = s.recording;
  }

  #audit(deviceId: string, e: AuditEntry, raise: (a: NewAlert) => void): void {
    const at = ms(e.time);
    if (!Number.isFinite(at)) return;
    const detail = (e.detail ?? {}) as Record<string, unknown>;
    const ref = { deviceId, seq: e.seq };
    if (e.type === 'officer.watch_me') {
      const list = (this.#watchMe.get(deviceId) ?? []).filter((t) => at - t < 86_400_000);
      list.push(at);
      this.#watchMe.set(deviceId, list);
    } else if (e.type === 'stream.start' && typeof e.operator === 'string' && typeof detail.sid === 'string') {
      this.#viewStarted(deviceId, e, detail, at, raise);
    } else if (e.type === 'stream.stop' && typeof detail.sid === 'string') {
      const view = this.#views.get(`${deviceId}/${detail.sid}`);
      this.#views.delete(`${deviceId}/${detail.sid}`);
      const seconds = typeof detail.durationS === 'number' ? detail.durationS : view ? (at - view.startedAt) / 1000 : undefined;
      if (view && !view.longAlerted && seconds !== undefined && seconds > this.#c.maxViewMinutes * 60) {
        raise(this.#longView(view, e.time, seconds, [{ deviceId, seq: view.startSeq }, ref]));
      }
    } else if (e.type === 'command.decision' && e.decision === 'rejected') {
      const window = this.#c.refusalWindowS * 1000;
      const list = (this.#refusals.get(deviceId) ?? []).filter((r) => at - r.at < window);
      list.push({ at, seq: e.seq });
      if (list.length >= this.#c.refusalBurst) {
        raise({
          rule: 'refusal_burst', severity: 'warning', deviceId, operator: null, at: e.time,
          auditRefs: list.map((r) => ({ deviceId, seq: r.seq })),
          detail: { summary: `${list.length} refused commands on ${deviceId} within ${this.#c.refusalWindowS} s (someone probing?)`, refused: list.length, codes: e.code },
        });
        list.length = 0;
      }
      this.#refusals.set(deviceId, list);
    }
  }

  #viewStarted(deviceId: string, e: AuditEntry, detail: Record<string, unknown>, at: number, raise: (a: NewAlert) => void): void {
    const operator = e.operator!;
    const ref = { deviceId, seq: e.seq };
    const view: OpenView = { deviceId, sid: String(detail.sid), operator, startSeq: e.seq, startedAt: at, longAlerted: false };
    this.#views.set(`${deviceId}/${view.sid}`, view);
    const who = this.#operator(operator);
    const shift = who?.shift ? parseShift(who.shift) : undefined;
    const base = { deviceId, operator, at: e.time };

    if (detail.covert === true && this.#c.alertCovert) {
      raise({ ...base, rule: 'covert_view', severity: 'warning', auditRefs: [ref], detail: { summary: `${operator} started a covert view of ${deviceId} (${e.reason})`, reason: e.reason } });
    }
    const cameraUnit = this.#c.cameraUnits[deviceId];
    if (who?.unit && cameraUnit && who.unit !== cameraUnit) {
      raise({ ...base, rule: 'out_of_unit', severity: 'warning', auditRefs: [ref], detail: { summary: `${operator} (unit ${who.unit}) viewed ${deviceId} of unit ${cameraUnit}`, operatorUnit: who.unit, cameraUnit } });
    }
    if (shift && !inShift(shift, minuteOfDay(at))) {
      raise({ ...base, rule: 'outside_shift', severity: 'warning', auditRefs: [ref], detail: { summary: `${operator} started a view of ${deviceId} outside their shift (${who!.shift})`, shift: who!.shift } });
    }
    if (e.reason === this.#c.officerRequestReason) {
      const asked = (this.#watchMe.get(deviceId) ?? []).some((t) => t <= at && at - t <= this.#c.officerRequestWindowMin * 60_000);
      if (!asked) {
        raise({ ...base, rule: 'officer_request_unasked', severity: 'critical', auditRefs: [ref], detail: { summary: `${operator} gave "${e.reason}" for a view of ${deviceId}, but its officer sent no officer.watch_me in the ${this.#c.officerRequestWindowMin} min before`, windowMin: this.#c.officerRequestWindowMin } });
      }
    }

    const windowStart = this.#shiftStart(at, shift);
    const started = (this.#started.get(operator) ?? []).filter((v) => at - v.at < 86_400_000);
    started.push({ at, deviceId, seq: e.seq });
    this.#started.set(operator, started);
    const inWindow = started.filter((v) => v.at >= windowStart);
    const refs = inWindow.map((v) => ({ deviceId: v.deviceId, seq: v.seq }));
    const once = (rule: RuleName) => {
      const key = `${rule}|${operator}|${windowStart}`;
      if (this.#alerted.has(key)) return false;
      this.#alerted.add(key);
      return true;
    };
    if (inWindow.length > this.#c.maxViewsPerShift && once('too_many_views')) {
      raise({ ...base, rule: 'too_many_views', severity: 'warning', auditRefs: refs, detail: { summary: `${operator} started ${inWindow.length} views this shift (more than ${this.#c.maxViewsPerShift})`, views: inWindow.length } });
    }
    const cameras = new Set(inWindow.map((v) => v.deviceId));
    if (cameras.size > this.#c.maxCamerasPerShift && once('too_many_cameras')) {
      raise({ ...base, rule: 'too_many_cameras', severity: 'warning', auditRefs: refs, detail: { summary: `${operator} viewed ${cameras.size} cameras this shift (more than ${this.#c.maxCamerasPerShift})`, cameras: [...cameras] } });
    }
  }

  /** The start of the shift `at` falls in (the operator's own), else of the rolling default window. */
  #shiftStart(at: number, shift: Shift | undefined): number {
    if (!shift || !inShift(shift, minuteOfDay(at))) return at - this.#c.defaultShiftHours * 3_600_000;
    const d = new Date(at);
    d.setHours(Math.floor(shift.startMin / 60), shift.startMin % 60, 0, 0);
    if (d.getTime() > at) d.setDate(d.getDate() - 1);
    return d.getTime();
  }

  #longView(view: OpenView, at: string, seconds: number, refs: { deviceId: string; seq: number }[]): NewAlert {
    view.longAlerted = true;
    return {
      rule: 'long_view', severity: 'warning', deviceId: view.deviceId, operator: view.operator, at, auditRefs: refs,
      detail: { summary: `${view.operator}'s view ${view.sid} of ${view.deviceId} ran ${Math.round(seconds / 60)} min (more than ${this.#c.maxViewMinutes})`, seconds: Math.round(seconds) },
    };
  }

  #tick(now: number, raise: (a: NewAlert) => void): void {
    for (const view of this.#views.values()) {
      const seconds = (now - view.startedAt) / 1000;
      if (!view.longAlerted && seconds > this.#c.maxViewMinutes * 60) raise(this.#longView(view, new Date(now).toISOString(), seconds, [{ deviceId: view.deviceId, seq: view.startSeq }]));
    }
    for (const [deviceId, cam] of this.#cameras) {
      if (cam.recording && cam.online && !cam.silentAlerted && cam.lastHeard > 0 && now - cam.lastHeard > this.#c.silentAfterS * 1000) {
        cam.silentAlerted = true;
        raise({
          rule: 'silent_while_recording', severity: 'warning', deviceId, operator: null, at: new Date(now).toISOString(), auditRefs: [],
          detail: { summary: `${deviceId} was recording and has not reported for ${Math.round((now - cam.lastHeard) / 1000)} s`, lastHeard: new Date(cam.lastHeard).toISOString() },
        });
      }
    }
  }
}

/** An AlertStore in memory (the archive's AlertStore replaces it; same methods). */
export class MemoryAlertStore implements AlertSink {
  readonly #alerts: Alert[] = [];
  readonly #max: number;
  #next = 1;

  constructor(max = 10_000) {
    this.#max = max;
  }

  insert(alert: NewAlert): Alert {
    const a: Alert = { ...alert, id: this.#next++, raisedAt: new Date().toISOString(), acknowledgedBy: null, acknowledgedAt: null };
    this.#alerts.push(a);
    if (this.#alerts.length > this.#max) this.#alerts.shift();
    return a;
  }

  /** Newest first. */
  list(filter: { acknowledged?: boolean; limit?: number } = {}): Alert[] {
    return this.#alerts.filter((a) => filter.acknowledged === undefined || (a.acknowledgedBy !== null) === filter.acknowledged).reverse().slice(0, filter.limit ?? 1000);
  }

  /** An alert acknowledged already keeps its first acknowledgement. */
  acknowledge(id: number, by: string, at = new Date().toISOString()): Alert | undefined {
    const a = this.#alerts.find((x) => x.id === id);
    if (a && a.acknowledgedBy === null) Object.assign(a, { acknowledgedBy: by, acknowledgedAt: at });
    return a;
  }
}
