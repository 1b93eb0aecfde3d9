// Connects the camera's buttons, haptics, LEDs and battery (through the firmware-bridge, whatever
// its backend) to the agent: the record button drives recording, every recording change is felt
// and heard by the wearer, and so is every live view's start and stop (unless covert mode is
// configured), the battery and the MCU link show in `state`.
//
// Record button: a short press starts recording (and, while recording, replays the reminder so the
// officer can check by touch); stopping needs a deliberate long press, so a knock against the
// button can never end a recording.
import type { Logger } from 'pino';
import type { FirmwareBridge, LedState, NotificationPattern } from '../../firmware-bridge/src/interface.ts';
import type { RecorderStatus } from '../recording/recorder.ts';
import type { DeviceState, FirmwareState } from '../state/device-state.ts';
import type { Extension } from '../agent/extension.ts';
import { errorMessage } from '../errors.ts';

export interface RecordingControl {
  start(trigger: { kind: 'button' }): unknown;
  stop(trigger: { kind: 'button' }): unknown;
  status(): { recording: boolean };
  on(event: 'state', listener: (s: RecorderStatus) => void): unknown;
}

export interface FirmwareExtensionOptions {
  bridge: FirmwareBridge;
  recorder: RecordingControl;
  state: DeviceState;
  /** Queues an `event` (the MCU link going down or coming back). */
  sendEvent: (body: object) => void;
  /** Reminder while recording, seconds; 0 turns it off. */
  reminderIntervalS: number;
  logger: Logger;
}

export class FirmwareExtension implements Extension {
  readonly name = 'firmware';
  readonly #o: FirmwareExtensionOptions;
  readonly #logger: Logger;
  #reminder: NodeJS.Timeout | undefined;
  #leds: LedState = { recording: false, streaming: false, fault: false };
  #recording = false;
  #linkUp: boolean | undefined;

  constructor(options: FirmwareExtensionOptions) {
    this.#o = options;
    this.#logger = options.logger.child({ module: 'firmware' });
    const { bridge, recorder } = options;
    bridge.on('button', ({ button, press }) => {
      this.#logger.info({ button, press }, 'button');
      if (button !== 'record') return;
      const recording = recorder.status().recording;
      if (press === 'press' && !recording) recorder.start({ kind: 'button' });
      else if (press === 'press' && recording) void this.#play('reminder');
      else if (press === 'long' && recording) recorder.stop({ kind: 'button' });
    });
    bridge.on('battery', (battery) => {
      this.#o.state.update({ battery: { percent: battery.percent, charging: battery.charging } });
      this.#publishFirmware();
    });
    bridge.on('link', (link) => {
      const was = this.#linkUp;
      this.#linkUp = link.up;
      if (was === true && !link.up) {
        this.#logger.warn({ reason: link.reason }, 'lost the link to the camera MCU; recording carries on');
        this.#o.sendEvent({ type: 'firmware.link_lost', time: new Date().toISOString(), backend: bridge.kind, reason: link.reason ?? null });
      } else if (was === false && link.up) {
        this.#logger.info({ firmwareVersion: link.firmwareVersion }, 'camera MCU link restored');
        this.#o.sendEvent({ type: 'firmware.link_restored', time: new Date().toISOString(), backend: bridge.kind, firmwareVersion: link.firmwareVersion ?? null });
      }
      this.#publishFirmware();
    });
    recorder.on('state', (s) => this.#onRecording(s.recording));
  }

  async start(): Promise<void> {
    try {
      await this.#o.bridge.start();
    } catch (err) {
      // No MCU is no reason not to record: report it and carry on; the backend keeps retrying.
      this.#logger.error({ err: errorMessage(err), backend: this.#o.bridge.kind }, 'firmware bridge did not start');
      this.#o.sendEvent({ type: 'firmware.link_lost', time: new Date().toISOString(), backend: this.#o.bridge.kind, reason: errorMessage(err) });
    }
    this.#publishFirmware();
    this.#onRecording(this.#o.recorder.status().recording);
  }

  async stop(): Promise<void> {
    clearInterval(this.#reminder);
    await this.#o.bridge.stop().catch((err: unknown) => this.#logger.warn({ err: errorMessage(err) }, 'firmware bridge stop failed'));
  }

  /** The live view's notices to the wearer (src/stream, WearerNotice); the manager skips them in covert mode. */
  streamStarted(): void {
    void this.#play('stream-start');
  }

  streamStopped(): void {
    void this.#play('stream-stop');
  }

  /** A pattern the wearer feels (the officer extension: watch-me-sent, emergency-raised, bookmark...). */
  notify(pattern: NotificationPattern): void {
    void this.#play(pattern);
  }

  /** Talk-back (src/stream/talkback.ts): the cue before a supervisor's words, played in covert mode too (the wearer hears the words anyway). */
  talkStarting(): void {
    void this.#play('talk-start');
  }

  streaming(active: boolean): void {
    this.#leds = { ...this.#leds, streaming: active };
    this.#o.bridge.setLeds(this.#leds).catch((err: unknown) => this.#failed('LEDs', err));
  }

  #onRecording(recording: boolean): void {
    if (recording === this.#recording) return;
    this.#recording = recording;
    void this.#play(recording ? 'record-start' : 'record-stop');
    this.#leds = { ...this.#leds, recording };
    this.#o.bridge.setLeds(this.#leds).catch((err: unknown) => this.#failed('LEDs', err));
    clearInterval(this.#reminder);
    this.#reminder = undefined;
    if (recording && this.#o.reminderIntervalS > 0) {
      this.#reminder = setInterval(() => void this.#play('reminder'), this.#o.reminderIntervalS * 1000);
      this.#reminder.unref();
    }
  }

  async #play(pattern: NotificationPattern): Promise<void> {
    try {
      await this.#o.bridge.notify(pattern);
      this.#logger.info({ pattern }, 'notification played');
    } catch (err) {
      this.#failed(`pattern ${pattern}`, err);
    }
    this.#publishFirmware();
  }

  #failed(what: string, err: unknown): void {
    this.#logger.warn({ err: errorMessage(err), what }, 'the wearer could not be notified');
  }

  #publishFirmware(): void {
    const s = this.#o.bridge.status();
    const firmware: FirmwareState = {
      backend: this.#o.bridge.kind,
      linkUp: s.linkUp,
      firmwareVersion: s.firmwareVersion,
      lastPattern: s.lastPattern,
      lastError: s.lastError,
    };
    this.#o.state.update({ firmware });
  }
}
