// An attacker with the camera's database, or with the fleet's copy of the `audit` topic, changes
// the trail; the verifier (and `audit verify`, exit 1) must name the first bad seq and the kind.
// The chain: 47 entries, checkpoints at 10, 20, 30, 40 and 47 (stop). Most damage is done at 17.
import { createHash } from 'node:crypto';
import t from 'tap';
import type Database from 'better-sqlite3';
import { checkpointSigningInput, type AuditMessage } from '../src/audit/audit-log.ts';
import { verifyAuditCapture, verifyAuditDatabase, verifyAuditMessages, type AuditProblemKind } from '../src/audit/verify.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import {
  buildAuditChain,
  captureText,
  clone,
  copyDatabase,
  editRow,
  entryIndex,
  entryOf,
  forgedMessage,
  insertForgedRow,
  rehashMessages,
  rehashRows,
  renumberRows,
  resignCheckpointRows,
  runVerifyCli,
  swapRows,
  tmpDir,
  writeCapture,
} from './helpers/audit-fixtures.ts';

const f = await buildAuditChain(47, 10);
const mallory = await loadOrCreateDeviceKey(await tmpDir('bwc-audit-mallory-'));

interface Expect {
  seq: number;
  kind: AuditProblemKind;
}

t.test('a clean chain verifies, from the database and from the capture', async (t) => {
  const { stateDir, db } = await copyDatabase(f);
  const r = verifyAuditDatabase(db, { publicJwk: f.key.publicJwk });
  db.close();
  t.same([r.ok, r.entries, r.checkpoints, r.head?.seq, r.kid, r.unsignedEntries], [true, 47, 5, 47, f.key.kid, 0]);
  const dbCli = await runVerifyCli({ stateDir, publicKeyFile: f.publicKeyFile });
  t.equal(dbCli.code, 0);
  t.match(dbCli.out, /^audit chain OK: 47 entries, 5 checkpoints, head seq 47 hash [0-9a-f]{16}…, signed by kid /);
  const fileCli = await runVerifyCli({ file: await writeCapture(f.messages), publicKeyFile: f.publicKeyFile });
  t.equal(fileCli.code, 0);
  t.match(fileCli.out, 'audit chain OK: 47 entries, 5 checkpoints');
});

const dbCases: [string, (db: Database.Database) => void, Expect][] = [
  ['edit the type', (db) => editRow(db, 17, (e) => (e.type = 'recording.stop')), { seq: 17, kind: 'edited' }],
  ['edit the operator', (db) => editRow(db, 17, (e) => (e.operator = 'someone.else')), { seq: 17, kind: 'edited' }],
  ['edit the decision', (db) => editRow(db, 16, (e) => (e.decision = 'accepted')), { seq: 16, kind: 'edited' }],
  ['edit inside detail', (db) => editRow(db, 17, (e) => ((e.detail as { n: number }).n = 99)), { seq: 17, kind: 'edited' }],
  ['edit the time, column and entry alike', (db) => editRow(db, 17, (e) => (e.time = '2026-11-24T14:00:00.000Z')), { seq: 17, kind: 'edited' }],
  ['edit only the time column', (db) => db.exec("UPDATE audit_entry SET time = '2026-01-01T00:00:00.000Z' WHERE seq = 17"), { seq: 17, kind: 'edited' }],
  ['edit with SQLite json_set', (db) => db.exec("UPDATE audit_entry SET entry = json_set(entry, '$.reason', 'public-safety') WHERE seq = 17"), { seq: 17, kind: 'edited' }],
  ['edit the seq inside the entry', (db) => editRow(db, 17, (e) => (e.seq = 18)), { seq: 17, kind: 'edited' }],
  ['edit the hash column', (db) => db.exec("UPDATE audit_entry SET hash = replace(hash, substr(hash, 1, 1), 'f') WHERE seq = 17"), { seq: 17, kind: 'edited' }],
  [
    'edit and recompute every hash from there',
    (db) => {
      editRow(db, 17, (e) => (e.operator = 'x'));
      rehashRows(db, 17);
    },
    // The chain is consistent again: only the signed checkpoint at 20 can tell.
    { seq: 20, kind: 'bad_checkpoint' },
  ],
  [
    'edit and recompute only its own hash',
    (db) => {
      editRow(db, 33, (e) => (e.action = 'record.stop'));
      const row = db.prepare('SELECT entry, prev_hash FROM audit_entry WHERE seq = 33').get() as { entry: string; prev_hash: string };
      db.prepare('UPDATE audit_entry SET hash = ? WHERE seq = 33').run(sha(row.prev_hash, row.entry));
    },
    { seq: 33, kind: 'edited' },
  ],
  ['delete a row', (db) => db.exec('DELETE FROM audit_entry WHERE seq = 17'), { seq: 17, kind: 'removed' }],
  ['delete two rows', (db) => db.exec('DELETE FROM audit_entry WHERE seq IN (17, 18)'), { seq: 17, kind: 'removed' }],
  [
    'delete a row and renumber the seq column',
    (db) => {
      db.exec('DELETE FROM audit_entry WHERE seq = 17');
      renumberRows(db, 18, -1, false);
    },
    { seq: 17, kind: 'removed' },
  ],
  [
    'delete a row and renumber the entries too',
    (db) => {
      db.exec('DELETE FROM audit_entry WHERE seq = 17');
      renumberRows(db, 18, -1, true);
    },
    { seq: 17, kind: 'removed' },
  ],
  [
    'delete a row, renumber and recompute every hash',
    (db) => {
      db.exec('DELETE FROM audit_entry WHERE seq = 17');
      renumberRows(db, 18, -1, true);
      rehashRows(db, 17);
    },
    { seq: 20, kind: 'bad_checkpoint' },
  ],
  [
    'insert a forged row, renumbering the seq column after it',
    (db) => {
      renumberRows(db, 17, 1, false);
      insertForgedRow(db, 17);
    },
    { seq: 17, kind: 'inserted' },
  ],
  [
    'insert a forged row, renumbering the entries after it',
    (db) => {
      renumberRows(db, 17, 1, true);
      insertForgedRow(db, 17);
    },
    { seq: 17, kind: 'inserted' },
  ],
  [
    'insert a forged row, renumber and recompute every hash',
    (db) => {
      renumberRows(db, 17, 1, true);
      insertForgedRow(db, 17);
      rehashRows(db, 18);
    },
    { seq: 17, kind: 'inserted' },
  ],
  ['append a copy of an earlier row', (db) => db.exec('INSERT INTO audit_entry (seq, time, entry, prev_hash, hash) SELECT 48, time, entry, prev_hash, hash FROM audit_entry WHERE seq = 17'), { seq: 48, kind: 'inserted' }],
  ['swap two rows', (db) => swapRows(db, 17, 18, false), { seq: 17, kind: 'reordered' }],
  ['swap two rows and their seqs inside', (db) => swapRows(db, 17, 18, true), { seq: 17, kind: 'reordered' }],
  ['cut off the tail past the last checkpoint', (db) => db.exec('DELETE FROM audit_entry WHERE seq > 43'), { seq: 44, kind: 'truncated' }],
  ['cut off the tail and its checkpoint, not the one before', (db) => db.exec('DELETE FROM audit_entry WHERE seq > 35; DELETE FROM audit_checkpoint WHERE seq = 47'), { seq: 36, kind: 'truncated' }],
  [
    'forge a checkpoint signature with another key',
    (db) => {
      const c = db.prepare('SELECT * FROM audit_checkpoint WHERE seq = 30').get() as { seq: number; head_hash: string; time: string; kid: string };
      db.prepare('UPDATE audit_checkpoint SET signature = ? WHERE seq = 30').run(mallory.sign(checkpointSigningInput({ seq: 30, headHash: c.head_hash, time: c.time, device: 'cam-0042', kid: c.kid })));
    },
    { seq: 30, kind: 'bad_checkpoint' },
  ],
  ['change a checkpoint\'s head hash', (db) => db.exec("UPDATE audit_checkpoint SET head_hash = (SELECT hash FROM audit_entry WHERE seq = 29) WHERE seq = 30"), { seq: 30, kind: 'bad_checkpoint' }],
  [
    'edit, recompute every hash and re-sign the checkpoints with another key',
    (db) => {
      editRow(db, 17, (e) => (e.detail = {}));
      rehashRows(db, 17);
      resignCheckpointRows(db, 20, mallory);
    },
    { seq: 20, kind: 'bad_checkpoint' },
  ],
  ['an entry that is not JSON', (db) => db.exec("UPDATE audit_entry SET entry = '{\"seq\":17,' WHERE seq = 17"), { seq: 17, kind: 'malformed' }],
];

const sha = (prev: string, entry: string) => createHash('sha256').update(`${prev}\n${entry}`).digest('hex');

for (const [name, tamper, expected] of dbCases) {
  t.test(`database: ${name}`, async (t) => {
    const { stateDir, db } = await copyDatabase(f);
    tamper(db);
    const r = verifyAuditDatabase(db, { publicJwk: f.key.publicJwk });
    db.close();
    t.notOk(r.ok);
    t.same(r.firstProblem && { seq: r.firstProblem.seq, kind: r.firstProblem.kind }, expected, r.firstProblem?.message ?? 'ok');
    const cli = await runVerifyCli({ stateDir, publicKeyFile: f.publicKeyFile });
    t.equal(cli.code, 1, cli.err);
    t.match(cli.out, `audit chain BROKEN at seq ${expected.seq}: ${expected.kind}: `);
  });
}

t.test('database: what one copy cannot show, and says so', async (t) => {
  // A well-formed entry appended after the last checkpoint is as good as a real one until the
  // next checkpoint; the verifier counts it as unsigned rather than pretending to know.
  const { stateDir, db } = await copyDatabase(f);
  insertForgedRow(db, 48);
  const r = verifyAuditDatabase(db, { publicJwk: f.key.publicJwk });
  t.same([r.ok, r.unsignedEntries], [true, 1]);
  db.close();
  const cli = await runVerifyCli({ stateDir, publicKeyFile: f.publicKeyFile });
  t.match(cli.out, 'the last 1 entries are after the last checkpoint and not yet signed');
  // Without a key the database's head hashes are still checked, its signatures are not.
  const copy = await copyDatabase(f);
  const unkeyed = verifyAuditDatabase(copy.db);
  t.same([unkeyed.ok, unkeyed.signaturesChecked], [true, false]);
  copy.db.close();
  t.match((await runVerifyCli({ stateDir: copy.stateDir })).out, 'checkpoint signatures NOT checked');
});

const entrySeq = (m: AuditMessage) => entryOf(m).seq;
const at = (ms: AuditMessage[], seq: number) => entryOf(ms[entryIndex(ms, seq)]!);

const messageCases: [string, (ms: AuditMessage[]) => AuditMessage[], Expect][] = [
  ['edit the operator', (ms) => ((at(ms, 17).operator = 'someone.else'), ms), { seq: 17, kind: 'edited' }],
  ['edit the code', (ms) => ((at(ms, 22).code = 'expired'), ms), { seq: 22, kind: 'edited' }],
  ['edit inside detail', (ms) => (((at(ms, 17).detail as { n: number }).n = 99), ms), { seq: 17, kind: 'edited' }],
  ['add a member to an entry', (ms) => (((at(ms, 17) as unknown as Record<string, unknown>).note = 'x'), ms), { seq: 17, kind: 'edited' }],
  ['edit the time', (ms) => ((at(ms, 17).time = '2026-11-24T14:00:00.000Z'), ms), { seq: 17, kind: 'edited' }],
  ['edit and recompute every hash', (ms) => ((at(ms, 17).reason = 'welfare-check'), rehashMessages(ms, 17), ms), { seq: 20, kind: 'bad_checkpoint' }],
  ['drop a message', (ms) => ms.filter((m) => m.kind !== 'entry' || entrySeq(m) !== 17), { seq: 17, kind: 'removed' }],
  [
    'drop a message and renumber the ones after',
    (ms) => {
      const out = ms.filter((m) => m.kind !== 'entry' || entrySeq(m) !== 17);
      for (const m of out) if (m.kind === 'entry' && m.entry.seq > 17) m.entry.seq -= 1;
      return out;
    },
    { seq: 17, kind: 'removed' },
  ],
  ['insert a forged message before the real one', (ms) => (ms.splice(entryIndex(ms, 17), 0, forgedMessage(17, at(ms, 16).hash)), ms), { seq: 17, kind: 'inserted' }],
  ['insert a forged message after the real one', (ms) => (ms.splice(entryIndex(ms, 17) + 1, 0, forgedMessage(17, at(ms, 16).hash)), ms), { seq: 17, kind: 'inserted' }],
  [
    'insert a forged message and renumber the ones after',
    (ms) => {
      for (const m of ms) if (m.kind === 'entry' && m.entry.seq >= 17) m.entry.seq += 1;
      ms.splice(entryIndex(ms, 18), 0, forgedMessage(17, at(ms, 16).hash));
      return ms;
    },
    { seq: 17, kind: 'inserted' },
  ],
  [
    'insert a forged message, renumber and recompute every hash',
    (ms) => {
      for (const m of ms) if (m.kind === 'entry' && m.entry.seq >= 17) m.entry.seq += 1;
      ms.splice(entryIndex(ms, 18), 0, forgedMessage(17, at(ms, 16).hash));
      rehashMessages(ms, 18);
      return ms;
    },
    { seq: 17, kind: 'inserted' },
  ],
  [
    'swap two messages',
    (ms) => {
      const [a, b] = [entryIndex(ms, 17), entryIndex(ms, 18)];
      [ms[a], ms[b]] = [ms[b]!, ms[a]!];
      return ms;
    },
    { seq: 17, kind: 'reordered' },
  ],
  ['cut off the tail, keeping the checkpoint', (ms) => ms.filter((m) => m.kind !== 'entry' || entrySeq(m) <= 43), { seq: 44, kind: 'truncated' }],
  [
    'forge a checkpoint signature',
    (ms) => {
      const cp = ms.find((m) => m.kind === 'checkpoint' && m.checkpoint.seq === 30)!;
      if (cp.kind === 'checkpoint') cp.checkpoint.signature = mallory.sign(checkpointSigningInput(cp.checkpoint));
      return ms;
    },
    { seq: 30, kind: 'bad_checkpoint' },
  ],
  [
    'edit, recompute and re-sign the later checkpoints with another key, carrying that key',
    (ms) => {
      at(ms, 17).decision = 'rejected';
      rehashMessages(ms, 17);
      for (const m of ms) {
        if (m.kind !== 'checkpoint' || m.checkpoint.seq < 20) continue;
        const c = m.checkpoint;
        c.headHash = at(ms, c.seq).hash;
        c.kid = mallory.kid;
        c.publicJwk = mallory.publicJwk;
        c.signature = mallory.sign(checkpointSigningInput(c));
      }
      return ms;
    },
    // Caught with no key given too: the key changes half-way through the trail.
    { seq: 20, kind: 'bad_checkpoint' },
  ],
];

for (const [name, tamper, expected] of messageCases) {
  t.test(`messages: ${name}`, async (t) => {
    const ms = tamper(clone(f.messages));
    for (const opts of [{ publicJwk: f.key.publicJwk }, {}]) {
      const r = verifyAuditMessages(ms, opts);
      t.notOk(r.ok);
      t.same(r.firstProblem && { seq: r.firstProblem.seq, kind: r.firstProblem.kind }, expected, r.firstProblem?.message ?? 'ok');
    }
    const fromText = verifyAuditCapture(captureText(ms));
    t.same(fromText.firstProblem && { seq: fromText.firstProblem.seq, kind: fromText.firstProblem.kind }, expected, 'the same from the capture text');
    const cli = await runVerifyCli({ file: await writeCapture(ms), publicKeyFile: f.publicKeyFile });
    t.equal(cli.code, 1, cli.err);
    t.match(cli.out, `audit chain BROKEN at seq ${expected.seq}: ${expected.kind}: `);
  });
}

t.test('messages: a trail re-signed throughout with another key passes only unpinned, and names that key', async (t) => {
  const ms = clone(f.messages);
  at(ms, 17).operator = 'mallory';
  rehashMessages(ms, 17);
  for (const m of ms) {
    if (m.kind !== 'checkpoint') continue;
    const c = m.checkpoint;
    Object.assign(c, { headHash: at(ms, c.seq).hash, kid: mallory.kid, publicJwk: mallory.publicJwk });
    c.signature = mallory.sign(checkpointSigningInput(c));
  }
  const unpinned = verifyAuditMessages(ms);
  t.same([unpinned.ok, unpinned.kid], [true, mallory.kid], 'consistent, but the kid is not the device\'s: the auditor compares it');
  const pinned = verifyAuditMessages(ms, { publicJwk: f.key.publicJwk });
  t.same(pinned.firstProblem && [pinned.firstProblem.seq, pinned.firstProblem.kind], [10, 'bad_checkpoint']);
});

t.test('messages: a line that is not an audit message', async (t) => {
  const lines = captureText(f.messages).split('\n');
  const idx = entryIndex(f.messages, 25);
  lines[idx] = '{"seq": 26, "kind": "entry", "entry": {"seq": 25';
  const file = await writeCapture(lines.join('\n'));
  const r = verifyAuditCapture(lines.join('\n'));
  t.same(r.firstProblem && [r.firstProblem.seq, r.firstProblem.kind, r.firstProblem.line], [25, 'malformed', idx + 1]);
  const cli = await runVerifyCli({ file });
  t.equal(cli.code, 1);
  t.match(cli.out, `audit chain BROKEN at seq 25: malformed: line ${idx + 1}: not JSON`);
  // An earlier problem wins over a later bad line.
  const edited = clone(f.messages);
  at(edited, 5).type = 'x';
  const both = captureText(edited).split('\n');
  both[idx] = 'garbage';
  const r2 = verifyAuditCapture(both.join('\n'));
  t.same(r2.firstProblem && [r2.firstProblem.seq, r2.firstProblem.kind], [5, 'edited']);
  const shape = verifyAuditMessages([{ kind: 'entry', entry: { seq: 1 } } as unknown as AuditMessage]);
  t.same(shape.firstProblem && [shape.firstProblem.seq, shape.firstProblem.kind], [1, 'malformed']);
});

t.test('property: at any position, each kind of damage is named at that seq', async (t) => {
  const fc = (await import('fast-check')).default;
  const damage = {
    edited: (ms: AuditMessage[], k: number) => ((at(ms, k).operator = 'x'), ms),
    removed: (ms: AuditMessage[], k: number) => ms.filter((m) => m.kind !== 'entry' || entrySeq(m) !== k),
    inserted: (ms: AuditMessage[], k: number) => (ms.splice(entryIndex(ms, k), 0, forgedMessage(k, k === 1 ? '0'.repeat(64) : at(ms, k - 1).hash)), ms),
    reordered: (ms: AuditMessage[], k: number) => {
      const [a, b] = [entryIndex(ms, k), entryIndex(ms, k + 1)];
      [ms[a], ms[b]] = [ms[b]!, ms[a]!];
      return ms;
    },
  } as const;
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 46 }), fc.constantFrom(...(Object.keys(damage) as (keyof typeof damage)[])), (k, kind) => {
      const r = verifyAuditMessages(damage[kind](clone(f.messages), k), { publicJwk: f.key.publicJwk });
      return r.firstProblem?.seq === k && r.firstProblem.kind === kind;
    }),
    { numRuns: 200 },
  );
  t.pass('200 random cases');
});

t.test('an expected head: the fleet copy cut short is a rollback, a different hash a fork, a bad value exit 2', async (t) => {
  const head = { seq: 47, hash: entryOf(f.messages.filter((m) => m.kind === 'entry').at(-1)!).hash };
  const whole = verifyAuditMessages(clone(f.messages), { publicJwk: f.key.publicJwk, expectHead: head });
  t.same([whole.ok, whole.expectedHeadFound], [true, true], 'the whole chain holds the head');
  // Cut after entry 30 with its checkpoints: consistent on its own.
  const cut = clone(f.messages).filter((m) => (m.kind === 'entry' ? entryOf(m).seq : m.checkpoint.seq) <= 30);
  t.ok(verifyAuditMessages(clone(cut), { publicJwk: f.key.publicJwk }).ok, 'the cut copy verifies without a head');
  const rolledBack = verifyAuditMessages(cut, { publicJwk: f.key.publicJwk, expectHead: head });
  t.same(rolledBack.firstProblem && [rolledBack.firstProblem.seq, rolledBack.firstProblem.kind], [31, 'rollback']);
  t.match(rolledBack.firstProblem?.message, 'the chain ends at seq 30 but the fleet saw head seq 47');
  const forked = verifyAuditMessages(clone(f.messages), { publicJwk: f.key.publicJwk, expectHead: { seq: 40, hash: 'a'.repeat(64) } });
  t.same(forked.firstProblem && [forked.firstProblem.seq, forked.firstProblem.kind], [40, 'fork']);
  const cli = await runVerifyCli({ file: await writeCapture(cut), publicKeyFile: f.publicKeyFile, expectHead: `47:${head.hash}` });
  t.equal(cli.code, 1);
  t.match(cli.out, /^audit chain BROKEN at seq 31: rollback: /);
  const ok = await runVerifyCli({ file: await writeCapture(f.messages), publicKeyFile: f.publicKeyFile, expectHead: `47:${head.hash.toUpperCase()}` });
  t.equal(ok.code, 0);
  t.match(ok.out, 'the expected head is in the chain');
  for (const bad of ['47', `0:${head.hash}`, `47:${head.hash.slice(1)}`, `x:${head.hash}`]) {
    const r = await runVerifyCli({ file: await writeCapture(f.messages), expectHead: bad });
    t.equal(r.code, 2, `--expect-head ${bad.slice(0, 10)}… is a usage error`);
    t.match(r.err, /--expect-head: expected SEQ:HASH/);
  }
});
