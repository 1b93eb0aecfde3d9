// The command-line face of src/offload/bucket-verify.ts: one line per problem, then a summary.
// Exit 0 intact (and, without a pinned key, a warning that it was not pinned), 1 a problem,
// 2 bad usage or the store cannot be read (credentials, bucket, endpoint: the message names which).
import { readFileSync } from 'node:fs';
import type { JWK } from 'jose';
import { errorMessage } from '../errors.ts';
import { verifyFromBucket } from './bucket-verify.ts';

export interface BucketCliArgs {
  bucketUrl: string;
  recording: string;
  credentialsFile?: string | undefined;
  publicKeyFile?: string | undefined;
  kid?: string | undefined;
  region?: string | undefined;
}

export async function evidenceVerifyBucketCommand(a: BucketCliArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  let publicJwk: JWK | undefined;
  try {
    if (a.publicKeyFile) publicJwk = JSON.parse(readFileSync(a.publicKeyFile, 'utf8')) as JWK;
  } catch (e) {
    err.write(`bwc-agent evidence verify: --public-key: ${errorMessage(e)}\n`);
    return 2;
  }
  try {
    const r = await verifyFromBucket({
      bucketUrl: a.bucketUrl,
      recording: a.recording,
      ...(a.credentialsFile ? { credentialsFile: a.credentialsFile } : {}),
      ...(a.region ? { region: a.region } : {}),
      ...(publicJwk ? { publicJwk } : {}),
      ...(a.kid ? { kid: a.kid } : {}),
    });
    for (const p of r.problems) out.write(`${p.kind}: ${p.key}: ${p.message}\n`);
    const counts = `${r.segments} segments, ${r.bytes} bytes under ${r.prefix}`;
    out.write(r.ok ? `evidence OK in the store: ${counts}; manifest signed by kid ${r.kid}${r.pinned ? ' (pinned)' : ' (NOT pinned)'}\n` : `evidence verify FAILED in the store: ${r.problems.length} problem(s) (${counts})\n`);
    return r.ok ? 0 : 1;
  } catch (e) {
    err.write(`bwc-agent evidence verify: ${errorMessage(e)}\n`);
    return 2;
  }
}
