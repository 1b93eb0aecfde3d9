// The archive in PostgreSQL (npm `pg`), for a force: several consoles, replication and backups
// are the database's (ops-console/README.md, "High availability"). The SQL is sql-archive.ts's;
// here `?` placeholders become `$n` and BIGINT columns come back as numbers (seq and ids stay far
// below 2^53).
import pg from 'pg';
import { schemaStatements, SqlArchive, type Row } from './sql-archive.ts';

const int8 = 20;

export class PgArchive extends SqlArchive {
  readonly backend = 'postgresql' as const;
  readonly #pool: pg.Pool;

  private constructor(pool: pg.Pool) {
    super(async (sql, params = []) => {
      let n = 0;
      const text = sql.replace(/\?/g, () => `$${++n}`);
      const r = await pool.query(text, params as unknown[]);
      return r.rows as Row[];
    });
    this.#pool = pool;
  }

  /** `url`: postgres://user@/db?host=/socket/dir or postgres://user:pass@host:5432/db. */
  static async open(url: string): Promise<PgArchive> {
    const pool = new pg.Pool({
      connectionString: url,
      max: 4,
      types: { getTypeParser: (oid: number, format?: string) => (oid === int8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) } as pg.CustomTypesConfig,
    });
    pool.on('error', (err) => process.stderr.write(`ops-console: archive connection: ${err.message}\n`));
    const client = await pool.connect().catch((err: Error) => {
      throw new Error(`cannot reach the PostgreSQL archive ${url.replace(/:[^:@/]*@/, ':***@')}: ${err.message}`);
    });
    try {
      // Two consoles starting at once must not race on CREATE TABLE.
      await client.query('SELECT pg_advisory_lock(2026120)');
      for (const sql of schemaStatements('BIGSERIAL PRIMARY KEY')) await client.query(sql);
      await client.query('SELECT pg_advisory_unlock(2026120)');
    } finally {
      client.release();
    }
    return new PgArchive(pool);
  }

  override async close(): Promise<void> {
    await this.#pool.end();
  }
}
