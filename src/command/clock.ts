// The device clock as the token verifier sees it. Whether it is synchronised matters because token
// expiry is only as good as the clock: a camera that booted without network may be hours off.
//
// "Synchronised" is the kernel's own verdict, read with adjtimex(2) in read-only mode (modes = 0),
// the state every NTP daemon maintains: systemd-timesyncd, chrony (also when it takes its time
// from a GNSS receiver through gpsd), ntpd and openntpd all clear STA_UNSYNC once they discipline
// the clock, and the kernel sets it again (and answers TIME_ERROR) when nobody has for a while.
// That is what `timedatectl show -p NTPSynchronized` reports too. The same call gives the
// kernel's estimated and maximum error, which go into the audit of every command decision.
//
// Node has no binding for adjtimex, so it is called through koffi (a maintained FFI library whose
// npm package brings prebuilt binaries for linux-x64 and linux-arm64). Should koffi not load (a
// platform it has no build for), the clock falls back to systemd-timesyncd's flag file, and says
// so in its state.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { errorMessage } from '../errors.ts';

/**
 * The clock every signed token is checked against (commands, ICE answers, every signed-token
 * check): the one clock interface. SystemClock is the device's; tests pass fixed ones.
 */
export interface CommandClock {
  nowMs(): number;
  /** Whether the device clock is known to be right (NTP/GNSS synchronised). */
  synchronised(): boolean;
  /** What the clock knows about its own accuracy, for the audit; absent on test clocks. */
  state?(): ClockState;
}

/** The clock's verdict as it goes into the audit (docs/protocol.md, "Clock"). */
export interface ClockState {
  synchronised: boolean;
  /** Where the verdict came from: the kernel (adjtimex), timesyncd's flag file, or a fixed test value. */
  source: 'adjtimex' | 'timesyncd-flag' | 'fixed';
  /** adjtimex esterror: the kernel's estimated error, microseconds (adjtimex only). */
  estErrorUs?: number;
  /** adjtimex maxerror: the kernel's maximum error, microseconds (adjtimex only). */
  maxErrorUs?: number;
  /** Why, when not synchronised or when read some other way than adjtimex. */
  note?: string;
}

/** What adjtimex(2) returned: its return value (the clock state) and the fields we use. */
export interface TimexReading {
  /** The return value: TIME_OK 0 ... TIME_ERROR 5, or -1 on failure. */
  state: number;
  status: number;
  maxerrorUs: number;
  esterrorUs: number;
}

/** The kernel's clock states (include/uapi/linux/timex.h). */
const TIME_ERROR = 5;
/** status bit: the clock is not synchronised. */
const STA_UNSYNC = 0x0040;

/** The kernel's verdict from one adjtimex reading. */
export function interpretTimex(r: TimexReading): ClockState {
  const errors = { estErrorUs: r.esterrorUs, maxErrorUs: r.maxerrorUs };
  if (r.state === -1) return { synchronised: false, source: 'adjtimex', note: 'adjtimex failed' };
  if (r.state === TIME_ERROR) return { synchronised: false, source: 'adjtimex', ...errors, note: 'kernel clock state TIME_ERROR (no time source disciplines it)' };
  if ((r.status & STA_UNSYNC) !== 0) return { synchronised: false, source: 'adjtimex', ...errors, note: 'kernel status STA_UNSYNC' };
  return { synchronised: true, source: 'adjtimex', ...errors };
}

export type AdjtimexCall = () => TimexReading;

/**
 * adjtimex(2) through koffi, read-only; throws when koffi cannot load. The struct is Linux's
 * `struct timex` (include/uapi/linux/timex.h) with C long fields, so it has the right layout on
 * every Linux ABI koffi supports; only the fields up to `tai` are named.
 */
export function loadAdjtimex(): AdjtimexCall {
  // koffi's type names are global to the process: declare them once.
  return (adjtimexCall ??= bindAdjtimex());
}
let adjtimexCall: AdjtimexCall | undefined;

function bindAdjtimex(): AdjtimexCall {
  const require = createRequire(import.meta.url);
  const koffi = require('koffi') as typeof import('koffi');
  const timex = koffi.struct('bwc_timex', {
    modes: 'uint',
    offset: 'long',
    freq: 'long',
    maxerror: 'long',
    esterror: 'long',
    status: 'int',
    constant: 'long',
    precision: 'long',
    tolerance: 'long',
    time_sec: 'long',
    time_usec: 'long',
    tick: 'long',
    ppsfreq: 'long',
    jitter: 'long',
    shift: 'int',
    stabil: 'long',
    jitcnt: 'long',
    calcnt: 'long',
    errcnt: 'long',
    stbcnt: 'long',
    tai: 'int',
    reserved: koffi.array('int', 11),
  });
  // A raw buffer read at the struct's offsets: marshalling a koffi struct object costs ~50 µs a
  // call, a buffer ~1 µs, and this runs on every command.
  const adjtimex = koffi.load('libc.so.6').func('int adjtimex(_Inout_ void *buf)');
  const buf = Buffer.alloc(koffi.sizeof(timex));
  const longBytes = koffi.sizeof('long');
  const readLong = (field: string) => {
    const at = koffi.offsetof(timex, field);
    return longBytes === 8 ? () => Number(buf.readBigInt64LE(at)) : () => buf.readInt32LE(at);
  };
  const maxerror = readLong('maxerror');
  const esterror = readLong('esterror');
  const statusAt = koffi.offsetof(timex, 'status');
  return () => {
    buf.fill(0); // modes = 0: read only
    const state = adjtimex(buf) as number;
    return { state, status: buf.readInt32LE(statusAt), maxerrorUs: maxerror(), esterrorUs: esterror() };
  };
}

/** systemd-timesyncd creates this file once it has synchronised the clock (systemd >= 239). */
export const timesyncFlag = '/run/systemd/timesync/synchronized';

export interface SystemClockOptions {
  /** Makes the adjtimex call (tests inject readings); default loadAdjtimex. If it throws, the flag file is used. */
  loadAdjtimex?: () => AdjtimexCall;
  /** The fallback flag file. */
  flag?: string;
  /** Told once when adjtimex cannot be used. */
  warn?: (message: string) => void;
}

export class SystemClock implements CommandClock {
  readonly #flag: string;
  readonly #adjtimex: AdjtimexCall | undefined;
  readonly #loadError: string | undefined;

  constructor(o: SystemClockOptions = {}) {
    this.#flag = o.flag ?? timesyncFlag;
    try {
      this.#adjtimex = (o.loadAdjtimex ?? loadAdjtimex)();
    } catch (err) {
      this.#loadError = errorMessage(err);
      o.warn?.(`cannot read the kernel clock state (adjtimex through koffi: ${this.#loadError}); using ${this.#flag} instead`);
    }
  }

  nowMs(): number {
    return Date.now();
  }

  synchronised(): boolean {
    return this.state().synchronised;
  }

  state(): ClockState {
    if (this.#adjtimex) return interpretTimex(this.#adjtimex());
    const synchronised = existsSync(this.#flag);
    return { synchronised, source: 'timesyncd-flag', note: `adjtimex unavailable (${this.#loadError ?? 'not loaded'}); ${this.#flag} ${synchronised ? 'exists' : 'is absent'}` };
  }
}
