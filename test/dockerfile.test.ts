import t from 'tap';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// dockerfile-utils is CommonJS; loaded through require so the type check does not depend on it.
interface Diagnostic {
  message: string;
  severity?: number; // LSP DiagnosticSeverity: 1 error, 2 warning, 3 information, 4 hint
  range: { start: { line: number } };
}
const { validate } = createRequire(import.meta.url)('dockerfile-utils') as {
  validate(content: string): Diagnostic[];
};

const dockerfilePath = fileURLToPath(new URL('../Dockerfile.arm64', import.meta.url));
const runtimeListPath = fileURLToPath(new URL('../deps/debian-runtime.txt', import.meta.url));
const dockerfile = readFileSync(dockerfilePath, 'utf8');

/** Instructions of a Dockerfile: continuation lines joined, comments dropped. */
function instructions(text: string): { keyword: string; args: string }[] {
  const out: { keyword: string; args: string }[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    // Comments, also those between continuation lines, are not part of any instruction.
    if (line.startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = (pending + line).trim();
    pending = '';
    if (!whole) continue;
    const m = /^(\S+)\s*(.*)$/.exec(whole);
    if (m) out.push({ keyword: (m[1] ?? '').toUpperCase(), args: m[2] ?? '' });
  }
  return out;
}

const BUILD_TOOLS = /(^|[\s'"])(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|cpp|make|cmake|clang|pkg-config|node-gyp|[\w.+-]+-dev)(?=$|[\s'"])/;

const format = (ds: Diagnostic[]): string =>
  ds.map((d) => `line ${d.range.start.line + 1}: ${d.severity === 1 ? 'error' : 'warning'}: ${d.message}`).join('\n');

t.test('dockerfile-utils reports no errors and no warnings', async (t) => {
  const diagnostics = validate(dockerfile);
  t.same(format(diagnostics), '', 'no diagnostics');
});

t.test('the linter does flag a bad Dockerfile', async (t) => {
  // Guards against a validate() that silently returns nothing (a broken install, an API change).
  const ds = validate('from node:24\nHEALTHCHECK --intervl=3s CMD true\n');
  t.ok(ds.some((d) => d.severity === 1), 'an error for the unknown flag', { diagnostics: format(ds) });
  t.ok(ds.some((d) => d.severity === 2), 'a warning for the lowercase instruction', { diagnostics: format(ds) });
});

t.test('final stage', async (t) => {
  const all = instructions(dockerfile);
  const lastFrom = all.map((i) => i.keyword).lastIndexOf('FROM');
  t.ok(lastFrom > 0, 'a multi-stage build');
  t.ok(all.some((i) => i.keyword === 'ARG' && i.args === 'NODE_VERSION=24.21.0'), 'Node 24.21.0');
  t.match(all.find((i) => i.keyword === 'FROM')?.args, /node:\$\{NODE_VERSION\}-bookworm AS build$/, 'build on the full image');
  const final = all.slice(lastFrom);
  t.match(final[0]?.args, /-bookworm-slim\b/, 'runtime on the slim image');

  const users = final.filter((i) => i.keyword === 'USER').map((i) => i.args.trim());
  t.ok(users.length > 0, 'sets USER');
  const user = users.at(-1) ?? '';
  t.notOk(/^(root|0)(:|$)/.test(user), `runs as non-root (${user})`);

  for (const run of final.filter((i) => i.keyword === 'RUN')) {
    t.notOk(BUILD_TOOLS.test(run.args), `no build tools installed: ${run.args.slice(0, 80)}...`);
    t.notOk(/debian-build\.txt/.test(run.args), 'does not read the build package list');
  }
  // The runtime stage installs whatever deps/debian-runtime.txt lists.
  const listed = readFileSync(runtimeListPath, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean);
  t.ok(listed.length > 0, 'runtime package list is not empty');
  for (const p of listed) t.notOk(BUILD_TOOLS.test(p), `runtime list holds no build tool: ${p}`);
  t.ok(final.some((i) => i.keyword === 'COPY' && /debian-runtime\.txt/.test(i.args)), 'runtime stage reads deps/debian-runtime.txt');

  const entry = final.find((i) => i.keyword === 'ENTRYPOINT')?.args ?? '';
  t.match(entry, /bin\/bwc-agent", "run"/, 'ENTRYPOINT runs bin/bwc-agent run');
  const health = final.find((i) => i.keyword === 'HEALTHCHECK')?.args ?? '';
  t.match(health, /bin\/bwc-agent", "ctl", "status"/, 'HEALTHCHECK uses ctl status');
  t.match(final.find((i) => i.keyword === 'VOLUME')?.args ?? '', /\/var\/lib\/bwc-agent/);
  t.ok(final.some((i) => i.keyword === 'ENV' && /BWC_STATE_DIR=\/var\/lib\/bwc-agent/.test(i.args)), 'BWC_STATE_DIR set');
});
