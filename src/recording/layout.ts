// Where evidence lives on disk, shared by the recorder and the verifier. One filesystem for the
// buffer and the recordings, because a segment joins a recording by rename(2): evidence is moved,
// never copied, so there is only ever one copy whose hash the index holds.
//
//   <stateDir>/evidence/buffer/                      the capture worker writes every segment here
//   <stateDir>/evidence/recordings/<recordingId>/    one folder per recording:
//       000000_20261124T140406.123Z_2000ms.ts        segments: index, start time, duration
//       manifest.json  manifest.sig                  once closed (or found interrupted)
// Segment names carry their index and times so a file that a crash left unindexed can be indexed
// at the next start with the metadata it had.
import path from 'node:path';

export const manifestFile = 'manifest.json';
export const signatureFile = 'manifest.sig';

/**
 * Files of a closed recording's folder that go to the object store besides the segments its
 * manifest lists and the manifest and its signature (src/offload/). Add a per-recording file here
 * (a GPS track, say) and the uploader takes it, whatever its extension.
 */
export const offloadedExtraFiles: readonly string[] = [];

/** The manifest, its signature, and the temporary names they are written under. */
export function isManifestName(name: string): boolean {
  return name === manifestFile || name === signatureFile || name === `.${manifestFile}.tmp` || name === `.${signatureFile}.tmp`;
}

export function evidenceDirOf(stateDir: string): string {
  return path.join(stateDir, 'evidence');
}

export function bufferDirOf(evidenceDir: string): string {
  return path.join(evidenceDir, 'buffer');
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

const namePattern = /^(\d{6,})_(\d{8}T\d{6}(?:\.\d+)?Z)_(\d+)ms(\.[A-Za-z0-9]+)?$/;

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
