// The issuer keys the camera trusts to sign commands: a JWKS file of Ed25519 public keys, each
// limited to the actions it may authorise (`bwc_actions`) and optionally to a lifetime (`exp`),
// plus a list of revoked key ids that comes from the agent's config rather than the file, so a
// key can be revoked by a config push without re-issuing the trust store.
//
// The file is checked whole at load and any problem is thrown as a TrustStoreError naming the file
// and the key: a camera that silently dropped a bad key would reject commands it should accept
// (or, worse, an operator would "fix" that by loosening something else).
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { canonicalJson } from '../audit/canonical-json.ts';
import { readFileSync } from 'node:fs';
import { commandActions, type CommandAction } from './types.ts';
import { errorMessage } from '../errors.ts';

export class TrustStoreError extends Error {
  override name = 'TrustStoreError';
}

export interface TrustedKey {
  readonly kid: string;
  /** Actions this key may authorise. */
  readonly actions: ReadonlySet<CommandAction>;
  /** Unix seconds after which the key is no longer trusted; undefined = no limit. */
  readonly exp: number | undefined;
  readonly publicKey: KeyObject;
}

/**
 * Outcome of looking a kid up.
 * - `unknown`: not in the file and not in the revocation list.
 * - `revoked`: in the revocation list (whether or not still in the file: the config's revocation
 *   wins, and saying "revoked" rather than "unknown" tells the operator why), or its `exp` has
 *   passed. An expired key is reported as revoked_key, not unknown_key: the camera knows the key
 *   and knows it is no longer valid, which is what an operator needs to hear ("rotate the key"),
 *   whereas unknown_key suggests a wrong or missing trust store.
 */
export type KeyLookup =
  | { status: 'trusted'; key: TrustedKey }
  | { status: 'unknown' }
  | { status: 'revoked'; why: 'revoked' }
  | { status: 'revoked'; why: 'expired'; expiredAt: number; key: TrustedKey };

const base64url = /^[A-Za-z0-9_-]*$/;

export class TrustStore {
  #source: string;
  // Not readonly: a signed trust.update (src/fleet/trust-updates.ts) swaps them in place through
  // replaceWith(), so the command verifier and the ICE-answer verifier, which hold this object,
  // see a revocation on the very next token.
  #keys: ReadonlyMap<string, TrustedKey>;
  #revoked: ReadonlySet<string>;

  private constructor(source: string, keys: ReadonlyMap<string, TrustedKey>, revoked: ReadonlySet<string>) {
    this.#source = source;
    this.#keys = keys;
    this.#revoked = revoked;
  }

  /** Reads and checks a JWKS file; throws TrustStoreError naming the file and the problem. */
  static load(file: string, revokedKids: readonly string[]): TrustStore {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new TrustStoreError(`trust store ${file}: cannot read: ${code ?? errorMessage(err)}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new TrustStoreError(`trust store ${file}: not valid JSON: ${errorMessage(err)}`);
    }
    return TrustStore.fromJwks(json, revokedKids, file);
  }

  static fromJwks(jwks: unknown, revokedKids: readonly string[], source = '(inline JWKS)'): TrustStore {
    const fail = (what: string): never => {
      throw new TrustStoreError(`trust store ${source}: ${what}`);
    };
    if (!Array.isArray(revokedKids) || revokedKids.some((k) => typeof k !== 'string' || k === '')) {
      fail('revoked key ids must be a list of non-empty strings');
    }
    if (!isPlainObject(jwks)) fail('expected a JSON object {"keys": [...]}');
    const list = (jwks as Record<string, unknown>).keys;
    if (!Array.isArray(list)) fail('member "keys" must be an array of JWKs');
    const keys = new Map<string, TrustedKey>();
    (list as unknown[]).forEach((jwk, i) => {
      const key = checkKey(jwk, (what) => fail(`keys[${i}]${describeKid(jwk)}: ${what}`));
      if (keys.has(key.kid)) fail(`keys[${i}]: duplicate kid "${key.kid}"`);
      keys.set(key.kid, key);
    });
    return new TrustStore(source, keys, new Set(revokedKids));
  }

  get source(): string {
    return this.#source;
  }

  /** Takes over another store's keys and revocations (a trust.update, checked whole beforehand). */
  replaceWith(other: TrustStore): void {
    this.#source = other.#source;
    this.#keys = other.#keys;
    this.#revoked = other.#revoked;
  }

  /** The key by kid, whatever its status (revoked and expired included). */
  key(kid: string): TrustedKey | undefined {
    return this.#keys.get(kid);
  }

  /** The public JWKs as a trust-store file would hold them (kid, x, bwc_actions, exp). */
  jwks(): { keys: Record<string, unknown>[] } {
    return {
      keys: [...this.#keys.values()].map((k) => ({
        kty: 'OKP',
        crv: 'Ed25519',
        x: (k.publicKey.export({ format: 'jwk' }) as { x: string }).x,
        kid: k.kid,
        alg: 'EdDSA',
        use: 'sig',
        bwc_actions: [...k.actions],
        ...(k.exp === undefined ? {} : { exp: k.exp }),
      })),
    };
  }

  /** Who may do what, for the audit: every key's kid, actions and exp (sorted by kid), and the revoked kids. */
  describe(): { digest: string; keys: { kid: string; actions: string[]; exp: number | null }[]; revoked: string[] } {
    const keys = [...this.#keys.values()]
      .sort((a, b) => (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0))
      .map((k) => ({ kid: k.kid, actions: [...k.actions].sort(), exp: k.exp ?? null }));
    return { digest: this.digest(), keys, revoked: this.revokedKids() };
  }

  lookup(kid: string, nowS: number): KeyLookup {
    if (this.#revoked.has(kid)) return { status: 'revoked', why: 'revoked' };
    const key = this.#keys.get(kid);
    if (key === undefined) return { status: 'unknown' };
    if (key.exp !== undefined && nowS >= key.exp) return { status: 'revoked', why: 'expired', expiredAt: key.exp, key };
    return { status: 'trusted', key };
  }

  /**
   * What the camera trusts, as one value for the audit trail: base64url SHA-256 of the canonical
   * JSON of every key (kid, public key, bwc_actions, exp; sorted by kid) and the revoked kids. Any
   * change to whom the camera obeys, or for what, changes it; the order in the file does not.
   */
  digest(): string {
    const keys = [...this.#keys.values()]
      .sort((a, b) => (a.kid < b.kid ? -1 : a.kid > b.kid ? 1 : 0))
      .map((k) => ({ kid: k.kid, x: (k.publicKey.export({ format: 'jwk' }) as { x: string }).x, actions: [...k.actions].sort(), exp: k.exp ?? null }));
    const revoked = [...this.#revoked].sort();
    return createHash('sha256').update(canonicalJson({ keys, revoked })).digest('base64url');
  }

  /** Revoked key ids (from the config), sorted. */
  revokedKids(): string[] {
    return [...this.#revoked].sort();
  }

  /** Key ids in the file (including revoked or expired ones). */
  kids(): string[] {
    return [...this.#keys.keys()];
  }

  get size(): number {
    return this.#keys.size;
  }
}

function checkKey(jwk: unknown, fail: (what: string) => never): TrustedKey {
  if (!isPlainObject(jwk)) fail('not a JSON object');
  const k = jwk as Record<string, unknown>;
  if (typeof k.kid !== 'string' || k.kid === '') fail('"kid" must be a non-empty string');
  if (k.kty !== 'OKP' || k.crv !== 'Ed25519') fail(`must be an Ed25519 key ("kty": "OKP", "crv": "Ed25519"), got kty ${JSON.stringify(k.kty)} crv ${JSON.stringify(k.crv)}`);
  // A private key in a file copied to every camera would be a fleet-wide compromise waiting to
  // happen; refuse it rather than ignore it, so whoever built the file finds out.
  if ('d' in k) fail('contains private key material ("d"): a trust store holds public keys only');
  if (typeof k.x !== 'string' || !base64url.test(k.x) || Buffer.from(k.x, 'base64url').length !== 32) {
    fail('"x" must be the 32-byte Ed25519 public key, base64url');
  }
  if (k.alg !== undefined && k.alg !== 'EdDSA') fail(`"alg" must be "EdDSA" when present, got ${JSON.stringify(k.alg)}`);
  if (k.use !== undefined && k.use !== 'sig') fail(`"use" must be "sig" when present, got ${JSON.stringify(k.use)}`);
  if (k.key_ops !== undefined && (!Array.isArray(k.key_ops) || !k.key_ops.includes('verify'))) {
    fail('"key_ops" must include "verify" when present');
  }
  const acts = k.bwc_actions;
  if (!Array.isArray(acts) || acts.length === 0) {
    fail(`"bwc_actions" must be a non-empty array of actions (${commandActions.join(', ')})`);
  }
  const actions = new Set<CommandAction>();
  for (const a of acts as unknown[]) {
    if (typeof a !== 'string' || !(commandActions as readonly string[]).includes(a)) {
      fail(`"bwc_actions": unknown action ${JSON.stringify(a)} (expected one of ${commandActions.join(', ')})`);
    }
    actions.add(a as CommandAction);
  }
  if (k.exp !== undefined && !(Number.isSafeInteger(k.exp) && (k.exp as number) > 0)) {
    fail(`"exp" must be a positive whole number of unix seconds when present, got ${JSON.stringify(k.exp)}`);
  }
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.x as string }, format: 'jwk' });
  } catch (err) {
    fail(`not a usable Ed25519 public key: ${errorMessage(err)}`);
  }
  return { kid: k.kid as string, actions, exp: k.exp as number | undefined, publicKey: publicKey! };
}

function describeKid(jwk: unknown): string {
  const kid = isPlainObject(jwk) ? (jwk as Record<string, unknown>).kid : undefined;
  return typeof kid === 'string' ? ` (kid "${kid}")` : '';
}

function isPlainObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
