import { mkdtemp, stat, writeFile } from 'node:fs/promises';
import { generateKeyPairSync } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { deviceKeyFile, loadOrCreateDeviceKey, verifyDeviceSignature } from '../src/keys/device-key.ts';

t.test('generated on first start in a state folder that does not exist yet, 0600, stable across loads', async (t) => {
  const stateDir = path.join(await mkdtemp(path.join(os.tmpdir(), 'bwc-key-')), 'not', 'yet');
  const key = await loadOrCreateDeviceKey(stateDir);
  t.equal(((await stat(path.join(stateDir, deviceKeyFile))).mode & 0o777).toString(8), '600');
  t.equal(((await stat(stateDir)).mode & 0o777).toString(8), '700');
  t.equal(key.publicJwk.crv, 'Ed25519');
  t.equal(key.publicJwk.kid, key.kid);
  t.equal(key.publicJwk.d, undefined, 'no private part in the published key');
  const again = await loadOrCreateDeviceKey(stateDir);
  t.equal(again.kid, key.kid, 'the same key after a restart');
  const sig = key.sign('checkpoint');
  t.ok(verifyDeviceSignature(again.publicJwk, 'checkpoint', sig));
  t.notOk(verifyDeviceSignature(again.publicJwk, 'checkpoinT', sig));
});

t.test('a key file of the wrong type is refused', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-key-'));
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
  await writeFile(path.join(stateDir, deviceKeyFile), rsa);
  await t.rejects(loadOrCreateDeviceKey(stateDir), /is not an Ed25519 key/);
});
