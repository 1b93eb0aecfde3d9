// Reads the config file (YAML; JSON is valid YAML), applies environment overrides and validates
// the result against the schema. Every problem is reported with the key, the bad value and what
// was expected, so a field engineer can fix the file without reading the code.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { configSchema, envOverrides, type AgentConfig } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface LoadConfigOptions {
  /** Path of the config file; undefined runs on the embedded defaults. */
  file?: string | undefined;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Where the default device id comes from; injectable for tests. */
  machineIdFile?: string;
  /**
   * The remote document of a signed config.apply (src/fleet/remote-config.ts): layered over the
   * file, under the environment overrides, validated by the same schema.
   */
  remote?: Record<string, unknown> | undefined;
}

type Origin = { kind: 'file'; file: string } | { kind: 'env'; variable: string } | { kind: 'remote' };

export function loadConfig(options: LoadConfigOptions): AgentConfig {
  const raw = options.file === undefined ? {} : readConfigFile(options.file);
  const origins = new Map<string, Origin>();
  if (options.remote !== undefined) {
    overlay(raw, options.remote);
    for (const key of leafKeys(options.remote)) origins.set(key, { kind: 'remote' });
  }
  for (const [variable, key] of Object.entries(envOverrides)) {
    const value = options.env[variable];
    if (value === undefined || value === '') continue;
    setPath(raw, key.split('.'), value);
    origins.set(key, { kind: 'env', variable });
  }
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((issue) => describeIssue(issue, origins, options.file)));
  }
  const parsed = result.data;
  return {
    ...parsed,
    deviceId: parsed.deviceId ?? defaultDeviceId(options.machineIdFile ?? '/etc/machine-id'),
    stateDir: path.resolve(options.cwd, parsed.stateDir ?? options.env.STATE_DIRECTORY?.split(':')[0] ?? 'var'),
  };
}

/** The state folder the agent would use, for `ctl` and the offline tools (no full config needed). */
export function resolveStateDir(explicit: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string {
  return path.resolve(cwd, explicit ?? env.BWC_STATE_DIR ?? env.STATE_DIRECTORY?.split(':')[0] ?? 'var');
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError([`${file}: cannot read the config file (${code ?? String(err)})`]);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${file}: not valid YAML: ${e.message.split('\n')[0]}`));
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError([`${file}: expected a mapping of settings at the top level, got ${describeValue(value)}`]);
  }
  return value as Record<string, unknown>;
}

/** Deep merge of a remote document into the file's settings: objects merge, anything else replaces. */
function overlay(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const current = target[key];
    if (isMapping(value) && isMapping(current)) overlay(current, value);
    else target[key] = isMapping(value) ? structuredClone(value) : value;
  }
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Dotted paths of the leaves of a document (an array is a leaf), e.g. `mqtt.tls.caFile`. */
export function leafKeys(doc: Record<string, unknown>, prefix = ''): string[] {
  return Object.entries(doc).flatMap(([k, v]) => (isMapping(v) && Object.keys(v).length > 0 ? leafKeys(v, `${prefix}${k}.`) : [`${prefix}${k}`]));
}

function setPath(target: Record<string, unknown>, keys: string[], value: unknown): void {
  let node = target;
  for (const key of keys.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
}

function describeIssue(issue: z.core.$ZodIssue, origins: Map<string, Origin>, file: string | undefined): string {
  const key = issue.path.map(String).join('.') || '(top level)';
  const origin = origins.get(key);
  const where = origin?.kind === 'env' ? `${origin.variable} (${key})` : origin?.kind === 'remote' ? `remote config: ${key}` : file ? `${file}: ${key}` : key;
  if (issue.code === 'unrecognized_keys') {
    const prefix = issue.path.length ? `${issue.path.join('.')}.` : '';
    const remote = issue.keys.some((k) => origins.get(`${prefix}${k}`)?.kind === 'remote');
    return `${remote ? 'remote config: ' : file ? `${file}: ` : ''}unknown setting ${issue.keys.map((k) => `"${prefix}${k}"`).join(', ')} (see docs/configuration.md for the valid keys)`;
  }
  return `${where}: expected ${expectation(issue)}, got ${describeValue(issue.input)}`;
}

function expectation(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.expected === 'int' ? 'a whole number' : `a ${issue.expected}`;
    case 'too_small':
      return issue.origin === 'string' ? `at least ${String(issue.minimum)} characters` : `a number >= ${String(issue.minimum)}`;
    case 'too_big':
      return issue.origin === 'string' ? `at most ${String(issue.maximum)} characters` : `a number <= ${String(issue.maximum)}`;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'invalid_format':
      return issue.message;
    default:
      return issue.message;
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function defaultDeviceId(machineIdFile: string): string {
  try {
    const id = readFileSync(machineIdFile, 'utf8').trim();
    if (/^[0-9a-f]{12,}$/i.test(id)) return `bwc-${id.slice(0, 12).toLowerCase()}`;
  } catch {
    // No machine id (a container, say): the host name is the next most stable thing.
  }
  const host = hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 60);
  return `bwc-${host || 'unknown'}`;
}
