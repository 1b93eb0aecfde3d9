// The werift guard on its own: a real werift DTLS server and client (the camera's and a viewer's
// DTLS stacks) handshake in memory through the guard, then every kind of record the guard must
// refuse is put to it, and the records it must pass are seen to reach werift. A real werift
// StunProtocol on a real UDP socket shows the address check where werift loses the address.
import dgram from 'node:dgram';
import t from 'tap';
import { DtlsClient, DtlsServer, Message, RTCDtlsTransport, StunProtocol } from 'werift';
import { guardProtocol, heldLimit, releaseEarlyDtls, screenDatagram, type Address, type DtlsSocketView, type GuardHooks, type GuardState } from '../src/stream/werift-guard.ts';
import { dtlsRecord } from './helpers/dtls-record.ts';

const viewerAddr: Address = ['192.0.2.10', 40000];
const attackerAddr: Address = ['192.0.2.66', 50000];

const record = dtlsRecord;

/** A record encrypted under `socket`'s association keys, as its peer would decrypt it. */
function encrypted(socket: DtlsClient, contentType: number, sequence: number, plain: Buffer): Buffer {
  const pkt = socket.cipher.encryptPacket({
    recordLayerHeader: { contentType, protocolVersion: { major: 0xfe, minor: 0xfd }, epoch: 1, sequenceNumber: sequence, contentLen: plain.length },
    fragment: plain,
  } as never) as unknown as { fragment: Buffer };
  return record(contentType, 1, sequence, pkt.fragment);
}

/** A werift candidate pair as the guard reads it; state 3 is SUCCEEDED (an authenticated check). */
const pair = (protocol: unknown, addr: Address, state = 3) => ({ protocol, remoteCandidate: { host: addr[0], port: addr[1] }, state });
const nominatedOnly = (protocol: unknown, addr: Address): GuardState['connection'] => {
  const p = pair(protocol, addr);
  return { nominated: p, candidatePairs: [p] };
};

function recorder() {
  const refused: string[] = [];
  const closed: { level: number; description: number }[] = [];
  const hooks: GuardHooks = { refused: (reason) => refused.push(reason), peerClosed: (alert) => closed.push(alert) };
  return { refused, closed, hooks };
}

t.test('DTLS through the guard: a real werift handshake, then what may and may not reach werift', async (t) => {
  const cert = await RTCDtlsTransport.SetupCertificate();
  const protocol = {};
  const { refused, closed, hooks } = recorder();
  type Socket = { type: string; onData?: (buf: Buffer) => void; send: (buf: Buffer) => Promise<void>; close: () => void };
  const serverSocket: Socket = { type: 'udp', send: async (buf) => clientSocket.onData?.(buf), close: () => {} };
  const clientSocket: Socket = { type: 'udp', send: async (buf) => deliver(buf, viewerAddr), close: () => {} };
  const options = { cert: cert.certPem, key: cert.privateKey, signatureHash: cert.signatureHash, srtpProfiles: [1 as const], extendedMasterSecret: true };
  const server = new DtlsServer({ ...options, transport: serverSocket as never, certificateRequest: true });
  const client = new DtlsClient({ ...options, transport: clientSocket as never });
  const state: GuardState = { connection: nominatedOnly(protocol, viewerAddr), dtls: () => server as unknown as DtlsSocketView };
  /** What reaches werift's DTLS server: only what the guard admits. */
  const reached: Buffer[] = [];
  function deliver(buf: Buffer, from: Address): void {
    const admitted = screenDatagram(buf, from, protocol, state, hooks);
    if (admitted === undefined) return;
    reached.push(admitted);
    serverSocket.onData?.(admitted);
  }
  const serverClosed: string[] = [];
  server.onClose.subscribe(() => serverClosed.push('closed'));
  t.teardown(() => {
    server.close();
    client.close();
  });
  await Promise.all([server.onConnect.asPromise(), client.onConnect.asPromise(), client.connect()]);
  t.ok(server.connected, 'the handshake completes through the guard');
  t.same(refused, [], 'nothing of a real handshake is refused');

  await t.test('a plaintext close_notify after the handshake is refused, from any address', async (t) => {
    refused.length = 0;
    const alert = record(21, 0, 40, Buffer.from([1, 0]));
    t.equal(screenDatagram(alert, viewerAddr, protocol, state, hooks), undefined, 'from the viewer address: refused');
    t.equal(screenDatagram(alert, attackerAddr, protocol, state, hooks), undefined, 'from elsewhere: refused');
    t.match(refused, [/plaintext DTLS record \(content type 21, epoch 0\) after the handshake/, /not from an ICE-validated pair/]);
    deliver(alert, viewerAddr);
    t.same(serverClosed, [], 'werift never saw it: its transport is not closed');
    t.same(closed, [], 'no goodbye reported');
  });

  await t.test('an epoch-1 alert that does not decrypt is refused, even shaped as a known alert', async (t) => {
    refused.length = 0;
    // werift reads these first two bytes as level 1 close_notify and skips decrypting it.
    const forged = record(21, 1, 41, Buffer.concat([Buffer.from([1, 0]), Buffer.alloc(30, 7)]));
    t.equal(screenDatagram(forged, viewerAddr, protocol, state, hooks), undefined, 'refused');
    t.match(refused, [/content type 21, epoch 1\) fails authentication/]);
    t.same(closed, []);
  });

  await t.test('a plaintext ClientHello after the handshake is refused; werift keeps its keys', async (t) => {
    refused.length = 0;
    const hello = Buffer.concat([Buffer.from([1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4]), Buffer.from([0xfe, 0xfd, 0, 0])]);
    t.equal(screenDatagram(record(22, 0, 42, hello), viewerAddr, protocol, state, hooks), undefined, 'refused');
    t.match(refused, [/plaintext DTLS record \(content type 22, epoch 0\) after the handshake/]);
    deliver(record(22, 0, 42, hello), attackerAddr);
    deliver(record(22, 0, 42, hello), viewerAddr);
    t.ok(server.connected, 'werift did not restart the handshake (it would on any ClientHello it saw)');
  });

  await t.test('an authenticated renegotiation (encrypted ClientHello) is refused', async (t) => {
    refused.length = 0;
    const hello = Buffer.concat([Buffer.from([1, 0, 0, 4, 0, 1, 0, 0, 0, 0, 0, 4]), Buffer.from([0xfe, 0xfd, 0, 0])]);
    t.equal(screenDatagram(encrypted(client, 22, 43, hello), viewerAddr, protocol, state, hooks), undefined, 'refused');
    t.match(refused, [/renegotiation refused/]);
  });

  await t.test('a datagram mixing records keeps only the admitted ones; an encrypted Finished passes', async (t) => {
    refused.length = 0;
    const finished = encrypted(client, 22, 44, Buffer.concat([Buffer.from([20, 0, 0, 12, 0, 4, 0, 0, 0, 0, 0, 12]), Buffer.alloc(12, 1)]));
    const plaintextCcs = record(20, 0, 45, Buffer.from([1]));
    const out = screenDatagram(Buffer.concat([plaintextCcs, finished]), viewerAddr, protocol, state, hooks);
    t.same(out, finished, 'only the encrypted record is passed on');
    t.match(refused, [/content type 20, epoch 0/]);
    refused.length = 0;
    t.equal(screenDatagram(Buffer.concat([finished, Buffer.from([22, 0xfe])]), viewerAddr, protocol, state, hooks)?.length, finished.length, 'a truncated tail is cut off');
    t.match(refused, [/truncated DTLS record header/]);
  });

  await t.test('an unknown content type (werift would take it for an alert) is refused', async (t) => {
    refused.length = 0;
    t.equal(screenDatagram(record(25, 1, 46, Buffer.alloc(20)), viewerAddr, protocol, state, hooks), undefined);
    t.match(refused, [/content type 25 is not one DTLS 1.2 defines/]);
  });

  await t.test("the viewer's own encrypted close_notify is reported as its goodbye, and not given to werift", async (t) => {
    refused.length = 0;
    t.equal(screenDatagram(encrypted(client, 21, 47, Buffer.from([1, 0])), viewerAddr, protocol, state, hooks), undefined, 'not passed on');
    t.same(closed, [{ level: 1, description: 0 }], 'peerClosed with the alert');
    t.same(refused, [], 'not counted as a refusal');
    closed.length = 0;
    screenDatagram(encrypted(client, 21, 48, Buffer.from([1, 90])), viewerAddr, protocol, state, hooks);
    t.same(closed, [], 'a warning alert (user_canceled) is no goodbye');
  });
});

t.test('before the handshake: handshake records pass, alerts do not', async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const state: GuardState = { connection: nominatedOnly(protocol, viewerAddr), dtls: () => undefined };
  const hello = record(22, 0, 0, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  t.equal(screenDatagram(hello, viewerAddr, protocol, state, hooks), hello, 'a ClientHello from the validated pair passes unchanged');
  t.equal(screenDatagram(record(21, 0, 1, Buffer.from([1, 0])), viewerAddr, protocol, state, hooks), undefined, 'a plaintext alert does not');
  t.match(refused, [/DTLS alert before the handshake completed/]);
  const noPair: GuardState = { connection: { candidatePairs: [] }, dtls: () => undefined };
  t.equal(screenDatagram(hello, viewerAddr, protocol, noPair, hooks), undefined, 'nothing but STUN before a pair is validated');
});

t.test('the address check: STUN from anywhere, everything else only from a validated pair', async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const other = {};
  const state: GuardState = { connection: nominatedOnly(protocol, viewerAddr), dtls: () => undefined };
  // A STUN Binding success response (class 10): werift checks those against its transactions.
  const stun = Buffer.from('010100002112a442000000000000000000000000', 'hex');
  const srtp = Buffer.concat([Buffer.from([0x80, 96]), Buffer.alloc(100)]);
  t.equal(screenDatagram(stun, attackerAddr, protocol, state, hooks), stun, 'a STUN response from anywhere reaches ICE');
  t.equal(screenDatagram(srtp, viewerAddr, protocol, state, hooks), srtp, 'SRTP from the pair: the same buffer, no copy');
  t.equal(screenDatagram(srtp, attackerAddr, protocol, state, hooks), undefined, 'SRTP from another address: refused');
  t.equal(screenDatagram(srtp, [viewerAddr[0], viewerAddr[1] + 1], protocol, state, hooks), undefined, 'another port: refused');
  t.equal(screenDatagram(srtp, viewerAddr, other, state, hooks), undefined, 'the same address on another local socket: refused');
  t.equal(screenDatagram(Buffer.alloc(0), viewerAddr, protocol, state, hooks), undefined, 'an empty datagram: dropped');
  t.equal(refused.length, 3);
});

t.test("STUN requests: only with MESSAGE-INTEGRITY under the camera's ICE password (werift answers any)", async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const state: GuardState = {
    connection: { ...nominatedOnly(protocol, viewerAddr), localPassword: 'camera-password-now', userHistory: { camOld: 'camera-password-before', camNow: 'camera-password-now' } },
    dtls: () => undefined,
  };
  const request = (username: string, password?: string, attributes: [string, unknown][] = []) => {
    const m = new Message(1 as never, 0 as never).setAttribute('USERNAME', username).setAttribute('PRIORITY', 1);
    for (const [k, v] of attributes) m.setAttribute(k as never, v);
    if (password !== undefined) m.addMessageIntegrity(Buffer.from(password, 'utf8'));
    return m.addFingerprint().bytes;
  };
  const viewerCheck = request('camNow:viewer', 'camera-password-now', [['USE-CANDIDATE', null]]);
  t.equal(screenDatagram(viewerCheck, viewerAddr, protocol, state, hooks), viewerCheck, "the viewer's check (our password) passes");
  const fromNewAddress = request('camNow:viewer', 'camera-password-now');
  t.equal(screenDatagram(fromNewAddress, attackerAddr, protocol, state, hooks), fromNewAddress, 'from any address, as ICE needs, when it authenticates');
  const beforeRestart = request('camOld:viewer', 'camera-password-before');
  t.equal(screenDatagram(beforeRestart, viewerAddr, protocol, state, hooks), beforeRestart, "a check of the generation before a restart, under that generation's password");
  t.same(refused, []);
  t.equal(screenDatagram(request('camNow:x', undefined, [['ICE-CONTROLLED', 0n]]), attackerAddr, protocol, state, hooks), undefined, 'no MESSAGE-INTEGRITY (a role-switch attempt): refused');
  t.equal(screenDatagram(request('camNow:x', 'guessed'), attackerAddr, protocol, state, hooks), undefined, 'the wrong password: refused');
  t.equal(screenDatagram(request('camOld:x', 'camera-password-now'), attackerAddr, protocol, state, hooks), undefined, "the other generation's password: refused");
  t.match(refused, [/STUN request without valid MESSAGE-INTEGRITY/, /STUN request without valid MESSAGE-INTEGRITY/, /STUN request without valid MESSAGE-INTEGRITY/]);
});

t.test('another pair the viewer proved with an ICE check is admitted; a pair still being checked is not', async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const switched: Address = ['192.0.2.20', 40002];
  const nominated = pair(protocol, viewerAddr);
  // An attacker's Binding request makes werift pair its address and check it: that check can
  // only succeed with the viewer's ICE password, so the pair stays in progress (2) or fails (4).
  const state: GuardState = {
    connection: { nominated, candidatePairs: [nominated, pair(protocol, switched), pair(protocol, attackerAddr, 2), pair(protocol, ['192.0.2.67', 1], 4)] },
    dtls: () => undefined,
  };
  const srtp = Buffer.concat([Buffer.from([0x80, 96]), Buffer.alloc(100)]);
  t.equal(screenDatagram(srtp, switched, protocol, state, hooks), srtp, 'a succeeded pair the controlling viewer switched to: admitted (RFC 8445 §12.1)');
  t.equal(screenDatagram(srtp, attackerAddr, protocol, state, hooks), undefined, 'an unproven (in-progress) pair: refused');
  t.equal(screenDatagram(srtp, ['192.0.2.67', 1], protocol, state, hooks), undefined, 'a failed pair: refused');
  t.equal(refused.length, 2);
});

t.test('during an ICE restart (werift has no pairs yet) the last nominated pair is still the viewer', async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const connection: GuardState['connection'] = nominatedOnly(protocol, viewerAddr);
  const state: GuardState = { connection, dtls: () => undefined };
  const srtcp = Buffer.concat([Buffer.from([0x80, 201]), Buffer.alloc(40)]);
  t.equal(screenDatagram(srtcp, viewerAddr, protocol, state, hooks), srtcp, 'before the restart');
  connection.nominated = undefined;
  connection.candidatePairs = [];
  t.equal(screenDatagram(srtcp, viewerAddr, protocol, state, hooks), srtcp, 'restarting: the old path still admitted');
  t.equal(screenDatagram(srtcp, attackerAddr, protocol, state, hooks), undefined, 'anyone else still refused');
  const moved: Address = ['192.0.2.30', 40100];
  connection.nominated = pair(protocol, moved);
  connection.candidatePairs = [connection.nominated];
  t.equal(screenDatagram(srtcp, moved, protocol, state, hooks), srtcp, 'the new nominated pair');
  t.equal(screenDatagram(srtcp, viewerAddr, protocol, state, hooks), undefined, 'once it is nominated, the old path no longer');
  t.equal(refused.length, 2);
});

t.test("the viewer's DTLS flight before werift validated its pair: held, screened again when DTLS starts", async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const connection: GuardState['connection'] = { candidatePairs: [pair(protocol, viewerAddr, 2)], localPassword: 'camera-password-now' };
  let socket: DtlsSocketView | undefined;
  const state: GuardState = { connection, dtls: () => socket };
  const check = (password: string) => new Message(1 as never, 0 as never).setAttribute('USERNAME', 'camNow:viewer').setAttribute('PRIORITY', 1).addMessageIntegrity(Buffer.from(password, 'utf8')).addFingerprint().bytes;
  const hello = record(22, 0, 0, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  const delivered: [unknown, Buffer, Address][] = [];
  const deliver = (p: unknown, data: Buffer, from: Address) => delivered.push([p, data, from]);

  t.equal(screenDatagram(hello, viewerAddr, protocol, state, hooks), undefined, 'with no authenticated check from there: not passed');
  t.match(refused, [/not from an ICE-validated pair/], '... and refused as before');
  refused.length = 0;
  // Attacks: a check under a guessed password earns nothing; nor does the viewer's check for a
  // datagram from another address or another local socket.
  screenDatagram(check('guessed'), attackerAddr, protocol, state, hooks);
  t.equal(screenDatagram(hello, attackerAddr, protocol, state, hooks), undefined);
  t.match(refused, [/STUN request without valid MESSAGE-INTEGRITY/, /not from an ICE-validated pair/], 'an outsider with a forged check: refused, not held');
  refused.length = 0;

  t.equal(screenDatagram(check('camera-password-now'), viewerAddr, protocol, state, hooks) !== undefined, true, "the viewer's authenticated check passes");
  t.equal(screenDatagram(hello, viewerAddr, protocol, state, hooks), undefined, 'its ClientHello, before werift validated the pair: not passed yet');
  t.same(refused, [], '... and not refused: held');
  t.equal(screenDatagram(hello, viewerAddr, {}, state, hooks), undefined, 'the same address on another local socket');
  t.match(refused, [/not from an ICE-validated pair/], '... is refused');
  refused.length = 0;
  const flood = Array.from({ length: 50 }, (_, i) => record(22, 0, i + 1, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
  for (const d of flood) screenDatagram(d, viewerAddr, protocol, state, hooks);
  t.equal(state.early?.held.length, heldLimit, `a flood is bounded: the last ${heldLimit} kept`);

  // werift validates the pair and starts DTLS: the held datagrams go through the same screening.
  connection.candidatePairs = [pair(protocol, viewerAddr)];
  connection.nominated = connection.candidatePairs[0];
  socket = { connected: false, cipher: { decryptPacket: () => Buffer.alloc(0) } };
  releaseEarlyDtls(state, hooks, deliver);
  t.same(delivered.map(([p, data, from]) => [p === protocol, data, from]), flood.slice(-heldLimit).map((d) => [true, d, viewerAddr]), 'delivered to their own socket, in order');
  t.same(refused, []);
  releaseEarlyDtls(state, hooks, deliver);
  t.equal(delivered.length, heldLimit, 'released once');
  t.equal(screenDatagram(record(21, 0, 99, Buffer.from([1, 0])), attackerAddr, protocol, state, hooks), undefined, 'after the release nothing is held');
  t.match(refused, [/not from an ICE-validated pair/]);
});

t.test('a held datagram whose pair werift never validated is refused when DTLS starts', async (t) => {
  const { refused, hooks } = recorder();
  const protocol = {};
  const elsewhere: Address = ['192.0.2.40', 40400];
  const connection: GuardState['connection'] = { candidatePairs: [], localPassword: 'pw' };
  let socket: DtlsSocketView | undefined;
  const state: GuardState = { connection, dtls: () => socket };
  const check = new Message(1 as never, 0 as never).setAttribute('USERNAME', 'cam:viewer').setAttribute('PRIORITY', 1).addMessageIntegrity(Buffer.from('pw', 'utf8')).addFingerprint().bytes;
  screenDatagram(check, elsewhere, protocol, state, hooks);
  const hello = record(22, 0, 0, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
  t.equal(screenDatagram(hello, elsewhere, protocol, state, hooks), undefined);
  t.same(refused, [], 'held');
  connection.nominated = pair(protocol, viewerAddr);
  connection.candidatePairs = [connection.nominated];
  socket = { connected: false, cipher: { decryptPacket: () => Buffer.alloc(0) } };
  const delivered: Buffer[] = [];
  releaseEarlyDtls(state, hooks, (_p, data) => delivered.push(data));
  t.same(delivered, [], 'not delivered: its address is not the validated pair');
  t.match(refused, [/not from an ICE-validated pair/], 'refused as it would have been');
});

t.test('guardProtocol on a real werift StunProtocol and UDP socket', async (t) => {
  const protocol = new StunProtocol();
  // Bound to loopback only (werift binds the wildcard address unless told).
  await protocol.connectionMade(true, undefined, { udp4: '127.0.0.1' } as never);
  const port = protocol.getExtraInfo()[1];
  (protocol as unknown as { localCandidate: unknown }).localCandidate = {};
  const viewer = dgram.createSocket('udp4');
  const attacker = dgram.createSocket('udp4');
  await Promise.all([new Promise<void>((r) => viewer.bind(0, '127.0.0.1', r)), new Promise<void>((r) => attacker.bind(0, '127.0.0.1', r))]);
  t.teardown(async () => {
    viewer.close();
    attacker.close();
    await protocol.close();
  });
  const refusedFrom: string[] = [];
  const state: GuardState = { connection: nominatedOnly(protocol, ['127.0.0.1', viewer.address().port]), dtls: () => undefined };
  guardProtocol(protocol, state, { refused: (_reason, from) => refusedFrom.push(`${from[0]}:${from[1]}`), peerClosed: () => {} });
  guardProtocol(protocol, state, { refused: () => t.fail('guarded twice'), peerClosed: () => {} });
  const received: Buffer[] = [];
  protocol.onDataReceived.subscribe((data) => received.push(data));
  const srtp = Buffer.concat([Buffer.from([0x80, 96]), Buffer.alloc(40, 9)]);
  // The attacker's datagram is in the kernel (send callback) before the viewer's is sent: one
  // receiving socket's queue keeps that order, so once the viewer's arrived the attacker's was handled.
  await new Promise<void>((resolve, reject) => attacker.send(Buffer.from([0x81, 96, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  const arrived = new Promise<void>((resolve) => protocol.onDataReceived.subscribe(() => resolve()));
  viewer.send(srtp, port, '127.0.0.1');
  await arrived;
  t.same(received, [srtp], "only the viewer's datagram reached werift");
  t.same(refusedFrom, [`127.0.0.1:${attacker.address().port}`], "the attacker's was refused, naming its address");
});
