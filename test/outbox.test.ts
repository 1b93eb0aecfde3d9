import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import pino from 'pino';
import t from 'tap';
import { Outbox } from '../src/link/outbox.ts';
import { OutboxWriter } from '../src/link/outbox-writer.ts';
import { openDatabase, schemaVersion } from '../src/store/database.ts';
import { migrations } from '../src/store/migrations.ts';

const logger = pino({ level: 'silent' });
const payloadOf = (m: { payload: Buffer }) => JSON.parse(m.payload.toString()) as { seq: number; n?: number };

t.test('per-channel sequence numbers, in order, surviving a reopen', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-outbox-'));
  let db = openDatabase({ stateDir });
  t.equal(schemaVersion(db), migrations.at(-1)!.version);
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'synchronous=FULL');
  let outbox = new Outbox({ db, maxMessages: 1000, logger });
  t.same([outbox.enqueue('gps', { n: 1 }, 'thinnable'), outbox.enqueue('gps', { n: 2 }, 'thinnable'), outbox.enqueue('event', { n: 3 }, 'durable')], [1, 2, 1]);
  db.close();

  db = openDatabase({ stateDir });
  outbox = new Outbox({ db, maxMessages: 1000, logger });
  t.equal(outbox.size, 3, 'queued messages survive a restart');
  t.equal(outbox.enqueue('gps', { n: 4 }, 'thinnable'), 3, 'sequence continues after a restart');
  const all = outbox.next(0, 100);
  t.same(all.map((m) => [m.channel, m.seq]), [['gps', 1], ['gps', 2], ['event', 1], ['gps', 3]]);
  t.same(all.map((m) => payloadOf(m).seq), [1, 2, 1, 3], 'seq is in the payload');
  t.same(outbox.next(all[1]!.id, 1).map((m) => m.seq), [1], 'next() continues after the cursor');

  outbox.acknowledge(all[0]!.id);
  outbox.acknowledge(all[2]!.id);
  outbox.flush();
  t.equal(outbox.size, 2);
  db.close();
  db = openDatabase({ stateDir });
  outbox = new Outbox({ db, maxMessages: 1000, logger });
  t.same(outbox.next(0, 100).map((m) => [m.channel, m.seq]), [['gps', 2], ['gps', 3]], 'acknowledged messages are gone for good');
  db.close();
});

t.test('a full outbox thins GPS fixes, never events, and counts what it thinned', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-outbox-'));
  const db = openDatabase({ stateDir });
  const outbox = new Outbox({ db, maxMessages: 1000, logger });
  const reports: { channel: string; dropped: number }[] = [];
  outbox.on('thinned', (r) => reports.push(r));
  for (let i = 0; i < 1500; i += 1) {
    outbox.enqueue('gps', { n: i }, 'thinnable');
    if (i % 10 === 0) outbox.enqueue('event', { n: i }, 'durable');
  }
  t.ok(outbox.size <= 1000, `bounded (${outbox.size})`);
  const left = outbox.next(0, 10_000);
  t.equal(left.filter((m) => m.channel === 'event').length, 150, 'every event kept');
  const gpsSeqs = left.filter((m) => m.channel === 'gps').map((m) => m.seq);
  t.equal(gpsSeqs.at(-1), 1500, 'the newest fix is kept');
  t.ok(gpsSeqs.every((s, i) => i === 0 || s > gpsSeqs[i - 1]!), 'still in order');
  const dropped = reports.reduce((n, r) => n + r.dropped, 0);
  t.equal(dropped, 1500 - gpsSeqs.length, 'every thinned fix is reported');
  t.same(outbox.thinnedCounts(), { gps: dropped }, 'and counted durably');
  t.notOk(reports.some((r) => r.channel === 'event'));
  db.close();
});

t.test('over the bound with nothing thinnable: nothing is dropped', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-outbox-'));
  const db = openDatabase({ stateDir });
  const outbox = new Outbox({ db, maxMessages: 1000, logger });
  for (let i = 0; i < 1100; i += 1) outbox.enqueue('audit', { n: i }, 'durable');
  t.equal(outbox.size, 1100);
  t.same(outbox.thinnedCounts(), {});
  db.close();
});

t.test('a database from a newer agent is refused, not corrupted', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-outbox-'));
  const db = openDatabase({ stateDir });
  db.pragma('user_version = 999');
  db.close();
  t.throws(() => openDatabase({ stateDir }), /schema version 999 is newer than this agent understands/);
});

t.test('the writer holds messages in order while the outbox fails, bounded by dropping held GPS fixes only', async (t) => {
  const stored: { channel: string; n: number }[] = [];
  let failing = true;
  const outbox = {
    enqueue(channel: string, body: { n: number }) {
      if (failing) throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      stored.push({ channel, n: body.n });
      return stored.length;
    },
  } as unknown as Outbox;
  const writer = new OutboxWriter({ outbox, logger, maxHeld: 10, retryMs: 20 });
  const seen: string[] = [];
  writer.on('failing', (why) => seen.push(`failing ${why}`));
  writer.on('recovered', ({ written }) => seen.push(`recovered ${written}`));
  for (let n = 0; n < 12; n += 1) writer.write(n % 4 === 0 ? 'event' : 'gps', { n }, n % 4 === 0 ? 'durable' : 'thinnable');
  t.same(writer.status(), { held: 10, droppedFromMemory: 2, eventsDroppedFromMemory: 0, writeError: 'SQLITE_FULL: database or disk is full' });
  failing = false;
  await once(writer, 'recovered'); // the retry, whenever the timer gets to run
  t.same(seen, ['failing SQLITE_FULL: database or disk is full', 'recovered 10']);
  t.same(stored.slice(0, 10).map((s) => s.n), [0, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'oldest GPS fixes dropped, every event kept, order kept');
  t.match(stored[10], { channel: 'event' }, 'then one event counts what was dropped from memory');
  t.same(writer.status(), { held: 0, droppedFromMemory: 2, eventsDroppedFromMemory: 0, writeError: undefined });
  writer.write('event', { n: 12 }, 'durable');
  t.equal(stored.at(-1)?.n, 12, 'writes straight through when healthy');
  writer.stop();
});

t.test('with no GPS fix left to drop, the oldest held events go, counted and reported; audit copies are never dropped', async (t) => {
  const stored: { channel: string; body: Record<string, unknown> }[] = [];
  let failing = true;
  const outbox = {
    enqueue(channel: string, body: Record<string, unknown>) {
      if (failing) throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      stored.push({ channel, body });
      return stored.length;
    },
  } as unknown as Outbox;
  const writer = new OutboxWriter({ outbox, logger, maxHeld: 5, retryMs: 20 });
  t.teardown(() => writer.stop());
  for (let n = 0; n < 4; n += 1) writer.write('audit', { n }, 'durable');
  for (let n = 4; n < 10; n += 1) writer.write('event', { n }, 'durable');
  t.same(writer.status(), { held: 5, droppedFromMemory: 0, eventsDroppedFromMemory: 5, writeError: 'SQLITE_FULL: database or disk is full' });
  failing = false;
  await once(writer, 'recovered');
  t.same(stored.slice(0, 5).map((s) => [s.channel, s.body.n]), [['audit', 0], ['audit', 1], ['audit', 2], ['audit', 3], ['event', 9]], 'every audit copy kept, the newest event kept');
  t.match(stored[5], { channel: 'event', body: { type: 'outbox.dropped_in_memory', gpsFixes: 0, events: 5 } }, 'the drop is reported once writes work again');
});
