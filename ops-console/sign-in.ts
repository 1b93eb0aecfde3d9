// The console's sign-in guard. Password guessing is limited per address and per user, and a user
// with too many wrong passwords is locked out for a while; a refused attempt is answered 429 (with
// Retry-After) BEFORE any hashing, and at most a few hashes run at once. The hashing itself is
// asynchronous scrypt (users.ts), in libuv's thread pool: a burst of sign-ins no longer stalls
// every other request, as the synchronous one did. rate-limiter-flexible keeps the counters (a
// well-kept library, in memory: one console process; a force running several behind a load
// balancer gives it a shared store, which the library supports).
//
// A lockout per user can be used to lock a colleague out on purpose; that is the usual price of
// stopping guessing, and it is logged. Behind the force's identity provider this whole file goes
// (ops-console/README.md).
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

export interface SignInLimits {
  /** Attempts one address may make per window (every attempt counts). */
  perAddressAttempts: number;
  perAddressWindowS: number;
  /** Attempts for one user name that do not sign in, within the window, before it is locked. */
  perUserFailures: number;
  perUserWindowS: number;
  /** How long a locked user name stays locked. */
  lockoutS: number;
  /** Password hashes running at once; more attempts meanwhile are refused (429). */
  concurrentHashes: number;
}

export const defaultSignInLimits: SignInLimits = {
  perAddressAttempts: 20,
  perAddressWindowS: 60,
  perUserFailures: 5,
  perUserWindowS: 15 * 60,
  lockoutS: 15 * 60,
  concurrentHashes: 4,
};

export class SignInRefused extends Error {
  readonly retryAfterS: number;
  constructor(message: string, retryAfterS: number) {
    super(message);
    this.retryAfterS = Math.max(1, Math.ceil(retryAfterS));
  }
}

const minutes = (s: number) => (s >= 120 ? `${Math.ceil(s / 60)} min` : `${Math.ceil(s)} s`);

export class SignInGuard {
  readonly #limits: SignInLimits;
  readonly #byAddress: RateLimiterMemory;
  readonly #byUser: RateLimiterMemory;
  readonly #log: (line: string) => void;
  #hashing = 0;
  /** Names locked, until when (ms): to log each lock once. Bounded by the limiter's own expiry. */
  readonly #locked = new Map<string, number>();

  constructor(limits: Partial<SignInLimits> = {}, log: (line: string) => void = () => {}) {
    this.#limits = { ...defaultSignInLimits, ...limits };
    for (const [k, v] of Object.entries(this.#limits)) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`sign-in limit ${k} must be a whole number from 1 (got ${v})`);
    }
    this.#byAddress = new RateLimiterMemory({ points: this.#limits.perAddressAttempts, duration: this.#limits.perAddressWindowS });
    this.#byUser = new RateLimiterMemory({ points: this.#limits.perUserFailures, duration: this.#limits.perUserWindowS, blockDuration: this.#limits.lockoutS });
    this.#log = log;
  }

  /**
   * Runs `check` (the password hash) unless this attempt is refused; throws SignInRefused (429)
   * without calling it when the user is locked, the address has used its attempts, or too many
   * hashes are running. Every attempt counts towards the user's lockout; signing in clears it.
   */
  async attempt<T>(address: string, user: string, check: () => Promise<T | undefined>): Promise<T | undefined> {
    const userKey = user.slice(0, 256);
    const lockedFor = (ms: number) => new SignInRefused(`too many sign-in attempts: ${userKey} is locked for ${minutes(ms / 1000)}`, ms / 1000);
    const before = await this.#byUser.get(userKey);
    if (before && before.consumedPoints > this.#limits.perUserFailures) throw lockedFor(before.msBeforeNext);
    try {
      await this.#byAddress.consume(address);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      throw new SignInRefused(`too many sign-in attempts from this address: try again in ${minutes(err.msBeforeNext / 1000)}`, err.msBeforeNext / 1000);
    }
    // Every attempt on a name counts (a success clears it), so a burst locks it before it is hashed.
    try {
      await this.#byUser.consume(userKey);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      // The first refused attempt starts the lock; later ones are refused by the check above.
      if (!this.#locked.has(userKey) || this.#locked.get(userKey)! < Date.now()) {
        if (this.#locked.size >= 10_000) for (const [k, until] of this.#locked) if (until < Date.now()) this.#locked.delete(k);
        this.#locked.set(userKey, Date.now() + err.msBeforeNext);
        this.#log(`sign-in locked for ${JSON.stringify(userKey).slice(0, 80)} for ${minutes(err.msBeforeNext / 1000)} after ${this.#limits.perUserFailures} attempts that did not sign in (the last from ${address})`);
      }
      throw lockedFor(err.msBeforeNext);
    }
    if (this.#hashing >= this.#limits.concurrentHashes) throw new SignInRefused('too many sign-in attempts at once: try again in a moment', 1);
    this.#hashing++;
    let result: T | undefined;
    try {
      result = await check();
    } finally {
      this.#hashing--;
    }
    if (result !== undefined) {
      await this.#byUser.delete(userKey);
      this.#locked.delete(userKey);
    }
    return result;
  }
}
