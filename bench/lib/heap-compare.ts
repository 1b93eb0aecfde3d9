// Compares V8 heap snapshots by constructor: count and self size per (node type, name), and the
// difference between two snapshots of one process taken minutes apart (what grows). Used on the
// snapshots bench/shift-memory.ts --heap-snapshots writes.
//
// Usage: node bench/lib/heap-compare.ts BEFORE.heapsnapshot [AFTER.heapsnapshot] [--top 25]
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: (string[] | string)[] } };
  nodes: number[];
  strings: string[];
}

export interface Group {
  count: number;
  selfBytes: number;
}

/** (type:name) -> count and self size. Strings and code are grouped by type alone. */
export function groupByConstructor(file: string): Map<string, Group> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const fields = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0] as string[];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, Group>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!;
    const name = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' ? snap.strings[snap.nodes[i + nameAt]!]! : '';
    const key = `${type}:${name.slice(0, 60)}`;
    const g = groups.get(key) ?? { count: 0, selfBytes: 0 };
    g.count++;
    g.selfBytes += snap.nodes[i + sizeAt]!;
    groups.set(key, g);
  }
  return groups;
}

function main(argv: string[]): void {
  const files = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--top');
  const topAt = argv.indexOf('--top');
  const top = topAt >= 0 ? Number(argv[topAt + 1]) : 25;
  const before = groupByConstructor(files[0]!);
  const total = (m: Map<string, Group>) => [...m.values()].reduce((a, g) => a + g.selfBytes, 0);
  if (files.length === 1) {
    process.stdout.write(`total ${(total(before) / 2 ** 20).toFixed(1)} MiB\n`);
    for (const [k, g] of [...before].sort((a, b) => b[1].selfBytes - a[1].selfBytes).slice(0, top)) {
      process.stdout.write(`${(g.selfBytes / 1024).toFixed(0).padStart(9)} KiB ${String(g.count).padStart(8)}  ${k}\n`);
    }
    return;
  }
  const after = groupByConstructor(files[1]!);
  process.stdout.write(`total ${(total(before) / 2 ** 20).toFixed(1)} -> ${(total(after) / 2 ** 20).toFixed(1)} MiB\n`);
  const keys = new Set([...before.keys(), ...after.keys()]);
  const diff = [...keys].map((k) => {
    const b = before.get(k) ?? { count: 0, selfBytes: 0 };
    const a = after.get(k) ?? { count: 0, selfBytes: 0 };
    return { k, bytes: a.selfBytes - b.selfBytes, count: a.count - b.count };
  });
  for (const d of diff.sort((x, y) => y.bytes - x.bytes).slice(0, top)) {
    process.stdout.write(`${(d.bytes / 1024).toFixed(0).padStart(9)} KiB ${String(d.count).padStart(8)}  ${d.k}\n`);
  }
}

if (process.argv[1] && new URL(import.meta.url).pathname === process.argv[1]) main(process.argv.slice(2));
