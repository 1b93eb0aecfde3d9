// bwc-agent's command line: `run` starts the daemon, `ctl` talks to a running one.
// Exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration, 3 agent not reachable.
import { parseArgs } from 'node:util';
import path from 'node:path';
import { Agent } from '../agent/agent.ts';
import { ConfigError, loadConfig, resolveStateDir } from '../config/load.ts';
import { ControlClientError, controlRequest } from '../control/control-socket.ts';
import { createLogger } from '../log.ts';
import { agentVersion } from '../version.ts';

const usage = `bwc-agent ${agentVersion}

Usage:
  bwc-agent run [--config FILE]                 start the daemon (no FILE: embedded defaults)
  bwc-agent ctl status [--state-dir DIR]        print the running agent's state as JSON
  bwc-agent --version

Environment overrides: BWC_DEVICE_ID, BWC_MQTT_URL, BWC_STATE_DIR, BWC_GPSD, BWC_LOG_LEVEL.
Configuration reference: docs/configuration.md`;

export class UsageError extends Error {}

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true });
  const config = loadConfig({ file: values.config, env: process.env, cwd: process.cwd() });
  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty, deviceId: config.deviceId });
  const agent = new Agent({ config, logger });
  let exitCode = 0;
  const shutdown = (signal: string) => {
    void agent.stop(signal).then(
      () => process.exit(exitCode),
      (err: unknown) => {
        logger.fatal({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.on('uncaughtException', (err) => {
    // State is unknown after this: stop cleanly if possible and let systemd restart us.
    logger.fatal({ err }, 'uncaught exception');
    exitCode = 1;
    shutdown('uncaughtException');
  });
  await agent.start();
  return new Promise<number>(() => {
    /* runs until a signal */
  });
}

async function ctl(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { 'state-dir': { type: 'string' } }, allowPositionals: true, strict: true });
  const [verb, ...rest] = positionals;
  if (verb !== 'status') throw new UsageError(verb ? `unknown ctl verb "${verb}" (known: status)` : 'ctl needs a verb (status)');
  const stateDir = resolveStateDir(values['state-dir'], process.env, process.cwd());
  const result = await controlRequest(path.join(stateDir, 'control.sock'), verb, rest.length ? rest : undefined);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'run':
        return await run(rest);
      case 'ctl':
        return await ctl(rest);
      case '--version':
      case 'version':
        process.stdout.write(`${agentVersion}\n`);
        return 0;
      case undefined:
      case '--help':
      case 'help':
        process.stdout.write(`${usage}\n`);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`bwc-agent: ${err.message}\n`);
      return 2;
    }
    if (err instanceof UsageError || (err as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`bwc-agent: ${(err as Error).message}\n\n${usage}\n`);
      return 2;
    }
    if (err instanceof ControlClientError) {
      process.stderr.write(`bwc-agent: ${err.message}\n`);
      return 3;
    }
    process.stderr.write(`bwc-agent: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
}
