// Makes signed command tokens for tests, good and hostile: issuer key pairs (jose), trust-store
// JWKS files, tokens with any header or claim replaced or removed, forgeries (alg none, HS256 keyed
// with the issuer's public key, unknown kids...), envelopes and SDP offers. General on purpose: the
// end-to-end tests of streaming and recording build their commands with it too.
//
// Signing is done by hand (node:crypto over the exact header and payload bytes) rather than with
// jose's signers, because jose refuses to produce most of the broken tokens needed here;
// signWithJose() makes a token the way a real issuer would, to show the two agree.
import { createHash, createHmac, KeyObject, randomUUID, sign } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { commandActions, commandTokenType, defaultReasonCodes, type CommandAction, type CommandPolicy } from '../../src/command/types.ts';

/** The policy the verifier tests, the fuzzing and the verification benchmark share. */
export const testPolicy: CommandPolicy = {
  allowedReasons: defaultReasonCodes,
  maxTokenLifetimeS: 300,
  maxStreamDurationS: 900,
  clockSkewS: 30,
  maxConcurrentStreams: 1,
  unsynchronisedClock: 'reject',
  maxPayloadBytes: 16 * 1024,
};

export interface Issuer {
  kid: string;
  /** `iss` its tokens carry by default. */
  iss: string;
  privateKey: KeyObject;
  /** Public JWK as it goes into the trust store (kid, bwc_actions, exp included). */
  publicJwk: JWK & { kid: string; bwc_actions: CommandAction[]; exp?: number };
}

export interface IssuerOptions {
  kid?: string;
  iss?: string;
  actions?: readonly CommandAction[];
  /** Key expiry in the trust store, unix seconds. */
  exp?: number;
}

let issuerCount = 0;

export async function makeIssuer(options: IssuerOptions = {}): Promise<Issuer> {
  const { publicKey, privateKey } = await generateKeyPair('Ed25519', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = options.kid ?? `issuer-${++issuerCount}`;
  const publicJwk: Issuer['publicJwk'] = {
    kty: 'OKP',
    crv: 'Ed25519',
    x: jwk.x!,
    kid,
    alg: 'EdDSA',
    use: 'sig',
    bwc_actions: [...(options.actions ?? commandActions)],
  };
  if (options.exp !== undefined) publicJwk.exp = options.exp;
  return { kid, iss: options.iss ?? 'https://command.example.police.uk', privateKey: KeyObject.from(privateKey), publicJwk };
}

export function trustStoreJwks(issuers: readonly Issuer[]): { keys: Issuer['publicJwk'][] } {
  return { keys: issuers.map((i) => i.publicJwk) };
}

/** Writes a trust-store file into dir; returns its path. */
export function writeTrustStore(dir: string, issuers: readonly Issuer[], fileName = 'command-trust.jwks.json'): string {
  const file = path.join(dir, fileName);
  writeFileSync(file, `${JSON.stringify(trustStoreJwks(issuers), null, 2)}\n`);
  return file;
}

export function base64urlSha256(s: string | Uint8Array): string {
  return createHash('sha256').update(s).digest('base64url');
}

/** A recvonly-looking WebRTC SDP offer (what a fleet viewer sends) and its offer_sha256. */
export function sdpOffer(seed: string = randomUUID()): { offer: string; sha256: string } {
  const offer = [
    'v=0',
    `o=- ${BigInt(`0x${createHash('sha256').update(seed).digest('hex').slice(0, 15)}`)} 2 IN IP4 127.0.0.1`,
    's=-',
    't=0 0',
    'a=group:BUNDLE 0 1',
    'a=extmap-allow-mixed',
    'a=msid-semantic: WMS',
    'm=video 9 UDP/TLS/RTP/SAVPF 96 97',
    'c=IN IP4 0.0.0.0',
    'a=rtcp:9 IN IP4 0.0.0.0',
    `a=ice-ufrag:${seed.replace(/[^A-Za-z0-9]/g, '').slice(0, 8).padEnd(4, 'x')}`,
    'a=ice-pwd:asd88fgpdd777uzjYhagZg3pQ7vqt2Ax',
    'a=ice-options:trickle',
    'a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08',
    'a=setup:actpass',
    'a=mid:0',
    'a=recvonly',
    'a=rtcp-mux',
    'a=rtpmap:96 H264/90000',
    'a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f',
    'a=rtpmap:97 rtx/90000',
    'a=fmtp:97 apt=96',
    'm=audio 9 UDP/TLS/RTP/SAVPF 111',
    'c=IN IP4 0.0.0.0',
    'a=mid:1',
    'a=recvonly',
    'a=rtcp-mux',
    'a=rtpmap:111 opus/48000/2',
    '',
  ].join('\r\n');
  return { offer, sha256: base64urlSha256(offer) };
}

/** An object override: a member set to undefined is removed, others replace or add. */
export type Overrides = Record<string, unknown>;

export function applyOverrides(base: Record<string, unknown>, overrides: Overrides = {}): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete out[k];
    else out[k] = v;
  }
  return out;
}

export interface ClaimsOptions {
  issuer: Issuer;
  deviceId: string;
  action: CommandAction;
  /** Unix seconds; default now. */
  nowS?: number;
  /** exp - iat, seconds; default 60. */
  lifetimeS?: number;
  /** stream.start: the offer whose hash is bound; default a fresh sdpOffer(). */
  offer?: string;
  overrides?: Overrides;
}

/** Well-formed claims for an action (before overrides). */
export function commandClaims(o: ClaimsOptions): Record<string, unknown> {
  const iat = Math.floor(o.nowS ?? Date.now() / 1000);
  const base: Record<string, unknown> = {
    iss: o.issuer.iss,
    sub: 'operator:PC-4711',
    aud: o.deviceId,
    iat,
    exp: iat + (o.lifetimeS ?? 60),
    jti: randomUUID(),
    act: o.action,
    reason: 'officer-safety',
  };
  if (o.action === 'stream.start') {
    base.max_s = 300;
    base.offer_sha256 = base64urlSha256(o.offer ?? sdpOffer().offer);
  }
  if (o.action === 'stream.stop') base.sid = 'stream-1';
  if (o.action === 'audit.fetch') Object.assign(base, { reason: 'audit-gap', from_seq: 1, to_seq: 100 });
  return applyOverrides(base, o.overrides);
}

export function defaultHeader(issuer: Issuer): Record<string, unknown> {
  return { alg: 'EdDSA', typ: commandTokenType, kid: issuer.kid };
}

const b64 = (s: string | Uint8Array) => Buffer.from(s).toString('base64url');

export interface SignOptions {
  issuer: Issuer;
  claims: Record<string, unknown>;
  /** Header overrides on top of defaultHeader(issuer). */
  header?: Overrides;
  /** Exact header JSON text, instead of the header object. */
  rawHeader?: string;
  /** Exact payload text (need not be JSON), instead of the claims. */
  rawPayload?: string;
  /** Sign with this key instead of the issuer's (a key the trust store does not hold). */
  signingKey?: KeyObject;
}

/** Ed25519 signature over whatever header and payload are given (alg in the header is not consulted). */
export function signToken(o: SignOptions): string {
  const h = b64(o.rawHeader ?? JSON.stringify(applyOverrides(defaultHeader(o.issuer), o.header)));
  const p = b64(o.rawPayload ?? JSON.stringify(o.claims));
  const sig = sign(null, Buffer.from(`${h}.${p}`), o.signingKey ?? o.issuer.privateKey);
  return `${h}.${p}.${b64(sig)}`;
}

/** The classic key-confusion forgery: HS256 with the issuer's public key bytes as the HMAC secret. */
export function forgeHs256WithPublicKey(issuer: Issuer, claims: Record<string, unknown>, header: Overrides = {}): string[] {
  const h = b64(JSON.stringify(applyOverrides({ ...defaultHeader(issuer), alg: 'HS256' }, header)));
  const p = b64(JSON.stringify(claims));
  const input = `${h}.${p}`;
  // Every spelling of "the public key" a confused verifier might use as the secret.
  const secrets = [Buffer.from(issuer.publicJwk.x!, 'base64url'), Buffer.from(issuer.publicJwk.x!), Buffer.from(JSON.stringify(issuer.publicJwk))];
  return secrets.map((s) => `${input}.${b64(createHmac('sha256', s).update(input).digest())}`);
}

/** alg "none" with an empty signature (and optionally a signature anyway). */
export function forgeAlgNone(issuer: Issuer, claims: Record<string, unknown>, algSpelling = 'none', signature = ''): string {
  const h = b64(JSON.stringify({ ...defaultHeader(issuer), alg: algSpelling }));
  return `${h}.${b64(JSON.stringify(claims))}.${signature}`;
}

/** How a real issuer would sign (jose's SignJWT), for interoperability checks. */
export async function signWithJose(issuer: Issuer, claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: commandTokenType, kid: issuer.kid }).sign(issuer.privateKey);
}

/** The MQTT payload: {"token", "offer"?} plus any extra members. */
export function envelope(token: string, offer?: string, extra: Overrides = {}): Buffer {
  return Buffer.from(JSON.stringify(applyOverrides(offer === undefined ? { token } : { token, offer }, extra)));
}

export interface Command {
  token: string;
  claims: Record<string, unknown>;
  offer: string | undefined;
  payload: Buffer;
}

/** A complete, valid command (unless overrides break it): token, claims, offer and payload. */
export function makeCommand(o: ClaimsOptions & { header?: Overrides }): Command {
  const offer = o.action === 'stream.start' ? (o.offer ?? sdpOffer().offer) : o.offer;
  const claims = commandClaims({ ...o, offer });
  const token = signToken({ issuer: o.issuer, claims, header: o.header });
  return { token, claims, offer, payload: envelope(token, offer) };
}

/** Replaces one of the three segments of a compact token (0 header, 1 payload, 2 signature). */
export function replaceSegment(token: string, index: 0 | 1 | 2, segment: string): string {
  const parts = token.split('.');
  parts[index] = segment;
  return parts.join('.');
}

/** Flips one bit of a segment's decoded bytes and re-encodes it. */
export function flipBit(token: string, index: 0 | 1 | 2, bit: number): string {
  const seg = token.split('.')[index]!;
  const bytes = Buffer.from(seg, 'base64url');
  if (bytes.length === 0) return token;
  const i = Math.floor(bit / 8) % bytes.length;
  bytes[i] = bytes[i]! ^ (1 << (bit % 8));
  return replaceSegment(token, index, bytes.toString('base64url'));
}

/** The claims of a token as decoded JSON (no verification). */
export function decodeClaims(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}
