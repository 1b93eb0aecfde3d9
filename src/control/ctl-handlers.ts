// The verbs `bwc-agent ctl` sends over the control socket (docs/operations.md): the agent's status,
// a recording started or stopped by hand, and simulated hardware input for the demo and tests
// (a button press, the battery level), which only the sim firmware backend takes.
import { BUTTON_PRESSES, TRIGGER_SOURCE_PATTERN, type ButtonPress, type FirmwareBridge } from '../../firmware-bridge/src/interface.ts';
import { SimBackend } from '../firmware/create-bridge.ts';
import type { Offloader } from '../offload/offloader.ts';
import type { Recorder } from '../recording/recorder.ts';
import type { ControlServer } from './control-socket.ts';

export interface CtlHandlerParts {
  recorder: Pick<Recorder, 'start' | 'stop'>;
  bridge: FirmwareBridge;
  /** The agent's status document (`ctl status`). */
  status: () => object;
  /** Evidence offload, when offload.enabled. */
  offload?: Pick<Offloader, 'status' | 'pause' | 'resume' | 'hold' | 'release'>;
}

/** Registers every ctl verb on `control`. */
export function registerCtlHandlers(control: Pick<ControlServer, 'handle'>, parts: CtlHandlerParts): void {
  const { recorder, bridge } = parts;
  const simulated = () => {
    if (!(bridge instanceof SimBackend)) throw new Error(`the ${bridge.kind} firmware backend takes no simulated input (firmware.backend is "${bridge.kind}")`);
    return bridge;
  };
  control.handle('button', (args) => {
    const [button, press = 'press'] = Array.isArray(args) ? (args as string[]) : [];
    if ((button !== 'record' && button !== 'function') || !(BUTTON_PRESSES as readonly string[]).includes(press)) throw new Error('button needs "record|function" and "press|long|double|hold"');
    simulated().pressButton(button, press as ButtonPress);
    return { button, press };
  });
  // ctl trigger SOURCE: a trigger input (holster, taser, lightbar, ...) as the MCU or a GPIO line reports it.
  control.handle('trigger', (args) => {
    const [source] = Array.isArray(args) ? (args as string[]) : [];
    if (typeof source !== 'string' || !TRIGGER_SOURCE_PATTERN.test(source)) throw new Error(`trigger needs a source name matching ${TRIGGER_SOURCE_PATTERN} (holster, taser, lightbar, ...)`);
    simulated().trigger(source);
    return { source };
  });
  // ctl fall: the MCU's fall detector fired.
  control.handle('fall', () => {
    simulated().fall();
    return { fall: true };
  });
  control.handle('battery', (args) => {
    const [value, charging] = Array.isArray(args) ? (args as string[]) : [];
    const percent = Number(value);
    if (!Number.isFinite(percent) || percent < 0 || percent > 100) throw new Error('battery needs a percentage from 0 to 100');
    simulated().setBattery(percent, charging === 'charging');
    return { percent, charging: charging === 'charging' };
  });
  control.handle('record', (args) => {
    const verb = Array.isArray(args) ? args[0] : undefined;
    if (verb === 'start') return recorder.start({ kind: 'ctl' });
    if (verb === 'stop') return recorder.stop({ kind: 'ctl' });
    throw new Error('record needs "start" or "stop"');
  });
  control.handle('status', () => parts.status());
  // ctl offload status|pause|resume|hold ID REASON...|release ID: a hold keeps a recording's local
  // copy whatever the retention policy says (a local, root-only verb, audited like the others).
  control.handle('offload', (args) => {
    const [verb, id, ...reason] = Array.isArray(args) ? (args as string[]) : [];
    const offload = parts.offload;
    if (!offload) throw new Error('offload is not enabled (offload.enabled is false)');
    if (verb === 'status') return offload.status();
    if (verb === 'pause') return offload.pause('ctl'), offload.status();
    if (verb === 'resume') return offload.resume('ctl'), offload.status();
    if (verb === 'hold' && id && reason.length > 0) return offload.hold(id, reason.join(' '));
    if (verb === 'release' && id) return offload.release(id);
    throw new Error('offload needs "status", "pause", "resume", "hold RECORDING_ID REASON" or "release RECORDING_ID"');
  });
}
