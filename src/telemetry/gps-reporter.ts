import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { FixMode, GpsFix, GpsdClientEvents } from './gpsd-client.ts';

export interface GpsReport {
  gpsd: 'connected' | 'disconnected';
  fix: FixMode;
  gpsTime: string | null;
  lat: number | null;
  lon: number | null;
  altitudeM: number | null;
  accuracyM: number | null;
  speedMps: number | null;
  courseDeg: number | null;
}

/** What the reporter needs from a GpsdClient; tests pass a plain EventEmitter. */
export type GpsFixSource = Pick<EventEmitter<GpsdClientEvents>, 'on' | 'off'> & {
  readonly connected: boolean;
  readonly lastFix: GpsFix | null;
};

export interface GpsReporterOptions {
  source: GpsFixSource;
  publish: (report: GpsReport) => void;
  recordingIntervalS: number;
  idleIntervalS: number;
  /**
   * A fix not refreshed for this long is reported as no-fix. gpsd sends a TPV every
   * epoch while a receiver is attached; silence means the receiver is gone, and its
   * last position is no longer where the camera is. Default 10 s.
   */
  fixStaleAfterS?: number;
  logger: Logger;
}

const DEFAULT_FIX_STALE_AFTER_S = 10;

export class GpsReporter {
  readonly #source: GpsFixSource;
  readonly #publish: (report: GpsReport) => void;
  #recordingIntervalMs: number;
  #idleIntervalMs: number;
  /** While an emergency is raised (officer.emergencyGpsInterval): the interval whatever else holds. */
  #emergencyIntervalMs: number | null = null;
  readonly #fixStaleAfterMs: number;
  readonly #logger: Logger;

  #running = false;
  #recording = false;
  #gpsdConnected = false;
  #latestFix: GpsFix | null = null;
  #latestFixAtMs = 0;
  #last: GpsReport | null = null;
  #timer: NodeJS.Timeout | null = null;

  readonly #onFix = (fix: GpsFix): void => {
    const hadFix = this.#currentFix() !== null;
    this.#latestFix = fix;
    this.#latestFixAtMs = performance.now();
    const hasFix = this.#currentFix() !== null;
    if (hadFix !== hasFix) this.#publishNow(hasFix ? 'fix acquired' : 'fix lost');
  };

  readonly #onConnected = (): void => {
    this.#gpsdConnected = true;
    this.#latestFix = null;
    this.#publishNow('gpsd connected');
  };

  readonly #onDisconnected = (): void => {
    this.#gpsdConnected = false;
    this.#latestFix = null;
    this.#publishNow('gpsd disconnected');
  };

  constructor(options: GpsReporterOptions) {
    this.#source = options.source;
    this.#publish = options.publish;
    this.#recordingIntervalMs = secondsToPositiveMs(options.recordingIntervalS, 'recordingIntervalS');
    this.#idleIntervalMs = secondsToPositiveMs(options.idleIntervalS, 'idleIntervalS');
    this.#fixStaleAfterMs = secondsToPositiveMs(
      options.fixStaleAfterS ?? DEFAULT_FIX_STALE_AFTER_S,
      'fixStaleAfterS',
    );
    this.#logger = options.logger;
  }

  get last(): GpsReport | null {
    return this.#last;
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#gpsdConnected = this.#source.connected;
    this.#latestFix = this.#gpsdConnected ? this.#source.lastFix : null;
    // lastFix carries no receive time; treat it as fresh so start() does not hide a
    // position gpsd reported moments ago. It goes stale like any other fix.
    this.#latestFixAtMs = performance.now();
    this.#source.on('fix', this.#onFix);
    this.#source.on('connected', this.#onConnected);
    this.#source.on('disconnected', this.#onDisconnected);
    this.#publishNow('start');
  }

  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    this.#source.off('fix', this.#onFix);
    this.#source.off('connected', this.#onConnected);
    this.#source.off('disconnected', this.#onDisconnected);
    this.#clearTimer();
  }

  /** New cadences (a live config.apply): a report now, then the new interval from it. */
  setIntervals(recordingIntervalS: number, idleIntervalS: number): void {
    this.#recordingIntervalMs = secondsToPositiveMs(recordingIntervalS, 'recordingIntervalS');
    this.#idleIntervalMs = secondsToPositiveMs(idleIntervalS, 'idleIntervalS');
    if (this.#running) this.#publishNow('intervals changed');
  }

  /** An emergency raised (seconds) or cleared (null): a report now, then at that interval until cleared. */
  setEmergencyInterval(seconds: number | null): void {
    this.#emergencyIntervalMs = seconds === null ? null : secondsToPositiveMs(seconds, 'emergencyIntervalS');
    if (this.#running) this.#publishNow(seconds === null ? 'emergency cleared' : 'emergency raised');
  }

  setRecording(recording: boolean): void {
    if (recording === this.#recording) return;
    this.#recording = recording;
    if (this.#running) this.#publishNow(recording ? 'recording started' : 'recording stopped');
  }

  /** The latest TPV, whatever its mode, unless gpsd is gone or the receiver fell silent. */
  #freshFix(): GpsFix | null {
    const fix = this.#latestFix;
    if (!this.#gpsdConnected || fix === null) return null;
    if (performance.now() - this.#latestFixAtMs > this.#fixStaleAfterMs) return null;
    return fix;
  }

  #currentFix(): GpsFix | null {
    const fix = this.#freshFix();
    return fix !== null && fix.mode !== 'no-fix' ? fix : null;
  }

  #publishNow(trigger: string): void {
    if (!this.#running) return;
    const report = this.#buildReport();
    this.#last = report;
    try {
      this.#publish(report);
    } catch (error) {
      // A failed publish must not stop the cadence; the next report carries the state anyway.
      this.#logger.error({ err: error, trigger }, 'publishing GPS report failed');
    }
    this.#logger.debug({ trigger, fix: report.fix, gpsd: report.gpsd }, 'published GPS report');
    this.#scheduleNext();
  }

  // Re-arming after every publish keeps the interval measured from the last report, so
  // an event-driven publish is not followed by a redundant periodic one moments later.
  #scheduleNext(): void {
    this.#clearTimer();
    const intervalMs = this.#emergencyIntervalMs ?? (this.#recording ? this.#recordingIntervalMs : this.#idleIntervalMs);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#publishNow('interval');
    }, intervalMs);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
  }

  #buildReport(): GpsReport {
    const gpsd = this.#gpsdConnected ? 'connected' : 'disconnected';
    const fix = this.#freshFix();
    if (fix === null || fix.mode === 'no-fix') {
      return {
        gpsd,
        fix: 'no-fix',
        // The receiver's clock is still worth reporting without a position.
        gpsTime: fix?.gpsTime ?? null,
        lat: null,
        lon: null,
        altitudeM: null,
        accuracyM: null,
        speedMps: null,
        courseDeg: null,
      };
    }
    return {
      gpsd,
      fix: fix.mode,
      gpsTime: fix.gpsTime,
      lat: fix.lat,
      lon: fix.lon,
      altitudeM: fix.altitudeM,
      accuracyM: fix.horizontalAccuracyM,
      speedMps: fix.speedMps,
      courseDeg: fix.courseDeg,
    };
  }
}

function secondsToPositiveMs(seconds: number, name: string): number {
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new RangeError(`${name} must be a positive number of seconds, got ${seconds}`);
  }
  return seconds * 1000;
}
