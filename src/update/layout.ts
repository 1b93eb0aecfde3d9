// The files of a software update (docs/operations.md, "Software updates"):
//   <update.releasesDir>/<version>/    one unpacked release bundle each
//   <update.releasesDir>/current       symlink: the release the systemd unit starts (ExecStart)
//   <update.releasesDir>/committed     symlink: the last release that came up healthy; its boot
//                                      check runs before every start (ExecStartPre)
//   <stateDir>/update/<version>.tar.gz.partial   a download in progress, resumed with HTTP Range
//   <stateDir>/update/pending.json     an installed release on trial: {version, previous, attempts}
//   <stateDir>/update/outcome.json     why a release was put back, audited by the release that runs next
// Both symlinks are switched by renaming a new symlink over the old one, so a power cut leaves
// one or the other, never neither.
import { existsSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { fsyncDirSync, writeJsonAtomically } from '../store/atomic-file.ts';
import path from 'node:path';
import { versionPattern } from './release.ts';

export interface PendingUpdate {
  version: string;
  previous: string;
  /** Starts of `version` counted by the boot check. */
  attempts: number;
  at: string;
  operator?: string;
  jti?: string;
}

export interface UpdateOutcome {
  version: string;
  previous: string;
  reason: string;
  at: string;
}

export function updateDirOf(stateDir: string): string {
  return path.join(stateDir, 'update');
}

/** The version a symlink (`current`, `committed`) names, or undefined when absent or not a version. */
export function linkedVersion(releasesDir: string, name: 'current' | 'committed'): string | undefined {
  try {
    const target = path.basename(readlinkSync(path.join(releasesDir, name)));
    return versionPattern.test(target) ? target : undefined;
  } catch {
    return undefined;
  }
}

/** Points `<releasesDir>/<name>` at `<version>` atomically (a new link renamed over the old). */
export function switchLink(releasesDir: string, name: 'current' | 'committed', version: string): void {
  if (!versionPattern.test(version)) throw new Error(`not a release version: ${version}`);
  const tmp = path.join(releasesDir, `.${name}.${process.pid}.tmp`);
  rmSync(tmp, { force: true });
  symlinkSync(version, tmp);
  renameSync(tmp, path.join(releasesDir, name));
  fsyncDirSync(releasesDir);
}



/**
 * The marker, or undefined when there is none. A marker that is not what the agent writes (the
 * state folder is the agent's alone, but a crash or a hand may leave anything) is reported as
 * `invalid` with what is wrong, so the caller removes and audits it instead of acting on it.
 */
export function readPending(stateDir: string): PendingUpdate | { invalid: string } | undefined {
  const file = path.join(updateDirOf(stateDir), 'pending.json');
  if (!existsSync(file)) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    return { invalid: `pending.json is not JSON: ${(err as Error).message}` };
  }
  if (typeof v !== 'object' || v === null) return { invalid: 'pending.json is not an object' };
  if (typeof v.version !== 'string' || !versionPattern.test(v.version)) return { invalid: 'pending.json has no valid version' };
  if (typeof v.previous !== 'string' || !versionPattern.test(v.previous)) return { invalid: 'pending.json has no valid previous version' };
  if (typeof v.attempts !== 'number' || !Number.isSafeInteger(v.attempts) || v.attempts < 0) return { invalid: 'pending.json has no valid attempts count' };
  return v as unknown as PendingUpdate;
}

export function writePending(stateDir: string, pending: PendingUpdate): void {
  writeJsonAtomically(path.join(updateDirOf(stateDir), 'pending.json'), pending, 0);
}

export function clearPending(stateDir: string): void {
  rmSync(path.join(updateDirOf(stateDir), 'pending.json'), { force: true });
}

export function writeOutcome(stateDir: string, outcome: UpdateOutcome): void {
  writeJsonAtomically(path.join(updateDirOf(stateDir), 'outcome.json'), outcome, 0);
}

/** The outcome of a rollback, removed as it is read (the caller audits it). */
export function takeOutcome(stateDir: string): UpdateOutcome | { invalid: string } | undefined {
  const file = path.join(updateDirOf(stateDir), 'outcome.json');
  if (!existsSync(file)) return undefined;
  let result: UpdateOutcome | { invalid: string };
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as UpdateOutcome;
    result = typeof v?.version === 'string' && typeof v.reason === 'string' ? v : { invalid: 'outcome.json is not an update outcome' };
  } catch (err) {
    result = { invalid: `outcome.json is not JSON: ${(err as Error).message}` };
  }
  rmSync(file, { force: true });
  return result;
}

/**
 * The boot check (`bwc-agent update boot-check`, the unit's ExecStartPre, run from the COMMITTED
 * release so a broken new release cannot skip it): counts the starts of a release on trial, and
 * once more than `maxFailedStarts` have begun without it committing, points `current` back at the
 * committed release and leaves the reason in outcome.json. Returns what it did, for the log.
 */
export function bootCheck(stateDir: string, releasesDir: string, maxFailedStarts: number): string {
  const pending = readPending(stateDir);
  if (pending === undefined) return 'no update on trial';
  const committed = linkedVersion(releasesDir, 'committed');
  if ('invalid' in pending) {
    clearPending(stateDir);
    if (committed) switchLink(releasesDir, 'current', committed);
    writeOutcome(stateDir, { version: 'unknown', previous: committed ?? 'unknown', reason: `a damaged update marker was removed (${pending.invalid})`, at: new Date().toISOString() });
    return `removed a damaged update marker: ${pending.invalid}`;
  }
  const current = linkedVersion(releasesDir, 'current');
  if (current !== pending.version) return `release ${pending.version} is on trial but current is ${current ?? 'missing'}: nothing to count`;
  const attempts = pending.attempts + 1;
  if (attempts > maxFailedStarts) {
    const back = committed ?? pending.previous;
    switchLink(releasesDir, 'current', back);
    clearPending(stateDir);
    writeOutcome(stateDir, {
      version: pending.version,
      previous: back,
      reason: `release ${pending.version} was started ${pending.attempts} time(s) without coming up healthy (update.maxFailedStarts ${maxFailedStarts})`,
      at: new Date().toISOString(),
    });
    return `release ${pending.version} did not come up after ${pending.attempts} start(s): switched back to ${back}`;
  }
  writePending(stateDir, { ...pending, attempts });
  return `release ${pending.version} on trial: start ${attempts} of ${maxFailedStarts}`;
}
