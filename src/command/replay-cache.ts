// Token ids (jti) of accepted commands, per issuer, kept in SQLite (table command_replay,
// migration 3) until the token could no longer be accepted anyway, so a captured command cannot be
// replayed, not even across an agent restart or a power cut (the database is synchronous=FULL).
import type { Db } from '../store/database.ts';
import type { RejectionCode } from './types.ts';

export class ReplayCache {
  readonly #seen: (iss: string, jti: string) => boolean;
  readonly #remember: (iss: string, jti: string, expires: number) => boolean;
  readonly #prune: (nowS: number) => number;
  readonly #admit: (iss: string, jti: string, expires: number, gate: () => RejectionCode | undefined) => RejectionCode | undefined;

  constructor(db: Db) {
    const select = db.prepare<[string, string], { one: number }>('SELECT 1 AS one FROM command_replay WHERE issuer = ? AND jti = ?');
    const insert = db.prepare<[string, string, number]>(
      'INSERT INTO command_replay (issuer, jti, expires) VALUES (?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING',
    );
    const del = db.prepare<[number]>('DELETE FROM command_replay WHERE expires < ?');
    this.#seen = (iss, jti) => select.get(iss, jti) !== undefined;
    this.#remember = (iss, jti, expires) => insert.run(iss, jti, expires).changes === 1;
    this.#prune = (nowS) => del.run(Math.floor(nowS)).changes;
    // IMMEDIATE takes the write lock before the lookup, so the check and the insert are one step
    // even if another connection (a CLI, a second agent by mistake) shares the database.
    const tx = db.transaction((iss: string, jti: string, expires: number, gate: () => RejectionCode | undefined) => {
      if (this.#seen(iss, jti)) return 'replayed' as const;
      const refused = gate();
      if (refused !== undefined) return refused;
      return this.#remember(iss, jti, expires) ? undefined : ('replayed' as const);
    });
    this.#admit = (iss, jti, expires, gate) => tx.immediate(iss, jti, expires, gate);
  }

  /** Whether (iss, jti) has been recorded (and not yet pruned). */
  seen(iss: string, jti: string): boolean {
    return this.#seen(iss, jti);
  }

  /** Records (iss, jti) until `expires` (unix seconds); false if it was already recorded. */
  remember(iss: string, jti: string, expires: number): boolean {
    return this.#remember(iss, jti, Math.ceil(expires));
  }

  /** Deletes rows whose `expires` is before nowS; returns how many went. */
  prune(nowS: number): number {
    return this.#prune(nowS);
  }

  /**
   * In one transaction: 'replayed' if (iss, jti) is known; otherwise the gate's refusal if it has
   * one (a later check that must see the same moment, e.g. busy); otherwise records the jti until
   * `expires` and returns undefined. A refused command is never recorded, so the issuer can retry
   * the same token once the refusal (busy) has cleared.
   */
  admit(iss: string, jti: string, expires: number, gate: () => RejectionCode | undefined = () => undefined): RejectionCode | undefined {
    return this.#admit(iss, jti, Math.ceil(expires), gate);
  }
}
