// Bandwidth adaptation of the live view: what each viewer's link carries, turned into the bitrate
// of the live encoder. One encoder serves every viewer, so it runs at the lowest of their targets.
//
// Why not werift's estimate alone: SenderBandwidthEstimator reports min(send rate, receive rate)
// of the packets that arrived, so it can never say the link has room for more than is being sent,
// and it leaves lost packets out of both rates. The controller here is loss-based in the manner
// of GCC's loss controller (RFC draft-ietf-rmcat-gcc §6): it probes upward while loss is low, holds
// through moderate loss (random 4G loss must not collapse the picture), and on heavy loss drops to
// just under what was delivered. werift's transport-wide-cc estimate (receive rate falling behind
// send rate: a queue filling) brings it down before the queue overflows.

export interface BitrateLimits {
  minKbps: number;
  maxKbps: number;
  startKbps: number;
}

/** What one viewer's link did over the last interval. */
export interface LinkSample {
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
export class LinkBitrate {
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

  update(sample: LinkSample, now: number): number {
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
 * When the encoder's bitrate changes: a decrease at once (the link is being overrun), an increase
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
