// How many trigger and fall events a backend passes on to the agent: each starts a recording, writes
// an audit entry and may raise an alert in front of supervisors, so a faulty sensor, a chattering
// input line or a tampered MCU must not turn into thousands of them. A token bucket per trigger
// source (one noisy source does not starve the others), one over all triggers (cycling through the
// 255 source ids gets no further), and one for falls. Honest use never comes near these figures.
//
// Hand-written rather than rate-limiter-flexible (which the console uses): that library is
// promise-based and reads the wall clock, while the serial backend must answer each frame
// synchronously in the order it came, and tests must be able to run the budget on an injected clock.

/** Per trigger source: 5 at once, then one a second. */
export const TRIGGER_PER_SOURCE = { burst: 5, refillMs: 1000 } as const;
/** All trigger sources together: 20 at once, then four a second. */
export const TRIGGER_ALL_SOURCES = { burst: 20, refillMs: 250 } as const;
/** Falls: 3 at once, then one every 2 s. */
export const FALLS = { burst: 3, refillMs: 2000 } as const;

export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;
  private readonly refillMs: number;

  constructor(limit: { burst: number; refillMs: number }, now: number) {
    this.burst = limit.burst;
    this.refillMs = limit.refillMs;
    this.tokens = limit.burst;
    this.last = now;
  }

  /** True if a token is there now (without taking it). */
  has(now: number): boolean {
    this.refill(now);
    return this.tokens >= 1;
  }

  take(now: number): boolean {
    if (!this.has(now)) return false;
    this.tokens -= 1;
    return true;
  }

  private refill(now: number): void {
    // A clock that steps back (NTP) must not drain the bucket; it only stops refilling until it catches up.
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + (now - this.last) / this.refillMs);
      this.last = now;
    }
  }
}

/** The budget of one backend: `allowTrigger(source)` / `allowFall()` take a token when they say yes. */
export class InputBudget {
  private readonly perSource = new Map<string, TokenBucket>();
  private readonly allSources: TokenBucket;
  private readonly falls: TokenBucket;
  private readonly now: () => number;

  constructor(now: () => number = Date.now) {
    this.now = now;
    this.allSources = new TokenBucket(TRIGGER_ALL_SOURCES, now());
    this.falls = new TokenBucket(FALLS, now());
  }

  allowTrigger(source: string): boolean {
    const t = this.now();
    let bucket = this.perSource.get(source);
    if (bucket === undefined) {
      // Bounded: the serial protocol has 255 ids, the gpio backend only its configured lines.
      bucket = new TokenBucket(TRIGGER_PER_SOURCE, t);
      this.perSource.set(source, bucket);
    }
    if (!bucket.has(t) || !this.allSources.has(t)) return false;
    bucket.take(t);
    this.allSources.take(t);
    return true;
  }

  allowFall(): boolean {
    return this.falls.take(this.now());
  }
}
