// How to hand the live RTP from the capture worker to the main process: udpsink to loopback, or
// appsink pulled in the worker and forwarded over Node IPC. Same 720p30 2 Mbit/s x264 pipeline,
// valve open; pattern=snow so the encoder really spends its 2 Mbit/s; CPU of both processes over the run. Usage: node bench/capture-transport.ts [--seconds 15]
import { fork } from 'node:child_process';
import dgram from 'node:dgram';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { installCleanup, intFlag, markdownTable, parseFlags, round, sleep, trackChild, writeResult } from './lib/common.ts';
import { cpuMs } from './lib/proc.ts';

const head =
  'videotestsrc is-live=true pattern=snow ! video/x-raw,format=I420,width=1280,height=720,framerate=30/1 ! ' +
  'x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=2000 ! video/x-h264,profile=constrained-baseline ! ' +
  'h264parse config-interval=-1 ! rtph264pay config-interval=-1 mtu=1200 pt=96 aggregate-mode=zero-latency ! ';

interface Pipe {
  play(): void;
  stop(): void;
  findChild(n: string): { pull(cb: (b: Buffer | null) => void): void };
}

function child(mode: string, port: number): void {
  const gst = createRequire(import.meta.url)('gstreamer-superficial') as { Pipeline: new (d: string) => Pipe };
  const tail = mode === 'udp' ? `udpsink host=127.0.0.1 port=${port} sync=false async=false` : 'appsink name=s sync=false max-buffers=200 drop=true';
  const p = new gst.Pipeline(head + tail);
  p.play();
  if (mode === 'ipc') {
    const sink = p.findChild('s');
    const onBuf = (b: Buffer | null) => {
      if (!b) return;
      process.send!(b);
      sink.pull(onBuf);
    };
    sink.pull(onBuf);
  }
  process.on('disconnect', () => {
    p.stop();
    process.exit(0);
  });
}

async function run(mode: 'udp' | 'ipc', seconds: number) {
  let packets = 0;
  let bytes = 0;
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m) => {
    packets++;
    bytes += m.length;
  });
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const port = sock.address().port;
  const c = trackChild(
    fork(fileURLToPath(import.meta.url), ['--child', mode, '--port', String(port)], {
      env: { ...process.env, UV_THREADPOOL_SIZE: '8' },
      serialization: 'advanced',
    }),
  );
  c.on('message', (m) => {
    packets++;
    bytes += (m as Uint8Array).length;
  });
  await sleep(2000); // encoder warm-up
  const p0 = packets;
  const b0 = bytes;
  const c0 = cpuMs(c.pid)!;
  const m0 = process.cpuUsage();
  await sleep(seconds * 1000);
  const dc = cpuMs(c.pid)! - c0;
  const dm = process.cpuUsage(m0);
  const result = {
    mode,
    packetsPerS: round((packets - p0) / seconds),
    kbitPerS: round(((bytes - b0) * 8) / 1000 / seconds),
    workerCpuPct: round((dc / (seconds * 1000)) * 100),
    mainCpuPct: round(((dm.user + dm.system) / 1000 / (seconds * 1000)) * 100),
  };
  c.disconnect();
  await new Promise((r) => c.once('exit', r));
  sock.close();
  return result;
}

const flags = parseFlags(process.argv.slice(2));
if (flags.has('child')) {
  child(flags.get('child')!, Number(flags.get('port')));
} else {
  installCleanup();
  const seconds = intFlag(flags, 'seconds', 15);
  const rows = [];
  for (const mode of ['udp', 'ipc', 'udp', 'ipc'] as const) rows.push(await run(mode, seconds));
  writeResult('capture-transport', { seconds, rows });
  console.log(
    markdownTable(
      ['transport', 'RTP packets/s', 'kbit/s', 'worker CPU %', 'main CPU %'],
      rows.map((r) => [r.mode === 'udp' ? 'udpsink → loopback' : 'appsink → IPC', r.packetsPerS, r.kbitPerS, r.workerCpuPct, r.mainCpuPct]),
    ),
  );
}
