// The console's durable archive and its incremental chain verifier, the SAME cases against both
// backends: SQLite (a temp file) and a real PostgreSQL server started for this file
// (test/helpers/postgres.ts). A real chain (test/helpers/audit-fixtures.ts: the agent's AuditLog
// and device key) is fed message by message; the archive is reopened to show what survives a
// restart; gaps are asked for with audit.fetch; forks and rollbacks raise alerts.
import path from 'node:path';
import t from 'tap';
import type { AuditMessage } from '../src/audit/audit-log.ts';
import { jwkThumbprint } from '../src/audit/verify.ts';
import { openArchive, type Archive } from '../ops-console/archive/archive.ts';
import { ChainVerifier } from '../ops-console/chain-verifier.ts';
import { buildAuditChain, clone, entryIndex, forgedMessage, tmpDir } from './helpers/audit-fixtures.ts';
import { startPostgres } from './helpers/postgres.ts';

const device = 'cam-0042';

t.test('both backends', async (t) => {
  const pg = await startPostgres();
  t.teardown(() => pg.dispose());
  const dir = await tmpDir('bwc-archive-');
  const fixture = await buildAuditChain(47, 10);
  const enrol = (a: Archive) => a.enrol({ deviceId: device, publicJwk: fixture.key.publicJwk, kid: jwkThumbprint(fixture.key.publicJwk), enrolledBy: 'admin-1', enrolledAt: '2026-12-01T09:00:00.000Z' });
  let n = 0;
  const backends: [string, () => string][] = [
    ['sqlite', () => `sqlite:${path.join(dir, `archive-${++n}.sqlite`)}`],
    ['postgresql', () => `${pg.url}&application_name=t${++n}`],
  ];

  for (const [name, fresh] of backends) {
    t.test(name, async (t) => {
      // PostgreSQL: one database per subtest, so the cases do not see each other's rows.
      const spec = async () => {
        const s = fresh();
        if (name === 'sqlite') return s;
        const admin = await import('pg');
        const c = new admin.default.Client({ connectionString: pg.url });
        await c.connect();
        const db = `t${n}`;
        await c.query(`CREATE DATABASE ${db}`);
        await c.end();
        return pg.url.replace('/postgres?', `/${db}?`);
      };

      t.test('stores and reads back everything, across a reopen', async (t) => {
        const s = await spec();
        let a = await openArchive(s);
        t.equal(a.backend, name);
        const e1 = (fixture.messages[0] as Extract<AuditMessage, { kind: 'entry' }>).entry;
        t.equal(await a.addEntry(device, e1), 'new');
        t.equal(await a.addEntry(device, clone(e1)), 'duplicate', 'an identical repeat is a duplicate');
        t.equal(await a.addEntry(device, (forgedMessage(1, '0'.repeat(64)) as Extract<AuditMessage, { kind: 'entry' }>).entry), 'conflict', 'a different entry at the same seq is a conflict');
        t.equal((await a.entries(device)).length, 1);
        t.equal((await a.entries(device, { allVersions: true })).length, 2, 'both sides of a conflict are kept');
        const cp = fixture.messages.find((m) => m.kind === 'checkpoint')!.checkpoint;
        t.equal(await a.addCheckpoint(device, cp), true);
        t.equal(await a.addCheckpoint(device, clone(cp)), false);
        await enrol(a);
        await a.addEvent({ deviceId: device, type: 'state.online', at: '2026-12-01T10:00:00.000Z', detail: { battery: 80 } });
        await a.openLiveView({ deviceId: device, sid: 's-1', operator: 'sgt-1', unit: 'north', reason: 'officer-safety', startedAt: '2026-12-01T10:01:00.000Z', auditSeqs: [3] });
        t.equal(await a.closeLiveView(device, 's-1', { at: '2026-12-01T10:03:00.000Z', cause: 'operator-stop', by: 'sgt-1', auditSeqs: [5, 3] }), true);
        t.equal(await a.closeLiveView(device, 's-1', { at: '2026-12-01T10:04:00.000Z', cause: 'max-duration' }), false, 'only the first end is kept');
        const alert = await a.alerts.insert({ rule: 'too_many_views', severity: 'warning', deviceId: device, operator: 'sgt-1', at: '2026-12-01T10:05:00.000Z', auditRefs: [{ deviceId: device, seq: 3 }], detail: { views: 9 } });
        await a.close();

        a = await openArchive(s);
        t.teardown(() => a.close());
        t.same((await a.entries(device))[0], e1);
        t.equal((await a.checkpoints(device))[0]!.signature, cp.signature);
        t.equal((await a.enrolment(device))!.kid, jwkThumbprint(fixture.key.publicJwk));
        t.match(await a.events({ deviceId: device }), [{ type: 'state.online', detail: { battery: 80 } }]);
        t.match(await a.liveViews({ unit: 'north' }), [{ sid: 's-1', operator: 'sgt-1', endCause: 'operator-stop', endedBy: 'sgt-1', auditSeqs: [3, 5] }]);
        t.same(await a.liveViews({ operator: 'nobody' }), []);
        t.same(await a.liveViews({ from: '2026-12-01T11:00:00.000Z' }), [], 'a view that ended before the period is not in it');
        t.match(await a.alerts.list({ acknowledged: false }), [{ id: alert.id, rule: 'too_many_views', auditRefs: [{ seq: 3 }] }]);
        const acked = await a.alerts.acknowledge(alert.id, 'std-1', '2026-12-01T11:00:00.000Z');
        t.match(acked, { acknowledgedBy: 'std-1', acknowledgedAt: '2026-12-01T11:00:00.000Z' });
        t.match(await a.alerts.acknowledge(alert.id, 'std-2'), { acknowledgedBy: 'std-1' }, 'the first acknowledgement is kept');
        t.same(await a.alerts.list({ acknowledged: false }), []);
        t.equal((await a.alerts.list({ rule: 'too_many_views', acknowledged: true })).length, 1);
        t.equal(await a.alerts.acknowledge(9999, 'std-1'), undefined);
      });

      t.test('officer alerts: raised once, acknowledged, cleared, answered, across a reopen', async (t) => {
        const s = await spec();
        let a = await openArchive(s);
        const o = a.officerAlerts;
        const emergency = { deviceId: device, alertId: 'alert-1', kind: 'emergency' as const, at: '2026-12-01T10:00:00.000Z', source: 'trigger', trigger: 'taser', position: { lat: 51.5, lon: -0.14, accuracyM: 5 }, recordingId: 'rec-1' };
        t.match(await o.raise(emergency), { repeat: false, alert: { ...emergency, acknowledgedBy: null, clearedAt: null } });
        t.match(await o.raise({ ...emergency, source: 'button' }), { repeat: true, alert: { source: 'trigger' } }, 'a repeated event changes nothing');
        await o.raise({ deviceId: device, alertId: 'wm-1', kind: 'watch-me', at: '2026-12-01T10:01:00.000Z', source: null, trigger: null, position: null, recordingId: null });
        t.match(await o.acknowledge(device, 'alert-1', 'sgt-1', '2026-12-01T10:02:00.000Z'), { acknowledgedBy: 'sgt-1', acknowledgedAt: '2026-12-01T10:02:00.000Z' });
        t.match(await o.acknowledge(device, 'alert-1', 'sgt-2', '2026-12-01T10:03:00.000Z'), { acknowledgedBy: 'sgt-1' }, 'the first acknowledgement is kept');
        t.equal(await o.acknowledge(device, 'alert-nope', 'sgt-1', '2026-12-01T10:03:00.000Z'), undefined);
        t.match(await o.answerWatchMe(device, 'sgt-3', '2026-12-01T10:04:00.000Z'), [{ alertId: 'wm-1', answeredBy: 'sgt-3' }], 'the open watch-me is answered');
        t.same(await o.answerWatchMe(device, 'sgt-4', '2026-12-01T10:05:00.000Z'), [], 'once');
        await a.close();
        a = await openArchive(s);
        t.teardown(() => a.close());
        t.match(await a.officerAlerts.clear(device, 'alert-1', 'wearer', null, '2026-12-01T10:06:00.000Z'), { clearedBy: 'wearer', clearedOperator: null, clearedAt: '2026-12-01T10:06:00.000Z', acknowledgedBy: 'sgt-1' });
        t.match(await a.officerAlerts.list(), [{ alertId: 'wm-1', answeredBy: 'sgt-3' }, { alertId: 'alert-1', position: { lat: 51.5 }, trigger: 'taser' }], 'newest first, kept across a reopen');
        t.same(await a.officerAlerts.list({ deviceId: 'cam-other' }), []);
      });

      t.test('verifies incrementally, survives a restart, and fills a gap with audit.fetch', async (t) => {
        const s = await spec();
        let a = await openArchive(s);
        await enrol(a);
        const asked: [number, number][] = [];
        let onFetch = () => {};
        const fetchRange = async (_d: string, from: number, to: number) => {
          asked.push([from, to]);
          onFetch();
        };
        let v = new ChainVerifier({ archive: a, gapGraceMs: 0, log: () => {}, fetchRange });
        const half = entryIndex(fixture.messages, 25);
        for (const m of fixture.messages.slice(0, half)) await v.receive(device, m);
        let st = await v.status(device);
        t.equal(st.ok, true, st.summary);
        t.equal(st.head.seq, 24);
        t.equal(st.head.checkpointSeq, 20);
        await v.close();
        await a.close();

        // The console restarts: the verified head comes from the archive, not a re-read chain.
        a = await openArchive(s);
        t.teardown(() => a.close());
        v = new ChainVerifier({ archive: a, gapGraceMs: 0, log: () => {}, fetchRange });
        t.teardown(() => v.close());
        st = await v.status(device);
        t.equal(st.ok, true, `after a restart: ${st.summary}`);
        // Entries 25..30 were published while it was away longer than the broker kept them.
        const gapEnd = entryIndex(fixture.messages, 31);
        const fetched = new Promise<void>((resolve) => (onFetch = resolve));
        for (const m of fixture.messages.slice(gapEnd)) await v.receive(device, m);
        await fetched;
        t.same(asked[0], [25, 30], 'asked the camera for exactly the missing range');
        st = await v.status(device);
        t.equal(st.head.seq, 24, 'not verified past the gap');
        // The camera answers the audit.fetch by republishing the range.
        for (const m of fixture.messages.slice(half, gapEnd)) await v.receive(device, m);
        st = await v.status(device);
        t.equal(st.ok, true, st.summary);
        t.equal(st.head.seq, 47);
        t.equal(st.head.checkpointSeq, 47);
        t.same(await a.alerts.list(), [], 'nothing wrong, no alert');
      });

      t.test('a fork and a rollback raise alerts', async (t) => {
        const a = await openArchive(await spec());
        t.teardown(() => a.close());
        await enrol(a);
        const v = new ChainVerifier({ archive: a, log: () => {} });
        t.teardown(() => v.close());
        for (const m of fixture.messages) await v.receive(device, m);
        t.equal((await v.status(device)).ok, true);
        // A different entry 30 (an older database put back and written on).
        const e29 = fixture.messages[entryIndex(fixture.messages, 29)]! as Extract<AuditMessage, { kind: 'entry' }>;
        await v.receive(device, forgedMessage(30, e29.entry.hash));
        t.match(await a.alerts.list({ rule: 'chain_fork' }), [{ deviceId: device, auditRefs: [{ seq: 30 }], severity: 'critical' }]);
        // The camera's state says its head is 12: it went back.
        await v.observeHead(device, { seq: 12, hash: (fixture.messages[entryIndex(fixture.messages, 12)] as Extract<AuditMessage, { kind: 'entry' }>).entry.hash });
        t.match(await a.alerts.list({ rule: 'chain_rollback' }), [{ deviceId: device, auditRefs: [{ seq: 12 }, { seq: 47 }] }]);
      });

      t.test('a chain signed by another key is not verified and raises an alert', async (t) => {
        const a = await openArchive(await spec());
        t.teardown(() => a.close());
        await enrol(a);
        const other = await buildAuditChain(12, 10);
        const v = new ChainVerifier({ archive: a, log: () => {} });
        t.teardown(() => v.close());
        for (const m of other.messages) await v.receive(device, m);
        const st = await v.status(device);
        t.equal(st.ok, false, st.summary);
        t.match(st.summary, /not signed by the enrolled device key/);
        t.match(await a.alerts.list({ rule: 'untrusted_key' }), [{ deviceId: device }]);
      });
    });
  }
});
