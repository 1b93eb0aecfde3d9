// A recorder over a real database, device key, audit log and files, driven by a stand-in for the
// capture supervisor: segments are small generated files written into the buffer folder, with
// times on a test clock, so windows and rotation are exact and no test waits on real time.
import { EventEmitter } from 'node:events';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { AuditLog, type AuditEntry, type AuditMessage } from '../../src/audit/audit-log.ts';
import { loadOrCreateDeviceKey, type DeviceKey } from '../../src/keys/device-key.ts';
import { evidenceDirOf } from '../../src/recording/layout.ts';
import { Recorder, type OpenedSegment, type RecorderOptions, type SegmentInfo } from '../../src/recording/recorder.ts';
import { openDatabase, type Db } from '../../src/store/database.ts';

export const silent = pino({ level: 'silent' });

export class FakeCapture extends EventEmitter<{ segment: [SegmentInfo]; 'segment-opened': [OpenedSegment] }> {}

export class TestClock {
  ms: number;
  constructor(start = Date.parse('2026-11-24T10:00:00.000Z')) {
    this.ms = start;
  }
  now = (): Date => new Date(this.ms);
  advance(s: number): void {
    this.ms += s * 1000;
  }
}

export interface Rig {
  stateDir: string;
  evidenceDir: string;
  db: Db;
  key: DeviceKey;
  audit: AuditLog;
  auditEntries: () => AuditEntry[];
  events: Record<string, unknown>[];
  stateUpdates: boolean[];
  capture: FakeCapture;
  clock: TestClock;
  recorder: Recorder;
  position: { value: { lat: number; lon: number } | null };
  /** Writes a segment of `durationS` ending at the clock's now where the capture writes (the buffer, or RAM with encryption) and reports it. */
  segment(durationS?: number, bytes?: number): Promise<SegmentInfo>;
  /** Closes the recorder and the database (the files stay). */
  shutdown(): Promise<void>;
  /** A new database handle and recorder on the same state folder, as after a restart. */
  restart(options?: Partial<RecorderOptions>): Promise<Rig>;
}

let segCounter = 0;

export async function makeRig(options: Partial<RecorderOptions> & { stateDir?: string; clock?: TestClock } = {}): Promise<Rig> {
  const stateDir = options.stateDir ?? (await mkdtemp(path.join(os.tmpdir(), 'bwc-rec-')));
  const evidenceDir = evidenceDirOf(stateDir);
  const db = openDatabase({ stateDir });
  const key = await loadOrCreateDeviceKey(stateDir);
  const published: AuditMessage[] = [];
  const audit = new AuditLog({ db, deviceId: 'cam-r', deviceKey: key, publish: (m) => published.push(m), logger: silent });
  const events: Record<string, unknown>[] = [];
  const stateUpdates: boolean[] = [];
  const capture = new FakeCapture();
  const clock = options.clock ?? new TestClock();
  const position: Rig['position'] = { value: { lat: 51.5, lon: -0.12 } };
  const { stateDir: _s, clock: _c, ...rest } = options;
  const recorder = new Recorder({
    db,
    evidenceDir,
    deviceId: 'cam-r',
    deviceKey: key,
    source: capture,
    audit,
    link: { send: (_channel, body) => events.push(body as Record<string, unknown>) },
    state: { update: (c) => stateUpdates.push(c.recording) },
    position: () => position.value,
    preEventS: 10,
    logger: silent,
    now: clock.now,
    ...rest,
  });
  const rig: Rig = {
    stateDir,
    evidenceDir,
    db,
    key,
    audit,
    auditEntries: () => published.flatMap((m) => (m.kind === 'entry' ? [m.entry] : [])),
    events,
    stateUpdates,
    capture,
    clock,
    recorder,
    position,
    async segment(durationS = 2, bytes = 512) {
      const end = clock.ms;
      const start = end - durationS * 1000;
      const file = path.join(recorder.captureDir, `capture-${++segCounter}.ts`);
      await writeFile(file, randomBytes(bytes));
      const info: SegmentInfo = { file, startedAt: new Date(start).toISOString(), endedAt: new Date(end).toISOString(), durationS };
      capture.emit('segment', info);
      return info;
    },
    async shutdown() {
      await recorder.close();
      audit.stop();
      db.close();
    },
    async restart(more = {}) {
      await rig.shutdown();
      return makeRig({ ...options, ...more, stateDir, clock });
    },
  };
  return rig;
}

/** Advances the clock by `durationS` and closes one segment, `n` times. */
export async function runSegments(rig: Rig, n: number, durationS = 2): Promise<SegmentInfo[]> {
  const out: SegmentInfo[] = [];
  for (let i = 0; i < n; i += 1) {
    rig.clock.advance(durationS);
    out.push(await rig.segment(durationS));
  }
  return out;
}
