// The device's own Ed25519 key: generated on first start, private key 0600 in the state folder,
// public key published in `state`. It signs audit checkpoints and (with capture) evidence
// manifests, so an auditor can check them without trusting the camera's storage.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';

export interface DeviceKey {
  /** RFC 7638 thumbprint of the public key: names the key in signatures. */
  readonly kid: string;
  readonly publicJwk: JWK;
  /** Ed25519 signature, base64url. */
  sign(data: string | Uint8Array): string;
}

export const deviceKeyFile = 'device-key.private.pem';

export async function loadOrCreateDeviceKey(stateDir: string): Promise<DeviceKey> {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, deviceKeyFile);
  let privateKey: KeyObject;
  if (existsSync(file)) {
    privateKey = createPrivateKey(readFileSync(file));
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${file} is not an Ed25519 key`);
  } else {
    privateKey = generateKeyPairSync('ed25519').privateKey;
    // Written whole then renamed: a power cut never leaves half a key behind.
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, file);
  }
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  return {
    kid,
    publicJwk: { ...publicJwk, kid, alg: 'EdDSA', use: 'sig' },
    sign: (data) => sign(null, typeof data === 'string' ? Buffer.from(data) : data, privateKey).toString('base64url'),
  };
}

/** Checks a device signature against a public JWK (for verifiers that hold only the JWK). */
export function verifyDeviceSignature(publicJwk: JWK, data: string | Uint8Array, signature: string): boolean {
  const key = createPublicKey({ key: publicJwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  return verify(null, typeof data === 'string' ? Buffer.from(data) : data, key, Buffer.from(signature, 'base64url'));
}
