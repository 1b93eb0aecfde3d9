// Evidence offload over a capped uplink (test/helpers/bad-link-rig.ts: the agent in its own network
// namespace, uploading only from the namespace's interface, offload.interfaces; a tc cap on
// that interface's egress, the uplink) to a real OpenStack Swift (test/helpers/swift.ts) through a
// counting proxy on the root side of the veth:
//  (a) upload throughput as a share of the cap: a backlog recorded with uploads paused, then
//      `ctl offload resume`, timed to the `offload.recording` audit entry (every object verified);
//  (b) the live view's frozen time (Chromium's totalFreezesDuration) over --window-s with a backlog
//      waiting, three ways: no upload (the baseline), the default (uploads hold while a view runs,
//      offload.pauseDuringLiveView), and an upload running beside the view (pause off).
// Writes bench/results/offload.json and a markdown table. Needs root (ip netns, tc).
//
// Usage: node bench/offload.ts [--cap-kbit 3000] [--backlog-s 30] [--window-s 30]
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { createBadLinkRig, type Rig } from '../test/helpers/bad-link-rig.ts';
import { runCli, tempStateDir } from '../test/helpers/agent-process.ts';
import { createBucket } from '../test/helpers/offload-rig.ts';
import { StoreProxy } from '../test/helpers/store-proxy.ts';
import { startSwift, type Swift } from '../test/helpers/swift.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, round, sleep, writeResult } from './lib/common.ts';

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

interface Ctx {
  rig: Rig;
  swift: Swift;
  proxy: StoreProxy;
  credentialsFile: string;
  capKbit: number;
  backlogS: number;
}

const evidenceCapture = { width: 640, height: 360, framerate: 15, bitrateKbps: 4000, testPattern: 'snow' };

async function agentWithBacklog(c: Ctx, pauseDuringLiveView: boolean): Promise<{ stateDir: string; recordingId: string }> {
  await c.rig.startAgent({ ice: { interfaces: [c.rig.net.cameraInterface] } }, evidenceCapture, {
    offload: {
      enabled: true,
      endpoint: c.proxy.endpoint,
      bucket: 'evidence',
      credentialsFile: c.credentialsFile,
      interfaces: [c.rig.net.cameraInterface],
      keepDays: 30,
      pauseDuringLiveView,
      retryMinDelay: 500,
      retryMaxDelay: 2000,
    },
    recording: { preEvent: 0 },
  });
  const stateDir = c.rig.agentStateDir()!;
  const ctl = (...args: string[]) => runCli(['ctl', ...args, '--state-dir', stateDir]);
  await ctl('offload', 'pause');
  const start = await ctl('record', 'start');
  const recordingId = (JSON.parse(start.stdout) as { recordingId: string }).recordingId;
  await sleep(c.backlogS * 1000);
  await ctl('record', 'stop');
  await until('recording sealed', () => c.rig.audit().some((e) => e.type === 'recording.sealed' && e.detail.recordingId === recordingId), 60_000);
  return { stateDir, recordingId };
}

async function throughput(c: Ctx) {
  const { stateDir, recordingId } = await agentWithBacklog(c, true);
  const bytes0 = c.proxy.bytesIn;
  await runCli(['ctl', 'offload', 'resume', '--state-dir', stateDir]);
  await until('backlog uploaded', () => c.rig.audit().some((e) => e.type === 'offload.recording' && e.detail.recordingId === recordingId), 30 * 60_000);
  // Timed by the agent's own audit entries (the resume, and every object verified): the MQTT
  // copies that tell the bench reach it over the same capped uplink, later.
  const at = (type: string) => Date.parse((c.rig.audit().find((e) => e.type === type && (type === 'offload.resume' || e.detail.recordingId === recordingId)) as unknown as { time: string }).time);
  const seconds = (at('offload.recording') - at('offload.resume')) / 1000;
  const bytes = c.proxy.bytesIn - bytes0;
  const kbit = (bytes * 8) / seconds / 1000;
  const objects = c.rig.audit().filter((e) => e.type === 'offload.upload' && e.detail.recordingId === recordingId).length;
  await c.rig.stopAgent();
  return { bytes, objects, seconds: round(seconds, 2), kbitPerS: Math.round(kbit), shareOfCap: round((kbit / c.capKbit) * 100) };
}

async function frozen(c: Ctx, mode: 'no upload' | 'paused during the view (default)' | 'upload beside the view', windowMs: number) {
  const { stateDir } = await agentWithBacklog(c, mode === 'paused during the view (default)');
  const bytes0 = c.proxy.bytesIn;
  if (mode !== 'no upload') await runCli(['ctl', 'offload', 'resume', '--state-dir', stateDir]);
  const { viewer } = await c.rig.watch({}, 600);
  await sleep(2000);
  const a = await viewer.inboundVideo();
  const bytesAtA = c.proxy.bytesIn;
  await sleep(windowMs);
  const b = await viewer.inboundVideo();
  const uploadedDuringWindow = c.proxy.bytesIn - bytesAtA;
  await viewer.vanish();
  await c.rig.stopAgent();
  const perMin = 60_000 / windowMs;
  return {
    mode,
    fps: round((b.framesDecoded - a.framesDecoded) / (windowMs / 1000)),
    freezesPerMin: round((b.freezeCount - a.freezeCount) * perMin),
    frozenSPerMin: round((b.totalFreezesDuration - a.totalFreezesDuration) * perMin, 2),
    liveKbps: Math.round(((b.bytesReceived - a.bytesReceived) * 8) / windowMs),
    uploadKbpsDuringView: Math.round((uploadedDuringWindow * 8) / windowMs),
    uploadedBeforeView: c.proxy.bytesIn - bytes0 - uploadedDuringWindow,
  };
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const capKbit = intFlag(flags, 'cap-kbit', 3000);
  const backlogS = intFlag(flags, 'backlog-s', 30);
  const windowMs = intFlag(flags, 'window-s', 30) * 1000;
  if (process.getuid?.() !== 0) throw new Error('needs root: ip netns and tc');
  const rig = await createBadLinkRig({ deviceId: `cam-offload-bench-${process.pid}` });
  const swift = await startSwift();
  try {
    await createBucket(swift, 'evidence');
    const proxy = await StoreProxy.start(swift.endpoint, rig.net.hostAddress);
    const credentialsFile = path.join(await tempStateDir('bwc-offload-bench-'), 'store.yaml');
    await writeFile(credentialsFile, `accessKeyId: "${swift.accessKeyId}"\nsecretAccessKey: "${swift.secretAccessKey}"\n`, { mode: 0o600 });
    await rig.net.capBandwidth(capKbit);
    const c: Ctx = { rig, swift, proxy, credentialsFile, capKbit, backlogS };
    const up = await throughput(c);
    process.stderr.write(`throughput: ${JSON.stringify(up)}\n`);
    const views = [];
    for (const mode of ['no upload', 'paused during the view (default)', 'upload beside the view'] as const) {
      views.push(await frozen(c, mode, windowMs));
      process.stderr.write(`live view, ${mode}: ${JSON.stringify(views.at(-1))}\n`);
    }
    await proxy.close();
    const machine = machineFacts((new Database(':memory:').prepare('select sqlite_version() v').get() as { v: string }).v);
    const md = [
      `### Evidence offload over a ${capKbit} kbit/s uplink (tc tbf on the camera's interface; real Swift through its S3 API)`,
      '',
      `(a) Upload of a ${backlogS} s backlog (640x360@15 "snow" at 4 Mbit/s, ${up.objects} objects, ${up.bytes} bytes of request bodies; TCP/IP and HTTP headers not counted), from the \`offload.resume\` audit entry to \`offload.recording\` (every object verified: PUT and HEAD each, two objects in flight):`,
      '',
      markdownTable(['seconds', 'kbit/s', 'share of the cap (goal >= 90 %)'], [[up.seconds, up.kbitPerS, `${up.shareOfCap} %`]]),
      '',
      `(b) Live view (Chromium, ${windowMs / 1000} s window) with a backlog waiting, per minute:`,
      '',
      markdownTable(
        ['upload', 'fps decoded', 'freezes / min', 'frozen s / min', 'live kbit/s', 'upload kbit/s during the view'],
        views.map((v) => [v.mode, v.fps, v.freezesPerMin, v.frozenSPerMin, v.liveKbps, v.uploadKbpsDuringView]),
      ),
      '',
      `Machine: ${machineLine(machine)}. Swift, the agent, its encoders and Chromium share the cores: single runs, expect noise.`,
    ].join('\n');
    writeResult('offload', { machine, capKbit, backlogS, windowS: windowMs / 1000, throughput: up, liveView: views, markdown: md });
    process.stdout.write(`${md}\n`);
  } finally {
    await swift.dispose();
    await rig.dispose();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`offload bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
