// The upload's share of the uplink: a token bucket on the request body, and a gate that holds the
// body while uploads are paused (a live view has the uplink). Written here because it is a few
// lines on Node streams: the npm throttles (stream-throttle, throttle) are unmaintained and know no
// pause. Holding the body stops the bytes at once; the request resumes where it stopped.
import { Readable } from 'node:stream';
import { once, EventEmitter } from 'node:events';

export class UploadGate extends EventEmitter<{ open: [] }> {
  #closedBy = new Set<string>();

  close(by: string): void {
    this.#closedBy.add(by);
  }

  open(by: string): void {
    if (!this.#closedBy.delete(by)) return;
    if (this.#closedBy.size === 0) this.emit('open');
  }

  get closedBy(): string[] {
    return [...this.#closedBy].sort();
  }

  get isOpen(): boolean {
    return this.#closedBy.size === 0;
  }

  async waitOpen(signal?: AbortSignal): Promise<void> {
    while (!this.isOpen) await once(this, 'open', signal ? { signal } : {});
  }
}

export class TokenBucket {
  /** Bytes per second; 0: no cap. */
  readonly #rate: number;
  /** At most 250 ms of the rate at once, and never below 16 KiB (one chunk). */
  readonly #burst: number;
  #tokens: number;
  #last = performance.now();

  constructor(kbps: number) {
    this.#rate = (kbps * 1000) / 8;
    this.#burst = Math.max(16_384, this.#rate / 4);
    this.#tokens = this.#burst;
  }

  get capped(): boolean {
    return this.#rate > 0;
  }

  /** Waits until `bytes` may be sent. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    if (!this.capped) return;
    for (;;) {
      const now = performance.now();
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
      this.#last = now;
      if (this.#tokens >= bytes || this.#tokens >= this.#burst) {
        this.#tokens -= bytes;
        return;
      }
      // Waiting here is the cap itself (the time the bytes take at the rate), not a guess.
      const waitMs = ((bytes - this.#tokens) / this.#rate) * 1000;
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, Math.min(waitMs, 250));
        signal?.addEventListener('abort', () => (clearTimeout(t), reject(signal.reason as Error)), { once: true });
      });
    }
  }
}

/** The source's chunks, no faster than the bucket allows, held while the gate is closed; counts what went. */
export function throttledBody(source: AsyncIterable<Buffer>, bucket: TokenBucket, gate: UploadGate, onBytes: (n: number) => void, signal?: AbortSignal): Readable {
  async function* run(): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      // Small slices so the cap is smooth and a pause takes effect within one slice.
      for (let off = 0; off < chunk.length; off += 16_384) {
        const slice = chunk.subarray(off, off + 16_384);
        await gate.waitOpen(signal);
        await bucket.take(slice.length, signal);
        onBytes(slice.length);
        yield slice;
      }
    }
  }
  return Readable.from(run(), { objectMode: false });
}
