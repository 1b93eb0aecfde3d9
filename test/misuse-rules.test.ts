// The misuse rules (ops-console/misuse-rules.ts) on replayed shifts: each rule fires on its scenario,
// naming the audit entries behind it, and a normal shift raises nothing. The engine is pure (every
// input carries its time), so a day is replayed exactly, in local time as the shifts are written.
import t from 'tap';
import type { AuditEntry } from '../src/audit/audit-log.ts';
import { defaultRulesConfig, MemoryAlertStore, MisuseRules, parseRulesConfig, type NewAlert, type RuleInput, type RulesConfig } from '../ops-console/misuse-rules.ts';

const day = (h: number, m = 0, s = 0) => new Date(2026, 11, 2, h, m, s).toISOString();
const operators: Record<string, { unit: string | null; shift: string | null }> = {
  'sgt-1': { unit: 'north', shift: '07:00-19:00' },
  'sgt-2': { unit: null, shift: null },
};
const config: RulesConfig = { ...defaultRulesConfig, cameraUnits: { 'cam-n1': 'north', 'cam-n2': 'north', 'cam-n3': 'north', 'cam-s1': 'south' } };

function rig(c: RulesConfig = config) {
  const store = new MemoryAlertStore();
  const rules = new MisuseRules(c, (id) => operators[id], store);
  const alerts: NewAlert[] = [];
  const seqs = new Map<string, number>();
  const feed = (input: RuleInput) => alerts.push(...rules.feed(input));
  const audit = (deviceId: string, time: string, e: Partial<AuditEntry>) => {
    const seq = (seqs.get(deviceId) ?? 0) + 1;
    seqs.set(deviceId, seq);
    feed({ kind: 'audit', deviceId, entry: { seq, time, device: deviceId, type: 'agent.start', operator: null, action: null, reason: null, decision: null, code: null, tokenDigest: null, detail: {}, prevHash: '', hash: '', ...e } });
    return seq;
  };
  let n = 0;
  const view = (deviceId: string, operator: string, from: string, minutes: number, o: { reason?: string; covert?: boolean } = {}) => {
    const sid = `s-${++n}`;
    const start = audit(deviceId, from, { type: 'stream.start', operator, action: 'stream.start', reason: o.reason ?? 'public-safety', detail: { sid, covert: o.covert ?? false } });
    const stop = audit(deviceId, new Date(Date.parse(from) + minutes * 60_000).toISOString(), { type: 'stream.stop', operator, action: 'stream.stop', reason: 'officer-request', detail: { sid, cause: 'stream_stop', durationS: minutes * 60 } });
    return { start, stop };
  };
  const refused = (deviceId: string, time: string) => audit(deviceId, time, { type: 'command.decision', decision: 'rejected', code: 'bad_signature' });
  const state = (deviceId: string, at: string, recording: boolean, online = true) => feed({ kind: 'state', deviceId, at, online, recording });
  const tick = (at: string) => feed({ kind: 'tick', at });
  return { store, alerts, feed, audit, view, refused, state, tick, rules: () => alerts.map((a) => a.rule) };
}

t.test('a normal shift raises nothing', async (t) => {
  const r = rig();
  for (let m = 7 * 60; m <= 19 * 60; m += 1) {
    const at = day(Math.floor(m / 60), m % 60);
    for (const cam of ['cam-n1', 'cam-n2']) r.state(cam, at, m >= 8 * 60 && m < 12 * 60);
    r.tick(at);
    if (m === 8 * 60) r.view('cam-n1', 'sgt-1', day(8, 0, 30), 5);
    if (m === 10 * 60) r.view('cam-n2', 'sgt-1', day(10, 0, 30), 12);
    if (m === 14 * 60) {
      r.audit('cam-n1', day(13, 58), { type: 'officer.watch_me', detail: { requestId: 'wm-1', position: null, recordingId: 'rec-1' } });
      r.view('cam-n1', 'sgt-1', day(14, 0, 30), 8, { reason: 'officer-request' });
    }
    if (m === 15 * 60) r.refused('cam-n2', day(15, 0, 10)); // a mistake, not a probe
  }
  r.state('cam-n1', day(19, 5), false, false); // signs off, not recording
  t.same(r.alerts, [], 'three short views in unit and shift, one refusal, cameras reporting: no alert');
});

t.test('each rule fires on its scenario, with the audit entries behind it', async (t) => {
  await t.test('too many views in a shift', async (t) => {
    const r = rig();
    const starts = Array.from({ length: 11 }, (_, i) => r.view('cam-n1', 'sgt-1', day(8 + Math.floor(i / 2), (i % 2) * 30), 2).start);
    t.same(r.rules(), ['too_many_views'], 'once, at the 11th');
    t.same(r.alerts[0]!.auditRefs, starts.map((seq) => ({ deviceId: 'cam-n1', seq })));
    t.match(r.alerts[0], { operator: 'sgt-1', detail: { views: 11 } });
    r.view('cam-n1', 'sgt-1', day(15), 2);
    t.same(r.rules(), ['too_many_views'], 'not again in the same shift');
  });
  await t.test('too many cameras in a shift', async (t) => {
    const r = rig({ ...config, cameraUnits: {} });
    for (let i = 1; i <= 6; i++) r.view(`cam-x${i}`, 'sgt-2', day(9, i * 5), 2);
    t.same(r.rules(), ['too_many_cameras']);
    t.equal(r.alerts[0]!.auditRefs.length, 6);
  });
  await t.test('a camera outside the operator\'s unit', async (t) => {
    const r = rig();
    const { start } = r.view('cam-s1', 'sgt-1', day(9), 3);
    t.same(r.rules(), ['out_of_unit']);
    t.match(r.alerts[0], { deviceId: 'cam-s1', operator: 'sgt-1', auditRefs: [{ deviceId: 'cam-s1', seq: start }], detail: { operatorUnit: 'north', cameraUnit: 'south' } });
  });
  await t.test('a view longer than the limit: on a tick while open, or at its stop', async (t) => {
    const r = rig();
    r.audit('cam-n1', day(9), { type: 'stream.start', operator: 'sgt-1', reason: 'public-safety', detail: { sid: 's-long' } });
    r.tick(day(9, 29));
    t.same(r.rules(), []);
    r.tick(day(9, 31));
    t.same(r.rules(), ['long_view'], 'on the tick past 30 min');
    r.tick(day(9, 40));
    t.same(r.rules(), ['long_view'], 'once');
    const s = rig();
    const { start, stop } = s.view('cam-n1', 'sgt-1', day(9), 45);
    t.same(s.rules(), ['long_view'], 'no tick came: its stop says how long it ran');
    t.same(s.alerts[0]!.auditRefs, [{ deviceId: 'cam-n1', seq: start }, { deviceId: 'cam-n1', seq: stop }]);
  });
  await t.test('a covert view', async (t) => {
    const r = rig();
    r.view('cam-n1', 'sgt-1', day(9), 2, { covert: true });
    t.same(r.rules(), ['covert_view']);
  });
  await t.test('officer-request with no request from the officer', async (t) => {
    const r = rig();
    r.audit('cam-n2', day(8, 50), { type: 'officer.watch_me', detail: { requestId: 'wm-2' } }); // another camera's officer
    r.audit('cam-n1', day(8, 30), { type: 'officer.watch_me', detail: { requestId: 'wm-3' } }); // too long ago
    r.feed({ kind: 'event', deviceId: 'cam-n1', at: day(8, 59), type: 'officer.watch_me' }); // the unsigned event: not counted
    r.view('cam-n1', 'sgt-1', day(9), 2, { reason: 'officer-request' });
    t.same(r.rules(), ['officer_request_unasked']);
    t.match(r.alerts[0], { severity: 'critical', deviceId: 'cam-n1' });
  });
  await t.test('a view outside the operator\'s shift', async (t) => {
    const r = rig();
    r.view('cam-n1', 'sgt-1', day(21, 15), 2);
    t.same(r.rules(), ['outside_shift']);
    const night = rig();
    operators['sgt-3'] = { unit: null, shift: '19:00-07:00' };
    night.view('cam-n1', 'sgt-3', day(2, 0), 2);
    night.view('cam-n1', 'sgt-3', day(23, 0), 2);
    t.same(night.rules(), [], 'a night shift runs past midnight');
    night.view('cam-n1', 'sgt-3', day(12, 0), 2);
    t.same(night.rules(), ['outside_shift']);
  });
  await t.test('a burst of refused commands', async (t) => {
    const r = rig();
    const seqs = [0, 10, 20, 30, 40].map((s) => r.refused('cam-n1', day(3, 0, s)));
    t.same(r.rules(), ['refusal_burst']);
    t.same(r.alerts[0]!.auditRefs, seqs.map((seq) => ({ deviceId: 'cam-n1', seq })));
    const slow = rig();
    for (let i = 0; i < 5; i++) slow.refused('cam-n1', day(3, i * 2));
    t.same(slow.rules(), [], 'five refusals over ten minutes are not a burst');
  });
  await t.test('a camera that stopped reporting while recording', async (t) => {
    const r = rig();
    r.state('cam-n1', day(9), true);
    r.tick(day(9, 4));
    t.same(r.rules(), []);
    r.tick(day(9, 5, 1));
    t.same(r.rules(), ['silent_while_recording'], 'silent past 300 s');
    r.tick(day(9, 8));
    t.same(r.rules(), ['silent_while_recording'], 'once until it is heard again');
    const w = rig();
    w.state('cam-n2', day(9), true);
    w.state('cam-n2', day(9, 1), false, false); // the Will: offline
    t.same(w.rules(), ['silent_while_recording'], 'went offline while recording');
  });
});

t.test('alerts reach the store; acknowledging keeps who and when, once', async (t) => {
  const r = rig();
  r.view('cam-n1', 'sgt-1', day(9), 2, { covert: true });
  await new Promise((resolve) => setImmediate(resolve));
  const [stored] = r.store.list();
  t.match(stored, { id: 1, rule: 'covert_view', acknowledgedBy: null });
  t.match(r.store.acknowledge(1, 'psd-1', day(10)), { acknowledgedBy: 'psd-1', acknowledgedAt: day(10) });
  t.match(r.store.acknowledge(1, 'psd-2', day(11)), { acknowledgedBy: 'psd-1' }, 'the first acknowledgement stays');
  t.same(r.store.list({ acknowledged: false }), []);
});

t.test('a rules file: defaults under it, a bad key named', async (t) => {
  t.match(parseRulesConfig({ maxViewMinutes: 20, disabled: ['covert_view'] }), { maxViewMinutes: 20, maxViewsPerShift: 10, disabled: ['covert_view'] });
  t.throws(() => parseRulesConfig({ maxViewMinuts: 20 }), /unknown key "maxViewMinuts"/);
  t.throws(() => parseRulesConfig({ maxViewMinutes: -1 }), /maxViewMinutes must be a number above 0/);
  t.throws(() => parseRulesConfig({ disabled: ['nope'] }), /disabled must list rule names/);
  const r = rig({ ...config, disabled: ['covert_view'] });
  r.view('cam-n1', 'sgt-1', day(9), 2, { covert: true });
  t.same(r.rules(), [], 'a disabled rule is quiet');
});
