// Writes messages into the outbox, and holds them in memory while the outbox cannot be written
// (a full disk, a read-only remount, an I/O error), retrying until it can. Messages keep their
// order: while anything is held, new messages queue behind it. Sequence numbers are given when a
// message reaches SQLite, so they stay contiguous.
//
// Memory is bounded: past `maxHeld`, held GPS fixes (thinnable) are dropped oldest first and
// counted; events and audit entries are kept, since losing them is worse than the memory.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { MessageClass, Outbox } from './outbox.ts';

interface Held {
  channel: string;
  body: object;
  cls: MessageClass;
}

export interface OutboxWriterStatus {
  /** Messages waiting in memory because the outbox could not be written. */
  held: number;
  /** Thinnable messages dropped from memory because too many were held. */
  droppedFromMemory: number;
  /** Why the outbox cannot be written, while that is so. */
  writeError: string | undefined;
}

export class OutboxWriter extends EventEmitter<{ failing: [string]; recovered: [{ written: number }] }> {
  readonly #outbox: Outbox;
  readonly #logger: Logger;
  readonly #maxHeld: number;
  readonly #retryMs: number;
  #held: Held[] = [];
  #dropped = 0;
  #writeError: string | undefined;
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(options: { outbox: Outbox; logger: Logger; maxHeld?: number; retryMs?: number }) {
    super();
    this.#outbox = options.outbox;
    this.#logger = options.logger.child({ module: 'outbox' });
    this.#maxHeld = options.maxHeld ?? 20_000;
    this.#retryMs = options.retryMs ?? 2000;
  }

  status(): OutboxWriterStatus {
    return { held: this.#held.length, droppedFromMemory: this.#dropped, writeError: this.#writeError };
  }

  write(channel: string, body: object, cls: MessageClass): void {
    this.#held.push({ channel, body, cls });
    if (this.#held.length === 1) this.#flush();
    if (this.#held.length > this.#maxHeld) this.#shed();
  }

  stop(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (this.#held.length > 0) this.#flush();
    if (this.#held.length > 0) this.#logger.error({ held: this.#held.length, writeError: this.#writeError }, 'stopping with messages the outbox could not store');
  }

  #flush(): void {
    let written = 0;
    while (this.#held.length > 0) {
      const next = this.#held[0]!;
      try {
        this.#outbox.enqueue(next.channel, next.body, next.cls);
      } catch (err) {
        this.#failing(err as NodeJS.ErrnoException);
        return;
      }
      this.#held.shift();
      written += 1;
    }
    if (this.#writeError !== undefined) {
      this.#logger.info({ written }, 'outbox writable again; held messages stored');
      this.#writeError = undefined;
      this.emit('recovered', { written });
    }
  }

  #failing(err: NodeJS.ErrnoException): void {
    const reason = `${err.code ?? 'error'}: ${err.message}`;
    if (this.#writeError === undefined) {
      this.#logger.error({ err: reason, held: this.#held.length }, 'cannot write to the outbox (disk full?); holding messages in memory and retrying');
      this.#writeError = reason;
      this.emit('failing', reason);
    }
    this.#retryTimer ??= setTimeout(() => {
      this.#retryTimer = undefined;
      this.#flush();
    }, this.#retryMs);
  }

  #shed(): void {
    const index = this.#held.findIndex((h) => h.cls === 'thinnable');
    if (index < 0) return;
    this.#held.splice(index, 1);
    this.#dropped += 1;
    if (this.#dropped === 1 || this.#dropped % 1000 === 0) {
      this.#logger.warn({ dropped: this.#dropped, held: this.#held.length }, 'outbox unwritable for long: dropping the oldest held GPS fixes');
    }
  }
}
