import type { ButtonId, ButtonPress, NotificationPattern } from '../interface.ts';
import { TRIGGER_SOURCE_IDS } from '../interface.ts';
import { cobsDecode, cobsEncode } from './cobs.ts';
import { crc16CcittFalse } from './crc16.ts';

/** Protocol version carried in every frame header; see PROTOCOL.md. */
export const PROTOCOL_VERSION = 1;

/** Decoded frame: version(1) type(1) seq(1) payload(0..MAX_PAYLOAD) crc16(2, big-endian). */
export const MAX_PAYLOAD = 64;
const HEADER = 3;
const CRC_LEN = 2;
/** Longest encoded frame; bytes beyond this without a delimiter are line noise, not a frame. */
export const MAX_ENCODED = HEADER + MAX_PAYLOAD + CRC_LEN + 2;

export const MSG = {
  HELLO: 0x01,
  HELLO_ACK: 0x02,
  NOTIFY: 0x10,
  LEDS: 0x11,
  BUTTON: 0x20,
  BATTERY: 0x21,
  TRIGGER: 0x22,
  FALL: 0x23,
  PING: 0x30,
  PONG: 0x31,
  ACK: 0x7e,
  NACK: 0x7f,
} as const;
export type MsgType = (typeof MSG)[keyof typeof MSG];

export const MSG_NAMES: Record<number, string> = Object.fromEntries(Object.entries(MSG).map(([k, v]) => [v, k]));

/** RATE_LIMITED (4): a TRIGGER or FALL beyond the host's budget (PROTOCOL.md "Reliability"); not retried. */
export const NACK_REASON = { UNKNOWN_TYPE: 1, BAD_PAYLOAD: 2, BAD_VERSION: 3, RATE_LIMITED: 4 } as const;

/** Wire ids are fixed by PROTOCOL.md; the array index is the id. */
export const PATTERN_IDS: readonly NotificationPattern[] = [
  'record-start',
  'record-stop',
  'stream-start',
  'stream-stop',
  'reminder',
  'fault',
  'watch-me-sent',
  'emergency-raised',
  'emergency-acknowledged',
  'emergency-cleared',
  'bookmark',
  'talk-start',
];
export const BUTTON_WIRE_IDS: readonly ButtonId[] = ['record', 'function'];
export const PRESS_WIRE_IDS: readonly ButtonPress[] = ['press', 'long', 'double', 'hold'];

export interface Frame {
  version: number;
  type: number;
  seq: number;
  payload: Buffer;
}

/** Encoded on the wire: COBS(frame + CRC) followed by the 0x00 delimiter. */
export function encodeFrame(type: number, seq: number, payload: Uint8Array = Buffer.alloc(0), version = PROTOCOL_VERSION): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new Error(`payload too long: ${payload.length} > ${MAX_PAYLOAD}`);
  const raw = Buffer.alloc(HEADER + payload.length + CRC_LEN);
  raw[0] = version;
  raw[1] = type;
  raw[2] = seq & 0xff;
  Buffer.from(payload).copy(raw, HEADER);
  raw.writeUInt16BE(crc16CcittFalse(raw.subarray(0, HEADER + payload.length)), HEADER + payload.length);
  return Buffer.concat([cobsEncode(raw), Buffer.from([0])]);
}

export type DecodeResult = { ok: true; frame: Frame } | { ok: false; error: 'cobs' | 'crc' | 'length' };

/** Decodes one delimiter-free chunk; every failure is a value, never a throw, so line noise cannot crash a reader. */
export function decodeFrame(chunk: Uint8Array): DecodeResult {
  const raw = cobsDecode(chunk);
  if (raw === null) return { ok: false, error: 'cobs' };
  if (raw.length < HEADER + CRC_LEN || raw.length > HEADER + MAX_PAYLOAD + CRC_LEN) return { ok: false, error: 'length' };
  const body = raw.subarray(0, raw.length - CRC_LEN);
  if (crc16CcittFalse(body) !== raw.readUInt16BE(raw.length - CRC_LEN)) return { ok: false, error: 'crc' };
  return { ok: true, frame: { version: raw[0]!, type: raw[1]!, seq: raw[2]!, payload: Buffer.from(body.subarray(HEADER)) } };
}

/**
 * Splits a byte stream on 0x00. A lost or corrupted byte only spoils the frame it is in: the next
 * delimiter resynchronises. Runs longer than MAX_ENCODED are discarded and reported as overruns.
 */
export class FrameSplitter {
  private buf: Buffer = Buffer.alloc(0);
  private discarding = false;

  push(data: Uint8Array, onChunk: (chunk: Buffer) => void, onOverrun: () => void): void {
    let start = 0;
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== 0) continue;
      const piece = data.subarray(start, i);
      start = i + 1;
      if (this.discarding) {
        this.discarding = false;
        this.buf = Buffer.alloc(0);
        continue;
      }
      const chunk = this.buf.length > 0 ? Buffer.concat([this.buf, piece]) : Buffer.from(piece);
      this.buf = Buffer.alloc(0);
      if (chunk.length === 0) continue;
      if (chunk.length > MAX_ENCODED) onOverrun();
      else onChunk(chunk);
    }
    if (this.discarding) return;
    const rest = data.subarray(start);
    if (rest.length === 0) return;
    this.buf = Buffer.concat([this.buf, rest]);
    if (this.buf.length > MAX_ENCODED) {
      this.buf = Buffer.alloc(0);
      this.discarding = true;
      onOverrun();
    }
  }

  reset(): void {
    this.buf = Buffer.alloc(0);
    this.discarding = false;
  }
}

export function encodeHelloPayload(identity: string): Buffer {
  return Buffer.concat([Buffer.from([PROTOCOL_VERSION]), Buffer.from(identity, 'utf8').subarray(0, MAX_PAYLOAD - 1)]);
}

export function decodeHelloPayload(payload: Buffer): { protocolVersion: number; identity: string } | null {
  if (payload.length < 1) return null;
  return { protocolVersion: payload[0]!, identity: payload.subarray(1).toString('utf8') };
}

export function encodeLeds(leds: { recording: boolean; streaming: boolean; fault: boolean }): Buffer {
  return Buffer.from([(leds.recording ? 1 : 0) | (leds.streaming ? 2 : 0) | (leds.fault ? 4 : 0)]);
}

export function decodeLeds(payload: Buffer): { recording: boolean; streaming: boolean; fault: boolean } | null {
  if (payload.length !== 1) return null;
  const b = payload[0]!;
  return { recording: (b & 1) !== 0, streaming: (b & 2) !== 0, fault: (b & 4) !== 0 };
}

export const BATTERY_UNKNOWN_PERCENT = 0xff;
const BAT_CHARGING = 1;
const BAT_DOCKED = 2;
const BAT_CHARGING_KNOWN = 4;
const BAT_DOCKED_KNOWN = 8;

export function encodeBattery(b: { percent: number | null; charging: boolean | null; docked: boolean | null }): Buffer {
  const percent = b.percent === null ? BATTERY_UNKNOWN_PERCENT : Math.max(0, Math.min(100, Math.round(b.percent)));
  let flags = 0;
  if (b.charging !== null) flags |= BAT_CHARGING_KNOWN | (b.charging ? BAT_CHARGING : 0);
  if (b.docked !== null) flags |= BAT_DOCKED_KNOWN | (b.docked ? BAT_DOCKED : 0);
  return Buffer.from([percent, flags]);
}

export function decodeBattery(payload: Buffer): { percent: number | null; charging: boolean | null; docked: boolean | null } | null {
  if (payload.length !== 2) return null;
  const p = payload[0]!;
  const f = payload[1]!;
  if (p !== BATTERY_UNKNOWN_PERCENT && p > 100) return null;
  return {
    percent: p === BATTERY_UNKNOWN_PERCENT ? null : p,
    charging: f & BAT_CHARGING_KNOWN ? (f & BAT_CHARGING) !== 0 : null,
    docked: f & BAT_DOCKED_KNOWN ? (f & BAT_DOCKED) !== 0 : null,
  };
}

/** TRIGGER payload: `source:u8`, 1..255 (0 is reserved and refused). */
export function encodeTrigger(sourceId: number): Buffer {
  if (!Number.isInteger(sourceId) || sourceId < 1 || sourceId > 255) throw new Error(`trigger source id must be 1..255, got ${sourceId}`);
  return Buffer.from([sourceId]);
}

/** The source name of a TRIGGER payload, or null when the payload is malformed (wrong length, source 0). */
export function decodeTrigger(payload: Buffer): string | null {
  if (payload.length !== 1 || payload[0] === 0) return null;
  return triggerSourceName(payload[0]!);
}

/** TRIGGER_SOURCE_IDS' name for an id, `input-<id>` for ids it does not name. */
export function triggerSourceName(id: number): string {
  return TRIGGER_SOURCE_IDS[id] ?? `input-${id}`;
}

/** The wire id of a source name (`holster`, `input-42`) or a decimal id; null when it has none. */
export function triggerSourceId(nameOrId: string): number | null {
  const digits = /^(?:input-)?(\d{1,3})$/.exec(nameOrId)?.[1];
  if (digits !== undefined) {
    const id = Number(digits);
    return id >= 1 && id <= 255 ? id : null;
  }
  const hit = Object.entries(TRIGGER_SOURCE_IDS).find(([, name]) => name === nameOrId);
  return hit === undefined ? null : Number(hit[0]);
}
