// The officer extension's decisions on their own (the real agent is in test/officer-agent.test.ts):
// a watch-me request ends when a live view with reason officer-request connects (and not for another
// reason), gestures the map does not give a meaning do nothing, the record button's press and long
// press stay the firmware extension's, a fall without officer.fallIsEmergency is only audited, and the
// config refuses a gesture map that would take the record button's start or stop.
import { EventEmitter } from 'node:events';
import pino from 'pino';
import t from 'tap';
import type { FirmwareBridgeEvents, NotificationPattern } from '../firmware-bridge/src/interface.ts';
import type { AuditRecord } from '../src/audit/audit-log.ts';
import { configSchema } from '../src/config/schema.ts';
import { OfficerExtension, type OfficerConfig } from '../src/officer/officer-extension.ts';
import type { RecordTrigger } from '../src/recording/recorder.ts';
import { DeviceState, type StreamSessionState } from '../src/state/device-state.ts';

const defaults = configSchema.parse({}).officer;

function rig(config: Partial<OfficerConfig> = {}) {
  const bridge = new EventEmitter<FirmwareBridgeEvents>();
  const state = new DeviceState({ deviceId: 'cam-unit', agentVersion: '0.0.0' });
  const audit: AuditRecord[] = [];
  const events: Record<string, unknown>[] = [];
  const patterns: NotificationPattern[] = [];
  const starts: RecordTrigger[] = [];
  const gps: (number | null)[] = [];
  let recordingId: string | null = null;
  const officer = new OfficerExtension({
    config: { ...defaults, ...config },
    whileNotRecording: 'start-recording',
    bridge,
    recorder: {
      start: (trigger) => {
        starts.push(trigger);
        recordingId ??= `rec-${starts.length}`;
        return { ok: true, recordingId };
      },
      status: () => ({ recording: recordingId !== null, recordingId }),
      mark: () => null,
    },
    audit: { append: (r) => audit.push(r) },
    sendEvent: (e) => events.push(e),
    state,
    wearer: { notify: (p) => patterns.push(p) },
    gps: { setEmergencyInterval: (s) => gps.push(s) },
    logger: pino({ level: 'silent' }),
  });
  officer.start();
  t.teardown(() => officer.stop());
  return { bridge, state, audit, events, patterns, starts, gps, officer };
}

const view = (reason: string, state: StreamSessionState['state']): StreamSessionState => ({
  sid: `s-${reason}`, operator: 'sgt-1', reason, state, startedAt: '', endsBy: '', covert: false, rttMs: null, iceRestarts: 0,
});

t.test('watch-me ends when a view with reason officer-request connects, not for another reason or while connecting', async (t) => {
  const { bridge, state, events, patterns, starts } = rig();
  bridge.emit('button', { button: 'function', press: 'double' });
  t.match(events, [{ type: 'officer.watch_me', requestId: String, position: null, recordingId: 'rec-1' }], 'event with no position (no fix)');
  t.same(starts, [{ kind: 'watch-me' }]);
  t.same(patterns, ['watch-me-sent']);
  t.not(state.snapshot().officer.watchMe, null);
  state.update({ streaming: { sessions: 1, bitrateKbps: null, list: [view('public-safety', 'connected')] } });
  t.not(state.snapshot().officer.watchMe, null, 'a view for another reason does not answer it');
  state.update({ streaming: { sessions: 1, bitrateKbps: null, list: [view('officer-request', 'connecting')] } });
  t.not(state.snapshot().officer.watchMe, null, 'nor one still connecting');
  state.update({ streaming: { sessions: 1, bitrateKbps: null, list: [view('officer-request', 'connected')] } });
  t.equal(state.snapshot().officer.watchMe, null, 'the officer-request view connected: answered');
});

t.test('watch-me shows until officer.watchMeExpiry without a view', async (t) => {
  const { bridge, state } = rig({ watchMeExpiry: 0.05 });
  bridge.emit('button', { button: 'function', press: 'double' });
  t.not(state.snapshot().officer.watchMe, null);
  // The expiry timer is unref'd (it must not keep an agent alive); the hang guard keeps this test's loop alive.
  await new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('watchMe never expired')), 10_000);
    const check = () => {
      if (state.snapshot().officer.watchMe !== null) return;
      state.off('changed', check);
      clearTimeout(guard);
      resolve();
    };
    state.on('changed', check);
  });
  t.pass('cleared by the expiry (a state change, awaited)');
});

t.test('gestures without a meaning, and the record button\'s own, do nothing here', async (t) => {
  const { bridge, events, starts, patterns } = rig({ buttons: { 'function:double': 'none' } });
  bridge.emit('button', { button: 'function', press: 'double' });
  bridge.emit('button', { button: 'function', press: 'press' });
  bridge.emit('button', { button: 'record', press: 'press' });
  bridge.emit('button', { button: 'record', press: 'long' });
  t.same([events, starts, patterns], [[], [], []]);
});

t.test('a fall with officer.fallIsEmergency false is audited only; with it, one emergency however many falls', async (t) => {
  const off = rig({ fallIsEmergency: false });
  off.bridge.emit('fall');
  t.same(off.events, [], 'no event');
  t.match(off.audit, [{ type: 'officer.fall', detail: { emergency: false } }]);
  t.same(off.gps, []);
  const on = rig();
  on.bridge.emit('fall');
  on.bridge.emit('fall');
  t.match(on.events.filter((e) => e.type === 'officer.emergency'), [{ source: 'fall' }], 'one emergency');
  t.same(on.gps, [1], 'GPS at officer.emergencyGpsInterval');
  on.bridge.emit('button', { button: 'record', press: 'hold' });
  t.match(on.events.at(-1), { type: 'officer.emergency_cleared', by: 'wearer' });
  t.same(on.gps, [1, null], 'GPS back to normal');
});

t.test('an unknown or malformed trigger source is audited and does nothing else', async (t) => {
  const { bridge, audit, starts } = rig();
  bridge.emit('trigger', { source: 'siren' });
  bridge.emit('trigger', { source: 'Bad Source\n' });
  t.match(audit, [{ type: 'officer.trigger', detail: { source: 'siren', actions: [] } }, { type: 'officer.trigger', detail: { source: 'invalid', actions: [] } }]);
  t.same(starts, []);
});

t.test('the config refuses a gesture map that takes the record button\'s start or stop, naming the key', async (t) => {
  for (const gesture of ['record:press', 'record:long', 'volume:press']) {
    const r = configSchema.safeParse({ officer: { buttons: { [gesture]: 'bookmark' } } });
    t.equal(r.success, false, `${gesture} refused`);
    t.match(JSON.stringify(r.error?.issues), /officer.*buttons/, 'the issue names officer.buttons');
  }
  t.equal(configSchema.safeParse({ officer: { triggers: { holster: ['stop'] } } }).success, false, 'a trigger cannot "stop"');
  t.equal(configSchema.safeParse({ stream: { whileNotRecording: 'refuse' } }).success, true);
});
