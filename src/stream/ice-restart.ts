// ICE restarts of one live view, beside ice-signalling.ts (which carries the offers and answers):
// when the camera offers a restart (its addresses changed, ICE failed, the viewer went silent),
// re-offering an unanswered one, and taking only the viewer's answer to the restart still open.
// Each offer, answer and refusal is audited. StreamManager decides when a session exists and ends;
// this decides how its path is mended meanwhile.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import { errorMessage } from '../errors.ts';
import type { StreamConfig } from './config.ts';
import type { ResolvedIce } from './ice.ts';
import type { IceAnswer, IceAnswerOutcome, IceAnswerRefusal } from './ice-signalling.ts';
import type { ViewerConnectionState } from './session.ts';

/** Why the camera restarted ICE (in the offer's claims, the audit and the ops console's words). */
export const restartCauses = ['network_changed', 'ice_failed', 'viewer_silent'] as const;
export type RestartCause = (typeof restartCauses)[number];

// A restart offer not answered (or not connecting) within this long is made again, with the
// next generation, until the viewer answers or viewerLostGrace ends the session.
const restartRetryMs = 5000;

// offer.ts reads SDP with werift, which takes ~120 ms to load; an answer only comes for a session
// that exists, whose StreamSession has loaded werift already. So it is loaded here on first use,
// not at start-up (test/architecture.test.ts holds start-up to no value import of werift).
let offerModule: Promise<typeof import('./offer.ts')> | undefined;
const loadOfferModule = () => (offerModule ??= import('./offer.ts'));

/** The parts of a live session an ICE restart uses. */
export interface RestartableSession {
  readonly offer: { fingerprint: string };
  lastHeardAt: number;
  /** Starts an ICE restart as offerer; resolves with the offer for the viewer. */
  restartIce(ice: ResolvedIce): Promise<string>;
  acceptRestartAnswer(sdp: string): Promise<void>;
}

export interface IceRestartOptions {
  config: Pick<StreamConfig, 'ice'>;
  resolveIce: (ice: StreamConfig['ice']) => Promise<ResolvedIce>;
  audit: Pick<AuditLog, 'append'>;
  sendEvent: (body: Record<string, unknown>) => void;
  /** Sends an ICE restart offer to the viewer (IceSignalling.publishOffer); without it no restart is offered. */
  publishRestartOffer: ((sid: string, generation: number, offer: string, cause: RestartCause) => void) | undefined;
  logger: Logger;
}

/** A restart answer refused (here, by StreamManager or by IceSignalling): audited, as every decision about authority is. */
export function auditRefusedAnswer(
  audit: Pick<AuditLog, 'append'>,
  log: Logger,
  refusal: { sid: string; code: IceAnswerRefusal | string; message: string; tokenDigest: string | undefined },
): void {
  try {
    audit.append({
      type: 'stream.ice_refused',
      operator: null,
      action: null,
      reason: refusal.code,
      tokenDigest: refusal.tokenDigest ?? null,
      detail: { sid: refusal.sid, code: refusal.code, message: refusal.message },
    });
  } catch (err) {
    log.error({ sid: refusal.sid, err: errorMessage(err) }, 'refused ICE answer could not be audited');
  }
}

/** The ICE restarts of one session: made by StreamManager with it, ended with it. */
export class IceRestart {
  readonly #sid: string;
  readonly #session: RestartableSession;
  readonly #o: IceRestartOptions;
  readonly #log: Logger;
  /** Restart offers made (the generation of the latest). */
  #generation = 0;
  /** The restart offered and not yet answered. */
  #open: { generation: number; cause: RestartCause; offeredAt: number } | undefined;
  /** The device's addresses changed since the session's path was set up. */
  #networkChanged = false;
  #ended = false;

  constructor(sid: string, session: RestartableSession, options: IceRestartOptions, log: Logger) {
    this.#sid = sid;
    this.#session = session;
    this.#o = options;
    this.#log = log;
  }

  /** The device's addresses changed: the next check offers a restart on the new ones. */
  networkChanged(): void {
    this.#networkChanged = true;
  }

  /** The session ended: a restart still being prepared is not offered. */
  end(): void {
    this.#ended = true;
  }

  /** StreamManager's periodic check of a connected session: offers a restart if its path needs one. */
  check(now: number, viewerConnection: ViewerConnectionState, silentMs: number, quietMs: number): void {
    const cause: RestartCause | undefined = this.#networkChanged
      ? 'network_changed'
      : viewerConnection === 'failed'
        ? 'ice_failed'
        : silentMs > quietMs
          ? 'viewer_silent'
          : undefined;
    // A new address overrides a restart still open: its offer named the old one.
    if (cause && this.#o.publishRestartOffer && (this.#open === undefined || cause === 'network_changed' || now - this.#open.offeredAt > restartRetryMs)) {
      this.#networkChanged = false;
      void this.#offer(cause);
    }
  }

  async #offer(cause: RestartCause): Promise<void> {
    const sid = this.#sid;
    const generation = ++this.#generation;
    this.#open = { generation, cause, offeredAt: Date.now() };
    let offer: string;
    try {
      const ice = await this.#o.resolveIce(this.#o.config.ice);
      offer = await this.#session.restartIce(ice);
    } catch (err) {
      this.#log.warn({ sid, generation, cause, err: errorMessage(err) }, 'ICE restart not offered');
      return;
    }
    if (this.#ended || this.#open?.generation !== generation) return;
    try {
      this.#o.audit.append({ type: 'stream.ice_restart', operator: null, action: null, reason: cause, tokenDigest: null, detail: { sid, generation, cause } });
    } catch (err) {
      this.#log.error({ sid, err: errorMessage(err) }, 'ICE restart could not be audited');
    }
    this.#log.info({ sid, generation, cause }, 'ICE restart offered to the viewer');
    this.#o.publishRestartOffer?.(sid, generation, offer, cause);
  }

  /** A verified restart answer for this session: applied only to its current restart, from its viewer. */
  async accept(a: IceAnswer): Promise<IceAnswerOutcome> {
    const refuse = (code: string, message: string): IceAnswerOutcome => {
      auditRefusedAnswer(this.#o.audit, this.#log, { sid: a.sid, code, message, tokenDigest: a.tokenDigest });
      return { ok: false, code, message };
    };
    const { viewerFingerprint } = await loadOfferModule();
    if (this.#ended) return refuse('unknown_session', `no live session ${JSON.stringify(a.sid)}`);
    if (this.#open?.generation !== a.generation) {
      return refuse('stale_generation', `answer is for restart ${a.generation}; the session's open restart is ${this.#open?.generation ?? 'none'}`);
    }
    // Only the viewer the stream.start named (its DTLS certificate, and no other beside it) may move the media.
    let fingerprint: string;
    try {
      fingerprint = viewerFingerprint(a.answer, 'the answer');
    } catch (err) {
      return refuse('wrong_viewer', errorMessage(err));
    }
    if (fingerprint !== this.#session.offer.fingerprint) return refuse('wrong_viewer', "the answer's DTLS fingerprint is not the viewer's");
    const { cause } = this.#open;
    this.#open = undefined;
    // A signed answer is the viewer speaking: it is there, whatever the media path is doing.
    this.#session.lastHeardAt = Date.now();
    try {
      await this.#session.acceptRestartAnswer(a.answer);
    } catch (err) {
      return refuse('bad_answer', `the answer could not be applied: ${errorMessage(err)}`);
    }
    try {
      this.#o.audit.append({
        type: 'stream.ice_restarted',
        operator: a.operator,
        action: null,
        reason: cause,
        tokenDigest: a.tokenDigest,
        detail: { sid: a.sid, generation: a.generation, cause, issuer: a.issuer, jti: a.jti },
      });
    } catch (err) {
      this.#log.error({ sid: a.sid, err: errorMessage(err) }, 'ICE restart answer could not be audited');
    }
    this.#log.info({ sid: a.sid, generation: a.generation, cause, operator: a.operator }, 'ICE restart answered; reconnecting');
    this.#o.sendEvent({ type: 'stream.ice_restarted', time: new Date().toISOString(), sid: a.sid, generation: a.generation, cause });
    return { ok: true };
  }
}
