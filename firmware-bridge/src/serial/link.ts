import type { Frame } from './frames.ts';
import { decodeFrame, encodeFrame, FrameSplitter, MSG, MSG_NAMES, PROTOCOL_VERSION } from './frames.ts';
import { errorMessage } from '../../../src/errors.ts';

export interface LinkCounters {
  framesIn: number;
  framesOut: number;
  badCobs: number;
  badCrc: number;
  badLength: number;
  badVersion: number;
  overruns: number;
  unknownType: number;
  duplicates: number;
  /** Requests refused with NACK 2 (a payload their type does not allow). */
  badPayload: number;
  /** TRIGGER/FALL refused with NACK 4: beyond the host's budget (a flood). */
  rateLimited: number;
  retries: number;
  timeouts: number;
  nacks: number;
}

export function emptyCounters(): LinkCounters {
  return {
    framesIn: 0,
    framesOut: 0,
    badCobs: 0,
    badCrc: 0,
    badLength: 0,
    badVersion: 0,
    overruns: 0,
    unknownType: 0,
    duplicates: 0,
    badPayload: 0,
    rateLimited: 0,
    retries: 0,
    timeouts: 0,
    nacks: 0,
  };
}

/** Frames dropped for any reason on the receive side. */
export function droppedFrames(c: LinkCounters): number {
  return c.badCobs + c.badCrc + c.badLength + c.badVersion + c.overruns;
}

export class LinkTimeoutError extends Error {
  override readonly name = 'LinkTimeoutError';
}
export class LinkNackError extends Error {
  override readonly name = 'LinkNackError';
}
export class LinkClosedError extends Error {
  override readonly name = 'LinkClosedError';
}

export interface FrameLinkOptions {
  write: (bytes: Buffer) => void;
  onFrame: (frame: Frame) => void;
  ackTimeoutMs: number;
  retries: number;
}

interface Pending {
  type: number;
  resolve: (reply: Frame) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Replies that settle an outstanding request with the same seq. */
const REPLY_TYPES = new Set<number>([MSG.ACK, MSG.NACK, MSG.PONG, MSG.HELLO_ACK]);

/**
 * One end of the protocol, shared by the agent's serial backend and the reference MCU simulator so both
 * sides frame, retry and count exactly alike.
 */
export class FrameLink {
  readonly counters: LinkCounters = emptyCounters();
  private readonly splitter = new FrameSplitter();
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private readonly opts: FrameLinkOptions;

  constructor(opts: FrameLinkOptions) {
    this.opts = opts;
  }

  receive(data: Uint8Array): void {
    this.splitter.push(
      data,
      (chunk) => this.handleChunk(chunk),
      () => this.counters.overruns++,
    );
  }

  send(type: number, seq: number, payload?: Uint8Array): void {
    this.counters.framesOut++;
    this.opts.write(encodeFrame(type, seq, payload));
  }

  /** Sends and waits for the matching reply, resending on each timeout; rejects after the last retry. */
  request(type: number, payload: Uint8Array = Buffer.alloc(0)): Promise<Frame> {
    const seq = this.nextSeq();
    const attempts = this.opts.retries + 1;
    return new Promise<Frame>((resolve, reject) => {
      let attempt = 0;
      const fire = (): void => {
        attempt++;
        if (attempt > 1) this.counters.retries++;
        try {
          this.send(type, seq, payload);
        } catch (err) {
          this.pending.delete(seq);
          reject(new LinkClosedError(`write failed: ${errorMessage(err)}`));
          return;
        }
        const timer = setTimeout(() => {
          if (attempt < attempts) {
            fire();
            return;
          }
          this.pending.delete(seq);
          this.counters.timeouts++;
          reject(
            new LinkTimeoutError(
              `${MSG_NAMES[type] ?? type} seq ${seq} not acknowledged after ${attempts} attempts (${this.opts.ackTimeoutMs} ms each)`,
            ),
          );
        }, this.opts.ackTimeoutMs);
        this.pending.set(seq, { type, resolve, reject, timer });
      };
      fire();
    });
  }

  failAll(err: Error): void {
    for (const [seq, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(seq);
      p.reject(err);
    }
  }

  resetStream(): void {
    this.splitter.reset();
  }

  private nextSeq(): number {
    // Skip seqs still awaiting a reply so a slow ACK can never settle the wrong request.
    for (let i = 0; i < 256; i++) {
      this.seq = (this.seq + 1) & 0xff;
      if (!this.pending.has(this.seq)) return this.seq;
    }
    throw new Error('256 requests outstanding');
  }

  private handleChunk(chunk: Buffer): void {
    const result = decodeFrame(chunk);
    if (!result.ok) {
      if (result.error === 'cobs') this.counters.badCobs++;
      else if (result.error === 'crc') this.counters.badCrc++;
      else this.counters.badLength++;
      return;
    }
    const frame = result.frame;
    if (frame.version !== PROTOCOL_VERSION) {
      this.counters.badVersion++;
      return;
    }
    this.counters.framesIn++;
    if (REPLY_TYPES.has(frame.type)) {
      const p = this.pending.get(frame.seq);
      // HELLO_ACK only answers a HELLO, PONG only a PING; ACK/NACK answer anything else.
      const matches =
        p !== undefined &&
        (frame.type === MSG.HELLO_ACK
          ? p.type === MSG.HELLO
          : frame.type === MSG.PONG
            ? p.type === MSG.PING
            : p.type !== MSG.HELLO && p.type !== MSG.PING);
      if (p !== undefined && matches) {
        clearTimeout(p.timer);
        this.pending.delete(frame.seq);
        if (frame.type === MSG.NACK) {
          this.counters.nacks++;
          p.reject(new LinkNackError(`${MSG_NAMES[p.type] ?? p.type} seq ${frame.seq} rejected (reason ${frame.payload[0] ?? '?'})`));
        } else {
          p.resolve(frame);
        }
        return;
      }
      // A HELLO_ACK nobody waits for still carries useful identity; let the owner see it.
      if (frame.type !== MSG.HELLO_ACK) return;
    }
    this.opts.onFrame(frame);
  }
}
