// Threat: a tampered or faulty camera MCU, or any other device wired onto the UART, sends crafted
// frames to the agent's serial firmware bridge: TRIGGER and FALL (which start recordings and raise
// emergencies) with malformed payloads, a reserved source id, a replayed sequence number, or a flood
// of them to spam the audit trail and the supervisors; a BUTTON with a press code no gesture has.
// Each malformed request must be refused with a NACK naming the reason (PROTOCOL.md) and counted,
// never crash the bridge, never become a trigger, fall or button event; a replayed seq is acted on
// once; a flood is cut to the host's budget (NACK 4, rate limited) and the link keeps working.
//
// A real socat pty pair: the test is the device on the far end, writing raw frames with the
// protocol's own encoder (and by hand where the encoder refuses); every wait is on a reply frame or
// an emitted event.
import pino from 'pino';
import t from 'tap';
import { SerialPort } from 'serialport';
import { cobsEncode } from '../../firmware-bridge/src/serial/cobs.ts';
import { crc16CcittFalse } from '../../firmware-bridge/src/serial/crc16.ts';
import type { Frame } from '../../firmware-bridge/src/serial/frames.ts';
import { decodeFrame, encodeFrame, encodeHelloPayload, FrameSplitter, MSG, NACK_REASON, PROTOCOL_VERSION } from '../../firmware-bridge/src/serial/frames.ts';
import { SerialBackend } from '../../firmware-bridge/src/serial/serial-backend.ts';
import { FALLS, TRIGGER_ALL_SOURCES, TRIGGER_PER_SOURCE } from '../../firmware-bridge/src/input-budget.ts';
import type { ButtonId, ButtonPress, TriggerInput } from '../../firmware-bridge/src/interface.ts';
import { until } from '../helpers/mcu-sim.ts';
import { startPtyPair, stopAllPtyPairs } from '../helpers/pty.ts';

const logger = pino({ level: 'silent' });
t.teardown(stopAllPtyPairs);

/** The device on the UART: answers the host's handshake so the link is up, otherwise sends what it is told. */
class HostileMcu {
  readonly received: Frame[] = [];
  private readonly splitter = new FrameSplitter();
  private readonly port: SerialPort;
  private constructor(port: SerialPort) {
    this.port = port;
    port.on('data', (data: Buffer) =>
      this.splitter.push(
        data,
        (chunk) => {
          const r = decodeFrame(chunk);
          if (!r.ok) return;
          this.received.push(r.frame);
          if (r.frame.type === MSG.HELLO) this.write(encodeFrame(MSG.HELLO_ACK, r.frame.seq, encodeHelloPayload('hostile-1.0')));
          if (r.frame.type === MSG.PING) this.write(encodeFrame(MSG.PONG, r.frame.seq));
          if (r.frame.type === MSG.NOTIFY || r.frame.type === MSG.LEDS) this.write(encodeFrame(MSG.ACK, r.frame.seq));
        },
        () => undefined,
      ),
    );
  }

  static async open(path: string): Promise<HostileMcu> {
    const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    return new HostileMcu(port);
  }

  write(bytes: Buffer): void {
    this.port.write(bytes);
  }

  /** A frame with any payload length: encodeFrame refuses more than 64 bytes, an attacker does not. */
  writeRaw(type: number, seq: number, payload: Buffer): void {
    const body = Buffer.concat([Buffer.from([PROTOCOL_VERSION, type, seq]), payload]);
    const crc = crc16CcittFalse(body);
    this.write(Buffer.concat([cobsEncode(Buffer.concat([body, Buffer.from([crc >> 8, crc & 0xff])])), Buffer.from([0])]));
  }

  replies(from: number): Frame[] {
    return this.received.slice(from).filter((f) => f.type === MSG.ACK || f.type === MSG.NACK);
  }

  /** Sends one request and waits for the host's answer to that seq. */
  async request(type: number, seq: number, payload: Buffer = Buffer.alloc(0)): Promise<{ ack: boolean; reason: number | null }> {
    const from = this.received.length;
    this.write(encodeFrame(type, seq, payload));
    let reply: Frame | undefined;
    await until(() => (reply = this.replies(from).find((f) => f.seq === seq)) !== undefined, `a reply to type 0x${type.toString(16)} seq ${seq}`);
    return { ack: reply!.type === MSG.ACK, reason: reply!.type === MSG.NACK ? (reply!.payload[0] ?? null) : null };
  }

  async close(): Promise<void> {
    if (this.port.isOpen) await new Promise<void>((resolve) => this.port.close(() => resolve()));
  }
}

t.test('crafted TRIGGER, FALL and BUTTON frames are refused, counted and never acted on', async (t) => {
  const pair = await startPtyPair();
  const mcu = await HostileMcu.open(pair.b);
  // The rate budget runs on an injected clock so the flood's outcome is exact, whatever the machine's load.
  let now = 1_000_000;
  const be = new SerialBackend({ path: pair.a, logger, keepaliveMs: 0, now: () => now });
  const triggers: TriggerInput[] = [];
  const buttons: { button: ButtonId; press: ButtonPress }[] = [];
  let falls = 0;
  be.on('trigger', (e) => triggers.push(e));
  be.on('button', (e) => buttons.push(e));
  be.on('fall', () => falls++);
  t.teardown(async () => {
    await be.stop();
    await mcu.close();
    await pair.stop();
  });
  await be.start();
  await until(() => be.status().linkUp, 'link up with the hostile device');
  const counters = () => be.counters() as unknown as Record<string, number>;
  const BAD = { ack: false, reason: NACK_REASON.BAD_PAYLOAD };

  t.same(await mcu.request(MSG.TRIGGER, 1), BAD, 'TRIGGER with an empty payload: NACK 2 (bad payload)');
  t.same(await mcu.request(MSG.TRIGGER, 2, Buffer.from([1, 1])), BAD, 'TRIGGER with two payload bytes: NACK 2');
  t.same(await mcu.request(MSG.TRIGGER, 3, Buffer.alloc(64, 2)), BAD, 'TRIGGER with the longest payload a frame holds: NACK 2');
  t.same(await mcu.request(MSG.TRIGGER, 4, Buffer.from([0])), BAD, 'TRIGGER source 0 (reserved): NACK 2');
  t.same(await mcu.request(MSG.FALL, 5, Buffer.from([1])), BAD, 'FALL with a payload: NACK 2');
  t.same(await mcu.request(MSG.BUTTON, 6, Buffer.from([0, 9])), BAD, 'BUTTON press code 9: NACK 2');
  t.equal(counters().badPayload, 6, 'each refusal counted as badPayload');

  const badLength = counters().badLength!;
  mcu.writeRaw(MSG.TRIGGER, 7, Buffer.alloc(65, 1));
  await until(() => counters().badLength === badLength + 1, 'an over-long TRIGGER frame dropped as badLength');
  t.pass('a TRIGGER longer than any frame is not a frame at all: dropped and counted (no seq to answer)');
  t.same([triggers, buttons, falls], [[], [], 0], 'no trigger, button or fall came of any of them');

  // Replays: the same seq again (a lost ACK, or an attacker replaying it) is answered again but acted on once,
  // also when another frame came in between.
  t.same(await mcu.request(MSG.TRIGGER, 10, Buffer.from([1])), { ack: true, reason: null }, 'a well-formed TRIGGER (holster) is acked');
  t.same(await mcu.request(MSG.TRIGGER, 10, Buffer.from([1])), { ack: true, reason: null }, 'its replay is acked again');
  t.same(await mcu.request(MSG.FALL, 11), { ack: true, reason: null }, 'a FALL is acked');
  t.same(await mcu.request(MSG.TRIGGER, 12, Buffer.from([200])), { ack: true, reason: null }, 'a TRIGGER from an unnamed input is acked');
  t.same(await mcu.request(MSG.TRIGGER, 10, Buffer.from([1])), { ack: true, reason: null }, 'seq 10 replayed after other frames: acked');
  t.same(await mcu.request(MSG.FALL, 11), { ack: true, reason: null }, 'the FALL replayed: acked');
  t.same(triggers, [{ source: 'holster' }, { source: 'input-200' }], 'each TRIGGER acted on once; unnamed id 200 is input-200');
  t.equal(falls, 1, 'the FALL acted on once');
  t.ok(counters().duplicates! >= 3, 'replays counted as duplicates');

  // A flood: 1000 well-formed TRIGGERs (one source) as fast as the UART takes them, seqs wrapping.
  const before = triggers.length;
  const from = mcu.received.length;
  for (let i = 0; i < 1000; i++) mcu.write(encodeFrame(MSG.TRIGGER, 20 + (i % 200), Buffer.from([2])));
  await until(() => mcu.replies(from).length === 1000, 'an answer to each of the 1000 TRIGGERs', 60_000);
  const flood = mcu.replies(from);
  const acked = flood.filter((f) => f.type === MSG.ACK).length;
  const limited = flood.filter((f) => f.type === MSG.NACK && f.payload[0] === NACK_REASON.RATE_LIMITED).length;
  t.equal(acked + limited, 1000, 'every flood frame is either acted on or refused as rate limited (NACK 4)');
  t.equal(triggers.length - before, acked, 'only the acked ones became trigger events');
  t.equal(acked, TRIGGER_PER_SOURCE.burst, `the flood is cut to the per-source burst: ${acked} of 1000 acted on`);
  t.equal(counters().rateLimited, limited, 'the refused ones are counted as rateLimited');

  // The link survived and the budget refills with time: the next honest trigger, of another source too, is acted on.
  t.ok(be.status().linkUp, 'link still up');
  await be.notify('fault');
  t.same(await mcu.request(MSG.TRIGGER, 240, Buffer.from([3])), { ack: true, reason: null }, 'another source is not starved by the flood');
  now += 60_000;
  t.same(await mcu.request(MSG.TRIGGER, 241, Buffer.from([2])), { ack: true, reason: null }, 'the flooded source works again once its budget refilled');
  t.same(triggers.slice(-2), [{ source: 'lightbar' }, { source: 'taser' }]);

  // Cycling through every source id to get around the per-source budget meets the budget over all sources.
  now += 60_000;
  const cycleFrom = mcu.received.length;
  const cycleBefore = triggers.length;
  for (let i = 0; i < 255; i++) mcu.write(encodeFrame(MSG.TRIGGER, i === 0 ? 255 : i, Buffer.from([i + 1])));
  await until(() => mcu.replies(cycleFrom).length === 255, 'an answer to each of 255 TRIGGERs, one per source id', 60_000);
  t.equal(triggers.length - cycleBefore, TRIGGER_ALL_SOURCES.burst, 'one TRIGGER per source id: cut to the all-sources burst');
  t.equal(mcu.replies(cycleFrom).filter((f) => f.type === MSG.NACK && f.payload[0] === NACK_REASON.RATE_LIMITED).length, 255 - TRIGGER_ALL_SOURCES.burst);

  // A flood of falls (each would raise an emergency) is cut to the fall budget.
  const fallFrom = mcu.received.length;
  const fallsBefore = falls;
  for (let i = 0; i < 50; i++) mcu.write(encodeFrame(MSG.FALL, 100 + i));
  await until(() => mcu.replies(fallFrom).length === 50, 'an answer to each of 50 FALLs');
  t.equal(falls - fallsBefore, FALLS.burst, 'a flood of FALLs is cut to the fall burst');
  t.ok(be.status().linkUp, 'and the link is still up');

  // Nothing legitimate is lost: an MCU that rebooted unseen (its boot HELLO lost) starts its seqs again;
  // a seq last used more than a few seconds ago is a new request, not a repeat.
  const pressesBefore = buttons.length;
  t.same(await mcu.request(MSG.BUTTON, 1, Buffer.from([0, 0])), { ack: true, reason: null }, 'a record press, seq 1');
  t.same(await mcu.request(MSG.BUTTON, 1, Buffer.from([0, 0])), { ack: true, reason: null }, 'its repeat at once');
  now += 10_000;
  t.same(await mcu.request(MSG.BUTTON, 1, Buffer.from([0, 0])), { ack: true, reason: null }, 'seq 1 again, 10 s later');
  t.equal(buttons.length - pressesBefore, 2, 'the repeat at once is not acted on; the press 10 s later is');
});
