// Numbered schema migrations, applied in order inside one transaction each; PRAGMA user_version
// records how far a database has come. Append new ones; never edit one that has shipped.
export interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const migrations: readonly Migration[] = [
  {
    version: 1,
    description: 'persistent MQTT outbox with per-topic sequence numbers',
    sql: `
      CREATE TABLE outbox (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        channel  TEXT    NOT NULL,  -- topic suffix under bwc/v1/<deviceId>/
        class    TEXT    NOT NULL CHECK (class IN ('thinnable', 'durable')),
        seq      INTEGER NOT NULL,
        payload  BLOB    NOT NULL,
        created  INTEGER NOT NULL   -- unix ms
      );
      CREATE INDEX outbox_thinnable ON outbox (class, id);
      CREATE TABLE outbox_sequence (
        channel  TEXT PRIMARY KEY,
        next_seq INTEGER NOT NULL
      );
      CREATE TABLE outbox_thinned (
        channel  TEXT PRIMARY KEY,
        count    INTEGER NOT NULL
      );
    `,
  },
];
