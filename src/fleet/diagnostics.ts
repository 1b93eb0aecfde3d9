// `diag.collect`: a bounded bundle for fleet ops to diagnose a camera without hands on it. It holds
// the newest log lines, the state document, the running config's version and digest (and the
// remote document, which the schema keeps free of secrets: credentials live in files it only
// names), the health history, the versions; never a key (the device key stays in its file; the
// trust store is described by kids and actions, public parts only) and never evidence (no segment,
// no manifest, only the audit head). The bundle is checked against the device's private key
// before it leaves, as a last guard should a future field carry it by mistake.
//
// It is returned on the command's Response Topic, with its Correlation Data: first the reply
// {"ok": true, "bundle": {id, bytes, sha256, chunks, where: "reply-topic"}}, then `chunks`
// messages {"diag": {id, part, of, data}} (data: base64 of that slice of the bundle's JSON).
import { createHash, randomUUID } from 'node:crypto';
import os from 'node:os';
import { agentVersion } from '../version.ts';

/** The newest log lines, bounded by count and bytes. */
export class RecentLog {
  readonly #lines: string[] = [];
  #bytes = 0;
  readonly #maxLines: number;
  readonly #maxBytes: number;

  constructor(maxLines = 500, maxBytes = 256 * 1024) {
    this.#maxLines = maxLines;
    this.#maxBytes = maxBytes;
  }

  write(line: string): void {
    this.#lines.push(line.trimEnd());
    this.#bytes += line.length;
    while (this.#lines.length > this.#maxLines || this.#bytes > this.#maxBytes) this.#bytes -= this.#lines.shift()!.length;
  }

  lines(): string[] {
    return [...this.#lines];
  }
}

/** The newest health samples, each with the time it was taken. */
export class HealthHistory {
  readonly #samples: { at: string; health: unknown }[] = [];
  #last: unknown;
  readonly max: number;
  constructor(max = 60) {
    this.max = max;
  }

  /** Records `health` when it is a new sample (the state document carries the same object until the next). */
  observe(health: unknown): void {
    if (health === null || health === undefined || health === this.#last) return;
    this.#last = health;
    this.#samples.push({ at: new Date().toISOString(), health });
    if (this.#samples.length > this.max) this.#samples.shift();
  }

  samples(): { at: string; health: unknown }[] {
    return [...this.#samples];
  }
}

export interface BundleSources {
  state: () => object;
  config: () => { version: number; digest: string; pending: boolean; remoteDocument: Record<string, unknown> | null };
  trust: () => { digest: string; keys: { kid: string; actions: string[]; exp: number | null }[]; revoked: string[] };
  logs: RecentLog;
  health: HealthHistory;
  /** Strings that must never leave in a bundle (the device private key, as base64url and PEM body). */
  secrets: () => string[];
}

export const defaultBundleBytes = 256 * 1024;
export const maxBundleBytes = 1024 * 1024;
export const chunkBytes = 16 * 1024;

export interface Bundle {
  id: string;
  json: string;
  sha256: string;
  chunks: string[];
}

export function collectBundle(sources: BundleSources, maxBytes = defaultBundleBytes): Bundle {
  const limit = Math.min(maxBytes, maxBundleBytes);
  const id = randomUUID();
  const content = {
    id,
    createdAt: new Date().toISOString(),
    versions: { agent: agentVersion, node: process.version, platform: process.platform, arch: process.arch, kernel: os.release() },
    config: sources.config(),
    trust: sources.trust(),
    state: sources.state(),
    healthHistory: sources.health.samples(),
    logs: sources.logs.lines(),
    truncated: { logs: 0, healthHistory: 0 },
  };
  let json = JSON.stringify(content);
  // Bounded: the oldest log lines go first, then the oldest health samples.
  while (Buffer.byteLength(json) > limit && (content.logs.length > 0 || content.healthHistory.length > 0)) {
    const drop = (n: number) => Math.max(1, Math.ceil(n / 4));
    if (content.logs.length > 0) {
      const n = drop(content.logs.length);
      content.logs.splice(0, n);
      content.truncated.logs += n;
    } else {
      const n = drop(content.healthHistory.length);
      content.healthHistory.splice(0, n);
      content.truncated.healthHistory += n;
    }
    json = JSON.stringify(content);
  }
  for (const secret of sources.secrets()) {
    if (secret.length >= 16 && json.includes(secret)) throw new Error('diagnostics bundle would contain the device private key: not sent');
  }
  const bytes = Buffer.from(json);
  const chunks: string[] = [];
  for (let i = 0; i < bytes.length; i += chunkBytes) chunks.push(bytes.subarray(i, i + chunkBytes).toString('base64'));
  return { id, json, sha256: createHash('sha256').update(bytes).digest('base64url'), chunks };
}
