// Runs the capture worker (worker.ts) as a child process and keeps it running: restarts it with
// capped exponential back-off after an exit, a pipeline error or a stall, relays segment events,
// and receives the live RTP on a loopback UDP socket (udpsink in the worker; see bench/capture-transport.ts
// for why not appsink + IPC). Nothing here throws after construction: faults become events.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { CaptureConfig } from './config.ts';
import { existsSync } from 'node:fs';
import { liveBitrateAdjustable, piEncoderDevice, resolvePreset, type CaptureSettings } from './presets.ts';
import { isWorkerMessage, type ParentMessage, type SegmentInfo, type WorkerMessage } from './protocol.ts';
import { udpPortOwnedBy } from './rtp-source.ts';
import { errorMessage } from '../errors.ts';

export type { SegmentInfo } from './protocol.ts';

export type CaptureStatus = 'starting' | 'running' | 'restarting' | 'failed' | 'stopped';

export interface CaptureFault {
  reason: string;
  /** ISO 8601 wall-clock time of the fault. */
  at: string;
}

export interface CaptureHealth {
  /** `failed`: failedAfterFaults faults in a row without a closed segment between them; restarts continue. */
  status: CaptureStatus;
  /** Worker restarts since start(). */
  restarts: number;
  /** Faults in a row, reset by the first closed segment of a worker. */
  consecutiveFaults: number;
  lastFault: CaptureFault | undefined;
  /** pid of the running worker, if any. */
  pid: number | undefined;
  live: boolean;
  /** Frames the current worker encoded (its last stats report). */
  frames: number;
  /**
   * Why the live bitrate could not be set on the Pi encoder (VIDIOC_S_CTRL), while that lasts; the
   * live view goes on at the encoder's last rate. undefined when it works or does not apply.
   */
  liveBitrateError: string | undefined;
}

export interface CaptureSupervisorEvents {
  state: [CaptureHealth];
  'segment-opened': [{ file: string; startedAt: string }];
  segment: [SegmentInfo];
  fault: [{ reason: string; restartInMs: number }];
}

export interface CaptureSupervisorOptions {
  settings: CaptureConfig;
  /** Where segment files go, and their name prefix (files are <prefix>-%06d.ts). */
  segmentDir: string;
  segmentPrefix?: string;
  logger: Logger;
  /** Live RTP packets, only while setLive(true). The Buffer is the datagram itself, not a copy. */
  onRtp?: (packet: Buffer) => void;
  /** Live Opus RTP packets (settings.audio only), likewise. */
  onAudioRtp?: (packet: Buffer) => void;
  /** Worker entry point; default worker.ts/worker.js next to this module. */
  workerPath?: string;
  /** How often the worker reports frame counts. */
  statsIntervalMs?: number;
  /** Time allowed for EOS and segment finalisation on stop() before SIGKILL. */
  stopTimeoutMs?: number;
  /** Shortest gap between two keyframe requests reaching the encoder. */
  keyframeMinIntervalMs?: number;
  failedAfterFaults?: number;
  /**
   * A worker whose pipeline is not PLAYING this long after it got `start` reports a fault (missing
   * device...); one not running startTimeoutMs + stallTimeoutS after its launch is killed.
   */
  startTimeoutMs?: number;
  /** Starting bitrate of a separate live encoder; default settings.bitrateKbps. */
  liveBitrateKbps?: number;
  /** Whether the Pi hardware encoder's device exists (presets auto and rpi); default: /dev/video11 exists. */
  piEncoderPresent?: boolean;
}

/**
 * Memory settings of the capture worker's node (issue 18; bench/shift-memory.ts measures them, the
 * baseline with BWC_MEMORY_FLAGS=off, which restores the old launch). The worker's JavaScript is
 * small (a bus reader and a frame counter), so V8's young generation needs no more than 1 MiB;
 * glibc would otherwise give each of GStreamer's ~25 streaming threads an arena of its own, kept
 * resident: two serve them all. The worker also turns off transparent huge pages for itself
 * (worker.ts): x264 asks for them for its frame buffers, which rounds each up to 2 MiB resident.
 * test/memory-settings.test.ts fails if these are lost.
 */
export function workerMemoryFlags(env: NodeJS.ProcessEnv = process.env): { nodeArgs: string[]; env: Record<string, string> } {
  if (env.BWC_MEMORY_FLAGS === 'off') return { nodeArgs: [], env: {} };
  return { nodeArgs: ['--max-semi-space-size=1'], env: { MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? '2' } };
}

function defaultWorkerPath(): string {
  // Under type stripping this module is worker.ts's sibling; built, it is dist/src/capture/supervisor.js.
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return fileURLToPath(new URL(`./worker.${ext}`, import.meta.url));
}

/** The worker's sending port as verified for one RTP socket; reset for each worker. */
interface RtpSource {
  port: number;
  /** When a new source port was last checked: rogue senders cannot make us read /proc per packet. */
  lastCheckAt: number;
  /** Ports already refused, so each is logged once. */
  refused: Set<number>;
}

// A new worker's first packet may be refused if a stranger's packet was checked just before it;
// the worker sends 30+ packets a second, so the next one after this gap is taken.
const sourceCheckMinGapMs = 100;

interface WorkerRun {
  child: ChildProcess;
  /** The first reason this run went wrong; later symptoms (exit after error) do not overwrite it. */
  fault: string | undefined;
  ended: boolean;
  sawSegment: boolean;
  lastFrames: number;
  launchedAt: number;
  /** Set at the first `ready`: the stall clock runs only from there (start-up has its own bound). */
  ready: boolean;
  slowStartLogged: boolean;
  lastProgressAt: number;
}

export class CaptureSupervisor extends EventEmitter<CaptureSupervisorEvents> {
  readonly #opts: Required<Omit<CaptureSupervisorOptions, 'onRtp' | 'onAudioRtp' | 'workerPath' | 'liveBitrateKbps' | 'piEncoderPresent'>> & { workerPath: string };
  /** The live encoder's bitrate now; a restarted worker starts at it. */
  #liveBitrateKbps: number;
  readonly #onRtp: ((packet: Buffer) => void) | undefined;
  readonly #onAudioRtp: ((packet: Buffer) => void) | undefined;
  #audioSocket: dgram.Socket | undefined;
  readonly #rtpSources: RtpSource[] = [];
  readonly #log: Logger;
  #socket: dgram.Socket | undefined;
  #run: WorkerRun | undefined;
  #status: CaptureStatus = 'stopped';
  #restarts = 0;
  #consecutiveFaults = 0;
  #lastFault: CaptureFault | undefined;
  #live = false;
  #frames = 0;
  #restartTimer: NodeJS.Timeout | undefined;
  #stallTimer: NodeJS.Timeout | undefined;
  #lastKeyframeAt = 0;
  #keyframeTimer: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;
  #started = false;
  #liveBitrateError: string | undefined;

  constructor(options: CaptureSupervisorOptions) {
    super();
    this.#log = options.logger;
    this.#onRtp = options.onRtp;
    this.#onAudioRtp = options.onAudioRtp;
    // `auto`, and `rpi` on a Pi 5, become a preset that can run on this board: said once in the log.
    const resolved = resolvePreset(options.settings.preset, options.piEncoderPresent ?? existsSync(piEncoderDevice));
    if (resolved.note) this.#log[options.settings.preset === 'auto' ? 'info' : 'warn']({ configured: options.settings.preset, preset: resolved.preset }, resolved.note);
    this.#opts = {
      settings: { ...options.settings, preset: resolved.preset },
      segmentDir: options.segmentDir,
      segmentPrefix: options.segmentPrefix ?? 'segment',
      logger: options.logger,
      workerPath: options.workerPath ?? defaultWorkerPath(),
      statsIntervalMs: options.statsIntervalMs ?? 1000,
      stopTimeoutMs: options.stopTimeoutMs ?? 10_000,
      keyframeMinIntervalMs: options.keyframeMinIntervalMs ?? 200,
      failedAfterFaults: options.failedAfterFaults ?? 5,
      startTimeoutMs: options.startTimeoutMs ?? 5000,
    };
    this.#liveBitrateKbps = options.liveBitrateKbps ?? options.settings.bitrateKbps;
  }

  /** The preset the worker runs (`auto` resolved; `rpi` without the Pi encoder is `rpi5`). */
  get preset(): CaptureConfig['preset'] {
    return this.#opts.settings.preset;
  }

  /** Whether the live view has an encoder of its own, so setLiveBitrate takes effect. */
  get liveBitrateAdjustable(): boolean {
    return liveBitrateAdjustable(this.#opts.settings);
  }

  /** Sets the live encoder's bitrate (bandwidth adaptation); the recording's stays as configured. */
  setLiveBitrate(kbps: number): void {
    const rounded = Math.round(kbps);
    if (!this.liveBitrateAdjustable || rounded === this.#liveBitrateKbps) return;
    this.#liveBitrateKbps = rounded;
    this.#send({ type: 'live-bitrate', kbps: rounded });
  }

  health(): CaptureHealth {
    return {
      status: this.#status,
      restarts: this.#restarts,
      consecutiveFaults: this.#consecutiveFaults,
      lastFault: this.#lastFault,
      pid: this.#run && !this.#run.ended ? this.#run.child.pid : undefined,
      live: this.#live,
      frames: this.#frames,
      liveBitrateError: this.#liveBitrateError,
    };
  }

  /** Loopback port the live video RTP is received on (diagnosis, tests). */
  get rtpPort(): number | undefined {
    return this.#socket?.address().port;
  }

  /** Binds the RTP socket and launches the first worker; later trouble is reported by events. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#socket = await this.#bindRtpSocket(this.#onRtp, 1 << 20);
    if (this.#opts.settings.audio) this.#audioSocket = await this.#bindRtpSocket(this.#onAudioRtp, 1 << 16);
    this.#stallTimer = setInterval(() => this.#checkStall(), this.#opts.statsIntervalMs);
    this.#launch('starting');
  }

  async #bindRtpSocket(deliver: ((packet: Buffer) => void) | undefined, receiveBuffer: number): Promise<dgram.Socket> {
    const socket = dgram.createSocket('udp4');
    const source: RtpSource = { port: -1, lastCheckAt: -Infinity, refused: new Set() };
    this.#rtpSources.push(source);
    socket.on('message', (packet, remote) => {
      // Nothing at all while nobody watches; then only from the worker's own udpsink on loopback.
      if (!this.#live || !deliver || remote.address !== '127.0.0.1') return;
      if (remote.port !== source.port && !this.#admitSource(source, remote.port)) return;
      deliver(packet);
    });
    socket.on('error', (err) => this.#log.error({ err }, 'capture RTP socket error'));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    try {
      // A keyframe at 2 Mbit/s is ~100 RTP packets in a burst; the default buffer can drop some.
      socket.setRecvBufferSize(receiveBuffer);
    } catch (err) {
      this.#log.debug({ err }, 'could not enlarge the RTP receive buffer');
    }
    return socket;
  }

  #admitSource(source: RtpSource, port: number): boolean {
    const now = Date.now();
    const pid = this.#run && !this.#run.ended ? this.#run.child.pid : undefined;
    if (pid === undefined || source.refused.has(port) || now - source.lastCheckAt < sourceCheckMinGapMs) return false;
    source.lastCheckAt = now;
    let owned: boolean;
    try {
      owned = udpPortOwnedBy(pid, port);
    } catch (err) {
      this.#log.error({ err: errorMessage(err), port }, 'cannot check who sends the live RTP (/proc unreadable): packets refused');
      owned = false;
    }
    if (owned) {
      source.port = port;
      return true;
    }
    source.refused.add(port);
    this.#log.warn({ port, workerPid: pid }, 'live RTP from a process other than the capture worker: refused');
    return false;
  }

  /** Asks the encoder for an IDR (viewer connect, PLI). Bursts collapse into one per keyframeMinIntervalMs. */
  requestKeyframe(): void {
    if (this.#keyframeTimer) return;
    const wait = this.#lastKeyframeAt + this.#opts.keyframeMinIntervalMs - Date.now();
    if (wait <= 0) {
      this.#sendKeyframe();
      return;
    }
    this.#keyframeTimer = setTimeout(() => {
      this.#keyframeTimer = undefined;
      this.#sendKeyframe();
    }, wait);
  }

  setLive(open: boolean): void {
    if (this.#live === open) return;
    this.#live = open;
    this.#send({ type: 'live', open });
    if (open) this.requestKeyframe();
    this.#emitState();
  }

  /** EOS through the pipeline so the open segment is finalised; SIGKILL if that takes longer than stopTimeoutMs. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    if (this.#stallTimer) clearInterval(this.#stallTimer);
    if (this.#keyframeTimer) clearTimeout(this.#keyframeTimer);
    this.#restartTimer = this.#stallTimer = this.#keyframeTimer = undefined;
    const run = this.#run;
    if (run && !run.ended) {
      const exited = new Promise<void>((resolve) => run.child.once('exit', () => resolve()));
      this.#send({ type: 'stop' });
      const timer = setTimeout(() => {
        this.#log.warn({ pid: run.child.pid }, 'capture worker did not stop in time; killing it');
        run.child.kill('SIGKILL');
      }, this.#opts.stopTimeoutMs);
      await exited;
      clearTimeout(timer);
    }
    this.#socket?.close();
    this.#audioSocket?.close();
    this.#socket = this.#audioSocket = undefined;
    this.#status = 'stopped';
    this.#emitState();
  }

  #sendKeyframe(): void {
    this.#lastKeyframeAt = Date.now();
    this.#send({ type: 'keyframe' });
  }

  #send(message: ParentMessage): void {
    const child = this.#run?.child;
    if (!child || this.#run?.ended || !child.connected) return;
    child.send(message, (err) => {
      if (err) this.#log.debug({ err, type: message.type }, 'capture worker message not delivered');
    });
  }

  #launch(status: CaptureStatus): void {
    if (this.#stopping) return;
    const settings: CaptureSettings = {
      ...this.#opts.settings,
      segmentDir: this.#opts.segmentDir,
      segmentPrefix: `${this.#opts.segmentPrefix}-${Date.now()}`,
      rtpPort: (this.#socket?.address().port ?? 0) as number,
      rtpAudioPort: (this.#audioSocket?.address().port ?? 0) as number,
      liveBitrateKbps: this.#liveBitrateKbps,
    };
    const launcher = this.#opts.settings.workerLauncher;
    const memory = workerMemoryFlags();
    const argv = [...launcher, process.execPath, ...memory.nodeArgs, this.#opts.workerPath];
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        // Each pollBus and appsink pull parks a pool thread for good; 4 would leave too few for fs/dns.
        env: { ...process.env, UV_THREADPOOL_SIZE: '8', ...memory.env },
      });
    } catch (err) {
      // spawn throws synchronously only for bad arguments; treat like a failed start.
      this.#fault(`cannot start the capture worker: ${errorMessage(err)}`);
      return;
    }
    const now = Date.now();
    const run: WorkerRun = { child, fault: undefined, ended: false, sawSegment: false, lastFrames: 0, launchedAt: now, ready: false, slowStartLogged: false, lastProgressAt: now };
    this.#run = run;
    for (const source of this.#rtpSources) {
      source.port = -1;
      source.lastCheckAt = -Infinity;
      source.refused.clear();
    }
    this.#frames = 0;
    this.#liveBitrateError = undefined;
    this.#status = status === 'starting' || this.#status !== 'failed' ? status : 'failed';
    this.#log.info({ pid: child.pid, preset: settings.preset, launcher }, 'capture worker starting');
    child.stdout?.setEncoding('utf8').on('data', (d: string) => this.#log.debug({ pid: child.pid, out: d.trimEnd() }, 'capture worker output'));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => this.#log.warn({ pid: child.pid, out: d.trimEnd() }, 'capture worker stderr'));
    child.on('message', (m) => {
      if (isWorkerMessage(m)) this.#onMessage(run, m);
    });
    child.on('error', (err) => {
      // Launcher missing (ENOENT) and the like: no exit event may follow.
      run.fault ??= `capture worker failed: ${err.message}`;
      this.#ended(run, null, null);
    });
    child.on('exit', (code, signal) => this.#ended(run, code, signal));
    this.#emitState();
    this.#send({ type: 'start', settings, live: this.#live, statsIntervalMs: this.#opts.statsIntervalMs, startTimeoutMs: this.#opts.startTimeoutMs });
  }

  #onMessage(run: WorkerRun, m: WorkerMessage): void {
    if (run !== this.#run) return;
    switch (m.type) {
      case 'ready':
        if (!run.ready) {
          run.ready = true;
          run.lastProgressAt = Date.now();
        }
        if (this.#status !== 'failed' || run.sawSegment) this.#status = 'running';
        this.#log.info({ pid: m.pid }, 'capture pipeline running');
        this.#emitState();
        return;
      case 'segment-opened':
        this.emit('segment-opened', { file: m.file, startedAt: m.startedAt });
        return;
      case 'segment-closed': {
        const { type: _type, ...info } = m;
        if (!run.sawSegment) {
          run.sawSegment = true;
          if (this.#consecutiveFaults > 0 || this.#status !== 'running') {
            this.#consecutiveFaults = 0;
            this.#status = 'running';
            this.#emitState();
          }
        }
        this.emit('segment', info);
        return;
      }
      case 'stats':
        if (m.frames > run.lastFrames) {
          run.lastFrames = m.frames;
          run.lastProgressAt = Date.now();
        }
        this.#frames = m.frames;
        return;
      case 'error':
        run.fault ??= m.message;
        this.#log.error({ pid: run.child.pid, message: m.message, debug: m.debug }, 'capture pipeline error');
        return;
      case 'live-bitrate-set':
        this.#log.info({ kbps: m.kbps, device: m.device, appliedBps: m.appliedBps }, 'live bitrate set on the V4L2 encoder');
        if (this.#liveBitrateError !== undefined) {
          this.#log.info({ kbps: m.kbps }, 'the live bitrate can be set on the encoder again');
          this.#liveBitrateError = undefined;
          this.#emitState();
        }
        return;
      case 'live-bitrate-failed':
        // Logged once when it starts failing (a driver refusing every change would otherwise log
        // once a second); `state` shows the latest reason, and a success is logged as the end of it.
        if (this.#liveBitrateError === undefined) {
          this.#log.warn({ kbps: m.kbps, reason: m.message }, 'cannot set the live bitrate on the encoder; the live view keeps its last rate');
        }
        if (this.#liveBitrateError !== m.message) {
          this.#liveBitrateError = m.message;
          this.#emitState();
        }
        return;
      case 'eos':
        return;
    }
  }

  #checkStall(): void {
    const run = this.#run;
    if (!run || run.ended || this.#stopping) return;
    const stallMs = this.#opts.settings.stallTimeoutS * 1000;
    if (!run.ready) {
      // Start-up is not a stall: a slow board (node and GStreamer loading, a first registry scan,
      // qemu) may take longer than stallTimeoutS to start, and killing it then would restart a
      // healthy worker for ever. The worker bounds its pipeline's start itself (startTimeoutMs, with
      // the cause named); this bound is for a worker that cannot even say so.
      const startingMs = Date.now() - run.launchedAt;
      if (startingMs >= stallMs && !run.slowStartLogged) {
        run.slowStartLogged = true;
        this.#log.warn({ pid: run.child.pid, startingMs }, 'capture worker slow to start; the stall timeout applies once it runs');
      }
      if (startingMs < this.#opts.startTimeoutMs + stallMs) return;
      run.fault ??= `capture worker did not start: not running ${Math.round(startingMs / 1000)} s after its launch`;
      this.#log.warn({ pid: run.child.pid, startingMs }, 'capture worker did not start; killing it');
      run.child.kill('SIGKILL');
      return;
    }
    const silentMs = Date.now() - run.lastProgressAt;
    if (silentMs < stallMs) return;
    run.fault ??= `capture stalled: no frames for ${Math.round(silentMs / 1000)} s`;
    this.#log.warn({ pid: run.child.pid, silentMs }, 'capture stalled; killing the worker');
    run.child.kill('SIGKILL');
  }

  #ended(run: WorkerRun, code: number | null, signal: NodeJS.Signals | null): void {
    if (run.ended) return;
    run.ended = true;
    if (run !== this.#run || this.#stopping) return;
    const reason = run.fault ?? `capture worker exited (${signal ? `signal ${signal}` : `code ${code}`})`;
    this.#fault(reason);
  }

  #fault(reason: string): void {
    this.#consecutiveFaults++;
    this.#lastFault = { reason, at: new Date().toISOString() };
    const { restartMinDelayMs, restartMaxDelayMs } = this.#opts.settings;
    const restartInMs = Math.min(restartMaxDelayMs, restartMinDelayMs * 2 ** Math.min(30, this.#consecutiveFaults - 1));
    this.#status = this.#consecutiveFaults >= this.#opts.failedAfterFaults ? 'failed' : 'restarting';
    this.#log.warn({ reason, restartInMs, consecutiveFaults: this.#consecutiveFaults }, 'capture fault');
    this.emit('fault', { reason, restartInMs });
    this.#emitState();
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      this.#restarts++;
      this.#launch(this.#status === 'failed' ? 'failed' : 'restarting');
    }, restartInMs);
  }

  #emitState(): void {
    this.emit('state', this.health());
  }
}
