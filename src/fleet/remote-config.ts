// The remote configuration a signed `config.apply` leaves on the device, in
// <stateDir>/remote-config/ (the config file in /etc/bwc-agent is read-only to the agent under
// systemd's ProtectSystem=strict, and belongs to whoever set the device up):
//   active.json     the remote document in force, with its version (1, 2, ...; 0 = none)
//   last-good.json  the document that last ran connected and healthy (absent: the local file alone)
//   trial.json      a change that restarted the agent and has not yet proven itself:
//                   {version, deadlineMs, attempts}; the agent commits it once online and healthy,
//                   or reverts to last-good when the deadline passes or the start failed 3 times
//   reverted.json   a revert made before the agent could audit it (at start), audited next start
// Every file is written whole: tmp, fsync, rename, fsync of the folder, so a power cut leaves the
// old file or the new one, never half of one.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { canonicalJson } from '../audit/canonical-json.ts';
import { localOnlyKeys } from '../config/docs.ts';
import { leafKeys } from '../config/load.ts';
import { fsyncDirSync, writeJsonAtomically } from '../store/atomic-file.ts';

export interface RemoteDocument {
  version: number;
  document: Record<string, unknown>;
  appliedAt: string;
  /** The config.apply that made it: jti and operator (absent for a revert). */
  by?: { jti: string; operator: string; kid: string };
}

export interface Trial {
  version: number;
  /** Wall-clock time (ms) by which the agent must be online and healthy on it. */
  deadlineMs: number;
  /** Starts made on it so far. */
  attempts: number;
  fromVersion: number;
}

export interface RevertNote {
  fromVersion: number;
  toVersion: number;
  reason: string;
  at: string;
}

/** A trial start is given up after this many starts (a config that crashes the agent at start). */
export const maxTrialAttempts = 3;

/** The version, digest and pending flag `state` shows (the digest is of the effective settings). */
export interface RemoteConfigState {
  version: number;
  digest: string;
  pending: boolean;
}

/** base64url SHA-256 of the canonical JSON of the effective settings. */
export function configDigest(config: object): string {
  return createHash('sha256').update(canonicalJson(JSON.parse(JSON.stringify(config)))).digest('base64url');
}

/**
 * RFC 7396 JSON merge patch: null removes a member, an object merges, anything else replaces.
 * Written here (a dozen lines) rather than taken from a package: the RFC's whole algorithm is
 * the recursion below, and the result must not share objects with the signed claim (frozen).
 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = typeof target === 'object' && target !== null && !Array.isArray(target) ? structuredClone(target as Record<string, unknown>) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/**
 * The local-only keys a remote document sets: each leaf is checked against every local-only key
 * (the leaf itself, or below one), minus those this device's file unlocks.
 */
export function protectedKeysIn(document: Record<string, unknown>, unlocked: readonly string[]): string[] {
  const locked = localOnlyKeys().filter((k) => !unlocked.some((u) => k === u || k.startsWith(`${u}.`)));
  const hits = new Set<string>();
  for (const leaf of leafKeys(document)) {
    for (const key of locked) {
      if (leaf === key || leaf.startsWith(`${key}.`) || key.startsWith(`${leaf}.`)) hits.add(key);
    }
  }
  return [...hits];
}

/**
 * Files a remote document names (every member whose name ends in `File`, in arrays too, e.g.
 * stream.ice.servers[0].credentialFile) must lie in the local config file's folder
 * (/etc/bwc-agent under systemd): otherwise a fleet key could point a TURN credential at the
 * device's private key and have the agent use it with a server of its choosing. Nothing in the
 * state folder either, wherever the config file is (keys, evidence, the database). Returns the keys
 * that break the rule; all of them when there is no local config file.
 */
export function remoteFileProblems(document: unknown, configFile: string | undefined, stateDir: string, prefix = ''): string[] {
  const allowedDir = configFile === undefined ? undefined : path.dirname(path.resolve(configFile));
  const state = path.resolve(stateDir);
  const problems: string[] = [];
  const walk = (value: unknown, at: string) => {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, `${at}[${i}]`));
    else if (typeof value === 'object' && value !== null) {
      for (const [k, v] of Object.entries(value)) {
        const key = at ? `${at}.${k}` : k;
        if (k.endsWith('File') && typeof v === 'string') {
          const resolved = path.resolve(allowedDir ?? '/', v);
          const inState = resolved === state || resolved.startsWith(`${state}${path.sep}`);
          if (allowedDir === undefined || !resolved.startsWith(`${allowedDir}${path.sep}`) || inState) problems.push(key);
        } else walk(v, key);
      }
    }
  };
  walk(document, prefix);
  return problems;
}

/** mqtts: and wss: are TLS; a remote change may not go from TLS to plain text. */
export function dropsTls(fromUrl: string, toUrl: string): boolean {
  const tls = (u: string) => /^(mqtts|wss):/.test(u);
  return tls(fromUrl) && !tls(toUrl);
}

export class RemoteConfigStore {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'remote-config');
  }

  active(): RemoteDocument | undefined {
    return this.#read<RemoteDocument>('active.json');
  }

  lastGood(): RemoteDocument | undefined {
    return this.#read<RemoteDocument>('last-good.json');
  }

  trial(): Trial | undefined {
    return this.#read<Trial>('trial.json');
  }

  /** A new document in force; `trial` when it must prove itself after a restart. */
  install(doc: RemoteDocument, options: { keepAsLastGood: RemoteDocument | undefined | null; trial?: Trial }): void {
    // The one running now is known good (it received and verified this command online): keep it.
    if (options.keepAsLastGood === null) this.#remove('last-good.json');
    else if (options.keepAsLastGood !== undefined) this.#write('last-good.json', options.keepAsLastGood);
    if (options.trial) this.#write('trial.json', options.trial);
    this.#write('active.json', doc);
  }

  /** The trial proved itself: it becomes last-good, no trial remains. */
  commit(): void {
    const active = this.active();
    if (active) this.#write('last-good.json', active);
    this.#remove('trial.json');
  }

  /** Back to last-good (or to the local file alone when there is none); returns the version now in force. */
  revert(): number {
    const good = this.lastGood();
    if (good) this.#write('active.json', good);
    else this.#remove('active.json');
    this.#remove('trial.json');
    return good?.version ?? 0;
  }

  /** Another start on the trial; returns it with the count, or undefined when none is pending. */
  countTrialStart(): Trial | undefined {
    const trial = this.trial();
    if (!trial) return undefined;
    const next = { ...trial, attempts: trial.attempts + 1 };
    this.#write('trial.json', next);
    return next;
  }

  writeRevertNote(note: RevertNote): void {
    this.#write('reverted.json', note);
  }

  /** The note of a revert made at start, removed as it is read (the caller audits it). */
  takeRevertNote(): RevertNote | undefined {
    const note = this.#read<RevertNote>('reverted.json');
    if (note) this.#remove('reverted.json');
    return note;
  }

  #read<T>(name: string): T | undefined {
    const file = path.join(this.dir, name);
    if (!existsSync(file)) return undefined;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as T;
    } catch (err) {
      throw new Error(`${file}: unreadable (${(err as Error).message}); remove it to run on the local config file alone`);
    }
  }

  #write(name: string, value: unknown): void {
    writeJsonAtomically(path.join(this.dir, name), value);
  }

  #remove(name: string): void {
    rmSync(path.join(this.dir, name), { force: true });
    if (existsSync(this.dir)) fsyncDirSync(this.dir);
  }
}

