// bwc-agent's command line: `run` starts the daemon, `ctl` talks to a running one.
// Exit codes: 0 done, 1 runtime failure (or: a command was refused, an audit chain is broken),
// 2 bad usage or configuration, 3 the agent or the device did not answer.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { Agent } from '../agent/agent.ts';
import { ConfigError, loadConfig, resolveStateDir } from '../config/load.ts';
import { ControlClientError, controlRequest } from '../control/control-socket.ts';
import { auditVerifyCommand } from '../audit/cli.ts';
import { evidenceExportCommand, evidenceVerifyCommand } from '../recording/cli.ts';
import { generateIssuerKeys, sendCommand, signCommand, ToolError } from './fleet-tools.ts';
import { createLogger } from '../log.ts';
import { agentVersion } from '../version.ts';
import { errorMessage } from '../errors.ts';
import { loadStartConfig } from '../fleet/config-start.ts';
import { RecentLog } from '../fleet/diagnostics.ts';
import { restartExitCode } from '../systemd/restart.ts';
import { bootCheck } from '../update/layout.ts';
import { releaseTool, ReleaseToolError } from './release-tools.ts';

const usage = `bwc-agent ${agentVersion}

Usage:
  bwc-agent run [--config FILE]                 start the daemon (no FILE: embedded defaults)
  bwc-agent ctl status [--state-dir DIR]        print the running agent's state as JSON
  bwc-agent ctl record start|stop [--state-dir DIR]
  bwc-agent ctl button record|function press|long|double|hold   simulated firmware (firmware.backend: sim)
  bwc-agent ctl trigger SOURCE                    simulated trigger input (holster, taser, lightbar, ...)
  bwc-agent ctl fall                              simulated fall detector (officer down)
  bwc-agent ctl battery PERCENT [charging]          simulated firmware
  bwc-agent ctl offload status|pause|resume     evidence offload to the object store
  bwc-agent ctl offload hold ID REASON | release ID   keep a recording's local copy (retention never deletes it)
  bwc-agent evidence verify [--state-dir DIR] [--expect-head SEQ:HASH] [--identity FILE]
                                                check every evidence file against the index, the signed manifests
                                                and the recordings the audit trail names (with an age identity
                                                file: also decrypt each file and check it is playable video)
  bwc-agent evidence export --identity FILE --recording ID --out DIR [--state-dir DIR]
                                                decrypt a recording to playable .ts files, with its manifest,
                                                signature, GPS track and a verification report (JSON)
  bwc-agent evidence verify --bucket http(s)://ENDPOINT/BUCKET[/PREFIX] --recording [DEVICE/]ID
                  [--credentials FILE] [--public-key JWK_FILE | --kid KID]
                                                check one recording in the object store: signature, chain, every object
  bwc-agent audit verify [--state-dir DIR | --file CAPTURE] [--public-key JWK_FILE] [--expect-head SEQ:HASH]
                                                check the audit chain (exit 1 naming the first bad entry;
                                                with the fleet's newest head, a rollback or fork too)
  bwc-agent --version

Fleet-side tools (for a backend's operators and tests; see docs/protocol.md):
  bwc-agent keys generate --out DIR [--actions LIST]
  bwc-agent command sign --key FILE --device ID --action ACT --reason CODE [--operator ID]
                         [--issuer ISS] [--ttl S] [--max-s S] [--offer FILE] [--sid SID] [--params JSON_FILE]
                         [--release FILE [--force]]   (agent.update)
                         [--from-seq N --to-seq M]   (audit.fetch: publish that audit range again)
  bwc-agent command send --url MQTT_URL <the sign options>      (prints the device's reply)
  bwc-agent release keygen --out DIR            a release key pair (update.releaseKeys takes the public part)
  bwc-agent release sign --key FILE --bundle FILE --url URL [--version V]
                                                the release of an agent.update, as JSON
  bwc-agent update boot-check [--config FILE]   the systemd unit's ExecStartPre: puts the committed release
                                                back after update.maxFailedStarts failed starts

Environment overrides: BWC_DEVICE_ID, BWC_MQTT_URL, BWC_STATE_DIR, BWC_GPSD, BWC_LOG_LEVEL, BWC_TRUST_STORE, BWC_CAMERA, BWC_FIRMWARE.
Configuration reference: docs/configuration.md`;

export class UsageError extends Error {}

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true });
  // The local file, then what signed config.apply commands left (src/fleet/config-start.ts).
  const { config, source } = loadStartConfig({ file: values.config, env: process.env, cwd: process.cwd() });
  const recentLog = new RecentLog();
  const logger = createLogger({ level: config.log.level, pretty: config.log.pretty, deviceId: config.deviceId, recent: recentLog });
  let exitCode = 0;
  let shutdown: (signal: string) => void = () => undefined;
  const agent = await Agent.create({
    config,
    logger,
    configSource: source,
    recentLog,
    requestRestart: (reason) => {
      // systemd restarts on this status (Restart=on-failure; only 2 is RestartPreventExitStatus).
      exitCode = restartExitCode;
      logger.info({ reason, exitCode }, 'restarting (configuration change or software update)');
      shutdown(reason);
    },
  });
  shutdown = (signal: string) => {
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

/** `update boot-check`: the unit's ExecStartPre, run from the committed release (src/update/layout.ts). */
function updateTool(argv: string[]): number {
  const { values, positionals } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, allowPositionals: true, strict: true });
  if (positionals[0] !== 'boot-check') throw new UsageError('update needs the verb "boot-check"');
  const config = loadConfig({ file: values.config, env: process.env, cwd: process.cwd() });
  process.stdout.write(`bwc-agent boot check: ${bootCheck(config.stateDir, config.update.releasesDir, config.update.maxFailedStarts)}\n`);
  return 0;
}

async function ctl(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { 'state-dir': { type: 'string' } }, allowPositionals: true, strict: true });
  const [verb, ...rest] = positionals;
  const verbs = ['status', 'record', 'button', 'battery', 'offload', 'trigger', 'fall'];
  if (!verb || !verbs.includes(verb)) throw new UsageError(verb ? `unknown ctl verb "${verb}" (known: ${verbs.join(', ')})` : `ctl needs a verb (${verbs.join(', ')})`);
  if (verb === 'record' && rest[0] !== 'start' && rest[0] !== 'stop') throw new UsageError('ctl record needs "start" or "stop"');
  const stateDir = resolveStateDir(values['state-dir'], process.env, process.cwd());
  const result = await controlRequest(path.join(stateDir, 'control.sock'), verb, rest.length ? rest : undefined);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  return 0;
}

async function audit(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { 'state-dir': { type: 'string' }, file: { type: 'string' }, 'public-key': { type: 'string' }, 'expect-head': { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals[0] !== 'verify') throw new UsageError('audit needs the verb "verify"');
  const stateDir = values.file === undefined ? resolveStateDir(values['state-dir'], process.env, process.cwd()) : undefined;
  return auditVerifyCommand({ stateDir, file: values.file, publicKeyFile: values['public-key'], expectHead: values['expect-head'] }, process.stdout, process.stderr);
}

async function evidence(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      'state-dir': { type: 'string' },
      'expect-head': { type: 'string' },
      identity: { type: 'string' },
      recording: { type: 'string' },
      out: { type: 'string' },
      bucket: { type: 'string' },
      credentials: { type: 'string' },
      'public-key': { type: 'string' },
      kid: { type: 'string' },
      region: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals[0] === 'export') {
    if (!values.identity || !values.recording || !values.out) throw new UsageError('evidence export needs --identity FILE --recording ID --out DIR');
    const stateDir = resolveStateDir(values['state-dir'], process.env, process.cwd());
    return evidenceExportCommand({ stateDir, identityFile: values.identity, recordingId: values.recording, outDir: values.out }, process.stdout, process.stderr);
  }
  if (positionals[0] !== 'verify') throw new UsageError('evidence needs the verb "verify" or "export"');
  if (values.bucket !== undefined) {
    if (!values.recording) throw new UsageError('evidence verify --bucket URL needs --recording ID');
    const { evidenceVerifyBucketCommand } = await import('../offload/bucket-cli.ts');
    return evidenceVerifyBucketCommand(
      { bucketUrl: values.bucket, recording: values.recording, credentialsFile: values.credentials, publicKeyFile: values['public-key'], kid: values.kid, region: values.region },
      process.stdout,
      process.stderr,
    );
  }
  const stateDir = resolveStateDir(values['state-dir'], process.env, process.cwd());
  return evidenceVerifyCommand({ stateDir, expectHead: values['expect-head'], identityFile: values.identity }, process.stdout, process.stderr);
}

async function keys(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { out: { type: 'string' }, actions: { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals[0] !== 'generate') throw new UsageError('keys needs the verb "generate"');
  if (!values.out) throw new UsageError('keys generate needs --out DIR');
  const actions = (values.actions ?? 'record.start,record.stop,stream.start,stream.stop').split(',').map((a) => a.trim()).filter(Boolean);
  const made = await generateIssuerKeys(values.out, actions);
  process.stdout.write(`issuer key ${made.kid}\n  private: ${made.privateJwkFile} (keep it on the fleet side)\n  trust store: ${made.trustStoreFile} (the device's commands.trustStore)\n`);
  return 0;
}

const signOptions = {
  key: { type: 'string' },
  device: { type: 'string' },
  action: { type: 'string' },
  reason: { type: 'string' },
  operator: { type: 'string' },
  issuer: { type: 'string' },
  ttl: { type: 'string' },
  'max-s': { type: 'string' },
  offer: { type: 'string' },
  sid: { type: 'string' },
  params: { type: 'string' },
  release: { type: 'string' },
  force: { type: 'boolean' },
  'from-seq': { type: 'string' },
  'to-seq': { type: 'string' },
  url: { type: 'string' },
  'topic-root': { type: 'string' },
} as const;

function readJsonFile(file: string, option: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as unknown;
  } catch (err) {
    throw new UsageError(`${option} ${file}: not readable JSON (${errorMessage(err)})`);
  }
}

function positiveInt(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} expects a positive whole number, got "${value}"`);
  return n;
}

async function commandTool(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: signOptions, allowPositionals: true, strict: true });
  const verb = positionals[0];
  if (verb !== 'sign' && verb !== 'send') throw new UsageError('command needs the verb "sign" or "send"');
  for (const required of ['key', 'device', 'action'] as const) {
    if (!values[required]) throw new UsageError(`command ${verb} needs --${required}`);
  }
  const offer = values.offer === undefined ? undefined : readFileSync(values.offer, 'utf8');
  const token = await signCommand({
    keyFile: values.key!,
    device: values.device!,
    action: values.action!,
    reason: values.reason,
    operator: values.operator,
    issuer: values.issuer,
    ttlS: positiveInt('ttl', values.ttl),
    maxS: positiveInt('max-s', values['max-s']),
    offer,
    sid: values.sid,
    params: values.params === undefined ? undefined : readJsonFile(values.params, '--params'),
    release: values.release === undefined ? undefined : readJsonFile(values.release, '--release'),
    force: values.force,
    fromSeq: positiveInt('from-seq', values['from-seq']),
    toSeq: positiveInt('to-seq', values['to-seq']),
  });
  if (verb === 'sign') {
    process.stdout.write(`${token}\n`);
    return 0;
  }
  if (!values.url) throw new UsageError('command send needs --url mqtt://BROKER:PORT');
  const reply = await sendCommand({ url: values.url, device: values.device!, token, offer, topicRoot: values['topic-root'] ?? 'bwc/v1' });
  process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
  return reply.ok === true ? 0 : 1;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'run':
        return await run(rest);
      case 'ctl':
        return await ctl(rest);
      case 'audit':
        return await audit(rest);
      case 'keys':
        return await keys(rest);
      case 'evidence':
        return await evidence(rest);
      case 'command':
        return await commandTool(rest);
      case 'release':
        return await releaseTool(rest);
      case 'update':
        return updateTool(rest);
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
      process.stderr.write(`bwc-agent: ${errorMessage(err)}\n\n${usage}\n`);
      return 2;
    }
    if (err instanceof ReleaseToolError) {
      process.stderr.write(`bwc-agent: ${err.message}\n`);
      return 2;
    }
    if (err instanceof ToolError) {
      process.stderr.write(`bwc-agent: ${err.message}\n`);
      return err.exitCode;
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
