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
import type { IPublishPacket } from 'mqtt';
import { compactVerify, errors as joseErrors } from 'jose';
import type { Logger } from 'pino';
import type { RefusalFolder } from '../audit/refusal-summary.ts';
import type { TrustStore } from '../command/trust-store.ts';
import type { DeviceKey } from '../keys/device-key.ts';
import type { MqttSession } from '../link/mqtt-session.ts';
import { isSessionId } from './session-id.ts';

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
  | 'wrong_session'
  | 'not_yet_valid'
  | 'expired'
  | 'too_long_lived'
  | 'answer_mismatch';

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
  session: Pick<MqttSession, 'publish' | 'subscribe' | 'on' | 'off'>;
  /** `<root>/<deviceId>/` + suffix. */
  topic: (suffix: string) => string;
  deviceId: string;
  deviceKey: DeviceKey;
  trustStore: Pick<TrustStore, 'lookup'>;
  nowMs: () => number;
  clockSkewS: number;
  maxTokenLifetimeS: number;
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

export class IceSignalling {
  readonly name = 'ice-signalling';
  readonly #o: IceSignallingOptions;
  readonly #log: Logger;
  readonly #answerFilter: string;
  readonly #answerPrefix: string;
  #queue: Promise<void> = Promise.resolve();
  #pending = 0;
  /**
   * Offers not yet answered, by sid. The network change that called for an offer usually also
   * broke the broker connection, and a publish written to a socket that is going down is lost
   * with it, so each is sent again on every reconnection until answered or replaced.
   */
  readonly #unanswered = new Map<string, { generation: number; payload: string; at: number }>();
  readonly #onMessage = (topic: string, payload: Buffer, _packet: IPublishPacket) => {
    if (!topic.startsWith(this.#answerPrefix) || !topic.endsWith('/ice-answer')) return;
    const sid = topic.slice(this.#answerPrefix.length, -'/ice-answer'.length);
    if (sid.includes('/')) return;
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
    this.#o.session.subscribe(this.#answerFilter, 1).catch((err: unknown) => this.#log.error({ err }, 'cannot subscribe to ICE answers'));
    const now = this.#o.nowMs();
    for (const [sid, offer] of this.#unanswered) {
      if (now - offer.at > unansweredTtlMs) this.#unanswered.delete(sid);
      else this.#send(sid, offer.generation, offer.payload);
    }
  };

  constructor(options: IceSignallingOptions) {
    this.#o = options;
    this.#log = options.logger.child({ module: 'ice-signalling' });
    this.#answerFilter = options.topic('stream/+/ice-answer');
    this.#answerPrefix = options.topic('stream/');
  }

  start(): void {
    this.#o.session.on('message', this.#onMessage);
    this.#o.session.on('connected', this.#onConnected);
    this.#onConnected();
  }

  async stop(): Promise<void> {
    this.#o.session.off('message', this.#onMessage);
    this.#o.session.off('connected', this.#onConnected);
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
    this.#o.session.publish(this.#o.topic(`stream/${sid}/ice-offer`), payload, { qos: 1 }, (err) => {
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

  async #verify(sid: string, payload: Buffer, digest: (d: string) => void): Promise<IceAnswer | Refused> {
    const o = this.#o;
    if (payload.byteLength > o.maxPayloadBytes) return new Refused('too_large', `payload is ${payload.byteLength} bytes, more than ${o.maxPayloadBytes}`);
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      return new Refused('malformed', 'payload is not JSON');
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return new Refused('malformed', 'payload is not a JSON object');
    const { token, answer, ...rest } = body as Record<string, unknown>;
    if (typeof token !== 'string' || typeof answer !== 'string' || Object.keys(rest).length > 0) {
      return new Refused('malformed', 'payload must be {"token": string, "answer": string} and nothing else');
    }
    digest(sha256(token));
    const parts = token.split('.');
    if (parts.length !== 3) return new Refused('malformed', 'token is not a JWS compact serialization');
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    } catch {
      return new Refused('malformed', 'token header is not JSON');
    }
    if (typeof header !== 'object' || header === null || 'crit' in header) return new Refused('malformed', 'token header is not a JSON object without "crit"');
    if (header.alg !== 'EdDSA') return new Refused('unsupported_alg', 'only EdDSA (Ed25519) tokens are accepted');
    if (header.typ !== iceAnswerTokenType) return new Refused('wrong_type', `token typ is not "${iceAnswerTokenType}"`);
    if (typeof header.kid !== 'string') return new Refused('unknown_key', 'token has no kid');
    const nowS = o.nowMs() / 1000;
    const found = o.trustStore.lookup(header.kid, nowS);
    if (found.status === 'unknown') return new Refused('unknown_key', `key ${JSON.stringify(header.kid)} is not in the trust store`);
    if (found.status === 'revoked') return new Refused('revoked_key', `key ${JSON.stringify(header.kid)} is revoked or expired`);
    // Answering a restart keeps a live view going: the authority to start one.
    if (!found.key.actions.has('stream.start')) return new Refused('action_not_permitted', `key ${found.key.kid} may not authorise live views`);
    let claims: Record<string, unknown>;
    try {
      const { payload: bytes } = await compactVerify(token, found.key.publicKey, { algorithms: ['EdDSA'] });
      claims = JSON.parse(Buffer.from(bytes).toString('utf8')) as Record<string, unknown>;
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new Refused('bad_signature', `signature does not verify with key ${found.key.kid}`);
      return new Refused('malformed', `token does not parse: ${(err as Error).message}`);
    }
    const { aud, sid: claimedSid, gen, answer_sha256: answerSha, iat, exp, jti, iss, sub } = claims;
    if (aud !== o.deviceId) return new Refused('wrong_device', `token is for ${JSON.stringify(aud)}, not this device`);
    if (claimedSid !== sid) return new Refused('wrong_session', `token is for session ${JSON.stringify(claimedSid)}, published on ${sid}'s topic`);
    if (typeof gen !== 'number' || !Number.isInteger(gen) || typeof iat !== 'number' || typeof exp !== 'number' || typeof jti !== 'string' || typeof iss !== 'string' || typeof sub !== 'string') {
      return new Refused('malformed', 'token needs gen (integer), iat, exp, jti, iss and sub');
    }
    if (iat > nowS + o.clockSkewS) return new Refused('not_yet_valid', 'token issued in the future');
    if (exp <= nowS - o.clockSkewS) return new Refused('expired', `token expired at ${new Date(exp * 1000).toISOString()}`);
    if (exp - iat > o.maxTokenLifetimeS) return new Refused('too_long_lived', `token lives ${exp - iat} s, more than ${o.maxTokenLifetimeS} s`);
    if (answerSha !== sha256(answer)) return new Refused('answer_mismatch', 'answer_sha256 does not match the answer');
    return { sid, generation: gen, answer, operator: sub, issuer: iss, jti, tokenDigest: sha256(token) };
  }
}
