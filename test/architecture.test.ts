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

// werift takes ~120 ms to load, so the agent loads it only when a live view needs it (StreamManager
// imports session.ts with import() after start-up, ice-restart.ts offer.ts on a restart answer).
// The rule: no file the agent loads on the way to `online` has a value import of 'werift'. The
// graph from src/cli/main.ts follows static imports (type-only ones erase at run time) and not
// import(), which runs when its code does; each import() of a file that reaches werift must be
// one listed here, with why it runs after start-up.
const deferredWeriftImports = [
  'src/stream/stream-manager.ts imports src/stream/session.ts', // on the first stream.start, or 200 ms (gop-cache; 1 s otherwise) after start in the background
  'src/stream/stream-manager.ts imports src/stream/warm-up.ts', // stream.warmUp: after session.ts's certificate is made, in the background
  'src/stream/ice-restart.ts imports src/stream/offer.ts', // on the first ICE restart answer (a session exists)
];

/** Each src/ file's run-time imports: static value imports (relative: repository paths; bare: the package), and import() targets. */
function runtimeImports(): Map<string, { staticImports: string[]; dynamicImports: string[] }> {
  const out = new Map<string, { staticImports: string[]; dynamicImports: string[] }>();
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const file = path.join(entry.parentPath, entry.name);
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const resolve = (name: string) => (name.startsWith('.') ? path.relative(root, path.resolve(path.dirname(file), name)).split(path.sep).join('/') : name);
    const staticImports: string[] = [];
    const dynamicImports: string[] = [];
    for (const s of source.statements) {
      if (ts.isImportDeclaration(s) && ts.isStringLiteral(s.moduleSpecifier)) {
        const clause = s.importClause;
        // Erased at run time: `import type`, and `import { type A, type B }` with nothing else (verbatimModuleSyntax keeps `import {}`).
        const typeOnly =
          clause?.isTypeOnly ||
          (clause && !clause.name && clause.namedBindings && ts.isNamedImports(clause.namedBindings) && clause.namedBindings.elements.length > 0 && clause.namedBindings.elements.every((e) => e.isTypeOnly));
        if (!typeOnly) staticImports.push(resolve(s.moduleSpecifier.text));
      } else if (ts.isExportDeclaration(s) && s.moduleSpecifier && ts.isStringLiteral(s.moduleSpecifier) && !s.isTypeOnly) {
        staticImports.push(resolve(s.moduleSpecifier.text));
      }
    }
    const visit = (node: ts.Node): void => {
      if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) {
        dynamicImports.push(resolve(node.arguments[0].text));
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
    out.set(path.relative(root, file).split(path.sep).join('/'), { staticImports, dynamicImports });
  }
  return out;
}

t.test('start-up loads no werift: no value import of it on the way to `online`', async (t) => {
  const imports = runtimeImports();
  /** Files loaded with `from` (itself included), by static imports, and the chain that reached each. */
  const closure = (from: string) => {
    const via = new Map<string, string[]>([[from, [from]]]);
    const queue = [from];
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      for (const next of imports.get(file)?.staticImports ?? []) {
        if (next.startsWith('src/') && !via.has(next)) {
          via.set(next, [...via.get(file)!, next]);
          queue.push(next);
        }
      }
    }
    return via;
  };
  const reachesWerift = (from: string) => [...closure(from)].filter(([file]) => imports.get(file)?.staticImports.includes('werift'));
  const startUp = closure('src/cli/main.ts');
  t.ok(startUp.has('src/stream/stream-manager.ts'), 'start-up loads src/stream/stream-manager.ts (the graph was followed)');
  t.ok(reachesWerift('src/stream/session.ts').length > 0, "session.ts's value import of werift is seen");
  const eager = reachesWerift('src/cli/main.ts').map(([file, chain]) => `${chain.join(' -> ')} imports werift`);
  t.same(eager, [], eager.join('; ') || 'no file loaded at start-up imports werift');
  const deferred = [...startUp.keys()].flatMap((file) => (imports.get(file)?.dynamicImports ?? []).filter((target) => reachesWerift(target).length > 0).map((target) => `${file} imports ${target}`));
  const unlisted = deferred.filter((i) => !deferredWeriftImports.includes(i));
  t.same(unlisted, [], unlisted.join('; ') || 'every import() that reaches werift from start-up code is a listed, deferred one');
});
