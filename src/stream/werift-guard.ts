// What werift 0.25.2 lacks, patched here at run time on one session's objects (node_modules is not
// edited): werift hands every non-STUN datagram that reaches an ICE socket to DTLS and SRTP
// whatever its source address (StunProtocol.datagramReceived and StunOverTurnProtocol.
// handleStunMessage drop the address before Connection.onData), and its DTLS then
//   - closes the transport on ANY alert record, plaintext (epoch 0) or not, and for an encrypted
//     one skips decryption when its first two ciphertext bytes happen to read as a known alert
//     (record/receive.ts "TODO impl more better about handle encrypted alert"), so it never
//     authenticates an alert; an unknown content type is treated as an alert too;
//   - restarts the handshake (DtlsSocket.renegotiation(): new keys, `connected` false) on any
//     ClientHello after the handshake, plaintext included.
// Its ICE also answers STUN requests without checking their MESSAGE-INTEGRITY (Connection.
// ensureProtocol's onRequestReceived handler): anyone can get a Binding response, make the camera
// send checks to an address of their choosing, and switch the camera's ICE role with an
// ICE-CONTROLLED attribute (RFC 8445 §7.3.1.1 repair, done for an unauthenticated request).
// So one unauthenticated datagram from any address could end or reset a live view. The guard
// sits between the ICE socket and werift's parsing (the address is still known there) and lets
// through only:
//   - STUN from any address (checks come from new addresses by design), but a STUN request only
//     with MESSAGE-INTEGRITY under the camera's ICE password (RFC 8445 §7.3: which werift skips);
//   - any other datagram only from the remote address and local socket of the nominated pair, or
//     of another pair the viewer proved with an authenticated ICE check (fromValidatedPair);
//   - of DTLS records from such a pair: before the handshake completes, handshake traffic (no
//     alerts: nothing is authenticated yet, and a viewer that gives up falls silent anyway);
//     after it, only encrypted records that decrypt under the association's keys, no
//     ClientHello/HelloRequest (no renegotiation), and alerts never to werift: an authenticated
//     close_notify or fatal alert is reported to the session (`peerClosed`), which ends it.
// Everything refused is reported with the reason (`refused`), so it can be logged and counted.
//
// One thing is held rather than refused: the viewer's first DTLS flight when it arrives before
// werift has called the path validated and started DTLS. Chromium sends its ClientHello once it has
// selected its ICE pair, which can be before werift's triggered check back has succeeded (Chromium offers
// mDNS candidates only, so werift learns its address from that check); werift would drop it (no
// DTLS socket yet) and Chromium resends it only after its retransmission timer. Seen in the agent's
// log: 2 of 4 views refused the viewer's ClientHello as "not from an ICE-validated pair", and warned
// of it, a false alarm for whoever reads the log. Such a datagram is held only from an address that
// sent a STUN request carrying MESSAGE-INTEGRITY under the camera's ICE password (the viewer: the
// password is in the answer it was sent), only the latest one, and only until werift starts DTLS;
// then it is screened again by the same rules (validated pair, handshake records) and delivered or
// refused. Nothing reaches werift earlier or by any other rule than before. (It did not move the
// first frame's DTLS step, 71-73 ms at p50 before and after: werift's own log shows most of that is
// Chromium's, whose ClientHello follows its nominating check ~40 ms after its first one.)
import { parseMessage, type RTCDtlsTransport } from 'werift';

export type Address = [string, number];

/** The werift objects the guard reads: kept structural, as werift's types call most of them private. */
interface CandidatePair {
  protocol: unknown;
  /** (werift's remoteAddr getter allocates an array: read the candidate instead.) */
  remoteCandidate: { host: string; port: number };
  /** werift's CandidatePairState: 3 is SUCCEEDED. */
  state: number;
}
/** The camera's ICE credentials: STUN requests must carry MESSAGE-INTEGRITY under its password. */
interface IceCredentials {
  localPassword?: string;
  /** werift's ufrag -> password of this and earlier (pre-restart) generations. */
  userHistory?: Record<string, string>;
}
interface IceConnection extends IceCredentials {
  nominated?: CandidatePair | undefined;
  candidatePairs: readonly CandidatePair[];
  protocols: unknown[];
  ensureProtocol(protocol: unknown): void;
}
const pairSucceeded = 3;
interface DtlsRecordHeader {
  contentType: number;
  protocolVersion: { major: number; minor: number };
  epoch: number;
  sequenceNumber: number;
}
/** werift's DtlsSocket: `connected` once the handshake completed; `cipher` holds the association's keys. */
export interface DtlsSocketView {
  connected: boolean;
  cipher: { decryptPacket(packet: { recordLayerHeader: DtlsRecordHeader; fragment: Buffer }): Buffer };
}

export interface GuardHooks {
  /**
   * A datagram or DTLS record was refused; `reason` says why. `fromViewer`: it came from one of the
   * viewer's validated ICE pairs (a DTLS record refused there is usually the viewer's own
   * retransmission of its handshake flight, or a renegotiation); otherwise from an outsider.
   */
  refused(reason: string, from: Address, fromViewer: boolean): void;
  /** The viewer's own DTLS association said goodbye (an authenticated close_notify or fatal alert). */
  peerClosed(alert: { level: number; description: number }): void;
}

/** The state one screening decision reads: the ICE pairs, and the DTLS socket once started. */
export interface GuardState {
  connection: IceCredentials & { nominated?: CandidatePair | undefined; candidatePairs: readonly CandidatePair[] };
  dtls(): DtlsSocketView | undefined;
  /**
   * The pair last seen nominated: an ICE restart empties werift's pairs until new checks succeed,
   * and the viewer's RTCP on the old path is still the viewer's meanwhile (same DTLS association).
   */
  lastNominated?: CandidatePair | undefined;
  /**
   * Where authenticated STUN requests came from (per local socket), and the DTLS datagrams from
   * there held until werift starts DTLS (see the top of this file). Created on first use.
   */
  early?: EarlyDtls;
}

/** The viewer's DTLS flight that came before werift's DTLS socket, and who may have one held. */
export interface EarlyDtls {
  /** "host|port" of each authenticated STUN request's source, per local socket (protocol). */
  checkedSources: Map<unknown, Set<string>>;
  held: { data: Buffer; from: Address; protocol: unknown }[];
  /** Set once werift has started DTLS and the held datagrams were screened again: none held after. */
  released: boolean;
}

/**
 * Datagrams held at most: the latest only. Chromium's first flight is one datagram and a
 * retransmission repeats it; replaying two copies made werift answer each (two HelloVerifyRequests,
 * then two ServerHello flights for the two cookie-bearing hellos), which can wreck the handshake.
 */
export const heldLimit = 1;
/** Sources remembered at most: a viewer's candidates, each checked from a socket or two. */
const checkedSourceLimit = 16;

const early = (state: GuardState): EarlyDtls => (state.early ??= { checkedSources: new Map(), held: [], released: false });
const sourceKey = (from: Address) => `${from[0]}|${from[1]}`;

const contentType = { changeCipherSpec: 20, alert: 21, handshake: 22, applicationData: 23 } as const;
const recordHeaderLength = 13;
const handshakeHeaderLength = 12;
const helloRequest = 0;
const clientHello = 1;

/**
 * Decides what of one datagram werift may see: the datagram itself (the common case, no copy),
 * a datagram holding only its admitted DTLS records, or undefined (refused, reason reported).
 * Exported for the guard's unit test and the bench; the session applies it through guardSession.
 */
export function screenDatagram(data: Buffer, from: Address, protocol: unknown, state: GuardState, hooks: GuardHooks): Buffer | undefined {
  const first = data[0];
  if (first === undefined) return undefined;
  // RFC 7983 demultiplexing: 0-3 is STUN. ICE checks come from any address by design (a new
  // address is how a path is found); werift authenticates the responses it acts on, the guard
  // the requests.
  if (first < 4) return screenStun(data, from, protocol, state, hooks);
  if (!fromValidatedPair(state, protocol, from)) {
    if (first >= 20 && first <= 63 && holdEarlyDtls(data, from, protocol, state)) return undefined;
    hooks.refused('not from an ICE-validated pair', from, false);
    return undefined;
  }
  // 20-63 is DTLS; SRTP and SRTCP (128-191) are authenticated by werift's SRTP session itself.
  if (first >= 20 && first <= 63) return screenDtls(data, from, state.dtls(), hooks);
  return data;
}

const stunHeaderLength = 20;

function screenStun(data: Buffer, from: Address, protocol: unknown, state: GuardState, hooks: GuardHooks): Buffer | undefined {
  if (data.length < stunHeaderLength) return data;
  // The class bits of the message type (RFC 5389 §6): C1 is bit 8, C0 bit 4; a request is 00.
  const type = data.readUInt16BE(0);
  if ((type & 0x0110) !== 0) return data;
  const message = parseMessage(data);
  // Not STUN after all (werift will not take it for a request either).
  if (message === undefined) return data;
  const username = message.getAttributeValue('USERNAME') as unknown;
  // USERNAME is "<the camera's ufrag>:<the viewer's ufrag>"; werift looks the password up the same way.
  const localUfrag = typeof username === 'string' ? username.split(':')[0]! : '';
  const password = state.connection.userHistory?.[localUfrag] ?? state.connection.localPassword;
  if (password === undefined || parseMessage(data, Buffer.from(password, 'utf8')) === undefined) {
    hooks.refused("STUN request without valid MESSAGE-INTEGRITY under the camera's ICE password", from, false);
    return undefined;
  }
  const e = early(state);
  if (!e.released) {
    let sources = e.checkedSources.get(protocol);
    if (sources === undefined) e.checkedSources.set(protocol, (sources = new Set()));
    const total = [...e.checkedSources.values()].reduce((n, set) => n + set.size, 0);
    if (total < checkedSourceLimit) sources.add(sourceKey(from));
  }
  return data;
}

/**
 * Holds a DTLS datagram that came before werift started DTLS from a source that proved it holds
 * the camera's ICE password (see the top of this file); false: not held (refuse it as before).
 */
function holdEarlyDtls(data: Buffer, from: Address, protocol: unknown, state: GuardState): boolean {
  const e = state.early;
  if (e === undefined || e.released || state.dtls() !== undefined) return false;
  if (!e.checkedSources.get(protocol)?.has(sourceKey(from))) return false;
  if (e.held.length >= heldLimit) e.held.shift();
  e.held.push({ data, from, protocol });
  return true;
}

/**
 * werift has started DTLS: each held datagram is screened again (by now its pair is validated, or
 * it is refused as it would have been) and the admitted ones delivered to their socket's handler.
 */
export function releaseEarlyDtls(state: GuardState, hooks: GuardHooks, deliver: (protocol: unknown, data: Buffer, from: Address) => void): void {
  const e = early(state);
  if (e.released) return;
  e.released = true;
  e.checkedSources.clear();
  const held = e.held.splice(0);
  for (const { data, from, protocol } of held) {
    const admitted = screenDatagram(data, from, protocol, state, hooks);
    if (admitted !== undefined) deliver(protocol, admitted, from);
  }
}

/**
 * Whether `from` on this local socket is the remote end of the nominated pair (checked first: the
 * media path) or of another pair whose connectivity check succeeded. A check succeeds only on a
 * response that carries MESSAGE-INTEGRITY under the viewer's ICE password (werift verifies those),
 * so every such address has proven it is the viewer. RFC 8445 §12.1 has an agent accept media on
 * any such pair: Chromium, as the controlling agent, may send on a pair it selected after the one
 * werift (which keeps the first nomination) took as nominated. While an ICE restart has no
 * nominated pair yet, the last one still counts.
 */
function fromValidatedPair(state: GuardState, protocol: unknown, from: Address): boolean {
  const connection = state.connection;
  let nominated = connection.nominated;
  if (nominated !== undefined) state.lastNominated = nominated;
  else nominated = state.lastNominated;
  if (nominated !== undefined && nominated.protocol === protocol && nominated.remoteCandidate.port === from[1] && nominated.remoteCandidate.host === from[0]) return true;
  for (const pair of connection.candidatePairs) {
    if (pair.state === pairSucceeded && pair.protocol === protocol && pair.remoteCandidate.port === from[1] && pair.remoteCandidate.host === from[0]) return true;
  }
  return false;
}

function screenDtls(data: Buffer, from: Address, socket: DtlsSocketView | undefined, hooks: GuardHooks): Buffer | undefined {
  const handshakeDone = socket?.connected === true;
  let kept: Buffer[] | undefined;
  let offset = 0;
  while (offset < data.length) {
    if (offset + recordHeaderLength > data.length) {
      hooks.refused('truncated DTLS record header', from, true);
      break;
    }
    const end = offset + recordHeaderLength + data.readUInt16BE(offset + 11);
    if (end > data.length) {
      hooks.refused('DTLS record longer than the datagram', from, true);
      break;
    }
    const record = data.subarray(offset, end);
    const reason = screenRecord(record, handshakeDone ? socket : undefined, hooks);
    if (reason === undefined) {
      kept?.push(record);
    } else {
      if (reason !== consumed) hooks.refused(reason, from, true);
      // Copy only when something is dropped: after the handshake DTLS records are rare.
      kept ??= offset === 0 ? [] : [data.subarray(0, offset)];
    }
    offset = end;
  }
  if (offset < data.length) kept ??= offset === 0 ? [] : [data.subarray(0, offset)];
  if (kept === undefined) return data;
  return kept.length === 0 ? undefined : Buffer.concat(kept);
}

/** A record the guard acted on itself (the viewer's authenticated alert): not passed on, not a refusal. */
const consumed = Symbol('consumed');

/** Undefined: admit the record; else the reason it is refused. `socket` is set once the handshake is done. */
function screenRecord(record: Buffer, socket: DtlsSocketView | undefined, hooks: GuardHooks): string | typeof consumed | undefined {
  const type = record[0]!;
  const epoch = record.readUInt16BE(3);
  if (type !== contentType.changeCipherSpec && type !== contentType.alert && type !== contentType.handshake && type !== contentType.applicationData) {
    // werift treats an unknown content type as an alert, i.e. as the peer closing.
    return `DTLS content type ${type} is not one DTLS 1.2 defines`;
  }
  if (socket === undefined) {
    // Handshake in progress: nothing can be authenticated yet. A plaintext alert would make
    // werift close the transport; a viewer that gives up stops talking, and the connect timeout
    // or the silence grace ends the session.
    return type === contentType.alert ? 'DTLS alert before the handshake completed' : undefined;
  }
  if (epoch === 0) return `plaintext DTLS record (content type ${type}, epoch 0) after the handshake`;
  let plain: Buffer;
  try {
    plain = socket.cipher.decryptPacket({
      recordLayerHeader: {
        contentType: type,
        protocolVersion: { major: record[1]!, minor: record[2]! },
        epoch,
        sequenceNumber: record.readUIntBE(5, 6),
      },
      fragment: record.subarray(recordHeaderLength),
    });
  } catch {
    return `DTLS record (content type ${type}, epoch ${epoch}) fails authentication`;
  }
  if (type === contentType.alert) {
    const level = plain[0] ?? 0;
    const description = plain[1] ?? 0;
    // close_notify or a fatal alert ends the association (RFC 5246 §7.2); the session is told and
    // closes the peer connection itself. werift never sees an alert: it would also close on warnings.
    if (description === 0 || level === 2) hooks.peerClosed({ level, description });
    return consumed;
  }
  if (type === contentType.handshake) {
    for (let at = 0; at + handshakeHeaderLength <= plain.length; at += handshakeHeaderLength + plain.readUIntBE(at + 9, 3)) {
      const msgType = plain[at];
      if (msgType === clientHello || msgType === helloRequest) return 'DTLS renegotiation refused (a new hello after the handshake)';
    }
  }
  // A retransmitted Finished (our flight lost) or application data: werift decrypts it again.
  return undefined;
}

export interface SessionGuard {
  /** Datagrams or records refused so far. */
  readonly refusedCount: number;
}

/**
 * Applies the guard to one peer connection's transports: every ICE socket werift has or will
 * make (ICE restarts gather new ones) gets its datagram hand-off screened. Call it after the
 * remote description is set (the transports exist) and before gathering (no socket yet).
 */
export function guardDtlsTransports(transports: readonly RTCDtlsTransport[], hooks: GuardHooks): SessionGuard {
  let refusedCount = 0;
  const counted: GuardHooks = {
    refused: (reason, from, fromViewer) => {
      refusedCount++;
      hooks.refused(reason, from, fromViewer);
    },
    peerClosed: (alert) => hooks.peerClosed(alert),
  };
  for (const transport of transports) {
    const connection = transport.iceTransport.connection as unknown as IceConnection;
    const state: GuardState = { connection, dtls: () => transport.dtls as unknown as DtlsSocketView | undefined };
    const ensureProtocol = connection.ensureProtocol.bind(connection);
    connection.ensureProtocol = (protocol) => {
      ensureProtocol(protocol);
      guardProtocol(protocol, state, counted);
    };
    for (const protocol of connection.protocols) guardProtocol(protocol, state, counted);
    // werift makes its DTLS socket synchronously right after the state turns "connecting"
    // (RTCDtlsTransport.start): the held flight goes to it on the next turn of the event loop.
    transport.onStateChange.subscribe((s) => {
      if (s === 'connecting') setImmediate(() => releaseEarlyDtls(state, counted, (protocol, data, from) => delivered.get(protocol as object)?.(data, from)));
    });
  }
  return {
    get refusedCount() {
      return refusedCount;
    },
  };
}

const guarded = new WeakSet<object>();
/** Each guarded protocol's own hand-off to werift, for the held early DTLS (releaseEarlyDtls). */
const delivered = new WeakMap<object, (data: Buffer, addr: Address) => void>();

/** Wraps the one function of an ICE protocol that still knows a datagram's source address. */
export function guardProtocol(protocol: unknown, state: GuardState, hooks: GuardHooks): void {
  const p = protocol as Record<string, unknown> & { onDataReceived?: { execute: (...args: unknown[]) => void } };
  if (guarded.has(p)) return;
  guarded.add(p);
  // StunProtocol (UDP host sockets): the socket's handler calls this.datagramReceived(data, addr).
  // StunOverTurnProtocol (relay): the TURN client's handler calls this.handleStunMessage(data, peerAddr).
  const name = typeof p.datagramReceived === 'function' ? 'datagramReceived' : typeof p.handleStunMessage === 'function' ? 'handleStunMessage' : undefined;
  if (name === undefined) {
    // ICE-TCP (not enabled here) frames data without a per-datagram address: nothing from a
    // protocol the guard cannot check reaches DTLS or SRTP.
    if (p.onDataReceived) p.onDataReceived.execute = () => hooks.refused('ICE transport the guard cannot check (ICE-TCP)', ['', 0], false);
    return;
  }
  const original = (p[name] as (data: Buffer, addr: Address) => void).bind(p);
  delivered.set(p, original);
  p[name] = (data: Buffer, addr: Address) => {
    const admitted = screenDatagram(data, addr, p, state, hooks);
    if (admitted !== undefined) original(admitted, addr);
  };
}
