// The clean stop's promise: the retained state the fleet is left with is the offline one, even when
// the agent asks to publish a state while the link is stopping. (The agent's coalesced state
// publish is a timer; an extension that changes the state while it stops, the capture worker for
// one, armed it again after the agent had cleared it, and it fired between the offline state and
// the disconnect: an emulated arm64 agent once left its camera "online" on the map after exit 0.)
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import t from 'tap';
import { configSchema } from '../src/config/schema.ts';
import { FleetLink } from '../src/link/fleet-link.ts';
import { Outbox } from '../src/link/outbox.ts';
import { openDatabase } from '../src/store/database.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { MqttRecorder } from './helpers/mqtt-recorder.ts';

const logger = pino({ level: 'silent' });
const deviceId = 'cam-link-stop';

t.test('a state published while the link stops does not follow the offline state', async (t) => {
  const broker = await startBroker();
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-link-stop-'));
  const db = openDatabase({ stateDir });
  const config = { ...configSchema.parse({ mqtt: { url: broker.url } }), deviceId, stateDir };
  const link = new FleetLink({
    config,
    outbox: new Outbox({ db, maxMessages: 100, logger }),
    logger,
    offlineState: (reason) => ({ deviceId, online: false, reason }),
  });
  const watcher = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/state`);
  t.teardown(async () => {
    await watcher.close();
    db.close();
    await broker.dispose();
    await rm(stateDir, { recursive: true, force: true });
  });

  link.publishState({ deviceId, online: true, n: 1 } as never);
  link.start();
  await watcher.waitFor(() => watcher.on('state').some((m) => m.json?.online === true), 30_000, 'the online state');

  // Called in the same turn as stop(): the offline state is already on its way (stop publishes it
  // before its first await when the outbox is empty), so the late state would land after it.
  const stopping = link.stop('test');
  link.publishState({ deviceId, online: true, n: 2 } as never);
  await stopping;

  // The broker handles one connection's packets in order: once it has processed the DISCONNECT
  // (its log says so), every publish sent before it is in the retained store.
  await waitForLog(broker, new RegExp(`Client ${deviceId} (closed its connection|disconnected)`), 30_000);
  const reader = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/state`);
  t.teardown(() => reader.close());
  await reader.waitFor(() => reader.on('state').length > 0, 30_000, 'the retained state');
  t.match(reader.on('state')[0]!.json, { online: false, reason: 'test' }, 'the retained state is the offline one');
  t.notOk(watcher.on('state').some((m) => m.json?.n === 2), 'the state asked for during the stop was never sent');
});

async function waitForLog(broker: { readonly log: string }, pattern: RegExp, timeoutMs: number): Promise<void> {
  // The helper exposes the log as a string, not as events: polled, with a hang guard.
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(broker.log)) {
    if (Date.now() > deadline) throw new Error(`broker log did not match ${pattern} within ${timeoutMs} ms:\n${broker.log.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
