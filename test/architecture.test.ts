// Import rules between the agent's modules (docs/architecture.md). Each src/ file's imports are read
// with TypeScript's own pre-parser (ts.preProcessFile: static, type-only, re-exports and dynamic
// import()), not with a regular expression, so an import split over lines or in a comment is read
// as TypeScript reads it.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import ts from 'typescript';

const root = path.resolve(import.meta.dirname, '..');
const src = path.join(root, 'src');

/** Each .ts file under src/ (relative to the repository, with /) and the src/ files it imports. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const file = path.join(entry.parentPath, entry.name);
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const imports = importedFiles
      .map((i) => i.fileName)
      .filter((name) => name.startsWith('.'))
      .map((name) => path.relative(root, path.resolve(path.dirname(file), name)).split(path.sep).join('/'));
    graph.set(path.relative(root, file).split(path.sep).join('/'), imports);
  }
  return graph;
}

const graph = importGraph();

/** "a imports b" for every import from a file under `from` of a file `to` matches. */
function importsOf(from: string, to: (target: string) => boolean): string[] {
  return [...graph].flatMap(([file, imports]) => (file.startsWith(from) ? imports.filter(to).map((target) => `${file} imports ${target}`) : []));
}

t.test('the import graph was read', async (t) => {
  t.ok(graph.size > 50, `${graph.size} files under src/`);
  t.ok(graph.get('src/state/device-state.ts'), 'src/state/device-state.ts is among them');
  t.ok(graph.get('src/telemetry/gps-extension.ts')?.includes('src/state/device-state.ts'), 'a type-only import is seen');
  t.ok(graph.get('src/stream/stream-manager.ts')?.includes('src/stream/session.ts'), 'a dynamic import() is seen');
});

t.test('src/state/ owns the state document: it imports nothing from src/telemetry/', async (t) => {
  const found = importsOf('src/state/', (target) => target.startsWith('src/telemetry/'));
  t.same(found, [], found.join('; ') || 'no state -> telemetry import');
});

// The MQTT session is the link's: other modules should get what they need (publish, subscribe)
// through src/link/ (the request channel for `cmd`, the ICE topics for stream/). The list below is
// for a known exception while one is being moved: reported as TODO, and struck off once gone; it is
// empty (issue 15), so any import of the session above src/link/ fails.
const knownMqttSessionImports: string[] = [];

t.test('no module outside src/link/ imports src/link/mqtt-session.ts', async (t) => {
  const found = importsOf('src/', (target) => target === 'src/link/mqtt-session.ts').filter((i) => !i.startsWith('src/link/'));
  const unknown = found.filter((i) => !knownMqttSessionImports.includes(i));
  const known = found.filter((i) => knownMqttSessionImports.includes(i));
  const gone = knownMqttSessionImports.filter((i) => !found.includes(i));
  t.same(unknown, [], unknown.length ? `new import(s) of the MQTT session outside src/link/: ${unknown.join('; ')}` : 'no new import of the MQTT session outside src/link/');
  t.same(gone, [], gone.length ? `no longer true, strike off knownMqttSessionImports in test/architecture.test.ts: ${gone.join('; ')}` : 'every known import is still there');
  for (const i of known) t.fail(i, { todo: 'issue 15: the link should hand command/ and stream/ what they need of the MQTT session' });
});
