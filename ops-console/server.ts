// The reference operations console's server: fleet-side code (the agent never imports it). It
// serves the page in ops-console/public, signs operators in, holds the issuer key (the browser
// never sees it) and signs each stream.start/stream.stop with the signed-in operator as `sub`,
// publishes it to the camera and hands the reply back. It also relays camera states and audit
// entries to the page, and checks each camera's audit chain by the rules of `bwc-agent audit verify`.
//
//   node ops-console/server.ts --broker mqtt://127.0.0.1:1883 --issuer-key DIR/issuer.private.jwk.json \
//        --users users.json [--port 8080] [--issuer bwc-ops-console]
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { verifyAuditMessages } from '../src/audit/verify.ts';
import { signCommand } from '../src/cli/fleet-tools.ts';
import { Fleet } from './fleet.ts';
import { UserStore, type Operator } from './users.ts';
import { inWords, reasonCatalogue } from './words.ts';

export interface ConsoleOptions {
  fleet: Fleet;
  users: UserStore;
  issuerKeyFile: string;
  issuer: string;
  /** Longest live view offered, seconds (the camera enforces its own limit). */
  maxDurationS: number;
  /** How long a sign-in lasts without activity. */
  sessionIdleMs?: number;
}

const publicDir = fileURLToPath(new URL('./public/', import.meta.url));
const contentTypes: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
const cookieName = 'bwc_console';

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export class ConsoleServer {
  readonly #o: ConsoleOptions;
  readonly #sessions = new Map<string, Operator & { lastSeen: number }>();
  readonly #server: http.Server;
  readonly #streams = new Set<http.ServerResponse>();

  constructor(options: ConsoleOptions) {
    this.#o = options;
    this.#server = http.createServer((req, res) => {
      this.#route(req, res).catch((err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500;
        if (status === 500) process.stderr.write(`ops-console: ${(err as Error).stack ?? String(err)}\n`);
        if (!res.headersSent) json(res, status, { error: (err as Error).message });
        else res.end();
      });
    });
    options.fleet.on('camera', (record) => this.#broadcast('camera', record));
    options.fleet.on('audit', (event) => this.#broadcast('audit', event));
  }

  /** Listens on 127.0.0.1 only; resolves to the URL. */
  async listen(port: number): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, '127.0.0.1', resolve);
    });
    const address = this.#server.address();
    return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : port}/`;
  }

  async close(): Promise<void> {
    for (const res of this.#streams) res.end();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://console');
    const route = `${req.method} ${url.pathname}`;
    if (req.method === 'GET' && !url.pathname.startsWith('/api/')) return this.#static(url.pathname, res);
    if (req.method === 'POST' && req.headers['content-type']?.split(';')[0] !== 'application/json') {
      // With SameSite=Strict cookies, this is what stops another site's form posting here.
      throw new HttpError(415, 'requests must be application/json');
    }
    if (route === 'POST /api/login') return this.#login(req, res);
    const operator = this.#operatorOf(req);
    if (!operator) throw new HttpError(401, 'not signed in');
    switch (route) {
      case 'GET /api/me':
        return json(res, 200, { operator: operator.operator, name: operator.name });
      case 'POST /api/logout':
        this.#sessions.delete(sessionId(req) ?? '');
        res.writeHead(204, { 'set-cookie': `${cookieName}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0` }).end();
        return;
      case 'GET /api/config':
        return json(res, 200, { reasons: reasonCatalogue, maxDurationS: this.#o.maxDurationS });
      case 'GET /api/events':
        return this.#events(res);
      case 'POST /api/live':
        return this.#startLive(await body(req), operator, res);
      case 'POST /api/live/stop':
        return this.#stopLive(await body(req), operator, res);
    }
    const audit = /^GET \/api\/audit\/([A-Za-z0-9_-]{1,64})$/.exec(route);
    if (audit) return json(res, 200, this.#auditView(audit[1]!));
    throw new HttpError(404, `no such route: ${route}`);
  }

  async #static(pathname: string, res: http.ServerResponse): Promise<void> {
    const name = pathname === '/' ? 'index.html' : pathname.slice(1);
    const type = contentTypes[path.extname(name)];
    if (!/^[a-z0-9-]+\.[a-z]+$/.test(name) || !type) throw new HttpError(404, 'not found');
    const content = await readFile(path.join(publicDir, name)).catch(() => {
      throw new HttpError(404, 'not found');
    });
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-security-policy': "default-src 'self'; media-src 'self' blob:; img-src 'self' data:" });
    res.end(content);
  }

  async #login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { user, password } = await body(req);
    const operator = typeof user === 'string' && typeof password === 'string' ? this.#o.users.authenticate(user, password) : undefined;
    if (!operator) {
      process.stderr.write(`ops-console: refused sign-in for ${JSON.stringify(String(user ?? '')).slice(0, 80)}\n`);
      throw new HttpError(401, 'wrong user name or password');
    }
    const id = randomBytes(32).toString('base64url');
    this.#sessions.set(id, { ...operator, lastSeen: Date.now() });
    res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': `${cookieName}=${id}; HttpOnly; SameSite=Strict; Path=/` });
    res.end(JSON.stringify(operator));
  }

  #operatorOf(req: http.IncomingMessage): Operator | undefined {
    const id = sessionId(req);
    const session = id ? this.#sessions.get(id) : undefined;
    if (!session) return undefined;
    if (Date.now() - session.lastSeen > (this.#o.sessionIdleMs ?? 8 * 3600_000)) {
      this.#sessions.delete(id!);
      return undefined;
    }
    session.lastSeen = Date.now();
    return session;
  }

  #events(res: http.ServerResponse): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    this.#streams.add(res);
    res.on('close', () => this.#streams.delete(res));
    for (const record of this.#o.fleet.cameras.values()) send(res, 'camera', record);
  }

  #broadcast(event: string, data: unknown): void {
    for (const res of this.#streams) send(res, event, data);
  }

  async #startLive(b: Record<string, unknown>, operator: Operator, res: http.ServerResponse): Promise<void> {
    const { deviceId, reason, offer } = b;
    const durationS = b.durationS === undefined || b.durationS === '' ? 300 : Number(b.durationS);
    if (typeof deviceId !== 'string' || typeof reason !== 'string' || typeof offer !== 'string') throw new HttpError(400, 'needs deviceId, reason and offer');
    if (!Number.isInteger(durationS) || durationS < 1 || durationS > this.#o.maxDurationS) throw new HttpError(400, `durationS must be 1 to ${this.#o.maxDurationS}`);
    const token = await signCommand({ keyFile: this.#o.issuerKeyFile, device: deviceId, action: 'stream.start', reason, operator: operator.operator, issuer: this.#o.issuer, maxS: durationS, offer });
    const reply = await this.#o.fleet.request(deviceId, { token, offer });
    process.stderr.write(`ops-console: ${operator.operator} asked ${deviceId} for a live view (${reason}, ${durationS} s): ${reply.ok === true ? 'accepted' : String(reply.code)}\n`);
    json(res, 200, withWords(reply));
  }

  async #stopLive(b: Record<string, unknown>, operator: Operator, res: http.ServerResponse): Promise<void> {
    const { deviceId, sid } = b;
    if (typeof deviceId !== 'string' || typeof sid !== 'string') throw new HttpError(400, 'needs deviceId and sid');
    const token = await signCommand({ keyFile: this.#o.issuerKeyFile, device: deviceId, action: 'stream.stop', reason: 'officer-request', operator: operator.operator, issuer: this.#o.issuer, sid });
    json(res, 200, withWords(await this.#o.fleet.request(deviceId, { token })));
  }

  /** verification.ok: true verified, false broken, null not checkable (nothing yet, or joined late). */
  #auditView(deviceId: string): { entries: unknown[]; verification: { ok: boolean | null; summary: string } } {
    const messages = this.#o.fleet.auditOf(deviceId);
    const entries = [...new Map(messages.filter((m) => m.kind === 'entry').map((m) => [m.entry.seq, m.entry])).values()].sort((a, b) => a.seq - b.seq);
    if (entries.length === 0) return { entries, verification: { ok: null, summary: 'no audit entries received from this camera yet' } };
    if (entries[0]!.seq !== 1) {
      return { entries, verification: { ok: null, summary: `this console holds entries from ${entries[0]!.seq} on only (it joined later): the chain cannot be checked from its start` } };
    }
    // The key the camera publishes in its state; a deployment pins the key registered at enrolment.
    const publicJwk = this.#o.fleet.cameras.get(deviceId)?.state.devicePublicKey as JWK | undefined;
    const r = verifyAuditMessages(messages, publicJwk ? { publicJwk } : {});
    const summary = r.ok
      ? `${r.entries} entries, ${r.checkpoints} signed checkpoint(s)${r.unsignedEntries ? `, ${r.unsignedEntries} after the last checkpoint` : ''}; head ${r.head?.hash.slice(0, 12)}…`
      : `entry ${r.firstProblem!.seq} ${r.firstProblem!.kind}: ${r.firstProblem!.message}`;
    return { entries, verification: { ok: r.ok, summary } };
  }
}

function withWords(reply: Record<string, unknown>): Record<string, unknown> {
  return reply.ok === true ? reply : { ...reply, words: inWords(String(reply.code ?? 'internal_error')) };
}

function sessionId(req: http.IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === cookieName && v) return v;
  }
  return undefined;
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(value));
}

function send(res: http.ServerResponse, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

async function body(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 256 * 1024) throw new HttpError(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  try {
    const v: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HttpError(400, 'the body must be a JSON object');
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      broker: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
      'issuer-key': { type: 'string' },
      users: { type: 'string' },
      port: { type: 'string', default: '8080' },
      issuer: { type: 'string', default: 'bwc-ops-console' },
      'max-duration': { type: 'string', default: '1800' },
      'client-id': { type: 'string', default: 'bwc-ops-console' },
    },
  });
  if (!values['issuer-key'] || !values.users) {
    process.stderr.write('usage: node ops-console/server.ts --issuer-key FILE --users FILE [--broker URL] [--port 8080] [--issuer ISS]\n');
    process.exit(2);
  }
  const fleet = await Fleet.connect(values.broker, values['client-id']);
  const server = new ConsoleServer({ fleet, users: UserStore.load(values.users), issuerKeyFile: values['issuer-key'], issuer: values.issuer, maxDurationS: Number(values['max-duration']) });
  const url = await server.listen(Number(values.port));
  process.stdout.write(`ops-console: ${url} (broker ${values.broker})\n`);
  const stop = () => {
    void server.close().then(() => fleet.close()).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`ops-console: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
