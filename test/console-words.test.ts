// The ops console puts the agent's codes into words by hand (ops-console/words.ts for the codes a
// command reply can carry, public/app.js for stream end causes and ICE restart causes). This checks
// both ways against the agent's own declarations, so a code gained on either side fails here with
// its name, not on a screen as "refused (some_code)".
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import t from 'tap';
import { actionFailedCode, notSupportedCode } from '../src/command/command-handler.ts';
import { fleetRefusalCodes } from '../src/fleet/fleet-management.ts';
import { officerRefusalCodes } from '../src/officer/officer-extension.ts';
import { handlerRejectionCodes, rejectionCodes } from '../src/command/types.ts';
import { recordRefusalCodes } from '../src/recording/recorder.ts';
import { restartCauses } from '../src/stream/ice-restart.ts';
import { streamEndCauses, streamRefusalCodes } from '../src/stream/stream-manager.ts';
import { consoleOnlyCodes, inWords, wordedCodes } from '../ops-console/words.ts';

/** Every code a camera's command reply can carry: the verifier's, the handler's, and each action's. */
const replyCodes = [...new Set<string>([...rejectionCodes, ...handlerRejectionCodes, actionFailedCode, notSupportedCode, ...streamRefusalCodes, ...recordRefusalCodes, ...fleetRefusalCodes, ...officerRefusalCodes])];

/**
 * The keys of `const NAME = { ... };` in the page's script. app.js is a browser script with no
 * exports (the page loads it as is, no bundler), so the literal is cut out and evaluated on its own.
 */
function appJsWords(name: string): Record<string, string> {
  const source = readFileSync(new URL('../ops-console/public/app.js', import.meta.url), 'utf8');
  const start = source.indexOf(`const ${name} = {`);
  if (start < 0) throw new Error(`ops-console/public/app.js has no "const ${name} = {"`);
  const open = source.indexOf('{', start);
  const close = source.indexOf('\n};', open);
  return vm.runInNewContext(`(${source.slice(open, close + 2)})`) as Record<string, string>;
}

/** What one side has and the other lacks, as a message naming each code. */
function gaps(agentSide: string, agent: readonly string[], consoleSide: string, console: readonly string[]): string[] {
  const problems: string[] = [];
  const lacking = agent.filter((c) => !console.includes(c));
  const stale = console.filter((c) => !agent.includes(c));
  if (lacking.length) problems.push(`${consoleSide} has no words for ${lacking.join(', ')} (from ${agentSide}): add them`);
  if (stale.length) problems.push(`${consoleSide} has words for ${stale.join(', ')}, which ${agentSide} no longer declares: remove them or declare the code`);
  return problems;
}

t.test('every code a command reply can carry has words in ops-console/words.ts, and no others', async (t) => {
  const problems = gaps(
    'src/command/types.ts, command-handler.ts, stream/stream-manager.ts, recording/recorder.ts',
    replyCodes,
    'ops-console/words.ts',
    wordedCodes.filter((c) => !consoleOnlyCodes.includes(c)),
  );
  t.same(problems, [], problems.join('; '));
  for (const code of replyCodes) t.not(inWords(code), `refused (${code})`, `inWords(${code}) is words, not the fallback`);
});

t.test('every stream end cause has words in the page (CAUSES), and no others', async (t) => {
  const problems = gaps('streamEndCauses in src/stream/stream-manager.ts', streamEndCauses, 'CAUSES in ops-console/public/app.js', Object.keys(appJsWords('CAUSES')));
  t.same(problems, [], problems.join('; '));
});

t.test('every ICE restart cause has words in the page (RESTART_WORDS), and no others', async (t) => {
  const problems = gaps('restartCauses in src/stream/ice-restart.ts', restartCauses, 'RESTART_WORDS in ops-console/public/app.js', Object.keys(appJsWords('RESTART_WORDS')));
  t.same(problems, [], problems.join('; '));
});

t.test('the check itself names a code one side lacks', async (t) => {
  t.same(gaps('agent', ['a', 'b'], 'console', ['a', 'c']), [
    'console has no words for b (from agent): add them',
    'console has words for c, which agent no longer declares: remove them or declare the code',
  ]);
});
