// Which process sends to the live RTP socket. The capture worker's udpsink sends from an ephemeral
// loopback port, and any local process could send to ours: before a packet from a new source port
// is taken, the port must belong to a UDP socket the worker itself holds. Linux only (/proc), as
// the agent is; checked once per source port, not per packet.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Inodes of the UDP sockets bound to `port` on any local address (udpsink binds the wildcard, v4 or v6). */
function udpInodes(port: number): Set<string> {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch (err) {
      if (table.endsWith('6') && (err as NodeJS.ErrnoException).code === 'ENOENT') continue; // no IPv6 in this kernel
      throw err;
    }
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(suffix) && f[9]) inodes.add(f[9]);
    }
  }
  return inodes;
}

/**
 * True if process `pid` holds a UDP socket bound to `port` (the sender of a packet from 127.0.0.1:port). Throws when /proc cannot be
 * read (the caller then refuses the packets and says why).
 */
export function udpPortOwnedBy(pid: number, port: number): boolean {
  const inodes = udpInodes(port);
  if (inodes.size === 0) return false;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m && inodes.has(m[1]!)) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}
