// The one value the recording and streaming modules accept as authority to act. Only the command
// verifier can make one: the constructor demands a module-private symbol, and the only function
// that passes it (mintAuthorisedCommand) is imported by src/command/verifier.ts alone, which
// test/command-verifier.test.ts checks by scanning src/. Consumers must test values with
// isAuthorisedCommand (or instanceof, which is wired to the same check) rather than trusting a
// static type, since a cast can make anything look like an AuthorisedCommand to TypeScript.
import type { CommandAction } from './types.ts';
import type { ReleaseClaim } from '../update/release.ts';

// Not exported: without it the constructor throws, whatever casts a caller uses.
const mintKey: unique symbol = Symbol('AuthorisedCommand.mint');

// Instances made through mintAuthorisedCommand. A WeakSet rather than a brand property because a
// property can be copied onto a forged object; membership here cannot.
const minted = new WeakSet<object>();

export interface AuthorisedCommandFields {
  action: CommandAction;
  /** `sub`: the operator who issued the command. */
  operator: string;
  /** `iss`: the command service that signed it. */
  issuer: string;
  /** A reason code from the policy's allowed list. */
  reason: string;
  jti: string;
  /** Trust-store key that verified the signature. */
  kid: string;
  /** base64url SHA-256 of the compact token string: names the exact token in the audit log. */
  tokenDigest: string;
  /** Token `exp`, epoch milliseconds. */
  expiresAt: number;
  /** Token `iat`, epoch milliseconds. */
  issuedAt: number;
  /** When the verifier accepted it (device clock), epoch milliseconds. */
  receivedAt: number;
  /** stream.start only: `max_s`, seconds. */
  maxDurationS?: number;
  /** stream.start only: the viewer's SDP offer, whose SHA-256 the token binds. */
  offer?: string;
  /** stream.start only: `offer_sha256`, base64url. */
  offerSha256?: string;
  /** stream.stop only: the stream session to stop. */
  sid?: string;
  /** stream.start only: talk-back granted (claim talk: true from a key holding stream.talk). */
  talk?: boolean;
  /** config.apply, trust.update, diag.collect: the signed claim of the action (`config`, `trust`, `diag`), deep-frozen. */
  params?: Readonly<Record<string, unknown>>;
  /** agent.update only: the release, its shape checked (its signature is the updater's to check). */
  release?: ReleaseClaim;
  /** agent.update only: update even while recording or streaming. */
  force?: boolean;
  /** audit.fetch only: the audit seq range to publish again. */
  fromSeq?: number;
  toSeq?: number;
  /** alert.ack only: the alert acknowledged, and whether it is also cleared. */
  alertId?: string;
  clear?: boolean;
  /** recording.bookmark only: the note, if any. */
  note?: string;
}

export class AuthorisedCommand {
  // An ECMAScript private member makes the type nominal: TypeScript refuses an object literal or
  // any other class of the same shape where an AuthorisedCommand is required, because no other
  // value can have this class's #minted. The run-time WeakSet check below still guards casts.
  // test/authorised-command-type.test.ts compiles a forgery and expects tsc to refuse it.
  readonly #minted = true;
  readonly action: CommandAction;
  readonly operator: string;
  readonly issuer: string;
  readonly reason: string;
  readonly jti: string;
  readonly kid: string;
  readonly tokenDigest: string;
  readonly expiresAt: number;
  readonly issuedAt: number;
  readonly receivedAt: number;
  readonly maxDurationS: number | undefined;
  readonly offer: string | undefined;
  readonly offerSha256: string | undefined;
  readonly sid: string | undefined;
  readonly talk: boolean;
  readonly params: Readonly<Record<string, unknown>> | undefined;
  readonly release: ReleaseClaim | undefined;
  readonly force: boolean;
  readonly fromSeq: number | undefined;
  readonly toSeq: number | undefined;
  readonly alertId: string | undefined;
  readonly clear: boolean;
  readonly note: string | undefined;

  constructor(key: symbol, fields: AuthorisedCommandFields) {
    if (key !== mintKey) throw new TypeError('AuthorisedCommand can only be created by the command verifier');
    this.action = fields.action;
    this.operator = fields.operator;
    this.issuer = fields.issuer;
    this.reason = fields.reason;
    this.jti = fields.jti;
    this.kid = fields.kid;
    this.tokenDigest = fields.tokenDigest;
    this.expiresAt = fields.expiresAt;
    this.issuedAt = fields.issuedAt;
    this.receivedAt = fields.receivedAt;
    this.maxDurationS = fields.maxDurationS;
    this.offer = fields.offer;
    this.offerSha256 = fields.offerSha256;
    this.fromSeq = fields.fromSeq;
    this.toSeq = fields.toSeq;
    this.alertId = fields.alertId;
    this.clear = fields.clear ?? false;
    this.note = fields.note;
    this.sid = fields.sid;
    this.talk = fields.talk ?? false;
    // A copy the executor cannot change under the audit's feet, nor the caller after minting.
    this.params = fields.params === undefined ? undefined : deepFreeze(structuredClone(fields.params));
    this.release = fields.release === undefined ? undefined : Object.freeze({ ...fields.release });
    this.force = fields.force ?? false;
    Object.freeze(this);
    minted.add(this);
  }

  /** True only for instances made by the verifier (not copies, subclasses or Object.create fakes). */
  static isAuthorisedCommand(value: unknown): value is AuthorisedCommand {
    return typeof value === 'object' && value !== null && minted.has(value) && #minted in value && value.#minted;
  }

  // So `x instanceof AuthorisedCommand` cannot be fooled by Object.setPrototypeOf/Object.create.
  static [Symbol.hasInstance](value: unknown): boolean {
    return AuthorisedCommand.isAuthorisedCommand(value);
  }

  /** For the audit log: everything except the SDP offer, which is large and not evidence. */
  toJSON(): Omit<AuthorisedCommandFields, 'offer'> {
    const { offer: _offer, ...rest } = { ...this };
    return rest;
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// The class's constructor and prototype are frozen too, so no module can patch isAuthorisedCommand
// or hasInstance to accept its own objects.
Object.freeze(AuthorisedCommand.prototype);
Object.freeze(AuthorisedCommand);

export const isAuthorisedCommand = AuthorisedCommand.isAuthorisedCommand;

/**
 * Makes an AuthorisedCommand. For src/command/verifier.ts ONLY: any other import in src/ fails
 * test/command-verifier.test.ts ("mint is imported only by the verifier").
 */
export function mintAuthorisedCommand(fields: AuthorisedCommandFields): AuthorisedCommand {
  return new AuthorisedCommand(mintKey, fields);
}
