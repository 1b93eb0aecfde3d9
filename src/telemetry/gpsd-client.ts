import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Logger } from 'pino';

export type FixMode = 'no-fix' | '2d' | '3d';

export interface GpsFix {
  mode: FixMode;
  /** TPV.time (ISO 8601) exactly as gpsd reports it; may be null before the receiver knows the time. */
  gpsTime: string | null;
  lat: number | null;
  lon: number | null;
  altitudeM: number | null;
  horizontalAccuracyM: number | null;
  speedMps: number | null;
  courseDeg: number | null;
  device: string | null;
}

export interface GpsdClientOptions {
  host: string;
  port: number;
  logger: Logger;
  reconnectMinDelayMs?: number;
  reconnectMaxDelayMs?: number;
}

export type GpsdClientEvents = {
  fix: [GpsFix];
  connected: [];
  disconnected: [reason: string];
};

const WATCH_COMMAND = '?WATCH={"enable":true,"json":true}\n';

// gpsd's largest reports (SKY with every satellite of four constellations) are a few KiB;
// anything far beyond that is a broken or hostile peer, and must not grow our memory.
const MAX_LINE_LENGTH = 64 * 1024;

// A gpsd on another host that silently drops SYNs would otherwise hold a connect for minutes.
const CONNECT_TIMEOUT_MS = 5_000;

const DEFAULT_RECONNECT_MIN_DELAY_MS = 500;
const DEFAULT_RECONNECT_MAX_DELAY_MS = 30_000;

export class GpsdClient extends EventEmitter<GpsdClientEvents> {
  readonly #host: string;
  readonly #port: number;
  readonly #logger: Logger;
  readonly #reconnectMinDelayMs: number;
  readonly #reconnectMaxDelayMs: number;

  #socket: net.Socket | null = null;
  #reconnectTimer: NodeJS.Timeout | null = null;
  #started = false;
  #stopped = false;
  #connected = false;
  #lastFix: GpsFix | null = null;
  #reconnects = 0;
  // Consecutive attempts that did not reach a talking gpsd; drives the back-off. It is
  // reset only once a real gpsd answered, so a port that accepts and immediately drops
  // connections is still retried at a slowing pace.
  #failedAttempts = 0;
  #talkedToGpsd = false;
  #partialLine = '';
  #discardingOversizedLine = false;

  constructor(options: GpsdClientOptions) {
    super();
    this.#host = options.host;
    this.#port = options.port;
    this.#logger = options.logger;
    this.#reconnectMinDelayMs = options.reconnectMinDelayMs ?? DEFAULT_RECONNECT_MIN_DELAY_MS;
    this.#reconnectMaxDelayMs = Math.max(
      this.#reconnectMinDelayMs,
      options.reconnectMaxDelayMs ?? DEFAULT_RECONNECT_MAX_DELAY_MS,
    );
  }

  get connected(): boolean {
    return this.#connected;
  }

  get lastFix(): GpsFix | null {
    return this.#lastFix;
  }

  /** Connection attempts made after the first one, i.e. how often we had to retry. */
  get reconnects(): number {
    return this.#reconnects;
  }

  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#reconnectTimer) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = null;
    }
    const socket = this.#socket;
    if (!socket || socket.closed) return;
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.destroy();
    await closed;
  }

  #connect(): void {
    this.#partialLine = '';
    this.#discardingOversizedLine = false;
    const socket = net.createConnection({ host: this.#host, port: this.#port });
    this.#socket = socket;
    let closeReason = 'connection closed by gpsd';

    socket.setEncoding('utf8');
    socket.setTimeout(CONNECT_TIMEOUT_MS);
    socket.on('timeout', () => {
      closeReason = `connect timed out after ${CONNECT_TIMEOUT_MS} ms`;
      socket.destroy();
    });
    socket.on('connect', () => {
      socket.setTimeout(0);
      socket.setNoDelay(true);
      this.#connected = true;
      this.#logger.info({ host: this.#host, port: this.#port }, 'connected to gpsd');
      socket.write(WATCH_COMMAND);
      this.emit('connected');
    });
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      closeReason = error.code ?? error.message;
    });
    socket.on('close', () => {
      if (this.#socket === socket) this.#socket = null;
      if (this.#stopped) closeReason = 'stopped';
      const wasConnected = this.#connected;
      this.#connected = false;
      if (wasConnected) {
        this.#logger[this.#stopped ? 'info' : 'warn']({ reason: closeReason }, 'disconnected from gpsd');
        this.emit('disconnected', closeReason);
      } else if (this.#failedAttempts === 0) {
        // Once per streak: an operator must see that gpsd is missing, without a line per retry.
        this.#logger.warn({ reason: closeReason, address: `${this.#host}:${this.#port}` }, 'cannot connect to gpsd; retrying with back-off');
      } else {
        this.#logger.debug({ reason: closeReason }, 'could not connect to gpsd');
      }
      if (!this.#talkedToGpsd) this.#failedAttempts++;
      this.#talkedToGpsd = false;
      this.#scheduleReconnect();
    });
  }

  #scheduleReconnect(): void {
    if (this.#stopped || this.#reconnectTimer) return;
    const exponent = Math.min(Math.max(this.#failedAttempts - 1, 0), 30);
    const cappedDelay = Math.min(this.#reconnectMaxDelayMs, this.#reconnectMinDelayMs * 2 ** exponent);
    // Half fixed, half random: keeps a floor under the delay while spreading out
    // clients that all lost the same gpsd at the same moment.
    const delayMs = Math.round(cappedDelay / 2 + Math.random() * (cappedDelay / 2));
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#stopped) return;
      this.#reconnects++;
      this.#connect();
    }, delayMs);
    this.#reconnectTimer.unref();
  }

  #onData(chunk: string): void {
    let rest = chunk;
    for (;;) {
      const newline = rest.indexOf('\n');
      if (newline === -1) break;
      const tail = rest.slice(0, newline);
      rest = rest.slice(newline + 1);
      if (this.#discardingOversizedLine) {
        this.#discardingOversizedLine = false;
        continue;
      }
      const line = this.#partialLine + tail;
      this.#partialLine = '';
      if (line.length > MAX_LINE_LENGTH) {
        this.#logger.warn({ length: line.length }, 'discarding oversized line from gpsd');
        continue;
      }
      this.#onLine(line);
    }
    if (this.#discardingOversizedLine) return;
    this.#partialLine += rest;
    if (this.#partialLine.length > MAX_LINE_LENGTH) {
      this.#logger.warn({ length: this.#partialLine.length }, 'discarding oversized line from gpsd');
      this.#partialLine = '';
      this.#discardingOversizedLine = true;
    }
  }

  #onLine(rawLine: string): void {
    const line = rawLine.trim();
    if (line === '') return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch {
      this.#logger.debug({ line: line.slice(0, 200) }, 'skipping line from gpsd that is not JSON');
      return;
    }
    if (!isRecord(message) || typeof message.class !== 'string') {
      this.#logger.debug({ line: line.slice(0, 200) }, 'skipping JSON from gpsd without a class');
      return;
    }
    switch (message.class) {
      case 'VERSION':
        this.#talkedToGpsd = true;
        this.#failedAttempts = 0;
        this.#logger.info({ release: message.release, protoMajor: message.proto_major }, 'gpsd version');
        break;
      case 'TPV': {
        this.#talkedToGpsd = true;
        const fix = fixFromTpv(message);
        this.#lastFix = fix;
        this.emit('fix', fix);
        break;
      }
      case 'ERROR':
        this.#logger.warn({ message: message.message }, 'gpsd reported an error');
        break;
      default:
        break;
    }
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function finiteOrNull(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function stringOrNull(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function fixModeOf(mode: unknown): FixMode {
  if (mode === 2) return '2d';
  if (mode === 3) return '3d';
  return 'no-fix';
}

function fixFromTpv(tpv: Record<string, unknown>): GpsFix {
  const mode = fixModeOf(tpv.mode);
  const gpsTime = stringOrNull(tpv.time);
  const device = stringOrNull(tpv.device);
  const lat = finiteOrNull(tpv.lat);
  const lon = finiteOrNull(tpv.lon);
  // A 2d/3d TPV without a usable position is reported as no-fix: consumers treat any
  // fix mode as "we know where the camera is".
  const positionValid =
    mode !== 'no-fix' && lat !== null && lon !== null && Math.abs(lat) <= 90 && Math.abs(lon) <= 180;
  // gpsd keeps stale position, speed and error fields in a TPV after the fix is lost;
  // reporting any of them would be inventing where the officer is.
  if (!positionValid) {
    return {
      mode: 'no-fix',
      gpsTime,
      lat: null,
      lon: null,
      altitudeM: null,
      horizontalAccuracyM: null,
      speedMps: null,
      courseDeg: null,
      device,
    };
  }
  return {
    mode,
    gpsTime,
    lat,
    lon,
    altitudeM: mode === '3d' ? finiteOrNull(tpv.altHAE) ?? finiteOrNull(tpv.alt) ?? finiteOrNull(tpv.altMSL) : null,
    horizontalAccuracyM: horizontalAccuracyOf(tpv),
    speedMps: finiteOrNull(tpv.speed),
    courseDeg: finiteOrNull(tpv.track),
    device,
  };
}

function horizontalAccuracyOf(tpv: Record<string, unknown>): number | null {
  const eph = finiteOrNull(tpv.eph);
  if (eph !== null) return eph;
  const axisErrors = [finiteOrNull(tpv.epx), finiteOrNull(tpv.epy)].filter((e): e is number => e !== null);
  return axisErrors.length > 0 ? Math.max(...axisErrors) : null;
}
