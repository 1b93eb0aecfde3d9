import type { EventEmitter } from 'node:events';

/** Named notification patterns: the agent only names them; the MCU (or gpio/sim backend) plays them. */
export type NotificationPattern =
  | 'record-start'
  | 'record-stop'
  | 'stream-start'
  | 'stream-stop'
  | 'reminder'
  | 'fault'
  // The officer in the loop (issue 19): each is felt, so the wearer knows the camera understood.
  | 'watch-me-sent'
  | 'emergency-raised'
  | 'emergency-acknowledged'
  | 'emergency-cleared'
  | 'bookmark'
  | 'talk-start';
export type LedState = { recording: boolean; streaming: boolean; fault: boolean };
export type ButtonId = 'record' | 'function';
/**
 * `double`: two presses within the double-press window; `hold`: held for the hold time (longer than
 * `long`). The MCU (or the gpio backend) recognises the gesture; the agent maps gestures to meanings
 * (officer.buttons), so a force can choose which gesture asks to be watched.
 */
export type ButtonPress = 'press' | 'long' | 'double' | 'hold';

/**
 * A trigger input: something on the officer or the vehicle that should start recording (a holster
 * sensor, a Taser being armed, the light bar). The source is a name (TRIGGER_SOURCE_IDS gives the
 * serial protocol's numbers); the agent's config says what each source does.
 */
export interface TriggerInput {
  source: string;
}

/** Trigger source names: lower-case letters, digits and '-', at most 32 characters. */
export const TRIGGER_SOURCE_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

/** The serial protocol's TRIGGER source ids (PROTOCOL.md); any other id n is reported as `input-n`. */
export const TRIGGER_SOURCE_IDS: Readonly<Record<number, string>> = {
  1: 'holster',
  2: 'taser',
  3: 'lightbar',
  4: 'vehicle-door',
  5: 'siren',
  6: 'weapon',
};

export interface BatteryStatus {
  percent: number | null;
  charging: boolean | null;
  docked: boolean | null;
}

export interface LinkEvent {
  up: boolean;
  reason?: string;
  firmwareVersion?: string;
}

export interface FirmwareBridgeEvents {
  button: [{ button: ButtonId; press: ButtonPress }];
  battery: [BatteryStatus];
  link: [LinkEvent];
  trigger: [TriggerInput];
  /** The MCU's fall detector fired (an officer down). */
  fall: [];
}

export interface FirmwareBridgeStatus {
  linkUp: boolean;
  firmwareVersion: string | null;
  battery: BatteryStatus;
  lastPattern: NotificationPattern | null;
  lastError: string | null;
}

export interface FirmwareBridge extends EventEmitter<FirmwareBridgeEvents> {
  readonly kind: 'sim' | 'serial' | 'gpio';
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves once the hardware acknowledged the pattern; rejects with a clear Error otherwise, never hangs. */
  notify(pattern: NotificationPattern): Promise<void>;
  /** Same contract as notify(); backends also restore the last LED state after a reconnect or MCU reset. */
  setLeds(state: LedState): Promise<void>;
  status(): FirmwareBridgeStatus;
}

export const NOTIFICATION_PATTERNS: readonly NotificationPattern[] = [
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

export const BUTTON_IDS: readonly ButtonId[] = ['record', 'function'];
export const BUTTON_PRESSES: readonly ButtonPress[] = ['press', 'long', 'double', 'hold'];

export interface PatternSteps {
  /** Number of vibration pulses. */
  vibrations: number;
  /** Number of buzzer tones. */
  tones: number;
  /** Length of each pulse/tone and the gap between them, ms. */
  pulseMs: number;
  gapMs: number;
  /** Tone pitch, Hz; a falling pitch marks "stop" patterns so they are told apart by ear. */
  toneHz: number;
  meaning: string;
}

/**
 * Default meaning of each pattern, following common body-worn-camera practice (recording start =
 * 2 vibrations + 2 tones). Kept as data so the gpio and sim backends play exactly what the MCU firmware
 * is documented to play (PROTOCOL.md), and so a deployment can see what an officer will feel.
 */
export const patternSteps: Record<NotificationPattern, PatternSteps> = {
  'record-start': { vibrations: 2, tones: 2, pulseMs: 150, gapMs: 150, toneHz: 2000, meaning: 'recording started' },
  'record-stop': { vibrations: 1, tones: 1, pulseMs: 400, gapMs: 0, toneHz: 1000, meaning: 'recording stopped' },
  'stream-start': { vibrations: 3, tones: 0, pulseMs: 100, gapMs: 100, toneHz: 0, meaning: 'live view started' },
  'stream-stop': { vibrations: 1, tones: 0, pulseMs: 300, gapMs: 0, toneHz: 0, meaning: 'live view stopped' },
  reminder: { vibrations: 1, tones: 1, pulseMs: 100, gapMs: 0, toneHz: 2000, meaning: 'still recording (periodic)' },
  fault: { vibrations: 5, tones: 3, pulseMs: 80, gapMs: 80, toneHz: 500, meaning: 'device fault: check the camera' },
  'watch-me-sent': { vibrations: 2, tones: 1, pulseMs: 80, gapMs: 120, toneHz: 1500, meaning: 'your request to be watched was sent' },
  'emergency-raised': { vibrations: 4, tones: 4, pulseMs: 250, gapMs: 100, toneHz: 2500, meaning: 'emergency alert raised' },
  'emergency-acknowledged': { vibrations: 2, tones: 0, pulseMs: 500, gapMs: 200, toneHz: 0, meaning: 'a supervisor acknowledged your emergency' },
  'emergency-cleared': { vibrations: 1, tones: 1, pulseMs: 600, gapMs: 0, toneHz: 800, meaning: 'emergency alert cleared' },
  bookmark: { vibrations: 1, tones: 0, pulseMs: 60, gapMs: 0, toneHz: 0, meaning: 'moment bookmarked' },
  'talk-start': { vibrations: 0, tones: 2, pulseMs: 120, gapMs: 80, toneHz: 1200, meaning: 'a supervisor is about to speak' },
};

/** While recording, the agent asks for `reminder` this often by default (configurable in the agent). */
export const DEFAULT_REMINDER_INTERVAL_MS = 120_000;

/** What the LEDs show for each state bit: streaming has its own colour so it is distinct from recording. */
export const ledMeaning: Record<keyof LedState, string> = {
  recording: 'red, steady',
  streaming: 'blue, slow blink',
  fault: 'amber, fast blink',
};

export const UNKNOWN_BATTERY: BatteryStatus = Object.freeze({ percent: null, charging: null, docked: null });
