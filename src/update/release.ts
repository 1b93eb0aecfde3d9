// What a release is to the agent: a version, a bundle (the tar.gz `make dist-arm64` or
// `scripts/dist-host.sh` makes), its SHA-256, and a signature by a RELEASE key over both. The
// release keys are a trust store of their own (update.releaseKeys), separate from the command
// issuers': whoever may send commands cannot thereby vouch for code, and a release key cannot
// send commands. The signature is a compact JWS (jose, Ed25519, typ bwc-release+jwt) whose payload
// is {"version", "sha256"}; the agent.update command carries it beside the URL.
import { existsSync, readFileSync } from 'node:fs';
import { compactVerify, createLocalJWKSet, type JSONWebKeySet, type JWK } from 'jose';
import { errorMessage } from '../errors.ts';

export const releaseTokenType = 'bwc-release+jwt';
export const versionPattern = /^\d{1,6}\.\d{1,6}\.\d{1,6}$/;
const sha256Hex = /^[0-9a-f]{64}$/;

/** The `release` claim of an agent.update command. */
export interface ReleaseClaim {
  version: string;
  url: string;
  /** Lower-case hex, as sha256sum prints it. */
  sha256: string;
  /** Compact JWS by a release key over {version, sha256}. */
  signature: string;
}

export class ReleaseRefusal extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/** Checks the shape of a `release` claim; a problem is named. */
export function parseReleaseClaim(value: unknown): ReleaseClaim | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'release must be an object {version, url, sha256, signature}';
  const r = value as Record<string, unknown>;
  const extra = Object.keys(r).filter((k) => !['version', 'url', 'sha256', 'signature'].includes(k));
  if (extra.length) return `release has unknown member(s): ${extra.slice(0, 5).join(', ')}`;
  if (typeof r.version !== 'string' || !versionPattern.test(r.version)) return 'release.version must be a version such as 1.4.0';
  if (typeof r.url !== 'string' || r.url.length > 2048) return 'release.url must be a string';
  let url: URL;
  try {
    url = new URL(r.url);
  } catch {
    return 'release.url is not a URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return `release.url must be https: or http:, not ${url.protocol}`;
  if (typeof r.sha256 !== 'string' || !sha256Hex.test(r.sha256)) return 'release.sha256 must be 64 lower-case hex digits';
  if (typeof r.signature !== 'string' || r.signature.length > 4096) return 'release.signature must be a compact JWS';
  return { version: r.version, url: r.url, sha256: r.sha256, signature: r.signature };
}

/** -1, 0 or 1, for x.y.z versions (versionPattern). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i += 1) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

export class ReleaseKeys {
  readonly #jwks: ReturnType<typeof createLocalJWKSet>;
  readonly kids: string[];
  readonly xs: string[];

  constructor(jwks: JSONWebKeySet) {
    for (const k of jwks.keys) {
      if (k.kty !== 'OKP' || k.crv !== 'Ed25519' || !k.x || !k.kid) throw new Error('every release key must be an Ed25519 public JWK with a kid');
      if ((k as JWK).d !== undefined) throw new Error(`release key ${k.kid} holds a private part: only public keys belong on the camera`);
    }
    this.#jwks = createLocalJWKSet(jwks);
    this.kids = jwks.keys.map((k) => k.kid!);
    this.xs = jwks.keys.map((k) => k.x!);
  }

  static load(file: string): ReleaseKeys {
    let parsed: JSONWebKeySet;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8')) as JSONWebKeySet;
    } catch (err) {
      throw new Error(`cannot read ${file}: ${errorMessage(err)}`);
    }
    if (!Array.isArray(parsed?.keys)) throw new Error(`${file} is not a JWKS ({"keys": [...]})`);
    return new ReleaseKeys(parsed);
  }

  /** Resolves when `claim.signature` is a release key's signature over exactly this version and SHA-256. */
  async verify(claim: ReleaseClaim): Promise<{ kid: string }> {
    let result;
    try {
      result = await compactVerify(claim.signature, this.#jwks, { algorithms: ['EdDSA'] });
    } catch (err) {
      throw new ReleaseRefusal('bad_release_signature', `the release signature does not verify against update.releaseKeys: ${errorMessage(err)}`);
    }
    if (result.protectedHeader.typ !== releaseTokenType) {
      throw new ReleaseRefusal('bad_release_signature', `the release signature's typ is not ${releaseTokenType}`);
    }
    let signed: { version?: unknown; sha256?: unknown };
    try {
      signed = JSON.parse(new TextDecoder().decode(result.payload)) as typeof signed;
    } catch {
      throw new ReleaseRefusal('bad_release_signature', 'the release signature does not sign a JSON object');
    }
    if (signed.version !== claim.version || signed.sha256 !== claim.sha256) {
      throw new ReleaseRefusal(
        'bad_release_signature',
        `the release key signed version ${String(signed.version)} with sha256 ${String(signed.sha256)}, not the version ${claim.version} and sha256 ${claim.sha256} the command names`,
      );
    }
    return { kid: result.protectedHeader.kid ?? '' };
  }
}

/**
 * Release keys that are also command issuer keys (the same kid or the same public key) in the
 * trust-store file: a key in both would let whoever sends commands vouch for code.
 */
export function keysSharedWithIssuers(releaseKeys: ReleaseKeys, trustStoreFile: string | undefined): string[] {
  if (!trustStoreFile || !existsSync(trustStoreFile)) return [];
  let issuers: { kid?: unknown; x?: unknown }[];
  try {
    issuers = (JSON.parse(readFileSync(trustStoreFile, 'utf8')) as { keys?: { kid?: unknown; x?: unknown }[] }).keys ?? [];
  } catch {
    return [];
  }
  const kids = new Set(issuers.map((k) => k.kid));
  const xs = new Set(issuers.map((k) => k.x));
  return releaseKeys.kids.filter((kid, i) => kids.has(kid) || xs.has(releaseKeys.xs[i]));
}
