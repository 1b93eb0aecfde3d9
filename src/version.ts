// The agent's version, from its package.json (found upward from this module, so it works from
// src/ under the test runner and from dist/src/ when built).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

function findVersion(): string {
  let dir = import.meta.dirname;
  for (let i = 0; i < 5; i += 1) {
    const candidate = path.join(dir, 'package.json');
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'bwc-agent' && pkg.version) return pkg.version;
    }
    dir = path.dirname(dir);
  }
  return '0.0.0-unknown';
}

export const agentVersion = findVersion();
