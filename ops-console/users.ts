// The console's operators: a local JSON file of users with scrypt-hashed passwords. Enough for the
// demo and a single control room; a real deployment signs operators in through the force's
// identity provider instead (ops-console/README.md) and keeps only `authenticate` below replaced.
//
//   node ops-console/users.ts add --file users.json --user sgt1234 --operator sgt-1234 --name "Sgt A. Example" --password ...
import { randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface UserRecord {
  user: string;
  /** Goes into the token's `sub`: the audit on the camera names this id. */
  operator: string;
  name: string;
  /** scrypt$N$r$p$salt$hash, base64url parts. */
  password: string;
}

export interface Operator {
  operator: string;
  name: string;
}

const N = 16_384;
const r = 8;
const p = 1;

export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { N, r, p });
  return ['scrypt', N, r, p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export function verifyPassword(password: string, stored: string): boolean {
  const [scheme, n, rr, pp, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const got = scryptSync(password, Buffer.from(salt, 'base64url'), expected.length, { N: Number(n), r: Number(rr), p: Number(pp) });
  return timingSafeEqual(got, expected);
}

export class UserStore {
  readonly #users: Map<string, UserRecord>;
  // So a wrong user name costs as much as a wrong password (no user enumeration by timing).
  readonly #dummy = hashPassword(randomBytes(16).toString('hex'));

  constructor(users: UserRecord[]) {
    this.#users = new Map(users.map((u) => [u.user, u]));
  }

  static load(file: string): UserStore {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read the users file ${file}: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed) || !parsed.every((u) => typeof u?.user === 'string' && typeof u?.operator === 'string' && typeof u?.password === 'string')) {
      throw new Error(`${file}: expected a JSON array of {user, operator, name, password}`);
    }
    return new UserStore(parsed as UserRecord[]);
  }

  authenticate(user: string, password: string): Operator | undefined {
    const record = this.#users.get(user);
    const ok = verifyPassword(password, record?.password ?? this.#dummy);
    return ok && record ? { operator: record.operator, name: record.name } : undefined;
  }
}

function main(argv: string[]): void {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { file: { type: 'string' }, user: { type: 'string' }, operator: { type: 'string' }, name: { type: 'string' }, password: { type: 'string' } },
  });
  if (positionals[0] !== 'add' || !values.file || !values.user || !values.operator || !values.password) {
    process.stderr.write('usage: node ops-console/users.ts add --file FILE --user NAME --operator ID [--name "Full Name"] --password PASSWORD\n');
    process.exit(2);
  }
  const users: UserRecord[] = existsSync(values.file) ? (JSON.parse(readFileSync(values.file, 'utf8')) as UserRecord[]) : [];
  const record: UserRecord = { user: values.user, operator: values.operator, name: values.name ?? values.user, password: hashPassword(values.password) };
  writeFileSync(values.file, `${JSON.stringify([...users.filter((u) => u.user !== values.user), record], null, 2)}\n`, { mode: 0o600 });
  process.stdout.write(`${values.file}: user ${values.user} (operator ${values.operator})\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
