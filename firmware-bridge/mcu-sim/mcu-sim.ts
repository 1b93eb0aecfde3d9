#!/usr/bin/env node
// Reference MCU simulator: speaks PROTOCOL.md on a serial device (a pty in tests and the demo).
// Driven by line commands on stdin, reports on stdout as JSON lines; see firmware-bridge/README.md.
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { SerialPort } from 'serialport';
import type { BatteryStatus, LedState } from '../src/interface.ts';
import { cobsEncode } from '../src/serial/cobs.ts';
import { crc16CcittFalse } from '../src/serial/crc16.ts';
import type { Frame } from '../src/serial/frames.ts';
import {
  BUTTON_WIRE_IDS,
  decodeHelloPayload,
  decodeLeds,
  encodeBattery,
  encodeHelloPayload,
  encodeTrigger,
  MSG,
  MSG_NAMES,
  NACK_REASON,
  PATTERN_IDS,
  PRESS_WIRE_IDS,
  PROTOCOL_VERSION,
  triggerSourceId,
  triggerSourceName,
} from '../src/serial/frames.ts';
import { FrameLink } from '../src/serial/link.ts';
import { errorMessage } from '../../src/errors.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    firmware: { type: 'string', default: 'mcu-sim-1.0' },
    'battery-interval-ms': { type: 'string', default: '1000' },
    'ack-timeout-ms': { type: 'string', default: '200' },
    retries: { type: 'string', default: '3' },
    baud: { type: 'string', default: '115200' },
  },
});
const devicePath = positionals[0];
if (devicePath === undefined) {
  process.stderr.write('usage: mcu-sim.ts <serial-path> [--firmware V] [--battery-interval-ms N]\n');
  process.exit(2);
}
const firmware = values.firmware!;
const batteryIntervalMs = Number(values['battery-interval-ms']);

function out(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

let muted = false;
let dropNext = false;
let leds: LedState = { recording: false, streaming: false, fault: false };
let battery: BatteryStatus = { percent: 87, charging: false, docked: false };
const lastSeqIn = new Map<number, number>();

const port = new SerialPort({ path: devicePath, baudRate: Number(values.baud), autoOpen: false });

function rawWrite(bytes: Buffer): void {
  if (muted || !port.isOpen) return;
  port.write(bytes);
}

function writeFrame(bytes: Buffer): void {
  if (dropNext && bytes.length > 2) {
    dropNext = false;
    // Lose one byte from the middle, as a UART overrun would; the delimiter survives.
    const at = Math.floor(bytes.length / 2);
    bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
    out({ tx: 'dropped-byte', at });
  }
  rawWrite(bytes);
}

function makeLink(): FrameLink {
  return new FrameLink({
    ackTimeoutMs: Number(values['ack-timeout-ms']),
    retries: Number(values.retries),
    write: writeFrame,
    onFrame,
  });
}
let link = makeLink();

function isDuplicate(frame: Frame): boolean {
  const dup = lastSeqIn.get(frame.type) === frame.seq;
  lastSeqIn.set(frame.type, frame.seq);
  return dup;
}

function onFrame(frame: Frame): void {
  if (muted) return;
  switch (frame.type) {
    case MSG.HELLO: {
      const hello = decodeHelloPayload(frame.payload);
      link.send(MSG.HELLO_ACK, frame.seq, encodeHelloPayload(firmware));
      out({ rx: 'HELLO', seq: frame.seq, identity: hello?.identity ?? null, protocolVersion: hello?.protocolVersion ?? null });
      return;
    }
    case MSG.HELLO_ACK:
      out({ rx: 'HELLO_ACK', seq: frame.seq, identity: decodeHelloPayload(frame.payload)?.identity ?? null });
      return;
    case MSG.NOTIFY: {
      const pattern = PATTERN_IDS[frame.payload[0] ?? -1];
      if (pattern === undefined || frame.payload.length !== 1) {
        link.send(MSG.NACK, frame.seq, Buffer.from([NACK_REASON.BAD_PAYLOAD]));
        out({ rx: 'NOTIFY', seq: frame.seq, nack: 'bad payload' });
        return;
      }
      link.send(MSG.ACK, frame.seq);
      out({ rx: 'NOTIFY', seq: frame.seq, pattern, duplicate: isDuplicate(frame) });
      return;
    }
    case MSG.LEDS: {
      const decoded = decodeLeds(frame.payload);
      if (decoded === null) {
        link.send(MSG.NACK, frame.seq, Buffer.from([NACK_REASON.BAD_PAYLOAD]));
        return;
      }
      link.send(MSG.ACK, frame.seq);
      leds = decoded;
      out({ rx: 'LEDS', seq: frame.seq, ...leds, duplicate: isDuplicate(frame) });
      return;
    }
    case MSG.PING:
      link.send(MSG.PONG, frame.seq);
      out({ rx: 'PING', seq: frame.seq });
      return;
    default:
      link.send(MSG.NACK, frame.seq, Buffer.from([NACK_REASON.UNKNOWN_TYPE]));
      out({ rx: MSG_NAMES[frame.type] ?? `0x${frame.type.toString(16)}`, seq: frame.seq, nack: 'unknown type' });
  }
}

function boot(): void {
  link.failAll(new Error('mcu reset'));
  link = makeLink();
  lastSeqIn.clear();
  leds = { recording: false, streaming: false, fault: false };
  // Seq 0 is never used by requests (FrameLink starts at 1), so a boot HELLO cannot settle a stale request.
  link.send(MSG.HELLO, 0, encodeHelloPayload(firmware));
  out({ tx: 'HELLO', firmware });
}

function sendBattery(): void {
  if (!port.isOpen || muted) return;
  link.send(MSG.BATTERY, 0, encodeBattery(battery));
}

function pressButton(press: string, button: string): void {
  const b = BUTTON_WIRE_IDS.indexOf(button as never);
  const p = PRESS_WIRE_IDS.indexOf(press as never);
  if (b < 0 || p < 0) {
    out({ error: `unknown button/press: ${press} ${button}` });
    return;
  }
  link.request(MSG.BUTTON, Buffer.from([b, p])).then(
    () => out({ tx: 'BUTTON', button, press, acked: true }),
    (err: unknown) => out({ tx: 'BUTTON', button, press, acked: false, error: errorMessage(err) }),
  );
}

/** TRIGGER with a source name (holster, input-42) or id (1..255); retried until acked, like BUTTON. */
function sendTrigger(nameOrId: string | undefined): void {
  const id = nameOrId === undefined ? null : triggerSourceId(nameOrId);
  if (id === null) {
    out({ error: `unknown trigger source: ${nameOrId ?? '(none)'} (a name such as holster, input-N or an id 1..255)` });
    return;
  }
  const source = triggerSourceName(id);
  link.request(MSG.TRIGGER, encodeTrigger(id)).then(
    () => out({ tx: 'TRIGGER', source, id, acked: true }),
    (err: unknown) => out({ tx: 'TRIGGER', source, id, acked: false, error: errorMessage(err) }),
  );
}

function sendFall(): void {
  link.request(MSG.FALL).then(
    () => out({ tx: 'FALL', acked: true }),
    (err: unknown) => out({ tx: 'FALL', acked: false, error: errorMessage(err) }),
  );
}

function sendCorrupt(): void {
  const body = Buffer.from([PROTOCOL_VERSION, MSG.BATTERY, 0, ...encodeBattery(battery)]);
  const crc = crc16CcittFalse(body) ^ 0x5a5a;
  const raw = Buffer.concat([body, Buffer.from([crc >> 8, crc & 0xff])]);
  rawWrite(Buffer.concat([cobsEncode(raw), Buffer.from([0])]));
  out({ tx: 'corrupt' });
}

function command(line: string): void {
  const [cmd, ...args] = line.trim().split(/\s+/);
  switch (cmd) {
    case undefined:
    case '':
      return;
    case 'press':
    case 'long':
    case 'double':
    case 'hold':
      pressButton(cmd, args[0] ?? 'record');
      return;
    case 'trigger':
      sendTrigger(args[0]);
      return;
    case 'fall':
      sendFall();
      return;
    case 'battery': {
      const percent = Number(args[0]);
      if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
        out({ error: `bad battery percent: ${args[0]}` });
        return;
      }
      battery = { percent, charging: args.includes('charging'), docked: args.includes('docked') };
      sendBattery();
      out({ tx: 'BATTERY', ...battery });
      return;
    }
    case 'reset':
      out({ event: 'reset' });
      boot();
      return;
    case 'garbage': {
      const n = Number(args[0] ?? 32);
      rawWrite(randomBytes(n));
      out({ tx: 'garbage', bytes: n });
      return;
    }
    case 'corrupt':
      sendCorrupt();
      return;
    case 'drop':
      dropNext = true;
      out({ armed: 'drop' });
      return;
    case 'mute':
      muted = true;
      out({ event: 'muted' });
      return;
    case 'unmute':
      muted = false;
      out({ event: 'unmuted' });
      return;
    case 'status':
      out({ status: { leds, battery, muted, counters: link.counters } });
      return;
    case 'quit':
      shutdown(0);
      return;
    default:
      out({ error: `unknown command: ${line.trim()}` });
  }
}

let batteryTimer: NodeJS.Timeout | null = null;
let shuttingDown = false;
function shutdown(code: number): void {
  if (shuttingDown) return;
  shuttingDown = true;
  if (batteryTimer !== null) clearInterval(batteryTimer);
  link.failAll(new Error('shutdown'));
  // A port whose pty has vanished may never finish closing (serialport keeps polling the dead fd,
  // seen spinning at 80 % CPU under load): exit regardless after a moment.
  setTimeout(() => process.exit(code), 1000).unref();
  if (port.isOpen) port.close(() => process.exit(code));
  else process.exit(code);
}

port.on('data', (data: Buffer) => {
  if (!muted) link.receive(data);
});
port.on('error', (err: Error) => {
  out({ event: 'port-error', error: err.message });
  shutdown(0);
});
port.on('close', () => {
  // The pty went away (the test "unplugged" it): a real MCU would lose power with it.
  out({ event: 'closed' });
  shutdown(0);
});
port.open((err) => {
  if (err) {
    out({ event: 'open-failed', error: err.message });
    process.exit(1);
  }
  out({ event: 'open', path: devicePath });
  boot();
  if (batteryIntervalMs > 0) batteryTimer = setInterval(sendBattery, batteryIntervalMs);
});

const rl = createInterface({ input: process.stdin });
rl.on('line', command);
// Without a driver the simulator has no purpose; this also keeps it from outliving a crashed test.
rl.on('close', () => shutdown(0));
process.on('SIGTERM', () => shutdown(0));
