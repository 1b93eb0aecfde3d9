// Where evidence lives on disk, shared by the recorder and the verifier. One filesystem for the
// buffer and the recordings, because a segment joins a recording by rename(2): evidence is moved,
// never copied, so there is only ever one copy whose hash the index holds.
//
//   <stateDir>/evidence/buffer/                      the capture worker writes every segment here
//   <stateDir>/evidence/recordings/<recordingId>/    one folder per recording:
//       000000_20261124T140406.123Z_2000ms.ts.age    segments (age-encrypted; `.ts` when encryption is off)
//       track.json.age                               the GPS track, encrypted (encryption on only)
//       manifest.json  manifest.sig                  once closed (or found interrupted)
//   <recording.plaintextDir>/segments/               tmpfs: the segment being written, in the clear
//   <recording.plaintextDir>/tracks/<recordingId>.jsonl  tmpfs: the open recording's track
// Segment names carry their index and times so a file that a crash left unindexed can be indexed
// at the next start with the metadata it had.
import path from 'node:path';

export const manifestFile = 'manifest.json';
export const signatureFile = 'manifest.sig';
export const trackFile = 'track.json.age';

/**
 * Files of a closed recording's folder that go to the object store besides the segments its
 * manifest lists and the manifest and its signature (src/offload/). Add a per-recording file here
 * (a GPS track, say) and the uploader takes it, whatever its extension.
 */
export const offloadedExtraFiles: readonly string[] = [trackFile];

/** A talk-back spurt's file in a recording folder (listed in the manifest's `talk`): talk-<spurt>.ogg[.age]. */
export function isTalkFileName(name: string): boolean {
  return /^talk-t-[0-9a-f-]{36}\.ogg(\.age)?$/.test(name);
}

/** The manifest, its signature, the encrypted track, and the temporary names they are written under. */
export function isManifestName(name: string): boolean {
  return [manifestFile, signatureFile, trackFile].some((n) => name === n || name === `.${n}.tmp`);
}

/** A segment file's extension: `.ts`, or `.ts.age` once encrypted. */
export function segmentExt(file: string): string {
  const base = path.basename(file);
  return base.endsWith('.age') ? `${path.extname(base.slice(0, -4))}.age` : path.extname(base);
}

export function evidenceDirOf(stateDir: string): string {
  return path.join(stateDir, 'evidence');
}

export function bufferDirOf(evidenceDir: string): string {
  return path.join(evidenceDir, 'buffer');
}

/** Where the capture writes segments when they are encrypted: in RAM, under recording.plaintextDir. */
export function plaintextSegmentsDirOf(plaintextDir: string): string {
  return path.join(plaintextDir, 'segments');
}

export function recordingsDirOf(evidenceDir: string): string {
  return path.join(evidenceDir, 'recordings');
}

/** The index's `file` column: relative to the evidence folder, always '/' separated. */
export function segmentRelPath(recordingId: string, name: string): string {
  return `recordings/${recordingId}/${name}`;
}

const compact = (iso: string) => iso.replace(/[-:]/g, '');

export function segmentFileName(index: number, startedAt: string, durationS: number, ext: string): string {
  return `${String(index).padStart(6, '0')}_${compact(startedAt)}_${Math.round(durationS * 1000)}ms${ext}`;
}

const namePattern = /^(\d{6,})_(\d{8}T\d{6}(?:\.\d+)?Z)_(\d+)ms((?:\.[A-Za-z0-9]+){0,2})$/;

/** Index and times from a name segmentFileName made; undefined for any other name. */
export function parseSegmentFileName(name: string): { index: number; startedAt: string; durationS: number } | undefined {
  const m = namePattern.exec(name);
  if (!m) return undefined;
  const t = m[2]!;
  const startedAt = `${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${t.slice(11, 13)}:${t.slice(13)}`;
  if (Number.isNaN(Date.parse(startedAt))) return undefined;
  return { index: Number(m[1]), startedAt, durationS: Number(m[3]) / 1000 };
}

/** A recording id: sortable by start time, unique by its random tail. */
export function newRecordingId(now: Date, random: string): string {
  return `${compact(now.toISOString()).replace(/\.\d+Z$/, 'Z')}-${random}`;
}
