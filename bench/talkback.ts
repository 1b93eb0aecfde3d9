// Talk-back mouth-to-ear latency on loopback (issue 19): a real headless Chromium is the
// supervisor's console, its fake microphone playing a WAV of 1 kHz bursts (100 ms on, 400 ms off:
// known, sharp onsets), a real mosquitto carries the signed stream.start with the talk grant, and
// the real agent plays what it receives through its playback pipeline.
//
// Method: onsets are timestamped at both ends on this machine's one clock.
//  - Mouth: in the page, a MediaStreamTrackProcessor reads the microphone track (a clone of the
//    one the RTCRtpSender sends) frame by frame; the first sample over 0.1 after >= 50 ms of
//    silence is an onset, dated read time - (samples after it in the frame) / rate. That is when
//    the capture handed the sound on, the same point WebRTC's encoder takes it from.
//  - Ear: talkback.sink is `udpsink sync=true` to a socket in this process: GStreamer sends each
//    buffer when the pipeline clock says to play it (as a sound card would take it; a real ALSA
//    device adds its own period, 10-20 ms on the Pi), S16LE mono; the onset is dated arrival +
//    its sample offset / rate.
//  Each mouth onset is paired with the first ear onset 0-1000 ms after it.
// One agent per --jitter setting (default 40,20,0: the old default, the default, and no
// jitter-buffer delay, the floor of the pipeline) side by side, talked to in alternation
// (--rounds, each --talk-s long), so load from other processes hits all alike. There is no "old behaviour" to compare with: before this
// the camera played nothing. The machine is shared (2 cores, other benchmarks and test suites):
// figures are noisy, spread over the rounds is reported.
// Writes bench/results/talkback.json and bench/results/talkback.md.
//
// An ear onset under 20 ms after a mouth onset cannot be this burst's (encoding alone takes
// longer): it is the previous burst arriving more than a period late, and is not paired.
//
// Usage: node bench/talkback.ts [--rounds 3] [--talk-s 8] [--jitter 40,20,0]
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnAgent, tempStateDir, type AgentProcess } from '../test/helpers/agent-process.ts';
import { writeAgentConfig } from '../test/helpers/agent-config.ts';
import { ChromiumViewers, type Viewer } from '../test/helpers/chromium-viewer.ts';
import { makeCommand, makeIssuer, writeTrustStore } from '../test/helpers/command-tokens.ts';
import { FleetClient } from '../test/helpers/fleet-client.ts';
import { startBroker } from '../test/helpers/mosquitto.ts';
import { MqttRecorder } from '../test/helpers/mqtt-recorder.ts';
import { makeToneWav } from '../test/helpers/talkback-audio.ts';
import { installCleanup, intFlag, machineFacts, machineLine, markdownTable, parseFlags, resultsDir, round, summarise, writeResult, type Summary } from './lib/common.ts';

const threshold = 0.1;
const silenceMs = 50;
const rate = 48_000;

/** Onset detector over a stream of samples, each block dated by when its first sample played. */
class Onsets {
  readonly times: number[] = [];
  #quiet = 0;
  push(samples: Int16Array, firstSampleAt: number): void {
    for (let i = 0; i < samples.length; i++) {
      if (Math.abs(samples[i]!) / 32768 > threshold) {
        if (this.#quiet >= (silenceMs * rate) / 1000) this.times.push(firstSampleAt + (i * 1000) / rate);
        this.#quiet = 0;
      } else this.#quiet++;
    }
  }
}

const now = () => performance.timeOrigin + performance.now();

interface Camera {
  name: string;
  jitterMs: number;
  deviceId: string;
  agent: AgentProcess;
  ear: Onsets;
  socket: dgram.Socket;
  viewer?: Viewer;
  sid?: string;
  latencies: number[];
  perRound: Summary[];
}

async function main(): Promise<void> {
  installCleanup();
  const flags = parseFlags(process.argv.slice(2));
  const rounds = intFlag(flags, 'rounds', 3);
  const talkS = intFlag(flags, 'talk-s', 8);
  const issuer = await makeIssuer({ iss: 'bench-console' });
  const broker = await startBroker();
  const fleet = await FleetClient.connect(broker.url);
  const dir = await tempStateDir('bwc-bench-talk-');
  const tone = makeToneWav(path.join(dir, 'bursts.wav'), 1000, 10, { onMs: 100, offMs: 400 });
  const cameras: Camera[] = [];
  const jitters = (flags.get('jitter') ?? '40,20,0').split(',').map(Number);
  for (const jitterMs of jitters) {
    const deviceId = `bench-talk-${jitterMs}`;
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    const ear = new Onsets();
    socket.on('message', (msg) => {
      const at = now();
      ear.push(new Int16Array(msg.buffer.slice(msg.byteOffset, msg.byteOffset + (msg.length & ~1))), at);
    });
    const stateDir = await tempStateDir();
    const config = await writeAgentConfig(stateDir, {
      commands: { trustStore: writeTrustStore(stateDir, [issuer]), unsynchronisedClock: 'accept' },
      capture: { width: 320, height: 180, framerate: 15, bitrateKbps: 300, audio: false },
      stream: { ice: { interfaces: ['lo'] }, viewerLostGrace: 10, connectTimeout: 30 },
      talkback: { sink: `audioconvert ! audio/x-raw,format=S16LE,channels=1,rate=${rate} ! udpsink host=127.0.0.1 port=${socket.address().port} sync=true`, jitterMs, idleMs: 1000 },
    });
    const agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: broker.url, BWC_STATE_DIR: stateDir, BWC_GPSD: '127.0.0.1:9', BWC_LOG_LEVEL: 'info' });
    cameras.push({ name: `jitterMs ${jitterMs}${jitterMs === 20 ? ' (default)' : ''}`, jitterMs, deviceId, agent, ear, socket, latencies: [], perRound: [] });
  }
  const viewers = await ChromiumViewers.launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-audio-capture=${tone}`]);
  const recorder = await MqttRecorder.connect(broker.url, 'bwc/v1/+/state');
  try {
    for (const c of cameras) {
      await recorder.waitFor(() => recorder.on('state').some((m) => m.topic.includes(c.deviceId) && m.json?.online === true), 90_000, `${c.deviceId} online`);
      const viewer = await viewers.open({ secureOrigin: true });
      const offer = await viewer.createOffer({ talk: true });
      const reply = await fleet.request(c.deviceId, makeCommand({ issuer, deviceId: c.deviceId, action: 'stream.start', offer, overrides: { sub: 'bench', reason: 'officer-safety', talk: true, max_s: 1800 } }).payload);
      if (!reply.ok) throw new Error(`stream.start refused: ${reply.code} ${reply.message}`);
      await viewer.applyAnswer(reply.answer!);
      await viewer.waitForVideo((v) => v.framesDecoded > 2, 30_000, 'frames');
      // The mouth: onsets of the microphone as captured, in the page.
      await viewer.pressToTalk();
      await viewer.releaseTalk();
      await viewer.page.evaluate(
        ({ threshold, silenceMs }) => {
          const g = globalThis as unknown as { mic: MediaStreamTrack; mouth: number[] };
          g.mouth = [];
          const Processor = (globalThis as unknown as { MediaStreamTrackProcessor: new (o: { track: MediaStreamTrack }) => { readable: ReadableStream<AudioData> } }).MediaStreamTrackProcessor;
          const reader = new Processor({ track: g.mic.clone() }).readable.getReader();
          let quiet = 0;
          void (async () => {
            for (;;) {
              const { value, done } = await reader.read();
              if (done || !value) return;
              const at = performance.timeOrigin + performance.now();
              const n = value.numberOfFrames;
              const data = new Float32Array(n);
              value.copyTo(data, { planeIndex: 0, format: 'f32-planar' });
              const rate = value.sampleRate;
              for (let i = 0; i < n; i++) {
                if (Math.abs(data[i]!) > threshold) {
                  if (quiet >= (silenceMs * rate) / 1000) g.mouth.push(at - ((n - i) * 1000) / rate);
                  quiet = 0;
                } else quiet++;
              }
              value.close();
            }
          })();
        },
        { threshold, silenceMs },
      );
      c.viewer = viewer;
      c.sid = reply.sid!;
    }
    for (let round_ = 0; round_ < rounds; round_++) {
      for (const c of cameras) {
        const viewer = c.viewer!;
        const mouthBefore = await viewer.page.evaluate(() => (globalThis as unknown as { mouth: number[] }).mouth.length);
        const earBefore = c.ear.times.length;
        await viewer.pressToTalk();
        const started = now();
        while (now() - started < talkS * 1000) await new Promise((r) => setTimeout(r, 200));
        await viewer.releaseTalk();
        // Let the last words arrive (jitter buffer, sink) before pairing.
        await new Promise((r) => setTimeout(r, 1500));
        const mouth = (await viewer.page.evaluate(() => (globalThis as unknown as { mouth: number[] }).mouth)).slice(mouthBefore);
        const ear = c.ear.times.slice(earBefore);
        const lat: number[] = [];
        for (const m of mouth) {
          const e = ear.find((t) => t - m >= 20 && t - m <= 1000);
          if (e !== undefined) lat.push(e - m);
        }
        c.latencies.push(...lat);
        c.perRound.push(summarise(lat));
        process.stdout.write(`round ${round_ + 1} ${c.name}: ${lat.length}/${mouth.length} onsets paired, p50 ${round(summarise(lat).p50)} ms\n`);
      }
    }
  } finally {
    await viewers.close();
    for (const c of cameras) {
      await c.agent.stop('SIGTERM');
      c.socket.close();
    }
    await recorder.close();
    await fleet.close();
    await broker.dispose();
  }
  const machine = machineFacts('n/a');
  const rows = cameras.map((c) => {
    const s = summarise(c.latencies);
    const p50s = c.perRound.map((r) => round(r.p50));
    return [c.name, s.n, round(s.min), round(s.p50), round(s.p95), round(s.max), `${Math.min(...p50s)}-${Math.max(...p50s)}`];
  });
  const md = [
    `### Talk-back mouth-to-ear latency, loopback (${rounds} rounds of ${talkS} s per setting, alternating)`,
    '',
    markdownTable(['playback', 'onsets', 'min ms', 'p50 ms', 'p95 ms', 'max ms', 'p50 spread over rounds ms'], rows),
    '',
    'Mouth: the console microphone as captured (MediaStreamTrackProcessor in the page); ear: the playback pipeline\'s sink (udpsink sync=true, i.e. when the pipeline clock plays it). Goal: p50 <= 150 ms. Shared 2-core machine: noisy.',
    '',
    machineLine(machine),
  ].join('\n');
  writeResult('talkback', { machine, rounds, talkS, burst: { hz: 1000, onMs: 100, offMs: 400 }, settings: cameras.map((c) => ({ name: c.name, jitterMs: c.jitterMs, latency: summarise(c.latencies), perRound: c.perRound })), markdown: md });
  writeFileSync(path.join(resultsDir, 'talkback.md'), `${md}\n`);
  process.stdout.write(`${md}\n`);
}

await main();
process.exit(0);
