// Turns the `stream.ice` settings into what one peer connection needs, at the moment it is made:
// interface addresses change (a modem reconnects, Wi-Fi joins) and TURN passwords are rotated, so
// neither is read once at start-up.
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { StreamConfig } from './config.ts';
import { errorMessage } from '../errors.ts';

export interface ResolvedIce {
  servers: { urls: string[]; username?: string; credential?: string }[];
  transportPolicy: 'all' | 'relay';
  /** IPv4 addresses offered as host candidates. */
  hostAddresses: string[];
  portRange: [number, number] | undefined;
  /** CA certificate(s) a turns: server's certificate must chain to (stream.ice.turnCaFile). */
  turnTlsCa?: string;
}

export class IceConfigError extends Error {
  readonly code = 'no_network';
  override readonly name = 'IceConfigError';
}

type Interfaces = ReturnType<typeof os.networkInterfaces>;

/** IPv4 addresses of the named interfaces, or of every non-loopback one when none is named. */
export function hostAddresses(names: readonly string[], interfaces: Interfaces = os.networkInterfaces()): string[] {
  const out: string[] = [];
  const wanted = names.length > 0 ? names : Object.keys(interfaces);
  for (const name of wanted) {
    for (const a of interfaces[name] ?? []) {
      if (a.family !== 'IPv4') continue;
      if (names.length === 0 && a.internal) continue;
      if (!out.includes(a.address)) out.push(a.address);
    }
  }
  return out;
}

export async function resolveIce(ice: StreamConfig['ice'], interfaces?: Interfaces): Promise<ResolvedIce> {
  const addresses = hostAddresses(ice.interfaces, interfaces);
  if (addresses.length === 0 && ice.servers.length === 0) {
    const which = ice.interfaces.length > 0 ? `stream.ice.interfaces ${JSON.stringify(ice.interfaces)}` : 'any interface';
    throw new IceConfigError(`no IPv4 address on ${which} and no TURN server: the viewer could not reach the camera`);
  }
  const servers = await Promise.all(
    ice.servers.map(async (s) => {
      const server: ResolvedIce['servers'][number] = { urls: s.urls };
      if (s.username !== undefined) server.username = s.username;
      if (s.credentialFile !== undefined) {
        try {
          server.credential = (await readFile(s.credentialFile, 'utf8')).trim();
        } catch (err) {
          throw new IceConfigError(`stream.ice.servers credentialFile ${s.credentialFile}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
        }
      }
      return server;
    }),
  );
  let turnTlsCa: string | undefined;
  if (ice.turnCaFile !== undefined) {
    try {
      turnTlsCa = await readFile(ice.turnCaFile, 'utf8');
    } catch (err) {
      throw new IceConfigError(`stream.ice.turnCaFile ${ice.turnCaFile}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
    }
  }
  return {
    ...(turnTlsCa === undefined ? {} : { turnTlsCa }),
    servers,
    transportPolicy: ice.transportPolicy,
    hostAddresses: addresses,
    portRange: ice.portRange ? [ice.portRange.min, ice.portRange.max] : undefined,
  };
}
