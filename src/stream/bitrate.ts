// Bandwidth adaptation of the live view: what each viewer's network path carries, turned into the bitrate
// of the live encoder. One encoder serves every viewer, so it runs at the lowest of their targets.
//
// Why not werift's estimate alone: SenderBandwidthEstimator reports min(send rate, receive rate)
// of the packets that arrived, so it can never say the link has room for more than is being sent,
// and it leaves lost packets out of both rates. The controller here is loss-based in the manner
// of GCC's loss controller (RFC draft-ietf-rmcat-gcc §6): it probes upward while loss is low, holds
// through moderate loss (random 4G loss must not collapse the picture), and on heavy loss drops to
// just under what was delivered. werift's transport-wide-cc estimate (receive rate falling behind
// send rate: a queue filling) brings it down before the queue overflows. LiveBitrateLoop, at the
// end, is the loop that samples the connected viewers and sets the encoder.
import type { Logger } from 'pino';

export interface BitrateLimits {
  minKbps: number;
  maxKbps: number;
  startKbps: number;
}

/** What one viewer's network path did over the last interval. */
export interface PathSample {
  /** Video bits handed to the transport over the interval, per second. */
  sendKbps: number;
  /** Fraction of packets the viewer reported lost in its last receiver report (0..1). */
  lossFraction: number | undefined;
  /** werift's transport-wide-cc estimate over the interval, if any feedback came. */
  deliveredKbps: number | undefined;
  /** Length of the interval. */
  intervalMs: number;
}

// Loss below this: room to grow; above heavyLoss: the link is overrun. Between: hold.
const lowLoss = 0.02;
const heavyLoss = 0.1;
// Growth per second while probing; slower just below where the link last gave way.
const probeGrowthPerS = 0.1;
const cautiousGrowthPerS = 0.01;
// How long the rate at which the link last gave way is remembered.
const congestionMemoryMs = 10_000;
// Receive rate this far behind the send rate means a queue is building on the path.
const queueingRatio = 0.85;

/** One viewer's target bitrate. */
export class PathBitrate {
  #targetKbps: number;
  #congestedAtKbps = 0;
  #congestedAt = -Infinity;
  readonly #limits: BitrateLimits;

  constructor(limits: BitrateLimits) {
    this.#limits = limits;
    this.#targetKbps = limits.startKbps;
  }

  get targetKbps(): number {
    return this.#targetKbps;
  }

  update(sample: PathSample, now: number): number {
    const { minKbps, maxKbps } = this.#limits;
    const loss = sample.lossFraction ?? 0;
    const dtS = Math.min(sample.intervalMs, 2000) / 1000;
    let target = this.#targetKbps;
    if (sample.sendKbps > 0 && loss > heavyLoss) {
      // What got through, a little under: the queue drains and the picture stops breaking up.
      const delivered = sample.sendKbps * (1 - loss);
      target = Math.min(target, 0.9 * delivered);
      this.#congest(delivered, now);
    } else if (loss < lowLoss && sample.deliveredKbps !== undefined && sample.sendKbps > 0 && sample.deliveredKbps < queueingRatio * sample.sendKbps) {
      // Only while nothing is lost: werift's estimate leaves lost packets out and reads 30-40 %
      // under the send rate at 3 % random loss (measured here), which would drive a lossy but
      // uncongested cell link to the floor. Without loss it is the early sign of a queue.
      target = Math.min(target, 0.9 * sample.deliveredKbps);
      this.#congest(sample.deliveredKbps, now);
    } else if (loss < lowLoss && target < 1.5 * sample.sendKbps + 100) {
      // Grow only a rate the encoder is using: a still scene sends far under its target.
      const nearLastCongestion = now - this.#congestedAt < congestionMemoryMs && target >= 0.9 * this.#congestedAtKbps;
      target *= 1 + (nearLastCongestion ? cautiousGrowthPerS : probeGrowthPerS) * dtS;
    }
    this.#targetKbps = Math.max(minKbps, Math.min(maxKbps, target));
    return this.#targetKbps;
  }

  #congest(atKbps: number, now: number): void {
    this.#congestedAtKbps = atKbps;
    this.#congestedAt = now;
  }
}

/**
 * When the encoder's bitrate changes: a decrease at once (the path is being overrun), an increase
 * only once it is worth it (10 % or more) and at most once a second, so x264 is not reconfigured
 * on every report.
 */
export class EncoderRateHysteresis {
  #appliedKbps: number;
  #lastIncreaseAt = -Infinity;

  constructor(startKbps: number) {
    this.#appliedKbps = startKbps;
  }

  get appliedKbps(): number {
    return this.#appliedKbps;
  }

  /** The bitrate to set now, or undefined to leave the encoder as it is. */
  next(targetKbps: number, now: number): number | undefined {
    const current = this.#appliedKbps;
    const rounded = Math.round(targetKbps);
    if (rounded < current * 0.95) {
      this.#appliedKbps = rounded;
      return rounded;
    }
    if (rounded >= current * 1.1 && now - this.#lastIncreaseAt >= 1000) {
      this.#appliedKbps = rounded;
      this.#lastIncreaseAt = now;
      return rounded;
    }
    return undefined;
  }

  /** A new encoder (first viewer, or the worker restarted) starts from `kbps`. */
  reset(kbps: number): void {
    this.#appliedKbps = Math.round(kbps);
    this.#lastIncreaseAt = -Infinity;
  }
}

// How often the live bitrate is reconsidered.
const adaptIntervalMs = 1000;

/** The capture side the bitrate loop sets (CaptureSupervisor, through StreamManager's LiveSource). */
export interface LiveEncoder {
  /** The live encoder's bitrate (bandwidth adaptation). */
  setLiveBitrate(kbps: number): void;
  /** Whether the live view has an encoder of its own whose bitrate can change. */
  liveBitrateAdjustable(): boolean;
}

/** One connected viewer as the loop samples it. */
export interface SampledViewer {
  readonly sid: string;
  sample(now: number): PathSample;
  readonly bitrate: PathBitrate;
}

/**
 * The bitrate loop: the live encoder follows the worst connected viewer's network path. StreamManager
 * tells it when viewers come and go and calls tick() from its periodic check; the loop samples
 * each connected viewer once a second and sets the encoder through the hysteresis.
 */
export class LiveBitrateLoop {
  readonly #config: { adapt: boolean } & BitrateLimits;
  readonly #encoder: LiveEncoder;
  readonly #rate: EncoderRateHysteresis;
  readonly #log: Pick<Logger, 'info'>;
  #lastAdaptAt = 0;

  constructor(config: { adapt: boolean } & BitrateLimits, encoder: LiveEncoder, log: Pick<Logger, 'info'>) {
    this.#config = config;
    this.#encoder = encoder;
    this.#log = log;
    this.#rate = new EncoderRateHysteresis(config.startKbps);
  }

  /** Whether the live bitrate adapts: configured so, and the live view has an encoder of its own. */
  adaptive(): boolean {
    return this.#config.adapt && this.#encoder.liveBitrateAdjustable();
  }

  /** A new viewer's network path; a second viewer starts from the rate the first has: the encoder is theirs together. */
  newLink(othersWatching: boolean): PathBitrate {
    return new PathBitrate({ ...this.#config, startKbps: othersWatching ? this.#rate.appliedKbps : this.#config.startKbps });
  }

  /** The first viewer connected: the live encoder idled while nobody watched, so a new view starts at the starting rate. */
  firstViewer(): void {
    if (!this.adaptive()) return;
    this.#rate.reset(this.#config.startKbps);
    this.#encoder.setLiveBitrate(this.#config.startKbps);
  }

  /** The bitrate shown in `state`: null while nobody watches or the rate does not adapt. */
  shownKbps(watching: boolean): number | null {
    return watching && this.adaptive() ? this.#rate.appliedKbps : null;
  }

  /**
   * From the periodic check: once a second, samples the viewers connected now (while anyone
   * watches); true when the encoder's bitrate changed.
   */
  tick(now: number, watching: boolean, connected: () => readonly SampledViewer[]): boolean {
    if (now - this.#lastAdaptAt < adaptIntervalMs) return false;
    this.#lastAdaptAt = now;
    if (!watching || !this.adaptive()) return false;
    let lowest = Infinity;
    const links: { sid: string; sendKbps: number; loss: number | undefined; deliveredKbps: number | undefined; targetKbps: number }[] = [];
    for (const v of connected()) {
      const sample = v.sample(now);
      const target = v.bitrate.update(sample, now);
      lowest = Math.min(lowest, target);
      links.push({ sid: v.sid, sendKbps: Math.round(sample.sendKbps), loss: sample.lossFraction, deliveredKbps: sample.deliveredKbps && Math.round(sample.deliveredKbps), targetKbps: Math.round(target) });
    }
    if (lowest === Infinity) return false;
    const next = this.#rate.next(lowest, now);
    if (next === undefined) return false;
    this.#encoder.setLiveBitrate(next);
    this.#log.info({ kbps: next, links }, 'live bitrate');
    return true;
  }
}
