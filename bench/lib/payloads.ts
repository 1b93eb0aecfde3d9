// The backlog an outage leaves behind: mostly GPS fixes (thinnable) with some events (durable),
// shaped like what GpsExtension and the event producers send, ~200 bytes each once the outbox
// has put `seq` in front. Deterministic, so the raw mqtt.js baseline sends the same bytes.
import type { MessageClass } from '../../src/link/outbox.ts';

export interface BacklogItem {
  channel: 'gps' | 'event';
  cls: MessageClass;
  body: Record<string, unknown>;
}

/** One message in `eventEvery` is an event; the rest are GPS fixes. */
export const eventEvery = 20;
const t0 = Date.parse('2025-11-24T08:00:00.000Z');
const eventTypes = ['recording.started', 'recording.stopped', 'storage.low', 'button.pressed'] as const;

export function backlogItem(i: number): BacklogItem {
  const at = new Date(t0 + i * 1000).toISOString();
  if (i % eventEvery === eventEvery - 1) {
    return {
      channel: 'event',
      cls: 'durable',
      body: {
        type: eventTypes[i % eventTypes.length],
        time: at,
        recordingId: `rec-${(i * 2654435761) % 0xffffffff}`,
        trigger: 'button',
        operatorId: 'PC-4711',
        evidenceBytes: 1024 * (i % 5000),
      },
    };
  }
  const walk = i / 100_000;
  return {
    channel: 'gps',
    cls: 'thinnable',
    body: {
      time: at,
      gpsd: 'connected',
      fix: '3d',
      gpsTime: at,
      lat: Math.round((51.507351 + walk * 0.01) * 1e6) / 1e6,
      lon: Math.round((-0.127758 + walk * 0.02) * 1e6) / 1e6,
      altitudeM: Math.round((35 + (i % 50) / 10) * 10) / 10,
      accuracyM: Math.round((3 + (i % 30) / 10) * 10) / 10,
      speedMps: Math.round(((i % 200) / 100) * 100) / 100,
      courseDeg: Math.round(((i * 7) % 3600) / 10 * 10) / 10,
    },
  };
}

/** Per-channel counts of a backlog of `count` messages (seq on each channel runs 1..n). */
export function backlogCounts(count: number): Record<'gps' | 'event', number> {
  const events = Math.floor(count / eventEvery);
  return { gps: count - events, event: events };
}
