// Reads a TAP 14 stream (tap --reporter=tap) and prints the plain closing line CI reads:
// "N passed, N failed, N skipped", counting leaf test points (assertions), not subtest summaries.
// A subtest that failed without a failing assertion inside (a crash, a timeout) counts as one failure.
// Before that line it lists every failure by its path (file > subtest > assertion) with the first
// lines of its diagnostic, then the paths alone: CI keeps only the tail of the output, and a failure
// named only in the middle of tap's stream could not be found afterwards (one CI run ended "1 failed"
// and nothing else).
import { readFileSync } from 'node:fs';

const DIAGNOSTIC_LINES = 24;
const lines = readFileSync(process.argv[2] ?? 0, 'utf8').split('\n');
let passed = 0, failed = 0, skipped = 0;
const open = []; // {indent, name, failuresAtStart}
const failures = []; // {path, diagnostic}
let collecting = null; // the failure whose YAML diagnostic block follows, with its indent

function recordFailure(path, indent) {
  failed += 1;
  const failure = { path, diagnostic: [] };
  failures.push(failure);
  collecting = { failure, indent };
}

for (const raw of lines) {
  const indent = raw.length - raw.trimStart().length;
  const line = raw.trim();
  if (collecting) {
    if (indent > collecting.indent || line === '') {
      if (line !== '---' && line !== '...' && collecting.failure.diagnostic.length < DIAGNOSTIC_LINES) {
        collecting.failure.diagnostic.push(raw.slice(collecting.indent));
      }
      if (line === '...') collecting = null;
      continue;
    }
    collecting = null;
  }
  const subtest = /^# Subtest: ?(.*)$/.exec(line);
  if (subtest) { open.push({ indent, name: subtest[1], failuresAtStart: failed }); continue; }
  const m = /^(not ok|ok)\b\s*\d*\s*-?\s*([^#]*)(#\s*(SKIP|TODO)\b)?/i.exec(line);
  if (!m) continue;
  const top = open.at(-1);
  const names = open.map((o) => o.name);
  if (top && top.indent === indent) {
    open.pop();
    if (m[1] === 'not ok' && failed === top.failuresAtStart && !m[4]) recordFailure(names.join(' > '), indent);
    continue;
  }
  if (m[4]) skipped += 1;
  else if (m[1] === 'ok') passed += 1;
  else recordFailure([...names, m[2].trim()].join(' > '), indent);
}

if (failures.length > 0) {
  // Details first, then the bare list of paths right above the closing line: however short the
  // tail CI keeps, it names what failed.
  console.log('# failures, with their diagnostics:');
  for (const { path, diagnostic } of failures) {
    console.log(`# ${path}`);
    for (const d of diagnostic) console.log(`#   ${d}`);
  }
  console.log(`# ${failures.length} failed:`);
  for (const { path } of failures) console.log(`# not ok: ${path}`);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
