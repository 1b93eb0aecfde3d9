// The release step (fleet side, docs/operations.md "Software updates"):
//   bwc-agent release keygen --out DIR        an Ed25519 release key pair: release-key.private.jwk.json
//                                             (kept off the cameras) and release-keys.jwks.json (update.releaseKeys)
//   bwc-agent release sign --key FILE --bundle FILE --url URL [--version V]
//                                             prints the `release` of an agent.update as JSON:
//                                             {version, url, sha256, signature}
// The version is read from the bundle's name (bwc-agent-<version>-linux-<arch>.tar.gz) unless given.
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CompactSign, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { errorMessage } from '../errors.ts';
import { hashFile } from '../update/download.ts';
import { releaseTokenType, versionPattern, type ReleaseClaim } from '../update/release.ts';

export class ReleaseToolError extends Error {}

export async function signRelease(o: { keyFile: string; bundle: string; url: string; version?: string | undefined }): Promise<ReleaseClaim> {
  const version = o.version ?? /^bwc-agent-(\d+\.\d+\.\d+)-linux-[a-z0-9]+\.tar\.gz$/.exec(path.basename(o.bundle))?.[1];
  if (!version || !versionPattern.test(version)) throw new ReleaseToolError(`give --version X.Y.Z (the bundle name ${path.basename(o.bundle)} does not say it)`);
  let jwk: JWK;
  try {
    jwk = JSON.parse(readFileSync(o.keyFile, 'utf8')) as JWK;
  } catch (err) {
    throw new ReleaseToolError(`cannot read the release key ${o.keyFile}: ${errorMessage(err)}`);
  }
  if (!jwk.kid || !jwk.d) throw new ReleaseToolError(`${o.keyFile} is not a private JWK with a kid (make one with: bwc-agent release keygen --out DIR)`);
  const sha256 = await hashFile(o.bundle);
  const signature = await new CompactSign(new TextEncoder().encode(JSON.stringify({ version, sha256 })))
    .setProtectedHeader({ alg: 'EdDSA', kid: jwk.kid, typ: releaseTokenType })
    .sign(await importJWK(jwk, 'EdDSA'));
  return { version, url: o.url, sha256, signature };
}

export async function releaseKeygen(out: string): Promise<{ kid: string; privateFile: string; publicFile: string }> {
  const { publicKey, privateKey } = await generateKeyPair('Ed25519', { extractable: true });
  const kid = `release-${randomUUID().slice(0, 8)}`;
  const pub = { ...(await exportJWK(publicKey)), kid, alg: 'EdDSA', use: 'sig' };
  const priv = { ...(await exportJWK(privateKey)), kid, alg: 'EdDSA', use: 'sig' };
  mkdirSync(out, { recursive: true });
  const privateFile = path.join(out, 'release-key.private.jwk.json');
  const publicFile = path.join(out, 'release-keys.jwks.json');
  writeFileSync(privateFile, `${JSON.stringify(priv, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(publicFile, `${JSON.stringify({ keys: [pub] }, null, 2)}\n`);
  return { kid, privateFile, publicFile };
}

export async function releaseTool(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { out: { type: 'string' }, key: { type: 'string' }, bundle: { type: 'string' }, url: { type: 'string' }, version: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals[0] === 'keygen') {
    if (!values.out) throw new ReleaseToolError('release keygen needs --out DIR');
    const made = await releaseKeygen(values.out);
    process.stdout.write(`release key ${made.kid}\n  private: ${made.privateFile} (keep it off the cameras)\n  public: ${made.publicFile} (the cameras' update.releaseKeys)\n`);
    return 0;
  }
  if (positionals[0] === 'sign') {
    for (const required of ['key', 'bundle', 'url'] as const) if (!values[required]) throw new ReleaseToolError(`release sign needs --${required}`);
    const claim = await signRelease({ keyFile: values.key!, bundle: values.bundle!, url: values.url!, version: values.version });
    process.stdout.write(`${JSON.stringify(claim, null, 2)}\n`);
    return 0;
  }
  throw new ReleaseToolError('release needs the verb "keygen" or "sign"');
}
