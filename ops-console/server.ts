// The reference operations console's server: fleet-side code (the agent never imports it). It
// serves the page in ops-console/public, signs operators in, holds the issuer key (the browser
// never sees it) and signs each stream.start/stream.stop with the signed-in operator as `sub`,
// publishes it to the camera and hands the reply back. It also relays camera states and audit
// entries to the page, and checks each camera's audit chain by the rules of `bwc-agent audit verify`.
// When a camera restarts ICE (docs/protocol.md, "ICE restart") it checks the camera's signed offer,
// hands it to the one page that started that live view, and signs and publishes that page's answer.
//
//   node ops-console/server.ts --broker mqtt://127.0.0.1:1883 --issuer-key DIR/issuer.private.jwk.json \
//        --users users.json [--port 8080] [--issuer bwc-ops-console] [--fleet-admin-key FILE]
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { signCommand, signIceAnswer, verifyIceOffer } from '../src/cli/fleet-tools.ts';
import { openArchive } from './archive/archive.ts';
import { ArchiveLink } from './archive-link.ts';
import { buildReport, checkReportRequest, reportCsv, signReport } from './report.ts';
import { Fleet } from './fleet.ts';
import { FleetAdminDesk, FleetAdminError, fleetAdminRoutes, signingRoutes, type FleetAdminRoute } from './fleet-admin.ts';
import { applyOfficerEvent, officerAlertRoles, signAlertAck, signTalkStart, talkRoles, watchMeReason } from './officer.ts';
import { defaultRulesConfig, MisuseRules, parseRulesConfig, type Alert, type AlertSink, type NewAlert, type RulesConfig } from './misuse-rules.ts';
import { refusal as roleRefusal, type Role } from './roles.ts';
import { deviceIdPattern } from './message-shapes.ts';
import { SignInGuard, SignInRefused, type SignInLimits } from './sign-in.ts';
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
  /** Where the console's log lines go (default stderr). */
  log?: (line: string) => void;
  /**
   * The durable archive and chain verifier (ops-console/archive-link.ts). Without one the console
   * keeps a throwaway in-memory SQLite archive: nothing is enrolled, so nothing is trusted.
   */
  archive?: ArchiveLink;
  /** The console's own key, which signs oversight reports (ops-console/report.ts keygen); default the issuer key. */
  reportKeyFile?: string;
  /** Sign-in attempt limits and lockout (sign-in.ts has the defaults). */
  signInLimits?: Partial<SignInLimits>;
  /**
   * Behind the force's reverse proxy every request comes from the proxy: take the client's address
   * for the sign-in limit from the last X-Forwarded-For hop instead. Only with a proxy that sets it.
   */
  trustProxy?: boolean;
  /** The misuse rules' settings (misuse-rules.ts has the defaults). */
  rules?: RulesConfig;
  /** Where alerts are kept: the archive's AlertStore when there is one, else in memory. */
  alerts?: AlertList;
  /** How often the rules look at open views and silent cameras (default 15 s). */
  ruleTickMs?: number;
  /** The force's XYZ raster tile server, e.g. https://tiles.example/{z}/{x}/{y}.png (the map's base layer). */
  tileUrl?: string;
  /** The tiles' attribution line, shown on the map. */
  tileAttribution?: string;
  /**
   * The fleet-admin desk's own key (config.apply, trust.update, agent.update, diag.collect), never the
   * issuer (stream) key: without it the desk's signing routes answer 503 naming --fleet-admin-key.
   */
  fleetAdminKeyFile?: string;
  /** Talk-back (push-to-talk in the live panel) for the roles in officer.ts' talkRoles; default on. */
  talkback?: boolean;
  /**
   * The viewer's playout delay for live video (ms; RTCRtpReceiver.jitterBufferTarget): default 300,
   * for a camera on a lossy 4G link (README, "Live view").
   */
  playoutDelayMs?: number;
}

/** The default playout delay: room for a NACK round trip or two on 4G (README says why). */
export const defaultPlayoutDelayMs = 300;

/** What the console reads and acknowledges alerts through (the archive's AlertStore has these). */
export interface AlertList extends AlertSink {
  list(filter?: { acknowledged?: boolean; limit?: number }): Promise<Alert[]> | Alert[];
  acknowledge(id: number, by: string, at?: string): Promise<Alert | undefined> | Alert | undefined;
}

/** The roles that see alerts (routeRoles' GET /api/alerts). */
const alertReaders: readonly Role[] = ['standards', 'duty-officer'];

/** A live view this console started: who may see its ICE restart offers and answer them. */
interface LiveOwner {
  deviceId: string;
  sid: string;
  /** The sign-in (cookie session) that asked for it. */
  session: string;
  /** The page (EventSource) that asked, when it said which: its offers go to that page only. */
  page: string | undefined;
  operator: string;
  /** After this the camera has ended the view (max_s), whatever it says: the entry is dropped. */
  expiresAt: number;
  /** The newest restart offer forwarded (0: none yet); older ones and repeats are dropped. */
  offeredGen: number;
  /** Seen in the camera's state.streaming.list: once it no longer is, the view is over. */
  listed: boolean;
}

interface EventStream {
  session: string;
  page: string | undefined;
}

const publicDir = fileURLToPath(new URL('./public/', import.meta.url));
const contentTypes: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
/** Files served from npm packages (the page loads nothing from anywhere but this server). */
const vendorFiles: Record<string, string> = {
  'vendor/leaflet.js': createRequire(import.meta.url).resolve('leaflet/dist/leaflet.js'),
  'vendor/leaflet.css': createRequire(import.meta.url).resolve('leaflet/dist/leaflet.css'),
};
const cookieName = 'bwc_console';
const pageIdPattern = /^[A-Za-z0-9_-]{8,64}$/;
/** One MQTT topic level: no separator, no wildcard. */
const topicLevelPattern = /^[^/+#\u0000]{1,128}$/;

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
  readonly #streams = new Map<http.ServerResponse, EventStream>();
  /** Keyed by viewKey(deviceId, sid). */
  readonly #owners = new Map<string, LiveOwner>();
  /** ICE offers are checked one at a time, in arrival order (so a newer `gen` is never overtaken). */
  #offerQueue: Promise<void> = Promise.resolve();
  /** Officer events are stored one at a time, in arrival order. */
  #officerQueue: Promise<void> = Promise.resolve();
  readonly #log: (line: string) => void;
  /** Resolves at once when the caller gave one; camera states wait behind it, in order. */
  readonly archive: Promise<ArchiveLink>;
  readonly #signIn: SignInGuard;
  /** Refusals of broker messages logged so far, by device/channel/what: a flood is logged in counts. */
  readonly #refusals = new Map<string, number>();
  readonly #alerts: AlertList;
  readonly #rules: MisuseRules;
  readonly #tick: NodeJS.Timeout;
  readonly #desk: Promise<FleetAdminDesk>;

  constructor(options: ConsoleOptions) {
    this.#o = options;
    this.#log = options.log ?? ((line) => process.stderr.write(`ops-console: ${line}\n`));
    const log = this.#log;
    this.archive = options.archive
      ? Promise.resolve(options.archive)
      : openArchive('sqlite::memory:').then((archive) => ArchiveLink.open({ fleet: options.fleet, archive, issuerKeyFile: options.issuerKeyFile, issuer: options.issuer, log }));
    this.#signIn = new SignInGuard(options.signInLimits, this.#log);
    // Alerts go to the archive's durable AlertStore (the chain verifier's chain_rollback, chain_fork
    // and untrusted_key alerts are there too), unless the caller gives another list.
    const archived = this.archive;
    this.#alerts = options.alerts ?? {
      insert: async (alert) => (await archived).archive.alerts.insert(alert),
      list: async (filter) => (await archived).archive.alerts.list(filter),
      acknowledge: async (id, by, at) => (await archived).archive.alerts.acknowledge(id, by, at),
    };
    const directory = new Map(options.users.operators().map((o) => [o.operator, o]));
    // The rules hand each alert to the store, then to the pages of those who read alerts.
    const sink: AlertSink = {
      insert: async (alert: NewAlert) => {
        const stored = await this.#alerts.insert(alert);
        this.#log(`alert ${stored.id} ${alert.rule}: ${String(alert.detail.summary)}`);
        this.#broadcastTo(alertReaders, 'alert', stored);
        return stored;
      },
    };
    this.#rules = new MisuseRules(options.rules ?? defaultRulesConfig, (id) => directory.get(id), sink);
    // The desk waits for the archive (its enrolment verdicts); a fleet admin's page hears of each change.
    this.#desk = this.archive.then((link) => new FleetAdminDesk({
      fleet: options.fleet, keyFile: options.fleetAdminKeyFile, issuer: options.issuer, link, log: this.#log,
      onChange: (deviceId) => this.#broadcastTo(['fleet-admin'], 'fleet', { deviceId }),
    }));
    this.#tick = setInterval(() => this.#rules.feed({ kind: 'tick', at: new Date().toISOString() }), options.ruleTickMs ?? 15_000).unref();
    this.#server = http.createServer((req, res) => {
      this.#route(req, res).catch((err: unknown) => {
        const status = err instanceof HttpError ? err.status : 500;
        if (status === 500) this.#log((err as Error).stack ?? String(err));
        if (!res.headersSent) json(res, status, { error: (err as Error).message });
        else res.end();
      });
    });
    options.fleet.on('camera', (record) => {
      this.#rules.feed({ kind: 'state', deviceId: record.deviceId, at: record.receivedAt, online: record.state.online === true, recording: record.state.recording === true });
      this.#forgetEndedViews(record);
      // The page shows whether the state is believed: only with the key pinned at enrolment.
      void this.archive.then((link) => this.#broadcast('camera', { ...record, trust: link.trustFor(record) }));
      this.#broadcastTo(['fleet-admin'], 'fleet', { deviceId: record.deviceId });
    });
    void this.archive.then((link) => link.verifier.on('status', (s) => this.#broadcast('audit', { deviceId: s.deviceId })));
    options.fleet.on('ice-offer', (m) => {
      this.#offerQueue = this.#offerQueue.then(() => this.#iceOffer(m.deviceId, m.sid, m.message)).catch((err: unknown) => this.#log(`ICE offer: ${(err as Error).stack ?? String(err)}`));
    });
    // The rules see only entries the chain verifier accepted, each once: a forged entry on a camera's
    // topic or a repeat after a console restart raises nothing.
    void this.archive.then((link) =>
      link.verifier.on('verified', ({ deviceId, entries }) => {
        for (const entry of entries) this.#rules.feed({ kind: 'audit', deviceId, entry });
      }),
    );
    options.fleet.on('event', ({ deviceId, body }) => {
      this.#rules.feed({ kind: 'event', deviceId, at: body.time, type: body.type });
      // One at a time, in arrival order: an acknowledgement must not overtake the emergency it answers.
      this.#officerQueue = this.#officerQueue.then(async () => {
        const alert = await applyOfficerEvent((await this.archive).archive.officerAlerts, deviceId, body);
        if (!alert) return;
        this.#log(`officer ${body.type.replace(/^officer\./, '')} ${alert.alertId} from ${deviceId}${alert.acknowledgedBy ? ` (acknowledged by ${alert.acknowledgedBy})` : ''}`);
        this.#broadcastTo(officerAlertRoles, 'officer-alert', alert);
      }).catch((err: unknown) => this.#log(`officer event from ${deviceId}: ${(err as Error).stack ?? String(err)}`));
    });
    options.fleet.on('refused', (r) => {
      // The first of each kind, then every 100th with the count: a flood must not flood the log.
      const key = `${r.deviceId}/${r.channel}/${r.verb}/${r.what}`;
      const n = (this.#refusals.get(key) ?? 0) + 1;
      if (this.#refusals.size < 10_000 || this.#refusals.has(key)) this.#refusals.set(key, n);
      if (n === 1 || n % 100 === 0) this.#log(`${r.verb} ${r.what} from ${r.deviceId}: ${r.problem}${n > 1 ? ` (${n} so far)` : ''}`);
    });
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
    clearInterval(this.#tick);
    for (const res of this.#streams.keys()) res.end();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (!this.#o.archive) {
      const link = await this.archive;
      await link.close();
      await link.archive.close();
    }
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
    const session = sessionId(req)!;
    // Every route names the roles it serves (roles.ts); refused before anything is read or signed.
    const refused = roleRefusal(route.replace(/^(GET \/api\/audit\/)[^/]+$/, '$1:deviceId').replace(/^(POST \/api\/alerts\/)[^/]+(\/ack)$/, '$1:id$2').replace(/^(GET \/api\/fleet\/diag\/)[^/]+$/, '$1:id'), operator.roles);
    if (refused) throw new HttpError(403, refused);
    switch (route) {
      case 'GET /api/me':
        return json(res, 200, { operator: operator.operator, name: operator.name, roles: operator.roles, unit: operator.unit, shift: operator.shift });
      case 'POST /api/logout':
        this.#endSession(session);
        res.writeHead(204, { 'set-cookie': `${cookieName}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0` }).end();
        return;
      case 'GET /api/config':
        return json(res, 200, {
          reasons: reasonCatalogue, maxDurationS: this.#o.maxDurationS,
          tiles: this.#o.tileUrl ? { url: this.#o.tileUrl, attribution: this.#o.tileAttribution ?? '' } : null,
          talk: this.#o.talkback !== false && operator.roles.some((r) => talkRoles.includes(r)),
          playoutDelayMs: this.#o.playoutDelayMs ?? defaultPlayoutDelayMs,
          watchMeReason,
        });
      case 'GET /api/officer/alerts':
        return json(res, 200, { alerts: await (await this.archive).archive.officerAlerts.list({ limit: 500 }) });
      case 'POST /api/officer/ack':
        return this.#officerAck(await body(req), operator, res);
      case 'GET /api/alerts':
        return json(res, 200, { alerts: await this.#alerts.list({ limit: 500 }) });
      case 'GET /api/events':
        return this.#events(res, session, url.searchParams.get('page'));
      case 'POST /api/live':
        return this.#startLive(await body(req), operator, session, res);
      case 'POST /api/live/stop':
        return this.#stopLive(await body(req), operator, res);
      case 'POST /api/live/ice':
        return this.#iceAnswer(await body(req), operator, session, res);
    }
    if (route === 'GET /api/report') return this.#report(url, operator, res);
    if (url.pathname.startsWith('/api/fleet/')) return this.#fleetDesk(route, req, operator, res);
    const audit = /^GET \/api\/audit\/([A-Za-z0-9_-]{1,64})$/.exec(route);
    if (audit) return json(res, 200, await (await this.archive).auditView(audit[1]!));
    const ack = /^POST \/api\/alerts\/(\d{1,12})\/ack$/.exec(route);
    if (ack) return this.#acknowledge(Number(ack[1]), operator, res);
    throw new HttpError(404, `no such route: ${route}`);
  }

  async #static(pathname: string, res: http.ServerResponse): Promise<void> {
    const name = pathname === '/' ? 'index.html' : pathname.slice(1);
    const type = contentTypes[path.extname(name)];
    const file = vendorFiles[name] ?? (/^[a-z0-9-]+\.[a-z]+$/.test(name) ? path.join(publicDir, name) : undefined);
    if (!file || !type) throw new HttpError(404, 'not found');
    let content: Buffer | string = await readFile(file).catch(() => {
      throw new HttpError(404, 'not found');
    });
    // Map tiles are the one thing the page loads from elsewhere: the force's own tile server,
    // named in the options, and no other origin (in the header and the page's own meta policy).
    const images = `'self' data:${this.#o.tileUrl ? ` ${new URL(this.#o.tileUrl.replaceAll(/\{[a-z]\}/g, '0')).origin}` : ''}`;
    if (name === 'index.html') content = content.toString('utf8').replace("img-src 'self' data:", `img-src ${images}`);
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-security-policy': `default-src 'self'; media-src 'self' blob:; img-src ${images}` });
    res.end(content);
  }

  async #login(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const { user, password } = await body(req);
    let operator: Operator | undefined;
    if (typeof user === 'string' && typeof password === 'string') {
      try {
        operator = await this.#signIn.attempt(this.#clientAddress(req), user, () => this.#o.users.authenticate(user, password));
      } catch (err) {
        if (!(err instanceof SignInRefused)) throw err;
        res.writeHead(429, { 'content-type': 'application/json', 'cache-control': 'no-store', 'retry-after': String(err.retryAfterS) });
        res.end(JSON.stringify({ error: err.message }));
        return;
      }
    }
    if (!operator) {
      this.#log(`refused sign-in for ${JSON.stringify(String(user ?? '')).slice(0, 80)}`);
      throw new HttpError(401, 'wrong user name or password');
    }
    const id = randomBytes(32).toString('base64url');
    this.#sessions.set(id, { ...operator, lastSeen: Date.now() });
    res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': `${cookieName}=${id}; HttpOnly; SameSite=Strict; Path=/` });
    res.end(JSON.stringify(operator));
  }

  #clientAddress(req: http.IncomingMessage): string {
    const forwarded = this.#o.trustProxy ? String(req.headers['x-forwarded-for'] ?? '').split(',').at(-1)?.trim() : undefined;
    return forwarded || req.socket.remoteAddress || 'unknown';
  }

  #operatorOf(req: http.IncomingMessage): Operator | undefined {
    const id = sessionId(req);
    const session = id ? this.#sessions.get(id) : undefined;
    if (!session) return undefined;
    if (Date.now() - session.lastSeen > (this.#o.sessionIdleMs ?? 8 * 3600_000)) {
      this.#endSession(id!);
      return undefined;
    }
    session.lastSeen = Date.now();
    return session;
  }

  /** A signed-out session's live views are no longer anyone's here; its event streams are closed. */
  #endSession(id: string): void {
    this.#sessions.delete(id);
    for (const [key, owner] of this.#owners) if (owner.session === id) this.#owners.delete(key);
    for (const [res, stream] of this.#streams) if (stream.session === id) res.end();
  }

  /** `page`: an id the page makes for itself, so a restart offer reaches the tab that started the view. */
  #events(res: http.ServerResponse, session: string, page: string | null): void {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    this.#streams.set(res, { session, page: page !== null && pageIdPattern.test(page) ? page : undefined });
    res.on('close', () => this.#streams.delete(res));
    for (const record of this.#o.fleet.cameras.values()) send(res, 'camera', record);
  }

  #broadcast(event: string, data: unknown): void {
    for (const res of this.#streams.keys()) send(res, event, data);
  }

  /** To the pages of sign-ins holding one of these roles only. */
  #broadcastTo(roles: readonly Role[], event: string, data: unknown): void {
    for (const [res, stream] of this.#streams) {
      if (this.#sessions.get(stream.session)?.roles.some((r) => roles.includes(r))) send(res, event, data);
    }
  }

  /** Acknowledged: who and when are kept with the alert and logged; nobody acknowledges an alert about themselves. */
  async #acknowledge(id: number, operator: Operator, res: http.ServerResponse): Promise<void> {
    const current = (await this.#alerts.list({ limit: 100_000 })).find((a) => a.id === id);
    if (!current) throw new HttpError(404, `no alert ${id}`);
    if (current.operator === operator.operator) throw new HttpError(403, 'an alert about you is acknowledged by someone else');
    const alert = await this.#alerts.acknowledge(id, operator.operator);
    if (!alert) throw new HttpError(404, `no alert ${id}`);
    this.#log(`alert ${id} (${alert.rule}) acknowledged by ${alert.acknowledgedBy} at ${alert.acknowledgedAt}`);
    this.#broadcastTo(alertReaders, 'alert', alert);
    json(res, 200, alert);
  }

  /** The fleet-admin desk (fleet-admin.ts), after the role check: its refusals are 400, no key 503. */
  async #fleetDesk(route: string, req: http.IncomingMessage, operator: Operator, res: http.ServerResponse): Promise<void> {
    const desk = await this.#desk;
    const diag = /^GET \/api\/fleet\/diag\/([A-Za-z0-9_-]{1,64})$/.exec(route);
    if (diag) {
      const bundle = desk.bundle(diag[1]!);
      if (!bundle) throw new HttpError(404, `no diagnostics bundle ${diag[1]} (the console keeps the newest few, until it restarts)`);
      this.#log(`${operator.operator} downloaded diagnostics ${bundle.id} of ${bundle.deviceId}`);
      res.writeHead(200, {
        'content-type': 'application/json', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff',
        'content-disposition': `attachment; filename="diag-${bundle.deviceId}-${bundle.id}.json"`, 'x-bwc-sha256': bundle.sha256,
      }).end(bundle.content);
      return;
    }
    if (!(fleetAdminRoutes as readonly string[]).includes(route)) throw new HttpError(404, `no such route: ${route}`);
    const deskRoute = route as FleetAdminRoute;
    if (signingRoutes.includes(deskRoute) && !desk.hasKey) {
      throw new HttpError(503, 'the fleet-admin desk has no key: start the console with --fleet-admin-key FILE (bwc-agent keys generate --actions config.apply,trust.update,agent.update,diag.collect)');
    }
    try {
      json(res, 200, await desk.handle(deskRoute, operator.operator, req.method === 'POST' ? await body(req) : {}));
    } catch (err) {
      if (err instanceof FleetAdminError) throw new HttpError(err.status, err.message);
      throw err;
    }
  }

  /** A view the camera stopped listing (or that is past its time) has ended: forget who owned it. */
  #forgetEndedViews(record: { deviceId: string; state: Record<string, unknown> }): void {
    const streaming = record.state.streaming as { list?: { sid?: unknown }[] } | undefined;
    const listed = new Set((Array.isArray(streaming?.list) ? streaming.list : []).map((v) => v?.sid));
    const now = Date.now();
    for (const [key, owner] of this.#owners) {
      if (now > owner.expiresAt) this.#owners.delete(key);
      // An offline state (the Will) lists nothing, but a camera whose network changed is often
      // reported offline before it reconnects, with its views alive: only an online state counts.
      else if (owner.deviceId !== record.deviceId || record.state.online !== true) continue;
      else if (listed.has(owner.sid)) owner.listed = true;
      else if (owner.listed) this.#owners.delete(key);
    }
  }

  /**
   * A camera's ICE restart offer: forwarded only when the camera's own key signed it, for a live
   * view this console started on that camera, and newer than the last one forwarded; then only to
   * the page (else the sign-in) that started that view. Anything else is logged and dropped.
   */
  async #iceOffer(deviceId: string, sid: string, message: Record<string, unknown>): Promise<void> {
    const drop = (why: string) => this.#log(`dropped an ICE restart offer from ${deviceId} for ${sid}: ${why}`);
    const owner = this.#owners.get(viewKey(deviceId, sid));
    if (!owner || Date.now() > owner.expiresAt) return drop('not a live view this console started on that camera');
    // The key pinned at enrolment, never the one the camera's state carries (anyone who may publish
    // a state could put their own there).
    const publicJwk: JWK | undefined = (await this.archive).pinnedKey(deviceId);
    if (!publicJwk) return drop('the camera is not enrolled (no pinned device key)');
    let offer: Awaited<ReturnType<typeof verifyIceOffer>>;
    try {
      offer = await verifyIceOffer(message, publicJwk);
    } catch (err) {
      return drop((err as Error).message);
    }
    if (offer.sid !== sid) return drop(`its token is for session ${JSON.stringify(offer.sid)}`);
    if (!Number.isInteger(offer.gen) || offer.gen <= owner.offeredGen) return drop(`generation ${offer.gen} is not newer than ${owner.offeredGen}`);
    if (this.#owners.get(viewKey(deviceId, sid)) !== owner) return drop('the live view ended meanwhile');
    owner.offeredGen = offer.gen;
    let pages = 0;
    for (const [res, stream] of this.#streams) {
      if (stream.session !== owner.session || (owner.page !== undefined && stream.page !== owner.page)) continue;
      send(res, 'ice-offer', { deviceId, sid, gen: offer.gen, cause: offer.cause, offer: offer.offer });
      pages++;
    }
    this.#log(`${deviceId} restarted ICE for ${sid} (generation ${offer.gen}, ${offer.cause}): ${pages ? `sent to ${owner.operator}'s page` : `${owner.operator}'s page is not connected`}`);
  }

  /** The page's answer to a restart offer it was sent: signed with the operator as `sub`, published. */
  async #iceAnswer(b: Record<string, unknown>, operator: Operator, session: string, res: http.ServerResponse): Promise<void> {
    const { deviceId, sid, gen, answer } = b;
    if (typeof deviceId !== 'string' || typeof sid !== 'string' || typeof answer !== 'string' || answer === '' || typeof gen !== 'number' || !Number.isInteger(gen) || gen < 1) {
      throw new HttpError(400, 'needs deviceId, sid, gen (a whole number from 1) and answer');
    }
    const owner = this.#owners.get(viewKey(deviceId, sid));
    // The same answer for "no such view" and "someone else's view": sids are not for probing.
    if (!owner || owner.session !== session) throw new HttpError(403, 'this live view was not started by this sign-in');
    if (gen !== owner.offeredGen) throw new HttpError(409, owner.offeredGen ? `generation ${gen} is not the camera's open restart (${owner.offeredGen})` : 'the camera has not restarted this live view');
    const token = await signIceAnswer({ keyFile: this.#o.issuerKeyFile, device: deviceId, sid, generation: gen, answer, operator: operator.operator, issuer: this.#o.issuer });
    await this.#o.fleet.publishIceAnswer(deviceId, sid, { token, answer });
    this.#log(`${operator.operator} answered ${deviceId}'s ICE restart of ${sid} (generation ${gen})`);
    json(res, 200, { ok: true });
  }

  async #startLive(b: Record<string, unknown>, operator: Operator, session: string, res: http.ServerResponse): Promise<void> {
    const { deviceId, reason, offer, page } = b;
    const durationS = b.durationS === undefined || b.durationS === '' ? 300 : Number(b.durationS);
    if (typeof deviceId !== 'string' || typeof reason !== 'string' || typeof offer !== 'string') throw new HttpError(400, 'needs deviceId, reason and offer');
    if (!Number.isInteger(durationS) || durationS < 1 || durationS > this.#o.maxDurationS) throw new HttpError(400, `durationS must be 1 to ${this.#o.maxDurationS}`);
    const talk = b.talk === true;
    if (b.talk !== undefined && typeof b.talk !== 'boolean') throw new HttpError(400, 'talk must be true or false');
    if (talk && this.#o.talkback === false) throw new HttpError(403, 'talk-back is off on this console (--talkback off)');
    if (talk && !operator.roles.some((r) => talkRoles.includes(r))) throw new HttpError(403, `talk-back needs the ${talkRoles.join(' or ')} role`);
    const token = talk
      ? await signTalkStart({ keyFile: this.#o.issuerKeyFile, device: deviceId, operator: operator.operator, issuer: this.#o.issuer, reason, maxS: durationS, offer })
      : await signCommand({ keyFile: this.#o.issuerKeyFile, device: deviceId, action: 'stream.start', reason, operator: operator.operator, issuer: this.#o.issuer, maxS: durationS, offer });
    const reply = await this.#o.fleet.request(deviceId, { token, offer });
    this.#log(`${operator.operator} asked ${deviceId} for a live view (${reason}, ${durationS} s${talk ? ', with talk-back' : ''}): ${reply.ok === true ? 'accepted' : String(reply.code)}`);
    if (reply.ok === true && reason === watchMeReason) {
      // The wearer asked and is now watched: their open watch-me requests are answered, by whom.
      for (const alert of await (await this.archive).archive.officerAlerts.answerWatchMe(deviceId, operator.operator, new Date().toISOString())) {
        this.#log(`watch-me ${alert.alertId} from ${deviceId} answered by ${operator.operator}`);
        this.#broadcastTo(officerAlertRoles, 'officer-alert', alert);
      }
    }
    if (reply.ok === true && typeof reply.sid === 'string' && topicLevelPattern.test(reply.sid) && topicLevelPattern.test(deviceId)) {
      // Past max_s (and a minute of clock skew) the camera has ended it: the entry goes then at the latest.
      this.#owners.set(viewKey(deviceId, reply.sid), {
        deviceId, sid: reply.sid, session, page: typeof page === 'string' && pageIdPattern.test(page) ? page : undefined, operator: operator.operator,
        expiresAt: Date.now() + (durationS + 60) * 1000, offeredGen: 0, listed: false,
      });
    }
    json(res, 200, withWords(reply));
  }

  /**
   * Acknowledge (and with clear: true, end) a wearer's emergency: alert.ack signed for the operator
   * who clicked. Only for an emergency the console holds or the camera's state shows: the camera is
   * not asked about alert ids nobody saw. Shown as acknowledged only when the camera says so.
   */
  async #officerAck(b: Record<string, unknown>, operator: Operator, res: http.ServerResponse): Promise<void> {
    const { deviceId, alertId } = b;
    if (typeof deviceId !== 'string' || !deviceIdPattern.test(deviceId)) throw new HttpError(400, 'deviceId must be a camera id (1 to 64 letters, digits, _ or -)');
    if (typeof alertId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(alertId)) throw new HttpError(400, 'alertId must be the emergency\'s id (1 to 128 printable characters)');
    if (b.clear !== undefined && typeof b.clear !== 'boolean') throw new HttpError(400, 'clear must be true or false');
    const clear = b.clear === true;
    const held = (await (await this.archive).archive.officerAlerts.list({ deviceId, limit: 1000 })).some((a) => a.kind === 'emergency' && a.alertId === alertId);
    const inState = ((this.#o.fleet.cameras.get(deviceId)?.state.officer as { emergency?: { alertId?: unknown } | null } | null | undefined)?.emergency?.alertId) === alertId;
    if (!held && !inState) throw new HttpError(404, `no emergency ${alertId} on ${deviceId}`);
    const token = await signAlertAck({ keyFile: this.#o.issuerKeyFile, issuer: this.#o.issuer, device: deviceId, operator: operator.operator }, alertId, clear);
    const reply = await this.#o.fleet.request(deviceId, { token });
    this.#log(`${operator.operator} ${clear ? 'cleared' : 'acknowledged'} emergency ${alertId} on ${deviceId}: ${reply.ok === true ? 'accepted' : String(reply.code)}`);
    json(res, 200, withWords(reply));
  }

  async #stopLive(b: Record<string, unknown>, operator: Operator, res: http.ServerResponse): Promise<void> {
    const { deviceId, sid } = b;
    if (typeof deviceId !== 'string' || typeof sid !== 'string') throw new HttpError(400, 'needs deviceId and sid');
    // Who started it: this console's record, else the camera's state (which names each view's
    // operator), so a view started before a console restart can still be stopped by its owner.
    const listed = (this.#o.fleet.cameras.get(deviceId)?.state.streaming as { list?: { sid?: unknown; operator?: unknown }[] } | undefined)?.list?.find((v) => v.sid === sid);
    const owner = this.#owners.get(viewKey(deviceId, sid))?.operator ?? (typeof listed?.operator === 'string' ? listed.operator : undefined);
    const duty = operator.roles.includes('duty-officer');
    // The same answer for "no such view" and "someone else's view": sids are not for probing.
    if (owner !== operator.operator && !(duty && owner !== undefined)) throw new HttpError(403, 'not a live view of yours (only its operator or a duty officer may stop it)');
    if (owner !== operator.operator) this.#log(`${operator.operator} stopped ${owner}'s live view ${sid} on ${deviceId} (as duty-officer)`);
    const token = await signCommand({ keyFile: this.#o.issuerKeyFile, device: deviceId, action: 'stream.stop', reason: 'officer-request', operator: operator.operator, issuer: this.#o.issuer, sid });
    const reply = await this.#o.fleet.request(deviceId, { token });
    if (reply.ok === true) this.#owners.delete(viewKey(deviceId, sid));
    json(res, 200, withWords(reply));
  }

  /**
   * The oversight report (ops-console/report.ts): ?from&to[&operator][&deviceId][&unit]&format=json|csv.
   * JSON is signed with the console's key; both download as files.
   */
  async #report(url: URL, operator: Operator, res: http.ServerResponse): Promise<void> {
    let request;
    try {
      request = checkReportRequest(Object.fromEntries(url.searchParams));
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
    const format = url.searchParams.get('format') ?? 'json';
    if (format !== 'json' && format !== 'csv') throw new HttpError(400, `format must be json or csv, not ${JSON.stringify(format)}`);
    const report = await buildReport((await this.archive).archive, request, operator.operator);
    this.#log(`${operator.operator} made an oversight report ${request.from} to ${request.to} (${format})`);
    const name = `oversight-report-${request.from.slice(0, 10)}-${request.to.slice(0, 10)}.${format}`;
    const headers = { 'cache-control': 'no-store', 'content-disposition': `attachment; filename="${name}"`, 'x-content-type-options': 'nosniff' };
    if (format === 'csv') {
      res.writeHead(200, { ...headers, 'content-type': 'text/csv; charset=utf-8' }).end(reportCsv(report));
      return;
    }
    const key = JSON.parse(await readFile(this.#o.reportKeyFile ?? this.#o.issuerKeyFile, 'utf8')) as JWK;
    res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(`${JSON.stringify(await signReport(report, key), null, 2)}\n`);
  }
}

/** Session ids are the camera's: two cameras could, however unlikely, pick the same one. */
function viewKey(deviceId: string, sid: string): string {
  return `${deviceId}/${sid}`;
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

/** An XYZ template over http(s) with {z}, {x} and {y}; the error names the option. */
export function checkTileUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text.replaceAll(/\{[a-z]\}/g, '0'));
  } catch {
    throw new Error(`--tile-url: not a URL: ${JSON.stringify(text)}`);
  }
  if (!/^https?:$/.test(url.protocol) || !['{z}', '{x}', '{y}'].every((p) => text.includes(p))) {
    throw new Error(`--tile-url must be an http(s) XYZ template with {z}, {x} and {y}, e.g. https://tiles.example/{z}/{x}/{y}.png (got ${JSON.stringify(text)})`);
  }
  return text;
}

/** The fleet-admin key must be a private JWK, and not the issuer (stream) key: the error names the flag. */
async function checkFleetAdminKey(file: string, issuerKeyFile: string): Promise<string> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readFile(file, 'utf8')) as JWK;
  } catch (err) {
    throw new Error(`--fleet-admin-key ${file}: ${(err as Error).message}`);
  }
  if (typeof jwk.d !== 'string' || typeof jwk.kid !== 'string') throw new Error(`--fleet-admin-key ${file}: not a private JWK with a kid (bwc-agent keys generate makes one)`);
  const issuer = JSON.parse(await readFile(issuerKeyFile, 'utf8').catch(() => '{}')) as JWK;
  if (issuer.kid === jwk.kid) throw new Error(`--fleet-admin-key ${file} is the --issuer-key: the desk must sign with a key of its own`);
  return file;
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
      archive: { type: 'string' },
      'report-key': { type: 'string' },
      'trust-proxy': { type: 'boolean', default: false },
      rules: { type: 'string' },
      'tile-url': { type: 'string' },
      'tile-attribution': { type: 'string' },
      'fleet-admin-key': { type: 'string' },
      talkback: { type: 'string', default: 'on' },
      'playout-delay-ms': { type: 'string', default: String(defaultPlayoutDelayMs) },
    },
  });
  if (values.talkback !== 'on' && values.talkback !== 'off') throw new Error(`--talkback must be on or off (got ${JSON.stringify(values.talkback)})`);
  const playoutDelayMs = Number(values['playout-delay-ms']);
  if (!Number.isInteger(playoutDelayMs) || playoutDelayMs < 0 || playoutDelayMs > 4000) throw new Error(`--playout-delay-ms must be a whole number of milliseconds, 0 to 4000 (got ${JSON.stringify(values['playout-delay-ms'])})`);
  if (!values['issuer-key'] || !values.users) {
    process.stderr.write('usage: node ops-console/server.ts --issuer-key FILE --users FILE [--broker URL] [--port 8080] [--issuer ISS] [--archive sqlite:FILE|postgres://...]\n');
    process.exit(2);
  }
  // The archive is opened before the broker session is resumed, so what waited there is stored.
  const archiveSpec = values.archive ?? `sqlite:${path.join(path.dirname(path.resolve(values.users)), 'ops-console-archive.sqlite')}`;
  const archive = await openArchive(archiveSpec);
  const log = (line: string) => process.stderr.write(`ops-console: ${line}\n`);
  const fleet = await Fleet.connect(values.broker, values['client-id']);
  const users = UserStore.load(values.users);
  const units = new Map(users.operators().map((o) => [o.operator, o.unit ?? null]));
  const link = await ArchiveLink.open({ fleet, archive, issuerKeyFile: values['issuer-key'], issuer: values.issuer, log, unitOf: (operator) => units.get(operator) ?? null });
  const server = new ConsoleServer({
    fleet, users, issuerKeyFile: values['issuer-key'], issuer: values.issuer, maxDurationS: Number(values['max-duration']),
    archive: link, log, ...(values['report-key'] ? { reportKeyFile: values['report-key'] } : {}),
    trustProxy: values['trust-proxy'],
    rules: values.rules ? parseRulesConfig(JSON.parse(await readFile(values.rules, 'utf8').catch((err: Error) => {
      throw new Error(`--rules ${values.rules}: ${err.message}`);
    })), `--rules ${values.rules}`) : defaultRulesConfig,
    ...(values['tile-url'] ? { tileUrl: checkTileUrl(values['tile-url']) } : {}),
    ...(values['tile-attribution'] ? { tileAttribution: values['tile-attribution'] } : {}),
    talkback: values.talkback === 'on', playoutDelayMs,
    ...(values['fleet-admin-key'] ? { fleetAdminKeyFile: await checkFleetAdminKey(values['fleet-admin-key'], values['issuer-key']) } : {}),
  });
  const url = await server.listen(Number(values.port));
  process.stdout.write(`ops-console: ${url} (broker ${values.broker})\n`);
  const stop = () => {
    void server.close().then(() => fleet.close()).then(() => link.close()).then(() => archive.close()).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  // ops-console/enrol.ts changed the enrolments: read them again (SIGUSR2: SIGHUP must still end the
  // console when its terminal closes, as `make demo` relies on).
  process.on('SIGUSR2', () => void link.reloadEnrolments().then(() => log('enrolments reloaded'), (err: unknown) => log(`enrolments: ${(err as Error).message}`)));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`ops-console: ${(err as Error).message}\n`);
    process.exit(1);
  });
}
