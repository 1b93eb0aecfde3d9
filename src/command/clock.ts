// The device clock as the verifier sees it. Whether it is synchronised matters because token
// expiry is only as good as the clock: a camera that booted without network may be hours off.
import { existsSync } from 'node:fs';

export interface CommandClock {
  nowMs(): number;
  synchronised(): boolean;
}

/** systemd-timesyncd creates this file once it has synchronised the clock (systemd >= 239). */
export const timesyncFlag = '/run/systemd/timesync/synchronized';

export class SystemClock implements CommandClock {
  readonly #flag: string;

  constructor(flag = timesyncFlag) {
    this.#flag = flag;
  }

  nowMs(): number {
    return Date.now();
  }

  synchronised(): boolean {
    return existsSync(this.#flag);
  }
}
