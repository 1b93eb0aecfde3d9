// The share of the state folder's file system kept for evidence. Below it, the writers anyone
// on the broker can drive (the outbox: telemetry, events, audit copies; refusal audit entries)
// refuse to write, so a flood cannot take the space recording needs; evidence segments, and the
// audit entries of what the camera does (recordings, live views, accepted commands), may use it.
// Logs go to journald, which has its own limits (SystemMaxUse).
import { statfsSync } from 'node:fs';

export class StorageReserveError extends Error {
  readonly code = 'EVIDENCE_RESERVE';
}

export interface StorageReserveOptions {
  path: string;
  /** recording.evidenceReservePercent; 0 turns the reserve off. */
  percent: number;
  /** For tests: the file system's free and total bytes. */
  statfs?: (path: string) => { freeBytes: number; totalBytes: number };
}

function readStatfs(p: string): { freeBytes: number; totalBytes: number } {
  const fs = statfsSync(p);
  // bavail, not bfree: blocks reserved for root are not the agent's to use.
  return { freeBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize };
}

export class StorageReserve {
  readonly #o: StorageReserveOptions;
  readonly #statfs: (path: string) => { freeBytes: number; totalBytes: number };

  constructor(options: StorageReserveOptions) {
    this.#o = options;
    this.#statfs = options.statfs ?? readStatfs;
  }

  /**
   * Throws StorageReserveError when free space is inside the reserve. One statfs(2) per call
   * (about a microsecond): cheaper than keeping a cached figure true.
   */
  check(): void {
    if (this.#o.percent <= 0) return;
    let s: { freeBytes: number; totalBytes: number };
    try {
      s = this.#statfs(this.#o.path);
    } catch {
      return; // cannot tell: let the write itself succeed or fail
    }
    const reserveBytes = (s.totalBytes * this.#o.percent) / 100;
    if (s.freeBytes < reserveBytes) {
      throw new StorageReserveError(
        `disk full for everything but evidence: ${Math.round(s.freeBytes / 1024)} KiB free is inside the evidence reserve of ${Math.round(reserveBytes / 1024)} KiB (recording.evidenceReservePercent ${this.#o.percent}%)`,
      );
    }
  }
}
