// Software update: from the agent.update reply ("downloading") at the fleet client to the new
// release's retained `state` with "online": true (and the capture running) at a subscriber, on this
// machine: real host bundles (scripts/dist-host.sh, ~60 MB), served by a loopback HTTP server,
// the agent under the test supervisor (systemd's restart policy, the boot check before each start).
// The updates alternate between the build's version and a copy with another version. Split out:
// accepted -> update.installed (download, SHA-256, unpack, switch), -> the old process's exit,
// -> online. Then the download resuming: one update whose download is cut half way, with the bytes
// the server sent twice.
//
// Usage: node bench/update.ts [--runs 4]
import { mkdtempSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tempStateDir } from '../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../test/helpers/agent-config.ts';
import { commandClaims, envelope, makeIssuer, signToken, writeTrustStore } from '../test/helpers/command-tokens.ts';
import { FleetClient } from '../test/helpers/fleet-client.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { MqttRecorder } from '../test/helpers/mqtt-recorder.ts';
import { hostBundle, installBase, startReleaseServer, variantBundle } from '../test/helpers/release-bundles.ts';
import { ServiceSupervisor } from '../test/helpers/service-supervisor.ts';
import { releaseKeygen, signRelease } from '../src/cli/release-tools.ts';
import Database from 'better-sqlite3';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, removeDir, repoRoot, round, summarise, trackDir, writeResult, runIfMain, type Summary } from './lib/common.ts';

interface Sample {
  version: string;
  totalMs: number;
  toInstalledMs: number;
  toExitMs: number;
}

export async function main(argv: string[]): Promise<void> {
  installCleanup();
  const runs = intFlag(parseFlags(argv), 'runs', 4);
  const runStarted = performance.now();
  const deviceId = `bench-update-${process.pid}`;
  const base = await hostBundle();
  const other = await variantBundle(base, '0.99.0');
  const bundles: Record<string, string> = { [base.version]: base.tarball, '0.99.0': other };
  const work = trackDir(mkdtempSync(path.join(os.tmpdir(), 'bwc-bench-update-')));
  const releasesDir = path.join(work, 'releases');
  installBase(releasesDir, base);
  const releaseKey = await releaseKeygen(path.join(work, 'release-key'));
  const issuer = await makeIssuer();
  const stateDir = trackDir(await tempStateDir('bwc-bench-update-'));
  const broker = await startBroker();
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const fleet = await FleetClient.connect(broker.url);
  const server = await startReleaseServer(Object.fromEntries(Object.entries(bundles).map(([v, f]) => [v, f])));
  const config = await writeAgentConfig(stateDir, {
    commands: { trustStore: writeTrustStore(stateDir, [issuer]), unsynchronisedClock: 'accept' },
    stream: { ice: { interfaces: ['lo'] } },
    update: { releasesDir, releaseKeys: releaseKey.publicFile },
  });
  const supervisor = new ServiceSupervisor({
    args: ['run', '--config', config],
    env: { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9', BWC_LOG_LEVEL: 'info' },
    command: [path.join(releasesDir, 'current', 'bin', 'bwc-agent')],
    execStartPre: [path.join(releasesDir, 'committed', 'bin', 'bwc-agent'), 'update', 'boot-check', '--config', config],
    policy: { restartSecMs: 100 },
  });
  const onlineAs = (version: string, from: number) => () =>
    recorder.messages.slice(from).some((m) => m.topic.endsWith('/state') && m.json?.online === true && m.json.agentVersion === version && (m.json.capture as { status?: string } | null)?.status === 'running');
  const eventAfter = (type: string, from: number) => () => recorder.messages.slice(from).some((m) => m.topic.endsWith('/event') && m.json?.type === type);

  async function updateTo(version: string): Promise<Sample & { resumedFrom: number }> {
    const from = recorder.messages.length;
    const exitsBefore = supervisor.events.filter((e) => e.type === 'exit').length;
    const release = await signRelease({ keyFile: releaseKey.privateFile, bundle: bundles[version]!, url: server.url(version), version });
    const token = signToken({ issuer, claims: commandClaims({ issuer, deviceId, action: 'agent.update', overrides: { release } }) });
    const reply = await fleet.request(deviceId, envelope(token));
    const accepted = performance.now();
    if (reply.ok !== true) throw new Error(`agent.update ${version} refused: ${JSON.stringify(reply)}`);
    await recorder.waitFor(eventAfter('update.installed', from), 180_000, `update.installed ${version}`);
    const installed = performance.now();
    const exit = supervisor.waitFor('exit', () => true, 60_000, supervisor.events.length).catch(() => undefined);
    void exitsBefore;
    const exitedAt = exit.then(() => performance.now());
    await recorder.waitFor(onlineAs(version, from), 180_000, `${version} online`);
    const online = performance.now();
    await recorder.waitFor(eventAfter('update.committed', from), 60_000, `update.committed ${version}`);
    const ev = recorder.messages.slice(from).find((m) => m.topic.endsWith('/event') && m.json?.type === 'update.installed')?.json as { resumedFrom?: number };
    return { version, totalMs: online - accepted, toInstalledMs: installed - accepted, toExitMs: (await exitedAt) - accepted, resumedFrom: ev?.resumedFrom ?? 0 };
  }

  const samples: Sample[] = [];
  let resume: { bytes: number; cutAt: number; resumedFrom: number; sentTotal: number; resentBytes: number; totalMs: number } | undefined;
  try {
    await supervisor.start();
    await recorder.waitFor(onlineAs(base.version, 0), 90_000, 'the first release online');
    let running = base.version;
    for (let i = 0; i < runs; i++) {
      const target = running === base.version ? '0.99.0' : base.version;
      process.stderr.write(`update: run ${i + 1}/${runs}: ${running} -> ${target}\n`);
      samples.push(await updateTo(target));
      running = target;
    }
    const target = running === base.version ? '0.99.0' : base.version;
    const bytes = statSync(bundles[target]!).size;
    const cutAt = Math.floor(bytes / 2);
    const sentBefore = server.sent.get(target) ?? 0;
    server.cutNext(target, cutAt);
    process.stderr.write(`update: cut half way: ${running} -> ${target}\n`);
    const s = await updateTo(target);
    const sentTotal = (server.sent.get(target) ?? 0) - sentBefore;
    resume = { bytes, cutAt, resumedFrom: s.resumedFrom, sentTotal, resentBytes: sentTotal - bytes, totalMs: s.totalMs };
  } finally {
    await supervisor.dispose();
    await fleet.close();
    await recorder.close();
    await server.close();
    await broker.dispose();
    removeDir(work);
    removeDir(stateDir);
  }

  const sqliteVersion = (() => {
    const db = new Database(':memory:');
    const v = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    db.close();
    return v;
  })();
  const machine = machineFacts(sqliteVersion);
  const r = (x: Summary) => [round(x.min), round(x.p50), round(x.p95), round(x.max)];
  const total = summarise(samples.map((x) => x.totalMs));
  const installed = summarise(samples.map((x) => x.toInstalledMs));
  const exited = summarise(samples.map((x) => x.toExitMs));
  const md = [
    `### Software update: agent.update accepted -> the new release online and capturing (${runs} updates, ${Math.round(statSync(base.tarball).size / 1e6)} MB host bundle over loopback HTTP)`,
    '',
    markdownTable(
      ['what', 'min ms', 'p50 ms', 'p95 ms', 'max ms'],
      [
        ['**accepted -> new release\'s state online, capture running**', ...r(total)],
        ['↳ accepted -> update.installed (download, SHA-256, unpack, current switched)', ...r(installed)],
        ['↳ accepted -> the old process exited (75)', ...r(exited)],
      ],
    ),
    '',
    resume
      ? `Download cut at ${resume.cutAt} of ${resume.bytes} bytes: resumed from ${resume.resumedFrom} (HTTP Range); the server sent ${resume.sentTotal} bytes in all, ${resume.resentBytes} of them twice; accepted -> online ${round(resume.totalMs)} ms.`
      : '',
    '',
    `Machine: ${machineLine(machine)}.`,
  ].join('\n');
  const file = writeResult('update', {
    benchmark: 'update',
    machine,
    parameters: { runs, bundleBytes: statSync(base.tarball).size, restartSecMs: 100 },
    figures: { acceptedToOnlineMs: total, acceptedToInstalledMs: installed, acceptedToExitMs: exited, resume },
    samples,
    totalMs: Math.round(performance.now() - runStarted),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('update', import.meta.filename, main);
