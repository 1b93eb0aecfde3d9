// Folds repeated refusals into counted summary entries, so that anyone who may publish on the
// broker cannot turn junk into one fsync'd audit row (and one outbox copy) each and fill the disk
// the evidence needs, while the audit still says how many were refused, with what code, from
// when to when: nothing is silently dropped.
//
// Per (source, code): the first refusal in a window is audited in full by the caller; the rest
// are counted. When the window ends (commands.refusalWindow after it opened), when a command is
// accepted, or when the agent stops, each key with folded refusals gets ONE entry (the format is
// in docs/protocol.md, "Refusal summaries"):
//   { type: "refusals.summarised", decision: "rejected", code,
//     detail: { source, count, firstAt, lastAt, bytes, unanswered, unaudited } }
// `count` is the number of refusals NOT audited in full, so the full entries plus the summaries'
// counts are every refusal. Written by hand: it is a counter per key and a timer; no library does
// exactly "audit the first, count the rest, summarise at window end".
import type { Logger } from 'pino';
import type { AuditLog } from './audit-log.ts';
import { errorMessage } from '../errors.ts';

/** Where refusals come from; the `source` of a summary. */
export type RefusalSource = 'cmd' | 'ice-answer';

export const refusalSummaryType = 'refusals.summarised';

export interface RefusalTimers {
  set(callback: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: RefusalTimers = {
  set: (callback, ms) => setTimeout(callback, ms).unref(),
  clear: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface RefusalFolderOptions {
  audit: Pick<AuditLog, 'append'>;
  /** How long a window stays open after its first refusal. */
  windowMs: number;
  /** Replies sent per (source, code) and window; further refusals get none (counted as unanswered). */
  repliesPerWindow: number;
  /** Most distinct (source, code) keys at once; past it they share the key (source, "other"). */
  maxKeys?: number;
  now?: () => number;
  timers?: RefusalTimers;
  /** The evidence reserve: inside it no refusal is written, only counted (src/store/storage-reserve.ts). */
  reserve?: { check(): void };
  logger: Logger;
}

export interface RefusalOutcome {
  /** Whether the caller audited this one in full (and may log it). */
  audited: boolean;
  /** Whether a reply may still be sent for it. */
  reply: boolean;
}

interface Open {
  source: RefusalSource;
  code: string;
  /** Refusals not audited in full. */
  folded: number;
  /** Of those, how many could not be audited in full because the audit could not be written. */
  unaudited: number;
  unanswered: number;
  replies: number;
  bytes: number;
  firstAt: number | undefined;
  lastAt: number | undefined;
}

export class RefusalFolder {
  readonly #o: RefusalFolderOptions;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #timers: RefusalTimers;
  readonly #maxKeys: number;
  readonly #open = new Map<string, Open>();
  #timer: unknown;

  constructor(options: RefusalFolderOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'refusals' });
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? realTimers;
    this.#maxKeys = options.maxKeys ?? 64;
  }

  /** Folded refusals not yet summarised, all keys together (for `ctl status` and tests). */
  get pending(): number {
    let n = 0;
    for (const o of this.#open.values()) n += o.folded;
    return n;
  }

  /**
   * One refusal. `auditInFull` writes the full entry; it is called only for the first of its
   * (source, code) in the window. If it throws (the audit cannot be written: a full disk, the
   * evidence reserve), the refusal is counted instead and the next summary says so.
   */
  refused(source: RefusalSource, code: string, bytes: number, auditInFull: () => void): RefusalOutcome {
    let key = `${source}\u0000${code}`;
    if (!this.#open.has(key) && this.#open.size >= this.#maxKeys) {
      code = 'other';
      key = `${source}\u0000other`;
    }
    let open = this.#open.get(key);
    if (!open) {
      open = { source, code, folded: 0, unaudited: 0, unanswered: 0, replies: 0, bytes: 0, firstAt: undefined, lastAt: undefined };
      this.#open.set(key, open);
      this.#arm();
      try {
        this.#o.reserve?.check();
        auditInFull();
        open.replies += 1;
        return { audited: true, reply: true };
      } catch (err) {
        open.unaudited += 1;
        this.#log.error({ source, code, err: errorMessage(err) }, 'refusal could not be audited; counted for the next summary');
      }
    }
    const now = this.#now();
    open.folded += 1;
    open.bytes += bytes;
    open.firstAt ??= now;
    open.lastAt = now;
    const reply = open.replies < this.#o.repliesPerWindow;
    if (reply) open.replies += 1;
    else open.unanswered += 1;
    return { audited: false, reply };
  }

  /**
   * Ends the window: one summary entry per key with folded refusals. A summary that cannot be
   * written keeps its counts for the next try, so they are reported once space is back.
   */
  flush(): void {
    this.#timers.clear(this.#timer);
    this.#timer = undefined;
    for (const [key, o] of this.#open) {
      if (o.folded === 0) {
        this.#open.delete(key);
        continue;
      }
      const detail = {
        source: o.source,
        count: o.folded,
        firstAt: new Date(o.firstAt!).toISOString(),
        lastAt: new Date(o.lastAt!).toISOString(),
        bytes: o.bytes,
        unanswered: o.unanswered,
        unaudited: o.unaudited,
      };
      try {
        this.#o.reserve?.check();
        this.#o.audit.append({ type: refusalSummaryType, decision: 'rejected', code: o.code, detail });
      } catch (err) {
        this.#log.error({ ...detail, code: o.code, err: errorMessage(err) }, 'refusal summary could not be audited; kept for the next try');
        this.#arm();
        continue;
      }
      this.#open.delete(key);
      this.#log.warn({ ...detail, code: o.code }, 'repeated refusals summarised');
    }
  }

  /** At agent stop: what is folded goes into the audit before the agent.stop entry. */
  stop(): void {
    this.flush();
    this.#timers.clear(this.#timer);
    this.#timer = undefined;
  }

  #arm(): void {
    if (this.#timer !== undefined) return;
    this.#timer = this.#timers.set(() => {
      this.#timer = undefined;
      this.flush();
    }, this.#o.windowMs);
  }
}
