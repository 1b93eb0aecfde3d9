// Small state files written so that after a crash or a power cut a reader finds the old file or the
// new one, whole: tmp + fsync + rename + fsync of the folder (the rename is durable only once the
// folder's entry is on disk). One place for the remote config, the trust updates and the update
// markers, which had each written their own.
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';

export function writeJsonAtomically(file: string, value: unknown, indent: number = 2): void {
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(value, null, indent)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  fsyncDirSync(dir);
}

/** Makes a rename, link or unlink in `dir` durable. */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
