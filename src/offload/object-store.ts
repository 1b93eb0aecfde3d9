// One S3-compatible bucket as the uploader and `evidence verify --bucket` see it, through the AWS
// SDK v3 (path-style, any region). What the store is trusted with, and what it is not:
//   - Content-MD5 on every PUT and part: the store verifies it (Swift's s3api answers BadDigest);
//     x-amz-checksum-* is not verified by every store (Swift ignores it), so it is not relied on.
//   - our own SHA-256 (hex) in the object's metadata (x-amz-meta-sha256), and after every PUT a HEAD
//     that must show the same size, the same MD5 ETag (or multipart ETag) and the same SHA-256:
//     only then is the object "verified", and only a verified object may have its local copy deleted.
//   - requestChecksumCalculation WHEN_REQUIRED: the SDK's default sends stream bodies aws-chunked
//     with a CRC trailer, which Swift answers 501 NotImplemented (../shared/notes/swift-s3api.md).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { throttledBody, type TokenBucket, type UploadGate } from './throttle.ts';

export interface StoreCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface ObjectStoreOptions {
  endpoint: string;
  bucket: string;
  region: string;
  credentials: StoreCredentials;
  /** Send from this local address (the chosen interface's); undefined: any. */
  localAddress?: string;
  /** Idle time after which a request fails. */
  requestTimeoutMs?: number;
}

export interface ObjectSource {
  /** A file, or bytes in memory (the device key). */
  file?: string;
  data?: Buffer;
  sha256: string;
  bytes: number;
}

export interface HeadResult {
  bytes: number;
  etag: string;
  sha256: string | undefined;
}

/** A failure with the setting it points at, so the log and the state name what to fix. */
export class StoreError extends Error {
  readonly setting: string;
  readonly code: string;
  constructor(setting: string, code: string, message: string) {
    super(`${setting}: ${message}`);
    this.setting = setting;
    this.code = code;
  }
}

/** The store's answer was not the object we sent: the upload must be retried, nothing deleted. */
export class VerifyMismatch extends Error {
  readonly code = 'verify_mismatch';
}

const unquote = (etag: string | undefined) => (etag ?? '').replace(/^"|"$/g, '');

export class ObjectStore {
  readonly client: S3Client;
  readonly #o: ObjectStoreOptions;

  constructor(o: ObjectStoreOptions) {
    this.#o = o;
    this.client = new S3Client({
      endpoint: o.endpoint,
      region: o.region,
      forcePathStyle: true,
      credentials: o.credentials,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // One attempt per call: the uploader owns retries (with back-off across outages), and a
      // stream body cannot be replayed by the SDK anyway.
      maxAttempts: 1,
      requestHandler: {
        httpAgent: { keepAlive: true, ...(o.localAddress ? { localAddress: o.localAddress } : {}) },
        httpsAgent: { keepAlive: true, ...(o.localAddress ? { localAddress: o.localAddress } : {}) },
        connectionTimeout: o.requestTimeoutMs ?? 60_000,
        socketTimeout: o.requestTimeoutMs ?? 60_000,
      },
    });
  }

  get bucket(): string {
    return this.#o.bucket;
  }

  destroy(): void {
    this.client.destroy();
  }

  /** Checks the bucket is there and the credentials are taken: a clear error naming the setting otherwise. */
  async check(signal?: AbortSignal): Promise<void> {
    await this.#call(() => this.client.send(new HeadBucketCommand({ Bucket: this.#o.bucket }), { abortSignal: signal }));
  }

  /** The object's size, ETag and our SHA-256 metadata, or undefined when the store has no such object. */
  async head(key: string, signal?: AbortSignal): Promise<HeadResult | undefined> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.#o.bucket, Key: key }), { abortSignal: signal });
      return { bytes: h.ContentLength ?? -1, etag: unquote(h.ETag), sha256: h.Metadata?.sha256 };
    } catch (err) {
      if (err instanceof S3ServiceException && (err.$metadata.httpStatusCode === 404 || err.name === 'NotFound' || err.name === 'NoSuchKey')) return undefined;
      throw this.#explain(err);
    }
  }

  async get(key: string, signal?: AbortSignal): Promise<Buffer> {
    const r = await this.#call(() => this.client.send(new GetObjectCommand({ Bucket: this.#o.bucket, Key: key }), { abortSignal: signal }));
    return Buffer.from(await r.Body!.transformToByteArray());
  }

  /** A single PUT with Content-MD5 and the SHA-256 metadata; returns the MD5 (hex) sent. */
  async put(key: string, src: ObjectSource & { md5?: string }, bucket: TokenBucket, gate: UploadGate, onBytes: (n: number) => void, signal?: AbortSignal): Promise<string> {
    const md5 = src.md5 ?? (src.data ? createHash('md5').update(src.data).digest('hex') : await md5OfRange(src.file!, 0, src.bytes));
    const chunks: AsyncIterable<Buffer> = src.data ? (async function* () { yield src.data!; })() : createReadStream(src.file!, { highWaterMark: 256 * 1024 });
    await this.#call(() =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.#o.bucket,
          Key: key,
          Body: throttledBody(chunks, bucket, gate, onBytes, signal),
          ContentLength: src.bytes,
          ContentMD5: Buffer.from(md5, 'hex').toString('base64'),
          ContentType: contentTypeOf(key),
          Metadata: { sha256: src.sha256 },
        }),
        { abortSignal: signal },
      ),
    );
    return md5;
  }

  /**
   * A multipart upload, resumed when `uploadId` names one the store still has: ListParts says which
   * parts it holds, and a part whose ETag is the MD5 of our bytes is not sent again. `onUploadId` is
   * called (and must persist it) before any part goes, so a kill -9 can resume. Returns the
   * multipart ETag expected from HEAD (MD5 of the parts' MD5s, "-N").
   */
  async putMultipart(
    key: string,
    src: ObjectSource & { file: string },
    partSize: number,
    uploadId: string | null,
    onUploadId: (id: string | null) => void,
    bucket: TokenBucket,
    gate: UploadGate,
    onBytes: (n: number) => void,
    signal?: AbortSignal,
  ): Promise<{ etag: string; partsSent: number; partsKept: number }> {
    const parts = Math.max(1, Math.ceil(src.bytes / partSize));
    const have = new Map<number, string>();
    if (uploadId) {
      try {
        let marker: string | undefined;
        do {
          const r = await this.client.send(new ListPartsCommand({ Bucket: this.#o.bucket, Key: key, UploadId: uploadId, ...(marker ? { PartNumberMarker: marker } : {}) }), { abortSignal: signal });
          for (const p of r.Parts ?? []) if (p.PartNumber !== undefined) have.set(p.PartNumber, unquote(p.ETag));
          marker = r.IsTruncated ? r.NextPartNumberMarker : undefined;
        } while (marker);
      } catch (err) {
        if (!(err instanceof S3ServiceException && err.name === 'NoSuchUpload')) throw this.#explain(err);
        uploadId = null; // the store dropped it: start again
      }
    }
    if (!uploadId) {
      const r = await this.#call(() =>
        this.client.send(new CreateMultipartUploadCommand({ Bucket: this.#o.bucket, Key: key, ContentType: contentTypeOf(key), Metadata: { sha256: src.sha256 } }), { abortSignal: signal }),
      );
      uploadId = r.UploadId!;
      have.clear();
      onUploadId(uploadId);
    }
    const md5s: Buffer[] = [];
    let partsSent = 0;
    let partsKept = 0;
    for (let n = 1; n <= parts; n++) {
      const start = (n - 1) * partSize;
      const end = Math.min(src.bytes, start + partSize);
      const md5 = await md5OfRange(src.file, start, end - start);
      md5s.push(Buffer.from(md5, 'hex'));
      if (have.get(n) === md5) {
        partsKept++;
        continue;
      }
      const id = uploadId;
      await this.#call(() =>
        this.client.send(
          new UploadPartCommand({
            Bucket: this.#o.bucket,
            Key: key,
            UploadId: id,
            PartNumber: n,
            Body: throttledBody(createReadStream(src.file, { start, end: end - 1, highWaterMark: 256 * 1024 }), bucket, gate, onBytes, signal),
            ContentLength: end - start,
            ContentMD5: Buffer.from(md5, 'hex').toString('base64'),
          }),
          { abortSignal: signal },
        ),
      );
      partsSent++;
    }
    const etag = `${createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts}`;
    const id = uploadId;
    await this.#call(() =>
      this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.#o.bucket,
          Key: key,
          UploadId: id,
          MultipartUpload: { Parts: md5s.map((m, i) => ({ PartNumber: i + 1, ETag: `"${m.toString('hex')}"` })) },
        }),
        { abortSignal: signal },
      ),
    );
    onUploadId(null);
    return { etag, partsSent, partsKept };
  }

  async abortMultipart(key: string, uploadId: string): Promise<void> {
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.#o.bucket, Key: key, UploadId: uploadId })).catch(() => undefined);
  }

  /**
   * Throws VerifyMismatch unless the store holds `key` with our size, ETag and SHA-256. The ETag is
   * checked too because the metadata is only what we sent echoed back; the ETag is the store's own
   * MD5 of what it holds.
   */
  async verify(key: string, expected: { bytes: number; sha256: string; etag: string }, signal?: AbortSignal): Promise<HeadResult> {
    const h = await this.head(key, signal);
    if (!h) throw new VerifyMismatch(`the store has no object ${key} after it was uploaded`);
    const wrong: string[] = [];
    if (h.bytes !== expected.bytes) wrong.push(`size ${h.bytes}, expected ${expected.bytes}`);
    if (h.sha256 !== expected.sha256) wrong.push(`sha256 ${h.sha256 === undefined ? '(none)' : h.sha256.slice(0, 16) + '…'}, expected ${expected.sha256.slice(0, 16)}…`);
    if (h.etag !== expected.etag) wrong.push(`ETag ${h.etag.slice(0, 40)}, expected ${expected.etag}`);
    if (wrong.length > 0) throw new VerifyMismatch(`the store's ${key} is not what was sent: ${wrong.join('; ')}`);
    return h;
  }

  async #call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.#explain(err);
    }
  }

  /** Turns the SDK's error into one naming the setting to look at (never the credentials themselves). */
  #explain(err: unknown): Error {
    if (err instanceof StoreError || err instanceof VerifyMismatch) return err;
    const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const name = e.name ?? 'Error';
    const status = e.$metadata?.httpStatusCode;
    if (name === 'AbortError') return err as Error;
    if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken'].includes(name) || status === 403) {
      return new StoreError('offload.credentialsFile', 'credentials_refused', `the store at ${this.#o.endpoint} refused the credentials (${name}${status ? `, HTTP ${status}` : ''})`);
    }
    if (name === 'NoSuchBucket' || (name === 'NotFound' && status === 404)) {
      return new StoreError('offload.bucket', 'no_such_bucket', `the store at ${this.#o.endpoint} has no bucket "${this.#o.bucket}"`);
    }
    const sys = e.code ?? (err as { cause?: { code?: string } }).cause?.code;
    if (sys && /^(ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EPIPE|EADDRNOTAVAIL)$/.test(sys)) {
      return new StoreError('offload.endpoint', 'unreachable', `cannot reach the store at ${this.#o.endpoint}: ${sys}`);
    }
    if (name === 'TimeoutError' || name === 'RequestTimeout') return new StoreError('offload.endpoint', 'timeout', `the store at ${this.#o.endpoint} did not answer in time (${name})`);
    if (name === 'BadDigest' || name === 'InvalidDigest') return new VerifyMismatch(`the store says the bytes it received do not match their Content-MD5 (${name}): sent again`);
    return new StoreError('offload.endpoint', 'store_error', `the store at ${this.#o.endpoint} answered ${name}${status ? ` (HTTP ${status})` : ''}: ${(e.message ?? '').slice(0, 200)}`);
  }
}

async function md5OfRange(file: string, start: number, length: number): Promise<string> {
  const h = createHash('md5');
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(Math.min(1 << 20, Math.max(1, length)));
    let pos = start;
    let left = length;
    while (left > 0) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), pos);
      if (bytesRead === 0) throw new Error(`${file} is shorter than its index says (${start + length} bytes)`);
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
      left -= bytesRead;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

function contentTypeOf(key: string): string {
  if (key.endsWith('.ts')) return 'video/mp2t';
  if (key.endsWith('.json')) return 'application/json';
  return 'application/octet-stream';
}
