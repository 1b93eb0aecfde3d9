// The persistent outbox: every `gps`, `event` and `audit` message is written here first, with a
// per-channel sequence number, and deleted only once the broker has acknowledged it. So a broker
// outage or an agent restart delays messages but never loses or reorders them.
//
// Delivery is at-least-once: a crash between the broker's PUBACK and the batched delete below
// re-sends those messages after restart; receivers drop duplicates by (channel, seq).
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Db } from '../store/database.ts';
import { errorMessage } from '../errors.ts';

/** `thinnable` messages (GPS fixes) may be thinned when the outbox is full; `durable` never are. */
export type MessageClass = 'thinnable' | 'durable';

export interface OutboxMessage {
  id: number;
  channel: string;
  seq: number;
  payload: Buffer;
}

export interface OutboxOptions {
  db: Db;
  maxMessages: number;
  logger: Logger;
  /** Acknowledged ids are deleted in one transaction once this many have gathered... */
  ackBatch?: number;
  /** ...or once the oldest has waited this long. */
  ackDelayMs?: number;
  /** The evidence reserve: enqueue throws inside it (the writer then holds and retries). */
  reserve?: { check(): void };
}

export interface ThinningReport {
  channel: string;
  dropped: number;
  totalDropped: number;
}

interface OutboxEvents {
  enqueued: [];
  thinned: [ThinningReport];
}

export class Outbox extends EventEmitter<OutboxEvents> {
  readonly #db: Db;
  readonly #logger: Logger;
  readonly #maxMessages: number;
  readonly #ackBatch: number;
  #size: number;
  #pendingAcks: number[] = [];
  #flushTimer: NodeJS.Timeout | undefined;
  readonly #ackDelayMs: number;
  readonly #insert;
  readonly #nextSeq;
  readonly #bumpSeq;
  readonly #select;
  readonly #delete;
  readonly #enqueueTx;
  readonly #reserve: { check(): void } | undefined;

  constructor(options: OutboxOptions) {
    super();
    this.#db = options.db;
    this.#logger = options.logger.child({ module: 'outbox' });
    this.#maxMessages = options.maxMessages;
    this.#ackBatch = options.ackBatch ?? 256;
    this.#ackDelayMs = options.ackDelayMs ?? 25;
    this.#reserve = options.reserve;
    const db = this.#db;
    this.#insert = db.prepare<[string, MessageClass, number, Buffer, number]>(
      'INSERT INTO outbox (channel, class, seq, payload, created) VALUES (?, ?, ?, ?, ?)',
    );
    this.#nextSeq = db.prepare<[string], { next_seq: number }>('SELECT next_seq FROM outbox_sequence WHERE channel = ?');
    this.#bumpSeq = db.prepare<[string, number]>(
      'INSERT INTO outbox_sequence (channel, next_seq) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET next_seq = excluded.next_seq',
    );
    this.#select = db.prepare<[number, number], OutboxMessage>(
      'SELECT id, channel, seq, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?',
    );
    this.#delete = db.prepare<[number]>('DELETE FROM outbox WHERE id = ?');
    this.#enqueueTx = db.transaction((channel: string, cls: MessageClass, body: object, now: number) => {
      const seq = this.#nextSeq.get(channel)?.next_seq ?? 1;
      this.#bumpSeq.run(channel, seq + 1);
      // seq first, so a reader of the raw payload sees it at once.
      const payload = Buffer.from(JSON.stringify({ seq, ...body }));
      this.#insert.run(channel, cls, seq, payload, now);
      return seq;
    });
    this.#size = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
  }

  /** Messages waiting for the broker's acknowledgement (acknowledged ones not yet deleted excluded). */
  get size(): number {
    return this.#size - this.#pendingAcks.length;
  }

  /** Writes the message durably and returns its sequence number on the channel. */
  enqueue(channel: string, body: object, cls: MessageClass): number {
    this.#reserve?.check();
    const seq = this.#enqueueTx(channel, cls, body, Date.now());
    this.#size += 1;
    if (this.#size > this.#maxMessages) this.#thin();
    this.emit('enqueued');
    return seq;
  }

  /** The oldest messages with an id above `afterId`, in order. */
  next(afterId: number, limit: number): OutboxMessage[] {
    return this.#select.all(afterId, limit);
  }

  /**
   * The broker has the message: delete it. Deletes are batched by count and by a short delay,
   * because each commit is an fsync, and on a camera's SD card or eMMC an fsync costs
   * milliseconds and wears the flash. A crash before the flush only re-sends (at-least-once).
   */
  acknowledge(id: number): void {
    this.#pendingAcks.push(id);
    if (this.#pendingAcks.length >= this.#ackBatch) this.flush();
    else this.#flushTimer ??= setTimeout(() => this.flush(), this.#ackDelayMs);
  }

  flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#pendingAcks.length === 0) return;
    const ids = this.#pendingAcks;
    this.#pendingAcks = [];
    // Counted by rows really deleted: an in-flight message may have been thinned meanwhile.
    let deleted = 0;
    try {
      this.#db.transaction(() => {
        for (const id of ids) deleted += this.#delete.run(id).changes;
      })();
    } catch (err) {
      // A delete needs WAL space too: on a full disk keep the ids and try again later. The
      // messages are delivered already; at worst they are sent again after a restart.
      this.#pendingAcks = ids.concat(this.#pendingAcks);
      this.#logger.warn({ err: errorMessage(err), pending: this.#pendingAcks.length }, 'cannot delete acknowledged messages yet; will retry');
      this.#flushTimer = setTimeout(() => this.flush(), 1000);
      return;
    }
    this.#size -= deleted;
  }

  thinnedCounts(): Record<string, number> {
    const rows = this.#db.prepare('SELECT channel, count FROM outbox_thinned').all() as { channel: string; count: number }[];
    return Object.fromEntries(rows.map((r) => [r.channel, r.count]));
  }

  /**
   * Over the bound: drop every second one of the oldest thinnable messages, so an old track
   * keeps its shape at half the density, rather than losing its start or its end. Thinning
   * a slice beyond the excess means it does not run again on every enqueue.
   */
  #thin(): void {
    const excess = this.#size - this.#maxMessages;
    const target = excess + Math.ceil(this.#maxMessages / 100);
    const candidates = this.#db
      .prepare('SELECT id, channel FROM outbox WHERE class = ? ORDER BY id LIMIT ?')
      .all('thinnable', target * 2) as { id: number; channel: string }[];
    const victims = candidates.filter((_, i) => i % 2 === 1);
    if (victims.length === 0) {
      this.#logger.warn({ size: this.#size, maxMessages: this.#maxMessages }, 'outbox over its bound with nothing thinnable: keeping every message');
      return;
    }
    const perChannel = new Map<string, number>();
    this.#db.transaction(() => {
      for (const v of victims) {
        this.#delete.run(v.id);
        perChannel.set(v.channel, (perChannel.get(v.channel) ?? 0) + 1);
      }
      const bump = this.#db.prepare(
        'INSERT INTO outbox_thinned (channel, count) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE SET count = count + excluded.count',
      );
      for (const [channel, n] of perChannel) bump.run(channel, n);
    })();
    this.#size -= victims.length;
    const totals = this.thinnedCounts();
    for (const [channel, dropped] of perChannel) {
      const report = { channel, dropped, totalDropped: totals[channel] ?? dropped };
      this.#logger.warn(report, 'outbox full: thinned old messages');
      this.emit('thinned', report);
    }
  }
}
