// One pino logger for the process: JSON lines on stdout (journald adds time and unit), or
// pretty-printed for the demo. Modules get child loggers with a `module` field to grep by.
import pino, { type Logger } from 'pino';

export interface LoggerOptions {
  level: string;
  pretty: boolean;
  deviceId?: string;
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
  return pino({ level: options.level, base, timestamp: pino.stdTimeFunctions.isoTime });
}
