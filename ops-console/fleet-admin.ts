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
import { signCommand } from '../src/cli/fleet-tools.ts';
import type { Fleet } from './fleet.ts';

export const fleetAdminRole = 'fleet-admin';

/** The desk's routes, for roles.ts's routeRoles (each: [fleetAdminRole]). */
export const fleetAdminRoutes = ['GET /api/fleet/cameras', 'POST /api/fleet/config', 'POST /api/fleet/revoke'] as const;
export type FleetAdminRoute = (typeof fleetAdminRoutes)[number];

export interface CameraConfigRow {
  deviceId: string;
  online: boolean;
  agentVersion: string | null;
  /** state.config: null for a camera whose agent predates remote configuration. */
  config: { version: number; digest: string; pending: boolean; trustDigest: string } | null;
}

export interface FleetAdminDeskOptions {
  fleet: Pick<Fleet, 'cameras' | 'request'>;
  /** The fleet-admin issuer's private JWK file (bwc-agent keys generate --actions config.apply,trust.update,diag.collect). */
  keyFile: string;
  issuer?: string | undefined;
  log: (line: string) => void;
}

/** A request the desk refuses before signing anything: the server answers it 400. */
export class FleetAdminError extends Error {
  override name = 'FleetAdminError';
  readonly status = 400;
}

const deviceIdPattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export class FleetAdminDesk {
  readonly #o: FleetAdminDeskOptions;

  constructor(o: FleetAdminDeskOptions) {
    this.#o = o;
  }

  cameras(): CameraConfigRow[] {
    return [...this.#o.fleet.cameras.values()]
      .map(({ deviceId, state }) => ({
        deviceId,
        online: state.online === true,
        agentVersion: typeof state.agentVersion === 'string' ? state.agentVersion : null,
        config: (state.config as CameraConfigRow['config'] | undefined) ?? null,
      }))
      .sort((a, b) => (a.deviceId < b.deviceId ? -1 : 1));
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
    }
  }

  #deviceId(body: Record<string, unknown>): string {
    if (typeof body.deviceId !== 'string' || !deviceIdPattern.test(body.deviceId)) throw new FleetAdminError('needs deviceId');
    return body.deviceId;
  }

  async #send(operator: string, deviceId: string, action: string, params: unknown): Promise<Record<string, unknown>> {
    const token = await signCommand({ keyFile: this.#o.keyFile, device: deviceId, action, reason: 'fleet-maintenance', operator, issuer: this.#o.issuer, params });
    return this.#o.fleet.request(deviceId, { token });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
