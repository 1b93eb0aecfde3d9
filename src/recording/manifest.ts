// A recording's manifest: what the device signs when a recording closes (or is found interrupted
// after a crash). It is built from the evidence index, serialised as canonical JSON, and those
// exact bytes are stored in the database and written as manifest.json; manifest.sig holds the
// Ed25519 signature over them (base64url). The segments and the chain head let a verifier spot a
// removed, added or altered index row even after the chain itself was rewritten consistently.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Db } from '../store/database.ts';

export const genesisSha256 = '0'.repeat(64);

export type TriggerKind = 'ctl' | 'button' | 'command' | 'resume';
/** What the manifest names as the trigger: the stored kinds, and the officer's (issue 19). */
export type ManifestTriggerKind = TriggerKind | 'watch-me' | 'emergency' | 'trigger' | 'stream';

export interface ManifestTrigger {
  kind: ManifestTriggerKind;
  operator: string | null;
  reason: string | null;
  /** e.g. {source: 'holster'} for a trigger input, {sid} for a live view, {alertId} for an emergency. */
  detail?: Record<string, unknown>;
}

/** A bookmark (docs/evidence.md): a moment the wearer or a supervisor marked in the recording. */
export interface ManifestMark {
  markId: string;
  time: string;
  /** Seconds after startedAt (the pre-event footage lies before it). */
  offsetS: number;
  source: 'button' | 'command';
  operator: string | null;
  note: string | null;
}

export interface ManifestSegment {
  index: number;
  file: string;
  startedAt: string;
  endedAt: string;
  durationS: number;
  lat: number | null;
  lon: number | null;
  sha256: string;
  prevSha256: string;
  bytes: number;
  recovered: boolean;
}

export interface Manifest {
  version: 1;
  recordingId: string;
  deviceId: string;
  status: 'closed' | 'interrupted';
  startedAt: string;
  stoppedAt: string | null;
  trigger: ManifestTrigger;
  stopTrigger: ManifestTrigger | null;
  preEventS: number;
  preEventAudio: boolean;
  resumedFrom: string | null;
  segments: ManifestSegment[];
  /** The last segment's sha256 (64 zeros for an empty recording). */
  chainHead: string;
  kid: string;
  /**
   * Present when the files are encrypted: the format and the public keys they are encrypted to.
   * Segment hashes, bytes and the chain cover the ciphertext as stored, so the manifest verifies
   * without a private key; positions are then only in the encrypted track (segments' lat/lon null).
   */
  encryption?: { format: 'age-v1'; recipients: string[] };
  /** The encrypted GPS track (encryption on, and a position was known), as stored. */
  track?: { file: string; sha256: string; bytes: number } | null;
  /** Bookmarks, in time order (manifests sealed before schema version 7 have none). */
  marks?: ManifestMark[];
  /** Talk-back (issue 19): what a supervisor told the wearer during the recording, one Ogg/Opus file per talk spurt, as stored. */
  talk?: ManifestTalk[];
}

export interface ManifestTalk {
  file: string;
  sha256: string;
  bytes: number;
  spurt: string;
  sid: string;
  operator: string;
  startedAt: string;
  endedAt: string;
}

export interface ManifestExtras {
  encryption?: Manifest['encryption'];
  track?: Manifest['track'];
  talk?: ManifestTalk[];
}

export interface RecordingRow {
  id: string;
  started_at: string;
  stopped_at: string | null;
  status: 'recording' | 'closed' | 'interrupted';
  resumed_from: string | null;
  trigger: TriggerKind;
  operator: string | null;
  reason: string | null;
  stop_trigger: 'ctl' | 'button' | 'command' | null;
  stop_operator: string | null;
  stop_reason: string | null;
  pre_event_s: number;
  pre_event_audio: number;
  manifest: string | null;
  manifest_sig: string | null;
  kid: string | null;
  /** Schema version 7: the finer trigger kind and its detail (JSON), null for the stored kinds. */
  trigger_kind?: string | null;
  trigger_detail?: string | null;
}

export interface SegmentRow {
  recording_id: string;
  idx: number;
  file: string;
  started_at: string;
  ended_at: string;
  duration_s: number;
  lat: number | null;
  lon: number | null;
  sha256: string;
  prev_sha256: string;
  bytes: number;
  recovered: number;
}

export interface MarkRow {
  mark_id: string;
  recording_id: string;
  time: string;
  offset_s: number;
  source: 'button' | 'command';
  operator: string | null;
  note: string | null;
}

export function markRows(db: Db, recordingId: string): MarkRow[] {
  return db.prepare<[string], MarkRow>('SELECT * FROM recording_mark WHERE recording_id = ? ORDER BY time, mark_id').all(recordingId);
}

export function manifestMark(r: MarkRow): ManifestMark {
  return { markId: r.mark_id, time: r.time, offsetS: r.offset_s, source: r.source, operator: r.operator, note: r.note };
}

export function segmentRows(db: Db, recordingId: string): SegmentRow[] {
  return db.prepare<[string], SegmentRow>('SELECT * FROM evidence_segment WHERE recording_id = ? ORDER BY idx').all(recordingId);
}

export function manifestSegment(r: SegmentRow): ManifestSegment {
  return {
    index: r.idx,
    file: r.file,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    durationS: r.duration_s,
    lat: r.lat,
    lon: r.lon,
    sha256: r.sha256,
    prevSha256: r.prev_sha256,
    bytes: r.bytes,
    recovered: r.recovered !== 0,
  };
}

export function buildManifest(
  rec: RecordingRow,
  status: Manifest['status'],
  stoppedAt: string | null,
  segments: SegmentRow[],
  deviceId: string,
  kid: string,
  extras: ManifestExtras = {},
  marks: MarkRow[] = [],
): Manifest {
  const detail = rec.trigger_detail ? (JSON.parse(rec.trigger_detail) as Record<string, unknown>) : undefined;
  return {
    version: 1,
    recordingId: rec.id,
    deviceId,
    status,
    startedAt: rec.started_at,
    stoppedAt,
    trigger: { kind: (rec.trigger_kind ?? rec.trigger) as ManifestTriggerKind, operator: rec.operator, reason: rec.reason, ...(detail ? { detail } : {}) },
    stopTrigger: rec.stop_trigger === null ? null : { kind: rec.stop_trigger, operator: rec.stop_operator, reason: rec.stop_reason },
    preEventS: rec.pre_event_s,
    preEventAudio: rec.pre_event_audio !== 0,
    resumedFrom: rec.resumed_from,
    segments: segments.map(manifestSegment),
    chainHead: segments.at(-1)?.sha256 ?? genesisSha256,
    kid,
    ...(extras.encryption ? { encryption: extras.encryption, track: extras.track ?? null } : {}),
    marks: marks.map(manifestMark),
    ...(extras.talk !== undefined && extras.talk.length > 0 ? { talk: extras.talk } : {}),
  };
}

/** Hex SHA-256 of a manifest's exact bytes (manifest.json): what the `recording.sealed` audit entry holds. */
export function manifestDigest(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** SHA-256 (hex) and length of a file, read as a stream so a large segment never blocks the loop. */
export async function hashFile(file: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}
