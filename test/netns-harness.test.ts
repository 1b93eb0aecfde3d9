// The harness for "live view over a bad 4G link" tests, tested for real: a camera namespace on
// a veth pair (netns.ts), loss/bandwidth/UDP-block impairments and a change of address, coturn
// over UDP, TCP and TLS (coturn.ts) used from inside the namespace, and the userspace delay relay
// (udp-delay-relay.ts). No timing thresholds: counts are chosen so a false failure needs a
// vanishingly unlikely coin-flip run, and delay is checked only as a lower bound.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { startCoturn, turnProbeIn, type Coturn } from './helpers/coturn.ts';
import { createCameraNetwork, type CameraNetwork } from './helpers/netns.ts';
import { UdpDelayRelay } from './helpers/udp-delay-relay.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- programs run inside the namespace (plain CommonJS for `node -e`) --------------------------

// UDP echo server on 0.0.0.0 (so it survives a change of address); prints its port.
const ECHO_JS = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.on('error', () => {});
s.bind(0, '0.0.0.0', () => console.log('PORT ' + s.address().port));
setTimeout(() => process.exit(0), 120000);
`;

// Sends datagrams: argv[1] = JSON [{address, port, count, size}], argv[2] = gap in ms every 10 sends.
const SEND_JS = `
const s = require('node:dgram').createSocket('udp4');
s.on('error', () => {});
const plan = JSON.parse(process.argv[1]);
const gap = Number(process.argv[2]);
(async () => {
  let sent = 0;
  for (const p of plan) {
    for (let i = 0; i < p.count; i++) {
      const b = Buffer.alloc(Math.max(8, p.size), 0x61);
      b.write(String(i).padStart(8, '0'));
      await new Promise((res) => s.send(b, p.port, p.address, () => res()));
      if (++sent % 10 === 0 && gap > 0) await new Promise((res) => setTimeout(res, gap));
    }
  }
  s.close();
})();
`;

function nodeInNs(net: CameraNetwork, script: string, args: string[]): ChildProcess {
  const [cmd, ...pre] = net.prefix;
  return spawn(cmd as string, [...pre, process.execPath, '-e', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

async function echoInNs(net: CameraNetwork): Promise<{ port: number; stop(): Promise<void> }> {
  const child = nodeInNs(net, ECHO_JS, []);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`echo server in ${net.ns} did not start: ${out}`)), 15_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`echo server in ${net.ns} exited: ${out}`));
    });
  });
  return {
    port,
    async stop() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

async function sendFromNs(net: CameraNetwork, plan: { address: string; port: number; count: number; size?: number }[], gapMs = 1) {
  const r = await net.run(process.execPath, ['-e', SEND_JS, JSON.stringify(plan.map((p) => ({ size: 32, ...p }))), String(gapMs)], {
    timeoutMs: 120_000,
  });
  if (r.code !== 0) throw new Error(`sender in ${net.ns} failed (${r.code}): ${r.stderr}`);
}

/** A UDP socket in the root namespace counting what arrives. */
async function collector(address: string): Promise<{ port: number; count(): number; bytes(): number; close(): Promise<void> }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  let bytes = 0;
  s.on('message', (m) => {
    n++;
    bytes += m.length;
  });
  await new Promise<void>((resolve) => s.bind(0, address, () => resolve()));
  return {
    port: s.address().port,
    count: () => n,
    bytes: () => bytes,
    close: () => new Promise<void>((resolve) => s.close(() => resolve())),
  };
}

/** A UDP echo server in the root namespace. */
async function rootEcho(address: string): Promise<{ port: number; received(): number; close(): Promise<void> }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  s.on('message', (m, r) => {
    n++;
    s.send(m, r.port, r.address);
  });
  await new Promise<void>((resolve) => s.bind(0, address, () => resolve()));
  return { port: s.address().port, received: () => n, close: () => new Promise<void>((resolve) => s.close(() => resolve())) };
}

/** Where every echo is expected back, the wait ends when they are: a long settle is only a hang guard. */
const ALL_BACK_SETTLE_MS = 10_000;

/**
 * Sends count numbered datagrams to dest (paced), waits until every one came back or settleMs
 * passed with nothing new, and returns the ids that came back, in arrival order.
 */
async function echoes(dest: { address: string; port: number }, count: number, settleMs = 1500): Promise<number[]> {
  const s = dgram.createSocket('udp4');
  s.on('error', () => {});
  const got: number[] = [];
  let last = performance.now();
  s.on('message', (m) => {
    got.push(Number(m.toString('utf8', 0, 8)));
    last = performance.now();
  });
  await new Promise<void>((resolve) => s.bind(0, () => resolve()));
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve) => s.send(String(i).padStart(8, '0'), dest.port, dest.address, () => resolve()));
    if (i % 10 === 9) await sleep(1);
  }
  last = performance.now();
  const hardStop = performance.now() + 30_000;
  while (got.length < count && performance.now() - last < settleMs && performance.now() < hardStop) {
    await sleep(20);
    // After a stall, Node runs due timers before reading the socket: let the poll phase read what
    // arrived first, or a stall longer than settleMs would end the wait with echoes still unread.
    await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return got;
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

// ------------------------------------------------------------------------------------------------

t.test('camera namespace: veth, loss, bandwidth cap, UDP block, change of address', { timeout: 180_000 }, async (t) => {
  const net = await createCameraNetwork();
  t.teardown(() => net.destroy());
  const echo = await echoInNs(net);
  t.teardown(() => echo.stop());

  t.match(net.ns, /^bwcnet-\d+-\d+$/);
  t.ok(net.hostInterface.length <= 15 && net.cameraInterface.length <= 15, 'interface names fit IFNAMSIZ');
  t.match(net.hostAddress, /^10\.77\.\d+\.1$/);
  t.equal(net.cameraAddress, net.hostAddress.replace(/\.1$/, '.2'));

  const links = await net.run('ip', ['-o', 'link', 'show', 'up']);
  t.match(links.stdout, /\blo:/, 'lo is up inside the namespace');
  const routes = await net.run('ip', ['route', 'show', 'default']);
  t.match(routes.stdout, `default via ${net.hostAddress}`, 'default route via the root side');

  await t.test('UDP echo across the veth, both ways', async (t) => {
    const ids = await echoes({ address: net.cameraAddress, port: echo.port }, 50, ALL_BACK_SETTLE_MS);
    t.equal(ids.length, 50, 'root → namespace → root: all 50 echoed');
    const rEcho = await rootEcho(net.hostAddress);
    await sendFromNs(net, [{ address: net.hostAddress, port: rEcho.port, count: 20 }]);
    await waitFor(() => rEcho.received() === 20, 10_000, '20 datagrams from the namespace');
    t.equal(rEcho.received(), 20, 'namespace → root: all 20 arrived');
    await rEcho.close();
  });

  await t.test('random loss with iptables statistic, each direction, and clearLoss', async (t) => {
    // 50% of 200: P(all or none arrive) = 2^-199, P(outside 1..199) is the only way to fail.
    const N = 200;
    await net.setLoss({ percent: 50, direction: 'egress', protocol: 'udp' });
    const egress = await echoes({ address: net.cameraAddress, port: echo.port }, N, 800);
    t.ok(egress.length > 0 && egress.length < N, `egress 50%: ${egress.length}/${N} echoes came back`);

    await net.setLoss({ percent: 50, direction: 'ingress' });
    const ingress = await echoes({ address: net.cameraAddress, port: echo.port }, N, 800);
    t.ok(ingress.length > 0 && ingress.length < N, `ingress 50%: ${ingress.length}/${N} echoes came back`);

    await net.setLoss({ percent: 100, direction: 'both' });
    t.same(await echoes({ address: net.cameraAddress, port: echo.port }, 20, 500), [], '100% both ways: nothing');

    const rules = await net.run('iptables', ['-S']);
    t.match(rules.stdout, /statistic --mode random --probability 1/, 'the rule lives in the namespace');

    await net.clearLoss();
    const clear = await echoes({ address: net.cameraAddress, port: echo.port }, N, ALL_BACK_SETTLE_MS);
    t.equal(clear.length, N, 'after clearLoss all come back');
  });

  for (const kind of ['tbf', 'htb'] as const) {
    await t.test(`bandwidth cap (${kind}) on the camera uplink drops a flood`, async (t) => {
      await net.capBandwidth(500, { kind });
      const before = await net.qdiscStats();
      t.equal(before.kind, kind, `root qdisc is ${kind}`);
      if (kind === 'htb') t.ok(before.all.some((q) => q.kind === 'bfifo'), 'with a bfifo leaf');

      const sink = await collector(net.hostAddress);
      const started = performance.now();
      // 1500 × 1200 B = 1.8 MB offered in well under a second: ~30 s worth at 500 kbit/s.
      await sendFromNs(net, [{ address: net.hostAddress, port: sink.port, count: 1500, size: 1200 }], 0);
      await sleep(400); // let the small queue drain
      const elapsedS = (performance.now() - started) / 1000;
      const stats = await net.qdiscStats();
      t.ok(stats.dropped > 0, `dropped ${stats.dropped}`);
      t.ok(stats.sentPackets > 0 && stats.sentBytes > 0, `sent ${stats.sentPackets} packets, ${stats.sentBytes} bytes`);
      t.ok(sink.count() > 0 && sink.count() < 1500, `${sink.count()}/1500 arrived`);
      // An upper bound (noise can only make it looser): what got through fits the cap plus bucket and queue.
      const allowed = (500_000 / 8) * elapsedS * 1.5 + 64_000;
      t.ok(sink.bytes() <= allowed, `${sink.bytes()} B through in ${elapsedS.toFixed(2)} s, cap allows ≤ ${Math.round(allowed)}`);
      await sink.close();

      await net.clearCap();
      t.not((await net.qdiscStats()).kind, kind, 'clearCap removes it');
      await net.clearCap(); // idempotent
    });
  }

  await t.test('blockUdp drops direct UDP but passes the excepted destination', async (t) => {
    const direct = await collector(net.hostAddress);
    const allowed = await collector(net.hostAddress);
    t.teardown(() => Promise.all([direct.close(), allowed.close()]).then(() => undefined));
    const plan = [
      { address: net.hostAddress, port: direct.port, count: 20 },
      { address: net.hostAddress, port: allowed.port, count: 20 },
    ];

    await net.blockUdp({ exceptTo: [{ address: net.hostAddress, port: allowed.port }] });
    await sendFromNs(net, plan);
    await waitFor(() => allowed.count() === 20, 10_000, 'the excepted destination');
    await sleep(300);
    t.equal(allowed.count(), 20, 'excepted destination got all 20');
    t.equal(direct.count(), 0, 'direct destination got none');
    t.equal((await echoes({ address: net.cameraAddress, port: echo.port }, 5, 500)).length, 0, 'echo replies are blocked too');
    const lo = await net.run(process.execPath, ['-e', `
      const d = require('node:dgram'); const a = d.createSocket('udp4'); const b = d.createSocket('udp4');
      a.bind(0, '127.0.0.1', () => { a.on('message', () => { console.log('LO OK'); process.exit(0); });
        b.send('x', a.address().port, '127.0.0.1'); });
      setTimeout(() => process.exit(1), 5000);`]);
    t.match(lo.stdout, 'LO OK', "the namespace's own lo still carries UDP");

    await net.blockAllUdp();
    await sendFromNs(net, plan);
    await sleep(500);
    t.equal(allowed.count(), 20, 'blockAllUdp: the former exception is blocked too');

    await net.unblockUdp();
    await sendFromNs(net, plan);
    await waitFor(() => direct.count() === 20 && allowed.count() === 40, 10_000, 'datagrams after unblock');
    t.pass('unblockUdp: both destinations get theirs');
  });

  await t.test('changeAddress moves the camera to a new subnet', async (t) => {
    const old = { host: net.hostAddress, camera: net.cameraAddress };
    const next = await net.changeAddress();
    t.not(next.cameraAddress, old.camera);
    t.not(next.cameraAddress.split('.')[2], old.camera.split('.')[2], 'a different subnet');
    t.equal(net.cameraAddress, next.cameraAddress);
    t.equal(net.hostAddress, next.hostAddress);
    const addrs = await net.run('ip', ['-o', '-4', 'addr', 'show', 'dev', net.cameraInterface]);
    t.match(addrs.stdout, `${next.cameraAddress}/24`);
    t.notMatch(addrs.stdout, `${old.camera}/`, 'old camera address removed');
    t.match((await net.run('ip', ['route', 'show', 'default'])).stdout, `via ${next.hostAddress}`);

    t.equal((await echoes({ address: next.cameraAddress, port: echo.port }, 20, ALL_BACK_SETTLE_MS)).length, 20, 'reachable at the new address');
    t.equal((await echoes({ address: old.camera, port: echo.port }, 5, 1000)).length, 0, 'not at the old one');
    // The old host address stays, so a server on it (a TURN server, say) is still reachable.
    const rEcho = await rootEcho(old.host);
    await sendFromNs(net, [{ address: old.host, port: rEcho.port, count: 5 }]);
    await waitFor(() => rEcho.received() === 5, 10_000, 'camera → old host address');
    t.pass('camera still reaches the old host address via its new route');
    await rEcho.close();
  });

  await echo.stop();
  await net.destroy();
  await net.destroy(); // idempotent
  const nsList = await new Promise<string>((resolve) => {
    const c = spawn('ip', ['netns', 'list'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let o = '';
    c.stdout.on('data', (d: Buffer) => (o += d.toString()));
    c.once('close', () => resolve(o));
  });
  t.notMatch(nsList, net.ns, 'namespace removed');
  const link = spawn('ip', ['link', 'show', net.hostInterface], { stdio: 'ignore' });
  t.not(await new Promise((resolve) => link.once('close', resolve)), 0, 'host veth removed');
});

t.test('coturn: TURN over UDP, TCP and TLS from inside the camera namespace', { timeout: 120_000 }, async (t) => {
  // Installing Debian's coturn must not leave a system-wide turnserver on every interface.
  const ss = spawn('ss', ['-H', '-lnut', 'sport = :3478 or sport = :5349'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let ssOut = '';
  ss.stdout.on('data', (d: Buffer) => (ssOut += d.toString()));
  await new Promise((resolve) => ss.once('close', resolve));
  t.equal(ssOut.trim(), '', 'nothing listens on the default TURN ports 3478/5349 (no system coturn.service running)');

  const net = await createCameraNetwork();
  t.teardown(() => net.destroy());
  let turn: Coturn | undefined;
  t.teardown(() => turn?.stop());
  turn = await startCoturn({ listenAddress: net.hostAddress });
  t.match(turn.urls.udp, new RegExp(`^turn:${net.hostAddress.replace(/\./g, '\\.')}:\\d+\\?transport=udp$`));
  t.match(turn.urls.tcp, /\?transport=tcp$/);
  t.match(turn.urls.tls, /^turns:.*\?transport=tcp$/);

  const peer = await rootEcho(net.hostAddress);
  t.teardown(() => peer.close());
  const base = { username: turn.username, password: turn.password, peer: [net.hostAddress, peer.port] as [string, number], timeoutMs: 10_000 };

  for (const transport of ['udp', 'tcp', 'tls'] as const) {
    const port = transport === 'tls' ? turn.tlsPort : turn.port;
    const r = await turnProbeIn(net.prefix, {
      ...base,
      transport,
      server: [net.hostAddress, port],
      payload: `hello over ${transport}`,
      ...(transport === 'tls' ? { caFile: turn.caFile } : {}),
    });
    t.equal(r.reply, `hello over ${transport}`, `${transport}: the peer's answer came back through the relay`);
    t.equal(r.relayedAddress[0], net.hostAddress, `${transport}: relayed on the listen address`);
    t.equal(r.mappedAddress[0], net.cameraAddress, `${transport}: the server saw the camera's address`);
  }
  t.ok(turn.allocations() >= 3, `coturn logged ${turn.allocations()} successful allocations`);

  await t.rejects(
    // The certificate error comes at once; the deadline is a hang guard (a loaded machine's deadline
    // could win, and the error would say "timed out" instead).
    turnProbeIn(net.prefix, { ...base, transport: 'tls', server: [net.hostAddress, turn.tlsPort], payload: 'x', timeoutMs: 30_000 }),
    /self[- ]signed certificate/i,
    'TLS without trusting the certificate fails',
  );

  // Long-term credentials are enforced (werift retries a 401 until its deadline rather than failing fast).
  // The log line is awaited alongside the probe: coturn writes it only when the credentialed Allocate
  // arrives, which a cold probe process on a loaded machine may not reach before a short deadline.
  const rejectedLogged = turn.waitForLog(/credentials are incorrect/, 30_000);
  await t.rejects(
    turnProbeIn(net.prefix, { ...base, password: 'wrong', transport: 'udp', server: [net.hostAddress, turn.port], payload: 'x', timeoutMs: 10_000 }),
    'a wrong password gets no allocation',
  );
  await rejectedLogged;
  t.pass('coturn logged the rejected credentials');

  // TURN-only: direct UDP blocked, the TURN server's UDP port excepted.
  await net.blockUdp({ exceptTo: [{ address: net.hostAddress, port: turn.port }] });
  const before = peer.received();
  await sendFromNs(net, [{ address: net.hostAddress, port: peer.port, count: 5 }]);
  await sleep(300);
  t.equal(peer.received(), before, 'direct UDP from the camera to the peer is blocked');
  const r = await turnProbeIn(net.prefix, { ...base, transport: 'udp', server: [net.hostAddress, turn.port], payload: 'via relay' });
  t.equal(r.reply, 'via relay', 'TURN over UDP still reaches the peer');
  await net.unblockUdp();

  const pid = turn.pid;
  await turn.stop();
  await turn.stop(); // idempotent
  t.throws(() => process.kill(-(pid as number), 0), 'turnserver process group gone after stop()');
  await net.destroy();
});

t.test('UdpDelayRelay: delay lower bound, order, loss, stop', { timeout: 120_000 }, async (t) => {
  const net = await createCameraNetwork();
  t.teardown(() => net.destroy());
  const echo = await echoInNs(net);
  t.teardown(() => echo.stop());

  // Root-side client → relay (root, on the host address) → echo in the camera namespace.
  const relay = new UdpDelayRelay({
    listen: { address: net.hostAddress, port: 0 },
    target: { address: net.cameraAddress, port: echo.port },
    upstreamDelayMs: 100,
    downstreamDelayMs: 100,
  });
  t.teardown(() => relay.stop());
  const at = await relay.start();
  t.ok(at.port > 0);

  await t.test('each round trip takes at least the two one-way delays', async (t) => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, () => resolve()));
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const sent = performance.now();
      const reply = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no echo through the relay in 10 s')), 10_000);
        s.once('message', () => {
          clearTimeout(timer);
          resolve();
        });
      });
      s.send(`ping${i}`, at.port, at.address);
      await reply;
      rtts.push(performance.now() - sent);
    }
    await new Promise<void>((resolve) => s.close(() => resolve()));
    t.ok(rtts.every((r) => r >= 200), `RTTs ${rtts.map((r) => r.toFixed(1)).join(', ')} ms all ≥ 200 ms`);

    relay.setDelay({ upstreamMs: 30, downstreamMs: 20 });
    t.same(relay.delay, { upstreamMs: 30, downstreamMs: 20 });
  });

  await t.test('order is preserved, also when the delay drops mid-stream', async (t) => {
    relay.setDelay(150);
    const s = dgram.createSocket('udp4');
    const got: number[] = [];
    s.on('message', (m) => got.push(Number(m.toString())));
    await new Promise<void>((resolve) => s.bind(0, () => resolve()));
    let firstReplyAt = 0;
    s.once('message', () => (firstReplyAt = performance.now()));
    const base = relay.counters().upstream.received;
    const sentAt = performance.now();
    for (let i = 0; i < 100; i++) {
      if (i === 50) {
        // The delay applies when a datagram reaches the relay: wait until the first 50 are
        // queued at 150 ms, then drop it to 0. The later ones must still wait behind them.
        await waitFor(() => relay.counters().upstream.received - base >= 50, 10_000, 'the first 50 at the relay');
        relay.setDelay(0);
      }
      await new Promise<void>((resolve) => s.send(String(i), at.port, at.address, () => resolve()));
    }
    await waitFor(() => got.length === 100, 15_000, '100 echoes');
    await new Promise<void>((resolve) => s.close(() => resolve()));
    t.same(got, Array.from({ length: 100 }, (_, i) => i), 'all 100 in send order');
    t.ok(firstReplyAt - sentAt >= 150, `first echo after ${(firstReplyAt - sentAt).toFixed(1)} ms (≥ 150 ms upstream delay)`);
  });

  await t.test('loss per direction and counters', async (t) => {
    relay.setDelay(0);
    const c0 = relay.counters();
    relay.setLoss({ upstream: 0.5 });
    const up = await echoes(at, 200, 800);
    const c1 = relay.counters();
    t.ok(up.length > 0 && up.length < 200, `50% upstream loss: ${up.length}/200 came back`);
    t.equal(c1.upstream.dropped - c0.upstream.dropped + (c1.upstream.forwarded - c0.upstream.forwarded), 200, 'every upstream datagram counted once');
    relay.setLoss({ upstream: 0, downstream: 0.5 });
    const down = await echoes(at, 200, 800);
    const c2 = relay.counters();
    t.ok(down.length > 0 && down.length < 200, `50% downstream loss: ${down.length}/200 came back`);
    t.equal(c2.downstream.forwarded - c1.downstream.forwarded, down.length, 'downstream forwarded = echoes received');
    t.ok(c2.downstream.dropped > c1.downstream.dropped);
    relay.setLoss(0);
    t.equal((await echoes(at, 100, ALL_BACK_SETTLE_MS)).length, 100, 'no loss: all back');
    t.ok(relay.counters().clients >= 1, 'one upstream socket per client');
    t.throws(() => relay.setLoss(1.5));
  });

  await relay.stop();
  await relay.stop(); // idempotent
  t.equal(relay.counters().clients, 0, 'stop closed the client sockets');
  t.equal((await echoes(at, 5, 500)).length, 0, 'nothing relayed after stop');
});
