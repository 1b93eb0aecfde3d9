// Rewrites the README's live-view goals table from bench/results (bench/lib/readme-table.ts).
// `make bench` does this at its end; run it alone after rerunning one benchmark:
//   .runtime/node/bin/node bench/readme-table.ts
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, resultsDir } from './lib/common.ts';
import { writeReadmeTable } from './lib/readme-table.ts';

const rows = writeReadmeTable(path.join(repoRoot, 'README.md'), resultsDir, writeFileSync);
for (const r of rows) process.stdout.write(`${r.verdict.padEnd(12)} ${r.figure.slice(0, 90)}\n`);
process.stdout.write(`readme-table: ${rows.length} rows written to README.md\n`);
