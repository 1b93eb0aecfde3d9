// The MQTT side of an ICE restart. The camera publishes its restart offer on the session's topic,
// signed with its device key so the viewer knows the camera made it; the viewer's backend answers
// on the session's answer topic with a token signed by an issuer key trusted for stream.start,
// bound to this device, this session, this restart and the exact answer text. So no one else can
// point the camera's media somewhere new, and an old answer cannot be played again. The answer
// grants no new authority: the session keeps its operator, reason and max_s.
//
//   <root>/<deviceId>/stream/<sid>/ice-offer    camera -> viewer  {"token": JWS, "offer": SDP}
//   <root>/<deviceId>/stream/<sid>/ice-answer   viewer -> camera  {"token": JWS, "answer": SDP}
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { RefusalFolder } from '../audit/refusal-summary.ts';
import { decodeUtf8, describe, nonEmptyString, TokenRefusal, type SignedTokenVerifier, type TokenExpectation, type VerifiedToken } from '../command/signed-token.ts';
import type { DeviceKey } from '../keys/device-key.ts';
import type { IceTopics } from '../link/ice-topics.ts';
import { isSessionId } from './session-id.ts';
import type { Extension } from '../agent/extension.ts';

export const iceOfferTokenType = 'bwc-ice-offer+jwt';
export const iceAnswerTokenType = 'bwc-ice+jwt';

/** Why an answer was refused; in the audit entry and the log. */
export type IceAnswerRefusal =
  | 'too_large'
  | 'malformed'
  | 'unsupported_alg'
  | 'wrong_type'
  | 'unknown_key'
  | 'revoked_key'
  | 'action_not_permitted'
  | 'bad_signature'
  | 'wrong_device'
  | 'clock_unsynchronised'
  | 'not_yet_valid'
  | 'expired'
  | 'too_long_lived'
  | 'wrong_session'
  | 'answer_mismatch'
  | 'replayed';

/**
 * Why an answer was refused before its payload was read: the topic's sid is not one this camera
 * mints, or too many answers are already waiting.
 */
export type IceTopicRefusal = 'bad_sid' | 'overloaded';

/** An answer whose token verified; the stream manager still checks it against the session. */
export interface IceAnswer {
  sid: string;
  generation: number;
  answer: string;
  operator: string;
  issuer: string;
  jti: string;
  tokenDigest: string;
}

export type IceAnswerOutcome = { ok: true } | { ok: false; code: string; message: string };

export interface IceSignallingOptions {
  /** The link's offer and answer topics (FleetLink.iceTopics; it subscribes the answers, this only listens). */
  topics: Pick<IceTopics, 'listen' | 'close' | 'publishOffer'>;
  deviceId: string;
  deviceKey: DeviceKey;
  /**
   * The signed-token verifier the commands use too (src/command/signed-token.ts): the same
   * checks, clock policy and replay cache for answers as for commands.
   */
  tokens: Pick<SignedTokenVerifier, 'verify' | 'admit'>;
  nowMs: () => number;
  maxPayloadBytes: number;
  /** A verified answer; the manager applies it or says why not. */
  onAnswer: (answer: IceAnswer) => Promise<IceAnswerOutcome>;
  /** Every answer refused here (forged, expired...), for the audit trail. */
  onRefused: (refusal: { sid: string; code: IceAnswerRefusal | IceTopicRefusal; message: string; tokenDigest: string | undefined }) => void;
  /** Folds repeated refusals into counted summaries; without one every refusal goes to onRefused. */
  refusals?: Pick<RefusalFolder, 'refused'>;
  logger: Logger;
}

// An offer older than this is not worth sending again: the session has ended or moved on.
const unansweredTtlMs = 30_000;

// Answers waiting to be verified. At most commands.maxConcurrentStreams (8) sessions can be
// restarting at once, each waiting for one answer: more than this waiting is a flood.
const maxPendingAnswers = 16;

// How much of a bad sid the audit and the log keep.
const keptSidChars = 40;

const sha256 = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64url');

class Refused {
  readonly code: IceAnswerRefusal;
  readonly message: string;
  constructor(code: IceAnswerRefusal, message: string) {
    this.code = code;
    this.message = message;
  }
}

/** The answer's own claims, beside the common ones SignedTokenVerifier checks. */
interface AnswerClaims {
  sid: string;
  gen: number;
  answer_sha256: string;
}

// Phase 2 of malformed for an answer token (after the signature and the common claims).
const answerExpectation: TokenExpectation<AnswerClaims> = {
  typ: iceAnswerTokenType,
  claims: (c) => {
    if (!nonEmptyString(c.sid)) return new TokenRefusal('malformed', 'token claim sid must be a non-empty string');
    if (typeof c.gen !== 'number' || !Number.isSafeInteger(c.gen) || c.gen < 0) return new TokenRefusal('malformed', 'token claim gen must be a whole number');
    if (typeof c.answer_sha256 !== 'string') return new TokenRefusal('malformed', 'token claim answer_sha256 must be a string');
    return { sid: c.sid, gen: c.gen, answer_sha256: c.answer_sha256 };
  },
  // Answering a restart keeps a live view going: the authority to start one.
  action: () => 'stream.start',
};

export class IceSignalling implements Extension {
  readonly name = 'ice-signalling';
  readonly #o: IceSignallingOptions;
  readonly #log: Logger;
  #queue: Promise<void> = Promise.resolve();
  #pending = 0;
  /**
   * Offers not yet answered, by sid. The network change that called for an offer usually also
   * broke the broker connection, and a publish written to a socket that is going down is lost
   * with it, so each is sent again on every reconnection until answered or replaced.
   */
  readonly #unanswered = new Map<string, { generation: number; payload: string; at: number }>();
  readonly #onAnswer = (sid: string, payload: Buffer) => {
    // Before anything is parsed or written: a sid of another shape (60 KB of junk, say) is
    // refused by its length and first characters only.
    if (!isSessionId(sid)) {
      const message = `the topic's session id is not one this camera mints ("s-" and a UUID): ${Buffer.byteLength(sid)} bytes, starting ${JSON.stringify(sid.slice(0, keptSidChars))}`;
      this.#refuse(sid.slice(0, keptSidChars), 'bad_sid', message, undefined, payload.length);
      return;
    }
    if (this.#pending >= maxPendingAnswers) {
      this.#refuse(sid, 'overloaded', `more than ${maxPendingAnswers} ICE answers are waiting`, undefined, payload.length);
      return;
    }
    this.#pending += 1;
    this.#queue = this.#queue
      .then(() => this.#handle(sid, payload))
      .catch((err: unknown) => this.#log.error({ err }, 'ICE answer handling failed'))
      .finally(() => {
        this.#pending -= 1;
      });
  };
  readonly #onConnected = () => {
    const now = this.#o.nowMs();
    for (const [sid, offer] of this.#unanswered) {
      if (now - offer.at > unansweredTtlMs) this.#unanswered.delete(sid);
      else this.#send(sid, offer.generation, offer.payload);
    }
  };

  constructor(options: IceSignallingOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'ice-signalling' });
  }

  start(): void {
    this.#o.topics.listen({ answer: this.#onAnswer, connected: this.#onConnected });
    this.#onConnected();
  }

  async stop(): Promise<void> {
    this.#o.topics.close();
    await this.#queue;
  }

  /**
   * Publishes a restart offer, QoS 1. mqtt.js holds it while the link reconnects (the usual case:
   * the network that changed carried the broker connection too).
   */
  publishOffer(sid: string, generation: number, offer: string, cause: string): void {
    const iat = Math.floor(this.#o.nowMs() / 1000);
    const header = { alg: 'EdDSA', typ: iceOfferTokenType, kid: this.#o.deviceKey.kid };
    const claims = { iss: this.#o.deviceId, sid, gen: generation, cause, offer_sha256: sha256(offer), iat };
    // A compact JWS by hand: the device key signs raw bytes and never leaves its module, and the
    // signing input is exactly what jose's verifier reads.
    const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    const token = `${input}.${this.#o.deviceKey.sign(input)}`;
    const payload = JSON.stringify({ token, offer });
    this.#unanswered.set(sid, { generation, payload, at: this.#o.nowMs() });
    this.#send(sid, generation, payload);
  }

  #send(sid: string, generation: number, payload: string): void {
    this.#o.topics.publishOffer(sid, payload, (err) => {
      if (err) this.#log.warn({ sid, generation, err: err.message }, 'ICE restart offer not published (sent again on reconnection)');
    });
  }

  async #handle(sid: string, payload: Buffer): Promise<void> {
    let tokenDigest: string | undefined;
    const verdict = await this.#verify(sid, payload, (d) => (tokenDigest = d));
    if (verdict instanceof Refused) {
      this.#refuse(sid, verdict.code, verdict.message, tokenDigest, payload.length);
      return;
    }
    const outcome = await this.#o.onAnswer(verdict);
    if (outcome.ok && this.#unanswered.get(sid)?.generation === verdict.generation) this.#unanswered.delete(sid);
    if (!outcome.ok) this.#log.warn({ sid, code: outcome.code, reason: outcome.message }, 'ICE restart answer not applied');
  }

  /** The first refusal of its code in a window is logged and audited in full; the rest are counted. */
  #refuse(sid: string, code: IceAnswerRefusal | IceTopicRefusal, message: string, tokenDigest: string | undefined, bytes: number): void {
    const inFull = () => {
      this.#log.warn({ sid, code, reason: message, tokenDigest }, 'ICE restart answer refused');
      this.#o.onRefused({ sid, code, message, tokenDigest });
    };
    if (this.#o.refusals) this.#o.refusals.refused('ice-answer', code, bytes, inFull);
    else inFull();
  }

  // The answer's envelope and own claims here; the token itself (JWS, header, key, signature,
  // common claims, device, clock, times, key permission, replay) in SignedTokenVerifier.
  async #verify(sid: string, payload: Buffer, digest: (d: string) => void): Promise<IceAnswer | Refused> {
    const o = this.#o;
    if (payload.byteLength > o.maxPayloadBytes) return new Refused('too_large', `payload is ${payload.byteLength} bytes, more than ${o.maxPayloadBytes}`);
    const text = decodeUtf8(payload);
    if (text === undefined) return new Refused('malformed', 'payload is not UTF-8 text');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return new Refused('malformed', 'payload is not JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return new Refused('malformed', 'payload is not a JSON object');
    const { token, answer, ...rest } = body as Record<string, unknown>;
    if (typeof token !== 'string' || typeof answer !== 'string' || Object.keys(rest).length > 0) {
      return new Refused('malformed', 'payload must be {"token": string, "answer": string} and nothing else');
    }
    const tokenDigest = sha256(token);
    digest(tokenDigest);
    let verified: VerifiedToken<AnswerClaims> | TokenRefusal;
    try {
      verified = await o.tokens.verify(token, answerExpectation, { verified: false });
    } catch (err) {
      this.#log.warn({ sid, err, tokenDigest }, 'ICE answer verification failed unexpectedly');
      return new Refused('malformed', 'answer could not be verified (internal error)');
    }
    if (verified instanceof TokenRefusal) return new Refused(verified.code as IceAnswerRefusal, verified.message);
    const { claims } = verified;
    if (claims.sid !== sid) return new Refused('wrong_session', `token is for session ${describe(claims.sid)}, published on ${sid}'s topic`);
    if (claims.answer_sha256 !== sha256(answer)) return new Refused('answer_mismatch', 'answer_sha256 does not match the answer');
    // Last, as for commands: a refused answer does not use up its token id.
    const refused = o.tokens.admit(verified);
    if (refused !== undefined) return new Refused(refused.code as IceAnswerRefusal, refused.message);
    return { sid, generation: claims.gen, answer, operator: claims.sub, issuer: claims.iss, jti: claims.jti, tokenDigest };
  }
}
