// A force's age key pair for tests: generated once per test process (never committed), the
// public key given to agents under test (recording.encryption.recipients) and the identity file
// given to `evidence verify|export --identity` and to the `age` tool.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';

export const testAgeIdentity = await generateX25519Identity();
export const testAgeRecipient = await identityToRecipient(testAgeIdentity);

const dir = mkdtempSync(path.join(os.tmpdir(), 'bwc-age-'));
/** The identity file, as age-keygen writes it. */
export const testAgeIdentityFile = path.join(dir, 'force.agekey');
writeFileSync(testAgeIdentityFile, `# created: ${new Date().toISOString()}\n# public key: ${testAgeRecipient}\n${testAgeIdentity}\n`, { mode: 0o600 });

const plaintextDirs = new Set<string>();
/**
 * The plaintext folder on tmpfs (/dev/shm) for the agent of one state folder: the same for every
 * config written for that state folder (so a restart finds what a kill left, and the config digest
 * stays the same), fresh without one; removed when the test process exits.
 */
export function testPlaintextDir(stateDir?: string): string {
  const d = stateDir ? `/dev/shm/bwc-plain-${path.basename(stateDir)}` : mkdtempSync('/dev/shm/bwc-plain-');
  mkdirSync(d, { recursive: true, mode: 0o700 });
  plaintextDirs.add(d);
  return d;
}

process.once('exit', () => {
  for (const d of [dir, ...plaintextDirs]) rmSync(d, { recursive: true, force: true });
});

/** Decrypts an evidence file with the test identity into a temporary file (for decoding); its path. */
export async function decryptedCopy(file: string): Promise<string> {
  const { Decrypter } = await import('age-encryption');
  const { readFile, writeFile } = await import('node:fs/promises');
  const d = new Decrypter();
  d.addIdentity(testAgeIdentity);
  const out = path.join(dir, `${path.basename(file).replace(/\.age$/, '')}-${Math.random().toString(36).slice(2)}`);
  await writeFile(out, await d.decrypt(new Uint8Array(await readFile(file))));
  return out;
}
