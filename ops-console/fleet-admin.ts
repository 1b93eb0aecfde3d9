// The fleet-admin desk of the ops console (issue 17, part 5): what a user holding the
// `fleet-admin` role (h/oversight's ops-console/roles.ts; a sign-in role apart from supervisors)
// sees and does: each camera's running config version and digest (its retained `state.config`),
// a config change, a revoked issuer key. It signs with its own fleet-admin key, never the
// console's everyday stream key: a camera obeys config.apply and trust.update only from a key
// holding them (docs/protocol.md, "Fleet management"). Every request is logged here by who asked
// and what the camera answered; the camera audits each one in its chain.
//
// Kept in its own file so the server wires it with a few lines: the routes below go in
// roles.ts's routeRoles with ['fleet-admin'], and the server hands them to handle().
import { createHash } from 'node:crypto';
import type { JWK } from 'jose';
import { jwkThumbprint } from '../src/audit/verify.ts';
import { signCommand } from '../src/cli/fleet-tools.ts';
import type { ArchiveLink, CameraTrust } from './archive-link.ts';
import type { CameraRecord, Fleet } from './fleet.ts';

export const fleetAdminRole = 'fleet-admin';

/** The desk's routes, for roles.ts's routeRoles (each: [fleetAdminRole]). */
export const fleetAdminRoutes = [
  'GET /api/fleet/cameras', 'POST /api/fleet/config', 'POST /api/fleet/revoke', 'POST /api/fleet/update',
  'POST /api/fleet/diag', 'GET /api/fleet/diag/:id', 'POST /api/fleet/enrol',
] as const;
export type FleetAdminRoute = (typeof fleetAdminRoutes)[number];

export interface CameraConfigRow {
  deviceId: string;
  online: boolean;
  agentVersion: string | null;
  /** state.config: null for a camera whose agent predates remote configuration. */
  config: { version: number; digest: string; pending: boolean; trustDigest: string } | null;
  /** Whether the console trusts this camera's state: enrolled, and with the enrolled key. */
  enrolment: { state: 'enrolled' | 'not-enrolled' | 'different-key' | 'no-key'; enrolledKid: string | null; stateKid: string | null; problem: string | null };
  /** The newest update.* event the camera published (its progress), with the ones before it. */
  update: { type: string; time: string; version: string | null; detail: Record<string, unknown> }[];
}

/** The routes that sign with the fleet-admin key: without one they answer 503. */
export const signingRoutes: readonly FleetAdminRoute[] = ['POST /api/fleet/config', 'POST /api/fleet/revoke', 'POST /api/fleet/update', 'POST /api/fleet/diag'];

export interface FleetAdminDeskOptions {
  fleet: Pick<Fleet, 'cameras' | 'request'> & Partial<Pick<Fleet, 'requestChunks' | 'on'>>;
  /** The fleet-admin issuer's private JWK file (bwc-agent keys generate --actions config.apply,trust.update,diag.collect,agent.update). */
  keyFile: string | undefined;
  /** Enrolment: the archive link (trust verdicts, pinning); without it rows say not-enrolled and enrol is refused. */
  link?: Pick<ArchiveLink, 'trustFor' | 'pinnedKey' | 'enrol'> | undefined;
  issuer?: string | undefined;
  log: (line: string) => void;
  /** Something a fleet admin's page shows changed (an update's progress, an enrolment). */
  onChange?: (deviceId: string) => void;
}

/** A request the desk refuses before signing anything: the server answers it 400. */
export class FleetAdminError extends Error {
  override name = 'FleetAdminError';
  readonly status: number = 400;
}

/** The desk has no fleet-admin key: the server answers 503 naming the flag. */
export class FleetAdminUnavailable extends FleetAdminError {
  override name = 'FleetAdminUnavailable';
  override readonly status = 503;
}

/** A collected diagnostics bundle, reassembled from the camera's chunks and checked against its reply. */
export interface DiagBundle {
  id: string;
  deviceId: string;
  bytes: number;
  sha256: string;
  collectedBy: string;
  collectedAt: string;
  content: Buffer;
}

/** Update events kept per camera (the progress of one update is under a dozen). */
const updateEventsKept = 12;
/** Bundles kept for download (each at most 1 MiB, the camera's own bound). */
const diagBundlesKept = 16;
const diagIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

const deviceIdPattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export class FleetAdminDesk {
  readonly #o: FleetAdminDeskOptions;

  readonly #updates = new Map<string, CameraConfigRow['update']>();
  readonly #bundles = new Map<string, DiagBundle>();

  constructor(o: FleetAdminDeskOptions) {
    this.#o = o;
    // The camera tells an update's progress on its event topic (update.downloading ... committed).
    o.fleet.on?.('event', ({ deviceId, body }) => {
      if (!body.type.startsWith('update.')) return;
      const { type, time, version, ...detail } = body;
      const list = [...(this.#updates.get(deviceId) ?? []), { type, time, version: typeof version === 'string' ? version : null, detail }].slice(-updateEventsKept);
      this.#updates.set(deviceId, list);
      this.#o.onChange?.(deviceId);
    });
  }

  get hasKey(): boolean {
    return this.#o.keyFile !== undefined;
  }

  cameras(): CameraConfigRow[] {
    return [...this.#o.fleet.cameras.values()]
      .map((record) => {
        const { deviceId, state } = record;
        return {
          deviceId,
          online: state.online === true,
          agentVersion: typeof state.agentVersion === 'string' ? state.agentVersion : null,
          config: (state.config as CameraConfigRow['config'] | undefined) ?? null,
          enrolment: this.#enrolment(record),
          update: this.#updates.get(deviceId) ?? [],
        };
      })
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1));
  }

  #enrolment(record: CameraRecord): CameraConfigRow['enrolment'] {
    const stateKid = kidOf(record.state.devicePublicKey);
    const enrolledKid = (() => {
      const pinned = this.#o.link?.pinnedKey(record.deviceId);
      return pinned ? kidOf(pinned) : null;
    })();
    const trust: CameraTrust | undefined = this.#o.link?.trustFor(record);
    const state = enrolledKid === null ? (stateKid === null ? 'no-key' : 'not-enrolled') : stateKid !== null && stateKid !== enrolledKid ? 'different-key' : 'enrolled';
    return { state, enrolledKid, stateKid, problem: trust?.problem ?? null };
  }

  /**
   * Confirms a camera's first-seen key: {deviceId, kid}, the kid the admin saw in the row. The key
   * pinned is the one the camera's current state carries, and only if its kid is the one confirmed
   * (a state that changed between the look and the click is not pinned unseen). A camera already
   * enrolled with another key is re-pinned only with replace: true.
   */
  async enrol(operator: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const deviceId = this.#deviceId(body);
    if (typeof body.kid !== 'string' || body.kid === '' || body.kid.length > 256) throw new FleetAdminError('needs kid, the device key id shown for the camera');
    if (!this.#o.link) throw new FleetAdminUnavailable('enrolment needs the console\'s archive');
    const record = this.#o.fleet.cameras.get(deviceId);
    if (!record) throw new FleetAdminError(`no state seen from ${deviceId}: nothing to confirm`);
    const jwk = record.state.devicePublicKey;
    const stateKid = kidOf(jwk);
    if (stateKid === null) throw new FleetAdminError(`${deviceId}'s state carries no device key`);
    if (stateKid !== body.kid) throw new FleetAdminError(`${deviceId}'s state now carries key ${stateKid}, not the ${body.kid} confirmed: look again`);
    const pinned = this.#o.link.pinnedKey(deviceId);
    const before = pinned ? kidOf(pinned) : null;
    if (before === stateKid) return { ok: true, deviceId, kid: stateKid, already: true };
    if (before !== null && body.replace !== true) throw new FleetAdminError(`${deviceId} is enrolled with key ${before}: re-pinning to ${stateKid} needs replace: true`);
    const { x } = jwk as { x: string };
    const e = await this.#o.link.enrol(deviceId, { kty: 'OKP', crv: 'Ed25519', x }, operator);
    this.#o.log(`${operator} enrolled ${deviceId} with its first-seen device key ${e.kid} at ${e.enrolledAt}${before ? ` (replacing ${before})` : ''}`);
    this.#o.onChange?.(deviceId);
    return { ok: true, deviceId, kid: e.kid, enrolledBy: e.enrolledBy, enrolledAt: e.enrolledAt, replaced: before };
  }

  /** {deviceId, release (as `bwc-agent release sign` printed it), force?}. */
  async update(operator: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const deviceId = this.#deviceId(body);
    const r = body.release;
    if (!isObject(r) || typeof r.version !== 'string' || typeof r.url !== 'string' || typeof r.sha256 !== 'string' || typeof r.signature !== 'string') {
      throw new FleetAdminError('needs release: the JSON `bwc-agent release sign` prints ({version, url, sha256, signature})');
    }
    if (body.force !== undefined && typeof body.force !== 'boolean') throw new FleetAdminError('force must be true or false');
    const release = { version: r.version, url: r.url, sha256: r.sha256, signature: r.signature };
    this.#updates.delete(deviceId);
    const reply = await this.#send(operator, deviceId, 'agent.update', undefined, { release, ...(body.force === true ? { force: true } : {}) });
    this.#o.log(`${operator} sent ${deviceId} an update to ${release.version}${body.force === true ? ' (force)' : ''}: ${reply.ok === true ? String(reply.status ?? 'accepted') : String(reply.code)}`);
    return reply;
  }

  /** {deviceId, maxBytes?}: the camera's bundle, reassembled and checked; kept for download. */
  async diag(operator: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const deviceId = this.#deviceId(body);
    if (body.maxBytes !== undefined && (!Number.isSafeInteger(body.maxBytes) || (body.maxBytes as number) < 1024 || (body.maxBytes as number) > 1024 * 1024)) {
      throw new FleetAdminError('maxBytes must be a whole number from 1024 to 1048576');
    }
    if (!this.#o.fleet.requestChunks) throw new FleetAdminUnavailable('diagnostics need the console\'s broker link');
    const token = await this.#sign(operator, deviceId, 'diag.collect', body.maxBytes === undefined ? {} : { maxBytes: body.maxBytes });
    const { reply, chunks } = await this.#o.fleet.requestChunks(deviceId, { token }, (first) => {
      const b = first.bundle as { chunks?: unknown } | undefined;
      return first.ok === true && Number.isSafeInteger(b?.chunks) && (b!.chunks as number) >= 0 && (b!.chunks as number) <= 128 ? (b!.chunks as number) : 0;
    });
    if (reply.ok !== true) {
      this.#o.log(`${operator} asked ${deviceId} for diagnostics: ${String(reply.code)}`);
      return reply;
    }
    const meta = reply.bundle as { id: string; bytes: number; sha256: string; chunks: number };
    const parts: Buffer[] = [];
    for (let i = 0; i < chunks.length; i++) {
      const d = chunks[i]?.diag as { id?: unknown; part?: unknown; data?: unknown } | undefined;
      // Parts are numbered from 0 or 1 by the camera; what matters is their order and the digest.
      if (!d || d.id !== meta.id || typeof d.data !== 'string') return { ok: false, code: 'diag_incomplete', message: `part ${i + 1} of ${meta.chunks} is missing or not for bundle ${meta.id}` };
      parts.push(Buffer.from(d.data, 'base64'));
    }
    const content = Buffer.concat(parts);
    const digest = createHash('sha256').update(content);
    const sha256 = digest.copy().digest('hex');
    // The camera announces base64url (src/fleet/diagnostics.ts); the desk shows hex, as sha256sum prints it.
    if (content.length !== meta.bytes || (digest.digest('base64url') !== meta.sha256 && sha256 !== meta.sha256)) {
      this.#o.log(`${operator} asked ${deviceId} for diagnostics: bundle ${meta.id} did not reassemble (${content.length} bytes, sha256 ${sha256})`);
      return { ok: false, code: 'diag_mismatch', message: `the chunks make ${content.length} bytes with SHA-256 ${sha256}, not the ${meta.bytes} bytes ${meta.sha256} the camera announced` };
    }
    const id = diagIdPattern.test(meta.id) ? meta.id : createHash('sha256').update(meta.id).digest('hex').slice(0, 32);
    this.#bundles.set(id, { id, deviceId, bytes: content.length, sha256, collectedBy: operator, collectedAt: new Date().toISOString(), content });
    while (this.#bundles.size > diagBundlesKept) this.#bundles.delete(this.#bundles.keys().next().value!);
    this.#o.log(`${operator} collected diagnostics from ${deviceId}: ${content.length} bytes, sha256 ${sha256}`);
    return { ok: true, deviceId, id, bytes: content.length, sha256, download: `/api/fleet/diag/${id}` };
  }

  /** A collected bundle, for download (undefined: none by that id). */
  bundle(id: string): DiagBundle | undefined {
    return this.#bundles.get(id);
  }

  /** {deviceId, patch, base} (a merge patch on version base) or {deviceId, document}. */
  async applyConfig(operator: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const deviceId = this.#deviceId(body);
    let config: Record<string, unknown>;
    if (isObject(body.document)) config = { document: body.document };
    else if (isObject(body.patch) && Number.isSafeInteger(body.base)) config = { patch: body.patch, base: body.base };
    else throw new FleetAdminError('needs deviceId and either document, or patch with base (the camera\'s config version)');
    const reply = await this.#send(operator, deviceId, 'config.apply', config);
    this.#o.log(`${operator} applied a config change to ${deviceId}: ${reply.ok === true ? `${String(reply.applied)} as version ${String(reply.version)}` : String(reply.code)}`);
    return reply;
  }

  async revokeKey(operator: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
    const deviceId = this.#deviceId(body);
    if (typeof body.kid !== 'string' || body.kid === '' || body.kid.length > 256) throw new FleetAdminError('needs kid, the key id to revoke');
    const reply = await this.#send(operator, deviceId, 'trust.update', { revoke: [body.kid] });
    this.#o.log(`${operator} revoked key ${JSON.stringify(body.kid)} on ${deviceId}: ${reply.ok === true ? 'done' : String(reply.code)}`);
    return reply;
  }

  /** One of fleetAdminRoutes, after the server has checked the fleet-admin role. */
  async handle(route: FleetAdminRoute, operator: string, body: Record<string, unknown>): Promise<unknown> {
    switch (route) {
      case 'GET /api/fleet/cameras':
        return { cameras: this.cameras() };
      case 'POST /api/fleet/config':
        return this.applyConfig(operator, body);
      case 'POST /api/fleet/revoke':
        return this.revokeKey(operator, body);
      case 'POST /api/fleet/update':
        return this.update(operator, body);
      case 'POST /api/fleet/diag':
        return this.diag(operator, body);
      case 'POST /api/fleet/enrol':
        return this.enrol(operator, body);
      case 'GET /api/fleet/diag/:id':
        throw new FleetAdminError('a bundle is downloaded from the server, not handled here');
    }
  }

  #deviceId(body: Record<string, unknown>): string {
    if (typeof body.deviceId !== 'string' || !deviceIdPattern.test(body.deviceId)) throw new FleetAdminError('needs deviceId');
    return body.deviceId;
  }

  async #sign(operator: string, deviceId: string, action: string, params: unknown, extra: { release?: unknown; force?: boolean } = {}): Promise<string> {
    if (this.#o.keyFile === undefined) throw new FleetAdminUnavailable('the fleet-admin desk has no key: start the console with --fleet-admin-key FILE (a key made by bwc-agent keys generate --actions config.apply,trust.update,agent.update,diag.collect)');
    return signCommand({ keyFile: this.#o.keyFile, device: deviceId, action, reason: 'fleet-maintenance', operator, issuer: this.#o.issuer, ...(params === undefined ? {} : { params }), ...extra } as Parameters<typeof signCommand>[0]);
  }

  async #send(operator: string, deviceId: string, action: string, params: unknown, extra: { release?: unknown; force?: boolean } = {}): Promise<Record<string, unknown>> {
    const token = await this.#sign(operator, deviceId, action, params, extra);
    return this.#o.fleet.request(deviceId, { token });
  }
}

function kidOf(jwk: unknown): string | null {
  if (!isObject(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') return null;
  try {
    return jwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x } as JWK);
  } catch {
    return null;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
