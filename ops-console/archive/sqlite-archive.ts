// The embedded archive (the demo's default): one SQLite file through better-sqlite3, as the agent
// keeps its own store. WAL so the page's reads do not wait behind the verifier's writes; statements
// are synchronous, which is fine at a console's rate (bench/fleet-sim.ts measures it).
import Database from 'better-sqlite3';
import { schemaStatements, SqlArchive, type Row } from './sql-archive.ts';

export class SqliteArchive extends SqlArchive {
  readonly backend = 'sqlite' as const;
  readonly #db: Database.Database;

  private constructor(db: Database.Database) {
    const statements = new Map<string, Database.Statement>();
    super(async (sql, params = []) => {
      let st = statements.get(sql);
      if (!st) {
        st = db.prepare(sql);
        statements.set(sql, st);
      }
      return st.reader ? (st.all(...(params as unknown[])) as Row[]) : (st.run(...(params as unknown[])), []);
    });
    this.#db = db;
  }

  /** `file` ':memory:' for a throwaway archive. */
  static async open(file: string): Promise<SqliteArchive> {
    if (!file) throw new Error('the archive needs a SQLite file name (--archive sqlite:FILE)');
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    for (const sql of schemaStatements('INTEGER PRIMARY KEY AUTOINCREMENT')) db.exec(sql);
    return new SqliteArchive(db);
  }

  override async close(): Promise<void> {
    this.#db.close();
  }
}
