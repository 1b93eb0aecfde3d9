// Command publish -> reply on loopback, through a real mosquitto and the real agent process:
// MQTT 5 request/response, JWS verification, the replay cache and the audit entry (committed with
// synchronous=FULL before the reply). Two paths: an accepted record.start, and a command signed by
// an unknown key (refused after the header check, still audited).
//
// Usage: node bench/command-roundtrip.ts [--runs 50]
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { generateIssuerKeys, signCommand } from '../src/cli/fleet-tools.ts';
import { spawnAgent, tempStateDir } from '../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../test/helpers/agent-config.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { FleetClient } from '../test/helpers/fleet-client.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, round, summarise, writeResult } from './lib/common.ts';

async function main(): Promise<void> {
  installCleanup();
  const runs = intFlag(parseFlags(process.argv.slice(2)), 'runs', 50);
  const keys = await mkdtemp(path.join(os.tmpdir(), 'bwc-bench-keys-'));
  const trusted = await generateIssuerKeys(path.join(keys, 'trusted'), ['record.start', 'record.stop']);
  const stranger = await generateIssuerKeys(path.join(keys, 'stranger'), ['record.start']);
  const broker = await startBroker();
  const stateDir = await tempStateDir('bwc-bench-cmd-');
  const deviceId = 'bench-cmd';
  const agent = spawnAgent(['run', '--config', await writeAgentConfig(stateDir, { commands: { trustStore: trusted.trustStoreFile, unsynchronisedClock: 'accept' } })], {
    BWC_DEVICE_ID: deviceId,
    BWC_MQTT_URL: broker.url,
    BWC_STATE_DIR: stateDir,
    BWC_GPSD: `127.0.0.1:${await freeLoopbackPort()}`,
    BWC_LOG_LEVEL: 'warn',
  });
  try {
    await agent.waitForOutput(/"msg":"connected to the broker"|bwc-agent running/, 30_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
    // One fleet-side client for all samples: the figure is publish -> reply, not connection set-up.
    const client = await FleetClient.connect(broker.url, 'bench/replies');
    const request = (token: string) => client.request(deviceId, JSON.stringify({ token }), 10_000);
    const measure = async (keyFile: string, expectOk: boolean) => {
      const samples: number[] = [];
      for (let i = 0; i < runs + 2; i += 1) {
        const token = await signCommand({ keyFile, device: deviceId, action: 'record.start', reason: 'officer-safety', operator: 'bench' });
        const t0 = performance.now();
        const reply = await request(token);
        const ms = performance.now() - t0;
        if ((reply.ok === true) !== expectOk) throw new Error(`unexpected reply ${JSON.stringify(reply)}`);
        if (i >= 2) samples.push(ms); // the first two warm the JIT and the connection paths
      }
      return summarise(samples);
    };
    const accepted = await measure(trusted.privateJwkFile, true);
    const rejected = await measure(stranger.privateJwkFile, false);
    await client.close();
    const sqlite = (new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v;
    const machine = machineFacts(sqlite);
    const row = (name: string, s: ReturnType<typeof summarise>) => [name, round(s.min), round(s.p50), round(s.p95), round(s.max)];
    const md = [
      `### Command round trip: publish -> reply (${runs} runs each, loopback)`,
      '',
      'From the fleet client\'s PUBLISH (QoS 1, Response Topic + Correlation Data) to the reply in its hands; one connected client, commands one after another.',
      '',
      markdownTable(['path', 'min ms', 'p50 ms', 'p95 ms', 'max ms'], [row('accepted record.start (verify, replay cache, audit fsync, reply)', accepted), row('refused: unknown_key (audited)', rejected)]),
      '',
      `Machine: ${machineLine(machine)}.`,
    ].join('\n');
    writeResult('command-roundtrip', { machine, runs, acceptedMs: accepted, rejectedMs: rejected, markdown: md });
    process.stdout.write(`${md}\n`);
  } finally {
    await agent.stop('SIGTERM');
    await broker.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`command-roundtrip failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
