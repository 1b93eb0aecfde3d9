// A resumable download: the bytes go to `<file>.partial` in the state folder, and a download that
// was cut (the network, a kill -9, a power cut) continues from the partial file's length with an
// HTTP Range request instead of starting again, which matters on a camera's LTE link. A server
// that ignores Range (200 instead of 206) or answers a different range restarts the file from 0.
// Node's fetch (undici) is used as it is: no library adds what this needs beyond Range handling.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';

export interface DownloadResult {
  bytes: number;
  /** Bytes already on disk from an earlier, cut attempt. */
  resumedFrom: number;
  sha256: string;
}

export interface DownloadOptions {
  url: string;
  /** The finished file; `<file>.partial` while it downloads. */
  file: string;
  maxBytes: number;
  signal?: AbortSignal;
  onProgress?: (received: number, total: number | undefined) => void;
}

export async function downloadResumable(o: DownloadOptions): Promise<DownloadResult> {
  const partial = `${o.file}.partial`;
  let offset = existsSync(partial) ? statSync(partial).size : 0;
  const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
  const response = await fetch(o.url, { headers, redirect: 'follow', ...(o.signal ? { signal: o.signal } : {}) });
  if (response.status === 416 && offset > 0) {
    // The partial file is as long as the resource or longer: start over rather than guess.
    await response.body?.cancel();
    rmSync(partial, { force: true });
    return downloadResumable(o);
  }
  if (response.status !== 200 && response.status !== 206) {
    await response.body?.cancel();
    throw new Error(`GET ${o.url} answered HTTP ${response.status}`);
  }
  if (response.status === 206) {
    const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
    if (!range || Number(range[1]) !== offset) {
      await response.body?.cancel();
      rmSync(partial, { force: true });
      throw new Error(`GET ${o.url} answered a range other than the one asked for (${response.headers.get('content-range') ?? 'no Content-Range'})`);
    }
  } else {
    offset = 0;
  }
  const resumedFrom = offset;
  const length = Number(response.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? offset + length : undefined;
  if (total !== undefined && total > o.maxBytes) {
    await response.body?.cancel();
    throw new Error(`the bundle is ${total} bytes, more than update.maxBundleBytes ${o.maxBytes}`);
  }
  const out = createWriteStream(partial, { flags: offset > 0 ? 'a' : 'w', mode: 0o600 });
  let received = offset;
  try {
    if (response.body) {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        received += chunk.byteLength;
        if (received > o.maxBytes) throw new Error(`the bundle is more than update.maxBundleBytes ${o.maxBytes} bytes`);
        if (!out.write(chunk)) await once(out, 'drain');
        o.onProgress?.(received, total);
      }
    }
  } finally {
    out.end();
    await once(out, 'close');
  }
  if (total !== undefined && received !== total) throw new Error(`the download ended after ${received} of ${total} bytes`);
  const sha256 = await hashFile(partial);
  renameSync(partial, o.file);
  return { bytes: received, resumedFrom, sha256 };
}

export async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
