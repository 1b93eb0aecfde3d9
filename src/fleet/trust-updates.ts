// Trust-store rotation by a signed `trust.update` (docs/protocol.md, "Fleet management"). The trust
// store file named by commands.trustStore stays as installed (root-owned, read-only to the agent);
// the changes fleet ops make are kept beside the state, in <stateDir>/trust/updates.json
// ({added: JWKs, revoked: kids, expire: {kid: exp}}), written atomically, and layered over the
// file at every start. The effective store is swapped in place (TrustStore.replaceWith), so a
// revoked key's very next token is refused.
//
// Who may change it: only a key whose bwc_actions hold `trust.update` (the verifier's
// action_not_permitted), and keys holding `trust.update` (fleet-admin keys) are themselves changed
// only on the device, in the trust store file: a trust.update may not add one, revoke one or
// expire one (trust_admin_local_only). So a stolen operator key cannot grant itself anything, and a
// stolen fleet-admin key cannot mint a second admin key or lock the real one out; the device's
// file (set up by hand or by a signed software update) stays the root of trust. A quorum of admin
// keys was the other choice the issue allowed; it needs a second signer online for every rotation,
// which a force's fleet desk rarely has at night, and it does not remove the need for a local root.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { AgentConfig } from '../config/schema.ts';
import { TrustStore, TrustStoreError } from '../command/trust-store.ts';
import { errorMessage } from '../errors.ts';
import { writeJsonAtomically } from '../store/atomic-file.ts';

export interface TrustUpdates {
  added: Record<string, unknown>[];
  revoked: string[];
  expire: Record<string, number>;
}

export interface TrustChange {
  add?: unknown[];
  revoke?: string[];
  expire?: { kid: string; exp: number }[];
}

export const adminAction = 'trust.update';

export function trustUpdatesFile(stateDir: string): string {
  return path.join(stateDir, 'trust', 'updates.json');
}

function readUpdates(stateDir: string): TrustUpdates {
  const file = trustUpdatesFile(stateDir);
  if (!existsSync(file)) return { added: [], revoked: [], expire: {} };
  try {
    const u = JSON.parse(readFileSync(file, 'utf8')) as Partial<TrustUpdates>;
    return { added: u.added ?? [], revoked: u.revoked ?? [], expire: u.expire ?? {} };
  } catch (err) {
    throw new TrustStoreError(`${file}: unreadable (${errorMessage(err)})`);
  }
}

function baseJwks(config: AgentConfig): Record<string, unknown>[] {
  const file = config.commands.trustStore;
  if (!file) return [];
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    // TrustStore.load words the problem as at start-up before this change.
    TrustStore.load(file, []);
    throw new TrustStoreError(`trust store ${file}: ${errorMessage(err)}`);
  }
  const keys = (json as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) return TrustStore.load(file, []).jwks().keys;
  return keys as Record<string, unknown>[];
}

function build(config: AgentConfig, updates: TrustUpdates): TrustStore {
  const keys = [
    ...baseJwks(config).map((k) => (typeof k.kid === 'string' && updates.expire[k.kid] !== undefined ? { ...k, exp: updates.expire[k.kid] } : k)),
    ...updates.added.map((k) => (typeof k.kid === 'string' && updates.expire[k.kid] !== undefined ? { ...k, exp: updates.expire[k.kid] } : k)),
  ];
  const revoked = [...new Set([...config.commands.revokedKeys, ...updates.revoked])];
  const source = config.commands.trustStore ? `${config.commands.trustStore} + ${trustUpdatesFile(config.stateDir)}` : trustUpdatesFile(config.stateDir);
  return TrustStore.fromJwks({ keys }, revoked, source);
}

/** The trust store the agent starts with: the file, then the updates made remotely. */
export function loadTrustStore(config: AgentConfig): TrustStore {
  return build(config, readUpdates(config.stateDir));
}

export type TrustUpdateResult =
  | { ok: true; before: ReturnType<TrustStore['describe']>; after: ReturnType<TrustStore['describe']> }
  | { ok: false; code: 'trust_admin_local_only' | 'trust_update_invalid'; message: string };

/**
 * Checks a change whole, persists it, then swaps it into `store`. Nothing is changed unless all
 * of it is acceptable.
 */
export function applyTrustChange(config: AgentConfig, store: TrustStore, change: TrustChange): TrustUpdateResult {
  const refuse = (code: 'trust_admin_local_only' | 'trust_update_invalid', message: string) => ({ ok: false as const, code, message });
  const holdsAdmin = (kid: string) => store.key(kid)?.actions.has(adminAction) ?? false;
  const updates = readUpdates(config.stateDir);
  const next: TrustUpdates = { added: [...updates.added], revoked: [...updates.revoked], expire: { ...updates.expire } };
  for (const [i, jwk] of (change.add ?? []).entries()) {
    if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return refuse('trust_update_invalid', `trust.add[${i}]: not a JWK object`);
    const k = jwk as Record<string, unknown>;
    const kid = typeof k.kid === 'string' ? k.kid : undefined;
    if ('d' in k) return refuse('trust_update_invalid', `trust.add[${i}]${kid ? ` (kid "${kid}")` : ''}: contains private key material ("d"): a trust store holds public keys only`);
    if (Array.isArray(k.bwc_actions) && k.bwc_actions.includes(adminAction)) {
      return refuse('trust_admin_local_only', `trust.add[${i}]${kid ? ` (kid "${kid}")` : ''}: a key holding ${adminAction} is added only on the device (its trust store file), never remotely`);
    }
    if (kid !== undefined && (store.key(kid) !== undefined || store.revokedKids().includes(kid))) {
      return refuse('trust_update_invalid', `trust.add[${i}]: kid "${kid}" is already known to this camera; a new key needs a new kid (revoke the old one)`);
    }
    next.added.push(k);
  }
  for (const kid of change.revoke ?? []) {
    if (holdsAdmin(kid)) return refuse('trust_admin_local_only', `trust.revoke: "${kid}" holds ${adminAction}; fleet-admin keys are revoked only on the device`);
    if (!next.revoked.includes(kid)) next.revoked.push(kid);
  }
  for (const { kid, exp } of change.expire ?? []) {
    if (holdsAdmin(kid)) return refuse('trust_admin_local_only', `trust.expire: "${kid}" holds ${adminAction}; fleet-admin keys are changed only on the device`);
    const known = store.key(kid) !== undefined || next.added.some((k) => k.kid === kid);
    if (!known) return refuse('trust_update_invalid', `trust.expire: no key "${kid}" on this camera`);
    if (!(exp > 0)) return refuse('trust_update_invalid', `trust.expire: "${kid}": exp must be unix seconds`);
    next.expire[kid] = exp;
  }
  let candidate: TrustStore;
  try {
    candidate = build(config, next);
  } catch (err) {
    return refuse('trust_update_invalid', errorMessage(err));
  }
  const before = store.describe();
  writeJsonAtomically(trustUpdatesFile(config.stateDir), next);
  store.replaceWith(candidate);
  return { ok: true, before, after: store.describe() };
}
