// Camera enrolment, a fleet admin's action: pins a camera's device public key in the console's
// archive. From then on the console checks that camera's state, ICE restart offers and audit
// checkpoints against this key only, never against whatever key a `state` message carries.
// Take the key from the camera itself at issue (its `<stateDir>/device-key.private.pem`'s public
// half, as `bwc-agent` prints it in state.devicePublicKey on the bench), not from the broker.
//
//   node ops-console/enrol.ts add    --archive SPEC --device ID --key PUBLIC_JWK_FILE --by ADMIN
//   node ops-console/enrol.ts add    --archive SPEC --device ID --from-state-dir DIR --by ADMIN
//        (at issue, on the provisioning bench: the public half of DIR/device-key.private.pem)
//   node ops-console/enrol.ts remove --archive SPEC --device ID
//   node ops-console/enrol.ts list   --archive SPEC
// SPEC: sqlite:FILE (the console's default is ops-console-archive.sqlite beside its users file) or
// postgres://... A running console re-reads the enrolments on SIGUSR2 (kill -USR2 PID).
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { jwkThumbprint } from '../src/audit/verify.ts';
import { deviceKeyFile } from '../src/keys/device-key.ts';
import { openArchive } from './archive/archive.ts';

/** The public half of a camera's device key, read from its state folder at issue. */
export function publicKeyOfStateDir(dir: string): JWK {
  const file = path.join(dir, deviceKeyFile);
  let jwk: JWK;
  try {
    jwk = createPublicKey(createPrivateKey(readFileSync(file))).export({ format: 'jwk' }) as JWK;
  } catch (err) {
    throw new Error(`cannot read the camera's device key ${file}: ${(err as Error).message}`);
  }
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new Error(`${file} is not an Ed25519 key`);
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x };
}

/** Reads a public Ed25519 JWK; throws naming what is wrong (a private key is refused: it must not travel). */
export function readDevicePublicKey(file: string): JWK {
  let jwk: JWK;
  try {
    jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK;
  } catch (err) {
    throw new Error(`cannot read the device key ${file}: ${(err as Error).message}`);
  }
  if (typeof jwk !== 'object' || jwk === null || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    throw new Error(`${file} is not an Ed25519 public JWK (kty OKP, crv Ed25519, x)`);
  }
  if ('d' in jwk) throw new Error(`${file} holds a PRIVATE key: enrol the public half only`);
  return { kty: 'OKP', crv: 'Ed25519', x: jwk.x };
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { archive: { type: 'string' }, device: { type: 'string' }, key: { type: 'string' }, 'from-state-dir': { type: 'string' }, by: { type: 'string' } },
  });
  const verb = positionals[0];
  const usage = 'usage: node ops-console/enrol.ts add|remove|list --archive SPEC [--device ID] [--key PUBLIC_JWK_FILE] [--by ADMIN]\n';
  if (!values.archive || !['add', 'remove', 'list'].includes(verb ?? '')) {
    process.stderr.write(usage);
    return 2;
  }
  if (verb !== 'list' && !values.device) throw new Error(`${verb} needs --device ID`);
  if (verb === 'add' && ((!values.key && !values['from-state-dir']) || !values.by)) {
    throw new Error('add needs --key PUBLIC_JWK_FILE (or --from-state-dir DIR) and --by ADMIN (who enrols it, for the record)');
  }
  const archive = await openArchive(values.archive);
  try {
    if (verb === 'add') {
      const publicJwk = values.key ? readDevicePublicKey(values.key) : publicKeyOfStateDir(values['from-state-dir']!);
      const e = { deviceId: values.device!, publicJwk, kid: jwkThumbprint(publicJwk), enrolledBy: values.by!, enrolledAt: new Date().toISOString() };
      const before = await archive.enrolment(e.deviceId);
      await archive.enrol(e);
      await archive.addEvent({ deviceId: e.deviceId, type: 'enrolled', at: e.enrolledAt, detail: { kid: e.kid, by: e.enrolledBy, replaced: before?.kid ?? null } });
      process.stdout.write(`${e.deviceId} enrolled with device key ${e.kid}${before && before.kid !== e.kid ? ` (replacing ${before.kid})` : ''}\n`);
    } else if (verb === 'remove') {
      process.stdout.write((await archive.unenrol(values.device!)) ? `${values.device} is no longer enrolled\n` : `${values.device} was not enrolled\n`);
    } else {
      for (const e of await archive.enrolments()) process.stdout.write(`${e.deviceId}\t${e.kid}\t${e.enrolledBy}\t${e.enrolledAt}\n`);
    }
  } finally {
    await archive.close();
  }
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`ops-console enrol: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
