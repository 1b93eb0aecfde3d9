// Opens the agent's SQLite database: WAL so readers never block the writer, synchronous=FULL
// because the outbox (and later the audit chain and evidence index) must survive a power cut.
import { mkdirSync } from 'node:fs';
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
  const db = new Database(path.join(options.stateDir, options.fileName ?? 'agent.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, options.migrations ?? defaultMigrations);
  return db;
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
