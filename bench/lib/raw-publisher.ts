// Baseline for the drain benchmark, run as its own process (like the agent): plain mqtt.js
// publishing the same backlog as QoS 1 from memory, with the same window of unacknowledged
// publishes the agent's OutboxDrain would use, and no SQLite. The ceiling without the outbox.
//
// Usage: node bench/lib/raw-publisher.ts <url> <deviceId> <count> <window>
// Prints one JSON line: { connectedAt, ackedAt, published } (epoch ms).
import mqtt from 'mqtt';
import { backlogItem } from './payloads.ts';

const [url, deviceId, countArg, windowArg] = process.argv.slice(2);
if (!url || !deviceId || !countArg || !windowArg) {
  process.stderr.write('usage: raw-publisher.ts <url> <deviceId> <count> <window>\n');
  process.exit(2);
}
const count = Number(countArg);
const windowSize = Number(windowArg);
const epochNow = () => performance.timeOrigin + performance.now();

// The backlog, built before connecting: the same bytes the outbox stores.
const seqs = { gps: 0, event: 0 };
const messages: { topic: string; payload: Buffer }[] = [];
for (let i = 0; i < count; i++) {
  const item = backlogItem(i);
  const seq = ++seqs[item.channel];
  messages.push({ topic: `bwc/v1/${deviceId}/${item.channel}`, payload: Buffer.from(JSON.stringify({ seq, ...item.body })) });
}

const client = mqtt.connect(url, { protocolVersion: 5, clientId: `${deviceId}-pub`, clean: true, reconnectPeriod: 0 });
client.on('error', (err) => {
  process.stderr.write(`raw-publisher: ${err.message}\n`);
  process.exit(1);
});
client.once('connect', () => {
  const connectedAt = epochNow();
  let next = 0;
  let acked = 0;
  const send = () => {
    const m = messages[next++]!;
    client.publish(m.topic, m.payload, { qos: 1 }, (err) => {
      if (err) {
        process.stderr.write(`raw-publisher: publish failed: ${err.message}\n`);
        process.exit(1);
      }
      acked += 1;
      if (next < count) send();
      else if (acked === count) {
        const ackedAt = epochNow();
        process.stdout.write(`${JSON.stringify({ connectedAt, ackedAt, published: acked })}\n`);
        client.end(false, () => process.exit(0));
      }
    });
  };
  for (let i = 0; i < Math.min(windowSize, count); i++) send();
});
