// Threat: anyone with UDP reach to the camera's ICE port (it is in the answer SDP the camera sends
// the viewer) tries to end or disturb a live view without being the viewer: a plaintext DTLS
// close_notify alert, a spoofed ClientHello (renegotiation), junk, and unauthenticated STUN
// Binding requests (one that werift would answer, one with ICE-CONTROLLED that would switch the
// camera's ICE role), each from a fresh UDP socket that is not one of the viewer's ICE pairs. None of them may end the session, reset its DTLS
// state or be audited as the viewer leaving: the viewer keeps decoding, and the session ends only
// by what the viewer or the operator really does (an authenticated close, stream.stop).
//
// Real pieces: the agent process (real GStreamer pipeline, werift), mosquitto, headless Chromium.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { Message } from 'werift';
import { type Viewer } from '../helpers/chromium-viewer.ts';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { dtlsRecord } from '../helpers/dtls-record.ts';
import { startLiveViewRig } from '../helpers/agent-on-broker.ts';

const deviceId = 'cam-udp-attack';

type AuditEntry = { type: string; operator: string | null; reason: string | null; detail: Record<string, unknown> };


/** (a) The 15-byte plaintext close_notify: content type 21 (alert), epoch 0, level 1 (warning), description 0. */
const closeNotify = () => dtlsRecord(21, 0, 7, Buffer.from([1, 0]));

/**
 * (b) A well-formed ClientHello (content type 22, epoch 0) such as any DTLS client sends first:
 * no cookie, the two ECDHE-GCM suites a browser offers, and the extensions werift's own client
 * sends (use_srtp, supported_groups, signature_algorithms, extended_master_secret,
 * renegotiation_info), so the camera's DTLS parses it as a genuine new handshake.
 */
function clientHello(): Buffer {
  const extensions = Buffer.from(
    '000e00050002000100' + // use_srtp: SRTP_AES128_CM_HMAC_SHA1_80, no MKI
      '000a00060004001d0017' + // supported_groups: x25519, secp256r1
      '000d0006000404010403' + // signature_algorithms: rsa_pkcs1_sha256, ecdsa_secp256r1_sha256
      '00170000' + // extended_master_secret
      'ff01000100', // renegotiation_info (empty)
    'hex',
  );
  const body = Buffer.concat([
    Buffer.from([0xfe, 0xfd]), // client_version DTLS 1.2
    randomBytes(32), // random
    Buffer.from([0]), // session_id: empty
    Buffer.from([0]), // cookie: empty
    Buffer.from('0004c02bc02f', 'hex'), // cipher suites
    Buffer.from([1, 0]), // compression: null
    Buffer.from([extensions.length >> 8, extensions.length & 0xff]),
    extensions,
  ]);
  const handshake = Buffer.alloc(12);
  handshake.writeUInt8(1, 0); // client_hello
  handshake.writeUIntBE(body.length, 1, 3);
  handshake.writeUInt16BE(0, 4); // message_seq
  handshake.writeUIntBE(0, 6, 3); // fragment_offset
  handshake.writeUIntBE(body.length, 9, 3); // fragment_length
  return dtlsRecord(22, 0, 1, Buffer.concat([handshake, body]));
}

/** (c) Junk in the DTLS range of the first byte (RFC 7983: 20-63), so it is not taken for STUN or RTP. */
const junk = () => Buffer.concat([Buffer.from([23]), randomBytes(60)]);

/** Sends one datagram from a fresh socket (a new source port each time: never the viewer's pair). */
async function sendFromFreshSocket(port: number, datagram: Buffer): Promise<void> {
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => socket.send(datagram, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
  } finally {
    socket.close();
  }
}

/** The camera's host candidate port from its answer: the one place the viewer (and an attacker) learns it. */
function icePort(answer: string): number {
  const m = /^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host/im.exec(answer);
  if (!m) throw new Error(`no 127.0.0.1 host candidate in the answer:\n${answer}`);
  return Number(m[1]);
}

t.test('spoofed UDP to the ICE port neither ends nor disturbs a live view', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { recorder, agent, viewers, fleet } = await startLiveViewRig(t, {
    deviceId,
    issuers: [issuer],
    config: {
      commands: { maxConcurrentStreams: 2 },
      capture: { width: 320, height: 240, framerate: 15, bitrateKbps: 300 },
      stream: { ice: { interfaces: ['lo'] }, viewerLostGrace: 10, connectTimeout: 20 },
    },
  });

  const auditEntries = () => recorder.on('audit').map((m) => m.json?.entry as AuditEntry | undefined).filter((e): e is AuditEntry => e !== undefined);
  const stopEntries = (sid: string) => auditEntries().filter((e) => e.type === 'stream.stop' && e.detail.sid === sid);
  const waitForStop = async (sid: string, timeoutMs: number, what: string): Promise<AuditEntry> => {
    await recorder.waitFor(() => stopEntries(sid).length > 0, timeoutMs, what);
    return stopEntries(sid)[0]!;
  };
  const watch = async (): Promise<{ viewer: Viewer; sid: string; port: number; answer: string }> => {
    const viewer = await viewers.open();
    const offer = await viewer.createOffer();
    const command = makeCommand({ issuer, deviceId, action: 'stream.start', offer, overrides: { sub: 'insp-0042', reason: 'public-safety' } });
    const reply = await fleet.request(deviceId, command.payload);
    t.match(reply, { ok: true, sid: /^s-/, answer: /^v=0/ }, 'stream.start accepted with an answer');
    await viewer.applyAnswer(reply.answer!);
    await viewer.waitForVideo((v) => v.framesDecoded > 5, 20_000, 'decoded frames');
    return { viewer, sid: reply.sid!, port: icePort(reply.answer!), answer: reply.answer! };
  };
  /** Frames keep decoding: 30 more (2 s at 15 fps) after the datagrams were sent. */
  const keepsDecoding = async (viewer: Viewer, what: string) => {
    const before = (await viewer.inboundVideo()).framesDecoded;
    await viewer.waitForVideo((v) => v.framesDecoded >= before + 30, 15_000, what);
  };
  // Each datagram the guard refuses is logged with why (debug): the test waits on that line, so it
  // knows the agent has handled the datagram before it looks at the outcome.
  const refusals = (reason: string) => agent.output.split('\n').filter((l) => l.includes('"msg":"datagram refused"') && l.includes(reason)).length;
  const waitForRefusals = async (reason: string, count: number) => {
    // `count` log lines (in any field order) that are a refusal with that reason.
    await agent.waitForOutput(new RegExp(`(?:^(?=[^\\n]*"msg":"datagram refused")(?=[^\\n]*${reason})[^]*?){${count}}`, 'm'), 10_000);
  };

  await t.test('a spoofed ClientHello and junk: the DTLS association survives, the real hang-up still ends it as viewer_closed', async (t) => {
    const { viewer, sid, port } = await watch();
    const before = refusals('not from an ICE-validated pair');
    await sendFromFreshSocket(port, junk());
    await sendFromFreshSocket(port, clientHello());
    await keepsDecoding(viewer, 'frames keep decoding after a spoofed ClientHello and junk');
    t.same(stopEntries(sid), [], 'no stream end audited for the spoofed datagrams');
    // An association the ClientHello had reset could not decrypt the viewer's (encrypted) close_notify.
    await viewer.hangUp();
    const stop = await waitForStop(sid, 20_000, 'the viewer hung up');
    t.equal(stop.detail.cause, 'viewer_closed', "the viewer's own authenticated close ends it as viewer_closed, at once");
    await waitForRefusals('not from an ICE-validated pair', before + 2);
    t.pass('the agent refused both datagrams as not from an ICE-validated pair');
    await viewer.vanish();
  });

  await t.test('a plaintext close_notify from a fresh port: the viewer keeps decoding, no end is audited', async (t) => {
    const { viewer, sid, port } = await watch();
    const before = refusals('not from an ICE-validated pair');
    await sendFromFreshSocket(port, closeNotify());
    await keepsDecoding(viewer, 'frames keep decoding after a spoofed close_notify');
    t.same(stopEntries(sid), [], 'no stream end audited for a spoofed close_notify');
    await waitForRefusals('not from an ICE-validated pair', before + 1);
    t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.stop', overrides: { sid, sub: 'insp-0042' } }).payload), { ok: true, sid });
    const stop = await waitForStop(sid, 10_000, 'stream.stop audited');
    t.equal(stop.detail.cause, 'stream_stop', 'the one end audited for the session is the operator stream.stop');
    t.equal(stopEntries(sid).length, 1, 'exactly one end for the session');
    await viewer.vanish();
  });

  await t.test('unauthenticated STUN Binding requests: not answered, no ICE role change; the view carries on', async (t) => {
    const { viewer, sid, port, answer } = await watch();
    const cameraUfrag = /^a=ice-ufrag:(\S+)/m.exec(answer)![1]!;
    // USERNAME as a real check has it ("<camera ufrag>:<viewer ufrag>", the camera's from the
    // answer), but no MESSAGE-INTEGRITY: the attacker does not have the camera's ICE password.
    const binding = (role: [string, unknown][] = []) => {
      const m = new Message(1 as never, 0 as never).setAttribute('USERNAME', `${cameraUfrag}:evil`).setAttribute('PRIORITY', 1_853_824_767);
      for (const [k, v] of role) m.setAttribute(k as never, v);
      return m.addFingerprint().bytes;
    };
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    t.teardown(() => socket.close());
    const received: Buffer[] = [];
    socket.on('message', (m) => received.push(m));
    const answered = new Promise<string>((resolve) => socket.once('message', () => resolve('answered')));
    const before = refusals('STUN request');
    const send = (d: Buffer, toPort: number) => new Promise<void>((resolve, reject) => socket.send(d, toPort, '127.0.0.1', (err) => (err ? reject(err) : resolve())));
    await send(binding(), port);
    // werift (controlled) switches to controlling for an ICE-CONTROLLED with a lower tie-breaker.
    await send(binding([['ICE-CONTROLLED', 0n]]), port);
    const outcome = await Promise.race([answered, waitForRefusals('STUN request', before + 2).then(() => 'refused')]);
    t.equal(outcome, 'refused', 'the camera refused both rather than answering (a Binding response, or checks sent to the attacker)');
    // Anything the camera had sent this socket would be queued before a datagram it sends itself.
    const sentinel = Buffer.from('sentinel');
    const sentinelSeen = new Promise<void>((resolve) => socket.on('message', (m) => m.equals(sentinel) && resolve()));
    await send(sentinel, socket.address().port);
    await sentinelSeen;
    t.same(received, [sentinel], 'nothing from the camera reached the attacker');
    await keepsDecoding(viewer, 'frames keep decoding after the STUN requests');
    t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.stop', overrides: { sid, sub: 'insp-0042' } }).payload), { ok: true, sid });
    const stop = await waitForStop(sid, 10_000, 'stream.stop audited');
    t.equal(stop.detail.cause, 'stream_stop', 'the one end audited is the operator stream.stop');
    await viewer.vanish();
  });
});
