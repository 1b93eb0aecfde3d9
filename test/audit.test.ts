import path from 'node:path';
import Database from 'better-sqlite3';
import t from 'tap';
import { AuditLog, auditTokenDigest, checkpointSigningInput, entryHash, genesisHash, type AuditMessage } from '../src/audit/audit-log.ts';
import { canonicalJson } from '../src/audit/canonical-json.ts';
import { jwkThumbprint, verifyAuditDatabase, verifyAuditMessages } from '../src/audit/verify.ts';
import { loadOrCreateDeviceKey, verifyDeviceSignature } from '../src/keys/device-key.ts';
import { openDatabase } from '../src/store/database.ts';
import { buildAuditChain, captureText, runVerifyCli, silentLogger, steppingClock, tmpDir, writeCapture } from './helpers/audit-fixtures.ts';

async function setup(every = 100) {
  const stateDir = await tmpDir();
  const key = await loadOrCreateDeviceKey(stateDir);
  const db = openDatabase({ stateDir });
  const published: AuditMessage[] = [];
  const log = new AuditLog({ db, deviceId: 'cam-7', deviceKey: key, publish: (m) => published.push(m), checkpointEvery: every, logger: silentLogger, now: steppingClock() });
  return { stateDir, key, db, published, log };
}

t.test('canonical JSON sorts keys at every depth, has no whitespace, and refuses what JSON cannot carry', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [3, { d: null, c: 'x\n"' }], e: undefined }), '{"a":[3,{"c":"x\\n\\"","d":null}],"b":1}');
  t.equal(canonicalJson({ n: 1e21, m: -0, f: 0.1 }), '{"f":0.1,"m":0,"n":1e+21}');
  t.throws(() => canonicalJson({ x: Number.NaN }));
  t.throws(() => canonicalJson({ x: 1n }));
});

t.test('append commits the entry before it returns, with the documented hash', async (t) => {
  const { stateDir, db, log, published } = await setup();
  // A second connection sees it at once: it is committed, not waiting in a transaction.
  const reader = new Database(path.join(stateDir, 'agent.db'), { readonly: true });
  const token = 'eyJ.header.sig';
  const e1 = log.append({ type: 'command.decision', operator: 'sgt.hale', action: 'stream.start', reason: 'officer-safety', decision: 'accepted', tokenDigest: auditTokenDigest(token), detail: { at: new Date('2026-01-01T00:00:00Z'), skip: undefined } });
  const row = reader.prepare('SELECT * FROM audit_entry WHERE seq = 1').get() as { seq: number; time: string; entry: string; prev_hash: string; hash: string };
  t.ok(row, 'visible to another connection when append returns');
  t.equal(row.hash, e1.hash);
  t.equal(row.prev_hash, genesisHash, 'seq 1 chains to 64 zeros');
  t.equal(row.time, e1.time);
  t.same(JSON.parse(row.entry), { seq: 1, time: e1.time, device: 'cam-7', type: 'command.decision', operator: 'sgt.hale', action: 'stream.start', reason: 'officer-safety', decision: 'accepted', code: null, tokenDigest: auditTokenDigest(token), detail: { at: '2026-01-01T00:00:00.000Z' } });
  t.equal(row.entry, canonicalJson(JSON.parse(row.entry)), 'stored as canonical JSON');
  t.equal(e1.hash, entryHash(genesisHash, row.entry), 'hash = sha256(prevHash + "\\n" + canonical entry)');
  t.match(e1.tokenDigest, /^[A-Za-z0-9_-]{43}$/, 'token digest is base64url SHA-256');
  const e2 = log.append({ type: 'stream.stop' });
  t.equal(e2.prevHash, e1.hash);
  t.same([e2.operator, e2.decision, e2.code, e2.detail], [null, null, null, {}], 'absent fields are null, detail {}');
  t.same(published.map((m) => m.kind), ['entry', 'entry'], 'each entry published after commit');
  t.same(log.head(), { seq: 2, hash: e2.hash });
  reader.close();
  log.stop();
  db.close();
});

t.test('an entry that cannot be committed throws, and the chain does not move', async (t) => {
  const { db, log, published } = await setup();
  log.append({ type: 'agent.start' });
  const head = log.head();
  db.exec("CREATE TRIGGER refuse BEFORE INSERT ON audit_entry BEGIN SELECT RAISE(ABORT, 'disk full'); END");
  t.throws(() => log.append({ type: 'command.decision', decision: 'accepted' }), /disk full/);
  t.same(log.head(), head);
  t.equal(published.length, 1, 'nothing published for it');
  db.exec('DROP TRIGGER refuse');
  t.equal(log.append({ type: 'command.decision' }).seq, 2, 'the next one takes the seq');
  log.stop();
  db.close();
});

t.test('the chain continues across a reopen, and the unsigned tail is sent again', async (t) => {
  const { stateDir, key, db, log, published } = await setup(5);
  for (let i = 0; i < 7; i += 1) log.append({ type: 'stream.start', detail: { i } });
  // No stop(): as after a crash, entries 6 and 7 are not covered by a checkpoint.
  db.close();
  const db2 = openDatabase({ stateDir });
  const again: AuditMessage[] = [];
  const log2 = new AuditLog({ db: db2, deviceId: 'cam-7', deviceKey: key, publish: (m) => again.push(m), checkpointEvery: 5, logger: silentLogger, now: steppingClock(Date.parse('2026-12-01T00:00:00Z')) });
  t.same(again.map((m) => (m.kind === 'entry' ? m.entry.seq : `cp${m.checkpoint.seq}`)), ['cp5', 6, 7], 'last checkpoint and the tail sent again');
  t.same(again, published.filter((m) => (m.kind === 'entry' ? m.entry.seq > 5 : m.checkpoint.seq === 5)), 'identical to what was sent before');
  t.equal(log2.head().seq, 7);
  const e8 = log2.append({ type: 'stream.stop' });
  t.equal(e8.seq, 8);
  const last = published.findLast((m) => m.kind === 'entry');
  t.equal(e8.prevHash, last?.kind === 'entry' ? last.entry.hash : '', 'chains to the last entry before the restart');
  log2.stop();
  const db3 = verifyAuditDatabase(db2, { publicJwk: key.publicJwk });
  t.same([db3.ok, db3.entries, db3.checkpoints, db3.unsignedEntries], [true, 8, 2, 0]);
  const stream = verifyAuditMessages([...published, ...again]);
  t.ok(stream.ok, 'the stream with its repeats verifies');
  t.same(stream.head, { seq: 8, hash: log2.head().hash });
  db2.close();
});

t.test('checkpoints every N entries, on the timer, and on stop(); none when nothing is new', async (t) => {
  const { db, log, published, key } = await setup(4);
  for (let i = 0; i < 9; i += 1) log.append({ type: 'recording.start' });
  const cps = () => published.filter((m) => m.kind === 'checkpoint').map((m) => (m.kind === 'checkpoint' ? m.checkpoint.seq : 0));
  t.same(cps(), [4, 8]);
  t.equal(log.checkpoint()?.kind, 'checkpoint', 'on demand');
  t.equal(log.checkpoint(), undefined, 'nothing new: no checkpoint');
  log.append({ type: 'recording.stop' });
  log.stop();
  log.stop();
  t.same(cps(), [4, 8, 9, 10], 'final checkpoint on stop, once');
  const rows = db.prepare('SELECT seq, kid FROM audit_checkpoint ORDER BY seq').all();
  t.same(rows, [4, 8, 9, 10].map((seq) => ({ seq, kid: key.kid })), 'stored');
  db.close();

  // The interval itself is replaced, so the test never waits on a clock.
  const timed = await setup(1000);
  let tick: (() => void) | undefined;
  let unrefd = false;
  const realSetInterval = globalThis.setInterval;
  globalThis.setInterval = ((fn: () => void) => {
    tick = fn;
    return { unref: () => (unrefd = true) } as unknown as NodeJS.Timeout;
  }) as unknown as typeof setInterval;
  let log2: AuditLog;
  try {
    log2 = new AuditLog({ db: timed.db, deviceId: 'cam-7', deviceKey: timed.key, publish: (m) => timed.published.push(m), logger: silentLogger, checkpointIntervalMs: 1000 });
  } finally {
    globalThis.setInterval = realSetInterval;
  }
  t.ok(unrefd, 'the timer does not keep the process alive');
  log2.append({ type: 'capture.fault' });
  tick!();
  tick!();
  t.same(timed.published.filter((m) => m.kind === 'checkpoint').length, 1, 'the timer checkpoints when something is new, only then');
  log2.stop();
  timed.log.stop();
  timed.db.close();
});

t.test('published messages verify; checkpoint signatures hold for the device key only', async (t) => {
  const f = await buildAuditChain(47, 10);
  const result = verifyAuditMessages(f.messages, { publicJwk: f.key.publicJwk });
  t.same(result, { ok: true, entries: 47, checkpoints: 5, head: result.head, kid: f.key.kid, signaturesChecked: true, unsignedEntries: 0 });
  t.equal(result.head?.seq, 47);
  t.equal(jwkThumbprint(f.key.publicJwk), f.key.kid, 'kid is the RFC 7638 thumbprint');

  const cp = f.messages.find((m) => m.kind === 'checkpoint')!;
  if (cp.kind !== 'checkpoint') throw new Error('unreachable');
  const input = checkpointSigningInput(cp.checkpoint);
  t.equal(input, canonicalJson({ device: 'cam-0042', headHash: cp.checkpoint.headHash, kid: f.key.kid, seq: 10, time: cp.checkpoint.time }));
  t.ok(verifyDeviceSignature(f.key.publicJwk, input, cp.checkpoint.signature), 'verifies with the device key');
  const other = await loadOrCreateDeviceKey(await tmpDir());
  t.notOk(verifyDeviceSignature(other.publicJwk, input, cp.checkpoint.signature), 'fails with another key');
  const pinnedElsewhere = verifyAuditMessages(f.messages, { publicJwk: other.publicJwk });
  t.same(pinnedElsewhere.firstProblem && [pinnedElsewhere.firstProblem.seq, pinnedElsewhere.firstProblem.kind], [10, 'bad_checkpoint']);
});

t.test('duplicates from at-least-once delivery are tolerated', async (t) => {
  const f = await buildAuditChain(30, 10);
  const ms = f.messages;
  const withRepeats = [...ms.slice(0, 20), ...ms.slice(5, 20), ms[3]!, ...ms.slice(20), ...ms.slice(-4)];
  const r = verifyAuditMessages(structuredClone(withRepeats));
  t.ok(r.ok, r.firstProblem?.message ?? 'ok');
  t.equal(r.entries, 30);
  t.equal(r.checkpoints, 3);
  t.equal(r.kid, f.key.kid, 'reports the key the checkpoints carry');
  const cli = await runVerifyCli({ file: await writeCapture(captureText(withRepeats)) });
  t.equal(cli.code, 0, cli.err);
  t.match(cli.out, /^audit chain OK: 30 entries, 3 checkpoints, head seq 30 hash [0-9a-f]{16}…, signed by kid /);
});

t.test('the CLI: clean database, usage errors and unreadable input', async (t) => {
  const f = await buildAuditChain(12, 5);
  const viaOwnKey = await runVerifyCli({ stateDir: f.stateDir });
  t.equal(viaOwnKey.code, 0);
  t.match(viaOwnKey.out, `audit chain OK: 12 entries, 3 checkpoints, head seq 12 hash`);
  t.match(viaOwnKey.out, `signed by kid ${f.key.kid} (key read from the state folder)`);
  const viaJwk = await runVerifyCli({ stateDir: f.stateDir, publicKeyFile: f.publicKeyFile });
  t.equal(viaJwk.code, 0);
  t.match(viaJwk.out, `signed by kid ${f.key.kid} (device.jwk.json)`);

  t.equal((await runVerifyCli({})).code, 2);
  t.equal((await runVerifyCli({ stateDir: f.stateDir, file: 'x' })).code, 2);
  const missing = await runVerifyCli({ stateDir: path.join(f.stateDir, 'nope') });
  t.equal(missing.code, 2);
  t.match(missing.err, /cannot open/);
  t.equal((await runVerifyCli({ file: path.join(f.stateDir, 'nope.jsonl') })).code, 2);
  t.equal((await runVerifyCli({ stateDir: f.stateDir, publicKeyFile: path.join(f.stateDir, 'agent.db') })).code, 2, 'not a key');
  const empty = await runVerifyCli({ file: await writeCapture('\n\n') });
  t.same([empty.code, empty.out.trim()], [0, 'audit chain OK: 0 entries, 0 checkpoints, no checkpoints, nothing signed']);
});
