// scripts/tap-summary.mjs writes the closing line CI reads, and names every failure before it: CI
// keeps only the tail of the run's output, and a run once ended "1 failed" with the failing test
// named only far up in tap's stream, out of reach.
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';

const run = promisify(execFile);
const script = new URL('../scripts/tap-summary.mjs', import.meta.url).pathname;

async function summarise(tap: string): Promise<string[]> {
  const file = join(mkdtempSync(join(tmpdir(), 'tap-summary-')), 'run.tap');
  writeFileSync(file, tap);
  const { stdout } = await run(process.execPath, [script, file]);
  return stdout.trimEnd().split('\n');
}

const FAILING = `TAP version 14
# Subtest: test/a.test.ts
    # Subtest: group one
        ok 1 - fine
        not ok 2 - values match
          ---
          found: 1
          wanted: 2
          ...
        1..2
    not ok 1 - group one
    1..1
not ok 1 - test/a.test.ts # time=1ms
# Subtest: test/b.test.ts
    # Subtest: waits for the broker
    not ok 1 - waits for the broker
      ---
      message: timeout!
      ...
    ok 2 - after
    1..2
not ok 2 - test/b.test.ts
ok 3 - test/c.test.ts # SKIP not here
1..3
`;

t.test('each failure is named by its path with its diagnostic, then the paths alone just above the closing line', async (t) => {
  const out = await summarise(FAILING);
  t.equal(out.at(-1), '2 passed, 2 failed, 1 skipped', 'the closing line counts leaves; a subtest failing without a failing leaf is one');
  t.same(out.filter((l) => l.startsWith('# not ok: ')), [
    '# not ok: test/a.test.ts > group one > values match',
    '# not ok: test/b.test.ts > waits for the broker',
  ]);
  t.ok(out.includes('#     wanted: 2'), 'the assertion\'s diagnostic follows its path');
  t.ok(out.includes('#     message: timeout!'), 'a timed-out subtest\'s message follows its path');
});

t.test('a passing run prints the closing line only', async (t) => {
  const out = await summarise('TAP version 14\n# Subtest: test/a.test.ts\n    ok 1 - fine\n    1..1\nok 1 - test/a.test.ts\n1..1\n');
  t.same(out, ['1 passed, 0 failed']);
});
