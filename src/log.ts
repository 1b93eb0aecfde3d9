// One pino logger for the process: JSON lines on stdout (journald adds time and unit), or
// pretty-printed for the demo. Modules get child loggers with a `module` field to grep by.
import pino, { type Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  pretty: boolean;
  deviceId?: string;
  /** Also keeps the newest lines here, for a diag.collect bundle (src/fleet/diagnostics.ts). */
  recent?: { write(line: string): void };
}

export function createLogger(options: LoggerOptions): Logger {
  const base = options.deviceId ? { deviceId: options.deviceId } : {};
  if (options.pretty) {
    return pino({
      level: options.level,
      base,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  if (options.recent) {
    const level = options.level as pino.Level;
    return pino(
      { level: options.level, base, timestamp: pino.stdTimeFunctions.isoTime },
      pino.multistream([
        { level, stream: pino.destination(1) },
        { level, stream: options.recent },
      ]),
    );
  }
  return pino({ level: options.level, base, timestamp: pino.stdTimeFunctions.isoTime });
}
