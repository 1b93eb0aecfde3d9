// Fleet simulator (issue 20): N simulated cameras speaking the real protocol against mosquitto
// and the ops console (a real process, `node ops-console/server.ts`, with its SQLite or PostgreSQL
// archive). Each camera has its own device key (src/keys/device-key.ts) and keeps a real audit
// chain (entries hashed with src/audit/audit-log.ts's entryHash and canonical JSON, a checkpoint
// signed with the device key every 10 entries); it publishes its retained `state` (with auditHead
// and a GPS fix) and its audit entries and checkpoints on `audit`. No video, no agent process:
// 4,000 agents do not fit on a bench machine, their messages do. The cameras share --connections
// MQTT connections (each camera still has its own topics; the console cannot tell).
//
// Measured, over --duration-s seconds of steady traffic after every camera is enrolled and online:
// - console CPU (% of one core) and RSS (from /proc), sampled each second;
// - archive insert rate: audit rows stored per second (counted in the archive);
// - publish -> console page delay: each state carries its publish time; the bench's own signed-in
//   page (the console's SSE feed, /api/events) takes the difference when the camera event arrives
//   (same machine clock); p50/p95/max; goal p95 <= 1 s;
// - verification throughput: entries the console verified per second (the verified heads in the
//   archive), and how long after the last publish every chain was verified to its end.
//
// Usage: node bench/fleet-sim.ts [--cameras 4000] [--duration-s 60] [--state-every-s 10]
//        [--audit-every-s 10] [--connections 40] [--archive sqlite|postgresql]
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { canonicalJson } from '../src/audit/canonical-json.ts';
import { checkpointSigningInput, entryHash, genesisHash } from '../src/audit/audit-log.ts';
import { generateIssuerKeys } from '../src/cli/fleet-tools.ts';
import { loadOrCreateDeviceKey, type DeviceKey } from '../src/keys/device-key.ts';
import { openArchive } from '../ops-console/archive/archive.ts';
import { hashPassword } from '../ops-console/users.ts';
import { freeLoopbackPort } from '../test/helpers/gpsfake.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, repoRoot, resultsDir, round, sleep, summarise, trackChild, trackDir, writeResult, runIfMain } from './lib/common.ts';
import { cpuMs, mosquittoPid } from './lib/proc.ts';

interface Camera {
  id: string;
  key: DeviceKey;
  seq: number;
  /** The outbox's transport seq (beside the audit record, as the agent sends it). */
  tseq: number;
  head: string;
  client: MqttClient;
  lat: number;
  lon: number;
}

function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function main(argv: string[]): Promise<void> {
  installCleanup();
  const flags = parseFlags(argv);
  const n = intFlag(flags, 'cameras', 4000);
  const durationS = intFlag(flags, 'duration-s', 60);
  const stateEveryS = intFlag(flags, 'state-every-s', 10);
  const auditEveryS = intFlag(flags, 'audit-every-s', 10);
  const connections = intFlag(flags, 'connections', 40);
  const backend = flags.get('archive') ?? 'sqlite';
  if (backend !== 'sqlite' && backend !== 'postgresql') throw new Error(`--archive must be sqlite or postgresql, not ${backend}`);
  const dir = trackDir(path.join(os.tmpdir(), `bwc-fleet-sim-${process.pid}`));
  mkdirSync(dir, { recursive: true });

  const broker = await startBroker({ maxInflight: 200 });
  const pgServer = backend === 'postgresql' ? await startPostgres() : undefined;
  const archiveSpec = pgServer ? pgServer.url : `sqlite:${path.join(dir, 'archive.sqlite')}`;
  try {
    // Cameras: device keys made and enrolled by the "fleet admin" before the console starts.
    process.stderr.write(`fleet-sim: ${n} cameras, ${connections} connections, ${backend} archive\n`);
    const keys: DeviceKey[] = [];
    for (let i = 0; i < n; i += 1) keys.push(await loadOrCreateDeviceKey(path.join(dir, 'cams', String(i))));
    const admin = await openArchive(archiveSpec);
    for (let i = 0; i < n; i += 1) {
      await admin.enrol({ deviceId: `sim-${String(i).padStart(5, '0')}`, publicJwk: keys[i]!.publicJwk, kid: keys[i]!.kid, enrolledBy: 'fleet-sim', enrolledAt: new Date().toISOString() });
    }
    await admin.close();
    process.stderr.write('fleet-sim: keys made and enrolled\n');

    // The console, a real process.
    const issuer = await generateIssuerKeys(path.join(dir, 'issuer'), ['stream.start', 'stream.stop', 'audit.fetch']);
    const usersFile = path.join(dir, 'users.json');
    writeFileSync(usersFile, JSON.stringify([{ user: 'bench', operator: 'bench-1', name: 'Bench', password: hashPassword('bench-pw') }]));
    const port = await freeLoopbackPort();
    const consoleProc = trackChild(spawn(process.execPath, [path.join(repoRoot, 'ops-console/server.ts'), '--broker', broker.url, '--issuer-key', issuer.privateJwkFile, '--users', usersFile, '--port', String(port), '--archive', archiveSpec, '--client-id', 'fleet-sim-console'], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let consoleLog = '';
    consoleProc.stdout!.on('data', (d: Buffer) => (consoleLog += d.toString()));
    consoleProc.stderr!.on('data', (d: Buffer) => (consoleLog = (consoleLog + d.toString()).slice(-100_000)));
    for (let i = 0; !consoleLog.includes('ops-console: http://'); i += 1) {
      if (i > 600 || consoleProc.exitCode !== null) throw new Error(`the console did not start:\n${consoleLog}`);
      await sleep(100);
    }
    process.stderr.write('fleet-sim: console up\n');
    const base = `http://127.0.0.1:${port}`;
    const login = await fetch(`${base}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'bench', password: 'bench-pw' }) });
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;

    // The page's view: the console's SSE feed.
    const delays: number[] = [];
    let measuring = false;
    // Not awaited: the console sends the stream's headers with its first event.
    void (async () => {
      const sse = await fetch(`${base}/api/events`, { headers: { cookie } });
      const decoder = new TextDecoder();
      let buf = '';
      for await (const chunk of sse.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          if (!measuring || !block.startsWith('event: camera')) continue;
          const data = JSON.parse(block.slice(block.indexOf('data: ') + 6)) as { state: { simSentAt?: number } };
          if (typeof data.state.simSentAt === 'number') delays.push(Date.now() - data.state.simSentAt);
        }
      }
    })().catch(() => {});

    // The cameras' connections.
    const clients: MqttClient[] = [];
    for (let c = 0; c < connections; c += 1) {
      const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clientId: `fleet-sim-${c}`, clean: true });
      (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
      clients.push(client);
    }
    const cams: Camera[] = keys.map((key, i) => ({ id: `sim-${String(i).padStart(5, '0')}`, key, seq: 0, tseq: 0, head: genesisHash, client: clients[i % connections]!, lat: 51.5 + (i % 100) * 0.001, lon: -0.12 + Math.floor(i / 100) * 0.001 }));
    let published = 0;
    const appendEntry = (cam: Camera) => {
      const fields = { seq: cam.seq + 1, time: new Date().toISOString(), device: cam.id, type: 'gps.fix', operator: null, action: null, reason: null, decision: null, code: null, tokenDigest: null, detail: { n: cam.seq + 1 } };
      const hash = entryHash(cam.head, canonicalJson(fields));
      cam.client.publish(`bwc/v1/${cam.id}/audit`, JSON.stringify({ seq: ++cam.tseq, kind: 'entry', entry: { ...fields, prevHash: cam.head, hash } }), { qos: 1 });
      cam.seq += 1;
      cam.head = hash;
      published += 1;
      if (cam.seq % 10 === 0) {
        const unsigned = { seq: cam.seq, headHash: cam.head, time: fields.time, device: cam.id, kid: cam.key.kid };
        cam.client.publish(`bwc/v1/${cam.id}/audit`, JSON.stringify({ seq: ++cam.tseq, kind: 'checkpoint', checkpoint: { ...unsigned, signature: cam.key.sign(checkpointSigningInput(unsigned)), publicJwk: cam.key.publicJwk } }), { qos: 1 });
      }
    };
    const publishState = (cam: Camera) => {
      const state = {
        online: true, deviceId: cam.id, devicePublicKey: cam.key.publicJwk, auditHead: cam.seq ? { seq: cam.seq, hash: cam.head } : null,
        gps: { fix: '3d', lat: cam.lat, lon: cam.lon, accuracyM: 5, time: new Date().toISOString() }, battery: { percent: 80 }, recording: null,
        streaming: { sessions: 0, bitrateKbps: null, list: [] }, simSentAt: Date.now(),
      };
      cam.client.publish(`bwc/v1/${cam.id}/state`, JSON.stringify(state), { qos: 1, retain: true });
    };

    // Warm-up: every camera online with its first entry.
    for (const cam of cams) {
      appendEntry(cam);
      publishState(cam);
    }
    const archiveCounts = await archiveReader(archiveSpec);
    for (let i = 0; (await archiveCounts()).verified < n; i += 1) {
      if (i > 300) throw new Error(`warm-up: not every camera's first entry was verified within 30 s (${JSON.stringify(await archiveCounts())})\n${consoleLog.slice(-3000)}`);
      await sleep(100);
    }

    process.stderr.write('fleet-sim: warm-up done, measuring\n');
    // Steady traffic: each second, 1/stateEvery of the cameras publish a state and 1/auditEvery an entry.
    const consolePid = consoleProc.pid!;
    const mosqPid = mosquittoPid(broker.port);
    const samples: { cpuPct: number; rssMiB: number; stored: number; verified: number }[] = [];
    const start = await archiveCounts();
    const publishedAtStart = published;
    let lastCpu = cpuMs(consolePid)!;
    const mosqCpu0 = cpuMs(mosqPid) ?? 0;
    const t0 = Date.now();
    measuring = true;
    for (let s = 0; s < durationS; s += 1) {
      const tick = Date.now();
      // Spread over the second in tenths, as real cameras' clocks are: no synthetic burst.
      for (let tenth = 0; tenth < 10; tenth += 1) {
        for (let i = tenth; i < n; i += 10) {
          const cam = cams[i]!;
          if ((i + s) % auditEveryS === 0) appendEntry(cam);
          if ((i + s) % stateEveryS === 0) publishState(cam);
        }
        await sleep(Math.max(0, tick + (tenth + 1) * 100 - Date.now()));
      }
      const cpu = cpuMs(consolePid)!;
      const counts = await archiveCounts();
      samples.push({ cpuPct: ((cpu - lastCpu) / (Date.now() - tick)) * 100, rssMiB: rssMiB(consolePid) ?? NaN, stored: counts.stored, verified: counts.verified });
      lastCpu = cpu;
    }
    const publishEnd = Date.now();
    measuring = false;
    const target = start.verified + (published - publishedAtStart);
    let end = await archiveCounts();
    while (end.verified < target && Date.now() - publishEnd < 300_000) {
      await sleep(200);
      end = await archiveCounts();
    }
    const caughtUpS = (Date.now() - publishEnd) / 1000;
    const runS = (publishEnd - t0) / 1000;
    const d = summarise(delays);
    const cpu = summarise(samples.map((x) => x.cpuPct));
    const rss = summarise(samples.map((x) => x.rssMiB));
    const result = {
      bench: 'fleet-sim',
      machine: machineFacts(String((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v)),
      params: { cameras: n, durationS, stateEveryS, auditEveryS, connections, archive: backend },
      offered: { statesPerS: round(n / stateEveryS), auditEntriesPerS: round(n / auditEveryS), checkpointsPerS: round(n / auditEveryS / 10, 2) },
      console: { cpuPctOfOneCore: { p50: round(cpu.p50), p95: round(cpu.p95), max: round(cpu.max) }, rssMiB: { p50: round(rss.p50), max: round(rss.max) } },
      mosquittoCpuPct: mosqPid ? round(((cpuMs(mosqPid)! - mosqCpu0) / (publishEnd - t0)) * 100) : null,
      archive: {
        insertRowsPerS: round((samples.at(-1)!.stored - start.stored) / runS),
        verifiedEntriesPerS: round((samples.at(-1)!.verified - start.verified) / runS),
        verifiedAll: end.verified >= target,
        caughtUpAfterLastPublishS: round(caughtUpS, 1),
      },
      pageDelayMs: { n: d.n, p50: round(d.p50), p95: round(d.p95), max: round(d.max), goalP95: 1000, met: d.p95 <= 1000 },
    };
    const file = writeResult(`fleet-sim-${backend}-${n}`, result);
    const table = markdownTable(
      ['cameras', 'archive', 'console CPU p50/p95 (% core)', 'RSS max (MiB)', 'inserts/s', 'verified/s', 'page delay p50/p95/max (ms)', 'caught up after (s)'],
      [[n, backend, `${result.console.cpuPctOfOneCore.p50}/${result.console.cpuPctOfOneCore.p95}`, result.console.rssMiB.max, result.archive.insertRowsPerS, result.archive.verifiedEntriesPerS, `${result.pageDelayMs.p50}/${result.pageDelayMs.p95}/${result.pageDelayMs.max}`, result.archive.caughtUpAfterLastPublishS]],
    );
    process.stdout.write(`${machineLine(result.machine)}\n${table}\n${file}\n`);
    writeFileSync(path.join(resultsDir, `fleet-sim-${backend}-${n}.md`), `${machineLine(result.machine)}\n\n${table}\n`);
    for (const c of clients) await c.endAsync();
    consoleProc.kill('SIGTERM');
    await new Promise((r) => consoleProc.once('exit', r));
  } finally {
    await broker.dispose();
    await pgServer?.dispose();
  }
}

/** Counts in the archive, read beside the console: audit rows stored, and the sum of the verified heads. */
async function archiveReader(spec: string): Promise<() => Promise<{ stored: number; verified: number }>> {
  if (spec.startsWith('sqlite:')) {
    const db = new Database(spec.slice('sqlite:'.length), { readonly: true, fileMustExist: true });
    const stored = db.prepare<[], { n: number }>('SELECT (SELECT COUNT(*) FROM audit_entry) + (SELECT COUNT(*) FROM audit_checkpoint) AS n');
    const verified = db.prepare<[], { n: number | null }>('SELECT SUM(seq) AS n FROM chain_head');
    return async () => ({ stored: stored.get()!.n, verified: verified.get()!.n ?? 0 });
  }
  const client = new pg.Client({ connectionString: spec });
  // The server is stopped at the end with this connection still open: that is not a failure.
  client.on('error', () => {});
  await client.connect();
  return async () => {
    const r = await client.query<{ stored: string; verified: string | null }>('SELECT (SELECT COUNT(*) FROM audit_entry) + (SELECT COUNT(*) FROM audit_checkpoint) AS stored, (SELECT SUM(seq) FROM chain_head) AS verified');
    return { stored: Number(r.rows[0]!.stored), verified: Number(r.rows[0]!.verified ?? 0) };
  };
}

runIfMain('fleet-sim', import.meta.filename, main);
