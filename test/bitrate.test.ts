// Bandwidth adaptation (src/stream/bitrate.ts): one viewer's target, the encoder's hysteresis, and
// the loop that sets the live encoder from the connected viewers, driven through StreamManager.
import t from 'tap';
import { EncoderRateHysteresis, PathBitrate, type PathSample } from '../src/stream/bitrate.ts';
import { authorised, rig, until } from './helpers/stream-rig.ts';

t.test('bandwidth: per-link target, then the encoder at the lowest, with hysteresis', async (t) => {
  const limits = { minKbps: 150, maxKbps: 2000, startKbps: 800 };
  const link = new PathBitrate(limits);
  const s = (sendKbps: number, lossFraction?: number, deliveredKbps?: number): PathSample => ({ sendKbps, lossFraction, deliveredKbps, intervalMs: 1000 });
  t.equal(link.update(s(800, 0.5), 0), 360, 'heavy loss: 90 % of what was delivered');
  t.equal(link.update(s(360, 0.03), 1000), 360, 'moderate (random) loss: hold');
  t.equal(link.update(s(360, 0), 2000), 360 * 1.01, 'no loss just under where the link gave way: cautious growth');
  const after = link.update(s(360, 0), 20_000);
  t.equal(after, 360 * 1.01 * 1.1, 'once the congestion is forgotten: probing growth');
  t.equal(link.update(s(100, 0), 21_000), after, 'no growth beyond what the encoder uses');
  t.equal(link.update(s(400, 0, 300), 22_000), 270, 'delivered rate falling behind the send rate, nothing lost: a queue is building');
  t.equal(link.update(s(270, 0.03, 150), 23_000), 270, 'under random loss werift\'s delivered estimate is not trusted');
  const floor = new PathBitrate(limits);
  for (let i = 0; i < 20; i++) floor.update(s(800, 0.9), i * 1000);
  t.equal(floor.targetKbps, 150, 'never under minKbps');
  const ceiling = new PathBitrate(limits);
  for (let i = 0; i < 40; i++) ceiling.update(s(ceiling.targetKbps, 0), i * 1000);
  t.equal(ceiling.targetKbps, 2000, 'never over maxKbps');

  const h = new EncoderRateHysteresis(800);
  t.equal(h.next(790, 0), undefined, 'a small change is not worth reconfiguring the encoder');
  t.equal(h.next(500, 10), 500, 'a decrease applies at once');
  t.equal(h.next(600, 20), 600, 'an increase of 10 % or more applies');
  t.equal(h.next(700, 500), undefined, 'but not twice within a second');
  t.equal(h.next(700, 1100), 700);
});

t.test('bandwidth: the manager sets the live encoder from its viewers', async (t) => {
  const r = rig({ bitrate: { adapt: true, minKbps: 150, maxKbps: 2000, startKbps: 800 } });
  t.teardown(() => r.manager.stop());
  await r.manager.startStream(await authorised('stream.start'));
  const s = r.sessions[0]!;
  s.setConnection('connected');
  t.same(r.bitrates, [800], 'the live encoder starts at startKbps when the valve opens');
  s.nextSample = { sendKbps: 800, lossFraction: 0.5, deliveredKbps: undefined, intervalMs: 1000 };
  await until('the bitrate down', () => r.bitrates.some((b) => b < 500));
  t.equal(r.bitrates.at(-1), 360);
  t.equal(r.state().bitrateKbps, 360, 'state shows the live bitrate');
  s.nextSample = { sendKbps: 360, lossFraction: 0, deliveredKbps: 360, intervalMs: 1000 };
  // Congestion is remembered for 10 s of wall clock and the climb is 1 % a tick: ~11 s at best, so 60 s
  // is a hang guard, not an expectation.
  await until('the bitrate back up', () => r.bitrates.at(-1)! > 400, 60_000);
  t.ok(r.bitrates.every((b) => b >= 150 && b <= 2000), 'within the floor and ceiling');
  t.match(r.state().list[0], { rttMs: 42, iceRestarts: 0 });

  const fixed = rig();
  t.teardown(() => fixed.manager.stop());
  const off = rig({ bitrate: { adapt: false, minKbps: 150, maxKbps: 2000, startKbps: 800 } });
  t.teardown(() => off.manager.stop());
  await off.manager.startStream(await authorised('stream.start'));
  off.sessions[0]!.nextSample = { sendKbps: 800, lossFraction: 0.5, deliveredKbps: undefined, intervalMs: 1000 };
  off.sessions[0]!.setConnection('connected');
  await new Promise((res) => setTimeout(res, 1500));
  t.same(off.bitrates, [], 'adapt: false leaves the live encoder alone');
  t.equal(off.state().bitrateKbps, null);
});
