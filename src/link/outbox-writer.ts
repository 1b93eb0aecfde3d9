// Writes messages into the outbox, and holds them in memory while the outbox cannot be written
// (a full disk, a read-only remount, an I/O error), retrying until it can. Messages keep their
// order: while anything is held, new messages queue behind it. Sequence numbers are given when a
// message reaches SQLite, so they stay contiguous.
//
// Memory is bounded: past `maxHeld`, held GPS fixes (thinnable) are dropped oldest first and
// counted; when none is left, the oldest held events go, counted too, and once the outbox takes
// writes again one `outbox.dropped_in_memory` event says how many of each went (nothing silently).
// Audit copies are never dropped: each is already committed in the audit table (the outbox copy
// only publishes it), and what can add them is bounded at the source: refusals an outsider can
// cause are folded into summaries (src/audit/refusal-summary.ts), the rest are the camera's own
// authority decisions.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { MessageClass, Outbox } from './outbox.ts';
import { errorMessage } from '../errors.ts';

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
  /** Events dropped from memory because too many were held and no GPS fix was left to drop. */
  eventsDroppedFromMemory: number;
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
  #eventsDropped = 0;
  /** Counts at the start of the current failure, for the summary event once writes work again. */
  #droppedAtFailure = { gps: 0, events: 0 };
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
    return { held: this.#held.length, droppedFromMemory: this.#dropped, eventsDroppedFromMemory: this.#eventsDropped, writeError: this.#writeError };
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
      const gpsFixes = this.#dropped - this.#droppedAtFailure.gps;
      const events = this.#eventsDropped - this.#droppedAtFailure.events;
      if (gpsFixes > 0 || events > 0) {
        try {
          this.#outbox.enqueue('event', { type: 'outbox.dropped_in_memory', time: new Date().toISOString(), gpsFixes, events }, 'durable');
        } catch (err) {
          this.#logger.error({ err: errorMessage(err), gpsFixes, events }, 'cannot report the messages dropped from memory');
        }
      }
      this.emit('recovered', { written });
    }
  }

  #failing(err: NodeJS.ErrnoException): void {
    const reason = `${err.code ?? 'error'}: ${err.message}`;
    if (this.#writeError === undefined) {
      this.#droppedAtFailure = { gps: this.#dropped, events: this.#eventsDropped };
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
    const fix = this.#held.findIndex((h) => h.cls === 'thinnable');
    if (fix >= 0) {
      this.#held.splice(fix, 1);
      this.#dropped += 1;
      if (this.#dropped === 1 || this.#dropped % 1000 === 0) {
        this.#logger.warn({ dropped: this.#dropped, held: this.#held.length }, 'outbox unwritable for long: dropping the oldest held GPS fixes');
      }
      return;
    }
    const event = this.#held.findIndex((h) => h.channel === 'event');
    if (event < 0) return;
    this.#held.splice(event, 1);
    this.#eventsDropped += 1;
    if (this.#eventsDropped === 1 || this.#eventsDropped % 1000 === 0) {
      this.#logger.warn({ dropped: this.#eventsDropped, held: this.#held.length }, 'outbox unwritable for long: dropping the oldest held events (audit copies are kept)');
    }
  }
}
