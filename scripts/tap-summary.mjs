// Reads a TAP 14 stream (tap --reporter=tap) and prints the plain closing line CI reads:
// "N passed, N failed, N skipped", counting leaf test points (assertions), not subtest summaries.
// A subtest that failed without a failing assertion inside (a crash, a timeout) counts as one failure.
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2] ?? 0, 'utf8').split('\n');
let passed = 0, failed = 0, skipped = 0;
const open = []; // {indent, failuresAtStart}
for (const raw of lines) {
  const indent = raw.length - raw.trimStart().length;
  const line = raw.trim();
  if (/^# Subtest\b/.test(line)) { open.push({ indent, failuresAtStart: failed }); continue; }
  const m = /^(not ok|ok)\b[^#]*(#\s*(SKIP|TODO)\b)?/i.exec(line);
  if (!m) continue;
  const top = open.at(-1);
  if (top && top.indent === indent) {
    open.pop();
    if (m[1] === 'not ok' && failed === top.failuresAtStart && !m[3]) failed += 1;
    continue;
  }
  if (m[3]) skipped += 1;
  else if (m[1] === 'ok') passed += 1;
  else failed += 1;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
