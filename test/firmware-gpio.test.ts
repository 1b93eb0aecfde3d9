// The gpio backend, tested at the character-device tool interface: this machine (and CI) has no
// /dev/gpiochip* and no gpio-sim module, so fake libgpiod v1 tools (test/fixtures/fake-gpiod) log the
// exact invocations and play gpiomon's edge events; one test runs the real gpioset against a chip that
// does not exist. What the kernel then does with the lines cannot be exercised here.
import t, { type Test } from 'tap';
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { GpioBackend, GPIOMON_FORMAT, type GpioBackendOptions } from '../firmware-bridge/src/gpio-backend.ts';
import { gpioConfigSchema, type GpioConfigInput } from '../firmware-bridge/src/gpio-config.ts';
import { patternSteps, type LinkEvent } from '../firmware-bridge/src/interface.ts';
import { TRIGGER_PER_SOURCE } from '../firmware-bridge/src/input-budget.ts';

const silent = pino({ level: 'silent' });
const FAKE = fileURLToPath(new URL('./fixtures/fake-gpiod/', import.meta.url));
// A checkout may drop the executable bit; the fakes must run.
for (const f of ['gpioset', 'gpioget', 'gpiomon']) chmodSync(join(FAKE, f), 0o755);

type Press = { button: string; press: string };

async function waitFor(pred: () => boolean, what: string): Promise<void> {
  // Only a guard against a hang: every wait ends as soon as the condition holds.
  for (let i = 0; i < 2000; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** One gpiomon edge line as gpiomon prints it with GPIOMON_FORMAT; `ms` is the kernel timestamp. */
function edge(line: number, active: boolean, ms: number): string {
  return `${line} ${active ? 1 : 0} ${Math.floor(ms / 1000)} ${Math.round((ms % 1000) * 1e6)}`;
}

function rig(t: Test, config: GpioConfigInput = {}, opts: Partial<GpioBackendOptions> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'fake-gpiod-'));
  writeFileSync(join(dir, 'log'), '');
  const bridge = new GpioBackend({
    logger: silent,
    config: { toolsDir: FAKE, ...config },
    env: { ...process.env, FAKE_GPIOD_DIR: dir, FAKE_NODE: process.execPath },
    restartMinMs: 20,
    ...opts,
  });
  const presses: Press[] = [];
  const links: LinkEvent[] = [];
  bridge.on('button', (e) => presses.push(e));
  bridge.on('link', (e) => links.push(e));
  t.teardown(async () => {
    await bridge.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const calls = (): string[][] =>
    readFileSync(join(dir, 'log'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t'));
  const count = (name: string) => calls().filter((c) => c[0] === name).length;
  return {
    dir,
    bridge,
    presses,
    links,
    calls,
    count,
    feed: (...lines: string[]) => appendFileSync(join(dir, 'feed'), lines.join('\n') + '\n'),
    flag: (name: string, on: boolean) => (on ? writeFileSync(join(dir, name), '') : unlinkSync(join(dir, name))),
    /** start(), then wait until the fake gpiomon (monitor number n) reads its feed. */
    async started(n = 1) {
      await bridge.start();
      await waitFor(() => count('gpiomon') >= n, `gpiomon #${n}`);
    },
  };
}

const holders = (calls: string[][]) => calls.filter((c) => c[0] === 'gpioset' && c[1] === '--mode=signal').map((c) => c.slice(2).join(' '));

t.test('config: defaults, strictness, lines used twice', async (t) => {
  t.same(gpioConfigSchema.parse(undefined), {
    chip: 'gpiochip0',
    recordButtonLine: 17,
    buttonActiveLow: true,
    debounceMs: 30,
    longPressMs: 1500,
    doublePressMs: 400,
    holdMs: 3000,
    inputs: [],
    recordLedLine: 27,
    streamLedLine: 22,
    buzzerLine: 23,
    vibrationLine: 24,
  });
  t.throws(() => gpioConfigSchema.parse({ chipp: 'gpiochip0' }));
  t.throws(() => gpioConfigSchema.parse({ recordButtonLine: -1 }));
  t.throws(() => new GpioBackend({ logger: silent, config: { buzzerLine: 27 } }), /line 27 is used twice/);
  t.throws(() => new GpioBackend({ logger: silent, config: { functionButtonLine: 5, inputs: [{ line: 5, source: 'holster' }] } }), /line 5 is used twice/);
  t.throws(() => new GpioBackend({ logger: silent, config: { inputs: [{ line: 5, source: 'holster' }], fallLine: 5 } }), /line 5 is used twice/);
  t.throws(() => gpioConfigSchema.parse({ longPressMs: 2000, holdMs: 1500 }), /holdMs \(1500\) must be more than longPressMs \(2000\)/);
  t.throws(() => gpioConfigSchema.parse({ inputs: [{ line: 5, source: 'Holster!' }] }), /a source name/);
  t.throws(() => gpioConfigSchema.parse({ inputs: [{ line: 5, source: 'holster', polarity: 'low' }] }), /polarity/);
});

t.test('start: exact gpioset/gpioget/gpiomon arguments, link up, status', async (t) => {
  const r = rig(t, { functionButtonLine: 5, faultLedLine: 6, buttonBias: 'pull-up' });
  await r.started();
  await waitFor(() => holders(r.calls()).length === 3, 'three LED holders');
  const calls = r.calls();
  t.same(calls[0], ['gpioset', 'gpiochip0', '27=0', '22=0', '6=0', '23=0', '24=0'], 'probe drives every output low once');
  t.same(calls[1], ['gpioget', '--active-low', '--bias=pull-up', 'gpiochip0', '17', '5'], 'buttons read once');
  t.same(holders(calls).sort(), ['gpiochip0 22=0', 'gpiochip0 27=0', 'gpiochip0 6=0'], 'each LED held by its own gpioset');
  t.same(
    calls.find((c) => c[0] === 'gpiomon'),
    ['gpiomon', '--active-low', '--bias=pull-up', '--num-events=0', '--line-buffered', `--format=${GPIOMON_FORMAT}`, 'gpiochip0', '17', '5'],
  );
  t.same(r.links, [{ up: true, firmwareVersion: 'gpio' }]);
  t.same(r.bridge.status(), {
    linkUp: true,
    firmwareVersion: 'gpio',
    battery: { percent: null, charging: null, docked: null },
    lastPattern: null,
    lastError: null,
  });
  t.equal(r.bridge.kind, 'gpio');
  await r.bridge.start();
  t.equal(r.count('gpiomon'), 1, 'a second start() is a no-op');
});

t.test('start: active-high buttons and another chip', async (t) => {
  const r = rig(t, { chip: 'gpiochip4', buttonActiveLow: false, recordButtonLine: 3 });
  await r.started();
  t.same(
    r.calls().find((c) => c[0] === 'gpiomon'),
    ['gpiomon', '--num-events=0', '--line-buffered', `--format=${GPIOMON_FORMAT}`, 'gpiochip4', '3'],
  );
  t.same(r.calls().find((c) => c[0] === 'gpioget'), ['gpioget', 'gpiochip4', '3']);
});

t.test('debounce: a bouncing press and release are one press; garbage is ignored', async (t) => {
  const r = rig(t, { functionButtonLine: 5 });
  await r.started();
  r.feed(
    'not a gpiomon line',
    edge(9, true, 999_000), // a line we do not watch
    edge(17, true, 1_000_000),
    edge(17, false, 1_000_002),
    edge(17, true, 1_000_005),
    edge(17, false, 1_000_009),
    edge(17, true, 1_000_012),
    edge(17, true, 1_000_100), // repeated level (a lost edge): no change
    edge(17, false, 1_000_300),
    edge(17, true, 1_000_303),
    edge(17, false, 1_000_306),
    // The function button is the sentinel: once its press is seen, every record edge above was handled.
    edge(5, true, 1_002_000),
    edge(5, false, 1_002_200),
  );
  await waitFor(() => r.presses.some((p) => p.button === 'function'), 'the function press');
  t.same(r.presses, [
    { button: 'record', press: 'press' },
    { button: 'function', press: 'press' },
  ]);
});

t.test('debounce: a tap shorter than the window still counts once it settles', async (t) => {
  const r = rig(t, { debounceMs: 30 });
  await r.started();
  r.feed(edge(17, true, 5_000), edge(17, false, 5_010));
  await waitFor(() => r.presses.length === 1, 'the settled press');
  t.same(r.presses, [{ button: 'record', press: 'press' }]);
});

t.test('long press: reported when the hold passes longPressMs, release adds nothing', async (t) => {
  const r = rig(t, { functionButtonLine: 5, longPressMs: 100 });
  await r.started();
  r.feed(edge(17, true, 10_000));
  await waitFor(() => r.presses.length === 1, 'the long press');
  t.same(r.presses, [{ button: 'record', press: 'long' }]);
  r.feed(edge(17, false, 12_000), edge(5, true, 13_000), edge(5, false, 13_050));
  await waitFor(() => r.presses.length === 2, 'the function press');
  t.same(r.presses, [
    { button: 'record', press: 'long' },
    { button: 'function', press: 'press' },
  ]);
});

t.test('press vs long by kernel timestamps when the events arrive together', async (t) => {
  const r = rig(t, { longPressMs: 1500 });
  await r.started();
  r.feed(edge(17, true, 20_000), edge(17, false, 20_400), edge(17, true, 30_000), edge(17, false, 31_600));
  await waitFor(() => r.presses.length === 2, 'two presses');
  t.same(r.presses, [
    { button: 'record', press: 'press' },
    { button: 'record', press: 'long' },
  ]);
});

t.test('a button already held at start is not a press when let go', async (t) => {
  const r = rig(t, { functionButtonLine: 5 });
  writeFileSync(join(r.dir, 'gpioget-values'), '1 0\n');
  await r.started();
  r.feed(edge(17, false, 40_000), edge(5, true, 41_000), edge(5, false, 41_100), edge(17, true, 42_000), edge(17, false, 42_100));
  await waitFor(() => r.presses.length === 2, 'two presses');
  // (The function button's single press is reported once its double-press window has passed.)
  t.same(r.presses.map((p) => `${p.button}:${p.press}`).sort(), ['function:press', 'record:press']);
});

t.test('setLeds: only changed LED lines get a new gpioset holder', async (t) => {
  const r = rig(t, { faultLedLine: 6 });
  await r.started();
  await waitFor(() => holders(r.calls()).length === 3, 'three LED holders');
  await r.bridge.setLeds({ recording: true, streaming: false, fault: true });
  await waitFor(() => holders(r.calls()).length === 5, 'two new holders');
  const released = (calls: string[][]) => calls.filter((c) => c[0] === 'released').map((c) => c.slice(2).join(' '));
  t.same(released(r.calls()).sort(), ['gpiochip0 27=0', 'gpiochip0 6=0'], 'the old holders let go first');
  t.same(holders(r.calls()).slice(3).sort(), ['gpiochip0 27=1', 'gpiochip0 6=1']);
  await r.bridge.setLeds({ recording: true, streaming: false, fault: true });
  await r.bridge.setLeds({ recording: true, streaming: true, fault: true });
  await waitFor(() => holders(r.calls()).length === 6, 'the streaming holder');
  t.same(holders(r.calls())[5], 'gpiochip0 22=1', 'the unchanged state spawned nothing');
  t.same(released(r.calls()).sort(), ['gpiochip0 22=0', 'gpiochip0 27=0', 'gpiochip0 6=0']);
});

t.test('setLeds: a holder that dies is reported and replaced on the next call', async (t) => {
  const r = rig(t);
  await r.started();
  await waitFor(() => holders(r.calls()).length === 2, 'two LED holders');
  r.flag('fail-gpioset-signal', true);
  await r.bridge.setLeds({ recording: true, streaming: false, fault: false });
  await waitFor(() => r.bridge.status().lastError !== null, 'the holder error');
  t.match(r.bridge.status().lastError, /holder of LED line 27 ended: gpioset: error setting the GPIO line values: Device or resource busy/);
  r.flag('fail-gpioset-signal', false);
  await r.bridge.setLeds({ recording: true, streaming: false, fault: false });
  await waitFor(() => holders(r.calls()).filter((h) => h === 'gpiochip0 27=1').length === 2, 'the replacement holder');
  t.pass('re-driven');
});

t.test('notify: patterns become the documented pulse sequences, in order', async (t) => {
  const r = rig(t);
  await r.started();
  const pulses = () => r.calls().filter((c) => c[0] === 'gpioset' && c[1] === '--mode=time').map((c) => c.slice(1));
  await r.bridge.notify('record-start');
  t.same(pulses(), [
    ['--mode=time', '--sec=0', '--usec=150000', 'gpiochip0', '24=1', '23=1'],
    ['--mode=time', '--sec=0', '--usec=150000', 'gpiochip0', '24=1', '23=1'],
  ], 'record-start: 2 vibrations + 2 tones');
  t.equal(r.bridge.status().lastPattern, 'record-start');
  const before = pulses().length;
  // Asked together, they play one after the other, never overlapping on the lines.
  await Promise.all([r.bridge.notify('fault'), r.bridge.notify('stream-stop')]);
  const both = ['--mode=time', '--sec=0', '--usec=80000', 'gpiochip0', '24=1', '23=1'];
  const vib = ['--mode=time', '--sec=0', '--usec=80000', 'gpiochip0', '24=1'];
  t.same(pulses().slice(before), [both, both, both, vib, vib, ['--mode=time', '--sec=0', '--usec=300000', 'gpiochip0', '24=1']]);
  t.equal(r.bridge.status().lastPattern, 'stream-stop');
  t.same(patternSteps.fault.vibrations + patternSteps['stream-stop'].vibrations, 6, 'the table the sequence follows');
});

t.test('notify/setLeds: clear errors, never a crash', async (t) => {
  const r = rig(t);
  await t.rejects(r.bridge.notify('reminder'), /not started/);
  await t.rejects(r.bridge.setLeds({ recording: true, streaming: false, fault: false }), /not started/);
  await r.started();
  await t.rejects(r.bridge.notify('party' as never), /unknown notification pattern: party/);
  r.flag('fail-gpioset-time', true);
  await t.rejects(r.bridge.notify('reminder'), /notification reminder failed on gpiochip0: gpioset: error setting the GPIO line values: Device or resource busy/);
  t.match(r.bridge.status().lastError, /notification reminder failed/);
  r.flag('fail-gpioset-time', false);
  await r.bridge.notify('reminder');
  t.equal(r.bridge.status().lastPattern, 'reminder', 'the queue carries on after a failure');
});

t.test('gpiomon dying: link down with the reason, restart, buttons work again', async (t) => {
  const r = rig(t);
  await r.started();
  r.feed('EXIT 2');
  await waitFor(() => r.links.some((l) => !l.up), 'link down');
  const down = r.links.find((l) => !l.up)!;
  t.match(down.reason, /gpiomon: error waiting for events: No such device/);
  await waitFor(() => r.links.length === 3, 'link up again');
  t.same(r.links[2], { up: true, firmwareVersion: 'gpio' });
  await waitFor(() => r.count('gpiomon') === 2, 'the second gpiomon');
  t.match(r.bridge.status().lastError, /button monitor down: gpiomon: error waiting for events: No such device/);
  t.equal(r.bridge.status().linkUp, true);
  r.feed(edge(17, true, 50_000), edge(17, false, 50_100));
  await waitFor(() => r.presses.length === 1, 'a press after the restart');
  t.same(r.presses, [{ button: 'record', press: 'press' }]);
});

t.test('gpiomon failing at once keeps retrying with back-off until it runs', async (t) => {
  const r = rig(t, {}, { restartMinMs: 10, restartMaxMs: 40 });
  r.flag('fail-gpiomon', true);
  await r.bridge.start();
  await waitFor(() => r.count('gpiomon') >= 3, 'three attempts');
  t.match(r.links.find((l) => !l.up)?.reason, /No such file or directory/);
  r.flag('fail-gpiomon', false);
  const n = r.count('gpiomon');
  await waitFor(() => r.count('gpiomon') > n && r.bridge.status().linkUp, 'a monitor that stays up');
  r.feed(edge(17, true, 60_000), edge(17, false, 60_100));
  await waitFor(() => r.presses.length === 1, 'a press');
});

t.test('stop: monitor and holders end, outputs driven low, link down', async (t) => {
  const r = rig(t);
  await r.started();
  await waitFor(() => holders(r.calls()).length === 2, 'LED holders at start');
  await r.bridge.setLeds({ recording: true, streaming: true, fault: false });
  await waitFor(() => holders(r.calls()).length === 4, 'LED holders');
  const playing = t.rejects(r.bridge.notify('fault'), /notification fault/, 'a pattern cut short rejects rather than hangs');
  await r.bridge.stop();
  await playing;
  const calls = r.calls();
  t.same(calls[calls.length - 1], ['gpioset', 'gpiochip0', '27=0', '22=0', '23=0', '24=0']);
  t.same(calls.filter((c) => c[0] === 'released').map((c) => c.slice(2).join(' ')).sort(), ['gpiochip0 22=0', 'gpiochip0 22=1', 'gpiochip0 27=0', 'gpiochip0 27=1']);
  t.same(r.links[r.links.length - 1], { up: false, reason: 'stopped' });
  t.equal(r.bridge.status().linkUp, false);
  t.equal(r.bridge.status().firmwareVersion, null);
  await t.rejects(r.bridge.notify('reminder'), /not started/);
  await r.bridge.stop();
  // Restart after stop restores the LED state it was last asked for.
  await r.started(2);
  await waitFor(() => holders(r.calls()).filter((h) => h === 'gpiochip0 27=1').length === 2, 'LED state restored');
  t.pass('restarted');
});

t.test('start: clear errors when tools or lines are unusable', async (t) => {
  const noTools = new GpioBackend({ logger: silent, config: { toolsDir: '/nonexistent-gpiod-tools' } });
  await t.rejects(noTools.start(), /nonexistent-gpiod-tools\/gpioset not found: install the libgpiod v1 tools/);
  t.equal(noTools.status().linkUp, false);

  const r = rig(t);
  r.flag('fail-gpioget', true);
  await t.rejects(r.bridge.start(), /cannot read button lines 17 on gpiochip0: gpioget: error reading GPIO values/);
  t.equal(r.count('gpiomon'), 0);
  r.flag('fail-gpioget', false);
  r.flag('fail-gpioset-exit', true);
  await t.rejects(r.bridge.start(), /cannot drive output lines 27,22,23,24 on gpiochip0: gpioset: error setting the GPIO line values: Device or resource busy/);
  t.same(r.bridge.status().linkUp, false);
});

const realToolsUsable = existsSync('/usr/bin/gpioset') && !existsSync('/dev/gpiochip99');
t.test('start: the real gpioset against a gpiochip that does not exist', { skip: realToolsUsable ? false : 'needs the Debian gpiod tools and no /dev/gpiochip99' }, async (t) => {
  const bridge = new GpioBackend({ logger: silent, config: { toolsDir: '/usr/bin', chip: 'gpiochip99' } });
  const links: LinkEvent[] = [];
  bridge.on('link', (l) => links.push(l));
  await t.rejects(bridge.start(), /gpio: cannot drive output lines 27,22,23,24 on gpiochip99: (\/usr\/bin\/)?gpioset: error setting the GPIO line values: No such file or directory/);
  t.match(bridge.status(), {
    linkUp: false,
    firmwareVersion: null,
    battery: { percent: null, charging: null, docked: null },
    lastPattern: null,
    lastError: /on gpiochip99: .*No such file or directory/,
  });
  t.same(links, [], 'never up');
  await t.rejects(bridge.setLeds({ recording: true, streaming: false, fault: false }), /not started/);
  await bridge.stop();
});

t.test('start: trigger inputs and the fall line join the button gpiomon when wired alike, else get their own', async (t) => {
  const r = rig(t, {
    functionButtonLine: 5,
    inputs: [
      { line: 6, source: 'holster' },
      { line: 12, source: 'lightbar', activeLow: false, bias: 'pull-down' },
    ],
    fallLine: 13,
    fallActiveLow: false,
  });
  await r.started(3);
  await waitFor(() => r.bridge.status().linkUp, 'link up');
  const calls = r.calls();
  t.same(calls.filter((c) => c[0] === 'gpioget'), [
    ['gpioget', '--active-low', 'gpiochip0', '17', '5', '6'],
    ['gpioget', '--bias=pull-down', 'gpiochip0', '12'],
    ['gpioget', 'gpiochip0', '13'],
  ], 'each group read once at start');
  const opts = ['--num-events=0', '--line-buffered', `--format=${GPIOMON_FORMAT}`];
  // The monitors are spawned together and each fake tool logs itself when it runs, so the log's order is
  // the scheduler's (one CI run logged the pull-down monitor first); the property is the set of monitors.
  const byArgs = (a: string[], b: string[]) => a.join(' ').localeCompare(b.join(' '));
  t.same(calls.filter((c) => c[0] === 'gpiomon').sort(byArgs), [
    ['gpiomon', '--active-low', ...opts, 'gpiochip0', '17', '5', '6'],
    ['gpiomon', '--bias=pull-down', ...opts, 'gpiochip0', '12'],
    ['gpiomon', ...opts, 'gpiochip0', '13'],
  ].sort(byArgs), 'one gpiomon per active-low/bias setting');
  t.same(r.links, [{ up: true, firmwareVersion: 'gpio' }], 'up once, when all three run');
});

t.test('trigger inputs: each debounced change to active is one trigger; release, and an input active at start, report nothing', async (t) => {
  const r = rig(t, { inputs: [{ line: 6, source: 'holster' }, { line: 7, source: 'taser' }], fallLine: 8 });
  const triggers: string[] = [];
  let falls = 0;
  r.bridge.on('trigger', (e) => triggers.push(e.source));
  r.bridge.on('fall', () => falls++);
  writeFileSync(join(r.dir, 'gpioget-values'), '0 0 1 0\n'); // lines 17 6 7 8: the taser line is already active
  await r.started();
  r.feed(
    edge(6, true, 70_000), // holster drawn, with contact bounce
    edge(6, false, 70_003),
    edge(6, true, 70_006),
    edge(6, false, 72_000), // holstered: nothing
    edge(7, false, 72_500), // the taser line, active at start, goes inactive: nothing
    edge(8, true, 73_000), // the fall detector
    edge(8, false, 73_100),
    edge(7, true, 74_000), // now the taser is armed
  );
  await waitFor(() => triggers.length === 2, 'two triggers');
  t.same(triggers, ['holster', 'taser']);
  t.equal(falls, 1, 'one fall');
  t.same(r.presses, [], 'no button press came of it');
});

t.test('trigger inputs: a chattering line is cut to the input budget', async (t) => {
  // A frozen clock for the budget: the outcome is exact, whatever the machine's load.
  const r = rig(t, { inputs: [{ line: 6, source: 'holster' }] }, { now: () => 5_000 });
  const triggers: string[] = [];
  r.bridge.on('trigger', (e) => triggers.push(e.source));
  await r.started();
  const edges: string[] = [];
  // 50 activations, each well past the debounce time: not bounce but a faulty sensor (or line).
  for (let i = 0; i < 50; i++) edges.push(edge(6, true, 80_000 + i * 200), edge(6, false, 80_000 + i * 200 + 100));
  r.feed(...edges, edge(17, true, 95_000), edge(17, false, 95_050)); // the record button as the sentinel
  await waitFor(() => r.presses.length === 1, 'the sentinel press');
  t.equal(triggers.length, TRIGGER_PER_SOURCE.burst, `cut to the per-source burst: ${triggers.length} of 50`);
  t.equal(r.bridge.counters().rateLimited, 50 - TRIGGER_PER_SOURCE.burst, 'the rest counted');
});

t.test('function button: double press, hold, and long between the two', async (t) => {
  const r = rig(t, { functionButtonLine: 5, longPressMs: 200, holdMs: 600, doublePressMs: 400 });
  await r.started();
  const fn = () => r.presses.filter((p) => p.button === 'function').map((p) => p.press);
  // Two taps 250 ms apart (kernel time): one double, not two presses.
  r.feed(edge(5, true, 100_000), edge(5, false, 100_050), edge(5, true, 100_300), edge(5, false, 100_350));
  await waitFor(() => fn().length === 1, 'the double');
  t.same(fn(), ['double']);
  // Two taps 1 s apart, arriving together: two presses.
  r.feed(edge(5, true, 110_000), edge(5, false, 110_050), edge(5, true, 111_050), edge(5, false, 111_100));
  await waitFor(() => fn().length === 3, 'two single presses');
  t.same(fn().slice(1), ['press', 'press']);
  // Held past holdMs: hold, reported while still held; the release adds nothing.
  r.feed(edge(5, true, 120_000));
  await waitFor(() => fn().length === 4, 'the hold');
  t.same(fn()[3], 'hold');
  r.feed(edge(5, false, 125_000));
  // Let go between longPressMs and holdMs: long (kernel times, so the whole press arrives at once).
  r.feed(edge(5, true, 130_000), edge(5, false, 130_300));
  await waitFor(() => fn().length === 5, 'the long press');
  t.same(fn()[4], 'long');
  // A tap, then within the window a long press: the tap stands alone, then the long press.
  r.feed(edge(5, true, 140_000), edge(5, false, 140_050), edge(5, true, 140_200), edge(5, false, 140_500));
  await waitFor(() => fn().length === 7, 'a press and a long press');
  t.same(fn().slice(5), ['press', 'long']);
  // The record button keeps press and long only, at once.
  r.feed(edge(17, true, 150_000), edge(17, false, 150_050));
  await waitFor(() => r.presses.at(-1)?.button === 'record', 'record press');
  t.same(r.presses.at(-1), { button: 'record', press: 'press' });
});
