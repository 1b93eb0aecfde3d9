// The security invariant as a type: a live session or a recording starts only from an
// AuthorisedCommand, and only the verifier mints one. The run-time guard (isAuthorisedCommand) is
// tested in command-verifier.test.ts; this file checks that the COMPILER refuses a forgery, so a
// mistake is caught before it runs. It compiles small programs with the project's own compiler
// options through the TypeScript API and expects a type error exactly where a forged value is used.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const configFile = ts.readConfigFile(path.join(root, 'tsconfig.json'), (p) => ts.sys.readFile(p));
const { options } = ts.parseJsonConfigFileContent(configFile.config, ts.sys, root);
// The cases are written two folders below the project root (in .tap/, ignored by git), so they are
// ES modules of this package and import src/ by the same relative paths as the project's own files.
const imports = `
import type { AuthorisedCommand } from '../../src/command/authorised-command.ts';
import { StreamSession } from '../../src/stream/session.ts';
const fields = {
  action: 'stream.start' as const, operator: 'sgt-1', issuer: 'console', reason: 'officer-safety', jti: 'j1', kid: 'k1',
  tokenDigest: 'd', expiresAt: 0, issuedAt: 0, receivedAt: 0, maxDurationS: 60, offer: 'v=0', offerSha256: 'x', sid: undefined, params: undefined, release: undefined, force: false, fromSeq: undefined, toSeq: undefined,
  talk: false, alertId: undefined, clear: false, note: undefined,
  toJSON() { return {} as ReturnType<AuthorisedCommand['toJSON']>; },
};
export function use(command: AuthorisedCommand): AuthorisedCommand { return command; }
void StreamSession;
`;

const cases = {
  control: 'declare const real: AuthorisedCommand;\nuse(real);\n',
  literal: 'use({ ...fields });\n',
  lookAlike: `
class LookAlike { ${'action = fields.action; operator = ""; issuer = ""; reason = ""; jti = ""; kid = ""; tokenDigest = ""; expiresAt = 0; issuedAt = 0; receivedAt = 0; maxDurationS = 1; offer = ""; offerSha256 = ""; sid = undefined; params = undefined; toJSON = fields.toJSON;'} }
use(new LookAlike());
`,
  session: 'void StreamSession.open({ sid: "s", command: { ...fields }, ice: {} as never, audio: false, logger: {} as never });\n',
};

/**
 * Type errors of each case (the shared imports, then the case's body), as "line: message". One
 * program for all cases: building one costs seconds, most of it the project's own files.
 */
function typeErrors(): Record<keyof typeof cases, string[]> {
  mkdirSync(path.join(root, '.tap'), { recursive: true });
  const dir = mkdtempSync(path.join(root, '.tap', 'type-case-'));
  try {
    const files = Object.fromEntries(Object.entries(cases).map(([name, body]) => [name, path.join(dir, `${name}.ts`)])) as Record<keyof typeof cases, string>;
    for (const [name, file] of Object.entries(files)) writeFileSync(file, imports + cases[name as keyof typeof cases]);
    const program = ts.createProgram(Object.values(files), { ...options, noEmit: true, rootDir: undefined, outDir: undefined });
    const diagnostics = ts.getPreEmitDiagnostics(program);
    const errorsOf = (file: string) =>
      diagnostics
        .filter((d) => d.file?.fileName === file)
        .map((d) => `${d.file!.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
    return Object.fromEntries(Object.entries(files).map(([name, file]) => [name, errorsOf(file)])) as Record<keyof typeof cases, string[]>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const errors = typeErrors();

t.test('a real AuthorisedCommand passes where one is required (the control case)', async (t) => {
  t.same(errors.control, []);
});

t.test('an object literal of the same shape is refused by the compiler', async (t) => {
  t.equal(errors.literal.length, 1, errors.literal.join('\n'));
  t.match(errors.literal[0], /'#minted' is missing/);
});

t.test('another class with the same public members is refused', async (t) => {
  t.equal(errors.lookAlike.length, 1, errors.lookAlike.join('\n'));
});

t.test('a forged command handed to a live session is refused by the compiler', async (t) => {
  t.equal(errors.session.length, 1, errors.session.join('\n'));
});
