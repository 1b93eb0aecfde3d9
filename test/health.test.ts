import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { DeviceState } from '../src/state/device-state.ts';
import { HealthExtension } from '../src/telemetry/health-extension.ts';
import { HealthProbe } from '../src/telemetry/health.ts';

const logger = pino({ level: 'silent' });

t.test('a sample reads storage, temperature, load and memory from the kernel', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-health-'));
  const zone = path.join(dir, 'temp');
  await writeFile(zone, '48312\n');
  const s = await new HealthProbe({ storagePath: dir, thermalZone: zone }).sample();
  t.equal(s.cpuTemperatureC, 48.3, 'millidegrees to degrees');
  t.ok(s.storage.totalBytes > 0 && s.storage.freeBytes <= s.storage.totalBytes);
  t.ok(s.storage.freePercent >= 0 && s.storage.freePercent <= 100);
  t.equal(s.load.length, 3);
  t.ok(s.memory.agentRssBytes > 0 && s.memory.totalBytes >= s.memory.availableBytes);
  const none = await new HealthProbe({ storagePath: dir, thermalZone: path.join(dir, 'absent') }).sample();
  t.equal(none.cpuTemperatureC, null, 'no thermal zone: null, not a guess');
});

t.test('storage crossing the threshold raises storage.low, then storage.ok', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-health-'));
  const sent: { channel: string; body: Record<string, unknown> }[] = [];
  const link = {
    send: (channel: 'gps' | 'event' | 'audit', body: object) => {
      sent.push({ channel, body: body as Record<string, unknown> });
    },
    summary: () => ({ connected: true, reconnects: 0, outboxQueued: 0, outboxThinned: {}, outboxHeldInMemory: 0, outboxWriteError: null }),
  };
  const state = new DeviceState({ deviceId: 'cam-h', agentVersion: 'test' });
  const low = new HealthExtension({ intervalS: 3600, storageLowPercent: 100, storagePath: dir, thermalZone: '/nonexistent', link, state, logger });
  await low.start();
  low.stop();
  t.equal(sent.length, 1);
  t.equal(sent[0]!.body.type, 'storage.low');
  t.equal(sent[0]!.body.thresholdPercent, 100);
  t.ok(state.snapshot().health, 'health lands in the state');
  await low.sampleNow();
  t.equal(sent.length, 1, 'raised once per crossing, not on every sample');

  const ok = new HealthExtension({ intervalS: 3600, storageLowPercent: 0, storagePath: dir, thermalZone: '/nonexistent', link, state, logger });
  await ok.sampleNow();
  t.equal(sent.length, 1, 'plenty of space: no event');

  const broken = new HealthExtension({ intervalS: 3600, storageLowPercent: 10, storagePath: path.join(dir, 'gone'), thermalZone: '/nonexistent', link, state, logger });
  await broken.sampleNow();
  t.equal(sent.length, 1, 'a failed sample is logged, not thrown');
});
