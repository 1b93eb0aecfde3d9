// Refusal folding, deterministically (an injected clock and timer, no sleeps): the first refusal of
// a (source, code) in a window is audited in full, the rest are counted into one summary entry at
// window end, at the next accepted command or at stop; replies are bounded per window; an audit
// that cannot be written leaves a count that is reported once it can. And the command handler's
// bound on waiting commands and its Response Topic rule, through the same folder.
import { EventEmitter } from 'node:events';
import pino from 'pino';
import t from 'tap';
import type { AuditRecord } from '../src/audit/audit-log.ts';
import { RefusalFolder, refusalSummaryType } from '../src/audit/refusal-summary.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { RequestChannel, responseTopicProblem } from '../src/link/request-channel.ts';
import type { CommandVerifier } from '../src/command/verifier.ts';

const logger = pino({ level: 'silent' });

function rig(options: { repliesPerWindow?: number; failAudit?: () => boolean } = {}) {
  let now = Date.parse('2026-12-02T04:00:00Z');
  const entries: AuditRecord[] = [];
  let timer: (() => void) | undefined;
  const folder = new RefusalFolder({
    audit: {
      append: (r) => {
        if (options.failAudit?.()) throw new Error('SQLITE_FULL: database or disk is full');
        entries.push(r);
        return undefined as never;
      },
    },
    windowMs: 60_000,
    repliesPerWindow: options.repliesPerWindow ?? 2,
    now: () => now,
    timers: { set: (cb) => ((timer = cb), 1), clear: () => (timer = undefined) },
    logger,
  });
  const full = (code: string) => () => void entries.push({ type: 'command.decision', decision: 'rejected', code });
  return {
    folder,
    entries,
    full,
    advance: (ms: number) => (now += ms),
    fireTimer: () => {
      const cb = timer;
      timer = undefined;
      cb?.();
    },
    get timerArmed() {
      return timer !== undefined;
    },
  };
}

t.test('the first refusal in full, the rest counted, one summary at window end', async (t) => {
  const r = rig();
  const outcomes = [];
  for (let i = 0; i < 5; i++) {
    outcomes.push(r.folder.refused('cmd', 'malformed', 10, r.full('malformed')));
    r.advance(1000);
  }
  r.folder.refused('cmd', 'expired', 7, r.full('expired'));
  r.folder.refused('ice-answer', 'bad_sid', 60_000, r.full('bad_sid'));
  r.folder.refused('ice-answer', 'bad_sid', 60_000, r.full('bad_sid'));
  t.same(outcomes.map((o) => o.audited), [true, false, false, false, false], 'only the first is audited in full');
  t.same(outcomes.map((o) => o.reply), [true, true, false, false, false], 'replies are bounded per window (2 here)');
  t.equal(r.entries.length, 3, 'one full entry per (source, code)');
  t.equal(r.folder.pending, 5);
  t.ok(r.timerArmed, 'the window timer runs');
  r.fireTimer();
  const summaries = r.entries.filter((e) => e.type === refusalSummaryType);
  t.same(
    summaries.map((s) => ({ code: s.code, decision: s.decision, ...s.detail })),
    [
      { code: 'malformed', decision: 'rejected', source: 'cmd', count: 4, firstAt: '2026-12-02T04:00:01.000Z', lastAt: '2026-12-02T04:00:04.000Z', bytes: 40, unanswered: 3, unaudited: 0 },
      { code: 'bad_sid', decision: 'rejected', source: 'ice-answer', count: 1, firstAt: '2026-12-02T04:00:05.000Z', lastAt: '2026-12-02T04:00:05.000Z', bytes: 60_000, unanswered: 0, unaudited: 0 },
    ],
    'one summary per key that folded anything; the full entries plus the counts are every refusal',
  );
  t.equal(r.folder.pending, 0);
  t.notOk(r.timerArmed, 'no timer while nothing is open');
  t.equal(r.folder.refused('cmd', 'malformed', 10, r.full('malformed')).audited, true, 'a new window audits the first in full again');
});

t.test('an audit that cannot be written leaves a count reported once it can', async (t) => {
  let full = true;
  const r = rig({ failAudit: () => full });
  t.same(r.folder.refused('cmd', 'malformed', 10, () => {
    throw new Error('SQLITE_FULL');
  }), { audited: false, reply: true }, 'the full entry failed: counted instead');
  r.folder.refused('cmd', 'malformed', 10, r.full('malformed'));
  r.fireTimer();
  t.equal(r.entries.length, 0, 'the summary could not be written either');
  t.ok(r.timerArmed, 'and is tried again');
  full = false;
  r.fireTimer();
  t.match(r.entries, [{ type: refusalSummaryType, code: 'malformed', detail: { count: 2, unaudited: 1 } }], 'once space is back the summary counts both, one of them never audited in full');
});

t.test('stop writes what is folded', async (t) => {
  const r = rig();
  r.folder.refused('cmd', 'malformed', 1, r.full('malformed'));
  r.folder.refused('cmd', 'malformed', 1, r.full('malformed'));
  r.folder.stop();
  t.match(r.entries.at(-1), { type: refusalSummaryType, detail: { count: 1 } });
  t.notOk(r.timerArmed);
});

t.test('responseTopicProblem', async (t) => {
  t.equal(responseTopicProblem('fleet/replies/1', 'bwc/v1', []), undefined, 'outside the root: allowed');
  t.match(responseTopicProblem('bwc/v1/cam-1/audit', 'bwc/v1', []), /under the topic root/);
  t.match(responseTopicProblem('bwc/v1', 'bwc/v1', []), /under the topic root/);
  t.equal(responseTopicProblem('bwc/v1x/a', 'bwc/v1', []), undefined, 'a sibling prefix is not the root');
  t.equal(responseTopicProblem('bwc/v1/replies/ops-1', 'bwc/v1', ['bwc/v1/replies/']), undefined, 'a configured reply prefix under the root');
  t.match(responseTopicProblem('$SYS/x', 'bwc/v1', []), /\$/);
  t.match(responseTopicProblem('a/#', 'bwc/v1', []), /wildcards/);
});

t.test('the command handler: a bounded queue, refused Response Topics, folded refusals', async (t) => {
  const r = rig({ repliesPerWindow: 100 });
  const replies: { topic: string; body: Record<string, unknown> }[] = [];
  const session = Object.assign(new EventEmitter(), {
    connected: true,
    subscribe: async () => undefined,
    publish: (topic: string, payload: string | Buffer, _o: unknown, cb?: (e?: Error) => void) => {
      replies.push({ topic, body: JSON.parse(String(payload)) as Record<string, unknown> });
      cb?.();
    },
  });
  // A verifier that waits until released, so the queue fills deterministically.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const verifier: Pick<CommandVerifier, 'verify'> = {
    verify: async () => {
      await gate;
      return { ok: false, code: 'malformed', message: 'payload is not JSON', audit: { verified: false } } as never;
    },
  };
  const audited: AuditRecord[] = [];
  const handler = new CommandHandler({
    requests: new RequestChannel({
      bus: session as never,
      topic: 'bwc/v1/cam-q/cmd',
      maxPending: 3,
      responseTopicProblem: (topic) => responseTopicProblem(topic, 'bwc/v1', []),
      logger,
    }),
    verifier,
    audit: { append: (rec) => (audited.push(rec), undefined as never) },
    executors: {} as never,
    refusals: r.folder,
    logger,
  });
  handler.start();
  const props = (responseTopic: string) => ({ properties: { responseTopic, correlationData: Buffer.from('c') } });
  for (let i = 0; i < 10; i++) session.emit('message', 'bwc/v1/cam-q/cmd', Buffer.from('junk'), props('fleet/r'));
  t.equal(replies.filter((x) => x.body.code === 'overloaded').length, 7, 'past 3 waiting, each further command is refused overloaded at once');
  t.match(audited, [{ code: 'overloaded', decision: 'rejected' }], 'the first overload audited in full, the rest folded');
  session.emit('message', 'bwc/v1/cam-q/cmd', Buffer.from('junk'), props('bwc/v1/cam-q/audit'));
  release();
  await handler.stop();
  t.equal(replies.filter((x) => x.body.code === 'malformed').length, 3, 'the three waiting ones are handled and answered');
  t.same(replies.filter((x) => x.topic !== 'fleet/r'), [], 'nothing published on a refused Response Topic');
  r.folder.flush();
  const total = (code: string) =>
    audited.filter((e) => e.code === code).length + r.entries.filter((e) => e.type === refusalSummaryType && e.code === code).reduce((n, e) => n + Number(e.detail!.count), 0);
  t.equal(total('overloaded'), 8, 'every overload is in the audit (the one with a hostile Response Topic too)');
  t.equal(total('malformed'), 3, 'every malformed one is in the audit');
  t.equal(total('response_topic_refused'), 0, 'the queue was full when the hostile Response Topic came: it was refused overloaded, and not answered');
  t.equal(replies.length, 10, 'ten replies, none to the audit topic');
});

t.test('the evidence reserve: refusals only counted inside it, the outbox refuses, summaries once space is back', async (t) => {
  const { StorageReserve } = await import('../src/store/storage-reserve.ts');
  let freeBytes = 100 * 1024;
  const reserve = new StorageReserve({ path: '/unused', percent: 5, statfs: () => ({ freeBytes, totalBytes: 4 * 1024 * 1024 }) });
  t.throws(() => reserve.check(), /inside the evidence reserve/, '100 KiB free of 4 MiB is inside a 5% reserve');
  t.throws(() => reserve.check(), /recording\.evidenceReservePercent 5%/, 'the error names the setting');
  const r = rig();
  const reserved = new RefusalFolder({ audit: { append: (rec) => (r.entries.push(rec), undefined as never) }, windowMs: 60_000, repliesPerWindow: 5, reserve, timers: { set: () => 1, clear: () => undefined }, logger });
  for (let i = 0; i < 3; i++) reserved.refused('cmd', 'malformed', 10, r.full('malformed'));
  reserved.flush();
  t.equal(r.entries.length, 0, 'nothing written inside the reserve');
  t.equal(reserved.pending, 3, 'but every refusal counted');
  freeBytes = 1024 * 1024;
  reserved.flush();
  t.match(r.entries, [{ type: refusalSummaryType, code: 'malformed', detail: { count: 3, unaudited: 1 } }], 'the summary once space is back');
  t.doesNotThrow(() => new StorageReserve({ path: '/unused', percent: 0, statfs: () => ({ freeBytes: 0, totalBytes: 1 }) }).check(), '0 turns it off');

  const { Outbox } = await import('../src/link/outbox.ts');
  const { openDatabase } = await import('../src/store/database.ts');
  const { mkdtemp } = await import('node:fs/promises');
  const os = await import('node:os');
  const path = await import('node:path');
  const db = openDatabase({ stateDir: await mkdtemp(path.join(os.tmpdir(), 'bwc-reserve-')) });
  t.teardown(() => db.close());
  freeBytes = 100 * 1024;
  const outbox = new Outbox({ db, maxMessages: 1000, reserve, logger });
  t.throws(() => outbox.enqueue('event', { type: 'x' }, 'durable'), /inside the evidence reserve/, 'the outbox refuses inside the reserve (its writer holds and retries)');
  freeBytes = 1024 * 1024;
  t.equal(outbox.enqueue('event', { type: 'x' }, 'durable'), 1, 'and writes once space is back');
});
