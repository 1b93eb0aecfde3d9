// The command verifier against a corpus of hostile commands (one expected rejection code each,
// covering every code in rejectionCodes), its check order, the happy path of each action, the
// replay cache across a restart, the trust store's load errors, and the unforgeable
// AuthorisedCommand.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import t from 'tap';
import { AuthorisedCommand, isAuthorisedCommand } from '../src/command/authorised-command.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { TrustStore, TrustStoreError } from '../src/command/trust-store.ts';
import { rejectionCodes, type CommandAction, type CommandPolicy, type RejectionCode } from '../src/command/types.ts';
import { CommandVerifier, type Verdict, type VerifierOptions } from '../src/command/verifier.ts';
import { openDatabase, type Db } from '../src/store/database.ts';
import {
  base64urlSha256,
  commandClaims,
  envelope,
  flipBit,
  forgeAlgNone,
  forgeHs256WithPublicKey,
  makeCommand,
  makeIssuer,
  replaceSegment,
  sdpOffer,
  signToken,
  signWithJose,
  trustStoreJwks,
  writeTrustStore,
  type Issuer,
  type Overrides,
  testPolicy,
} from './helpers/command-tokens.ts';

const silent = pino({ level: 'silent' });
const deviceId = 'bwc-0042';
// 2026-11-24T10:05:12Z, so messages read like the protocol document's examples.
const nowMs = Date.UTC(2026, 10, 24, 10, 5, 12);
const nowS = nowMs / 1000;
const policy = testPolicy;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bwc-cmd-verifier-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const main = await makeIssuer({ kid: 'cmd-2026-a' });
const recordOnly = await makeIssuer({ kid: 'records-only', actions: ['record.start', 'record.stop'] });
const revoked = await makeIssuer({ kid: 'cmd-2025-leaked' });
const expiredKey = await makeIssuer({ kid: 'cmd-2025-b', exp: nowS - 3600 });
const futureExpiryKey = await makeIssuer({ kid: 'cmd-2027', exp: nowS + 3600 });
// A real Ed25519 key the camera does not trust.
const stranger = await makeIssuer({ kid: 'stranger' });
const revokedKids = ['cmd-2025-leaked', 'removed-and-revoked'];
const trustFile = writeTrustStore(tmp, [main, recordOnly, revoked, expiredKey, futureExpiryKey]);
const trustStore = TrustStore.load(trustFile, revokedKids);

const db: Db = openDatabase({ stateDir: path.join(tmp, 'state') });
t.teardown(() => db.close());

interface Env {
  synchronised?: boolean;
  activeStreams?: number;
  policy?: Partial<CommandPolicy>;
  deviceId?: string;
}

function verifier(env: Env = {}): CommandVerifier {
  const o: VerifierOptions = {
    deviceId: env.deviceId ?? deviceId,
    trustStore,
    policy: { ...policy, ...env.policy },
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => nowMs, synchronised: () => env.synchronised ?? true },
    activeStreams: () => env.activeStreams ?? 0,
    logger: silent,
  };
  return new CommandVerifier(o);
}

/** A valid command of `action` by `issuer` (default main), with claim and header overrides. */
function cmd(action: CommandAction, claims: Overrides = {}, more: { issuer?: Issuer; header?: Overrides; lifetimeS?: number } = {}) {
  return makeCommand({ issuer: more.issuer ?? main, deviceId, action, nowS, overrides: claims, header: more.header, lifetimeS: more.lifetimeS });
}
const claimsFor = (action: CommandAction, overrides: Overrides = {}, issuer: Issuer = main) =>
  commandClaims({ issuer, deviceId, action, nowS, overrides });
const raw = (s: string) => Buffer.from(s);
const b64 = (s: string) => Buffer.from(s).toString('base64url');

interface Case {
  name: string;
  payload: () => Buffer;
  code: RejectionCode;
  env?: Env;
  /** A malformed found after the signature check (a claim), so its audit is verified. */
  post?: boolean;
}

const offer = sdpOffer('corpus');
const otherOffer = sdpOffer('someone-else');
const valid = cmd('record.start');
const validStream = makeCommand({ issuer: main, deviceId, action: 'stream.start', nowS, offer: offer.offer });

const corpus: Case[] = [
  // too_large
  { name: 'payload one byte over the limit', payload: () => Buffer.alloc(policy.maxPayloadBytes + 1, 0x20), code: 'too_large' },
  { name: 'valid token with a huge offer', payload: () => envelope(validStream.token, offer.offer.repeat(200)), code: 'too_large' },
  { name: 'oversized garbage that is also not JSON', payload: () => Buffer.alloc(1 << 20, 0xff), code: 'too_large' },

  // malformed, before the signature: envelope
  { name: 'empty payload', payload: () => Buffer.alloc(0), code: 'malformed' },
  { name: 'not JSON', payload: () => raw('record.start please'), code: 'malformed' },
  { name: 'broken JSON', payload: () => raw(`{"token": "${valid.token}"`), code: 'malformed' },
  { name: 'invalid UTF-8', payload: () => Buffer.concat([raw('{"token": "'), Buffer.from([0xc3, 0x28]), raw('"}')]), code: 'malformed' },
  { name: 'UTF-8 BOM before the JSON', payload: () => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), valid.payload]), code: 'malformed' },
  { name: 'JSON array', payload: () => raw(JSON.stringify([valid.token])), code: 'malformed' },
  { name: 'JSON string', payload: () => raw(JSON.stringify(valid.token)), code: 'malformed' },
  { name: 'JSON null', payload: () => raw('null'), code: 'malformed' },
  { name: 'JSON number', payload: () => raw('42'), code: 'malformed' },
  { name: 'envelope without token', payload: () => raw('{"offer": "v=0"}'), code: 'malformed' },
  { name: 'token not a string', payload: () => raw('{"token": 12345}'), code: 'malformed' },
  { name: 'token an object', payload: () => raw(JSON.stringify({ token: { protected: 'x' } })), code: 'malformed' },
  { name: 'unknown envelope member', payload: () => envelope(valid.token, undefined, { sid: 'x' }), code: 'malformed' },
  { name: 'offer not a string', payload: () => envelope(validStream.token, undefined, { offer: { sdp: offer.offer } }), code: 'malformed' },
  { name: 'duplicate token member', payload: () => raw(`{"token": "${cmd('record.stop').token}", "token": "${valid.token}"}`), code: 'malformed' },
  { name: 'duplicate offer member', payload: () => raw(`{"token": "${validStream.token}", "offer": "x", "offer": ${JSON.stringify(offer.offer)}}`), code: 'malformed' },
  { name: 'duplicate member spelled with an escape', payload: () => raw(`{"token": "${valid.token}", "\\u0074oken": "${valid.token}"}`), code: 'malformed' },

  // malformed, before the signature: JWS syntax and header
  { name: 'token of two segments', payload: () => envelope(valid.token.split('.').slice(0, 2).join('.')), code: 'malformed' },
  { name: 'JWE-like five segments', payload: () => envelope(`${valid.token}.AAAA.BBBB`), code: 'malformed' },
  { name: 'four segments', payload: () => envelope(`${valid.token}.${valid.token.split('.')[2]}`), code: 'malformed' },
  { name: 'JWS JSON serialization instead of compact', payload: () => envelope(JSON.stringify({ protected: valid.token.split('.')[0], payload: valid.token.split('.')[1], signature: valid.token.split('.')[2] })), code: 'malformed' },
  { name: 'empty header segment', payload: () => envelope(replaceSegment(valid.token, 0, '')), code: 'malformed' },
  { name: 'empty payload segment', payload: () => envelope(replaceSegment(valid.token, 1, '')), code: 'malformed' },
  { name: 'standard base64 (+/=) in the header', payload: () => envelope(replaceSegment(valid.token, 0, Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'bwc-cmd+jwt', kid: main.kid, x: '>>>???' })).toString('base64'))), code: 'malformed' },
  { name: 'padded base64url signature', payload: () => envelope(`${valid.token}==`), code: 'malformed' },
  { name: 'non-canonical signature spelling (stray bits)', payload: () => envelope(replaceSegment(valid.token, 2, nonCanonical(valid.token.split('.')[2]!))), code: 'malformed' },
  { name: 'whitespace inside the token', payload: () => envelope(valid.token.replace('.', ' .')), code: 'malformed' },
  { name: 'header not JSON', payload: () => envelope(replaceSegment(valid.token, 0, b64('alg=EdDSA'))), code: 'malformed' },
  { name: 'header a JSON array', payload: () => envelope(replaceSegment(valid.token, 0, b64('["EdDSA"]'))), code: 'malformed' },
  { name: 'header with crit', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { crit: ['b64'], b64: false } })), code: 'malformed' },

  // unsupported_alg
  { name: 'alg none, empty signature', payload: () => envelope(forgeAlgNone(main, claimsFor('record.start'))), code: 'unsupported_alg' },
  { name: 'alg none carrying a real signature', payload: () => envelope(forgeAlgNone(main, claimsFor('record.start'), 'none', valid.token.split('.')[2])), code: 'unsupported_alg' },
  { name: 'alg NONE', payload: () => envelope(forgeAlgNone(main, claimsFor('record.start'), 'NONE')), code: 'unsupported_alg' },
  ...forgeHs256WithPublicKey(main, claimsFor('stream.start', { offer_sha256: offer.sha256 })).map((token, i): Case => ({
    name: `HS256 keyed with the issuer's public key (spelling ${i + 1})`,
    payload: () => envelope(token, offer.offer),
    code: 'unsupported_alg',
  })),
  { name: 'alg RS256', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: 'RS256' } })), code: 'unsupported_alg' },
  { name: 'alg ES256', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: 'ES256' } })), code: 'unsupported_alg' },
  { name: 'alg Ed25519 (fully specified, not the agreed EdDSA)', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: 'Ed25519' } })), code: 'unsupported_alg' },
  { name: 'alg eddsa (case)', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: 'eddsa' } })), code: 'unsupported_alg' },
  { name: 'alg missing', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: undefined } })), code: 'unsupported_alg' },
  { name: 'alg an array', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { alg: ['EdDSA'] } })), code: 'unsupported_alg' },

  // wrong_type
  { name: 'typ JWT', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { typ: 'JWT' } })), code: 'wrong_type' },
  { name: 'typ missing', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { typ: undefined } })), code: 'wrong_type' },
  { name: 'typ with application/ prefix', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { typ: 'application/bwc-cmd+jwt' } })), code: 'wrong_type' },
  { name: 'typ of another token kind (at+jwt)', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { typ: 'at+jwt' } })), code: 'wrong_type' },

  // unknown_key
  { name: 'token from an untrusted key', payload: () => cmd('record.start', {}, { issuer: stranger }).payload, code: 'unknown_key' },
  { name: 'kid missing', payload: () => cmd('record.start', {}, { header: { kid: undefined } }).payload, code: 'unknown_key' },
  { name: 'kid a number', payload: () => cmd('record.start', {}, { header: { kid: 1 } }).payload, code: 'unknown_key' },
  { name: 'kid empty', payload: () => cmd('record.start', {}, { header: { kid: '' } }).payload, code: 'unknown_key' },
  { name: 'kid a prototype member name', payload: () => cmd('record.start', {}, { header: { kid: '__proto__' } }).payload, code: 'unknown_key' },

  // revoked_key
  { name: 'key revoked by config', payload: () => cmd('record.start', {}, { issuer: revoked }).payload, code: 'revoked_key' },
  { name: 'revoked kid no longer in the file', payload: () => cmd('record.start', {}, { header: { kid: 'removed-and-revoked' } }).payload, code: 'revoked_key' },
  { name: 'expired trust-store key', payload: () => cmd('record.start', {}, { issuer: expiredKey }).payload, code: 'revoked_key' },

  // bad_signature
  { name: 'untrusted key signing under a trusted kid', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, signingKey: stranger.privateKey })), code: 'bad_signature' },
  { name: 'tampered payload segment (act changed)', payload: () => envelope(replaceSegment(valid.token, 1, b64(JSON.stringify({ ...valid.claims, act: 'record.stop' })))), code: 'bad_signature' },
  { name: 'tampered payload segment (aud changed to this device)', payload: () => { const other = makeCommand({ issuer: main, deviceId: 'bwc-9999', action: 'record.start', nowS }); return envelope(replaceSegment(other.token, 1, b64(JSON.stringify({ ...other.claims, aud: deviceId })))); }, code: 'bad_signature' },
  { name: 'tampered signature (one bit)', payload: () => envelope(flipBit(valid.token, 2, 77)), code: 'bad_signature' },
  { name: 'signature truncated to 63 bytes', payload: () => envelope(replaceSegment(valid.token, 2, Buffer.from(valid.token.split('.')[2]!, 'base64url').subarray(0, 63).toString('base64url'))), code: 'bad_signature' },
  { name: 'EdDSA with an empty signature', payload: () => envelope(replaceSegment(valid.token, 2, '')), code: 'bad_signature' },
  { name: 'header re-encoded with an extra member', payload: () => envelope(replaceSegment(valid.token, 0, b64(JSON.stringify({ alg: 'EdDSA', typ: 'bwc-cmd+jwt', kid: main.kid, jku: 'https://evil.example/jwks' })))), code: 'bad_signature' },
  { name: 'signature of another token', payload: () => envelope(replaceSegment(valid.token, 2, cmd('record.start').token.split('.')[2]!)), code: 'bad_signature' },
  { name: 'HS256-style forgery relabelled EdDSA', payload: () => envelope(replaceSegment(forgeHs256WithPublicKey(main, valid.claims)[0]!, 0, valid.token.split('.')[0]!)), code: 'bad_signature' },
  { name: 'embedded jwk header naming the attacker key', payload: () => envelope(signToken({ issuer: main, claims: valid.claims, header: { jwk: stranger.publicJwk }, signingKey: stranger.privateKey })), code: 'bad_signature' },

  // malformed, after the signature: claims
  { name: 'claims not JSON', payload: () => envelope(signToken({ issuer: main, claims: {}, rawPayload: 'act=record.start' })), code: 'malformed', post: true },
  { name: 'claims a JSON array', payload: () => envelope(signToken({ issuer: main, claims: {}, rawPayload: '[]' })), code: 'malformed', post: true },
  { name: 'iss a number', payload: () => cmd('record.start', { iss: 7 }).payload, code: 'malformed', post: true },
  { name: 'iss missing', payload: () => cmd('record.start', { iss: undefined }).payload, code: 'malformed', post: true },
  { name: 'sub an array', payload: () => cmd('record.start', { sub: ['PC-4711'] }).payload, code: 'malformed', post: true },
  { name: 'sub empty', payload: () => cmd('record.start', { sub: '' }).payload, code: 'malformed', post: true },
  { name: 'aud a number', payload: () => cmd('record.start', { aud: 42 }).payload, code: 'malformed', post: true },
  { name: 'aud an array holding this device', payload: () => cmd('record.start', { aud: [deviceId] }).payload, code: 'malformed', post: true },
  { name: 'iat a string', payload: () => cmd('record.start', { iat: String(nowS) }).payload, code: 'malformed', post: true },
  { name: 'iat missing', payload: () => cmd('record.start', { iat: undefined }).payload, code: 'malformed', post: true },
  { name: 'exp a string', payload: () => cmd('record.start', { exp: '2026-11-24T10:06:12Z' }).payload, code: 'malformed', post: true },
  { name: 'exp fractional', payload: () => cmd('record.start', { exp: nowS + 60.5 }).payload, code: 'malformed', post: true },
  { name: 'exp before iat', payload: () => cmd('record.start', { exp: nowS - 1 }).payload, code: 'malformed', post: true },
  { name: 'nbf a string', payload: () => cmd('record.start', { nbf: 'now' }).payload, code: 'malformed', post: true },
  { name: 'nbf null', payload: () => cmd('record.start', { nbf: null }).payload, code: 'malformed', post: true },
  { name: 'jti a number', payload: () => cmd('record.start', { jti: 1 }).payload, code: 'malformed', post: true },
  { name: 'jti too long', payload: () => cmd('record.start', { jti: 'j'.repeat(257) }).payload, code: 'malformed', post: true },
  { name: 'act unknown', payload: () => cmd('record.start', { act: 'record.delete' }).payload, code: 'malformed', post: true },
  { name: 'act an object', payload: () => cmd('record.start', { act: { name: 'record.start' } }).payload, code: 'malformed', post: true },
  { name: 'reason a number', payload: () => cmd('record.start', { reason: 1 }).payload, code: 'malformed', post: true },
  { name: 'max_s negative', payload: () => cmd('stream.start', { max_s: -60 }).payload, code: 'malformed', post: true },
  { name: 'max_s zero', payload: () => cmd('stream.start', { max_s: 0 }).payload, code: 'malformed', post: true },
  { name: 'max_s fractional', payload: () => cmd('stream.start', { max_s: 60.5 }).payload, code: 'malformed', post: true },
  { name: 'max_s a string', payload: () => cmd('stream.start', { max_s: '60' }).payload, code: 'malformed', post: true },
  { name: 'max_s missing on stream.start', payload: () => cmd('stream.start', { max_s: undefined }).payload, code: 'malformed', post: true },
  // audit.fetch: a bounded range, so one command cannot make the camera flood its uplink
  { name: 'audit.fetch without a range', payload: () => cmd('audit.fetch', { from_seq: undefined, to_seq: undefined }).payload, code: 'malformed', post: true },
  { name: 'audit.fetch over 1000 entries', payload: () => cmd('audit.fetch', { from_seq: 1, to_seq: 1001 }).payload, code: 'malformed', post: true },
  { name: 'audit.fetch backwards', payload: () => cmd('audit.fetch', { from_seq: 10, to_seq: 9 }).payload, code: 'malformed', post: true },
  { name: 'audit.fetch from 0', payload: () => cmd('audit.fetch', { from_seq: 0, to_seq: 9 }).payload, code: 'malformed', post: true },
  { name: 'audit.fetch fractional', payload: () => cmd('audit.fetch', { from_seq: 1.5, to_seq: 9 }).payload, code: 'malformed', post: true },
  { name: 'a range on record.start', payload: () => cmd('record.start', { from_seq: 1, to_seq: 2 }).payload, code: 'malformed', post: true },
  { name: 'max_s on record.start', payload: () => cmd('record.start', { max_s: 60 }).payload, code: 'malformed', post: true },
  { name: 'offer_sha256 a number', payload: () => cmd('stream.start', { offer_sha256: 5 }).payload, code: 'malformed', post: true },
  { name: 'offer_sha256 on stream.stop', payload: () => cmd('stream.stop', { offer_sha256: offer.sha256 }).payload, code: 'malformed', post: true },
  { name: 'sid a number', payload: () => cmd('stream.stop', { sid: 1 }).payload, code: 'malformed', post: true },
  { name: 'sid missing on stream.stop', payload: () => cmd('stream.stop', { sid: undefined }).payload, code: 'malformed', post: true },
  { name: 'sid on record.stop', payload: () => cmd('record.stop', { sid: 'stream-1' }).payload, code: 'malformed', post: true },
  { name: 'envelope offer with record.start', payload: () => envelope(valid.token, offer.offer), code: 'malformed', post: true },

  // wrong_device
  { name: 'valid token for another device', payload: () => makeCommand({ issuer: main, deviceId: 'bwc-0043', action: 'record.start', nowS }).payload, code: 'wrong_device' },
  { name: 'aud a prefix of this device', payload: () => cmd('record.start', { aud: 'bwc-004' }).payload, code: 'wrong_device' },
  { name: 'aud with different case', payload: () => cmd('record.start', { aud: 'BWC-0042' }).payload, code: 'wrong_device' },

  // clock_unsynchronised
  { name: 'clock not synchronised', payload: () => cmd('record.start').payload, code: 'clock_unsynchronised', env: { synchronised: false } },

  // not_yet_valid
  { name: 'iat in the future beyond skew', payload: () => cmd('record.start', { iat: nowS + 31, exp: nowS + 90 }).payload, code: 'not_yet_valid' },
  { name: 'nbf in the future beyond skew', payload: () => cmd('record.start', { nbf: nowS + 120 }).payload, code: 'not_yet_valid' },

  // expired
  { name: 'expired a minute ago', payload: () => cmd('record.start', { iat: nowS - 120, exp: nowS - 60 }).payload, code: 'expired' },
  { name: 'exp exactly at now - skew', payload: () => cmd('record.start', { iat: nowS - 60, exp: nowS - 30 }).payload, code: 'expired' },

  // too_long_lived
  { name: 'exp - iat one second over the limit', payload: () => cmd('record.start', {}, { lifetimeS: 301 }).payload, code: 'too_long_lived' },
  { name: 'token valid for a year', payload: () => cmd('record.start', {}, { lifetimeS: 365 * 86400 }).payload, code: 'too_long_lived' },

  // action_not_permitted
  { name: 'stream.start by a record-only key', payload: () => cmd('stream.start', {}, { issuer: recordOnly }).payload, code: 'action_not_permitted' },
  { name: 'stream.stop by a record-only key', payload: () => cmd('stream.stop', {}, { issuer: recordOnly }).payload, code: 'action_not_permitted' },
  { name: 'audit.fetch by a record-only key', payload: () => cmd('audit.fetch', {}, { issuer: recordOnly }).payload, code: 'action_not_permitted' },

  // reason_missing, reason_not_allowed
  { name: 'no reason', payload: () => cmd('record.start', { reason: undefined }).payload, code: 'reason_missing' },
  { name: 'empty reason', payload: () => cmd('record.start', { reason: '' }).payload, code: 'reason_missing' },
  { name: 'reason not in the policy', payload: () => cmd('record.start', { reason: 'curiosity' }).payload, code: 'reason_not_allowed' },
  { name: 'reason differing in case', payload: () => cmd('record.start', { reason: 'Officer-Safety' }).payload, code: 'reason_not_allowed' },

  // duration_exceeds_policy
  { name: 'max_s over the policy', payload: () => cmd('stream.start', { max_s: 901 }).payload, code: 'duration_exceeds_policy' },

  // offer_missing, offer_mismatch
  { name: 'stream.start without offer', payload: () => envelope(validStream.token), code: 'offer_missing' },
  { name: 'stream.start with an empty offer', payload: () => envelope(validStream.token, ''), code: 'offer_missing' },
  { name: 'swapped offer', payload: () => envelope(validStream.token, otherOffer.offer), code: 'offer_mismatch' },
  { name: 'offer with a line appended', payload: () => envelope(validStream.token, `${offer.offer}a=candidate:1 1 udp 1 203.0.113.9 9 typ host\r\n`), code: 'offer_mismatch' },
  { name: 'offer_sha256 claim missing', payload: () => envelope(cmd('stream.start', { offer_sha256: undefined }).token, offer.offer), code: 'offer_mismatch' },
  { name: 'offer_sha256 as hex', payload: () => envelope(cmd('stream.start', { offer_sha256: Buffer.from(offer.sha256, 'base64url').toString('hex') }).token, offer.offer), code: 'offer_mismatch' },

  // busy
  { name: 'stream.start while a stream runs', payload: () => cmd('stream.start').payload, code: 'busy', env: { activeStreams: 1 } },

  // order: two things wrong, the earlier code wins
  { name: 'order: oversized and not JSON → too_large', payload: () => Buffer.alloc(policy.maxPayloadBytes + 10, 0x7b), code: 'too_large' },
  { name: 'order: alg none and unknown kid → unsupported_alg', payload: () => envelope(forgeAlgNone(stranger, claimsFor('record.start'))), code: 'unsupported_alg' },
  { name: 'order: wrong typ and unknown kid → wrong_type', payload: () => cmd('record.start', {}, { issuer: stranger, header: { typ: 'JWT' } }).payload, code: 'wrong_type' },
  { name: 'order: revoked key and bad signature → revoked_key', payload: () => envelope(flipBit(cmd('record.start', {}, { issuer: revoked }).token, 2, 5)), code: 'revoked_key' },
  { name: 'order: bad signature over wrong claim types → bad_signature', payload: () => envelope(replaceSegment(valid.token, 1, b64(JSON.stringify({ ...valid.claims, exp: 'soon', act: 42 })))), code: 'bad_signature' },
  { name: 'order: wrong claim type and wrong device → malformed', payload: () => cmd('record.start', { aud: 'bwc-0043', exp: 'soon' }).payload, code: 'malformed', post: true },
  { name: 'order: expired and wrong device → wrong_device', payload: () => cmd('record.start', { aud: 'bwc-0043', iat: nowS - 600, exp: nowS - 500 }).payload, code: 'wrong_device' },
  { name: 'order: expired and clock unsynchronised → clock_unsynchronised', payload: () => cmd('record.start', { iat: nowS - 600, exp: nowS - 500 }).payload, code: 'clock_unsynchronised', env: { synchronised: false } },
  { name: 'order: expired and too long lived → expired', payload: () => cmd('record.start', { iat: nowS - 6000, exp: nowS - 500 }).payload, code: 'expired' },
  { name: 'order: not permitted and no reason → action_not_permitted', payload: () => cmd('stream.start', { reason: undefined }, { issuer: recordOnly }).payload, code: 'action_not_permitted' },
  { name: 'order: too long a stream and swapped offer → duration_exceeds_policy', payload: () => envelope(cmd('stream.start', { max_s: 3600 }).token, otherOffer.offer), code: 'duration_exceeds_policy' },
  { name: 'order: swapped offer while busy → offer_mismatch', payload: () => envelope(validStream.token, otherOffer.offer), code: 'offer_mismatch', env: { activeStreams: 5 } },
];

// A base64url string that decodes to the same bytes but is spelt differently (unused low bits set).
function nonCanonical(seg: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const last = seg.at(-1)!;
  const spare = seg.length % 4 === 2 ? 4 : seg.length % 4 === 3 ? 2 : 0;
  if (spare === 0) throw new Error('segment has no spare bits');
  return seg.slice(0, -1) + alphabet[alphabet.indexOf(last) + 1]!;
}

t.test('hostile corpus: each command gets its expected code', async (t) => {
  t.ok(corpus.length >= 40, `${corpus.length} hostile commands`);
  const covered = new Set(corpus.map((c) => c.code));
  covered.add('replayed'); // stateful: its own tests below
  t.same(
    rejectionCodes.filter((c) => !covered.has(c)),
    [],
    'every rejection code is exercised',
  );
  for (const c of corpus) {
    const payload = c.payload();
    const verdict = await verifier(c.env).verify(payload);
    t.equal(verdict.ok ? 'ACCEPTED' : verdict.code, c.code, c.name);
    if (verdict.ok) continue;
    t.ok(verdict.message.length > 0, `${c.name}: has a message`);
    // Claims are reported only past the signature: codes after bad_signature, and claim-level malformed.
    const verified = c.post === true || rejectionCodes.indexOf(c.code) > rejectionCodes.indexOf('bad_signature');
    t.equal(verdict.audit.verified, verified, `${c.name}: audit ${verified ? 'verified' : 'unverified'}`);
    if (!verified) t.equal(verdict.audit.operator, undefined, `${c.name}: no operator reported`);
    if (c.post) t.match(verdict.message, /^(token claim|envelope has an offer)/, `${c.name}: a claim-level problem`);
  }
});

t.test('happy path of each action', async (t) => {
  const v = verifier();
  for (const action of ['record.start', 'record.stop', 'stream.start', 'stream.stop'] as const) {
    const c = cmd(action, { jti: `happy-${action}` });
    const verdict = await v.verify(c.payload);
    if (!verdict.ok) {
      t.fail(`${action} rejected: ${verdict.code} ${verdict.message}`);
      continue;
    }
    const command = verdict.command;
    t.ok(isAuthorisedCommand(command), `${action}: an AuthorisedCommand`);
    t.match(
      { ...command },
      {
        action,
        operator: 'operator:PC-4711',
        issuer: main.iss,
        reason: 'officer-safety',
        jti: `happy-${action}`,
        kid: main.kid,
        tokenDigest: base64urlSha256(c.token),
        issuedAt: nowMs,
        expiresAt: nowMs + 60_000,
        receivedAt: nowMs,
      },
      `${action}: fields from the verified claims`,
    );
    if (action === 'stream.start') {
      t.equal(command.maxDurationS, 300);
      t.equal(command.offer, c.offer);
      t.equal(command.offerSha256, base64urlSha256(c.offer!));
    } else {
      t.equal(command.offer, undefined);
      t.equal(command.maxDurationS, undefined);
    }
    t.equal(command.sid, action === 'stream.stop' ? 'stream-1' : undefined);
  }
});

t.test('boundaries that must still be accepted', async (t) => {
  const cases: [string, Buffer, Env?][] = [
    // Before the iat of now + skew below: once the issuer has signed at now + 30, a token of its
    // that expired at now - 29 is 59 s expired by its own clock, more than the skew.
    ['exp one second after now - skew', cmd('record.start', { iat: nowS - 200, exp: nowS - 29 }).payload],
    ['iat exactly now + skew', cmd('record.start', { iat: nowS + 30, exp: nowS + 90 }).payload],
    ['nbf exactly now + skew', cmd('record.start', { nbf: nowS + 30 }).payload],
    ['lifetime exactly the limit', cmd('record.start', {}, { lifetimeS: 300 }).payload],
    ['max_s exactly the limit', cmd('stream.start', { max_s: 900 }).payload],
    ['unknown extra claim is ignored', cmd('record.start', { ticket: 'INC-2026-0042' }).payload],
    ['unsynchronised clock under an accept policy', cmd('record.start').payload, { synchronised: false, policy: { unsynchronisedClock: 'accept' } }],
    ['stream.start with one stream running and a limit of two', cmd('stream.start').payload, { activeStreams: 1, policy: { maxConcurrentStreams: 2 } }],
    ['busy does not apply to stream.stop', cmd('stream.stop').payload, { activeStreams: 1 }],
    ['key with a future expiry', cmd('record.start', {}, { issuer: futureExpiryKey }).payload],
    ['record-only key doing record.stop', cmd('record.stop', {}, { issuer: recordOnly }).payload],
    ['payload exactly at the size limit', padTo(cmd('record.start').payload, policy.maxPayloadBytes)],
  ];
  for (const [name, payload, env] of cases) {
    const verdict = await verifier(env).verify(payload);
    t.ok(verdict.ok, `${name}${verdict.ok ? '' : `: ${verdict.code} ${verdict.message}`}`);
  }
});

// Pads the JSON with whitespace (still the same envelope) to exactly `size` bytes.
function padTo(payload: Buffer, size: number): Buffer {
  return Buffer.concat([payload, Buffer.alloc(size - payload.length, 0x20)]);
}

t.test('a token made by jose (as a real issuer would) is accepted', async (t) => {
  const token = await signWithJose(main, claimsFor('record.start'));
  const verdict = await verifier().verify(envelope(token));
  t.ok(verdict.ok, verdict.ok ? 'accepted' : `${verdict.code} ${verdict.message}`);
});

t.test('audit: claims only once the signature is verified', async (t) => {
  const forged = forgeAlgNone(main, claimsFor('stream.start', { sub: 'operator:impostor' }));
  const pre = await verifier().verify(envelope(forged, offer.offer));
  t.match(pre, { ok: false, code: 'unsupported_alg', audit: { verified: false, unverified: { alg: 'none', kid: main.kid, typ: 'bwc-cmd+jwt' } } });
  if (!pre.ok) {
    t.equal(pre.tokenDigest, base64urlSha256(forged), 'names the exact token');
    for (const k of ['issuer', 'operator', 'action', 'reason', 'jti', 'kid'] as const) t.equal(pre.audit[k], undefined, `no unverified ${k}`);
  }

  const tampered = envelope(replaceSegment(valid.token, 1, b64(JSON.stringify({ ...valid.claims, sub: 'operator:impostor' }))));
  const bad = await verifier().verify(tampered);
  t.match(bad, { ok: false, code: 'bad_signature', audit: { verified: false, unverified: { kid: main.kid } } });
  if (!bad.ok) t.equal(bad.audit.operator, undefined, 'tampered operator not reported');

  const elsewhere = makeCommand({ issuer: main, deviceId: 'bwc-0043', action: 'record.start', nowS, overrides: { jti: 'jti-audit' } });
  const post = await verifier().verify(elsewhere.payload);
  t.match(post, {
    ok: false,
    code: 'wrong_device',
    audit: { verified: true, issuer: main.iss, operator: 'operator:PC-4711', action: 'record.start', reason: 'officer-safety', jti: 'jti-audit', kid: main.kid },
    tokenDigest: base64urlSha256(elsewhere.token),
  });
  if (!post.ok) t.equal(post.audit.unverified, undefined);

  const envelopeOnly = await verifier().verify(raw('not json'));
  t.same(envelopeOnly, { ok: false, code: 'malformed', message: 'payload is not JSON', audit: { verified: false } }, 'nothing to say about garbage');
});

t.test('messages name the problem', async (t) => {
  const expired = await verifier().verify(cmd('record.start', { iat: nowS - 672, exp: nowS - 312 }, { lifetimeS: 300 }).payload);
  t.match(expired, { code: 'expired', message: 'token expired at 2026-11-24T10:00:00Z (now 2026-11-24T10:05:12Z, skew 30 s)' });
  const big = await verifier().verify(Buffer.alloc(20_000));
  t.match(big, { code: 'too_large', message: /20000 bytes.*16384/ });
  const alg = await verifier().verify(envelope(forgeHs256WithPublicKey(main, valid.claims)[0]!));
  t.match(alg, { code: 'unsupported_alg', message: /"HS256"/ });
  const kid = await verifier().verify(cmd('record.start', {}, { issuer: expiredKey }).payload);
  t.match(kid, { code: 'revoked_key', message: /"cmd-2025-b" expired at 2026-11-24T09:05:12Z/ });
  const perm = await verifier().verify(cmd('stream.start', {}, { issuer: recordOnly }).payload);
  t.match(perm, { code: 'action_not_permitted', message: /"records-only" may not authorise stream.start/ });
});

t.test('replay: same token refused, across a restart too', async (t) => {
  const stateDir = path.join(tmp, 'replay-state');
  let rdb = openDatabase({ stateDir });
  const make = (d: Db, env: Env = {}) =>
    new CommandVerifier({
      deviceId,
      trustStore,
      policy,
      replayCache: new ReplayCache(d),
      clock: { nowMs: () => nowMs, synchronised: () => true },
      activeStreams: () => env.activeStreams ?? 0,
      logger: silent,
    });
  const c = cmd('record.start');
  t.ok((await make(rdb).verify(c.payload)).ok, 'first use accepted');
  t.match(await make(rdb).verify(c.payload), { ok: false, code: 'replayed', audit: { verified: true, jti: c.claims.jti } }, 'second use replayed');
  // Same token in a differently spelt envelope: still the same jti.
  t.match(await make(rdb).verify(raw(`  {\n"token" : "${c.token}"}`)), { code: 'replayed' });

  rdb.close();
  rdb = openDatabase({ stateDir });
  t.teardown(() => rdb.close());
  t.match(await make(rdb).verify(c.payload), { code: 'replayed' }, 'after restart: still replayed');

  // Same jti from another issuer is a different token id.
  const other = await makeIssuer({ kid: 'second-service', iss: 'https://other-command.example' });
  const ts2 = TrustStore.fromJwks(trustStoreJwks([main, other]), []);
  const v2 = new CommandVerifier({
    deviceId, trustStore: ts2, policy, replayCache: new ReplayCache(rdb),
    clock: { nowMs: () => nowMs, synchronised: () => true }, activeStreams: () => 0, logger: silent,
  });
  t.ok((await v2.verify(cmd('record.start', { jti: c.claims.jti }, { issuer: other }).payload)).ok, 'same jti, other issuer: accepted');

  // A refused command is not recorded: busy now, accepted once the stream has gone.
  const s = cmd('stream.start');
  t.match(await make(rdb, { activeStreams: 1 }).verify(s.payload), { code: 'busy' });
  t.ok((await make(rdb).verify(s.payload)).ok, 'busy did not burn the jti');
  t.match(await make(rdb).verify(s.payload), { code: 'replayed' });

  // Rows live until exp + skew.
  const row = rdb.prepare('SELECT expires FROM command_replay WHERE jti = ?').get(c.claims.jti) as { expires: number };
  t.equal(row.expires, (c.claims.exp as number) + policy.clockSkewS);
});

t.test('concurrent verification of one token accepts it once', async (t) => {
  const c = cmd('record.start');
  const v = verifier();
  const verdicts = await Promise.all(Array.from({ length: 10 }, () => v.verify(c.payload)));
  t.equal(verdicts.filter((x) => x.ok).length, 1);
  t.equal(verdicts.filter((x) => !x.ok && x.code === 'replayed').length, 9);
});

t.test('replay cache prunes by the issuer\'s clock, never the device\'s', async (t) => {
  const rc = new ReplayCache(db);
  t.ok(rc.remember('iss-p', 'old', 1000));
  t.ok(rc.remember('iss-p', 'new', 3000));
  t.notOk(rc.remember('iss-p', 'new', 4000), 'second remember of the same id is refused');
  t.equal(rc.prune(), 0, 'nothing goes while the issuer has no high-water mark');
  rc.raiseIssuerClock('iss-p', 2000);
  rc.raiseIssuerClock('iss-p', 1500);
  t.equal(rc.issuerClock('iss-p'), 2000, 'the mark never goes down');
  t.equal(rc.prune(), 1, 'a row at or below its issuer\'s mark goes');
  t.notOk(rc.seen('iss-p', 'old'));
  t.ok(rc.seen('iss-p', 'new'));
  t.equal(rc.admit('iss-p', 'new', 5000, 2500), 'replayed');
  t.equal(rc.admit('iss-p', 'old', 1000, 900), 'expired', 'a token whose row may have gone is refused as expired by its issuer\'s clock');
  t.equal(rc.admit('iss-p', 'gated', 5000, 2500, () => 'busy'), 'busy');
  t.notOk(rc.seen('iss-p', 'gated'), 'gate refusal records nothing');
  t.equal(rc.admit('iss-p', 'fresh', 5000, 2600), undefined);
  t.equal(rc.issuerClock('iss-p'), 2600, 'an admitted token raises its issuer\'s mark');
  t.equal(rc.issuerClock('iss-other'), undefined);

  // The device clock jumps a day ahead (synchronised, as a spoofed GNSS time would be), the
  // verifier prunes on acceptance, the clock comes back: the captured token is still a replay.
  const issuer = await makeIssuer({ kid: 'prune-issuer', iss: 'https://prune.example' });
  let now = nowMs;
  const v = new CommandVerifier({
    deviceId, trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), []), policy, replayCache: new ReplayCache(db),
    clock: { nowMs: () => now, synchronised: () => true }, activeStreams: () => 0, logger: silent,
  });
  const captured = makeCommand({ issuer, deviceId, action: 'record.start', nowS });
  t.ok((await v.verify(captured.payload)).ok, 'accepted once');
  now += 86_400_000;
  t.match(await v.verify(makeCommand({ issuer, deviceId, action: 'record.stop', nowS }).payload), { code: 'expired' }, 'the issuer\'s fresh token looks expired to the wrong clock');
  new ReplayCache(db).prune();
  now = nowMs + 10_000;
  t.match(await v.verify(captured.payload), { ok: false, code: 'replayed' }, 'a day ahead, pruned, back: still a replay');
  // Now the issuer's clock has moved on a day too, and a token of that day is accepted.
  now += 86_400_000;
  t.ok((await v.verify(makeCommand({ issuer, deviceId, action: 'record.stop', nowS: now / 1000 }).payload)).ok, 'accepted a day ahead (and pruned)');
  now = nowMs + 10_000;
  t.match(await v.verify(captured.payload), { ok: false, code: 'expired', message: /by its issuer's own clock/ }, 'refused: its issuer has since signed a token past its exp');
  t.ok(new ReplayCache(db).issuerClock(issuer.iss)! >= nowS + 86_400, 'the mark is the issuer\'s latest iat');
});

t.test('verify never throws: internal errors become malformed', async (t) => {
  const warnings: unknown[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
  const v = new CommandVerifier({
    deviceId, trustStore, policy, replayCache: new ReplayCache(db),
    clock: { nowMs: () => nowMs, synchronised: () => true },
    activeStreams: () => {
      throw new Error('stream registry gone');
    },
    logger,
  });
  const verdict = await v.verify(cmd('stream.start').payload);
  t.match(verdict, { ok: false, code: 'malformed', message: /internal error/ });
  t.equal(warnings.length, 1);
  t.match(warnings[0], { level: 40, err: { message: 'stream registry gone' } });
  t.match(await v.verify(undefined as unknown as Buffer), { ok: false, code: 'malformed' });
});

t.test('AuthorisedCommand cannot be made outside the verifier', async (t) => {
  const verdict = await verifier().verify(cmd('stream.start').payload);
  if (!verdict.ok) throw new Error(verdict.message);
  const real = verdict.command;
  const fields = { ...real };
  const Ctor = AuthorisedCommand as unknown as new (k: unknown, f: unknown) => AuthorisedCommand;
  t.throws(() => new Ctor(Symbol('AuthorisedCommand.mint'), fields), /only be created by the command verifier/);
  t.throws(() => new Ctor(undefined, fields));
  t.throws(() => {
    class Sub extends (AuthorisedCommand as unknown as new (k: unknown, f: unknown) => object) {
      constructor() {
        super(Symbol.for('AuthorisedCommand.mint'), fields);
      }
    }
    return new Sub();
  }, 'no subclassing around it');

  t.ok(Object.isFrozen(real), 'frozen');
  t.throws(() => {
    (real as { action: string }).action = 'record.start';
  }, TypeError);
  t.equal(real.action, 'stream.start');
  t.ok(Object.isFrozen(AuthorisedCommand), 'class frozen: guards cannot be replaced');
  t.throws(() => {
    (AuthorisedCommand as unknown as { isAuthorisedCommand: () => boolean }).isAuthorisedCommand = () => true;
  });

  t.ok(isAuthorisedCommand(real));
  t.ok(AuthorisedCommand.isAuthorisedCommand(real));
  t.ok(real instanceof AuthorisedCommand);
  const fakes: [string, unknown][] = [
    ['a spread copy', { ...real }],
    ['structuredClone', structuredClone({ ...real })],
    ['Object.create of the prototype', Object.assign(Object.create(AuthorisedCommand.prototype as object) as object, fields)],
    ['a plain object cast', fields as unknown as AuthorisedCommand],
    ['null', null],
    ['a string', 'stream.start'],
  ];
  for (const [name, fake] of fakes) {
    t.notOk(isAuthorisedCommand(fake), `guard refuses ${name}`);
    t.notOk(fake instanceof AuthorisedCommand, `instanceof refuses ${name}`);
  }
  t.notOk('offer' in real.toJSON(), 'toJSON leaves the SDP out');
});

t.test('mintAuthorisedCommand is imported only by the verifier', async (t) => {
  const srcDir = fileURLToPath(new URL('../src/', import.meta.url));
  const allowed = new Set([path.join(srcDir, 'command', 'verifier.ts'), path.join(srcDir, 'command', 'authorised-command.ts')]);
  const offenders: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.[cm]?[jt]s$/.test(name) && !allowed.has(p) && /mintAuthorisedCommand/.test(readFileSync(p, 'utf8'))) offenders.push(path.relative(srcDir, p));
    }
  };
  walk(srcDir);
  t.same(offenders, [], 'no other module in src/ names mintAuthorisedCommand');
  t.match(readFileSync(path.join(srcDir, 'command', 'verifier.ts'), 'utf8'), /import \{ mintAuthorisedCommand/);
});

t.test('trust store: load errors name the file and the problem', async (t) => {
  const write = (name: string, content: string) => {
    const f = path.join(tmp, name);
    writeFileSync(f, content);
    return f;
  };
  const good = main.publicJwk;
  const bad: [string, string, RegExp][] = [
    ['missing.json', '', /missing\.json: cannot read: ENOENT/],
    ['not-json.json', '{"keys": [', /not-json\.json: not valid JSON/],
    ['array.json', '[]', /array\.json: expected a JSON object/],
    ['no-keys.json', '{"key": []}', /no-keys\.json: member "keys" must be an array/],
    ['rsa.json', JSON.stringify({ keys: [{ kty: 'RSA', kid: 'r', n: 'AQAB', e: 'AQAB', bwc_actions: ['record.start'] }] }), /rsa\.json: keys\[0\] \(kid "r"\): must be an Ed25519 key/],
    ['private.json', JSON.stringify({ keys: [{ ...good, d: 'AAAA' }] }), /private\.json: keys\[0\] \(kid "cmd-2026-a"\): contains private key material/],
    ['no-kid.json', JSON.stringify({ keys: [{ ...good, kid: undefined }] }), /no-kid\.json: keys\[0\]: "kid" must be a non-empty string/],
    ['short-x.json', JSON.stringify({ keys: [{ ...good, x: 'AAAA' }] }), /"x" must be the 32-byte Ed25519 public key/],
    ['hs-alg.json', JSON.stringify({ keys: [{ ...good, alg: 'HS256' }] }), /"alg" must be "EdDSA"/],
    ['enc-use.json', JSON.stringify({ keys: [{ ...good, use: 'enc' }] }), /"use" must be "sig"/],
    ['no-actions.json', JSON.stringify({ keys: [{ ...good, bwc_actions: undefined }] }), /"bwc_actions" must be a non-empty array/],
    ['bad-action.json', JSON.stringify({ keys: [{ ...good, bwc_actions: ['record.start', 'camera.wipe'] }] }), /unknown action "camera.wipe"/],
    ['bad-exp.json', JSON.stringify({ keys: [{ ...good, exp: '2027-01-01' }] }), /"exp" must be a positive whole number/],
    ['dup.json', JSON.stringify({ keys: [good, good] }), /dup\.json: keys\[1\]: duplicate kid "cmd-2026-a"/],
  ];
  for (const [name, content, message] of bad) {
    const file = name === 'missing.json' ? path.join(tmp, name) : write(name, content);
    t.throws(() => TrustStore.load(file, []), { name: 'TrustStoreError', message }, name);
  }
  t.throws(() => TrustStore.fromJwks({ keys: [] }, [42 as unknown as string]), TrustStoreError, 'revoked kids must be strings');
  const ok = TrustStore.load(trustFile, revokedKids);
  t.equal(ok.size, 5);
  t.same(ok.kids().sort(), [main.kid, recordOnly.kid, revoked.kid, expiredKey.kid, futureExpiryKey.kid].sort());
  t.equal(ok.lookup('nope', nowS).status, 'unknown');
  t.match(ok.lookup(expiredKey.kid, nowS), { status: 'revoked', why: 'expired' });
  t.match(ok.lookup(main.kid, nowS), { status: 'trusted', key: { kid: main.kid } });
  t.equal(TrustStore.fromJwks({ keys: [] }, []).size, 0, 'an empty trust store is allowed (accepts nothing)');
});

t.test('typed verdicts', async (t) => {
  // Compile-time check that callers can narrow on ok.
  const v: Verdict = await verifier().verify(raw('{}'));
  if (v.ok) t.fail('accepted {}');
  else t.equal(v.code, 'malformed');
});

