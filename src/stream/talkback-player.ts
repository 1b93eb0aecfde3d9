// The talk-back playback process (issue 19): plays a supervisor's Opus RTP to the wearer's speaker
// or earpiece through GStreamer, one pipeline per talk spurt, and with recording on also writes
// what was said to an Ogg/Opus file for the evidence.
//
// Why a child process and not the agent (nor the capture worker): a GStreamer pipeline in the
// agent parks libuv pool threads (every pollBus blocks one) and its native code shares the agent's
// fate; the capture worker is restarted on its own schedule (a crash, a new preset) that a talk
// spurt must not share. This process is small, started once when the first talk-granted view
// opens, and fed over the IPC channel; the agent's event loop only forwards packets.
//
// Per spurt: appsrc (live, timestamped on arrival) ! rtpjitterbuffer ! rtpopusdepay ! tee, one
// branch opusdec ! audioconvert ! audioresample ! <talkback.sink>, the other (recording on)
// opusparse (which writes the OpusHead/OpusTags headers RTP does not carry) ! oggmux ! filesink. The spurt ends with EOS, so the sink and the Ogg file are finalised (a WAV
// test sink gets its header) before the next spurt's pipeline exists. The bus is polled only
// while a pipeline runs: the binding's pollBus parks a pool thread in the bus until the pipeline
// is in NULL, and process.exit waits for pool threads, so every pipeline is stopped (NULL) at the
// end of its spurt and before exit.
import { createRequire } from 'node:module';
import { errorMessage } from '../errors.ts';
import type { PlayerMessage, PlayerReply } from './talkback-protocol.ts';

interface GstElement {
  push(buffer: Buffer): void;
}
interface BusMessage {
  type?: string;
  [field: string]: unknown;
}
interface GstPipeline {
  play(): void;
  stop(): void;
  sendEOS(): void;
  findChild(name: string): GstElement | undefined;
  pollBus(cb: (msg: BusMessage) => void): void;
}
interface GstModule {
  Pipeline: new (description: string) => GstPipeline;
}

// Longest wait for EOS to reach every sink; past it the pipeline is stopped as it is.
const eosTimeoutMs = 3000;

const gst = createRequire(import.meta.url)('gstreamer-superficial') as GstModule;

interface Spurt {
  id: string;
  pipeline: GstPipeline;
  src: GstElement;
  oggFile: string | null;
  packets: number;
  ended: boolean;
  eosTimer?: NodeJS.Timeout;
}

let current: Spurt | undefined;

function reply(message: PlayerReply): void {
  if (process.connected && process.send) process.send(message);
}

/** The pipeline of one spurt (talkback.sink is local-only config: a remote config.apply cannot set it). */
function describe(m: Extract<PlayerMessage, { type: 'start' }>): string {
  const caps = `application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)OPUS,payload=(int)${m.payloadType}`;
  const head = `appsrc name=src is-live=true do-timestamp=true format=time caps="${caps}" ! rtpjitterbuffer latency=${m.jitterMs} ! rtpopusdepay ! tee name=t`;
  const play = `t. ! queue ! opusdec plc=true ! audioconvert ! audioresample ! ${m.sink}`;
  const ogg = m.oggFile === null ? '' : ` t. ! queue ! opusparse ! oggmux ! filesink location="${m.oggFile}"`;
  return `${head} ${play}${ogg}`;
}

function finish(s: Spurt, error: string | null): void {
  if (s.ended) return;
  s.ended = true;
  clearTimeout(s.eosTimer);
  try {
    s.pipeline.stop();
  } catch {
    // stopping a failed pipeline may throw; it is gone either way
  }
  if (current === s) current = undefined;
  reply({ type: 'ended', spurt: s.id, packets: s.packets, oggFile: s.oggFile, error });
}

function start(m: Extract<PlayerMessage, { type: 'start' }>): void {
  if (current && !current.ended) finish(current, 'replaced by a new spurt before its end');
  let pipeline: GstPipeline;
  try {
    pipeline = new gst.Pipeline(describe(m));
  } catch (err) {
    reply({ type: 'ended', spurt: m.spurt, packets: 0, oggFile: null, error: `the playback pipeline could not be built (talkback.sink ${JSON.stringify(m.sink)}): ${errorMessage(err)}` });
    return;
  }
  const src = pipeline.findChild('src');
  if (!src) {
    reply({ type: 'ended', spurt: m.spurt, packets: 0, oggFile: null, error: 'the playback pipeline has no appsrc' });
    return;
  }
  const s: Spurt = { id: m.spurt, pipeline, src, oggFile: m.oggFile, packets: 0, ended: false };
  current = s;
  // Called once: the binding polls again by itself after each message until the pipeline is in
  // NULL, and NULL (finish) releases the pool thread parked in the bus.
  pipeline.pollBus((msg: BusMessage): void => {
    if (s.ended) return;
    if (msg.type === 'eos') finish(s, null);
    else if (msg.type === 'error') finish(s, `GStreamer: ${String(msg.message ?? msg.debug ?? 'error')}`);
  });
  pipeline.play();
  reply({ type: 'playing', spurt: m.spurt });
}

process.on('message', (raw: unknown) => {
  const m = raw as PlayerMessage;
  if (m.type === 'rtp') {
    const s = current;
    if (!s || s.ended || s.id !== m.spurt) return;
    s.packets++;
    s.src.push(Buffer.from(m.packet.buffer, m.packet.byteOffset, m.packet.byteLength));
  } else if (m.type === 'start') {
    start(m);
  } else if (m.type === 'end') {
    const s = current;
    if (!s || s.ended || s.id !== m.spurt) return;
    s.pipeline.sendEOS();
    s.eosTimer = setTimeout(() => finish(s, `EOS did not reach the sink within ${eosTimeoutMs} ms`), eosTimeoutMs);
  }
});

// The agent gone: nothing more will come.
process.on('disconnect', () => {
  if (current) finish(current, 'the agent went away');
  process.exit(0);
});

reply({ type: 'ready' });
