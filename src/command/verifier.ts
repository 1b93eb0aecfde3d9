// Decides whether an MQTT command payload carries authority to act. It is the only producer of
// AuthorisedCommand values, so everything the camera does on a remote operator's say-so passes
// through verify() below. verify() never throws: whatever arrives gets a verdict.
//
// Checks run in the order of `rejectionCodes` (src/command/types.ts) and the first that applies
// is reported, with one deliberate exception: `malformed` is checked in two phases.
//
//   Before the signature (phase 1), only what must be parsed to find and check the signature:
//     - the payload is UTF-8 JSON, an object with a string `token`, an optional string `offer`,
//       no other member and no member twice;
//     - the token is JWS compact serialization: exactly three segments, each canonical unpadded
//       base64url, header and payload non-empty (so JWE's five parts and JSON serialization are
//       malformed; an empty signature is not, and fails later as unsupported_alg or bad_signature);
//     - the protected header decodes to a UTF-8 JSON object without `crit` (no extension is
//       understood, and RFC 7515 requires refusing ones that are not).
//   Then unsupported_alg (`alg` exactly "EdDSA"), wrong_type (`typ` exactly "bwc-cmd+jwt"),
//   unknown_key (`kid` absent, not a string, or not in the trust store), revoked_key and
//   bad_signature.
//   After the signature (phase 2), the claims: the payload is a UTF-8 JSON object and every claim
//   has its type (see checkClaims). Only then wrong_device and the rest.
//
// So someone without an issuer key learns nothing about what the camera would make of the claims
// they might forge: every forgery stops at bad_signature or earlier. Header members other than
// alg/typ/kid/crit (jwk, jku, x5u, x5c, b64...) are ignored: keys come from the trust store only.
import { createHash } from 'node:crypto';
import { compactVerify, errors as joseErrors } from 'jose';
import type { Logger } from 'pino';
import { mintAuthorisedCommand, type AuthorisedCommand } from './authorised-command.ts';
import type { ReplayCache } from './replay-cache.ts';
import type { TrustStore } from './trust-store.ts';
import { commandActions, commandTokenType, type CommandAction, type CommandClaims, type CommandPolicy, type RejectionCode } from './types.ts';

export interface VerifierClock {
  nowMs(): number;
  /** Whether the device clock is known to be right (NTP/GNSS synchronised). */
  synchronised(): boolean;
}

export interface VerifierOptions {
  deviceId: string;
  trustStore: TrustStore;
  policy: CommandPolicy;
  replayCache: ReplayCache;
  clock: VerifierClock;
  /** Live streams now running; stream.start is refused as busy at policy.maxConcurrentStreams. */
  activeStreams: () => number;
  logger: Logger;
}

/**
 * What the audit log may say about a refused command. Claims (issuer, operator, action, reason,
 * jti) appear only when `verified` is true, i.e. they came from a token whose signature checked
 * out against `kid`. Before that, `unverified` holds what the token's header claimed, which is
 * attacker-controlled and must be logged as such.
 */
export interface VerdictAudit {
  verified: boolean;
  issuer?: string;
  operator?: string;
  action?: string;
  reason?: string;
  jti?: string;
  /** The trust-store key that verified the signature (verified only). */
  kid?: string;
  unverified?: { alg?: string; kid?: string; typ?: string };
}

export interface Rejection {
  ok: false;
  code: RejectionCode;
  /** Human-readable, names the problem; safe to send back to the issuer. */
  message: string;
  audit: VerdictAudit;
  /** base64url SHA-256 of the token string, whenever a token string could be found. */
  tokenDigest?: string;
}

export type Verdict = { ok: true; command: AuthorisedCommand } | Rejection;

// Attacker-controlled strings copied into the audit are cut to this many characters.
const auditStringMax = 128;
/** Longest accepted jti, characters: it becomes a database key. */
export const maxJtiLength = 256;
// Pruning is a single indexed DELETE; once a minute is plenty to keep the table small.
const pruneEveryMs = 60_000;

const base64url = /^[A-Za-z0-9_-]*$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Refusal {
  readonly code: RejectionCode;
  readonly message: string;
  constructor(code: RejectionCode, message: string) {
    this.code = code;
    this.message = message;
  }
}

export class CommandVerifier {
  readonly #o: VerifierOptions;
  readonly #log: Logger;
  #lastPruneMs = -Infinity;

  constructor(o: VerifierOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'command-verifier' });
  }

  async verify(payload: Buffer): Promise<Verdict> {
    const audit: VerdictAudit = { verified: false };
    const ctx: { tokenDigest?: string } = {};
    try {
      const outcome = await this.#verify(payload, audit, ctx);
      if (outcome instanceof Refusal) return this.#reject(outcome.code, outcome.message, audit, ctx.tokenDigest);
      return { ok: true, command: outcome };
    } catch (err) {
      // Unexpected (a bug, a database error): refuse rather than act, and keep the detail local.
      this.#log.warn({ err, tokenDigest: ctx.tokenDigest }, 'command verification failed unexpectedly');
      return this.#reject('malformed', 'command could not be verified (internal error)', audit, ctx.tokenDigest);
    }
  }

  #reject(code: RejectionCode, message: string, audit: VerdictAudit, tokenDigest: string | undefined): Rejection {
    this.#log.debug({ code, reason: message, audit, tokenDigest }, 'command rejected');
    const r: Rejection = { ok: false, code, message, audit };
    if (tokenDigest !== undefined) r.tokenDigest = tokenDigest;
    return r;
  }

  async #verify(payload: Buffer, audit: VerdictAudit, ctx: { tokenDigest?: string }): Promise<AuthorisedCommand | Refusal> {
    const { policy } = this.#o;
    const receivedMs = this.#o.clock.nowMs();
    const nowS = receivedMs / 1000;

    // too_large: before looking at a single byte of content.
    if (!(payload instanceof Uint8Array)) return new Refusal('malformed', 'payload is not bytes');
    if (payload.byteLength > policy.maxPayloadBytes) {
      return new Refusal('too_large', `payload is ${payload.byteLength} bytes, more than the limit of ${policy.maxPayloadBytes}`);
    }

    // malformed, phase 1: envelope.
    const envelope = parseEnvelope(payload);
    if (envelope instanceof Refusal) return envelope;
    const { token, offer } = envelope;
    ctx.tokenDigest = sha256(token);

    // malformed, phase 1: JWS compact syntax and header.
    const parts = token.split('.');
    if (parts.length !== 3) {
      const hint = parts.length === 5 ? ' (five parts: a JWE, not a signed JWS)' : '';
      return new Refusal('malformed', `token is not a JWS compact serialization: ${parts.length} dot-separated parts, expected 3${hint}`);
    }
    const [h64, p64, s64] = parts as [string, string, string];
    for (const [name, seg] of [['header', h64], ['payload', p64]] as const) {
      if (seg === '' || !isCanonicalBase64url(seg)) return new Refusal('malformed', `token ${name} segment is empty or not canonical base64url`);
    }
    // An empty signature is syntactically fine (it is how alg "none" tokens look, and those
    // should be refused as unsupported_alg); with EdDSA it fails as bad_signature.
    if (!isCanonicalBase64url(s64)) return new Refusal('malformed', 'token signature segment is not canonical base64url');
    const header = parseJsonObject(Buffer.from(h64, 'base64url'));
    if (header === undefined) return new Refusal('malformed', 'token header is not a JSON object');
    const unverified: NonNullable<VerdictAudit['unverified']> = {};
    for (const m of ['alg', 'kid', 'typ'] as const) {
      if (typeof header[m] === 'string') unverified[m] = clip(header[m]);
    }
    audit.unverified = unverified;
    if ('crit' in header) return new Refusal('malformed', 'token header has "crit": no JWS extensions are supported');

    if (header.alg !== 'EdDSA') {
      return new Refusal('unsupported_alg', `token alg ${describe(header.alg)} is not accepted (only "EdDSA" with Ed25519 keys)`);
    }
    if (header.typ !== commandTokenType) {
      return new Refusal('wrong_type', `token typ ${describe(header.typ)} is not "${commandTokenType}"`);
    }
    if (typeof header.kid !== 'string' || header.kid === '') {
      return new Refusal('unknown_key', 'token header has no kid naming a trusted key');
    }
    const found = this.#o.trustStore.lookup(header.kid, nowS);
    if (found.status === 'unknown') return new Refusal('unknown_key', `key ${describe(header.kid)} is not in the trust store`);
    if (found.status === 'revoked') {
      return new Refusal(
        'revoked_key',
        found.why === 'expired'
          ? `key ${describe(header.kid)} expired at ${isoSeconds(found.expiredAt)} (now ${isoSeconds(nowS)})`
          : `key ${describe(header.kid)} is revoked`,
      );
    }
    const key = found.key;

    // bad_signature. jose re-parses the token; every syntax problem it could find was refused
    // above, so anything but a signature failure from it is unexpected.
    let claimsBytes: Uint8Array;
    try {
      claimsBytes = (await compactVerify(token, key.publicKey, { algorithms: ['EdDSA'] })).payload;
    } catch (err) {
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
        return new Refusal('bad_signature', `signature does not verify with key "${key.kid}"`);
      }
      throw err;
    }

    // From here the token is the issuer's: its claims may be reported.
    audit.verified = true;
    audit.kid = key.kid;
    delete audit.unverified;
    const raw = parseJsonObject(claimsBytes);
    if (raw === undefined) return new Refusal('malformed', 'token claims are not a JSON object');
    for (const [field, claim] of [['issuer', 'iss'], ['operator', 'sub'], ['action', 'act'], ['reason', 'reason'], ['jti', 'jti']] as const) {
      const v = raw[claim];
      if (typeof v === 'string') audit[field] = clip(v);
    }
    const checked = checkClaims(raw, offer);
    if (checked instanceof Refusal) return checked;
    const claims = checked;

    if (claims.aud !== this.#o.deviceId) {
      return new Refusal('wrong_device', `token is for device ${describe(claims.aud)}, this is "${this.#o.deviceId}"`);
    }
    if (policy.unsynchronisedClock === 'reject' && !this.#o.clock.synchronised()) {
      return new Refusal('clock_unsynchronised', 'device clock is not synchronised, so token times cannot be checked');
    }
    const skew = policy.clockSkewS;
    const clockNote = `(now ${isoSeconds(nowS)}, skew ${skew} s)`;
    if (claims.iat > nowS + skew) return new Refusal('not_yet_valid', `token issued in the future at ${isoSeconds(claims.iat)} ${clockNote}`);
    if (claims.nbf !== undefined && claims.nbf > nowS + skew) {
      return new Refusal('not_yet_valid', `token not valid before ${isoSeconds(claims.nbf)} ${clockNote}`);
    }
    if (claims.exp <= nowS - skew) return new Refusal('expired', `token expired at ${isoSeconds(claims.exp)} ${clockNote}`);
    if (claims.exp - claims.iat > policy.maxTokenLifetimeS) {
      return new Refusal(
        'too_long_lived',
        `token lifetime ${claims.exp - claims.iat} s (exp - iat) is more than the policy's ${policy.maxTokenLifetimeS} s`,
      );
    }
    if (!key.actions.has(claims.act)) {
      return new Refusal('action_not_permitted', `key "${key.kid}" may not authorise ${claims.act} (only ${[...key.actions].join(', ')})`);
    }
    if (claims.reason === undefined || claims.reason === '') return new Refusal('reason_missing', 'token has no reason code');
    if (!policy.allowedReasons.includes(claims.reason)) {
      return new Refusal('reason_not_allowed', `reason ${describe(claims.reason)} is not one of the allowed: ${policy.allowedReasons.join(', ')}`);
    }
    if (claims.act === 'stream.start') {
      if (claims.max_s! > policy.maxStreamDurationS) {
        return new Refusal('duration_exceeds_policy', `max_s ${claims.max_s} s is more than the policy's ${policy.maxStreamDurationS} s`);
      }
      if (offer === undefined || offer === '') return new Refusal('offer_missing', 'stream.start without an SDP offer in the envelope');
      if (claims.offer_sha256 === undefined) return new Refusal('offer_mismatch', 'token has no offer_sha256 to bind the offer');
      if (claims.offer_sha256 !== sha256(offer)) {
        return new Refusal('offer_mismatch', 'the SDP offer does not match the offer_sha256 the token was signed for');
      }
    }

    // replayed and busy, decided and recorded in one transaction.
    const { maxConcurrentStreams } = policy;
    const refused = this.#o.replayCache.admit(claims.iss, claims.jti, claims.exp + skew, () =>
      claims.act === 'stream.start' && this.#o.activeStreams() >= maxConcurrentStreams ? 'busy' : undefined,
    );
    if (refused === 'replayed') return new Refusal('replayed', `token id ${describe(claims.jti)} from ${describe(claims.iss)} was already used`);
    if (refused !== undefined) return new Refusal(refused, `already ${maxConcurrentStreams} live stream(s), the most allowed`);

    this.#maybePrune(receivedMs);
    return mintAuthorisedCommand({
      action: claims.act,
      operator: claims.sub,
      issuer: claims.iss,
      reason: claims.reason,
      jti: claims.jti,
      kid: key.kid,
      tokenDigest: ctx.tokenDigest,
      expiresAt: claims.exp * 1000,
      issuedAt: claims.iat * 1000,
      receivedAt: receivedMs,
      ...(claims.act === 'stream.start' ? { maxDurationS: claims.max_s!, offer: offer!, offerSha256: claims.offer_sha256! } : {}),
      ...(claims.act === 'stream.stop' ? { sid: claims.sid! } : {}),
    });
  }

  #maybePrune(nowMs: number): void {
    // A clock that may be wrong (far ahead) would prune rows of tokens still valid by the real
    // time, reopening them to replay once the clock is corrected.
    if (!this.#o.clock.synchronised() || nowMs - this.#lastPruneMs < pruneEveryMs) return;
    this.#lastPruneMs = nowMs;
    const n = this.#o.replayCache.prune(nowMs / 1000);
    if (n > 0) this.#log.debug({ pruned: n }, 'pruned expired command ids');
  }
}

function parseEnvelope(payload: Uint8Array): { token: string; offer?: string } | Refusal {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return new Refusal('malformed', 'payload is not UTF-8 text');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return new Refusal('malformed', 'payload is not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return new Refusal('malformed', 'payload is not a JSON object {"token": ..., "offer": ...}');
  }
  const env = json as Record<string, unknown>;
  const extra = Object.keys(env).filter((k) => k !== 'token' && k !== 'offer');
  if (extra.length > 0) return new Refusal('malformed', `envelope has unknown member(s): ${extra.slice(0, 5).map((k) => describe(k)).join(', ')}`);
  if (typeof env.token !== 'string') return new Refusal('malformed', 'envelope has no string "token"');
  if (env.offer !== undefined && typeof env.offer !== 'string') return new Refusal('malformed', 'envelope "offer" is not a string');
  // JSON.parse keeps the last of duplicate members; two tokens or two offers in one envelope are
  // a sign of an attempt to smuggle one past a different parser (a broker plugin, a logger).
  const keys = objectOfStringsKeys(text);
  if (keys === undefined || new Set(keys).size !== keys.length) return new Refusal('malformed', 'envelope has a member twice');
  return env.offer === undefined ? { token: env.token } : { token: env.token, offer: env.offer };
}

// Member names of a JSON text known (by JSON.parse) to be an object whose values are all strings.
const ws = /[ \t\n\r]*/y;
const jsonString = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
function objectOfStringsKeys(text: string): string[] | undefined {
  let i = 0;
  const skip = () => {
    ws.lastIndex = i;
    ws.exec(text);
    i = ws.lastIndex;
  };
  const str = (): string | undefined => {
    jsonString.lastIndex = i;
    const m = jsonString.exec(text);
    if (m === null) return undefined;
    i = jsonString.lastIndex;
    return m[0];
  };
  const keys: string[] = [];
  skip();
  if (text[i++] !== '{') return undefined;
  skip();
  if (text[i] === '}') return keys;
  for (;;) {
    skip();
    const k = str();
    if (k === undefined) return undefined;
    keys.push(JSON.parse(k) as string);
    skip();
    if (text[i++] !== ':') return undefined;
    skip();
    if (str() === undefined) return undefined;
    skip();
    const c = text[i++];
    if (c === '}') return keys;
    if (c !== ',') return undefined;
  }
}

/**
 * Phase 2 of malformed: claim types, after the signature. Rules:
 * - iss, sub, jti: non-empty strings (jti at most maxJtiLength characters).
 * - aud: a string. An array (even one holding only this device's id) is malformed, not
 *   wrong_device: the protocol allows exactly one device per token, so an issuer sending an
 *   array is broken, and must not get a token that would also be good on other cameras.
 * - iat, exp, nbf (optional): whole non-negative unix seconds; exp after iat.
 * - act: one of commandActions.
 * - reason: a string when present (absent or "" is reason_missing later).
 * - max_s: stream.start only and required there: a positive whole number of seconds.
 * - offer_sha256: stream.start only, a string when present (absent is offer_mismatch later).
 * - sid: stream.stop only and required there: a non-empty string.
 * - an envelope `offer` only with stream.start.
 * Claims not listed here are ignored, so issuers may add their own (e.g. a ticket number).
 */
function checkClaims(c: Record<string, unknown>, offer: string | undefined): CommandClaims | Refusal {
  const bad = (what: string) => new Refusal('malformed', `token claim ${what}`);
  const nonEmpty = (v: unknown) => typeof v === 'string' && v !== '';
  const seconds = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!nonEmpty(c.iss)) return bad('iss must be a non-empty string');
  if (!nonEmpty(c.sub)) return bad('sub must be a non-empty string');
  if (typeof c.aud !== 'string') return bad(Array.isArray(c.aud) ? 'aud must be a single device id, not an array' : 'aud must be a string');
  if (!seconds(c.iat)) return bad('iat must be whole unix seconds');
  if (!seconds(c.exp)) return bad('exp must be whole unix seconds');
  if (c.nbf !== undefined && !seconds(c.nbf)) return bad('nbf must be whole unix seconds');
  if ((c.exp as number) <= (c.iat as number)) return bad('exp must be after iat');
  if (!nonEmpty(c.jti) || (c.jti as string).length > maxJtiLength) return bad(`jti must be a non-empty string of at most ${maxJtiLength} characters`);
  if (typeof c.act !== 'string' || !(commandActions as readonly string[]).includes(c.act)) {
    return bad(`act must be one of ${commandActions.join(', ')}`);
  }
  const act = c.act as CommandAction;
  if (c.reason !== undefined && typeof c.reason !== 'string') return bad('reason must be a string');
  if (act === 'stream.start') {
    if (c.max_s === undefined) return bad('max_s is required with stream.start');
    if (typeof c.max_s !== 'number' || !Number.isSafeInteger(c.max_s) || c.max_s <= 0) return bad('max_s must be a positive whole number of seconds');
    if (c.offer_sha256 !== undefined && typeof c.offer_sha256 !== 'string') return bad('offer_sha256 must be a string');
  } else {
    if (c.max_s !== undefined) return bad(`max_s is only for stream.start, not ${act}`);
    if (c.offer_sha256 !== undefined) return bad(`offer_sha256 is only for stream.start, not ${act}`);
    if (offer !== undefined) return new Refusal('malformed', `envelope has an offer, which is only for stream.start, not ${act}`);
  }
  if (act === 'stream.stop') {
    if (c.sid === undefined) return bad('sid is required with stream.stop');
    if (!nonEmpty(c.sid)) return bad('sid must be a non-empty string');
  } else if (c.sid !== undefined) {
    return bad(`sid is only for stream.stop, not ${act}`);
  }
  return c as unknown as CommandClaims;
}

function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(utf8.decode(bytes));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

// Unpadded base64url that re-encodes to itself, so one signature has one spelling and a token's
// digest names it exactly (Node's decoder would otherwise ignore stray bits and characters).
function isCanonicalBase64url(seg: string): boolean {
  return base64url.test(seg) && Buffer.from(seg, 'base64url').toString('base64url') === seg;
}

function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('base64url');
}

function clip(s: string): string {
  return s.length > auditStringMax ? `${s.slice(0, auditStringMax)}…` : s;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(clip(v));
  if (v === undefined) return '(none)';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function isoSeconds(unixS: number): string {
  const d = new Date(Math.floor(unixS) * 1000);
  return Number.isNaN(d.getTime()) ? String(unixS) : d.toISOString().replace('.000Z', 'Z');
}
