// The officer in the loop (issue 19; docs/protocol.md, "Officer alerts and bookmarks"): what the
// wearer's gestures (officer.buttons), the trigger inputs (officer.triggers) and the MCU's fall
// detector mean, and the signed alert.ack and recording.bookmark commands.
//
// - Watch me: records, tells the fleet (officer.watch_me, with the last position) and the wearer
//   (watch-me-sent). The camera opens nothing by itself: a supervisor still sends a signed
//   stream.start (reason officer-request), and the wearer feels stream-start when it connects.
// - Emergency: records, raises the alert (officer.emergency), GPS every officer.emergencyGpsInterval
//   until cleared, by a supervisor (alert.ack with clear) or by the wearer (the emergency gesture
//   again: a false alarm). The wearer feels raised, acknowledged and cleared.
// - Triggers: each audited with its source; "record" starts a recording (never stops one), "alert"
//   raises an emergency.
// - Bookmarks: a mark in the running recording (its manifest), or an event alone when none runs.
// - What is watched is recorded (stream.whileNotRecording): beforeStream() runs where a stream.start
//   is accepted.
// Every decision is an audit entry of the same type as its event, written before the event is sent.
// The emergency and watch-me state live in memory: a restart (e.g. a crash) clears them, the audit
// and the events keep what happened.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { TRIGGER_SOURCE_PATTERN, type ButtonId, type ButtonPress, type FirmwareBridgeEvents, type NotificationPattern } from '../../firmware-bridge/src/interface.ts';
import type { Extension } from '../agent/extension.ts';
import type { AuditRecord } from '../audit/audit-log.ts';
import { isAuthorisedCommand, type AuthorisedCommand } from '../command/authorised-command.ts';
import type { ActionResult } from '../command/command-handler.ts';
import type { AgentConfig } from '../config/schema.ts';
import type { MarkRequest, RecordResult, RecordTrigger } from '../recording/recorder.ts';
import type { DeviceState, DeviceStateDoc, OfficerState } from '../state/device-state.ts';
import { errorMessage } from '../errors.ts';

/**
 * The codes an alert.ack reply can refuse with here (the verifier's come on top); declared so the
 * ops console's words are checked against them (test/console-words.test.ts).
 */
export const officerRefusalCodes = ['unknown_alert'] as const;
type OfficerResult = Extract<ActionResult, { ok: true }> | { ok: false; code: (typeof officerRefusalCodes)[number] | 'not_recording'; message: string };

export type OfficerConfig = AgentConfig['officer'];
export type Meaning = OfficerConfig['buttons'][string];

export interface Position {
  lat: number;
  lon: number;
  accuracyM: number | null;
}

export interface OfficerExtensionOptions {
  config: OfficerConfig;
  /** stream.whileNotRecording. */
  whileNotRecording: 'start-recording' | 'refuse';
  bridge: Pick<EventEmitter<FirmwareBridgeEvents>, 'on' | 'off'>;
  recorder: {
    start(trigger: RecordTrigger): RecordResult;
    status(): { recording: boolean; recordingId: string | null };
    mark(m: MarkRequest): { recordingId: string; offsetS: number; time: string } | null;
  };
  audit: { append(record: AuditRecord): unknown };
  sendEvent: (body: Record<string, unknown>) => void;
  state: Pick<DeviceState, 'update' | 'snapshot' | 'on' | 'off'>;
  /** The wearer's patterns (FirmwareExtension.notify). */
  wearer: { notify(pattern: NotificationPattern): void };
  /** GpsExtension.setEmergencyInterval. */
  gps: { setEmergencyInterval(seconds: number | null): void };
  logger: Logger;
}

const newId = (prefix: string) => `${prefix}-${randomBytes(6).toString('hex')}`;

export class OfficerExtension implements Extension {
  readonly name = 'officer';
  readonly #o: OfficerExtensionOptions;
  readonly #log: Logger;
  #state: OfficerState = { emergency: null, watchMe: null };
  #watchMeTimer: NodeJS.Timeout | undefined;

  readonly #onButton = ({ button, press }: { button: ButtonId; press: ButtonPress }) => this.#guard('button', () => this.#gesture(button, press));
  readonly #onTrigger = ({ source }: { source: string }) => this.#guard('trigger', () => this.#trigger(source));
  readonly #onFall = () => this.#guard('fall', () => this.#fall());
  readonly #onStateChanged = (doc: DeviceStateDoc) => this.#liveViewsChanged(doc);

  constructor(options: OfficerExtensionOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'officer' });
  }

  start(): void {
    this.#o.bridge.on('button', this.#onButton);
    this.#o.bridge.on('trigger', this.#onTrigger);
    this.#o.bridge.on('fall', this.#onFall);
    this.#o.state.on('changed', this.#onStateChanged);
    this.#publish();
  }

  stop(): void {
    this.#o.bridge.off('button', this.#onButton);
    this.#o.bridge.off('trigger', this.#onTrigger);
    this.#o.bridge.off('fall', this.#onFall);
    this.#o.state.off('changed', this.#onStateChanged);
    clearTimeout(this.#watchMeTimer);
  }

  get officerState(): OfficerState {
    return this.#state;
  }

  // ---- the wearer's side -------------------------------------------------------------------

  #gesture(button: ButtonId, press: ButtonPress): void {
    // record:press and record:long are the firmware extension's (start, and stop, a recording).
    if (button === 'record' && (press === 'press' || press === 'long')) return;
    const meaning: Meaning = this.#o.config.buttons[`${button}:${press}`] ?? 'none';
    if (meaning === 'none') return;
    this.#log.info({ button, press, meaning }, 'officer gesture');
    if (meaning === 'bookmark') this.bookmark('button');
    else if (meaning === 'watch-me') this.#watchMe();
    else if (this.#state.emergency) this.#clear('wearer', null);
    else this.#raise('button');
  }

  #watchMe(): void {
    const requestId = newId('wm');
    const recordingId = this.#record({ kind: 'watch-me' });
    const position = this.#position();
    this.#auditAndEvent('officer.watch_me', null, { requestId, position, recordingId });
    this.#o.wearer.notify('watch-me-sent');
    clearTimeout(this.#watchMeTimer);
    this.#watchMeTimer = setTimeout(() => this.#endWatchMe(requestId, 'expired'), this.#o.config.watchMeExpiry * 1000);
    this.#watchMeTimer.unref();
    this.#update({ watchMe: { requestId, since: new Date().toISOString() } });
    // A live view with reason officer-request already connected answers this request at once.
    this.#liveViewsChanged(this.#o.state.snapshot());
  }

  #endWatchMe(requestId: string, why: string): void {
    if (this.#state.watchMe?.requestId !== requestId) return;
    clearTimeout(this.#watchMeTimer);
    this.#log.info({ requestId, why }, 'watch-me request ended');
    this.#update({ watchMe: null });
  }

  /** A live view with reason officer-request connected: the watch-me request is answered. */
  #liveViewsChanged(doc: DeviceStateDoc): void {
    const w = this.#state.watchMe;
    if (w && doc.streaming.list.some((s) => s.reason === 'officer-request' && s.state === 'connected')) this.#endWatchMe(w.requestId, 'a live view with reason officer-request connected');
  }

  #trigger(rawSource: string): void {
    // The bridge checks the pattern already; a source that does not fit is audited under a safe name.
    const source = TRIGGER_SOURCE_PATTERN.test(rawSource) ? rawSource : 'invalid';
    const actions = this.#o.config.triggers[source] ?? [];
    const recordingId = actions.includes('record') ? this.#record({ kind: 'trigger', source }) : this.#o.recorder.status().recordingId;
    this.#auditAndEvent('officer.trigger', null, { source, actions, recordingId });
    if (actions.length === 0) this.#log.warn({ source }, 'trigger input with no action configured (officer.triggers): audited, ignored');
    if (actions.includes('alert') && !this.#state.emergency) this.#raise('trigger', source);
  }

  #fall(): void {
    if (!this.#o.config.fallIsEmergency) {
      this.#log.info('fall detected; officer.fallIsEmergency is false: audited only');
      this.#audit('officer.fall', null, { emergency: false });
      return;
    }
    if (this.#state.emergency) this.#log.info({ alertId: this.#state.emergency.alertId }, 'fall detected during an emergency already raised');
    else this.#raise('fall');
  }

  #raise(source: 'button' | 'fall' | 'trigger', trigger?: string): void {
    const alertId = newId('alert');
    const recordingId = this.#record({ kind: 'emergency', alertId });
    const position = this.#position();
    this.#auditAndEvent('officer.emergency', null, { alertId, source, ...(trigger ? { trigger } : {}), position, recordingId });
    this.#o.wearer.notify('emergency-raised');
    this.#o.gps.setEmergencyInterval(this.#o.config.emergencyGpsInterval);
    this.#update({ emergency: { alertId, since: new Date().toISOString(), source, ...(trigger ? { trigger } : {}), acknowledgedBy: null } });
  }

  #clear(by: 'wearer' | 'operator', command: AuthorisedCommand | null): void {
    const e = this.#state.emergency;
    if (!e) return;
    this.#auditAndEvent('officer.emergency_cleared', command, { alertId: e.alertId, by, operator: command?.operator ?? null });
    this.#o.wearer.notify('emergency-cleared');
    this.#o.gps.setEmergencyInterval(null);
    this.#update({ emergency: null });
  }

  // ---- signed commands ---------------------------------------------------------------------

  /** The alert.ack action: only the open alert's id; with clear the emergency ends. */
  ack(command: AuthorisedCommand): OfficerResult {
    if (!isAuthorisedCommand(command) || command.action !== 'alert.ack') throw new TypeError('alert.ack needs its AuthorisedCommand from the command verifier');
    const e = this.#state.emergency;
    const alertId = command.alertId ?? '';
    if (!e || e.alertId !== alertId) {
      return { ok: false, code: 'unknown_alert', message: `no open emergency ${JSON.stringify(alertId)}${e ? '' : ' (none is raised)'}` };
    }
    this.#auditAndEvent('officer.emergency_acknowledged', command, { alertId, operator: command.operator });
    this.#o.wearer.notify('emergency-acknowledged');
    this.#update({ emergency: { ...e, acknowledgedBy: command.operator } });
    if (command.clear) this.#clear('operator', command);
    return { ok: true, alertId, cleared: command.clear };
  }

  /** The recording.bookmark action, or the bookmark gesture (no command). */
  bookmark(source: 'button'): void;
  bookmark(source: 'command', command: AuthorisedCommand): OfficerResult;
  bookmark(source: 'button' | 'command', command?: AuthorisedCommand): OfficerResult | void {
    if (source === 'command' && (!isAuthorisedCommand(command) || command.action !== 'recording.bookmark')) throw new TypeError('recording.bookmark needs its AuthorisedCommand from the command verifier');
    const markId = newId('mark');
    const operator = command?.operator ?? null;
    const note = command?.note ?? null;
    const marked = this.#o.recorder.mark({ markId, source, operator, note });
    this.#auditAndEvent('recording.bookmark', command ?? null, { markId, recordingId: marked?.recordingId ?? null, offsetS: marked?.offsetS ?? null, source, operator, note });
    this.#o.wearer.notify('bookmark');
    if (source === 'command') return { ok: true, markId, recordingId: marked?.recordingId ?? null };
  }

  /**
   * Where a stream.start is accepted (StreamManager): what is watched is recorded. Starts a
   * recording (trigger stream) when none runs, or refuses (`not_recording`) under "refuse";
   * undefined lets the live view go on.
   */
  beforeStream(sid: string, command: AuthorisedCommand): { ok: false; code: 'not_recording'; message: string } | undefined {
    if (this.#o.recorder.status().recording) return undefined;
    if (this.#o.whileNotRecording === 'refuse') {
      return { ok: false, code: 'not_recording', message: 'the camera is not recording, and stream.whileNotRecording is "refuse": a live view only while recording' };
    }
    this.#o.recorder.start({ kind: 'stream', sid, command });
    return undefined;
  }

  // ---- plumbing ----------------------------------------------------------------------------

  /** Starts a recording (or finds the running one): its id, null if it could not start. */
  #record(trigger: RecordTrigger): string | null {
    try {
      const r = this.#o.recorder.start(trigger);
      return r.ok ? r.recordingId : null;
    } catch (err) {
      this.#log.error({ err: errorMessage(err), trigger: trigger.kind }, 'recording could not start');
      return null;
    }
  }

  #position(): Position | null {
    const g = this.#o.state.snapshot().gps;
    return g && g.lat !== null && g.lon !== null ? { lat: g.lat, lon: g.lon, accuracyM: g.accuracyM } : null;
  }

  #audit(type: string, command: AuthorisedCommand | null, detail: Record<string, unknown>): void {
    try {
      this.#o.audit.append({
        type,
        operator: command?.operator ?? null,
        action: command?.action ?? null,
        reason: command?.reason ?? null,
        tokenDigest: command?.tokenDigest ?? null,
        detail,
      });
    } catch (err) {
      // The alert matters more than its audit row: the event still goes out, the failure is logged.
      this.#log.error({ err: errorMessage(err), type }, 'officer audit entry could not be committed');
    }
  }

  #auditAndEvent(type: string, command: AuthorisedCommand | null, body: Record<string, unknown>): void {
    this.#audit(type, command, body);
    this.#log.info({ type, ...body }, type);
    this.#o.sendEvent({ type, time: new Date().toISOString(), ...body });
  }

  #update(change: Partial<OfficerState>): void {
    this.#state = { ...this.#state, ...change };
    this.#publish();
  }

  #publish(): void {
    this.#o.state.update({ officer: this.#state });
  }

  #guard(what: string, f: () => void): void {
    try {
      f();
    } catch (err) {
      this.#log.error({ err: errorMessage(err), what }, 'officer input could not be handled');
    }
  }
}
