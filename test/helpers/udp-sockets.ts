// A process's UDP sockets, by inode: its /proc/<pid>/fd links against /proc/net/udp and udp6. For
// tests that a process opened (or left) no UDP socket.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export function udpSockets(pid: number | 'self'): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // fd closed meanwhile
    }
  }
  const udp = new Set<string>();
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const inode = line.trim().split(/\s+/)[9];
      if (inode && inodes.has(inode)) udp.add(inode);
    }
  }
  return udp;
}
