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
  {
    version: 4,
    description: 'evidence recordings and their hash-chained segment index',
    sql: `
      CREATE TABLE recording (
        id               TEXT    PRIMARY KEY,  -- also the folder name under evidence/recordings/
        started_at       TEXT    NOT NULL,     -- ISO 8601, when start was asked (before the pre-event)
        stopped_at       TEXT,                 -- when stop was asked; for an interrupted one, its last segment's end
        status           TEXT    NOT NULL CHECK (status IN ('recording', 'closed', 'interrupted')),
        resumed_from     TEXT    REFERENCES recording (id),  -- the interrupted recording this one continues
        trigger          TEXT    NOT NULL CHECK (trigger IN ('ctl', 'button', 'command', 'resume')),
        operator         TEXT,                 -- command triggers only
        reason           TEXT,
        stop_trigger     TEXT    CHECK (stop_trigger IS NULL OR stop_trigger IN ('ctl', 'button', 'command')),
        stop_operator    TEXT,
        stop_reason      TEXT,
        pre_event_s      REAL    NOT NULL,
        pre_event_audio  INTEGER NOT NULL DEFAULT 0,
        manifest         TEXT,                 -- canonical JSON, exactly the signed bytes (manifest.json)
        manifest_sig     TEXT,                 -- Ed25519 over manifest, base64url (manifest.sig)
        kid              TEXT                  -- device key that signed it
      );
      CREATE INDEX recording_status ON recording (status);
      CREATE TABLE evidence_segment (
        recording_id  TEXT    NOT NULL REFERENCES recording (id),
        idx           INTEGER NOT NULL,        -- 0, 1, 2... within the recording
        file          TEXT    NOT NULL UNIQUE, -- relative to the evidence folder, '/' separated
        started_at    TEXT    NOT NULL,
        ended_at      TEXT    NOT NULL,
        duration_s    REAL    NOT NULL,
        lat           REAL,                    -- position at the segment's start; null without a fix
        lon           REAL,
        sha256        TEXT    NOT NULL,        -- hex, of the file's bytes
        prev_sha256   TEXT    NOT NULL,        -- previous segment's sha256 in this recording; 64 zeros for idx 0
        bytes         INTEGER NOT NULL,
        recovered     INTEGER NOT NULL DEFAULT 0,  -- indexed at startup after a crash, times from the file
        PRIMARY KEY (recording_id, idx)
      );
    `,
  },
  {
    version: 5,
    description: 'per-issuer high-water mark of signed-token iat: replay rows are pruned by the issuer\'s clock, not the device\'s',
    sql: `
      CREATE TABLE token_issuer_clock (
        issuer   TEXT    PRIMARY KEY,
        max_iat  INTEGER NOT NULL         -- highest iat (unix seconds, the issuer's clock) of a token accepted from it
      );
    `,
  },
  {
    version: 6,
    description: 'evidence offload: the objects of each recording in the store, upload progress (multipart upload ids) and holds',
    sql: `
      CREATE TABLE offload_recording (
        recording_id  TEXT    PRIMARY KEY REFERENCES recording (id),
        status        TEXT    NOT NULL CHECK (status IN ('pending', 'uploaded', 'deleted')),
        bytes         INTEGER NOT NULL,       -- sum of its objects
        uploaded_at   TEXT,                   -- every object verified in the store
        deleted_at    TEXT                    -- local files deleted under the retention policy
      );
      CREATE TABLE offload_object (
        recording_id  TEXT    NOT NULL REFERENCES offload_recording (recording_id),
        key           TEXT    NOT NULL,       -- object key in the bucket
        source        TEXT    NOT NULL,       -- file relative to the evidence folder, or ':device-key'
        sha256        TEXT    NOT NULL,       -- hex, of the bytes to upload
        bytes         INTEGER NOT NULL,
        upload_id     TEXT,                   -- an open multipart upload, resumed with ListParts
        attempts      INTEGER NOT NULL DEFAULT 0,  -- PUTs begun: after one, the store may hold it already (HEAD first)
        verified_at   TEXT,                   -- HEAD showed the same size, MD5 ETag and SHA-256
        PRIMARY KEY (recording_id, key)
      );
      CREATE TABLE offload_hold (
        recording_id  TEXT    PRIMARY KEY,
        reason        TEXT    NOT NULL,
        held_at       TEXT    NOT NULL
      );
    `,
  },
  {
    version: 7,
    description: 'the officer in the loop: what started a recording beyond the stored kind, and bookmarks (marks) in recordings',
    sql: `
      -- The recording's trigger as the manifest names it when finer than trigger's CHECKed kinds
      -- (watch-me, emergency, trigger, stream), and its detail as JSON (source, sid, alertId).
      ALTER TABLE recording ADD COLUMN trigger_kind TEXT;
      ALTER TABLE recording ADD COLUMN trigger_detail TEXT;
      CREATE TABLE recording_mark (
        mark_id       TEXT    PRIMARY KEY,
        recording_id  TEXT    NOT NULL REFERENCES recording (id),
        time          TEXT    NOT NULL,      -- ISO 8601, when the mark was asked
        offset_s      REAL    NOT NULL,      -- seconds after the recording's started_at
        source        TEXT    NOT NULL CHECK (source IN ('button', 'command')),
        operator      TEXT,                  -- command marks only
        note          TEXT
      );
      CREATE INDEX recording_mark_recording ON recording_mark (recording_id, time);
    `,
  },
];
