// Opens the agent's SQLite database: WAL so readers never block the writer, synchronous=FULL
// because the outbox (and later the audit chain and evidence index) must survive a power cut.
// The file and its -wal/-shm are owner-only (0600) whatever the umask: it holds the audit trail
// and the evidence index, and outside systemd (UMask=0077) a umask of 022 would make them
// world-readable.
import { chmodSync, closeSync, constants, existsSync, fchmodSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { migrations as defaultMigrations, type Migration } from './migrations.ts';

export type Db = Database.Database;

export interface OpenDatabaseOptions {
  stateDir: string;
  fileName?: string;
  migrations?: readonly Migration[];
}

export function openDatabase(options: OpenDatabaseOptions): Db {
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(options.stateDir, options.fileName ?? 'agent.db');
  ownerOnly(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  // SQLite gives -wal and -shm the database file's mode when it creates them; ones left by an
  // older agent (made 0644) are narrowed here.
  for (const companion of [`${file}-wal`, `${file}-shm`, `${file}-journal`]) {
    if (existsSync(companion)) chmodSync(companion, 0o600);
  }
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, options.migrations ?? defaultMigrations);
  return db;
}

/**
 * Creates the database file empty if it is not there, and sets it 0600 either way. SQLite would
 * create it 0644 minus the umask (SQLITE_DEFAULT_FILE_PERMISSIONS) and better-sqlite3 has no
 * option for the mode, hence by hand; fchmod, because open's mode is itself cut by the umask.
 */
function ownerOnly(file: string): void {
  const fd = openSync(file, constants.O_RDWR | constants.O_CREAT, 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}

export function schemaVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

function migrate(db: Db, migrations: readonly Migration[]): void {
  const current = schemaVersion(db);
  const latest = migrations.at(-1)?.version ?? 0;
  if (current > latest) {
    // A newer agent wrote this database; running old code on it could corrupt it.
    throw new Error(`database schema version ${current} is newer than this agent understands (${latest}): refusing to start`);
  }
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
  }
}
