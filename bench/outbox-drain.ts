// Outbox drain after an outage: 100,000 messages queued while the broker was unreachable, then
// the link comes back. Goal (issue): at least 10,000 messages/s, zero lost.
//
// How: the backlog is written with the real Outbox class into a state dir's database (one
// transaction around all enqueues, so preparing it does not take 100,000 fsyncs), copied into a
// fresh state dir per row, and the built agent (`bin/bwc-agent run`) is started on it while the
// broker is down. The agent process rather than FleetLink/Outbox in-process: it is the figure a
// camera would show (the real config, logger, extensions and event loop), and the benchmark's own
// subscriber then does not share its event loop. The broker is started, and the clock runs from
// the agent's connect (its log) to the fleet-side subscriber holding every (channel, seq).
//
// Rows: mosquitto's default Receive Maximum (max_inflight_messages 20, agent default maxInflight
// 100, so a window of 18) and a larger one (200 with the agent's mqtt.maxInflight raised to 200
// through a --config file). Baseline in the same run and on the same broker: plain mqtt.js
// publishing the same bytes from memory with the same window (bench/lib/raw-publisher.ts).
//
// Usage: node bench/outbox-drain.ts [--messages 100000] [--configs 20:100,200:200]
//        [--timeout-s 300] [--cpu-prof | --no-prof]
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { Outbox } from '../src/link/outbox.ts';
import { openDatabase } from '../src/store/database.ts';
import { spawnAgent, tempStateDir } from '../test/helpers/agent-process.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { startBroker, type Broker } from '../test/helpers/mosquitto.ts';
import {
  installCleanup,
  intFlag,
  logRecord,
  logTime,
  machineFacts,
  machineLine,
  markdownTable,
  parseFlags,
  removeDir,
  repoRoot,
  resultsDir,
  round,
  sleep,
  trackChild,
  trackDir,
  writeResult,
  runIfMain,
} from './lib/common.ts';
import { topFrames, type Frame } from './lib/cpuprofile.ts';
import { backlogCounts, backlogItem, eventEvery } from './lib/payloads.ts';
import { cpuMs, ioCounters, mosquittoPid, ownCpuMs } from './lib/proc.ts';
import { SeqSubscriber, type SeqReport } from './lib/seq-subscriber.ts';

const goalPerS = 10_000;
const silent = pino({ level: 'silent' });
const epochNow = () => performance.timeOrigin + performance.now();

interface RowConfig {
  brokerMaxInflight: number;
  agentMaxInflight: number;
}

interface Backlog {
  dbFile: string;
  messages: number;
  counts: Record<'gps' | 'event', number>;
  maxId: number;
  payloadBytes: { mean: number; min: number; max: number };
  dbBytes: number;
  prepareMs: number;
}

interface CpuShare {
  agentOrPublisherMs: number | undefined;
  brokerMs: number | undefined;
  subscriberMs: number;
}

interface AgentRow {
  kind: 'agent';
  config: RowConfig;
  window: number | undefined;
  brokerUpToConnectMs: number | undefined;
  /** Agent connect -> subscriber holds every message. */
  drainMs: number | undefined;
  ratePerS: number | undefined;
  /** Agent connect -> no backlog row left in the agent's outbox (all PUBACKed and deleted). */
  outboxEmptyMs: number | undefined;
  ackRatePerS: number | undefined;
  /** First -> last backlog message at the subscriber. */
  subscriberRatePerS: number | undefined;
  cpu: CpuShare;
  /** What the agent wrote to storage during the drain (/proc/<pid>/io write_bytes): WAL and checkpoints. */
  diskWriteMiB: number | undefined;
  seq: SeqReport;
  complete: boolean;
  agentExit: { code: number | null; signal: string | null };
  refusedOrErrors: string[];
}

interface RawRow {
  kind: 'raw';
  config: RowConfig;
  window: number;
  drainMs: number | undefined;
  ratePerS: number | undefined;
  ackMs: number;
  ackRatePerS: number;
  subscriberRatePerS: number | undefined;
  cpu: CpuShare;
  seq: SeqReport;
  complete: boolean;
}

async function prepareBacklog(messages: number): Promise<Backlog> {
  const dir = trackDir(await tempStateDir('bwc-bench-backlog-'));
  const db = openDatabase({ stateDir: dir });
  const outbox = new Outbox({ db, maxMessages: Math.max(500_000, messages * 2), logger: silent });
  let bytes = 0;
  let min = Infinity;
  let max = 0;
  const started = performance.now();
  // One outer transaction: each enqueue's own transaction becomes a savepoint.
  db.transaction(() => {
    for (let i = 0; i < messages; i++) {
      const item = backlogItem(i);
      outbox.enqueue(item.channel, item.body, item.cls);
    }
  })();
  const prepareMs = performance.now() - started;
  for (const row of db.prepare('SELECT length(payload) AS n FROM outbox').iterate() as IterableIterator<{ n: number }>) {
    bytes += row.n;
    min = Math.min(min, row.n);
    max = Math.max(max, row.n);
  }
  const maxId = (db.prepare('SELECT max(id) AS m FROM outbox').get() as { m: number }).m;
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const dbFile = path.join(dir, 'agent.db');
  return {
    dbFile,
    messages,
    counts: backlogCounts(messages),
    maxId,
    payloadBytes: { mean: round(bytes / messages), min, max },
    dbBytes: statSync(dbFile).size,
    prepareMs: round(prepareMs),
  };
}

/** Context: enqueue rate in live operation, one transaction (and fsync) per message. */
async function liveEnqueueRate(count: number): Promise<{ messages: number; ms: number; perS: number }> {
  const dir = trackDir(await tempStateDir('bwc-bench-enqueue-'));
  try {
    const db = openDatabase({ stateDir: dir });
    const outbox = new Outbox({ db, maxMessages: 500_000, logger: silent });
    const started = performance.now();
    for (let i = 0; i < count; i++) {
      const item = backlogItem(i);
      outbox.enqueue(item.channel, item.body, item.cls);
    }
    const ms = performance.now() - started;
    db.close();
    return { messages: count, ms: round(ms), perS: Math.round((count / ms) * 1000) };
  } finally {
    removeDir(dir);
  }
}

function cpuSnapshot(agentPid: number | undefined, brokerPid: number | undefined) {
  return { agent: cpuMs(agentPid), broker: cpuMs(brokerPid), self: ownCpuMs() };
}

function cpuDelta(a: ReturnType<typeof cpuSnapshot>, b: ReturnType<typeof cpuSnapshot>): CpuShare {
  const d = (x: number | undefined, y: number | undefined) => (x === undefined || y === undefined ? undefined : Math.round(y - x));
  return { agentOrPublisherMs: d(a.agent, b.agent), brokerMs: d(a.broker, b.broker), subscriberMs: Math.round(b.self - a.self) };
}

const rate = (n: number, ms: number | undefined) => (ms === undefined || ms <= 0 ? undefined : Math.round((n / ms) * 1000));

async function runAgentRow(
  backlog: Backlog,
  config: RowConfig,
  options: { timeoutMs: number; label: string; cpuProfDir?: string | undefined },
): Promise<{ row: AgentRow; profile?: string | undefined; broker: Broker }> {
  const broker = await startBroker({ maxInflight: config.brokerMaxInflight });
  const deviceId = `bench-drain-${options.label}-${process.pid}`;
  const subscriber = await SeqSubscriber.connect(broker.url, `bwc/v1/${deviceId}/#`, `${deviceId}-fleet`, backlog.counts);
  const stateDir = trackDir(await tempStateDir('bwc-bench-drain-'));
  let poller: NodeJS.Timeout | undefined;
  let reader: Database.Database | undefined;
  try {
    // The outage: the broker goes down (keeping the subscriber's session), and the agent
    // starts with 100,000 messages in its outbox and no broker to send them to.
    await broker.stop();
    copyFileSync(backlog.dbFile, path.join(stateDir, 'agent.db'));
    const configFile = path.join(stateDir, 'bench-config.yaml');
    writeFileSync(configFile, `# written by bench/outbox-drain.ts\nmqtt:\n  maxInflight: ${config.agentMaxInflight}\n`);
    const closedPort = await freeLoopbackPort();
    const env: Record<string, string> = {
      BWC_DEVICE_ID: deviceId,
      BWC_MQTT_URL: broker.url,
      BWC_STATE_DIR: stateDir,
      BWC_GPSD: `127.0.0.1:${closedPort}`,
      BWC_LOG_LEVEL: 'info',
    };
    if (options.cpuProfDir) {
      mkdirSync(options.cpuProfDir, { recursive: true });
      env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${options.cpuProfDir} --cpu-prof-name=agent-${options.label}.cpuprofile`;
    }
    const agent = spawnAgent(['run', '--config', configFile], env);
    trackChild(agent.child);
    await agent.waitForOutput(/reconnecting after back-off/, 30_000);

    // The link comes back.
    const brokerUpAt = epochNow();
    await broker.start();
    const brokerPid = mosquittoPid(broker.port);
    const cpu0 = cpuSnapshot(agent.child.pid, brokerPid);
    const io0 = ioCounters(agent.child.pid);
    reader = new Database(path.join(stateDir, 'agent.db'), { readonly: true, fileMustExist: true });
    const minId = reader.prepare('SELECT min(id) AS m FROM outbox');
    let outboxEmptyAt: number | undefined;
    poller = setInterval(() => {
      const m = (minId.get() as { m: number | null }).m;
      if (m === null || m > backlog.maxId) {
        outboxEmptyAt = epochNow();
        clearInterval(poller);
      }
    }, 20);
    const complete = await subscriber.waitComplete(options.timeoutMs);
    const cpu1 = cpuSnapshot(agent.child.pid, brokerPid);
    const io1 = ioCounters(agent.child.pid);
    await sleep(500); // late duplicates, if any, would arrive now
    clearInterval(poller);
    reader.close();
    reader = undefined;
    const seq = subscriber.report();
    const exit = await agent.stop('SIGTERM');

    const connectAt = logTime(agent.output, 'connected to the broker');
    const draining = logRecord(agent.output, 'draining the outbox');
    const completeAt = seq.completeAt === undefined ? undefined : performance.timeOrigin + seq.completeAt;
    const drainMs = connectAt !== undefined && completeAt !== undefined ? completeAt - connectAt : undefined;
    const outboxEmptyMs = connectAt !== undefined && outboxEmptyAt !== undefined ? outboxEmptyAt - connectAt : undefined;
    const subMs = seq.firstAt !== undefined && seq.lastAt !== undefined ? seq.lastAt - seq.firstAt : undefined;
    const problems = agent.output
      .split('\n')
      .filter((l) => /"level":(40|50|60)/.test(l) && !/MQTT error|disconnected from the broker|ECONNREFUSED/.test(l))
      .slice(0, 10);
    const row: AgentRow = {
      kind: 'agent',
      config,
      window: typeof draining?.window === 'number' ? draining.window : undefined,
      brokerUpToConnectMs: connectAt !== undefined ? round(connectAt - brokerUpAt) : undefined,
      drainMs: drainMs === undefined ? undefined : round(drainMs),
      ratePerS: rate(backlog.messages, drainMs),
      outboxEmptyMs: outboxEmptyMs === undefined ? undefined : round(outboxEmptyMs),
      ackRatePerS: rate(backlog.messages, outboxEmptyMs),
      subscriberRatePerS: rate(backlog.messages, subMs),
      cpu: cpuDelta(cpu0, cpu1),
      diskWriteMiB: io0 && io1 ? round((io1.writeBytes - io0.writeBytes) / 2 ** 20) : undefined,
      seq,
      complete,
      agentExit: { code: exit.code, signal: exit.signal },
      refusedOrErrors: problems,
    };
    let profile: string | undefined;
    if (options.cpuProfDir) {
      const file = path.join(options.cpuProfDir, `agent-${options.label}.cpuprofile`);
      profile = readdirSync(options.cpuProfDir).includes(path.basename(file)) ? file : undefined;
    }
    return { row, profile, broker };
  } catch (err) {
    await broker.dispose();
    throw err;
  } finally {
    clearInterval(poller);
    reader?.close();
    await subscriber.close();
    removeDir(stateDir);
  }
}

async function runRawRow(broker: Broker, backlog: Backlog, config: RowConfig, window: number, timeoutMs: number): Promise<RawRow> {
  const deviceId = `bench-raw-${config.brokerMaxInflight}-${process.pid}`;
  const subscriber = await SeqSubscriber.connect(broker.url, `bwc/v1/${deviceId}/#`, `${deviceId}-fleet`, backlog.counts);
  try {
    const brokerPid = mosquittoPid(broker.port);
    const child = trackChild(
      spawn(process.execPath, [path.join(repoRoot, 'bench', 'lib', 'raw-publisher.ts'), broker.url, deviceId, String(backlog.messages), String(window)], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // The publisher's CPU includes building its 100,000 payloads before it connects (~0.2 s).
    const cpu0 = cpuSnapshot(child.pid, brokerPid);
    const complete = await subscriber.waitComplete(timeoutMs);
    const cpu1 = cpuSnapshot(child.pid, brokerPid);
    const code = await Promise.race([exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
    if (code !== 0) throw new Error(`raw publisher failed (${String(code)}): ${err.slice(-2000)}`);
    await sleep(300);
    const seq = subscriber.report();
    const pub = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { connectedAt: number; ackedAt: number };
    const completeAt = seq.completeAt === undefined ? undefined : performance.timeOrigin + seq.completeAt;
    const drainMs = completeAt === undefined ? undefined : completeAt - pub.connectedAt;
    const subMs = seq.firstAt !== undefined && seq.lastAt !== undefined ? seq.lastAt - seq.firstAt : undefined;
    const ackMs = pub.ackedAt - pub.connectedAt;
    return {
      kind: 'raw',
      config,
      window,
      drainMs: drainMs === undefined ? undefined : round(drainMs),
      ratePerS: rate(backlog.messages, drainMs),
      ackMs: round(ackMs),
      ackRatePerS: rate(backlog.messages, ackMs) ?? 0,
      subscriberRatePerS: rate(backlog.messages, subMs),
      cpu: cpuDelta(cpu0, cpu1),
      seq,
      complete,
    };
  } finally {
    await subscriber.close();
  }
}

function parseConfigs(raw: string): RowConfig[] {
  return raw.split(',').map((pair) => {
    const [b, a] = pair.split(':').map(Number);
    if (!b || !a) throw new Error(`--configs: expected brokerMaxInflight:agentMaxInflight pairs, got "${pair}"`);
    return { brokerMaxInflight: b, agentMaxInflight: a };
  });
}

const fmt = (v: number | undefined) => (v === undefined ? 'n/a' : v.toLocaleString('en-US'));

function table(rows: (AgentRow | RawRow)[]): string {
  return markdownTable(
    [
      'publisher',
      'broker Receive Max',
      'window',
      'drain ms',
      'msg/s (to subscriber)',
      'msg/s (PUBACKed)',
      'subscriber msg/s',
      'missing',
      'duplicates',
      'CPU ms pub / broker / sub',
    ],
    rows.map((r) => [
      r.kind === 'agent' ? `bwc-agent (maxInflight ${r.config.agentMaxInflight})` : 'raw mqtt.js, no SQLite',
      r.config.brokerMaxInflight,
      r.window ?? 'n/a',
      fmt(r.drainMs),
      `**${fmt(r.ratePerS)}**`,
      fmt(r.kind === 'agent' ? r.ackRatePerS : r.ackRatePerS),
      fmt(r.subscriberRatePerS),
      r.seq.missing,
      r.seq.duplicates,
      `${fmt(r.cpu.agentOrPublisherMs)} / ${fmt(r.cpu.brokerMs)} / ${fmt(r.cpu.subscriberMs)}`,
    ]),
  );
}

export async function main(argv: string[]): Promise<void> {
  installCleanup();
  const flags = parseFlags(argv);
  const messages = intFlag(flags, 'messages', 100_000);
  const configs = parseConfigs(flags.get('configs') ?? '20:100,200:200');
  const timeoutMs = intFlag(flags, 'timeout-s', 300) * 1000;
  const forceProf = flags.has('cpu-prof');
  const noProf = flags.has('no-prof');
  const runStarted = performance.now();

  const sqliteVersion = (() => {
    const db = new Database(':memory:');
    const v = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    db.close();
    return v;
  })();
  const machine = machineFacts(sqliteVersion);
  process.stderr.write(`outbox-drain: preparing a backlog of ${messages} messages...\n`);
  const backlog = await prepareBacklog(messages);
  const live = await liveEnqueueRate(1000);

  const rows: (AgentRow | RawRow)[] = [];
  for (const config of configs) {
    const label = `${config.brokerMaxInflight}-${config.agentMaxInflight}`;
    process.stderr.write(`outbox-drain: agent, broker Receive Maximum ${config.brokerMaxInflight}, agent maxInflight ${config.agentMaxInflight}...\n`);
    const { row, broker } = await runAgentRow(backlog, config, { timeoutMs, label });
    try {
      rows.push(row);
      const window = row.window ?? Math.max(1, Math.min(config.agentMaxInflight, config.brokerMaxInflight > 4 ? config.brokerMaxInflight - 2 : config.brokerMaxInflight));
      process.stderr.write(`outbox-drain: raw mqtt.js baseline, window ${window}...\n`);
      rows.push(await runRawRow(broker, backlog, config, window, timeoutMs));
    } finally {
      await broker.dispose();
    }
  }

  // Under the goal (or asked for): one more agent run under --cpu-prof, for where the time goes.
  const agentRows = rows.filter((r): r is AgentRow => r.kind === 'agent');
  const slowest = agentRows.reduce<AgentRow | undefined>((s, r) => (s === undefined || (r.ratePerS ?? 0) < (s.ratePerS ?? 0) ? r : s), undefined);
  let profiled: { config: RowConfig; file: string | undefined; ratePerS: number | undefined; totalMs: number; frames: Frame[] } | undefined;
  if (slowest && !noProf && (forceProf || (slowest.ratePerS ?? 0) < goalPerS)) {
    process.stderr.write(`outbox-drain: profiling the agent (--cpu-prof) at broker Receive Maximum ${slowest.config.brokerMaxInflight}...\n`);
    const profDir = path.join(resultsDir, 'profiles');
    const label = `${slowest.config.brokerMaxInflight}-${slowest.config.agentMaxInflight}-prof`;
    const { row, profile, broker } = await runAgentRow(backlog, slowest.config, { timeoutMs, label, cpuProfDir: profDir });
    await broker.dispose();
    const top = profile ? topFrames(profile, 15) : { totalMs: 0, frames: [] };
    profiled = { config: slowest.config, file: profile ? path.relative(repoRoot, profile) : undefined, ratePerS: row.ratePerS, ...top };
  }
  removeDir(path.dirname(backlog.dbFile));

  const lost = agentRows.reduce((s, r) => s + r.seq.missing, 0);
  const md = [
    `### Outbox drain after an outage: ${messages.toLocaleString('en-US')} queued messages`,
    '',
    `Goal: ≥ ${goalPerS.toLocaleString('en-US')} messages/s, zero lost. Backlog: ${backlog.counts.gps.toLocaleString('en-US')} \`gps\` (thinnable) + ${backlog.counts.event.toLocaleString('en-US')} \`event\` (durable, 1 in ${eventEvery}); payload ${backlog.payloadBytes.mean} B mean (${backlog.payloadBytes.min}-${backlog.payloadBytes.max}); database ${(backlog.dbBytes / 2 ** 20).toFixed(1)} MiB.`,
    `Drain ms: from the publisher's CONNACK (agent: its "connected to the broker" log line) to the subscriber holding every (channel, seq); msg/s (PUBACKed): until the agent's outbox held no backlog row / the raw publisher had every PUBACK. One run per row.`,
    '',
    table(rows),
    '',
    `Lost (missing at the subscriber) over all agent rows: **${lost}**. ` +
      `Broker up -> agent reconnected (its back-off, not counted in drain ms): ${agentRows.map((r) => `${fmt(r.brokerUpToConnectMs)} ms`).join(', ')}.`,
    `Agent writes to storage during the drain (/proc/<pid>/io write_bytes: WAL pages of the batched deletes, checkpoints): ${agentRows.map((r) => `${fmt(r.diskWriteMiB)} MiB`).join(', ')}, for a ${(backlog.dbBytes / 2 ** 20).toFixed(1)} MiB backlog database.`,
    `Context: preparing the backlog in one transaction took ${fmt(Math.round(backlog.prepareMs))} ms; live enqueue (one transaction and fsync each, synchronous=FULL) ran at ${fmt(live.perS)} messages/s.`,
    ...(profiled
      ? [
          '',
          `CPU profile of the agent (broker Receive Maximum ${profiled.config.brokerMaxInflight}, ${fmt(profiled.ratePerS)} msg/s under the profiler; ${fmt(profiled.totalMs)} ms sampled, idle excluded${profiled.file ? `; ${profiled.file}` : ''}), top self time:`,
          '',
          markdownTable(
            ['self ms', 'self %', 'frame'],
            profiled.frames.map((f) => [f.selfMs, f.selfPercent, `\`${f.frame}\``]),
          ),
        ]
      : []),
    '',
    `Machine: ${machineLine(machine)}.`,
  ].join('\n');

  const file = writeResult('outbox-drain', {
    benchmark: 'outbox-drain',
    machine,
    parameters: { messages, configs, timeoutMs, eventEvery, goalPerS },
    backlog: { ...backlog, dbFile: undefined },
    liveEnqueue: live,
    rows,
    profile: profiled,
    totalMs: Math.round(performance.now() - runStarted),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('outbox-drain', import.meta.filename, main);
