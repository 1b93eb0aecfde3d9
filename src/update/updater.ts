// agent.update (docs/operations.md, "Software updates"): a signed command names a release; the
// agent checks the release key's signature and the floor, refuses while recording or streaming
// unless the command says `force`, downloads resumably, checks the SHA-256, unpacks beside the
// running release, switches `current`, and exits with a restart status for systemd to start the
// new release. The new release commits itself (`committed` -> itself) only once it is online with
// the capture running within update.healthTimeout; otherwise it switches back and exits again. A
// release that cannot even start is caught by the committed release's boot check (layout.ts).
// Every step and every refusal is audited and sent as an event.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import type { AuthorisedCommand } from '../command/authorised-command.ts';
import type { ActionResult } from '../command/command-handler.ts';
import type { AgentConfig } from '../config/schema.ts';
import type { DeviceState, DeviceStateDoc } from '../state/device-state.ts';
import { errorMessage } from '../errors.ts';
import type { Extension } from '../agent/extension.ts';
import { downloadResumable, type DownloadResult } from './download.ts';
import { clearPending, linkedVersion, readPending, switchLink, takeOutcome, updateDirOf, writeOutcome, writePending } from './layout.ts';
import { compareVersions, ReleaseKeys, ReleaseRefusal, type ReleaseClaim } from './release.ts';

/** The exit status that asks systemd (Restart=on-failure) to start the agent again: EX_TEMPFAIL. */
export { restartExitCode } from '../systemd/restart.ts';

/** Download attempts per agent.update, each resuming the last (a camera's link drops). */
const downloadAttempts = 4;

export interface UpdaterOptions {
  config: AgentConfig['update'];
  stateDir: string;
  runningVersion: string;
  releaseKeys: ReleaseKeys | undefined;
  audit: Pick<AuditLog, 'append'>;
  state: DeviceState;
  sendEvent: (body: object) => void;
  /** Stops the agent cleanly and exits with restartExitCode. */
  restart: (reason: string) => void;
  logger: Logger;
}

export class Updater implements Extension {
  readonly name = 'update';
  readonly #o: UpdaterOptions;
  readonly #log: Logger;
  #job: Promise<void> | undefined;
  #abort = new AbortController();
  #trialTimer: NodeJS.Timeout | undefined;
  #onState: ((doc: DeviceStateDoc) => void) | undefined;

  constructor(o: UpdaterOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'update' });
  }

  start(): void {
    const { stateDir } = this.#o;
    const outcome = takeOutcome(stateDir);
    if (outcome !== undefined) {
      const detail = 'invalid' in outcome ? { reason: outcome.invalid } : outcome;
      this.#record('update.rolled_back', { ...detail, running: this.#o.runningVersion });
    }
    const pending = readPending(stateDir);
    if (pending === undefined) return;
    if ('invalid' in pending) {
      clearPending(stateDir);
      this.#record('update.marker_removed', { reason: pending.invalid, running: this.#o.runningVersion });
      return;
    }
    if (pending.version !== this.#o.runningVersion) {
      // The switch to the new release did not happen (a crash between the marker and the switch):
      // this release keeps running and the trial is over.
      clearPending(stateDir);
      this.#record('update.abandoned', { version: pending.version, running: this.#o.runningVersion, reason: 'the release on trial is not the one running' });
      return;
    }
    this.#beginTrial(pending.previous);
  }

  stop(): void {
    this.#abort.abort();
    clearTimeout(this.#trialTimer);
    if (this.#onState) this.#o.state.off('changed', this.#onState);
  }

  /** The executor of agent.update. Refusals are answered (and audited as the command's result). */
  async execute(command: AuthorisedCommand): Promise<ActionResult> {
    const release = command.release;
    if (!release) return { ok: false, code: 'malformed', message: 'agent.update without a release' };
    const { config } = this.#o;
    const refuse = (code: string, message: string): ActionResult => ({ ok: false, code, message });
    if (!this.#o.releaseKeys) return refuse('updates_disabled', 'update.releaseKeys is not configured: this camera takes no updates');
    if (this.#job) return refuse('update_in_progress', 'an update is already being downloaded or installed');
    const pending = readPending(this.#o.stateDir);
    if (pending && !('invalid' in pending)) return refuse('update_in_progress', `release ${pending.version} is still on trial`);
    let kid: string;
    try {
      ({ kid } = await this.#o.releaseKeys.verify(release));
    } catch (err) {
      if (err instanceof ReleaseRefusal) return refuse(err.code, err.message);
      throw err;
    }
    if (compareVersions(release.version, config.minVersion) < 0) {
      return refuse('below_floor', `release ${release.version} is below the floor update.minVersion ${config.minVersion}`);
    }
    if (release.version === this.#o.runningVersion) return refuse('already_running', `release ${release.version} is the one running`);
    const doc = this.#o.state.snapshot();
    const streaming = doc.streaming.sessions > 0;
    if ((doc.recording || streaming) && !command.force) {
      return refuse('busy_recording', `the camera is ${doc.recording ? 'recording' : 'streaming'}; send the update again later, or with force: true`);
    }
    const started = Date.now();
    this.#job = this.#install(release, command, kid, started).finally(() => {
      this.#job = undefined;
    });
    return { ok: true, status: 'downloading', version: release.version };
  }

  async #install(release: ReleaseClaim, command: AuthorisedCommand, kid: string, startedMs: number): Promise<void> {
    const { stateDir, config } = this.#o;
    const dir = updateDirOf(stateDir);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const bundle = path.join(dir, `${release.version}.tar.gz`);
    const base = { version: release.version, operator: command.operator, jti: command.jti, releaseKid: kid };
    this.#record('update.downloading', { ...base, url: release.url });
    let got: DownloadResult | undefined;
    rmSync(bundle, { force: true });
    for (let attempt = 1; got === undefined; attempt += 1) {
      try {
        got = await downloadResumable({ url: release.url, file: bundle, maxBytes: config.maxBundleBytes, signal: this.#abort.signal });
      } catch (err) {
        // The partial file stays: the next attempt, or the same agent.update sent again after a
        // restart, continues where this one stopped (HTTP Range).
        if (attempt >= downloadAttempts || this.#abort.signal.aborted) {
          this.#record('update.failed', { ...base, code: 'download_failed', reason: errorMessage(err), attempts: attempt });
          return;
        }
        this.#record('update.download_cut', { ...base, reason: errorMessage(err), attempt });
        await new Promise((r) => setTimeout(r, attempt * 1000));
      }
    }
    if (got.sha256 !== release.sha256) {
      rmSync(bundle, { force: true });
      this.#record('update.refused', { ...base, code: 'sha256_mismatch', reason: `the bundle's SHA-256 is ${got.sha256}, not the signed ${release.sha256}`, bytes: got.bytes });
      return;
    }
    const target = path.join(config.releasesDir, release.version);
    const unpacking = path.join(config.releasesDir, `.${release.version}.unpacking`);
    try {
      mkdirSync(config.releasesDir, { recursive: true });
      rmSync(unpacking, { recursive: true, force: true });
      mkdirSync(unpacking);
      await untar(bundle, unpacking);
      const [top, ...more] = readdirSync(unpacking);
      if (!top || more.length) throw new Error('the bundle is not one folder');
      const launcher = path.join(unpacking, top, 'bin', 'bwc-agent');
      if (!existsSync(launcher)) throw new Error('the bundle has no bin/bwc-agent');
      rmSync(target, { recursive: true, force: true });
      renameSync(path.join(unpacking, top), target);
      rmSync(unpacking, { recursive: true, force: true });
    } catch (err) {
      rmSync(unpacking, { recursive: true, force: true });
      this.#record('update.failed', { ...base, code: 'install_failed', reason: errorMessage(err) });
      return;
    }
    rmSync(bundle, { force: true });
    const previous = linkedVersion(config.releasesDir, 'current') ?? this.#o.runningVersion;
    if (!linkedVersion(config.releasesDir, 'committed')) switchLink(config.releasesDir, 'committed', previous);
    writePending(stateDir, { version: release.version, previous, attempts: 0, at: new Date().toISOString(), operator: command.operator, jti: command.jti });
    switchLink(config.releasesDir, 'current', release.version);
    this.#record('update.installed', { ...base, previous, bytes: got.bytes, resumedFrom: got.resumedFrom, ms: Date.now() - startedMs });
    this.#o.restart(`update to ${release.version}`);
  }

  /** This release is on trial: commit once healthy, else put the previous one back. */
  #beginTrial(previous: string): void {
    const { config, stateDir, runningVersion } = this.#o;
    this.#record('update.trial', { version: runningVersion, previous, healthTimeoutS: config.healthTimeout });
    const check = (doc: DeviceStateDoc) => {
      if (doc.link.connected !== true || doc.capture?.status !== 'running') return;
      clearTimeout(this.#trialTimer);
      this.#o.state.off('changed', check);
      this.#onState = undefined;
      switchLink(config.releasesDir, 'committed', runningVersion);
      clearPending(stateDir);
      this.#record('update.committed', { version: runningVersion, previous });
    };
    this.#onState = check;
    this.#o.state.on('changed', check);
    this.#trialTimer = setTimeout(() => {
      this.#o.state.off('changed', check);
      const doc = this.#o.state.snapshot();
      const reason = `release ${runningVersion} was not online with the capture running within update.healthTimeout ${config.healthTimeout} s (connected: ${doc.link.connected}, capture: ${doc.capture?.status ?? 'unknown'})`;
      const back = linkedVersion(config.releasesDir, 'committed') ?? previous;
      switchLink(config.releasesDir, 'current', back);
      clearPending(stateDir);
      writeOutcome(stateDir, { version: runningVersion, previous: back, reason, at: new Date().toISOString() });
      this.#record('update.reverting', { version: runningVersion, previous: back, reason });
      this.#o.restart(`rollback to ${back}`);
    }, config.healthTimeout * 1000);
    check(this.#o.state.snapshot());
  }

  #record(type: string, detail: Record<string, unknown>): void {
    this.#log.info(detail, type);
    try {
      this.#o.audit.append({ type, detail });
    } catch (err) {
      this.#log.error({ err: errorMessage(err), type }, 'cannot audit an update step');
    }
    this.#o.sendEvent({ type, time: new Date().toISOString(), ...detail });
  }
}

/**
 * Unpacks with GNU tar, which every Debian system (and the Pi image) has: it keeps the bundle's
 * modes and symlinks, and refuses member names with ".." or a leading "/". The bundle has been
 * checked against its signed SHA-256 before this runs.
 */
function untar(file: string, into: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-xzf', file, '-C', into, '--no-same-owner', '--no-same-permissions'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tar exited ${code}: ${err.slice(0, 500)}`))));
  });
}
