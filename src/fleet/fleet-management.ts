// Fleet management by signed command (docs/protocol.md, "Fleet management"): `config.apply`,
// `trust.update` and `diag.collect`, and the trial of a configuration change that restarted the
// agent (committed once online and healthy, reverted to last-good when not within
// remoteConfig.healthyWithin). The commands arrive verified and audited as accepted by the command
// handler; this module audits what each one changed.
//
// Live or restart: a change touching only `liveKeys` is applied in place (the verifier reads its
// policy object on every command); anything else is written and the agent exits with
// `restartExitCode`, which the unit's Restart=on-failure restarts (systemd/bwc-agent.service). The
// live list is short on purpose: each key on it needs code that re-reads it, and a restart costs
// seconds while a half-applied setting could cost evidence.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import type { AuthorisedCommand } from '../command/authorised-command.ts';
import type { ActionExecutor, ActionResult } from '../command/command-handler.ts';
import type { TrustStore } from '../command/trust-store.ts';
import type { CommandPolicy } from '../command/types.ts';
import { ConfigError, leafKeys, loadConfig, type LoadConfigOptions } from '../config/load.ts';
import type { AgentConfig } from '../config/schema.ts';
import { errorMessage } from '../errors.ts';
import { deviceKeyFile } from '../keys/device-key.ts';
import type { DeviceState } from '../state/device-state.ts';
import type { Extension } from '../agent/extension.ts';
import { collectBundle, HealthHistory, RecentLog, defaultBundleBytes } from './diagnostics.ts';
import { configDigest, dropsTls, mergePatch, protectedKeysIn, remoteFileProblems, type RemoteConfigStore, type RemoteDocument, type RevertNote, type Trial } from './remote-config.ts';
import { applyTrustChange, type TrustChange } from './trust-updates.ts';

/** Exit status asking systemd for a restart (EX_TEMPFAIL): not 0 (no restart) nor 2 (config error). */
export { restartExitCode } from '../systemd/restart.ts';

/** Codes a config.apply or trust.update reply can refuse with, after acceptance (docs/protocol.md). */
export const fleetRefusalCodes = ['config_invalid', 'config_key_protected', 'config_conflict', 'config_pending', 'trust_admin_local_only', 'trust_update_invalid'] as const;

/** Settings a config.apply changes without a restart. */
export const liveKeys = ['commands.reasons', 'commands.maxStreamDuration', 'gps.recordingInterval', 'gps.idleInterval'] as const;

/** Where the running config came from, to validate a change exactly as a start would. */
export interface ConfigSource {
  load: Omit<LoadConfigOptions, 'remote'>;
  store: RemoteConfigStore;
  active: RemoteDocument | undefined;
  trial: Trial | undefined;
  /** A revert made at start (src/fleet/config-start.ts), audited once the audit trail is open. */
  revertNote: RevertNote | undefined;
}

export interface FleetManagementOptions {
  config: AgentConfig;
  source: ConfigSource;
  audit: Pick<AuditLog, 'append'>;
  sendEvent: (body: object) => void;
  state: DeviceState;
  trustStore: TrustStore;
  /** The verifier's policy object, changed in place by live keys. */
  policy: CommandPolicy;
  link: { connected: () => boolean; health: () => { healthy: boolean; reason?: string }; onConnectionChange: (listener: () => void) => void };
  /** The GPS cadence, changed in place by live keys. */
  gps?: { setIntervals(recordingIntervalS: number, idleIntervalS: number): void };
  /** Stops the agent and exits with restartExitCode. */
  requestRestart: (reason: string) => void;
  recentLog?: RecentLog;
  logger: Logger;
}

export class FleetManagement implements Extension {
  readonly name = 'fleet-management';
  readonly #o: FleetManagementOptions;
  readonly #log: Logger;
  readonly #health = new HealthHistory();
  readonly #recentLog: RecentLog;
  #config: AgentConfig;
  #active: RemoteDocument | undefined;
  #trial: Trial | undefined;
  #trialTimer: NodeJS.Timeout | undefined;
  #restarting = false;

  constructor(o: FleetManagementOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'fleet' });
    this.#config = o.config;
    this.#active = o.source.active;
    this.#trial = o.source.trial;
    this.#recentLog = o.recentLog ?? new RecentLog();
    o.state.on('changed', (doc) => this.#health.observe(doc.health));
  }

  executors(): { 'config.apply': ActionExecutor; 'trust.update': ActionExecutor; 'diag.collect': ActionExecutor } {
    return {
      'config.apply': (command) => this.#apply(command),
      'trust.update': (command) => this.#trustUpdate(command),
      'diag.collect': (command, reply) => this.#diag(command, reply),
    };
  }

  /** What `state.config` shows. */
  configState(): { version: number; digest: string; pending: boolean; trustDigest: string } {
    return { version: this.#active?.version ?? 0, digest: configDigest(this.#config), pending: this.#trial !== undefined, trustDigest: this.#o.trustStore.digest() };
  }

  start(): void {
    const note = this.#o.source.revertNote;
    if (note) this.#reportRevert(note);
    this.#publishState();
    const trial = this.#trial;
    if (trial) {
      const check = () => {
        if (this.#trial && this.#o.link.connected() && this.#o.link.health().healthy) this.#commit();
      };
      this.#o.link.onConnectionChange(check);
      const left = Math.max(0, trial.deadlineMs - Date.now());
      this.#log.info({ version: trial.version, attempt: trial.attempts, deadlineInMs: left }, 'running a new configuration on trial: it must come online and healthy');
      this.#trialTimer = setTimeout(() => this.#revertNow(`not online and healthy within remoteConfig.healthyWithin (${this.#config.remoteConfig.healthyWithin} s) after the change`), left);
      this.#trialTimer.unref();
      check();
    }
  }

  stop(): void {
    clearTimeout(this.#trialTimer);
  }

  #publishState(): void {
    this.#o.state.update({ config: this.configState() });
  }

  #commit(): void {
    const trial = this.#trial!;
    clearTimeout(this.#trialTimer);
    this.#o.source.store.commit();
    this.#trial = undefined;
    const detail = { version: trial.version, digest: configDigest(this.#config), fromVersion: trial.fromVersion, attempts: trial.attempts };
    this.#o.audit.append({ type: 'config.committed', detail });
    this.#o.sendEvent({ type: 'config.committed', time: new Date().toISOString(), ...detail });
    this.#log.info(detail, 'new configuration online and healthy: committed as last good');
    this.#publishState();
  }

  #revertNow(reason: string): void {
    if (!this.#trial || this.#restarting) return;
    const fromVersion = this.#trial.version;
    const toVersion = this.#o.source.store.revert();
    this.#trial = undefined;
    this.#reportRevert({ fromVersion, toVersion, reason, at: new Date().toISOString() });
    this.#restart(`config.reverted to version ${toVersion}`);
  }

  #reportRevert(note: RevertNote): void {
    const detail = { fromVersion: note.fromVersion, toVersion: note.toVersion, reason: note.reason, at: note.at };
    this.#o.audit.append({ type: 'config.reverted', detail });
    this.#o.sendEvent({ type: 'config.reverted', time: new Date().toISOString(), ...detail });
    this.#log.warn(detail, 'configuration reverted to the last good one');
  }

  #restart(reason: string): void {
    if (this.#restarting) return;
    this.#restarting = true;
    // After the reply: the handler publishes it when this executor's promise settles, before the
    // next macrotask; the link drains it while the agent stops.
    setImmediate(() => this.#o.requestRestart(reason));
  }

  async #apply(command: AuthorisedCommand): Promise<ActionResult> {
    const params = command.params as { document?: Record<string, unknown>; patch?: Record<string, unknown>; base?: number };
    const current = this.#active;
    const currentVersion = current?.version ?? 0;
    if (this.#trial) {
      return { ok: false, code: 'config_pending', message: `version ${this.#trial.version} is still on trial (not yet committed); try again once state.config.pending is false` };
    }
    let document: Record<string, unknown>;
    if (params.document !== undefined) {
      document = structuredClone(params.document) as Record<string, unknown>;
    } else {
      if (params.base !== currentVersion) {
        return { ok: false, code: 'config_conflict', message: `the patch is against version ${params.base}, this camera runs version ${currentVersion} (digest ${configDigest(this.#config)})` };
      }
      document = mergePatch(current?.document ?? {}, params.patch) as Record<string, unknown>;
    }
    const locked = protectedKeysIn(document, this.#config.remoteConfig.unlockedKeys);

    if (locked.length > 0) {
      return {
        ok: false,
        code: 'config_key_protected',
        message: `${locked.join(', ')}: local-only (docs/configuration.md); changed only in the device's own config file, or remotely once that file lists it in remoteConfig.unlockedKeys`,
      };
    }
    const unlocked = this.#config.remoteConfig.unlockedKeys;
    const files = remoteFileProblems(document, this.#o.source.load.file, this.#config.stateDir);
    if (files.length > 0) {
      const where =
        this.#o.source.load.file === undefined
          ? 'the agent runs without a config file, so no file may be named remotely'
          : `a file named remotely must be in ${path.dirname(path.resolve(this.#o.source.load.file))}/ and not in the state folder`;
      return { ok: false, code: 'config_key_protected', message: `${files.join(', ')}: ${where}` };
    }
    let next: AgentConfig;
    try {
      next = loadConfig({ ...this.#o.source.load, remote: document });
    } catch (err) {
      if (err instanceof ConfigError) return { ok: false, code: 'config_invalid', message: err.problems.join('; ') };
      throw err;
    }
    if (dropsTls(this.#config.mqtt.url, next.mqtt.url) && !unlocked.includes('mqtt.url')) {
      return { ok: false, code: 'config_key_protected', message: `mqtt.url: a remote change may not drop TLS (${this.#config.mqtt.url.split(':')[0]}: to ${next.mqtt.url.split(':')[0]}:) unless remoteConfig.unlockedKeys lists mqtt.url` };
    }
    const changed = changedKeys(this.#config, next);
    const version = currentVersion + 1;
    const doc: RemoteDocument = { version, document, appliedAt: new Date().toISOString(), by: { jti: command.jti, operator: command.operator, kid: command.kid } };
    const live = changed.every((k) => (liveKeys as readonly string[]).includes(k));
    const digest = configDigest(next);
    const detail = { version, fromVersion: currentVersion, digest, fromDigest: configDigest(this.#config), changed, applied: live ? 'live' : 'restart', mode: params.document !== undefined ? 'document' : 'patch' };
    if (live) {
      this.#o.source.store.install(doc, { keepAsLastGood: doc });
      this.#applyLive(next);
      this.#active = doc;
      this.#config = next;
      this.#o.audit.append({ type: 'config.applied', operator: command.operator, action: command.action, reason: command.reason, tokenDigest: command.tokenDigest, detail });
      this.#o.sendEvent({ type: 'config.applied', time: new Date().toISOString(), ...detail });
      this.#publishState();
      return { ok: true, applied: 'live', version, digest, changed };
    }
    const trial: Trial = { version, deadlineMs: Date.now() + this.#config.remoteConfig.healthyWithin * 1000, attempts: 0, fromVersion: currentVersion };
    // The configuration running now received and verified this command online: it is good.
    this.#o.source.store.install(doc, { keepAsLastGood: current ?? null, trial });
    this.#o.audit.append({ type: 'config.applied', operator: command.operator, action: command.action, reason: command.reason, tokenDigest: command.tokenDigest, detail });
    this.#o.sendEvent({ type: 'config.applied', time: new Date().toISOString(), ...detail });
    this.#restart(`config.apply version ${version}`);
    return { ok: true, applied: 'restart', version, digest, changed, healthyWithinS: this.#config.remoteConfig.healthyWithin };
  }

  #applyLive(next: AgentConfig): void {
    const policy = this.#o.policy;
    policy.allowedReasons = [...next.commands.reasons];
    policy.maxStreamDurationS = next.commands.maxStreamDuration;
    if (next.gps.recordingInterval !== this.#config.gps.recordingInterval || next.gps.idleInterval !== this.#config.gps.idleInterval) {
      this.#o.gps?.setIntervals(next.gps.recordingInterval, next.gps.idleInterval);
    }
    const c = next.commands;
    this.#o.state.update({ commandPolicy: { reasons: [...c.reasons], maxStreamDurationS: c.maxStreamDuration, maxConcurrentStreams: c.maxConcurrentStreams } });
  }

  #trustUpdate(command: AuthorisedCommand): ActionResult {
    const result = applyTrustChange(this.#config, this.#o.trustStore, command.params as TrustChange);
    if (!result.ok) return result;
    const detail = { kid: command.kid, change: command.params, before: result.before, after: result.after };
    this.#o.audit.append({ type: 'trust.update', operator: command.operator, action: command.action, reason: command.reason, tokenDigest: command.tokenDigest, detail });
    this.#o.sendEvent({ type: 'trust.updated', time: new Date().toISOString(), digest: result.after.digest, kids: result.after.keys.map((k) => k.kid), revoked: result.after.revoked });
    this.#publishState();
    return { ok: true, trustDigest: result.after.digest, keys: result.after.keys, revoked: result.after.revoked };
  }

  #diag(command: AuthorisedCommand, reply: { more(body: object): void }): ActionResult {
    const params = command.params as { maxBytes?: number };
    const bundle = collectBundle(
      {
        state: () => this.#o.state.snapshot(),
        config: () => ({ ...this.configState(), remoteDocument: this.#active?.document ?? null }),
        trust: () => this.#o.trustStore.describe(),
        logs: this.#recentLog,
        health: this.#health,
        secrets: () => this.#secrets(),
      },
      params.maxBytes ?? defaultBundleBytes,
    );
    const detail = { id: bundle.id, bytes: Buffer.byteLength(bundle.json), sha256: bundle.sha256, chunks: bundle.chunks.length };
    this.#o.audit.append({ type: 'diag.collected', operator: command.operator, action: command.action, reason: command.reason, tokenDigest: command.tokenDigest, detail });
    // The chunks follow the reply (the handler sends the reply when this returns).
    setImmediate(() => bundle.chunks.forEach((data, part) => reply.more({ diag: { id: bundle.id, part, of: bundle.chunks.length, data } })));
    return { ok: true, bundle: { ...detail, where: 'reply-topic', encoding: 'base64 slices of the bundle JSON, in order' } };
  }

  #secrets(): string[] {
    try {
      const pem = readFileSync(path.join(this.#config.stateDir, deviceKeyFile), 'utf8');
      const d = (createPrivateKey(pem).export({ format: 'jwk' }) as { d?: string }).d;
      const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
      return [d ?? '', body];
    } catch (err) {
      this.#log.warn({ err: errorMessage(err) }, 'cannot read the device key to guard the diagnostics bundle');
      return [];
    }
  }
}

/** Dotted keys whose effective value differs between two configurations. */
export function changedKeys(a: AgentConfig, b: AgentConfig): string[] {
  const ja = JSON.parse(JSON.stringify(a)) as Record<string, unknown>;
  const jb = JSON.parse(JSON.stringify(b)) as Record<string, unknown>;
  const keys = new Set([...leafKeys(ja), ...leafKeys(jb)]);
  const get = (o: Record<string, unknown>, key: string) => key.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), o);
  return [...keys].filter((k) => JSON.stringify(get(ja, k)) !== JSON.stringify(get(jb, k))).sort();
}
