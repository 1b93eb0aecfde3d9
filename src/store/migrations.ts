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
  {
    version: 2,
    description: 'tamper-evident audit chain and its signed checkpoints',
    sql: `
      CREATE TABLE audit_entry (
        seq        INTEGER PRIMARY KEY,   -- 1, 2, 3... no gaps
        time       TEXT    NOT NULL,      -- ISO 8601, the agent's clock
        entry      TEXT    NOT NULL,      -- canonical JSON of the entry's fields (what is hashed)
        prev_hash  TEXT    NOT NULL,      -- hash of entry seq-1 (64 zeros for seq 1)
        hash       TEXT    NOT NULL       -- SHA-256 over prev_hash and entry, hex
      );
      CREATE TABLE audit_checkpoint (
        seq        INTEGER PRIMARY KEY,   -- the entry the checkpoint covers up to
        head_hash  TEXT    NOT NULL,
        time       TEXT    NOT NULL,
        kid        TEXT    NOT NULL,      -- device key id
        signature  TEXT    NOT NULL       -- Ed25519 over the checkpoint's canonical JSON, base64url
      );
    `,
  },
  {
    version: 3,
    description: 'replay cache of command token ids (jti) until they expire',
    sql: `
      CREATE TABLE command_replay (
        issuer   TEXT    NOT NULL,
        jti      TEXT    NOT NULL,
        expires  INTEGER NOT NULL,        -- unix seconds; the row may go after this
        PRIMARY KEY (issuer, jti)
      );
      CREATE INDEX command_replay_expires ON command_replay (expires);
    `,
  },
];
