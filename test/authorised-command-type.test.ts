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
  tokenDigest: 'd', expiresAt: 0, issuedAt: 0, receivedAt: 0, maxDurationS: 60, offer: 'v=0', offerSha256: 'x', sid: undefined,
  toJSON() { return {} as ReturnType<AuthorisedCommand['toJSON']>; },
};
export function use(command: AuthorisedCommand): AuthorisedCommand { return command; }
void StreamSession;
`;

/** Type errors of a program made of `body` after the shared imports, as "line: message". */
function typeErrors(body: string): string[] {
  mkdirSync(path.join(root, '.tap'), { recursive: true });
  const dir = mkdtempSync(path.join(root, '.tap', 'type-case-'));
  try {
    const file = path.join(dir, 'case.ts');
    writeFileSync(file, imports + body);
    const program = ts.createProgram([file], { ...options, noEmit: true, rootDir: undefined, outDir: undefined });
    return ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file?.fileName === file)
      .map((d) => `${d.file!.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('a real AuthorisedCommand passes where one is required (the control case)', async (t) => {
  t.same(typeErrors('declare const real: AuthorisedCommand;\nuse(real);\n'), []);
});

t.test('an object literal of the same shape is refused by the compiler', async (t) => {
  const errors = typeErrors('use({ ...fields });\n');
  t.equal(errors.length, 1, errors.join('\n'));
  t.match(errors[0], /'#minted' is missing/);
});

t.test('another class with the same public members is refused', async (t) => {
  const errors = typeErrors(`
class LookAlike { ${'action = fields.action; operator = ""; issuer = ""; reason = ""; jti = ""; kid = ""; tokenDigest = ""; expiresAt = 0; issuedAt = 0; receivedAt = 0; maxDurationS = 1; offer = ""; offerSha256 = ""; sid = undefined; toJSON = fields.toJSON;'} }
use(new LookAlike());
`);
  t.equal(errors.length, 1, errors.join('\n'));
});

t.test('a forged command handed to a live session is refused by the compiler', async (t) => {
  const errors = typeErrors('void StreamSession.open({ sid: "s", command: { ...fields }, ice: {} as never, audio: false, logger: {} as never });\n');
  t.equal(errors.length, 1, errors.join('\n'));
});
