// The one place that verifies an issuer-signed token, whatever it carries: commands
// (src/command/verifier.ts, typ bwc-cmd+jwt) and ICE-restart answers (src/stream/ice-signalling.ts,
// typ bwc-ice+jwt). Each caller parses its own envelope and checks its own claims; everything a
// signed token needs in order to be believed is here, in this order (the first that applies is
// reported, with the codes of `rejectionCodes` in src/command/types.ts):
//
//   malformed        JWS compact serialization: exactly three segments, each canonical unpadded
//                    base64url, header and payload non-empty; the header a UTF-8 JSON object
//                    without `crit` (no extension is understood; RFC 7515 requires refusing ones
//                    that are not)
//   unsupported_alg  `alg` exactly "EdDSA"
//   wrong_type       `typ` exactly the one the caller expects
//   unknown_key      `kid` absent, not a string, or not in the trust store
//   revoked_key      revoked in the config, or past its `exp` in the trust store
//   bad_signature    jose's compactVerify with the trust store's key
//   malformed        (phase 2, after the signature) the claims: a UTF-8 JSON object; iss, sub and
//                    jti non-empty strings (jti at most maxJtiLength), aud a string (not an array),
//                    iat, exp and nbf (optional) whole non-negative unix seconds, exp after iat;
//                    then the caller's own claims
//   wrong_device     aud is not this device
//   clock_unsynchronised  the device clock is not known to be right and the policy says reject
//   not_yet_valid    iat or nbf later than now + skew
//   expired          exp at or before now - skew, or at or before the issuer's own clock (the
//                    highest iat it has signed, see replay-cache.ts) less skew
//   too_long_lived   exp - iat over the policy's lifetime
//   action_not_permitted  the key is not trusted for the action the caller names
//
// The caller then checks what is its own (reason, offer, session...) and calls admit(), which
// refuses `replayed` (and anything the caller's gate adds, e.g. busy) in one transaction with
// recording the token's id. So someone without an issuer key learns nothing about what the camera
// would make of the claims they might forge: every forgery stops at bad_signature or earlier.
// Header members other than alg/typ/kid/crit (jwk, jku, x5u, x5c, b64...) are ignored: keys come
// from the trust store only.
import { createHash } from 'node:crypto';
import { compactVerify, errors as joseErrors } from 'jose';
import type { Logger } from 'pino';
import type { ReplayCache } from './replay-cache.ts';
import type { TrustedKey, TrustStore } from './trust-store.ts';
import type { CommandAction, RejectionCode, TokenClaims } from './types.ts';
import type { CommandClock } from './clock.ts';

/** The time and clock policy every signed token is held to (the `commands.*` settings). */
export interface TokenPolicy {
  /** Allowed difference between the issuer's clock and ours, seconds. */
  clockSkewS: number;
  /** Longest accepted exp - iat, seconds. */
  maxTokenLifetimeS: number;
  /** What to do when the device clock is not known to be synchronised. */
  unsynchronisedClock: 'reject' | 'accept';
}

export interface SignedTokenVerifierOptions {
  deviceId: string;
  trustStore: Pick<TrustStore, 'lookup'>;
  replayCache: ReplayCache;
  clock: CommandClock;
  policy: TokenPolicy;
  logger: Logger;
}


/**
 * What the audit may say about a token. Claims (issuer, operator, jti) appear only when `verified`
 * is true, i.e. they came from a token whose signature checked out against `kid`. Before that,
 * `unverified` holds what the token's header claimed, which is attacker-controlled and must be
 * logged as such.
 */
export interface TokenAudit {
  verified: boolean;
  issuer?: string;
  operator?: string;
  jti?: string;
  /** The trust-store key that verified the signature (verified only). */
  kid?: string;
  unverified?: { alg?: string; kid?: string; typ?: string };
}

/** A refusal with its code and a message that names the problem (safe to send to the issuer). */
export class TokenRefusal {
  readonly code: RejectionCode;
  readonly message: string;
  constructor(code: RejectionCode, message: string) {
    this.code = code;
    this.message = message;
  }
}

export interface TokenExpectation<C> {
  /** The `typ` header the token must carry. */
  typ: string;
  /**
   * The caller's own claims, after the common ones were typed (phase 2 of malformed): returns the
   * typed claims, or a refusal (normally malformed).
   */
  claims: (raw: Record<string, unknown>) => C | TokenRefusal;
  /** The action the signing key must be trusted for (`bwc_actions` in the trust store). */
  action: (claims: TokenClaims & C) => CommandAction;
}

/** A token whose signature, claims and times checked out; not yet admitted (replay). */
export interface VerifiedToken<C> {
  claims: TokenClaims & C;
  key: TrustedKey;
  /** base64url SHA-256 of the compact token string. */
  tokenDigest: string;
  /** The device clock when verification began, epoch ms. */
  receivedMs: number;
}

/** Longest accepted jti, characters: it becomes a database key. */
export const maxJtiLength = 256;
// Attacker-controlled strings copied into the audit are cut to this many characters.
const auditStringMax = 128;
// Pruning is a single DELETE; once a minute is plenty to keep the table small. Measured on the
// monotonic clock so that moving the wall clock neither hurries nor starves it.
const pruneEveryMs = 60_000;

const base64urlAlphabet = /^[A-Za-z0-9_-]*$/;
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export class SignedTokenVerifier {
  readonly #o: SignedTokenVerifierOptions;
  readonly #log: Logger;
  #lastPruneAt = -Infinity;

  constructor(o: SignedTokenVerifierOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'signed-token' });
  }

  get policy(): TokenPolicy {
    return this.#o.policy;
  }

  /**
   * Everything up to (not including) replay. Fills `audit` as it learns. Throws only on the
   * unexpected (a bug, a database error); the caller turns that into a refusal.
   */
  async verify<C>(token: string, expect: TokenExpectation<C>, audit: TokenAudit): Promise<VerifiedToken<C> | TokenRefusal> {
    const { policy } = this.#o;
    const receivedMs = this.#o.clock.nowMs();
    const nowS = receivedMs / 1000;
    const tokenDigest = sha256(token);

    const parts = token.split('.');
    if (parts.length !== 3) {
      const hint = parts.length === 5 ? ' (five parts: a JWE, not a signed JWS)' : '';
      return new TokenRefusal('malformed', `token is not a JWS compact serialization: ${parts.length} dot-separated parts, expected 3${hint}`);
    }
    const [h64, p64, s64] = parts as [string, string, string];
    for (const [name, seg] of [['header', h64], ['payload', p64]] as const) {
      if (seg === '' || !isCanonicalBase64url(seg)) return new TokenRefusal('malformed', `token ${name} segment is empty or not canonical base64url`);
    }
    // An empty signature is syntactically fine (it is how alg "none" tokens look, and those
    // should be refused as unsupported_alg); with EdDSA it fails as bad_signature.
    if (!isCanonicalBase64url(s64)) return new TokenRefusal('malformed', 'token signature segment is not canonical base64url');
    const header = parseJsonObject(Buffer.from(h64, 'base64url'));
    if (header === undefined) return new TokenRefusal('malformed', 'token header is not a JSON object');
    const unverified: NonNullable<TokenAudit['unverified']> = {};
    for (const m of ['alg', 'kid', 'typ'] as const) {
      if (typeof header[m] === 'string') unverified[m] = clip(header[m]);
    }
    audit.unverified = unverified;
    if ('crit' in header) return new TokenRefusal('malformed', 'token header has "crit": no JWS extensions are supported');

    if (header.alg !== 'EdDSA') {
      return new TokenRefusal('unsupported_alg', `token alg ${describe(header.alg)} is not accepted (only "EdDSA" with Ed25519 keys)`);
    }
    if (header.typ !== expect.typ) return new TokenRefusal('wrong_type', `token typ ${describe(header.typ)} is not "${expect.typ}"`);
    if (typeof header.kid !== 'string' || header.kid === '') return new TokenRefusal('unknown_key', 'token header has no kid naming a trusted key');
    const found = this.#o.trustStore.lookup(header.kid, nowS);
    if (found.status === 'unknown') return new TokenRefusal('unknown_key', `key ${describe(header.kid)} is not in the trust store`);
    if (found.status === 'revoked') {
      return new TokenRefusal(
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
      if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new TokenRefusal('bad_signature', `signature does not verify with key "${key.kid}"`);
      throw err;
    }

    // From here the token is the issuer's: its claims may be reported.
    audit.verified = true;
    audit.kid = key.kid;
    delete audit.unverified;
    const raw = parseJsonObject(claimsBytes);
    if (raw === undefined) return new TokenRefusal('malformed', 'token claims are not a JSON object');
    for (const [field, claim] of [['issuer', 'iss'], ['operator', 'sub'], ['jti', 'jti']] as const) {
      const v = raw[claim];
      if (typeof v === 'string') audit[field] = clip(v);
    }
    const common = checkCommonClaims(raw);
    if (common instanceof TokenRefusal) return common;
    const own = expect.claims(raw);
    if (own instanceof TokenRefusal) return own;
    const claims = { ...own, ...common } as TokenClaims & C;

    if (claims.aud !== this.#o.deviceId) {
      return new TokenRefusal('wrong_device', `token is for device ${describe(claims.aud)}, this is "${this.#o.deviceId}"`);
    }
    if (policy.unsynchronisedClock === 'reject' && !this.#o.clock.synchronised()) {
      return new TokenRefusal('clock_unsynchronised', 'device clock is not synchronised, so token times cannot be checked');
    }
    const skew = policy.clockSkewS;
    const clockNote = `(now ${isoSeconds(nowS)}, skew ${skew} s)`;
    if (claims.iat > nowS + skew) return new TokenRefusal('not_yet_valid', `token issued in the future at ${isoSeconds(claims.iat)} ${clockNote}`);
    if (claims.nbf !== undefined && claims.nbf > nowS + skew) {
      return new TokenRefusal('not_yet_valid', `token not valid before ${isoSeconds(claims.nbf)} ${clockNote}`);
    }
    if (claims.exp <= nowS - skew) return new TokenRefusal('expired', `token expired at ${isoSeconds(claims.exp)} ${clockNote}`);
    const issuerNow = this.#o.replayCache.issuerClock(claims.iss);
    if (issuerNow !== undefined && claims.exp + skew <= issuerNow) return expiredByIssuer(claims, issuerNow);
    if (claims.exp - claims.iat > policy.maxTokenLifetimeS) {
      return new TokenRefusal(
        'too_long_lived',
        `token lifetime ${claims.exp - claims.iat} s (exp - iat) is more than the policy's ${policy.maxTokenLifetimeS} s`,
      );
    }
    const action = expect.action(claims);
    if (!key.actions.has(action)) {
      return new TokenRefusal('action_not_permitted', `key "${key.kid}" may not authorise ${action} (only ${[...key.actions].join(', ')})`);
    }
    return { claims, key, tokenDigest, receivedMs };
  }

  /**
   * Replay, last: refuses `replayed` when the token's (iss, jti) was used before, `expired` when its
   * issuer's clock has passed it meanwhile, or the gate's refusal (checked in the same
   * transaction, e.g. busy); otherwise records the id until exp + skew. undefined = admitted.
   */
  admit(v: VerifiedToken<unknown>, gate?: () => TokenRefusal | undefined): TokenRefusal | undefined {
    const { iss, jti, exp, iat } = v.claims;
    let gated: TokenRefusal | undefined;
    const refused = this.#o.replayCache.admit(iss, jti, exp + this.#o.policy.clockSkewS, iat, () => {
      gated = gate?.();
      return gated?.code;
    });
    if (refused === undefined) {
      this.#maybePrune();
      return undefined;
    }
    if (gated !== undefined && refused === gated.code) return gated;
    if (refused === 'expired') return expiredByIssuer(v.claims, this.#o.replayCache.issuerClock(iss) ?? iat);
    return new TokenRefusal('replayed', `token id ${describe(jti)} from ${describe(iss)} was already used`);
  }

  #maybePrune(): void {
    const now = performance.now();
    if (now - this.#lastPruneAt < pruneEveryMs) return;
    this.#lastPruneAt = now;
    const n = this.#o.replayCache.prune();
    if (n > 0) this.#log.debug({ pruned: n }, 'pruned token ids expired by their issuers\' clocks');
  }
}

function expiredByIssuer(claims: TokenClaims, issuerNow: number): TokenRefusal {
  return new TokenRefusal(
    'expired',
    `token expired at ${isoSeconds(claims.exp)} by its issuer's own clock: ${describe(claims.iss)} has since signed a token at ${isoSeconds(issuerNow)}`,
  );
}

/** Phase 2 of malformed for the claims every token has (see the top of the file). */
function checkCommonClaims(c: Record<string, unknown>): TokenClaims | TokenRefusal {
  const bad = (what: string) => new TokenRefusal('malformed', `token claim ${what}`);
  if (!nonEmptyString(c.iss)) return bad('iss must be a non-empty string');
  if (!nonEmptyString(c.sub)) return bad('sub must be a non-empty string');
  if (typeof c.aud !== 'string') return bad(Array.isArray(c.aud) ? 'aud must be a single device id, not an array' : 'aud must be a string');
  if (!unixSeconds(c.iat)) return bad('iat must be whole unix seconds');
  if (!unixSeconds(c.exp)) return bad('exp must be whole unix seconds');
  if (c.nbf !== undefined && !unixSeconds(c.nbf)) return bad('nbf must be whole unix seconds');
  if ((c.exp as number) <= (c.iat as number)) return bad('exp must be after iat');
  if (!nonEmptyString(c.jti) || (c.jti as string).length > maxJtiLength) return bad(`jti must be a non-empty string of at most ${maxJtiLength} characters`);
  const out: TokenClaims = { iss: c.iss as string, sub: c.sub as string, aud: c.aud, iat: c.iat as number, exp: c.exp as number, jti: c.jti as string };
  if (c.nbf !== undefined) out.nbf = c.nbf as number;
  return out;
}

export function nonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v !== '';
}

function unixSeconds(v: unknown): boolean {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(utf8.decode(bytes));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** UTF-8 text or undefined (a fatal decoder: no replacement characters). */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

// Unpadded base64url that re-encodes to itself, so one signature has one spelling and a token's
// digest names it exactly (Node's decoder would otherwise ignore stray bits and characters).
function isCanonicalBase64url(seg: string): boolean {
  return base64urlAlphabet.test(seg) && Buffer.from(seg, 'base64url').toString('base64url') === seg;
}

export function sha256(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('base64url');
}

export function clip(s: string): string {
  return s.length > auditStringMax ? `${s.slice(0, auditStringMax)}…` : s;
}

/** An attacker-supplied value, quoted and cut short, for a refusal message. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(clip(v));
  if (v === undefined) return '(none)';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}…` : s;
}

function isoSeconds(unixS: number): string {
  const d = new Date(Math.floor(unixS) * 1000);
  return Number.isNaN(d.getTime()) ? String(unixS) : d.toISOString().replace('.000Z', 'Z');
}
