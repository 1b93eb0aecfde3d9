// Decides whether an MQTT command payload carries authority to act. It is the only producer of
// AuthorisedCommand values, so everything the camera does on a remote operator's say-so passes
// through verify() below. verify() never throws: whatever arrives gets a verdict.
//
// Checks run in the order of `rejectionCodes` (src/command/types.ts) and the first that applies
// is reported. This file does what is particular to commands: the size limit (too_large), the
// envelope (the payload is UTF-8 JSON, an object with a string `token`, an optional string
// `offer`, no other member and no member twice: malformed), the command's own claims (act,
// reason, max_s, offer_sha256, sid: phase 2 of malformed, see checkClaims), and after the time
// checks reason_missing, reason_not_allowed, duration_exceeds_policy, offer_missing,
// offer_mismatch and busy. Everything a signed token needs in order to be believed (JWS syntax,
// header, trust store, signature, common claims, device, clock, times, key permission, replay)
// is done by SignedTokenVerifier (src/command/signed-token.ts), the same code that verifies
// ICE-restart answers.
import type { Logger } from 'pino';
import { mintAuthorisedCommand, type AuthorisedCommand } from './authorised-command.ts';
import type { ReplayCache } from './replay-cache.ts';
import { clip, decodeUtf8, describe, nonEmptyString, sha256, SignedTokenVerifier, TokenRefusal, type TokenAudit, type TokenExpectation } from './signed-token.ts';
import type { TrustStore } from './trust-store.ts';
import { auditFetchMaxEntries, bookmarkNoteMaxChars, commandActions, grantOnlyActions, commandTokenType, type CommandAction, type CommandClaims, type CommandPolicy, type RejectionCode } from './types.ts';
import type { CommandClock } from './clock.ts';
import { parseReleaseClaim, type ReleaseClaim } from '../update/release.ts';

export { maxJtiLength } from './signed-token.ts';

export interface VerifierOptions {
  deviceId: string;
  trustStore: TrustStore;
  policy: CommandPolicy;
  replayCache: ReplayCache;
  clock: CommandClock;
  /** Live streams now running; stream.start is refused as busy at policy.maxConcurrentStreams. */
  activeStreams: () => number;
  logger: Logger;
  /**
   * The signed-token verifier to share with the ICE-restart answers (the agent passes one);
   * without it one is made from trustStore, replayCache, clock and policy above.
   */
  tokens?: SignedTokenVerifier;
}

/**
 * What the audit log may say about a refused command: TokenAudit (claims only when `verified`,
 * otherwise the attacker-controlled header values apart) plus the command's action and reason.
 */
export interface VerdictAudit extends TokenAudit {
  action?: string;
  reason?: string;
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

export class CommandVerifier {
  readonly #o: VerifierOptions;
  readonly #log: Logger;
  readonly #tokens: SignedTokenVerifier;

  constructor(o: VerifierOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'command-verifier' });
    this.#tokens =
      o.tokens ??
      new SignedTokenVerifier({ deviceId: o.deviceId, trustStore: o.trustStore, replayCache: o.replayCache, clock: o.clock, policy: o.policy, logger: o.logger });
  }

  async verify(payload: Buffer): Promise<Verdict> {
    const audit: VerdictAudit = { verified: false };
    const ctx: { tokenDigest?: string } = {};
    try {
      const outcome = await this.#verify(payload, audit, ctx);
      if (outcome instanceof TokenRefusal) return this.#reject(outcome.code, outcome.message, audit, ctx.tokenDigest);
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

  async #verify(payload: Buffer, audit: VerdictAudit, ctx: { tokenDigest?: string }): Promise<AuthorisedCommand | TokenRefusal> {
    const { policy } = this.#o;

    // too_large: before looking at a single byte of content.
    if (!(payload instanceof Uint8Array)) return new TokenRefusal('malformed', 'payload is not bytes');
    if (payload.byteLength > policy.maxPayloadBytes) {
      return new TokenRefusal('too_large', `payload is ${payload.byteLength} bytes, more than the limit of ${policy.maxPayloadBytes}`);
    }

    // malformed, phase 1: envelope.
    const envelope = parseEnvelope(payload);
    if (envelope instanceof TokenRefusal) return envelope;
    const { token, offer } = envelope;
    ctx.tokenDigest = sha256(token);

    // The token: JWS, header, key, signature, claims, device, clock and times, key permission.
    const expect: TokenExpectation<CommandClaims> = {
      typ: commandTokenType,
      claims: (raw) => {
        for (const [field, claim] of [['action', 'act'], ['reason', 'reason']] as const) {
          const v = raw[claim];
          if (typeof v === 'string') audit[field] = clip(v);
        }
        return checkClaims(raw, offer);
      },
      action: (claims) => claims.act,
    };
    const verified = await this.#tokens.verify(token, expect, audit);
    if (verified instanceof TokenRefusal) return verified;
    const { claims, key } = verified;
    // Talk-back is a grant on top of stream.start: the key must hold stream.talk as well.
    if (claims.talk === true && !key.actions.has('stream.talk')) {
      return new TokenRefusal('action_not_permitted', `key "${key.kid}" may not grant talk-back (claim talk: true needs stream.talk in its bwc_actions; it has ${[...key.actions].join(', ')})`);
    }

    if (claims.reason === undefined || claims.reason === '') return new TokenRefusal('reason_missing', 'token has no reason code');
    // The allowed reasons justify a live view or a recording; audit.fetch only publishes again what
    // the camera published already (its reason, e.g. "audit-gap", is recorded, not policy-checked).
    if (claims.act !== 'audit.fetch' && !policy.allowedReasons.includes(claims.reason)) {
      return new TokenRefusal('reason_not_allowed', `reason ${describe(claims.reason)} is not one of the allowed: ${policy.allowedReasons.join(', ')}`);
    }
    if (claims.act === 'stream.start') {
      if (claims.max_s! > policy.maxStreamDurationS) {
        return new TokenRefusal('duration_exceeds_policy', `max_s ${claims.max_s} s is more than the policy's ${policy.maxStreamDurationS} s`);
      }
      if (offer === undefined || offer === '') return new TokenRefusal('offer_missing', 'stream.start without an SDP offer in the envelope');
      if (claims.offer_sha256 === undefined) return new TokenRefusal('offer_mismatch', 'token has no offer_sha256 to bind the offer');
      if (claims.offer_sha256 !== sha256(offer)) {
        return new TokenRefusal('offer_mismatch', 'the SDP offer does not match the offer_sha256 the token was signed for');
      }
    }

    // replayed and busy, decided and recorded in one transaction.
    const { maxConcurrentStreams } = policy;
    const refused = this.#tokens.admit(verified, () =>
      claims.act === 'stream.start' && this.#o.activeStreams() >= maxConcurrentStreams
        ? new TokenRefusal('busy', `already ${maxConcurrentStreams} live stream(s), the most allowed`)
        : undefined,
    );
    if (refused !== undefined) return refused;

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
      receivedAt: verified.receivedMs,
      ...(claims.act === 'stream.start' ? { maxDurationS: claims.max_s!, offer: offer!, offerSha256: claims.offer_sha256!, talk: claims.talk === true } : {}),
      ...(claims.act === 'stream.stop' ? { sid: claims.sid! } : {}),
      ...(claims.act === 'config.apply' ? { params: claims.config as Record<string, unknown> } : {}),
      ...(claims.act === 'trust.update' ? { params: claims.trust as Record<string, unknown> } : {}),
      ...(claims.act === 'diag.collect' ? { params: (claims.diag ?? {}) as Record<string, unknown> } : {}),
      ...(claims.act === 'agent.update' ? { release: claims.release as ReleaseClaim, force: claims.force === true } : {}),
      ...(claims.act === 'audit.fetch' ? { fromSeq: claims.from_seq!, toSeq: claims.to_seq! } : {}),
      ...(claims.act === 'alert.ack' ? { alertId: claims.alert_id!, clear: claims.clear === true } : {}),
      ...(claims.act === 'recording.bookmark' && claims.note !== undefined ? { note: claims.note } : {}),
    });
  }
}

function parseEnvelope(payload: Uint8Array): { token: string; offer?: string } | TokenRefusal {
  const text = decodeUtf8(payload);
  if (text === undefined) return new TokenRefusal('malformed', 'payload is not UTF-8 text');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return new TokenRefusal('malformed', 'payload is not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return new TokenRefusal('malformed', 'payload is not a JSON object {"token": ..., "offer": ...}');
  }
  const env = json as Record<string, unknown>;
  const extra = Object.keys(env).filter((k) => k !== 'token' && k !== 'offer');
  if (extra.length > 0) return new TokenRefusal('malformed', `envelope has unknown member(s): ${extra.slice(0, 5).map((k) => describe(k)).join(', ')}`);
  if (typeof env.token !== 'string') return new TokenRefusal('malformed', 'envelope has no string "token"');
  if (env.offer !== undefined && typeof env.offer !== 'string') return new TokenRefusal('malformed', 'envelope "offer" is not a string');
  // JSON.parse keeps the last of duplicate members; two tokens or two offers in one envelope are
  // a sign of an attempt to smuggle one past a different parser (a broker plugin, a logger).
  const keys = objectOfStringsKeys(text);
  if (keys === undefined || new Set(keys).size !== keys.length) return new TokenRefusal('malformed', 'envelope has a member twice');
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
 * Phase 2 of malformed, the command's own claims, after SignedTokenVerifier has typed the common
 * ones (iss, sub, aud, iat, exp, nbf, jti: see src/command/signed-token.ts). Rules:
 * - act: one of commandActions.
 * - reason: a string when present (absent or "" is reason_missing later).
 * - max_s: stream.start only and required there: a positive whole number of seconds.
 * - offer_sha256: stream.start only, a string when present (absent is offer_mismatch later).
 * - sid: stream.stop only and required there: a non-empty string.
 * - from_seq, to_seq: audit.fetch only and required there: whole numbers, 1 <= from_seq <= to_seq,
 *   at most auditFetchMaxEntries entries.
 * - an envelope `offer` only with stream.start.
 * - act: never a grant-only action (stream.talk); talk: stream.start only, a boolean.
 * - release: agent.update only and required there: {version, url, sha256, signature}
 *   (src/update/release.ts); force: agent.update only, a boolean.
 * - alert_id: alert.ack only and required there: a non-empty string of at most 64 characters (the
 *   officer extension then refuses any but the open alert's, unknown_alert); clear: alert.ack only,
 *   a boolean.
 * - note: recording.bookmark only: a string of at most bookmarkNoteMaxChars characters (it is
 *   written into the signed manifest as it is, so its size is bounded here).
 * Claims not listed here are ignored, so issuers may add their own (e.g. a ticket number).
 */
function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkClaims(c: Record<string, unknown>, offer: string | undefined): CommandClaims | TokenRefusal {
  const bad = (what: string) => new TokenRefusal('malformed', `token claim ${what}`);
  if (typeof c.act !== 'string' || !(commandActions as readonly string[]).includes(c.act)) {
    return bad(`act must be one of ${commandActions.join(', ')}`);
  }
  const act = c.act as CommandAction;
  if (grantOnlyActions.includes(act)) return bad(`act ${act} is a grant a key holds, not a command: ask for it with claim talk: true on a stream.start`);
  if (c.talk !== undefined) {
    if (act !== 'stream.start') return bad(`talk is only for stream.start, not ${act}`);
    if (typeof c.talk !== 'boolean') return bad('talk must be true or false');
  }
  if (c.reason !== undefined && typeof c.reason !== 'string') return bad('reason must be a string');
  if (act === 'stream.start') {
    if (c.max_s === undefined) return bad('max_s is required with stream.start');
    if (typeof c.max_s !== 'number' || !Number.isSafeInteger(c.max_s) || c.max_s <= 0) return bad('max_s must be a positive whole number of seconds');
    if (c.offer_sha256 !== undefined && typeof c.offer_sha256 !== 'string') return bad('offer_sha256 must be a string');
  } else {
    if (c.max_s !== undefined) return bad(`max_s is only for stream.start, not ${act}`);
    if (c.offer_sha256 !== undefined) return bad(`offer_sha256 is only for stream.start, not ${act}`);
    if (offer !== undefined) return new TokenRefusal('malformed', `envelope has an offer, which is only for stream.start, not ${act}`);
  }
  if (act === 'stream.stop') {
    if (c.sid === undefined) return bad('sid is required with stream.stop');
    if (!nonEmptyString(c.sid)) return bad('sid must be a non-empty string');
  } else if (c.sid !== undefined) {
    return bad(`sid is only for stream.stop, not ${act}`);
  }
  const own = { 'config.apply': 'config', 'trust.update': 'trust', 'diag.collect': 'diag' } as const;
  for (const [action, claim] of Object.entries(own)) {
    if (act !== action && c[claim] !== undefined) return bad(`${claim} is only for ${action}, not ${act}`);
  }
  if (act === 'config.apply') {
    const cfg = c.config;
    if (!isObject(cfg)) return bad('config is required with config.apply: {"document": {...}} or {"patch": {...}, "base": VERSION}');
    if ('document' in cfg) {
      if (!isObject(cfg.document) || Object.keys(cfg).length !== 1) return bad('config.document must be an object, alone');
    } else if ('patch' in cfg) {
      if (!isObject(cfg.patch)) return bad('config.patch must be an object (a JSON merge patch, RFC 7396)');
      if (typeof cfg.base !== 'number' || !Number.isSafeInteger(cfg.base) || cfg.base < 0) return bad('config.base must be the version the patch applies to (a whole number >= 0)');
      if (Object.keys(cfg).length !== 2) return bad('config has members other than patch and base');
    } else {
      return bad('config must hold "document" or "patch"');
    }
  }
  if (act === 'trust.update') {
    const tr = c.trust;
    if (!isObject(tr)) return bad('trust is required with trust.update: {"add": [JWK...], "revoke": [kid...], "expire": [{"kid", "exp"}...]}');
    const extra = Object.keys(tr).filter((k) => k !== 'add' && k !== 'revoke' && k !== 'expire');
    if (extra.length > 0) return bad(`trust has unknown member(s): ${extra.slice(0, 5).map((k) => describe(k)).join(', ')}`);
    if (tr.add !== undefined && !Array.isArray(tr.add)) return bad('trust.add must be an array of JWKs');
    if (tr.revoke !== undefined && (!Array.isArray(tr.revoke) || !tr.revoke.every(nonEmptyString))) return bad('trust.revoke must be an array of key ids');
    if (tr.expire !== undefined && (!Array.isArray(tr.expire) || !tr.expire.every((e) => isObject(e) && nonEmptyString(e.kid) && Number.isSafeInteger(e.exp) && (e.exp as number) > 0))) {
      return bad('trust.expire must be an array of {"kid": string, "exp": unix seconds}');
    }
    if (((tr.add as unknown[] | undefined)?.length ?? 0) + ((tr.revoke as unknown[] | undefined)?.length ?? 0) + ((tr.expire as unknown[] | undefined)?.length ?? 0) === 0) {
      return bad('trust names no change');
    }
  }
  if (act === 'diag.collect' && c.diag !== undefined) {
    if (!isObject(c.diag)) return bad('diag must be an object');
    const max = c.diag.maxBytes;
    if (max !== undefined && (typeof max !== 'number' || !Number.isSafeInteger(max) || max < 1024)) return bad('diag.maxBytes must be a whole number >= 1024');
  }
  if (act === 'agent.update') {
    const release = parseReleaseClaim(c.release);
    if (typeof release === 'string') return bad(release);
    if (c.force !== undefined && typeof c.force !== 'boolean') return bad('force must be true or false');
    return { ...c, release } as unknown as CommandClaims;
  } else if (c.release !== undefined || c.force !== undefined) {
    return bad(`release and force are only for agent.update, not ${act}`);
  }
  if (act === 'audit.fetch') {
    const { from_seq: from, to_seq: to } = c;
    if (from === undefined || to === undefined) return bad('from_seq and to_seq are required with audit.fetch');
    if (typeof from !== 'number' || typeof to !== 'number' || !Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 1 || to < from) {
      return bad('from_seq and to_seq must be whole numbers with 1 <= from_seq <= to_seq');
    }
    if (to - from + 1 > auditFetchMaxEntries) return bad(`from_seq to to_seq spans ${to - from + 1} entries, more than the ${auditFetchMaxEntries} one audit.fetch may ask for`);
  } else if (c.from_seq !== undefined || c.to_seq !== undefined) {
    return bad(`from_seq and to_seq are only for audit.fetch, not ${act}`);
  }
  if (act === 'alert.ack') {
    if (c.alert_id === undefined) return bad('alert_id is required with alert.ack (the alertId of the officer.emergency)');
    if (!nonEmptyString(c.alert_id) || c.alert_id.length > 64) return bad('alert_id must be a non-empty string of at most 64 characters');
    if (c.clear !== undefined && typeof c.clear !== 'boolean') return bad('clear must be true or false');
  } else if (c.alert_id !== undefined || c.clear !== undefined) {
    return bad(`alert_id and clear are only for alert.ack, not ${act}`);
  }
  if (act === 'recording.bookmark') {
    if (c.note !== undefined && typeof c.note !== 'string') return bad('note must be a string');
    if (typeof c.note === 'string' && [...c.note].length > bookmarkNoteMaxChars) return bad(`note is ${[...c.note].length} characters, more than the ${bookmarkNoteMaxChars} a bookmark may carry`);
  } else if (c.note !== undefined) {
    return bad(`note is only for recording.bookmark, not ${act}`);
  }
  return c as unknown as CommandClaims;
}
