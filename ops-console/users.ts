// The console's operators: a local JSON file of users with scrypt-hashed passwords. Enough for the
// demo and a single control room; a real deployment signs operators in through the force's
// identity provider instead (ops-console/README.md) and keeps only `authenticate` below replaced.
//
//   node ops-console/users.ts add --file users.json --user sgt1234 --operator sgt-1234 --name "Sgt A. Example" \
//        --role supervisor [--role duty-officer] [--unit north] [--shift 07:00-19:00] --password ...
//
// Checking a password is asynchronous scrypt (libuv's thread pool): a synchronous one held the
// event loop for every other request while it ran. The sign-in guard (sign-in.ts) limits attempts.
import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isRole, parseShift, roles as knownRoles, type Role } from './roles.ts';

export interface UserRecord {
  user: string;
  /** Goes into the token's `sub`: the audit on the camera names this id. */
  operator: string;
  name: string;
  /** scrypt$N$r$p$salt$hash, base64url parts. */
  password: string;
  /** What the user may do (roles.ts). A record without it is a supervisor (as every user was before roles). */
  roles?: Role[];
  /** The unit the user belongs to: a view of another unit's camera raises an alert (misuse-rules.ts). */
  unit?: string;
  /** The user's shift, HH:MM-HH:MM local time: a view outside it raises an alert. */
  shift?: string;
}

export interface Operator {
  operator: string;
  name: string;
  roles: Role[];
  unit: string | null;
  shift: string | null;
}

const N = 16_384;
const r = 8;
const p = 1;

export function hashPassword(password: string): string {
  const salt = randomBytes(16);
  const hash = scryptSync(password, salt, 32, { N, r, p });
  return ['scrypt', N, r, p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, rr, pp, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const got = await new Promise<Buffer>((resolve, reject) => {
    scrypt(password, Buffer.from(salt, 'base64url'), expected.length, { N: Number(n), r: Number(rr), p: Number(pp), maxmem: 64 * 1024 * 1024 }, (err, key) => (err ? reject(err) : resolve(key)));
  });
  return timingSafeEqual(got, expected);
}

/** Checks one users.json record; the error names the user and the bad setting. */
export function checkUserRecord(u: unknown, where: string): UserRecord {
  const r = u as Partial<UserRecord> | null;
  if (typeof r?.user !== 'string' || typeof r.operator !== 'string' || typeof r.password !== 'string') throw new Error(`${where}: expected {user, operator, name, password}`);
  const who = `${where}: user ${JSON.stringify(r.user)}`;
  if (r.roles !== undefined && (!Array.isArray(r.roles) || !r.roles.every(isRole))) throw new Error(`${who}: roles must be a list of ${knownRoles.join(', ')} (got ${JSON.stringify(r.roles)})`);
  if (r.unit !== undefined && (typeof r.unit !== 'string' || r.unit === '')) throw new Error(`${who}: unit must be a non-empty string`);
  if (r.shift !== undefined) {
    try {
      parseShift(String(r.shift));
    } catch (err) {
      throw new Error(`${who}: shift: ${(err as Error).message}`);
    }
  }
  return r as UserRecord;
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
    if (!Array.isArray(parsed)) throw new Error(`${file}: expected a JSON array of {user, operator, name, password}`);
    return new UserStore(parsed.map((u, i) => checkUserRecord(u, `${file} [${i}]`)));
  }

  async authenticate(user: string, password: string): Promise<Operator | undefined> {
    const record = this.#users.get(user);
    const ok = await verifyPassword(password, record?.password ?? this.#dummy);
    return ok && record ? operatorOf(record) : undefined;
  }

  /** Every user as an Operator (no password): the misuse rules read units and shifts from here. */
  operators(): Operator[] {
    return [...this.#users.values()].map(operatorOf);
  }
}

function operatorOf(record: UserRecord): Operator {
  return { operator: record.operator, name: record.name, roles: record.roles ?? ['supervisor'], unit: record.unit ?? null, shift: record.shift ?? null };
}

function main(argv: string[]): void {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      file: { type: 'string' }, user: { type: 'string' }, operator: { type: 'string' }, name: { type: 'string' }, password: { type: 'string' },
      role: { type: 'string', multiple: true }, unit: { type: 'string' }, shift: { type: 'string' },
    },
  });
  if (positionals[0] !== 'add' || !values.file || !values.user || !values.operator || !values.password) {
    process.stderr.write(`usage: node ops-console/users.ts add --file FILE --user NAME --operator ID [--name "Full Name"] [--role ROLE]... [--unit UNIT] [--shift HH:MM-HH:MM] --password PASSWORD\n  roles: ${knownRoles.join(', ')} (default supervisor)\n`);
    process.exit(2);
  }
  const users: UserRecord[] = existsSync(values.file) ? (JSON.parse(readFileSync(values.file, 'utf8')) as UserRecord[]) : [];
  const record: UserRecord = {
    user: values.user, operator: values.operator, name: values.name ?? values.user, password: hashPassword(values.password),
    roles: (values.role ?? ['supervisor']) as Role[],
    ...(values.unit === undefined ? {} : { unit: values.unit }),
    ...(values.shift === undefined ? {} : { shift: values.shift }),
  };
  try {
    checkUserRecord(record, '--role/--unit/--shift');
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  writeFileSync(values.file, `${JSON.stringify([...users.filter((u) => u.user !== values.user), record], null, 2)}\n`, { mode: 0o600 });
  process.stdout.write(`${values.file}: user ${values.user} (operator ${values.operator}; ${record.roles!.join(', ')}${record.unit ? `; unit ${record.unit}` : ''}${record.shift ? `; shift ${record.shift}` : ''})\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
