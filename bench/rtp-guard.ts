// The cost of the live view's datagram guard (src/stream/werift-guard.ts) on the hot path: every
// datagram the viewer sends the camera (its SRTCP receiver reports and NACKs, at a few hundred a
// second, and SRTP if it ever sent media) passes werift's StunProtocol.datagramReceived, which the
// guard wraps with the source-address check. Rows, in the same run and the same process:
//   - today's path: an unguarded werift StunProtocol (its own STUN-or-not parse, then onDataReceived);
//   - guarded, from the nominated pair (the common case: one comparison);
//   - guarded, from another validated pair (the fallback scan of the pairs: here 6);
//   - guarded, refused (an attacker's datagram from an address no pair has);
//   - the guard's decision alone (screenDatagram), from the nominated pair and from the switched-to
//     pair: the added cost per packet, without werift's own work around it. Each row is timed in R runs of N
// datagrams (1200-byte RTP-shaped buffers), the rows interleaved run by run so drift on a shared
// machine hits them alike; ns/packet as median and spread (min..max over the runs).
//
// Usage: node bench/rtp-guard.ts [--runs 9] [--n 200000]
import { StunProtocol } from 'werift';
import { guardProtocol, screenDatagram, type Address, type GuardHooks, type GuardState } from '../src/stream/werift-guard.ts';
import { intFlag, machineFacts, machineLine, markdownTable, parseFlags, repoRoot, round, runIfMain, summarise, writeResult, type Summary } from './lib/common.ts';
import path from 'node:path';

const warmupN = 50_000;

interface Row {
  what: string;
  nsPerPacket: Summary;
}

/** A werift StunProtocol with no socket: datagramReceived is the hand-off the UDP socket calls. */
function protocol(): { protocol: StunProtocol; delivered: () => number } {
  const p = new StunProtocol();
  (p as unknown as { localCandidate: unknown }).localCandidate = {};
  let count = 0;
  p.onDataReceived.subscribe(() => {
    count++;
  });
  return { protocol: p, delivered: () => count };
}

async function main(argv: string[]): Promise<void> {
  const flags = parseFlags(argv);
  const runs = intFlag(flags, 'runs', 9);
  const n = intFlag(flags, 'n', 200_000);
  const machine = machineFacts('n/a');

  const viewer: Address = ['192.0.2.10', 40000];
  const switched: Address = ['192.0.2.20', 40002];
  const attacker: Address = ['198.51.100.7', 50000];
  const packet = Buffer.alloc(1200, 0x5a);
  packet[0] = 0x80;
  packet[1] = 96;

  const plain = protocol();
  const guarded = protocol();
  const pair = (addr: Address, state = 3) => ({ protocol: guarded.protocol, remoteCandidate: { host: addr[0], port: addr[1] }, state });
  const nominated = pair(viewer);
  // A typical checklist: host, reflexive and relay pairs, some failed, the switched-to one last.
  const candidatePairs = [nominated, pair(['10.0.0.5', 40010], 4), pair(['10.0.0.6', 40011], 4), pair(['203.0.113.9', 3478], 2), pair(['203.0.113.9', 3479], 4), pair(switched)];
  const state: GuardState = { connection: { nominated, candidatePairs }, dtls: () => undefined };
  let refused = 0;
  guardProtocol(guarded.protocol, state, { refused: () => refused++, peerClosed: () => {} });

  const deliver = (p: StunProtocol, from: Address) => (p as unknown as { datagramReceived(d: Buffer, a: Address): void }).datagramReceived(packet, from);
  const paths: { what: string; run: () => void; expectDelivered: boolean; p: ReturnType<typeof protocol> }[] = [
    { what: "today's path: werift StunProtocol, unguarded", run: () => deliver(plain.protocol, viewer), expectDelivered: true, p: plain },
    { what: 'guarded: from the nominated pair', run: () => deliver(guarded.protocol, viewer), expectDelivered: true, p: guarded },
    { what: 'guarded: from another validated pair (scan of 6 pairs)', run: () => deliver(guarded.protocol, switched), expectDelivered: true, p: guarded },
    { what: 'guarded: refused (no pair has the address)', run: () => deliver(guarded.protocol, attacker), expectDelivered: false, p: guarded },
  ];
  const noHooks: GuardHooks = { refused: () => {}, peerClosed: () => {} };
  let admitted = 0;
  const decisions: { what: string; run: () => void }[] = [
    { what: 'the check alone (screenDatagram): nominated pair', run: () => void (screenDatagram(packet, viewer, guarded.protocol, state, noHooks) && admitted++) },
    { what: 'the check alone (screenDatagram): another validated pair', run: () => void (screenDatagram(packet, switched, guarded.protocol, state, noHooks) && admitted++) },
  ];

  const timeOnce = (run: () => void, count: number): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) run();
    return Number(process.hrtime.bigint() - t0) / count;
  };
  for (const p of [...paths, ...decisions]) timeOnce(p.run, warmupN);
  const samples = paths.map(() => [] as number[]);
  const decisionSamples = decisions.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) {
    paths.forEach((p, i) => {
      const before = p.p.delivered();
      const refusedBefore = refused;
      samples[i]!.push(timeOnce(p.run, n));
      const delivered = p.p.delivered() - before;
      if (p.expectDelivered ? delivered !== n : delivered !== 0 || refused - refusedBefore !== n) throw new Error(`${p.what}: delivered ${delivered} of ${n}`);
    });
    decisions.forEach((d, i) => {
      const before = admitted;
      decisionSamples[i]!.push(timeOnce(d.run, n));
      if (admitted - before !== n) throw new Error(`${d.what}: admitted ${admitted - before} of ${n}`);
    });
  }
  const rows: Row[] = [...paths.map((p, i) => ({ what: p.what, nsPerPacket: summarise(samples[i]!) })), ...decisions.map((d, i) => ({ what: d.what, nsPerPacket: summarise(decisionSamples[i]!) }))];
  const today = rows[0]!.nsPerPacket.p50;
  const md = [
    `### RTP per-packet cost of the datagram guard: werift's datagram hand-off, ${runs} runs of ${n} datagrams (1200 B) per row, rows interleaved`,
    '',
    markdownTable(
      ['path', 'ns/packet p50', 'min..max over runs', 'vs today p50'],
      rows.map((r, i) => [r.what, round(r.nsPerPacket.p50), `${round(r.nsPerPacket.min)}..${round(r.nsPerPacket.max)}`, i === 0 || i >= paths.length ? '-' : `${r.nsPerPacket.p50 - today >= 0 ? '+' : ''}${round(r.nsPerPacket.p50 - today)} ns`]),
    ),
    '',
    "Inbound only: the camera's outgoing RTP (capture to viewer) does not pass the guard. The guard's own cost is the last two rows; " +
      "on a shared machine it is within the run-to-run spread of werift's own hand-off (its STUN-or-not parse), which is why it is also timed alone. " +
      "A refused datagram costs less than today's path: werift never parses it.",
    '',
    `Machine: ${machineLine(machine)}.`,
  ].join('\n');
  const file = writeResult('rtp-guard', {
    benchmark: 'rtp-guard',
    machine,
    parameters: { runs, n, packetBytes: packet.length, candidatePairs: candidatePairs.length },
    figures: Object.fromEntries(rows.map((r) => [r.what, { nsPerPacket: r.nsPerPacket }])),
    markdown: md,
  });
  process.stdout.write(`${md}\n\n(results: ${path.relative(repoRoot, file)})\n`);
}

runIfMain('rtp-guard', import.meta.filename, main);
