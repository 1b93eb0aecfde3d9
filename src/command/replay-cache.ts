// Token ids (jti) of accepted signed tokens (commands and ICE-restart answers alike), per issuer,
// kept in SQLite (table command_replay, migration 3) so a captured token cannot be used again, not
// even across an agent restart or a power cut (the database is synchronous=FULL).
//
// One namespace per issuer for every token type: RFC 7519 makes a jti unique per issuer, whatever
// the token carries, so an issuer that gave a command and an answer the same jti is broken, and
// refusing the second is the safe outcome. (A command token cannot pass as an answer or the other
// way round anyway: `typ` differs.)
//
// When may a row go? Not when the device's wall clock says the token has expired: that clock can
// be moved (a spoofed GNSS time through gpsd and chrony, a bad NTP server, a hand-set date), and a
// row pruned while it is ahead reopens the token to replay once it comes back. Instead each issuer
// has a high-water mark, the highest `iat` of any token accepted from it (table token_issuer_clock,
// migration 5): the issuer's own clock, as seen in what it signed. A token whose exp + skew is at
// or below that mark has expired by its issuer's clock, so it is refused as expired without a row
// (admit, below), and its row can go. This survives restarts and power cuts, which a monotonic
// clock would not; a row stays until its issuer signs something later, which bounds the table by
// the tokens of one lifetime per issuer.
import type { Db } from '../store/database.ts';
import type { RejectionCode } from './types.ts';

export class ReplayCache {
  readonly #seen: (iss: string, jti: string) => boolean;
  readonly #remember: (iss: string, jti: string, expires: number) => boolean;
  readonly #issuerClock: (iss: string) => number | undefined;
  readonly #raiseIssuerClock: (iss: string, iat: number) => void;
  readonly #prune: () => number;
  readonly #admit: (iss: string, jti: string, expires: number, iat: number, gate: () => RejectionCode | undefined) => RejectionCode | undefined;

  constructor(db: Db) {
    const select = db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM command_replay WHERE issuer = ? AND jti = ?');
    const insert = db.prepare<[string, string, number]>(
      'INSERT INTO command_replay (issuer, jti, expires) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING',
    );
    const clock = db.prepare<[string], { max_iat: number }>('SELECT max_iat FROM token_issuer_clock WHERE issuer = ?');
    const raise = db.prepare<[string, number]>(
      'INSERT INTO token_issuer_clock (issuer, max_iat) VALUES (?, ?) ON CONFLICT (issuer) DO UPDATE SET max_iat = max(max_iat, excluded.max_iat)',
    );
    const del = db.prepare(
      'DELETE FROM command_replay WHERE expires <= (SELECT c.max_iat FROM token_issuer_clock c WHERE c.issuer = command_replay.issuer)',
    );
    this.#seen = (iss, jti) => select.get(iss, jti) !== undefined;
    this.#remember = (iss, jti, expires) => insert.run(iss, jti, expires).changes === 1;
    this.#issuerClock = (iss) => clock.get(iss)?.max_iat;
    this.#raiseIssuerClock = (iss, iat) => void raise.run(iss, iat);
    this.#prune = () => del.run().changes;
    // IMMEDIATE takes the write lock before the lookup, so the check and the insert are one step
    // even if another connection (a CLI, a second agent by mistake) shares the database.
    const tx = db.transaction((iss: string, jti: string, expires: number, iat: number, gate: () => RejectionCode | undefined) => {
      if (this.#seen(iss, jti)) return 'replayed' as const;
      // Its row may have been pruned: the issuer's clock has passed it (see the top of the file).
      const mark = this.#issuerClock(iss);
      if (mark !== undefined && expires <= mark) return 'expired' as const;
      const refused = gate();
      if (refused !== undefined) return refused;
      if (!this.#remember(iss, jti, expires)) return 'replayed' as const;
      this.#raiseIssuerClock(iss, iat);
      return undefined;
    });
    this.#admit = (iss, jti, expires, iat, gate) => tx.immediate(iss, jti, expires, iat, gate);
  }

  /** Whether (iss, jti) has been recorded (and not yet pruned). */
  seen(iss: string, jti: string): boolean {
    return this.#seen(iss, jti);
  }

  /** Records (iss, jti) until `expires` (unix seconds); false if it was already recorded. */
  remember(iss: string, jti: string, expires: number): boolean {
    return this.#remember(iss, jti, Math.ceil(expires));
  }

  /** The issuer's high-water mark: the highest iat of a token accepted from it, if any. */
  issuerClock(iss: string): number | undefined {
    return this.#issuerClock(iss);
  }

  /** Raises the issuer's high-water mark to iat (never lowers it). */
  raiseIssuerClock(iss: string, iat: number): void {
    this.#raiseIssuerClock(iss, Math.floor(iat));
  }

  /**
   * Deletes the rows whose `expires` is at or below their issuer's high-water mark (tokens expired
   * by their issuer's own clock); returns how many went. The device's clock plays no part.
   */
  prune(): number {
    return this.#prune();
  }

  /**
   * In one transaction: 'replayed' if (iss, jti) is known; 'expired' if `expires` is at or below
   * the issuer's high-water mark (its row could have been pruned); otherwise the gate's refusal if
   * it has one (a later check that must see the same moment, e.g. busy); otherwise records the jti
   * until `expires`, raises the issuer's mark to `iat` and returns undefined. A refused token is
   * never recorded, so the issuer can retry the same token once the refusal (busy) has cleared.
   */
  admit(iss: string, jti: string, expires: number, iat: number, gate: () => RejectionCode | undefined = () => undefined): RejectionCode | undefined {
    return this.#admit(iss, jti, Math.ceil(expires), Math.floor(iat), gate);
  }
}
