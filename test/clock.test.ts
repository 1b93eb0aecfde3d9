// The device clock's synchronisation verdict: the kernel's (adjtimex), whatever daemon keeps the
// time, with its estimated error; timesyncd's flag file only when adjtimex cannot be called.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { interpretTimex, loadAdjtimex, SystemClock, type TimexReading } from '../src/command/clock.ts';

const reading = (r: Partial<TimexReading>): TimexReading => ({ state: 0, status: 0, maxerrorUs: 12_000, esterrorUs: 250, ...r });

t.test('the kernel verdict from an adjtimex reading', async (t) => {
  t.same(interpretTimex(reading({})), { synchronised: true, source: 'adjtimex', estErrorUs: 250, maxErrorUs: 12_000 }, 'TIME_OK, STA_UNSYNC clear: synchronised, with its error');
  t.equal(interpretTimex(reading({ state: 1, status: 0x0010 })).synchronised, true, 'TIME_INS (leap second pending) is still synchronised');
  t.equal(interpretTimex(reading({ status: 0x2001 })).synchronised, true, 'other status bits (STA_PLL, STA_NANO) do not matter');
  t.match(interpretTimex(reading({ state: 5, status: 0x0040, maxerrorUs: 16_000_000, esterrorUs: 16_000_000 })), { synchronised: false, note: /TIME_ERROR/, estErrorUs: 16_000_000 }, 'TIME_ERROR: not synchronised');
  t.match(interpretTimex(reading({ state: 0, status: 0x0041 })), { synchronised: false, note: /STA_UNSYNC/ }, 'STA_UNSYNC set: not synchronised');
  t.match(interpretTimex(reading({ state: -1 })), { synchronised: false, note: /failed/ }, 'a failed call is not synchronised');
});

t.test('SystemClock asks the kernel on every call', async (t) => {
  let next = reading({ state: 5, status: 0x40 });
  const clock = new SystemClock({ loadAdjtimex: () => () => next, flag: '/nonexistent' });
  t.equal(clock.synchronised(), false);
  next = reading({});
  t.equal(clock.synchronised(), true, 'chrony (or any daemon) clearing STA_UNSYNC counts, no flag file needed');
  t.match(clock.state(), { source: 'adjtimex', estErrorUs: 250 });
});

t.test('without adjtimex, timesyncd\'s flag file decides, and the state says so', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-clock-'));
  const flag = path.join(dir, 'synchronized');
  const warnings: string[] = [];
  const clock = new SystemClock({ loadAdjtimex: () => { throw new Error('no koffi build for this platform'); }, flag, warn: (m) => warnings.push(m) });
  t.match(warnings, [/no koffi build for this platform.*synchronized/], 'told once, naming why and the fallback');
  t.match(clock.state(), { synchronised: false, source: 'timesyncd-flag', note: /is absent/ });
  await writeFile(flag, '');
  t.match(clock.state(), { synchronised: true, source: 'timesyncd-flag' });
});

t.test('one real adjtimex call on this machine', async (t) => {
  const r = loadAdjtimex()();
  t.ok(r.state >= 0 && r.state <= 5, `a clock state 0..5 (got ${r.state})`);
  t.ok(Number.isSafeInteger(r.maxerrorUs) && r.maxerrorUs >= 0, `maxerror ${r.maxerrorUs} µs`);
  t.ok(Number.isSafeInteger(r.esterrorUs) && r.esterrorUs >= 0, `esterror ${r.esterrorUs} µs`);
  const state = new SystemClock().state();
  t.equal(state.source, 'adjtimex');
  // The kernel sets STA_UNSYNC exactly when it answers TIME_ERROR unless a daemon is mid-update;
  // either way the verdict must agree with the raw reading.
  t.equal(state.synchronised, r.state !== 5 && (r.status & 0x40) === 0, `verdict ${state.synchronised} (${state.note ?? 'synchronised'})`);
});
