// Reads a V8 .cpuprofile (node --cpu-prof) and lists the functions with the most self time.
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Frame {
  frame: string;
  selfMs: number;
  selfPercent: number;
}

export function topFrames(file: string, count = 15, skipIdle = true): { totalMs: number; frames: Frame[] } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!);
    const dt = profile.timeDeltas[i] ?? 0;
    if (!node) continue;
    const name = node.callFrame.functionName || '(anonymous)';
    if (skipIdle && name === '(idle)') continue;
    const where = node.callFrame.url ? ` ${shorten(node.callFrame.url)}:${node.callFrame.lineNumber + 1}` : '';
    const key = `${name}${where}`;
    selfUs.set(key, (selfUs.get(key) ?? 0) + dt);
    totalUs += dt;
  }
  const frames = [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([frame, us]) => ({ frame, selfMs: Math.round(us / 100) / 10, selfPercent: Math.round((us / totalUs) * 1000) / 10 }));
  return { totalMs: Math.round(totalUs / 1000), frames };
}

function shorten(url: string): string {
  const p = url.replace(/^file:\/\//, '');
  const nm = p.lastIndexOf('node_modules/');
  if (nm >= 0) return p.slice(nm + 'node_modules/'.length);
  const dist = p.indexOf('/dist/');
  if (dist >= 0) return p.slice(dist + 1);
  return p.startsWith('node:') ? p : path.basename(p);
}
