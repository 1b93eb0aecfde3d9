// `bwc-agent evidence verify --bucket URL --recording ID`: checks one recording from the object
// store itself, so an auditor never needs the camera. The same checks as the camera-side verifier
// (src/recording/verify.ts) over what the store holds:
//   - manifest.sig is the Ed25519 signature over manifest.json's exact bytes, by the key whose
//     thumbprint the manifest names (kid);
//   - every segment the manifest lists is there with that size and SHA-256 (the bytes are read and
//     hashed here: the store's ETag and metadata are not trusted), and the chain links
//     (each prevSha256 is the previous segment's sha256, the last one is chainHead);
//   - nothing else sits under the recording's prefix.
// The device key comes from the store too (device.jwk.json beside the manifest), which proves only
// that the recording is self-consistent: an auditor PINS the key with --public-key FILE (the JWK the
// fleet registered for the device, e.g. from its retained state's devicePublicKey) or --kid KID.
import { createHash, createPublicKey, verify } from 'node:crypto';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { JWK } from 'jose';
import { jwkThumbprint } from '../audit/verify.ts';
import { errorMessage } from '../errors.ts';
import { manifestFile, offloadedExtraFiles, signatureFile } from '../recording/layout.ts';
import { genesisSha256, type Manifest } from '../recording/manifest.ts';
import { CredentialsFile } from './credentials.ts';
import { ObjectStore, type StoreCredentials } from './object-store.ts';
import { deviceKeyObject } from './offloader.ts';

export interface BucketVerifyArgs {
  /** http(s)://ENDPOINT/BUCKET[/PREFIX], path-style. */
  bucketUrl: string;
  /** RECORDING, or DEVICE/RECORDING. */
  recording: string;
  credentialsFile?: string;
  region?: string;
  /** The pinned device key: a JWK file's content, or a kid. */
  publicJwk?: JWK;
  kid?: string;
  env?: NodeJS.ProcessEnv;
}

export interface BucketProblem {
  kind: 'missing' | 'modified' | 'chain_broken' | 'bad_signature' | 'manifest_mismatch' | 'unlisted' | 'key_not_pinned';
  key: string;
  message: string;
}

export function parseBucketUrl(url: string): { endpoint: string; bucket: string; prefix: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new Error(`--bucket: not a URL: ${url}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('--bucket: expected http(s)://ENDPOINT/BUCKET[/PREFIX]');
  const [bucket, ...rest] = u.pathname.split('/').filter(Boolean);
  if (!bucket) throw new Error('--bucket: the URL names no bucket (http(s)://ENDPOINT/BUCKET[/PREFIX])');
  return { endpoint: `${u.protocol}//${u.host}`, bucket, prefix: rest.length ? `${rest.join('/')}/` : '' };
}

export async function verifyFromBucket(a: BucketVerifyArgs): Promise<{ ok: boolean; problems: BucketProblem[]; prefix: string; kid: string | null; segments: number; bytes: number; pinned: boolean }> {
  const { endpoint, bucket, prefix: base } = parseBucketUrl(a.bucketUrl);
  const env = a.env ?? process.env;
  let credentials: StoreCredentials;
  if (a.credentialsFile) credentials = new CredentialsFile(a.credentialsFile).read().credentials;
  else if (env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) credentials = { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY };
  else throw new Error('--credentials FILE (accessKeyId, secretAccessKey) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are needed');
  const store = new ObjectStore({ endpoint, bucket, region: a.region ?? env.AWS_REGION ?? 'us-east-1', credentials });
  try {
    await store.check();
    const prefix = await findPrefix(store, base, a.recording);
    const problems: BucketProblem[] = [];
    const p = (kind: BucketProblem['kind'], key: string, message: string) => problems.push({ kind, key, message });
    const get = async (key: string) => {
      try {
        return await store.get(key);
      } catch (err) {
        p('missing', key, `cannot read it from the store: ${errorMessage(err)}`);
        return undefined;
      }
    };
    const text = await get(prefix + manifestFile);
    const sig = await get(prefix + signatureFile);
    const jwkBytes = await get(prefix + deviceKeyObject);
    let kid: string | null = null;
    let pinned = false;
    let segments = 0;
    let bytes = 0;
    if (!text) return { ok: false, problems, prefix, kid, segments, bytes, pinned };
    let m: Manifest;
    try {
      m = JSON.parse(text.toString('utf8')) as Manifest;
      if (!Array.isArray(m.segments)) throw new Error('no segments');
    } catch (err) {
      p('manifest_mismatch', prefix + manifestFile, `not a manifest: ${errorMessage(err)}`);
      return { ok: false, problems, prefix, kid, segments, bytes, pinned };
    }
    // The key: the pinned one if given, else the store's copy (and then say it is not pinned).
    let jwk: JWK | undefined = a.publicJwk;
    if (jwkBytes) {
      try {
        const stored = JSON.parse(jwkBytes.toString('utf8')) as JWK;
        if (jwk && jwkThumbprint(stored) !== jwkThumbprint(jwk)) p('bad_signature', prefix + deviceKeyObject, `the store's device key ${jwkThumbprint(stored)} is not the pinned key ${jwkThumbprint(jwk)}`);
        jwk ??= stored;
      } catch (err) {
        p('bad_signature', prefix + deviceKeyObject, `not a JWK: ${errorMessage(err)}`);
      }
    }
    if (jwk) {
      kid = jwkThumbprint(jwk);
      pinned = a.publicJwk !== undefined || a.kid === kid;
      if (a.kid !== undefined && a.kid !== kid) p('bad_signature', prefix + deviceKeyObject, `the device key is ${kid}, not the pinned kid ${a.kid}`);
      if (m.kid !== kid) p('bad_signature', prefix + signatureFile, `the manifest names key ${m.kid}, not ${kid}`);
      else if (!sig || !verify(null, text, createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }), Buffer.from(sig.toString('utf8').trim(), 'base64url'))) {
        p('bad_signature', prefix + signatureFile, 'the manifest signature does not verify with the device key');
      }
    }
    const recId = prefix.split('/').at(-2);
    if (m.recordingId !== recId) p('manifest_mismatch', prefix + manifestFile, `the manifest is for recording ${m.recordingId}, stored under ${recId}`);
    const deviceId = prefix.split('/').at(-3);
    if (m.deviceId !== deviceId) p('manifest_mismatch', prefix + manifestFile, `the manifest is for device ${m.deviceId}, stored under ${deviceId}`);
    // The segments: bytes hashed here, the chain followed.
    let prev = genesisSha256;
    const expected = new Set([manifestFile, signatureFile, deviceKeyObject, ...offloadedExtraFiles].map((n) => prefix + n));
    for (const s of m.segments) {
      const key = prefix + s.file.split('/').at(-1)!;
      expected.add(key);
      if (s.prevSha256 !== prev) p('chain_broken', key, `segment ${s.index}'s prevSha256 is not the previous segment's sha256`);
      prev = s.sha256;
      const body = await get(key);
      if (!body) continue;
      segments++;
      bytes += body.length;
      const sha = createHash('sha256').update(body).digest('hex');
      if (body.length !== s.bytes || sha !== s.sha256) p('modified', key, `the store's object is ${body.length} bytes with SHA-256 ${sha.slice(0, 12)}…, the signed manifest says ${s.bytes} bytes, ${s.sha256.slice(0, 12)}…`);
    }
    if (m.chainHead !== prev) p('chain_broken', prefix + manifestFile, `the manifest's chainHead is not the last segment's sha256`);
    // Talk-back spurts the manifest lists (issue 19): there, as hashed.
    for (const s of m.talk ?? []) {
      const key = prefix + s.file.split('/').at(-1)!;
      expected.add(key);
      const body = await get(key);
      if (!body) continue;
      bytes += body.length;
      const sha = createHash('sha256').update(body).digest('hex');
      if (body.length !== s.bytes || sha !== s.sha256) p('modified', key, `the store's talk-back object is ${body.length} bytes with SHA-256 ${sha.slice(0, 12)}…, the signed manifest says ${s.bytes} bytes, ${s.sha256.slice(0, 12)}…`);
    }
    for (const key of await listKeys(store, prefix)) if (!expected.has(key)) p('unlisted', key, 'an object under the recording prefix that the signed manifest does not list');
    if (!pinned) p('key_not_pinned', prefix + deviceKeyObject, `the device key ${kid ?? '(none)'} was taken from the store itself: pin it with --public-key FILE or --kid KID (the fleet's registered key for the device)`);
    const fatal = problems.filter((x) => x.kind !== 'key_not_pinned');
    return { ok: fatal.length === 0, problems, prefix, kid, segments, bytes, pinned };
  } finally {
    store.destroy();
  }
}

async function listKeys(store: ObjectStore, prefix: string, delimiter?: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const r = await store.client.send(new ListObjectsV2Command({ Bucket: store.bucket, Prefix: prefix, ...(delimiter ? { Delimiter: delimiter } : {}), ...(token ? { ContinuationToken: token } : {}) }));
    for (const o of r.Contents ?? []) if (o.Key) keys.push(o.Key);
    for (const c of r.CommonPrefixes ?? []) if (c.Prefix) keys.push(c.Prefix);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

/** `DEVICE/RECORDING` names the prefix; a bare RECORDING is looked for under every device. */
async function findPrefix(store: ObjectStore, base: string, recording: string): Promise<string> {
  if (!/^([A-Za-z0-9][A-Za-z0-9_-]{0,63}\/)?[A-Za-z0-9_-]{1,128}$/.test(recording)) throw new Error(`--recording: expected RECORDING_ID or DEVICE_ID/RECORDING_ID, got ${JSON.stringify(recording).slice(0, 80)}`);
  if (recording.includes('/')) return `${base}${recording}/`;
  const found: string[] = [];
  for (const device of await listKeys(store, base, '/')) {
    if ((await store.head(`${device}${recording}/${manifestFile}`)) !== undefined) found.push(`${device}${recording}/`);
  }
  if (found.length === 0) throw new Error(`--recording: no ${recording}/${manifestFile} under any device in ${store.bucket}/${base}`);
  if (found.length > 1) throw new Error(`--recording: ${recording} is under several devices (${found.join(', ')}): give DEVICE_ID/${recording}`);
  return found[0]!;
}
