import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type {
  BatteryStatus,
  ButtonId,
  ButtonPress,
  FirmwareBridge,
  FirmwareBridgeEvents,
  FirmwareBridgeStatus,
  LedState,
  NotificationPattern,
} from './interface.ts';
import { BUTTON_IDS, BUTTON_PRESSES, NOTIFICATION_PATTERNS, TRIGGER_SOURCE_PATTERN, UNKNOWN_BATTERY } from './interface.ts';

export type SimHistoryEntry =
  | { at: number; kind: 'notify'; pattern: NotificationPattern }
  | { at: number; kind: 'leds'; leds: LedState };

export interface SimBackendOptions {
  logger: Logger;
  /** Bounded so a long demo run does not grow memory without limit. Default 1000. */
  historyLimit?: number;
}

export const SIM_FIRMWARE_VERSION = 'sim-1.0';

/** In-process stand-in for the camera MCU: the demo and tests drive its button and battery directly. */
export class SimBackend extends EventEmitter<FirmwareBridgeEvents> implements FirmwareBridge {
  readonly kind = 'sim' as const;
  readonly history: SimHistoryEntry[] = [];
  private readonly logger: Logger;
  private readonly historyLimit: number;
  private started = false;
  private battery: BatteryStatus = { ...UNKNOWN_BATTERY };
  private lastPattern: NotificationPattern | null = null;
  private leds: LedState = { recording: false, streaming: false, fault: false };

  constructor(opts: SimBackendOptions) {
    super();
    this.logger = opts.logger;
    this.historyLimit = opts.historyLimit ?? 1000;
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.emit('link', { up: true, firmwareVersion: SIM_FIRMWARE_VERSION });
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.emit('link', { up: false, reason: 'stopped' });
  }

  async notify(pattern: NotificationPattern): Promise<void> {
    this.requireStarted();
    if (!NOTIFICATION_PATTERNS.includes(pattern)) throw new Error(`unknown notification pattern: ${String(pattern)}`);
    this.lastPattern = pattern;
    this.record({ at: Date.now(), kind: 'notify', pattern });
    this.logger.debug({ pattern }, 'sim firmware: notification played');
  }

  async setLeds(state: LedState): Promise<void> {
    this.requireStarted();
    this.leds = { recording: state.recording, streaming: state.streaming, fault: state.fault };
    this.record({ at: Date.now(), kind: 'leds', leds: { ...this.leds } });
  }

  status(): FirmwareBridgeStatus {
    return {
      linkUp: this.started,
      firmwareVersion: this.started ? SIM_FIRMWARE_VERSION : null,
      battery: { ...this.battery },
      lastPattern: this.lastPattern,
      lastError: null,
    };
  }

  /** Current LED state, as the simulated hardware shows it. */
  ledState(): LedState {
    return { ...this.leds };
  }

  pressButton(button: ButtonId, press: ButtonPress = 'press'): void {
    if (!BUTTON_IDS.includes(button)) throw new Error(`unknown button: ${String(button)}`);
    if (!BUTTON_PRESSES.includes(press)) throw new Error(`unknown button press: ${String(press)}`);
    // A real MCU only reports presses while powered; the same rule keeps the demo honest.
    this.requireStarted();
    this.emit('button', { button, press });
  }

  /** A trigger input (holster, taser, ...), as the MCU or a GPIO input line reports it. */
  trigger(source: string): void {
    if (!TRIGGER_SOURCE_PATTERN.test(source)) throw new Error(`trigger source must match ${TRIGGER_SOURCE_PATTERN}, got ${JSON.stringify(source)}`);
    this.requireStarted();
    this.emit('trigger', { source });
  }

  /** The MCU's fall detector. */
  fall(): void {
    this.requireStarted();
    this.emit('fall');
  }

  setBattery(percent: number, charging?: boolean, docked?: boolean): void {
    if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
      throw new Error(`battery percent must be 0..100, got ${percent}`);
    }
    this.battery = {
      percent: Math.round(percent),
      charging: charging ?? this.battery.charging ?? false,
      docked: docked ?? this.battery.docked ?? false,
    };
    this.emit('battery', { ...this.battery });
  }

  private record(entry: SimHistoryEntry): void {
    this.history.push(entry);
    if (this.history.length > this.historyLimit) this.history.splice(0, this.history.length - this.historyLimit);
  }

  private requireStarted(): void {
    if (!this.started) throw new Error('sim firmware bridge is not started');
  }
}
