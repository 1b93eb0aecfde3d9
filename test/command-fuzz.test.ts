// Property tests of the whole path payload bytes → verdict: whatever arrives, verify() resolves
// (never throws), answers with a code from rejectionCodes, and accepts nothing that the issuer did
// not sign exactly as sent. Run counts are bounded so the file stays well under half a minute.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import t from 'tap';
import { isAuthorisedCommand, type AuthorisedCommand } from '../src/command/authorised-command.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { commandTokenType, rejectionCodes, type CommandAction } from '../src/command/types.ts';
import { CommandVerifier, type Verdict } from '../src/command/verifier.ts';
import { openDatabase } from '../src/store/database.ts';
import {
  applyOverrides,
  commandClaims,
  defaultHeader,
  envelope,
  flipBit,
  makeCommand,
  makeIssuer,
  replaceSegment,
  sdpOffer,
  signToken,
  trustStoreJwks,
  testPolicy,
} from './helpers/command-tokens.ts';

const deviceId = 'bwc-0042';
const nowMs = Date.UTC(2026, 10, 24, 10, 5, 12);
const nowS = nowMs / 1000;
const policy = testPolicy;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bwc-cmd-fuzz-'));
const db = openDatabase({ stateDir: tmp });
t.teardown(() => {
  db.close();
  rmSync(tmp, { recursive: true, force: true });
});

const issuer = await makeIssuer({ kid: 'fuzz-issuer' });
const verifier = new CommandVerifier({
  deviceId,
  trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), []),
  policy,
  replayCache: new ReplayCache(db),
  clock: { nowMs: () => nowMs, synchronised: () => true },
  activeStreams: () => 0,
  logger: pino({ level: 'silent' }),
});

const codes = new Set<string>(rejectionCodes);
const actions: CommandAction[] = ['record.start', 'record.stop', 'stream.start', 'stream.stop'];

/** verify() must resolve, and a rejection must carry a known code and a message. */
async function check(payload: Buffer): Promise<Verdict> {
  const verdict = await verifier.verify(payload);
  if (verdict.ok) {
    if (!isAuthorisedCommand(verdict.command)) throw new Error('accepted without an AuthorisedCommand');
  } else {
    if (!codes.has(verdict.code)) throw new Error(`unknown code ${String(verdict.code)}`);
    if (typeof verdict.message !== 'string' || verdict.message === '') throw new Error('rejection without a message');
  }
  return verdict;
}

function mustReject(verdict: Verdict, what: string): void {
  if (verdict.ok) throw new Error(`accepted ${what}: ${JSON.stringify(verdict.command)}`);
}

const jsonValue = fc.jsonValue({ maxDepth: 3 });
const b64url = (s: string) => Buffer.from(s).toString('base64url');
const segment = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.split('')), maxLength: 120 }),
  jsonValue.map((v) => b64url(JSON.stringify(v))),
  fc.string({ maxLength: 40 }),
);
// Header objects that often look right, so the property reaches the key lookup and signature.
const headerLike = fc.record(
  {
    alg: fc.oneof(fc.constantFrom('EdDSA', 'none', 'HS256', 'RS256', 'Ed25519'), jsonValue),
    typ: fc.oneof(fc.constant(commandTokenType), jsonValue),
    kid: fc.oneof(fc.constantFrom(issuer.kid, 'other'), jsonValue),
  },
  { requiredKeys: [] },
);
const jwsLike = fc.oneof(
  fc.tuple(segment, segment, segment).map((p) => p.join('.')),
  fc.tuple(headerLike, jsonValue, segment).map(([h, p, s]) => `${b64url(JSON.stringify(h))}.${b64url(JSON.stringify(p))}.${s}`),
  fc.array(segment, { maxLength: 6 }).map((p) => p.join('.')),
);

t.test('arbitrary bytes are rejected, never thrown on', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
      mustReject(await check(Buffer.from(bytes)), 'random bytes');
    }),
    { numRuns: 1000 },
  );
});

t.test('arbitrary JSON envelopes are rejected', async () => {
  const env = fc.oneof(
    jsonValue,
    fc.record({ token: fc.oneof(jwsLike, jsonValue), offer: fc.oneof(fc.string(), jsonValue) }, { requiredKeys: [] }),
    fc.tuple(fc.dictionary(fc.string({ maxLength: 8 }), jsonValue, { maxKeys: 4 }), jwsLike).map(([extra, token]) => ({ ...extra, token })),
  );
  await fc.assert(
    fc.asyncProperty(env, async (e) => {
      mustReject(await check(Buffer.from(JSON.stringify(e) ?? 'undefined')), 'an arbitrary envelope');
    }),
    { numRuns: 1000 },
  );
});

// One valid command of each action; the properties below mutate them and must never be accepted.
const offer = sdpOffer('fuzz');
const bases = actions.map((action) => makeCommand({ issuer, deviceId, action, nowS, offer: action === 'stream.start' ? offer.offer : undefined }));

t.test('the unmutated bases would be accepted (so rejections below are the mutation\'s doing)', async (t) => {
  const probe = new CommandVerifier({
    deviceId,
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), []),
    policy,
    replayCache: new ReplayCache(openDatabase({ stateDir: path.join(tmp, 'probe') })),
    clock: { nowMs: () => nowMs, synchronised: () => true },
    activeStreams: () => 0,
    logger: pino({ level: 'silent' }),
  });
  for (const b of bases) t.ok((await probe.verify(b.payload)).ok, String(b.claims.act));
});

t.test('bit flips in any token segment are rejected', async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(bases.length - 1), fc.constantFrom(0 as const, 1 as const, 2 as const), fc.nat(8 * 1024), async (i, seg, bit) => {
      const b = bases[i]!;
      const token = flipBit(b.token, seg, bit);
      mustReject(await check(envelope(token, b.offer)), `a bit flip in segment ${seg}`);
    }),
    { numRuns: 1000 },
  );
});

t.test('bit flips anywhere in the payload bytes are rejected', async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(bases.length - 1), fc.nat(), fc.nat(7), async (i, at, bit) => {
      const bytes = Buffer.from(bases[i]!.payload);
      const pos = at % bytes.length;
      bytes[pos] = bytes[pos]! ^ (1 << bit);
      mustReject(await check(bytes), `payload bit flip at ${pos}`);
    }),
    { numRuns: 1000 },
  );
});

const claimNames = ['iss', 'sub', 'aud', 'iat', 'exp', 'nbf', 'jti', 'act', 'reason', 'max_s', 'offer_sha256', 'sid'] as const;
const replacement = fc.oneof(
  jsonValue,
  fc.constant(undefined), // removes the claim
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 20 }),
  fc.constantFrom(deviceId, 'record.stop', 'stream.start', 'public-safety', nowS, nowS + 100, -1, 0, 1e21),
);

t.test('claims replaced without re-signing: bad_signature', async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(bases.length - 1), fc.constantFrom(...claimNames), replacement, async (i, claim, value) => {
      const b = bases[i]!;
      const claims = applyOverrides(b.claims, { [claim]: value });
      const forged = replaceSegment(b.token, 1, b64url(JSON.stringify(claims)));
      // Removing an absent claim or writing the same value back is no mutation.
      fc.pre(forged !== b.token);
      const verdict = await check(envelope(forged, b.offer));
      mustReject(verdict, `claim ${claim} replaced`);
      if (!verdict.ok && verdict.code !== 'bad_signature') {
        throw new Error(`claim ${claim} = ${JSON.stringify(value)}: ${verdict.code}, expected bad_signature`);
      }
    }),
    { numRuns: 1000 },
  );
});

// What an accepted command's fields must then equal, per replaced claim.
const field: Partial<Record<(typeof claimNames)[number], (c: AuthorisedCommand) => unknown>> = {
  iss: (c) => c.issuer,
  sub: (c) => c.operator,
  aud: () => deviceId,
  iat: (c) => c.issuedAt / 1000,
  exp: (c) => c.expiresAt / 1000,
  jti: (c) => c.jti,
  act: (c) => c.action,
  reason: (c) => c.reason,
  max_s: (c) => c.maxDurationS,
  offer_sha256: (c) => c.offerSha256,
  sid: (c) => c.sid,
};

t.test('claims replaced by arbitrary values and properly signed: well-typed or refused', async (t) => {
  let n = 0;
  const seen = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...actions), fc.constantFrom(...claimNames), replacement, async (action, claim, value) => {
      const claims = commandClaims({ issuer, deviceId, action, nowS, offer: offer.offer, overrides: { jti: `signed-${++n}` } });
      const mutated = applyOverrides(claims, { [claim]: value });
      const token = signToken({ issuer, claims: mutated });
      const verdict = await check(envelope(token, action === 'stream.start' ? offer.offer : undefined));
      const outcome = verdict.ok ? 'accepted' : verdict.code;
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1);
      if (!verdict.ok) return;
      // Accepted: only when the replacement is a value of the claim's type that the policy allows.
      const get = field[claim];
      if (value === undefined) {
        if (claim !== 'nbf' && !(claim === 'max_s' && action !== 'stream.start') && !(claim === 'offer_sha256' && action !== 'stream.start') && !(claim === 'sid' && action !== 'stream.stop')) {
          throw new Error(`accepted without ${claim}`);
        }
      } else if (get !== undefined) {
        if (JSON.stringify(get(verdict.command)) !== JSON.stringify(value)) {
          throw new Error(`accepted ${claim} = ${JSON.stringify(value)} but the command says ${JSON.stringify(get(verdict.command))}`);
        }
      } else if (claim === 'nbf' && !(Number.isSafeInteger(value) && (value as number) <= nowS + policy.clockSkewS)) {
        throw new Error(`accepted nbf = ${JSON.stringify(value)}`);
      }
    }),
    { numRuns: 1000 },
  );
  // Shows the property reaches past the signature (varies with the seed, so not asserted).
  t.comment(`outcomes: ${[...seen].map(([k, v]) => `${k} ${v}`).join(', ')}`);
});

t.test('header members replaced (and signed): refused unless unchanged', async () => {
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...actions),
      fc.constantFrom('alg', 'typ', 'kid', 'crit'),
      fc.oneof(jsonValue, fc.constant(undefined), fc.constantFrom('EdDSA', 'none', 'HS256', 'JWT', commandTokenType, issuer.kid)),
      async (action, member, value) => {
        const original = defaultHeader(issuer)[member];
        fc.pre(JSON.stringify(value) !== JSON.stringify(original));
        const claims = commandClaims({ issuer, deviceId, action, nowS, offer: offer.offer, overrides: { jti: `header-${++n}` } });
        const token = signToken({ issuer, claims, header: { [member]: value } });
        mustReject(await check(envelope(token, action === 'stream.start' ? offer.offer : undefined)), `header ${member} = ${JSON.stringify(value)}`);
      },
    ),
    { numRuns: 500 },
  );
});

t.test('segments swapped between valid tokens are rejected', async () => {
  await fc.assert(
    fc.asyncProperty(fc.nat(bases.length - 1), fc.nat(bases.length - 1), fc.constantFrom(0 as const, 1 as const, 2 as const), async (i, j, seg) => {
      fc.pre(i !== j);
      const donor = bases[j]!.token.split('.')[seg]!;
      const token = replaceSegment(bases[i]!.token, seg, donor);
      fc.pre(token !== bases[i]!.token);
      mustReject(await check(envelope(token, bases[i]!.offer)), `segment ${seg} from another token`);
    }),
    { numRuns: 300 },
  );
});
