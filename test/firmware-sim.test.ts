import pino from 'pino';
import t from 'tap';
import { NOTIFICATION_PATTERNS, patternSteps } from '../firmware-bridge/src/interface.ts';
import type { FirmwareBridge, LinkEvent } from '../firmware-bridge/src/interface.ts';
import { SIM_FIRMWARE_VERSION, SimBackend } from '../firmware-bridge/src/sim-backend.ts';

const logger = pino({ level: 'silent' });

t.test('every pattern has default steps; record-start is 2 vibrations and 2 tones', async (t) => {
  for (const p of NOTIFICATION_PATTERNS) t.ok(patternSteps[p], p);
  t.match(patternSteps['record-start'], { vibrations: 2, tones: 2 });
});

t.test('lifecycle, link events and status', async (t) => {
  const sim = new SimBackend({ logger });
  const bridge: FirmwareBridge = sim;
  t.equal(bridge.kind, 'sim');
  const links: LinkEvent[] = [];
  sim.on('link', (e) => links.push(e));
  t.equal(sim.status().linkUp, false);
  await t.rejects(sim.notify('record-start'), /not started/);
  t.throws(() => sim.pressButton('record'), /not started/);
  await sim.start();
  await sim.start();
  t.same(links, [{ up: true, firmwareVersion: SIM_FIRMWARE_VERSION }], 'one link-up event');
  t.same(sim.status(), {
    linkUp: true,
    firmwareVersion: 'sim-1.0',
    battery: { percent: null, charging: null, docked: null },
    lastPattern: null,
    lastError: null,
  });
  await sim.stop();
  t.match(links.at(-1), { up: false });
  t.equal(sim.status().firmwareVersion, null);
});

t.test('records patterns and LED states', async (t) => {
  const sim = new SimBackend({ logger, historyLimit: 3 });
  await sim.start();
  await sim.notify('record-start');
  await sim.setLeds({ recording: true, streaming: false, fault: false });
  await sim.notify('reminder');
  t.equal(sim.status().lastPattern, 'reminder');
  t.same(sim.ledState(), { recording: true, streaming: false, fault: false });
  t.match(sim.history, [
    { kind: 'notify', pattern: 'record-start' },
    { kind: 'leds', leds: { recording: true } },
    { kind: 'notify', pattern: 'reminder' },
  ]);
  await sim.notify('record-stop');
  t.equal(sim.history.length, 3, 'history is bounded');
  t.match(sim.history.at(-1), { pattern: 'record-stop' });
  await t.rejects(sim.notify('bogus' as never), /unknown notification pattern/);
});

t.test('pressButton and setBattery emit events', async (t) => {
  const sim = new SimBackend({ logger });
  await sim.start();
  const presses: unknown[] = [];
  const batteries: unknown[] = [];
  sim.on('button', (b) => presses.push(b));
  sim.on('battery', (b) => batteries.push(b));
  sim.pressButton('record', 'press');
  sim.pressButton('function', 'long');
  sim.pressButton('record');
  t.same(presses, [
    { button: 'record', press: 'press' },
    { button: 'function', press: 'long' },
    { button: 'record', press: 'press' },
  ]);
  t.throws(() => sim.pressButton('power' as never), /unknown button/);
  t.throws(() => sim.pressButton('record', 'triple' as never), /unknown button press/);

  sim.setBattery(42);
  sim.setBattery(43.6, true, true);
  t.same(batteries, [
    { percent: 42, charging: false, docked: false },
    { percent: 44, charging: true, docked: true },
  ]);
  t.same(sim.status().battery, { percent: 44, charging: true, docked: true });
  t.throws(() => sim.setBattery(101), /0\.\.100/);
  t.throws(() => sim.setBattery(Number.NaN), /0\.\.100/);
});

t.test('double and hold gestures, trigger inputs and the fall detector', async (t) => {
  const sim = new SimBackend({ logger });
  t.throws(() => sim.trigger('holster'), /not started/);
  t.throws(() => sim.fall(), /not started/);
  await sim.start();
  const events: unknown[] = [];
  sim.on('button', (b) => events.push(b));
  sim.on('trigger', (e) => events.push(e));
  sim.on('fall', () => events.push('fall'));
  sim.pressButton('function', 'double');
  sim.pressButton('function', 'hold');
  sim.trigger('holster');
  sim.trigger('input-42');
  sim.fall();
  t.same(events, [{ button: 'function', press: 'double' }, { button: 'function', press: 'hold' }, { source: 'holster' }, { source: 'input-42' }, 'fall']);
  t.throws(() => sim.trigger('Holster; rm -rf'), /trigger source must match/);
  t.throws(() => sim.trigger(''), /trigger source must match/);
  t.equal(events.length, 5, 'nothing came of the refused ones');
});

