// Picks the firmware-bridge backend the config names. The agent only ever sees the FirmwareBridge
// interface (firmware-bridge/src/interface.ts).
import type { Logger } from 'pino';
import { GpioBackend } from '../../firmware-bridge/src/gpio-backend.ts';
import type { FirmwareBridge } from '../../firmware-bridge/src/interface.ts';
import { SerialBackend } from '../../firmware-bridge/src/serial/serial-backend.ts';
import { SimBackend } from '../../firmware-bridge/src/sim-backend.ts';
import type { AgentConfig } from '../config/schema.ts';

export function createFirmwareBridge(config: AgentConfig['firmware'], logger: Logger): FirmwareBridge {
  switch (config.backend) {
    case 'serial':
      return new SerialBackend({ path: config.serial.path, baudRate: config.serial.baudRate, logger });
    case 'gpio':
      return new GpioBackend({ config: config.gpio, logger });
    case 'sim':
      return new SimBackend({ logger });
  }
}

export { SimBackend };
