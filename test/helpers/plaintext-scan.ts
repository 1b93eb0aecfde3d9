// Looks for video in the clear: the MPEG-TS sync byte 0x47 at five consecutive 188-byte steps, or
// H.264 Annex B (a start code 00 00 01 or 00 00 00 01 followed by the NAL header) of an SPS with
// its profile byte, or of an access unit delimiter with its picture-type byte, as an encoder and
// h264parse write before every keyframe. Six fixed-ish bytes: ciphertext (uniformly random bytes)
// trips it with a probability below 1e-6 per 10 MB, and so does SQLite's page structure (a bare
// `00 00 00 01 <any NAL header>` does occur in agent.db), while any real stream trips it.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import path from 'node:path';

const spsHeaders = new Set([0x67, 0x47, 0x27]);
const spsProfiles = new Set([0x42, 0x4d, 0x58, 0x64, 0x6e, 0x7a, 0xf4]);
const audPictureTypes = new Set([0x10, 0x30, 0x50, 0x70, 0x90, 0xb0, 0xd0, 0xf0]);

/** An H.264 SPS or access unit delimiter after a start code, or undefined. */
export function findH264(buf: Buffer): string | undefined {
  for (let i = 0; i + 5 < buf.length; i += 1) {
    if (buf[i] !== 0 || buf[i + 1] !== 0 || buf[i + 2] !== 1) continue;
    const nal = buf[i + 3]!;
    const next = buf[i + 4]!;
    const code = i > 0 && buf[i - 1] === 0 ? '00 00 00 01' : '00 00 01';
    if (spsHeaders.has(nal) && spsProfiles.has(next)) return `H.264 SPS (${code} ${nal.toString(16)} ${next.toString(16)}) at offset ${i}`;
    if (nal === 0x09 && audPictureTypes.has(next)) return `H.264 access unit delimiter (${code} 09 ${next.toString(16)}) at offset ${i}`;
  }
  return undefined;
}

/** The MPEG-TS sync pattern, or undefined. */
export function findTsSync(buf: Buffer): string | undefined {
  for (let i = 0; i + 188 * 4 < buf.length; i += 1) {
    if (buf[i] === 0x47 && buf[i + 188] === 0x47 && buf[i + 376] === 0x47 && buf[i + 564] === 0x47 && buf[i + 752] === 0x47) return `MPEG-TS sync pattern at offset ${i}`;
  }
  return undefined;
}

/** What plaintext video `buf` shows, or undefined. */
export function findPlaintextVideo(buf: Buffer): string | undefined {
  return findTsSync(buf) ?? findH264(buf);
}

/** Every regular file under `dir` (recursively). */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const f = path.join(e.parentPath, e.name);
    if (e.isFile()) out.push(f);
  }
  return out;
}

/** The regular files a process has open (/proc/PID/fd), for "every file the agent wrote". */
export function openFilesOf(pid: number): string[] {
  const out: string[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith('/') && statSync(target).isFile()) out.push(target);
    } catch {
      // closed meanwhile, or not a file
    }
  }
  return out;
}

/** Files (outside `allowedDirs`) holding plaintext video, with what was found. */
export function scanForPlaintext(files: string[], allowedDirs: string[] = []): { file: string; found: string }[] {
  const hits: { file: string; found: string }[] = [];
  for (const file of new Set(files)) {
    if (allowedDirs.some((d) => file.startsWith(d + path.sep))) continue;
    let buf: Buffer;
    try {
      buf = readFileSync(file);
    } catch {
      continue; // gone meanwhile (a buffer segment rotated out)
    }
    const found = findPlaintextVideo(buf);
    if (found) hits.push({ file, found });
  }
  return hits;
}
