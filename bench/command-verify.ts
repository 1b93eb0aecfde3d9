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
// Before and after, in the same run: the verifier before it became one shared verifier of signed
// tokens (src/command/signed-token.ts, with the issuer high-water mark in the replay cache) is
// measured by running this same benchmark as it was at that commit (`--baseline`, default below),
// checked out into a temporary git worktree, alternately with today's, `--runs` times each; the
// table gives the median and the spread of each. Plus the cost of asking the kernel whether the
// clock is synchronised (adjtimex through koffi), which the agent adds to every command.
//
// Usage: node bench/command-verify.ts [--n 5000] [--runs 3] [--baseline COMMIT | --baseline none]
import { execFileSync } from 'node:child_process';
import { verify as cryptoVerify } from 'node:crypto';
import { mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { compactVerify } from 'jose';
import pino from 'pino';
import { AuditLog } from '../src/audit/audit-log.ts';
import { RefusalFolder } from '../src/audit/refusal-summary.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { RequestChannel } from '../src/link/request-channel.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { SystemClock } from '../src/command/clock.ts';
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
/** The last commit with the command verifier of its own (before src/command/signed-token.ts). */
const defaultBaseline = 'e1b8bd7';
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

interface Measured {
  rows: Row[];
  sqlite: string;
  fs: string;
  replayRows: number;
}

async function measure(n: number): Promise<Measured> {
  const stateDir = trackDir(mkdtempSync(path.join(os.tmpdir(), 'bwc-bench-cmd-')));
  const db = openDatabase({ stateDir });
  const sqlite = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;

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
      requests: new RequestChannel({ bus: session as never, topic: 'cmd', ...(refusals ? { maxPending: 64 } : {}), logger: silent }),
      verifier,
      audit,
      executors: { 'record.start': ok, 'record.stop': ok, 'stream.start': ok, 'stream.stop': ok, 'agent.update': ok, 'audit.fetch': ok },
      ...(refusals ? { refusals } : {}),
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
  const clock = new SystemClock();
  rows.push(await timeRow('the kernel clock verdict: SystemClock.state() (adjtimex via koffi)', 'ok', tokenBytes, async () => (clock.state().source === 'adjtimex' ? 'ok' : 'no adjtimex')));
  const replayRows = (db.prepare('SELECT count(*) AS c FROM command_replay').get() as { c: number }).c;
  db.close();
  const fs = fsType(stateDir);
  removeDir(stateDir);
  return { rows, sqlite, fs, replayRows };
}

type Figures = Record<string, { perS: number; latencyUs: Summary }>;

/** This benchmark as it was at `ref`, run from a temporary worktree: its figures, or why not. */
function baselineRunner(ref: string): { run: (n: number) => Figures; dispose: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bwc-bench-baseline-'));
  execFileSync('git', ['-C', repoRoot, 'worktree', 'add', '--detach', '--quiet', dir, ref], { stdio: 'pipe' });
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(dir, 'node_modules'));
  return {
    run: (n) => {
      execFileSync(process.execPath, [path.join(dir, 'bench', 'command-verify.ts'), '--n', String(n)], { stdio: 'pipe' });
      return (JSON.parse(readFileSync(path.join(dir, 'bench', 'results', 'command-verify.json'), 'utf8')) as { figures: Figures }).figures;
    },
    dispose: () => {
      execFileSync('git', ['-C', repoRoot, 'worktree', 'remove', '--force', dir], { stdio: 'pipe' });
    },
  };
}

/** Today's figures from a fresh process, as the baseline's are (same JIT and cache state). */
function currentRun(n: number): Measured {
  const out = execFileSync(process.execPath, [import.meta.filename, '--rows-json', '--n', String(n)], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(out) as Measured;
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const spread = (v: number[]) => (v.length === 0 ? '—' : `${Math.round(median(v))} (${Math.round(Math.min(...v))}–${Math.round(Math.max(...v))})`);

async function main(argv: string[]): Promise<void> {
  installCleanup();
  const flags = parseFlags(argv);
  const n = intFlag(flags, 'n', 5000);
  if (flags.has('rows-json')) {
    process.stdout.write(JSON.stringify(await measure(n)));
    return;
  }
  const runs = intFlag(flags, 'runs', 3);
  const ref = flags.get('baseline') ?? defaultBaseline;
  const runStarted = performance.now();
  const baseline = ref === 'none' ? undefined : baselineRunner(ref);
  const before: Figures[] = [];
  const after: Measured[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      if (baseline) before.push(baseline.run(n));
      after.push(currentRun(n));
    }
  } finally {
    baseline?.dispose();
  }
  const { sqlite, fs, replayRows } = after.at(-1)!;
  const machine = machineFacts(sqlite);
  const names = after[0]!.rows.map((r) => r.what);
  const perS = (what: string) => ({
    before: before.map((f) => f[what]?.perS).filter((x): x is number => x !== undefined),
    after: after.map((m) => m.rows.find((r) => r.what === what)!.perS),
    p50Before: before.map((f) => f[what]?.latencyUs.p50).filter((x): x is number => x !== undefined),
    p50After: after.map((m) => m.rows.find((r) => r.what === what)!.latencyUs.p50),
  });
  const rows = names.map((what) => ({ what, ...perS(what) }));

  const md = [
    `### Command verification: CommandVerifier.verify() one at a time, N = ${n} per row (after ${warmup} warm-up), ${runs} runs each, alternating`,
    '',
    `Before: the verifier at ${ref === 'none' ? '(not measured)' : ref}, its own checks; after: this tree, the shared SignedTokenVerifier. Median (min–max) of the runs.`,
    '',
    markdownTable(
      ['path', 'before: verifications/s', 'after: verifications/s', 'before: p50 µs', 'after: p50 µs'],
      rows.map((r) => [r.what, spread(r.before), spread(r.after), spread(r.p50Before), spread(r.p50After)]),
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
    parameters: { n, warmup, runs, baseline: ref, databaseFs: fs, policy },
    figures: Object.fromEntries(after.at(-1)!.rows.map((r) => [r.what, { perS: r.perS, latencyUs: r.latencyUs, expect: r.expect }])),
    beforeAfter: rows,
    totalMs: Math.round(performance.now() - runStarted),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('command-verify', import.meta.filename, main);
