// The recording state machine and the evidence index.
//
// States: idle (capture not running) -> buffering (capture running, nobody records) -> recording
// -> buffering. The capture worker writes every segment, recording or not, into the buffer
// folder; recording means keeping them. A segment joins a recording by rename(2) into the
// recording's folder, is hashed there (streamed), and gets an index row chained to the previous
// segment's hash. Only buffer segments are ever deleted, and only segments this process was told
// about and did not give to a recording.
//
// Decisions:
// - Pre-event at segment granularity: on start, every buffered segment that overlaps the window
//   [now - preEventS, now] joins, so the evidence covers at least preEventS (up to one segment
//   more). Rotation while buffering deletes a segment once it ends before now - preEventS, the
//   same rule, so whatever a start can select is still there.
// - Stop: the segment being written at stop time belongs to the recording. stop() answers at once
//   (state recording: false, audit, event); the recording is "closing" until the next segment
//   that started before the stop arrives, then it is closed and its manifest signed. A segment
//   that started at or after the stop, capture stopping, or stopGraceMs without a segment close
//   it without waiting further.
// - Position "at the start" of a segment is the position sampled when the previous segment closed
//   (the moment this one started); for the first segment after capture starts, the one sampled on
//   its arrival.
// - Every segment is handled in arrival order on one queue (decisions are taken synchronously on
//   arrival, the file work follows), so the chain is never raced.
// - After a crash a 'recording' row becomes 'interrupted': files in its folder that are not
//   indexed (the crash fell between rename and insert) and segments the capture left in the buffer
//   folder are indexed with recovered = 1, a manifest is signed with status 'interrupted', and a
//   new recording linked by resumed_from starts as soon as capture runs. A recording whose stop
//   had already been asked is not resumed.
// - A worker that dies mid-segment never closes it: the recorder remembers files reported by
//   'segment-opened' and, when told capture stopped (captureRunning(false)), treats each one never
//   closed as a partial segment (end time from the file's mtime, indexed with recovered = 1).
// - Wiring: construct the Recorder before capture starts (it takes stock of the buffer folder
//   left by the previous process), point the supervisor's segmentDir at recorder.bufferDir, and
//   call captureRunning() on each supervisor status change.
// - Recording never stops for storage: a segment that cannot be moved, hashed or indexed is an
//   event (recording.segment_failed) and the next one is tried. The low-space warning is the
//   health extension's storage.low event. If the audit entry for a start cannot be committed the
//   recording starts anyway (losing evidence is worse) and the failure is logged and an event.
// - Encryption at rest (options.encryption, src/recording/encryption.ts): the capture writes into
//   captureDir, a tmpfs folder; each closed segment is first encrypted into the buffer folder
//   (`<name>.ts.age`) and its plaintext unlinked, as the first queued job of that segment, so every
//   decision above works on ciphertext and nothing in the clear reaches the disk. Positions are
//   then kept out of the index and the manifest: the open recording's track is a JSON-lines file
//   in tmpfs, re-encrypted to track.json.age in the recording folder after each segment (a power
//   cut loses at most the last segment's position) and listed with its hash in the manifest.
//   Plaintext segments found in captureDir at start (RAM survives a kill -9) are encrypted first.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { appendFile, mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AuditRecord } from '../audit/audit-log.ts';
import { canonicalJson } from '../audit/canonical-json.ts';
import { isAuthorisedCommand, type AuthorisedCommand } from '../command/authorised-command.ts';
import type { SegmentInfo } from '../capture/protocol.ts';
import type { DeviceKey } from '../keys/device-key.ts';
import type { Db } from '../store/database.ts';
import { bufferDirOf, isManifestName, manifestFile, newRecordingId, parseSegmentFileName, plaintextSegmentsDirOf, recordingsDirOf, segmentExt, segmentFileName, segmentRelPath, signatureFile, trackFile } from './layout.ts';
import { buildManifest, genesisSha256, hashFile, manifestDigest, markRows, segmentRows, type Manifest, type ManifestExtras, type ManifestTalk, type RecordingRow } from './manifest.ts';
import type { TalkEvidence, TalkSpurtDetail } from '../stream/talkback.ts';
import { ageSuffix, EncryptionThread, encryptTextFile } from './encryption.ts';
import { errorMessage } from '../errors.ts';

/** What the capture supervisor reports for each closed segment: the capture protocol declares it. */
export type { SegmentInfo };

export interface OpenedSegment {
  file: string;
  startedAt: string;
}

/**
 * The capture side, as the recorder sees it (CaptureSupervisor fits). 'segment-opened' lets the
 * recorder keep a segment whose worker died before closing it: when capture stops (see
 * captureRunning), an opened file never reported closed is handled as a partial segment.
 */
export interface SegmentSource {
  on(event: 'segment', listener: (s: SegmentInfo) => void): unknown;
  on(event: 'segment-opened', listener: (s: OpenedSegment) => void): unknown;
  off(event: 'segment', listener: (s: SegmentInfo) => void): unknown;
  off(event: 'segment-opened', listener: (s: OpenedSegment) => void): unknown;
}

export type RecordTrigger =
  | { kind: 'ctl' | 'button' }
  | { kind: 'command'; command: AuthorisedCommand }
  // The officer in the loop (src/officer/officer-extension.ts): these start a recording, never stop one.
  | { kind: 'watch-me' }
  | { kind: 'emergency'; alertId: string }
  | { kind: 'trigger'; source: string }
  /** A live view on a camera not recording (stream.whileNotRecording "start-recording"): the stream.start command. */
  | { kind: 'stream'; sid: string; command: AuthorisedCommand };

/** A bookmark the recorder keeps with the running recording (docs/evidence.md, "Marks"). */
export interface MarkRequest {
  markId: string;
  source: 'button' | 'command';
  operator: string | null;
  note: string | null;
}

export type RecorderStateName = 'idle' | 'buffering' | 'recording';

export interface RecorderStatus {
  state: RecorderStateName;
  recording: boolean;
  recordingId: string | null;
  /** A stopped recording still waiting for the segment that was open at stop. */
  closingId: string | null;
  preEventS: number;
  preEventAudio: boolean;
}

/** The codes a record.start or record.stop reply can refuse with (the ops console's words are checked against them). */
export const recordRefusalCodes = ['not_recording'] as const;
export type RecordResult = { ok: true; recordingId: string; already?: boolean } | { ok: false; code: (typeof recordRefusalCodes)[number]; message: string };

export interface RecorderOptions {
  db: Db;
  /** The evidence folder (layout.ts: `<stateDir>/evidence`); buffer/ and recordings/ go inside. */
  evidenceDir: string;
  deviceId: string;
  deviceKey: DeviceKey;
  source: SegmentSource;
  audit: { append(record: AuditRecord): unknown };
  link: { send(channel: 'event', body: object): void };
  /** Receives `recording` at once on every change (DeviceState.update fits). */
  state?: { update(change: { recording: boolean }): void };
  position?: () => { lat: number; lon: number } | null;
  /** Seconds of buffer that become the start of a recording: 0-120, default 30. */
  preEventS?: number;
  /** Whether the pre-event buffer carries audio (the capture side decides; recorded in the manifest). */
  preEventAudio?: boolean;
  /** How long a stopped recording waits for the segment open at stop; default 10 s. */
  stopGraceMs?: number;
  /**
   * Encrypt every segment and the GPS track to these age X25519 recipients; the capture then writes
   * into `<plaintextDir>/segments` (captureDir), which must be tmpfs (the agent checks). Without
   * it segments are written into the buffer folder in the clear (recording.encryption.enabled: false).
   */
  encryption?: { recipients: readonly string[]; plaintextDir: string };
  logger: Logger;
  now?: () => Date;
}

interface Buffered {
  info: SegmentInfo;
  endMs: number;
  position: { lat: number; lon: number } | null;
}

interface Active {
  id: string;
  dir: string;
  preEventS: number;
  nextIdx: number;
  head: string;
  stopAtMs?: number;
  closeTimer?: NodeJS.Timeout;
}

/**
 * kind: the stored column (its CHECK allows ctl, button, command, resume); fine: what the audit,
 * the event and the manifest name when finer (watch-me, emergency, trigger, stream) with its
 * public detail (source, sid, alertId); detail: what the audit adds (the command's jti...).
 */
type TriggerColumns = {
  kind: 'ctl' | 'button' | 'command';
  fine?: { kind: 'watch-me' | 'emergency' | 'trigger' | 'stream'; detail: Record<string, unknown> };
  operator: string | null;
  reason: string | null;
  detail: Record<string, unknown>;
};

export class Recorder extends EventEmitter<{ state: [RecorderStatus] }> {
  readonly bufferDir: string;
  /** Where the capture writes segments: the buffer folder, or with encryption the tmpfs folder. */
  readonly captureDir: string;
  readonly #tracksDir: string | undefined;
  readonly #encryptor: EncryptionThread | undefined;
  readonly recordingsDir: string;
  readonly #o: RecorderOptions;
  readonly #log: Logger;
  readonly #now: () => Date;
  readonly #preEventS: number;
  readonly #preEventAudio: boolean;
  readonly #stopGraceMs: number;
  #captureRunning = false;
  #state: RecorderStateName = 'idle';
  #buffer: Buffered[] = [];
  #active: Active | undefined;
  #closing: Active[] = [];
  #resumeFrom: string | undefined;
  #nextStartPosition: { lat: number; lon: number } | null | undefined;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;
  #emittedRecording = false;
  readonly #onSegment = (s: SegmentInfo) => this.#segment(s);
  readonly #onOpened = (s: OpenedSegment) => this.#opened(s);
  /** Opened by the capture and not yet reported closed. */
  #openFiles = new Map<string, string>();
  /** Talk-back spurts stored in each recording not yet sealed (its manifest's `talk`). */
  readonly #talk = new Map<string, ManifestTalk[]>();

  constructor(o: RecorderOptions) {
    super();
    this.#o = o;
    this.#log = o.logger.child({ module: 'recorder' });
    this.#now = o.now ?? (() => new Date());
    this.#preEventS = o.preEventS ?? 30;
    if (!(this.#preEventS >= 0 && this.#preEventS <= 120)) throw new RangeError(`preEventS must be 0-120 seconds (got ${this.#preEventS})`);
    this.#preEventAudio = o.preEventAudio ?? false;
    this.#stopGraceMs = o.stopGraceMs ?? 10_000;
    this.bufferDir = bufferDirOf(o.evidenceDir);
    this.recordingsDir = recordingsDirOf(o.evidenceDir);
    this.captureDir = o.encryption ? plaintextSegmentsDirOf(o.encryption.plaintextDir) : this.bufferDir;
    this.#tracksDir = o.encryption ? path.join(o.encryption.plaintextDir, 'tracks') : undefined;
    this.#encryptor = o.encryption ? new EncryptionThread() : undefined;
    mkdirSync(this.bufferDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.recordingsDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.captureDir, { recursive: true, mode: 0o700 });
    if (this.#tracksDir) mkdirSync(this.#tracksDir, { recursive: true, mode: 0o700 });
    this.#recoverAfterCrash();
    o.source.on('segment', this.#onSegment);
    o.source.on('segment-opened', this.#onOpened);
  }

  status(): RecorderStatus {
    return {
      state: this.#state,
      recording: this.#active !== undefined,
      recordingId: this.#active?.id ?? null,
      closingId: this.#closing.at(-1)?.id ?? null,
      preEventS: this.#preEventS,
      preEventAudio: this.#preEventAudio,
    };
  }

  /**
   * Starts a recording (a no-op answering the current id if one runs). A command trigger must be
   * an AuthorisedCommand made by the verifier for record.start: anything else throws.
   */
  start(trigger: RecordTrigger): RecordResult {
    const t = this.#trigger(trigger, 'record.start');
    if (this.#active) return { ok: true, recordingId: this.#active.id, already: true };
    const id = this.#begin(t, null);
    return { ok: true, recordingId: id };
  }

  /** Stops the recording: state at once, the manifest once the segment open now has closed. */
  stop(trigger: RecordTrigger): RecordResult {
    // A trigger input, a watch-me or an emergency starts recordings; nothing of the officer's stops one.
    if (trigger.kind !== 'ctl' && trigger.kind !== 'button' && trigger.kind !== 'command') throw new TypeError(`a ${trigger.kind} trigger cannot stop a recording`);
    const t = this.#trigger(trigger, 'record.stop');
    const rec = this.#active;
    if (!rec) return { ok: false, code: 'not_recording', message: 'no recording is running' };
    const stopAt = this.#now();
    rec.stopAtMs = stopAt.getTime();
    this.#o.db
      .prepare('UPDATE recording SET stopped_at = ?, stop_trigger = ?, stop_operator = ?, stop_reason = ? WHERE id = ?')
      .run(stopAt.toISOString(), t.kind, t.operator, t.reason, rec.id);
    this.#active = undefined;
    this.#closing.push(rec);
    this.#refreshState();
    this.#auditAndEvent(
      { type: 'recording.stop', operator: t.operator, reason: t.reason, action: 'record.stop', detail: { recordingId: rec.id, preEventS: rec.preEventS, trigger: t.kind, ...t.detail } },
      { type: 'recording.stopped', time: stopAt.toISOString(), recordingId: rec.id, trigger: t.kind, operator: t.operator, reason: t.reason },
    );
    if (!this.#captureRunning) this.#close(rec);
    else {
      rec.closeTimer = setTimeout(() => this.#close(rec), this.#stopGraceMs);
      rec.closeTimer.unref();
    }
    return { ok: true, recordingId: rec.id };
  }

  /** Resolves when every segment, recovery and manifest queued so far is done. */
  async flush(): Promise<void> {
    let seen: Promise<void>;
    do {
      seen = this.#queue;
      await seen;
    } while (seen !== this.#queue);
  }

  /**
   * Stops listening and waits for queued work. A running recording is left 'recording': the next
   * start finds it, marks it interrupted and resumes (a shutdown does not end evidence).
   */
  async close(): Promise<void> {
    this.#closed = true;
    this.#o.source.off('segment', this.#onSegment);
    this.#o.source.off('segment-opened', this.#onOpened);
    for (const rec of this.#closing) clearTimeout(rec.closeTimer);
    await this.flush();
    await this.#encryptor?.close();
  }

  // ---- triggers and transitions -------------------------------------------------------------

  /**
   * Marks the moment in the running recording (the mark goes into its manifest when sealed);
   * null when none runs (a stopped one waiting for its last segment does not take marks).
   */
  mark(m: MarkRequest): { recordingId: string; offsetS: number; time: string } | null {
    const rec = this.#active;
    if (!rec) return null;
    const now = this.#now();
    const started = this.#o.db.prepare<[string], { started_at: string }>('SELECT started_at FROM recording WHERE id = ?').get(rec.id)!.started_at;
    const offsetS = Math.round((now.getTime() - Date.parse(started)) / 100) / 10;
    this.#o.db
      .prepare('INSERT INTO recording_mark (mark_id, recording_id, time, offset_s, source, operator, note) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(m.markId, rec.id, now.toISOString(), offsetS, m.source, m.operator, m.note);
    return { recordingId: rec.id, offsetS, time: now.toISOString() };
  }

  #trigger(trigger: RecordTrigger, action: 'record.start' | 'record.stop'): TriggerColumns {
    if (trigger.kind === 'ctl' || trigger.kind === 'button') return { kind: trigger.kind, operator: null, reason: null, detail: {} };
    // The wearer's gestures and the trigger inputs are the wearer's side: stored as 'button'.
    if (trigger.kind === 'watch-me') return { kind: 'button', fine: { kind: 'watch-me', detail: {} }, operator: null, reason: null, detail: {} };
    if (trigger.kind === 'emergency') return { kind: 'button', fine: { kind: 'emergency', detail: { alertId: trigger.alertId } }, operator: null, reason: null, detail: {} };
    if (trigger.kind === 'trigger') return { kind: 'button', fine: { kind: 'trigger', detail: { source: trigger.source } }, operator: null, reason: null, detail: {} };
    if (trigger.kind === 'stream') {
      const c: unknown = trigger.command;
      if (!isAuthorisedCommand(c) || c.action !== 'stream.start') throw new TypeError('a stream trigger needs the AuthorisedCommand of its stream.start');
      return { kind: 'command', fine: { kind: 'stream', detail: { sid: trigger.sid } }, operator: c.operator, reason: c.reason, detail: { issuer: c.issuer, jti: c.jti, tokenDigest: c.tokenDigest } };
    }
    if (trigger.kind === 'command') {
      const c: unknown = trigger.command;
      // Static types can be cast around; only the verifier's own instances carry authority.
      if (!isAuthorisedCommand(c)) throw new TypeError('a command trigger needs an AuthorisedCommand from the command verifier');
      if (c.action !== action) throw new TypeError(`an AuthorisedCommand for ${c.action} cannot ${action}`);
      return { kind: 'command', operator: c.operator, reason: c.reason, detail: { issuer: c.issuer, jti: c.jti, tokenDigest: c.tokenDigest } };
    }
    throw new TypeError(`unknown recording trigger ${String((trigger as { kind?: unknown }).kind)}`);
  }

  #begin(t: TriggerColumns | { kind: 'resume'; operator: null; reason: null; detail: Record<string, unknown> }, resumedFrom: string | null): string {
    const now = this.#now();
    const fine = 'fine' in t ? t.fine : undefined;
    const id = newRecordingId(now, randomBytes(4).toString('hex'));
    const dir = path.join(this.recordingsDir, id);
    this.#o.db
      .prepare(
        `INSERT INTO recording (id, started_at, status, resumed_from, trigger, operator, reason, pre_event_s, pre_event_audio, trigger_kind, trigger_detail)
         VALUES (?, ?, 'recording', ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(id, now.toISOString(), resumedFrom, t.kind, t.operator, t.reason, this.#preEventS, this.#preEventAudio ? 1 : 0, fine?.kind ?? null, fine ? JSON.stringify(fine.detail) : null);
    const rec: Active = { id, dir, preEventS: this.#preEventS, nextIdx: 0, head: genesisSha256 };
    this.#active = rec;
    // Taken now, in order: the segments overlapping the window become the recording's first.
    const fromMs = now.getTime() - this.#preEventS * 1000;
    const pre = this.#buffer.filter((b) => b.endMs > fromMs);
    const expired = this.#buffer.filter((b) => b.endMs <= fromMs);
    this.#buffer = [];
    this.#refreshState();
    const kind = fine?.kind ?? t.kind;
    const detail = { recordingId: id, preEventS: this.#preEventS, preEventAudio: this.#preEventAudio, trigger: kind, ...fine?.detail, preEventSegments: pre.length, resumedFrom, ...t.detail };
    this.#auditAndEvent(
      { type: 'recording.start', operator: t.operator, reason: t.reason, action: fine?.kind === 'stream' ? 'stream.start' : 'record.start', detail },
      { type: 'recording.started', time: now.toISOString(), recordingId: id, trigger: kind, ...fine?.detail, operator: t.operator, reason: t.reason, preEventS: this.#preEventS, preEventAudio: this.#preEventAudio, resumedFrom },
    );
    this.#enqueue(async () => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await fsyncDir(this.recordingsDir);
    });
    for (const b of pre) this.#enqueue(() => this.#join(rec, b.info, b.position));
    this.#enqueue(() => this.#deleteBuffered(expired.map((b) => b.info.file)));
    return id;
  }

  /**
   * Whether the capture pipeline runs (the supervisor's status is 'running'). A segment arriving
   * also counts as running. When it stops, a segment it opened and never closed (the worker died)
   * is kept as a partial segment: it joins the recording it belongs to, or the buffer.
   */
  captureRunning(running: boolean): void {
    this.#running(running);
  }

  #running(running: boolean): void {
    if (this.#closed) return;
    this.#captureRunning = running;
    if (running) {
      this.#refreshState();
      this.#maybeResume();
      return;
    }
    const nowMs = this.#now().getTime();
    for (const [file, startedAt] of this.#openFiles) {
      const durationS = Math.max(0, (nowMs - Date.parse(startedAt)) / 1000);
      this.#route({ file, startedAt, endedAt: new Date(nowMs).toISOString(), durationS }, true);
    }
    this.#openFiles.clear();
    this.#nextStartPosition = undefined;
    this.#refreshState();
    // Nothing more will come for a recording waiting on its last segment.
    for (const rec of [...this.#closing]) this.#close(rec);
  }

  #maybeResume(): void {
    if (this.#resumeFrom === undefined || this.#active) return;
    const from = this.#resumeFrom;
    this.#resumeFrom = undefined;
    this.#begin({ kind: 'resume', operator: null, reason: null, detail: {} }, from);
  }

  #opened(s: OpenedSegment): void {
    if (this.#closed) return;
    if (!this.#captureRunning) this.#running(true);
    this.#openFiles.set(s.file, s.startedAt);
  }

  #segment(s: SegmentInfo): void {
    if (this.#closed) return;
    // A segment proves capture runs, whether or not that was reported.
    if (!this.#captureRunning) this.#running(true);
    this.#openFiles.delete(s.file);
    this.#route(s, false);
  }

  /** Decides now, in arrival order, where a closed (or partial) segment goes; the file work is queued. */
  #route(plain: SegmentInfo, partial: boolean): void {
    const s = this.#encryptFirst(plain);
    const position = this.#nextStartPosition !== undefined ? this.#nextStartPosition : this.#position();
    this.#nextStartPosition = this.#position();
    const startMs = Date.parse(s.startedAt);
    // The oldest closing recording claims a segment that was open when it was stopped.
    while (this.#closing.length > 0) {
      const rec = this.#closing[0]!;
      if (startMs < rec.stopAtMs!) {
        this.#enqueue(() => this.#join(rec, s, position, partial));
        this.#close(rec);
        return;
      }
      this.#close(rec);
    }
    if (this.#active) {
      const rec = this.#active;
      this.#enqueue(() => this.#join(rec, s, position, partial));
      return;
    }
    this.#buffer.push({ info: s, endMs: Date.parse(s.endedAt), position });
    const fromMs = this.#now().getTime() - this.#preEventS * 1000;
    const expired = this.#buffer.filter((b) => b.endMs <= fromMs);
    if (expired.length > 0) {
      this.#buffer = this.#buffer.filter((b) => b.endMs > fromMs);
      this.#enqueue(() => this.#deleteBuffered(expired.map((b) => b.info.file)));
    }
  }

  /** With encryption, queues the segment's encryption into the buffer folder and names the ciphertext. */
  #encryptFirst(s: SegmentInfo): SegmentInfo {
    if (!this.#o.encryption || path.dirname(s.file) !== this.captureDir) return s;
    const encrypted = path.join(this.bufferDir, `${path.basename(s.file)}${ageSuffix}`);
    this.#enqueue(() => this.#encryptSegment(s.file, encrypted));
    return { ...s, file: encrypted };
  }

  async #encryptSegment(plain: string, encrypted: string): Promise<void> {
    try {
      await this.#encryptor!.encrypt(plain, encrypted, this.#o.encryption!.recipients);
      await fsyncDir(this.bufferDir);
      await unlink(plain);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !existsSync(plain)) return; // never written (a worker that died at once)
      // The plaintext stays in RAM: the next start encrypts it again. The segment's later jobs find no ciphertext and say so.
      this.#log.error({ err: errorMessage(err), file: plain }, 'segment could not be encrypted');
      this.#event({ type: 'recording.segment_failed', time: this.#now().toISOString(), file: plain, error: `encryption: ${errorMessage(err)}` });
    }
  }

  #close(rec: Active): void {
    const i = this.#closing.indexOf(rec);
    if (i < 0) return;
    this.#closing.splice(i, 1);
    clearTimeout(rec.closeTimer);
    this.#emitState();
    this.#enqueue(() => this.#seal(rec.id, 'closed'));
  }

  // ---- file work (on the queue) -------------------------------------------------------------

  async #join(rec: Active, info: SegmentInfo, position: { lat: number; lon: number } | null, partial = false): Promise<void> {
    let s = info;
    if (partial) {
      // Its real end is when the dead worker last wrote it.
      const st = statSync(s.file, { throwIfNoEntry: false });
      if (!st) {
        this.#log.info({ file: s.file }, 'a segment opened by a worker that died was never written');
        return;
      }
      const endMs = Math.max(Date.parse(s.startedAt), st.mtimeMs);
      s = { ...s, endedAt: new Date(endMs).toISOString(), durationS: (endMs - Date.parse(s.startedAt)) / 1000 };
    }
    const name = segmentFileName(rec.nextIdx, s.startedAt, s.durationS, segmentExt(s.file));
    const dest = path.join(rec.dir, name);
    try {
      // Moved first: from here on the file is out of the buffer's reach whatever happens next.
      await rename(s.file, dest);
      await fsyncDir(rec.dir);
      await this.#index(rec, name, s, position, partial);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), file: s.file, recordingId: rec.id }, 'segment could not join the recording');
      this.#event({ type: 'recording.segment_failed', time: this.#now().toISOString(), recordingId: rec.id, file: s.file, error: errorMessage(err) });
    }
  }

  async #index(rec: Active, name: string, s: SegmentInfo, position: { lat: number; lon: number } | null, recovered: boolean): Promise<void> {
    const { sha256, bytes } = await hashFile(path.join(rec.dir, name));
    // With encryption the position goes into the encrypted track only, never into the index.
    const track = this.#o.encryption ? position : null;
    if (this.#o.encryption) position = null;
    this.#o.db
      .prepare(
        `INSERT INTO evidence_segment (recording_id, idx, file, started_at, ended_at, duration_s, lat, lon, sha256, prev_sha256, bytes, recovered)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(rec.id, rec.nextIdx, segmentRelPath(rec.id, name), s.startedAt, s.endedAt, s.durationS, position?.lat ?? null, position?.lon ?? null, sha256, rec.head, bytes, recovered ? 1 : 0);
    if (track) await this.#addToTrack(rec.id, { index: rec.nextIdx, startedAt: s.startedAt, endedAt: s.endedAt, lat: track.lat, lon: track.lon });
    rec.head = sha256;
    rec.nextIdx += 1;
  }

  #trackPlainFile(id: string): string {
    return path.join(this.#tracksDir!, `${id}.jsonl`);
  }

  /** Appends a position to the recording's track in RAM and re-encrypts the whole track to disk. */
  async #addToTrack(id: string, point: { index: number; startedAt: string; endedAt: string; lat: number; lon: number }): Promise<void> {
    try {
      await appendFile(this.#trackPlainFile(id), `${JSON.stringify(point)}\n`, { mode: 0o600 });
      await this.#writeTrack(id);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), recordingId: id }, 'GPS track could not be written');
    }
  }

  /** track.json.age from the track in RAM; false when RAM holds none (a power cut, or no position). */
  async #writeTrack(id: string): Promise<boolean> {
    let lines: string;
    try {
      lines = await readFile(this.#trackPlainFile(id), 'utf8');
    } catch {
      return false;
    }
    const points = lines.split('\n').filter((l) => l !== '').flatMap((l) => {
      try {
        return [JSON.parse(l) as unknown];
      } catch {
        return []; // a line cut by a kill -9
      }
    });
    const text = JSON.stringify({ version: 1, recordingId: id, deviceId: this.#o.deviceId, points });
    const dir = path.join(this.recordingsDir, id);
    await encryptTextFile(text, path.join(dir, trackFile), this.#o.encryption!.recipients);
    await fsyncDir(dir);
    return true;
  }

  /**
   * Talk-back evidence (src/stream/talkback.ts): a spurt that begins while this records is written
   * as Ogg/Opus by the playback (in RAM with encryption, else straight into the recording folder),
   * then encrypted like a segment, hashed, audited (`recording.talk_stored`) and listed in the
   * recording's manifest. A spurt still running when the manifest is sealed is audited with its
   * hash but not in the manifest (inManifest: false).
   */
  talkEvidence(): TalkEvidence {
    return {
      open: (spurt) => {
        const rec = this.#active;
        if (!rec) return null;
        const plainDir = this.#o.encryption ? path.join(this.#o.encryption.plaintextDir, 'talk') : rec.dir;
        mkdirSync(plainDir, { recursive: true, mode: 0o700 });
        return { recordingId: rec.id, file: path.join(plainDir, `talk-${spurt}.ogg`) };
      },
      store: (recordingId, file, detail) =>
        new Promise<void>((resolve) => {
          this.#enqueue(async () => {
            await this.#storeTalk(recordingId, file, detail);
            resolve();
          });
        }),
    };
  }

  async #storeTalk(recordingId: string, plain: string, d: TalkSpurtDetail): Promise<void> {
    const dir = path.join(this.recordingsDir, recordingId);
    const name = `talk-${d.spurt}.ogg${this.#o.encryption ? ageSuffix : ''}`;
    const dest = path.join(dir, name);
    try {
      if (!existsSync(plain)) throw new Error('the playback wrote no file');
      if (this.#o.encryption) {
        await this.#encryptor!.encrypt(plain, dest, this.#o.encryption.recipients);
        await unlink(plain);
      }
      await fsyncDir(dir);
      const { sha256, bytes } = await hashFile(dest);
      const entry: ManifestTalk = { file: segmentRelPath(recordingId, name), sha256, bytes, ...d };
      const sealed = this.#o.db.prepare<[string], { manifest: string | null }>('SELECT manifest FROM recording WHERE id = ?').get(recordingId)?.manifest != null;
      if (!sealed) this.#talk.set(recordingId, [...(this.#talk.get(recordingId) ?? []), entry]);
      this.#appendAudit({ type: 'recording.talk_stored', operator: d.operator, detail: { recordingId, ...entry, inManifest: !sealed } });
    } catch (err) {
      this.#log.error({ err: errorMessage(err), recordingId, file: plain }, 'talk-back audio could not be stored with the recording');
      this.#event({ type: 'recording.segment_failed', time: this.#now().toISOString(), recordingId, file: plain, error: `talk-back: ${errorMessage(err)}` });
    }
  }

  /** What the manifest says about encryption and the track: hashed as stored. */
  async #manifestExtras(id: string): Promise<ManifestExtras> {
    const talk = this.#talk.get(id);
    this.#talk.delete(id);
    if (!this.#o.encryption) return talk ? { talk } : {};
    const encryption = { format: 'age-v1' as const, recipients: [...this.#o.encryption.recipients] };
    await this.#writeTrack(id);
    const file = path.join(this.recordingsDir, id, trackFile);
    if (!existsSync(file)) return { encryption, track: null, ...(talk ? { talk } : {}) };
    const { sha256, bytes } = await hashFile(file);
    return { encryption, track: { file: segmentRelPath(id, trackFile), sha256, bytes }, ...(talk ? { talk } : {}) };
  }

  async #deleteBuffered(files: string[]): Promise<void> {
    for (const file of files) {
      try {
        await unlink(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#log.warn({ err: errorMessage(err), file }, 'buffer segment could not be deleted');
      }
    }
  }

  /** Builds the manifest from the index, signs it, stores it, writes manifest.json/.sig. */
  async #seal(id: string, status: Manifest['status']): Promise<void> {
    try {
      const db = this.#o.db;
      const row = db.prepare<[string], RecordingRow>('SELECT * FROM recording WHERE id = ?').get(id)!;
      const segments = segmentRows(db, id);
      const stoppedAt = status === 'closed' ? row.stopped_at : (segments.at(-1)?.ended_at ?? row.started_at);
      const manifest = buildManifest(row, status, stoppedAt, segments, this.#o.deviceId, this.#o.deviceKey.kid, await this.#manifestExtras(id), markRows(db, id));
      const text = canonicalJson(manifest);
      const sig = this.#o.deviceKey.sign(text);
      db.prepare('UPDATE recording SET status = ?, stopped_at = ?, manifest = ?, manifest_sig = ?, kid = ? WHERE id = ?').run(status, stoppedAt, text, sig, this.#o.deviceKey.kid, id);
      // The audit chain names every sealed recording with its manifest's digest, so `evidence
      // verify` finds a recording deleted whole (folder and rows), or a manifest rebuilt and
      // re-signed with the device key from the SD card. After the commit above, before the files:
      // a crash in between leaves the files to the next start, which writes them from the row.
      const manifestSha256 = manifestDigest(text);
      this.#appendAudit({ type: 'recording.sealed', detail: { recordingId: id, status, manifestSha256, segments: segments.length, chainHead: manifest.chainHead, kid: this.#o.deviceKey.kid } });
      await this.#writeManifestFiles(path.join(this.recordingsDir, id), text, sig);
      const durationS = segments.reduce((sum, s) => sum + s.duration_s, 0);
      if (this.#tracksDir) await unlink(this.#trackPlainFile(id)).catch(() => undefined);
      this.#event({ type: status === 'closed' ? 'recording.closed' : 'recording.sealed_interrupted', time: this.#now().toISOString(), recordingId: id, segments: segments.length, durationS, chainHead: manifest.chainHead, manifestSha256 });
    } catch (err) {
      this.#log.error({ err: errorMessage(err), recordingId: id }, 'recording manifest could not be written');
      this.#event({ type: 'recording.manifest_failed', time: this.#now().toISOString(), recordingId: id, error: errorMessage(err) });
    }
  }

  async #writeManifestFiles(dir: string, text: string, sig: string): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    for (const [name, content] of [[manifestFile, text], [signatureFile, `${sig}\n`]] as const) {
      const tmp = path.join(dir, `.${name}.tmp`);
      await writeFile(tmp, content, { mode: 0o600, flush: true });
      await rename(tmp, path.join(dir, name));
    }
    await fsyncDir(dir);
  }

  // ---- crash recovery -----------------------------------------------------------------------

  #recoverAfterCrash(): void {
    const db = this.#o.db;
    // Taken before capture can add anything: what the buffer held when the last process died.
    const leftovers = readdirSync(this.bufferDir)
      .filter((n) => !n.startsWith('.'))
      .map((n) => path.join(this.bufferDir, n))
      .filter((f) => statSync(f, { throwIfNoEntry: false })?.isFile() === true);
    // Interrupted encryptions leave temporary files; the plaintext they came from is still in RAM.
    for (const n of readdirSync(this.bufferDir).filter((n) => n.startsWith('.') && n.endsWith('.tmp'))) {
      this.#enqueue(() => unlink(path.join(this.bufferDir, n)).catch(() => undefined));
    }
    // With encryption: plaintext segments a killed process left in RAM are encrypted first, and
    // their ciphertext counts as a buffer leftover. (A power cut empties tmpfs: nothing to do.)
    if (this.#o.encryption) {
      for (const n of readdirSync(this.captureDir).filter((n) => !n.startsWith('.')).sort()) {
        const plain = path.join(this.captureDir, n);
        if (statSync(plain, { throwIfNoEntry: false })?.isFile() !== true) continue;
        const encrypted = this.#encryptFirst({ file: plain, startedAt: '', endedAt: '', durationS: 0 }).file;
        if (!leftovers.includes(encrypted)) leftovers.push(encrypted);
        this.#log.warn({ file: plain }, 'plaintext segment left in RAM by the last process: encrypting it');
      }
    }
    const open = db.prepare<[], RecordingRow>("SELECT * FROM recording WHERE status = 'recording' ORDER BY started_at").all();
    let adoptedBy: RecordingRow | undefined;
    for (const row of open) {
      const stopped = row.stop_trigger !== null;
      this.#auditAndEvent(
        { type: 'recording.interrupted', detail: { recordingId: row.id, stopRequested: stopped } },
        { type: 'recording.interrupted', time: this.#now().toISOString(), recordingId: row.id, resumes: !stopped },
      );
      // The newest running one is the one whose segments the buffer may still hold, and the one
      // to continue unless its stop had been asked.
      if (row === open.at(-1)) {
        adoptedBy = row;
        if (!stopped) this.#resumeFrom = row.id;
      }
      this.#enqueue(() => this.#recoverRecording(row, row === adoptedBy ? leftovers : []));
    }
    if (!adoptedBy && leftovers.length > 0) this.#enqueue(() => this.#deleteBuffered(leftovers));
    // A manifest committed but whose files a crash prevented.
    for (const row of db.prepare<[], RecordingRow>('SELECT * FROM recording WHERE manifest IS NOT NULL').all()) {
      const dir = path.join(this.recordingsDir, row.id);
      if (!existsSync(path.join(dir, manifestFile)) || !existsSync(path.join(dir, signatureFile))) {
        this.#enqueue(() => this.#writeManifestFiles(dir, row.manifest!, row.manifest_sig!));
      }
    }
  }

  async #recoverRecording(row: RecordingRow, bufferLeftovers: string[]): Promise<void> {
    const db = this.#o.db;
    const dir = path.join(this.recordingsDir, row.id);
    const indexed = segmentRows(db, row.id);
    const rec: Active = { id: row.id, dir, preEventS: row.pre_event_s, nextIdx: (indexed.at(-1)?.idx ?? -1) + 1, head: indexed.at(-1)?.sha256 ?? genesisSha256 };
    const known = new Set(indexed.map((r) => r.file));
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const strays = readdirSync(dir)
        .filter((n) => !isManifestName(n) && !known.has(segmentRelPath(row.id, n)))
        .sort();
      for (const name of strays) {
        const parsed = parseSegmentFileName(name);
        const st = statSync(path.join(dir, name));
        if (!st.isFile()) continue;
        const info = parsed
          ? { file: name, startedAt: parsed.startedAt, durationS: parsed.durationS, endedAt: new Date(Date.parse(parsed.startedAt) + parsed.durationS * 1000).toISOString() }
          : timesFromStat(name, st);
        // Renamed to its place in the chain: the name must carry the index it is indexed at.
        const target = segmentFileName(rec.nextIdx, info.startedAt, info.durationS, segmentExt(name));
        if (target !== name) await rename(path.join(dir, name), path.join(dir, target));
        await this.#index(rec, target, info, null, true);
        this.#log.warn({ recordingId: row.id, file: target }, 'unindexed segment found after a crash: indexed as recovered');
      }
      // Segments the capture closed (or was writing) when the process died, still in the buffer.
      const fromMs = Date.parse(row.started_at) - row.pre_event_s * 1000;
      for (const file of bufferLeftovers.map((f) => ({ f, st: statSync(f, { throwIfNoEntry: false }) })).sort((a, b) => (a.st?.mtimeMs ?? 0) - (b.st?.mtimeMs ?? 0))) {
        if (!file.st) continue;
        if (file.st.mtimeMs < fromMs) {
          await this.#deleteBuffered([file.f]);
          continue;
        }
        const info = timesFromStat(file.f, file.st);
        const name = segmentFileName(rec.nextIdx, info.startedAt, info.durationS, segmentExt(file.f));
        await rename(file.f, path.join(dir, name));
        await this.#index(rec, name, info, null, true);
        this.#log.warn({ recordingId: row.id, file: name }, 'buffer segment left by a crash joined the interrupted recording as recovered');
      }
      await fsyncDir(dir);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), recordingId: row.id }, 'recovery of an interrupted recording failed');
      this.#event({ type: 'recording.recovery_failed', time: this.#now().toISOString(), recordingId: row.id, error: errorMessage(err) });
    }
    await this.#seal(row.id, 'interrupted');
  }

  // ---- plumbing -----------------------------------------------------------------------------

  #enqueue(job: () => Promise<void>): void {
    this.#queue = this.#queue.then(job).catch((err: unknown) => {
      this.#log.error({ err: errorMessage(err) }, 'recording job failed');
    });
  }

  #position(): { lat: number; lon: number } | null {
    try {
      return this.#o.position?.() ?? null;
    } catch {
      return null;
    }
  }

  /** idle while capture is down; otherwise recording or buffering. */
  #refreshState(): void {
    const before = this.#state;
    const state: RecorderStateName = !this.#captureRunning ? 'idle' : this.#active ? 'recording' : 'buffering';
    this.#state = state;
    if (before !== state || this.#emittedRecording !== (this.#active !== undefined)) this.#emitState();
  }

  #emitState(): void {
    const s = this.status();
    this.#emittedRecording = s.recording;
    try {
      this.#o.state?.update({ recording: s.recording });
    } catch (err) {
      this.#log.error({ err: errorMessage(err) }, 'state update failed');
    }
    this.emit('state', s);
  }

  #auditAndEvent(record: AuditRecord, event: Record<string, unknown>): void {
    this.#appendAudit(record);
    this.#event(event);
  }

  #appendAudit(record: AuditRecord): void {
    try {
      this.#o.audit.append(record);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), type: record.type }, 'recording audit entry could not be committed; recording goes on');
      this.#event({ type: 'recording.audit_failed', time: this.#now().toISOString(), auditType: record.type, error: errorMessage(err) });
    }
  }

  #event(body: Record<string, unknown>): void {
    try {
      this.#o.link.send('event', body);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), type: body.type }, 'recording event could not be queued');
    }
  }
}

function timesFromStat(file: string, st: { mtimeMs: number; birthtimeMs: number }): SegmentInfo {
  const end = st.mtimeMs;
  // birthtime is 0 or later than mtime where the filesystem does not keep it.
  const start = st.birthtimeMs > 0 && st.birthtimeMs <= end ? st.birthtimeMs : end;
  return { file, startedAt: new Date(start).toISOString(), endedAt: new Date(end).toISOString(), durationS: (end - start) / 1000 };
}

/** A rename is durable only once its directory is synced. */
async function fsyncDir(dir: string): Promise<void> {
  const fd = await open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}
