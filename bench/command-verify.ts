// Command verification throughput: CommandVerifier.verify() on an MQTT payload, one at a time
// (as the command handler runs them), N = 5000 per row after a warm-up of 200.
//
// Rows: the accepted path (record.start, and stream.start with its ~1 KB SDP offer hashed), which
// includes the replay-cache INSERT committed to SQLite (WAL, synchronous=FULL: on a real disk that
// commit is usually the largest part); a forgery rejected at the signature (bad_signature: one
// bit of the signature flipped), which is the most work an attacker without a key can cause; one
// rejected before any cryptography (alg none); and as floors, jose's compactVerify alone on the
// same token and node:crypto's Ed25519 verify of the same bytes.
//
// The handler rows run the whole path of a junk command through CommandHandler (verify, audit,
// reply) as a flood from the broker drives it: every refusal audited in full (a fsync'd audit row,
// the behaviour before refusal folding), and folded (the first per code and window audited in
// full, the rest counted: src/audit/refusal-summary.ts), in the same run; and an accepted command
// through the handler with the folder (its flush comes first).
//
// Tokens are made before the clock starts (each accepted one needs its own jti). The database is
// in a temporary directory; its file system type is reported, since tmpfs makes fsync free.
//
// Usage: node bench/command-verify.ts [--n 5000]
import { execFileSync } from 'node:child_process';
import { verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { compactVerify } from 'jose';
import pino from 'pino';
import { AuditLog } from '../src/audit/audit-log.ts';
import { RefusalFolder } from '../src/audit/refusal-summary.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { CommandVerifier } from '../src/command/verifier.ts';
import { openDatabase } from '../src/store/database.ts';
import { envelope, flipBit, forgeAlgNone, commandClaims, makeCommand, makeIssuer, sdpOffer, trustStoreJwks, testPolicy } from '../test/helpers/command-tokens.ts';
import {
  installCleanup,
  intFlag,
  machineFacts,
  machineLine,
  markdownTable,
  parseFlags,
  removeDir,
  repoRoot,
  round,
  summarise,
  trackDir,
  writeResult,
  runIfMain,
  type Summary,
} from './lib/common.ts';

const warmup = 200;
const deviceId = 'bwc-bench';
const policy = testPolicy;

interface Row {
  what: string;
  expect: string;
  n: number;
  perS: number;
  latencyUs: Summary;
}

async function timeRow(what: string, expect: string, inputs: readonly Buffer[], run: (b: Buffer) => Promise<string>): Promise<Row> {
  const samples: number[] = [];
  const started = performance.now();
  for (const input of inputs) {
    const t0 = performance.now();
    const outcome = await run(input);
    samples.push((performance.now() - t0) * 1000);
    if (outcome !== expect) throw new Error(`${what}: expected ${expect}, got ${outcome}`);
  }
  const elapsedS = (performance.now() - started) / 1000;
  return { what, expect, n: inputs.length, perS: Math.round(inputs.length / elapsedS), latencyUs: summarise(samples) };
}

function fsType(dir: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(argv: string[]): Promise<void> {
  installCleanup();
  const n = intFlag(parseFlags(argv), 'n', 5000);
  const stateDir = trackDir(mkdtempSync(path.join(os.tmpdir(), 'bwc-bench-cmd-')));
  const db = openDatabase({ stateDir });
  const sqlite = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
  const machine = machineFacts(sqlite);

  const issuer = await makeIssuer({ kid: 'bench-issuer' });
  let nowMs = Date.now();
  const trustStore = TrustStore.fromJwks(trustStoreJwks([issuer]), []);
  // The floors use the trust store's own KeyObject, so they verify exactly what verify() does.
  const found = trustStore.lookup(issuer.kid, nowMs / 1000);
  if (found.status !== 'trusted') throw new Error('bench issuer not trusted');
  const publicKey = found.key.publicKey;
  const verifier = new CommandVerifier({
    deviceId,
    trustStore,
    policy,
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => nowMs, synchronised: () => true },
    activeStreams: () => 0,
    logger: pino({ level: 'silent' }),
  });
  const outcome = async (b: Buffer) => {
    const v = await verifier.verify(b);
    return v.ok ? 'accepted' : v.code;
  };

  const nowS = Math.floor(nowMs / 1000);
  const offer = sdpOffer('bench');
  const fresh = (action: 'record.start' | 'stream.start', count: number) =>
    Array.from({ length: count }, () => makeCommand({ issuer, deviceId, action, nowS, offer: action === 'stream.start' ? offer.offer : undefined }).payload);
  const one = makeCommand({ issuer, deviceId, action: 'record.start', nowS });
  const forged = Array.from({ length: n }, (_, i) => envelope(flipBit(one.token, 2, i % 512)));
  const none = envelope(forgeAlgNone(issuer, commandClaims({ issuer, deviceId, action: 'record.start', nowS })));
  const nones = Array.from({ length: n }, () => none);
  const [h, p, s] = one.token.split('.') as [string, string, string];
  const signingInput = Buffer.from(`${h}.${p}`);
  const signature = Buffer.from(s, 'base64url');
  const tokenBytes = Array.from({ length: n }, () => Buffer.from(one.token));

  // Warm-up: JIT, the key's CryptoKey cache, prepared statements.
  await timeRow('warm-up', 'accepted', fresh('record.start', warmup), outcome);
  await timeRow('warm-up', 'bad_signature', forged.slice(0, warmup), outcome);

  const runStarted = performance.now();
  const rows: Row[] = [];
  nowMs = Date.now();
  rows.push(await timeRow('accepted: record.start (verify + replay-cache commit)', 'accepted', fresh('record.start', n), outcome));
  nowMs = Date.now();
  rows.push(await timeRow(`accepted: stream.start (+ SHA-256 of a ${offer.offer.length} B offer)`, 'accepted', fresh('stream.start', n), outcome));
  rows.push(await timeRow('rejected at the signature: bad_signature (signature bit flipped)', 'bad_signature', forged, outcome));
  rows.push(await timeRow('rejected before any crypto: unsupported_alg (alg none)', 'unsupported_alg', nones, outcome));
  rows.push(
    await timeRow('floor: jose compactVerify alone (same token, no checks)', 'ok', tokenBytes, async (b) => {
      await compactVerify(b.toString(), publicKey, { algorithms: ['EdDSA'] });
      return 'ok';
    }),
  );
  rows.push(
    await timeRow('floor: node:crypto Ed25519 verify (same bytes)', 'ok', tokenBytes, async () =>
      cryptoVerify(null, signingInput, publicKey, signature) ? 'ok' : 'bad',
    ),
  );
  // The handler: a stand-in session (replies counted), the real audit log on the same database.
  const session = Object.assign(new EventEmitter(), {
    connected: true,
    subscribe: async () => undefined,
    publish: (_t: string, _p: string | Buffer, _o: unknown, cb?: (e?: Error) => void) => cb?.(),
  });
  const silent = pino({ level: 'silent' });
  const audit = new AuditLog({ db, deviceId, deviceKey: await loadOrCreateDeviceKey(stateDir), publish: () => undefined, logger: silent });
  const folder = new RefusalFolder({ audit, windowMs: 60_000, repliesPerWindow: 20, logger: silent });
  const ok = () => ({ ok: true as const });
  const handlerFor = (refusals: RefusalFolder | undefined) =>
    new CommandHandler({
      topic: 'cmd',
      session: session as never,
      verifier,
      audit,
      executors: { 'record.start': ok, 'record.stop': ok, 'stream.start': ok, 'stream.stop': ok },
      ...(refusals ? { refusals, maxPending: 64 } : {}),
      logger: silent,
    });
  const props = { properties: { responseTopic: 'fleet/replies', correlationData: Buffer.from('c') } };
  const throughHandler = (handler: CommandHandler, expectSeqGrowth: (grew: number) => string) => async (b: Buffer) => {
    const before = audit.head().seq;
    handler.start();
    session.emit('message', 'cmd', b, props);
    await handler.stop(); // waits for the handler's queue
    return expectSeqGrowth(audit.head().seq - before);
  };
  const junk = Array.from({ length: n }, (_, i) => Buffer.from(`{"token":"junk-${i}"}`));
  rows.push(await timeRow('handler, junk command: every refusal audited in full (before folding)', 'audited', junk, throughHandler(handlerFor(undefined), (g) => (g === 1 ? 'audited' : `grew ${g}`))));
  rows.push(await timeRow('handler, junk command: refusals folded (this change)', 'folded', junk.slice(1), throughHandler(handlerFor(folder), (g) => (g <= 1 ? 'folded' : `grew ${g}`))));
  nowMs = Date.now();
  rows.push(await timeRow('handler, accepted record.start after folded refusals (summary flush + audit)', 'accepted', fresh('record.start', n), throughHandler(handlerFor(folder), (g) => (g >= 1 ? 'accepted' : 'not audited'))));
  audit.stop();
  const replayRows = (db.prepare('SELECT count(*) AS c FROM command_replay').get() as { c: number }).c;
  db.close();
  const fs = fsType(stateDir);
  removeDir(stateDir);

  const md = [
    `### Command verification: CommandVerifier.verify() one at a time, N = ${n} per row (after ${warmup} warm-up)`,
    '',
    markdownTable(
      ['path', 'verifications/s', 'p50 µs', 'p95 µs', 'max µs'],
      rows.map((r) => [r.what, r.perS, round(r.latencyUs.p50), round(r.latencyUs.p95), round(r.latencyUs.max)]),
    ),
    '',
    `Replay cache: SQLite ${sqlite}, WAL, synchronous=FULL, on ${fs} (${replayRows} rows at the end). ` +
      'On tmpfs the commit costs no fsync; on the camera\'s flash the accepted rows are bounded by it.',
    '',
    `Machine: ${machineLine(machine)}.`,
  ].join('\n');
  const file = writeResult('command-verify', {
    benchmark: 'command-verify',
    machine,
    parameters: { n, warmup, databaseFs: fs, policy },
    figures: Object.fromEntries(rows.map((r) => [r.what, { perS: r.perS, latencyUs: r.latencyUs, expect: r.expect }])),
    totalMs: Math.round(performance.now() - runStarted),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('command-verify', import.meta.filename, main);
