// The start-up warm-up (src/stream/warm-up.ts): one WebRTC handshake between two peer connections
// inside the agent, so the first live view does not pay for compiling werift. It must stay on the
// machine (every socket bound to 127.0.0.1, no STUN or TURN server), leave no socket behind, and end
// at once when the agent stops.
import dgram from 'node:dgram';
import t from 'tap';
import { warmUpWebrtc } from '../src/stream/warm-up.ts';
import { udpSockets } from './helpers/udp-sockets.ts';

t.test('one handshake over loopback only, media across, nothing left open', async (t) => {
  const before = udpSockets('self');
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
  t.same([...udpSockets('self')].sort(), [...before].sort(), 'no UDP socket left open');
});

t.test('an abort (the agent stopping) ends it at once and closes its sockets', async (t) => {
  const before = udpSockets('self');
  const stop = new AbortController();
  const run = warmUpWebrtc(10_000, stop.signal);
  stop.abort();
  await t.rejects(run, /stopped/);
  t.same([...udpSockets('self')].sort(), [...before].sort(), 'no UDP socket left open');
});
