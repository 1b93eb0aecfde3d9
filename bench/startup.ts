// Agent start-up: from spawning `bin/bwc-agent run` (fresh state dir, real mosquitto, gpsd at a
// closed port) to a fleet-side subscriber receiving the retained `bwc/v1/<id>/state` with
// "online": true. Side by side in the same run, the floors on this machine: a bare `node -e ''`
// (process start and exit) and a `node -e` of a trivial mqtt.js connect + retained QoS 1 publish,
// timed the same way (spawn -> subscriber has the message).
//
// Usage: node bench/startup.ts [--runs 10]
import { spawn } from 'node:child_process';
import path from 'node:path';
import { spawnAgent, tempStateDir } from '../test/helpers/agent-process.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { MqttRecorder } from '../test/helpers/mqtt-recorder.ts';
import Database from 'better-sqlite3';
import {
  installCleanup,
  intFlag,
  logTime,
  machineFacts,
  machineLine,
  markdownTable,
  parseFlags,
  removeDir,
  repoRoot,
  round,
  summarise,
  trackChild,
  trackDir,
  writeResult,
  runIfMain,
  type Summary,
} from './lib/common.ts';

const epochNow = () => performance.timeOrigin + performance.now();

interface AgentSample {
  totalMs: number;
  /** spawn -> the agent's first log line ("bwc-agent starting"): launcher, Node start, module loading, config. */
  toFirstLogMs: number | undefined;
  /** spawn -> "connected to the broker" (CONNACK). */
  toConnectedMs: number | undefined;
}

function online(recorder: MqttRecorder, deviceId: string) {
  const topic = `bwc/v1/${deviceId}/state`;
  return () => recorder.messages.some((m) => m.topic === topic && m.json?.online === true);
}

async function agentOnce(brokerUrl: string, recorder: MqttRecorder, label: string): Promise<AgentSample> {
  const deviceId = `bench-start-${process.pid}-${label}`;
  const stateDir = trackDir(await tempStateDir('bwc-bench-start-'));
  const closedPort = await freeLoopbackPort();
  try {
    const spawnedAt = epochNow();
    const started = performance.now();
    const agent = spawnAgent(['run'], {
      BWC_DEVICE_ID: deviceId,
      BWC_MQTT_URL: brokerUrl,
      BWC_STATE_DIR: stateDir,
      BWC_GPSD: `127.0.0.1:${closedPort}`,
      BWC_LOG_LEVEL: 'info',
    });
    trackChild(agent.child);
    try {
      await recorder.waitFor(online(recorder, deviceId), 30_000, `${deviceId} online`);
    } catch (err) {
      await agent.stop('SIGKILL');
      throw new Error(`${(err as Error).message}; agent output:\n${agent.output.slice(-3000)}`);
    }
    const totalMs = performance.now() - started;
    const exit = await agent.stop('SIGTERM');
    if (exit.code !== 0) throw new Error(`agent exited with ${String(exit.code ?? exit.signal)}; output:\n${agent.output.slice(-3000)}`);
    const first = logTime(agent.output, 'bwc-agent starting');
    const connected = logTime(agent.output, 'connected to the broker');
    return {
      totalMs,
      toFirstLogMs: first === undefined ? undefined : first - spawnedAt,
      toConnectedMs: connected === undefined ? undefined : connected - spawnedAt,
    };
  } finally {
    removeDir(stateDir);
  }
}

/** `node -e` of a trivial mqtt.js client: connect, publish the retained state, exit. */
async function mqttFloorOnce(brokerUrl: string, recorder: MqttRecorder, label: string): Promise<number> {
  const deviceId = `bench-floor-${process.pid}-${label}`;
  const script = [
    "import mqtt from 'mqtt';",
    `const c = mqtt.connect(${JSON.stringify(brokerUrl)}, { protocolVersion: 5, clientId: ${JSON.stringify(deviceId)}, reconnectPeriod: 0 });`,
    `c.on('connect', () => c.publish(${JSON.stringify(`bwc/v1/${deviceId}/state`)}, JSON.stringify({ online: true }), { qos: 1, retain: true }, () => c.end()));`,
    "c.on('error', (e) => { console.error(e.message); process.exit(1); });",
  ].join('\n');
  const started = performance.now();
  const child = trackChild(spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] }));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  await recorder.waitFor(online(recorder, deviceId), 30_000, `${deviceId} online`);
  const ms = performance.now() - started;
  const code = await exited;
  if (code !== 0) throw new Error(`mqtt.js floor client exited with ${String(code)}`);
  return ms;
}

/** `node -e ''`: start and exit of the runtime alone. */
async function bareNodeOnce(): Promise<number> {
  const started = performance.now();
  const child = trackChild(spawn(process.execPath, ['-e', ''], { stdio: 'ignore' }));
  await new Promise((resolve) => child.once('exit', resolve));
  return performance.now() - started;
}

const r = (s: Summary) => [round(s.min), round(s.p50), round(s.p95), round(s.max)];

export async function main(argv: string[]): Promise<void> {
  installCleanup();
  const flags = parseFlags(argv);
  const runs = intFlag(flags, 'runs', 10);
  const runStarted = performance.now();
  const sqliteVersion = (() => {
    const db = new Database(':memory:');
    const v = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    db.close();
    return v;
  })();
  const machine = machineFacts(sqliteVersion);
  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/+/state');
  const agent: AgentSample[] = [];
  const floor: number[] = [];
  const bare: number[] = [];
  try {
    // One warm-up of each, not counted (cold page cache for node_modules and dist).
    process.stderr.write('startup: warm-up...\n');
    await agentOnce(broker.url, recorder, 'warmup');
    await mqttFloorOnce(broker.url, recorder, 'warmup');
    await bareNodeOnce();
    // Interleaved, so drift on the machine affects all three alike.
    for (let i = 0; i < runs; i++) {
      process.stderr.write(`startup: run ${i + 1}/${runs}\n`);
      agent.push(await agentOnce(broker.url, recorder, String(i)));
      floor.push(await mqttFloorOnce(broker.url, recorder, String(i)));
      bare.push(await bareNodeOnce());
    }
  } finally {
    await recorder.close();
    await broker.dispose();
  }

  const agentTotal = summarise(agent.map((s) => s.totalMs));
  const agentFirstLog = summarise(agent.flatMap((s) => (s.toFirstLogMs === undefined ? [] : [s.toFirstLogMs])));
  const agentConnected = summarise(agent.flatMap((s) => (s.toConnectedMs === undefined ? [] : [s.toConnectedMs])));
  const floorS = summarise(floor);
  const bareS = summarise(bare);
  const md = [
    `### Start-up: spawn -> retained \`state\` with "online": true at a subscriber (${runs} runs, after 1 warm-up)`,
    '',
    markdownTable(
      ['what', 'min ms', 'p50 ms', 'p95 ms', 'max ms'],
      [
        ['**bwc-agent run** (bin/bwc-agent, fresh state dir) -> state online at subscriber', ...r(agentTotal)],
        ['↳ of which: spawn -> first log line "bwc-agent starting" (launcher, Node, module load, config)', ...r(agentFirstLog)],
        ['↳ of which: spawn -> "connected to the broker" (CONNACK)', ...r(agentConnected)],
        ['floor: `node -e` mqtt.js connect + retained QoS 1 publish -> at subscriber', ...r(floorS)],
        ['floor: `node -e ""` (start and exit)', ...r(bareS)],
      ],
    ),
    '',
    `p50 overhead of the agent over the mqtt.js floor: ${round(agentTotal.p50 - floorS.p50)} ms. Log-line times are pino's ms timestamps, so those rows have ~1 ms resolution.`,
    '',
    `Machine: ${machineLine(machine)}.`,
  ].join('\n');
  const file = writeResult('startup', {
    benchmark: 'startup',
    machine,
    parameters: { runs, warmup: 1, gpsd: 'closed port', logLevel: 'info' },
    figures: {
      agentToOnlineMs: agentTotal,
      agentToFirstLogMs: agentFirstLog,
      agentToConnectedMs: agentConnected,
      mqttjsFloorMs: floorS,
      bareNodeMs: bareS,
    },
    samples: { agent, mqttjsFloorMs: floor, bareNodeMs: bare },
    totalMs: Math.round(performance.now() - runStarted),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('startup', import.meta.filename, main);
