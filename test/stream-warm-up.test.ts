// The start-up warm-up (src/stream/warm-up.ts): one WebRTC handshake between two peer connections
// inside the agent, so the first live view does not pay for compiling werift. It must stay on the
// machine (every socket bound to 127.0.0.1, no STUN or TURN server), leave no socket behind, and end
// at once when the agent stops.
import dgram from 'node:dgram';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import t from 'tap';
import { warmUpWebrtc } from '../src/stream/warm-up.ts';

/** This process's UDP sockets, by inode. */
function udpSockets(): Set<string> {
  const mine = new Set<string>();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
      if (m) mine.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const udp = new Set<string>();
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const inode = line.trim().split(/\s+/)[9];
      if (inode && mine.has(inode)) udp.add(inode);
    }
  }
  return udp;
}

t.test('one handshake over loopback only, media across, nothing left open', async (t) => {
  const before = udpSockets();
  const bound: unknown[] = [];
  const original = dgram.Socket.prototype.bind;
  dgram.Socket.prototype.bind = function (this: dgram.Socket, ...args: unknown[]) {
    const first = args[0];
    bound.push(typeof first === 'object' && first !== null ? (first as { address?: string }).address : args[1]);
    return (original as (...a: unknown[]) => dgram.Socket).apply(this, args);
  } as typeof original;
  t.teardown(() => {
    dgram.Socket.prototype.bind = original;
  });
  const { handshakeMs } = await warmUpWebrtc();
  t.ok(handshakeMs > 0, `handshake and first SRTP packet across in ${handshakeMs} ms`);
  t.ok(bound.length >= 2, `both ends bound sockets (${bound.length})`);
  t.same([...new Set(bound)], ['127.0.0.1'], 'every socket bound to 127.0.0.1: nothing can leave the machine');
  t.same([...udpSockets()].sort(), [...before].sort(), 'no UDP socket left open');
});

t.test('an abort (the agent stopping) ends it at once and closes its sockets', async (t) => {
  const before = udpSockets();
  const stop = new AbortController();
  const run = warmUpWebrtc(10_000, stop.signal);
  stop.abort();
  await t.rejects(run, /stopped/);
  t.same([...udpSockets()].sort(), [...before].sort(), 'no UDP socket left open');
});
