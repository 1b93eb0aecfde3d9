// Evidence encrypted at rest with age (https://age-encryption.org/v1, X25519 recipients): a
// standard format a force decrypts with the `age` tool it already has, and the camera holds only
// the force's PUBLIC keys, so nothing on the camera decrypts its own footage. The age-encryption
// npm package does the format (header, X25519 stanzas, ChaCha20-Poly1305 in 64 KiB chunks); this
// file only streams files through it, so a segment is never held whole in memory, and the
// recorder runs segment encryption on a worker thread (EncryptionThread), off the event loop.
//
// Plaintext exists only in RAM: the capture worker writes the open segment into a tmpfs folder
// (recording.plaintextDir), and a closed segment is encrypted into the buffer folder on disk and
// the plaintext unlinked. checkPlaintextDir refuses a folder that is not tmpfs/ramfs (statfs
// f_type), since a segment written there would reach the SD card in the clear.
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { open, rename, stat, statfs, unlink, utimes } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Decrypter, Encrypter } from 'age-encryption';
import { errorMessage } from '../errors.ts';

/** Suffix of an encrypted file: `<name>.ts.age`, `track.json.age`. */
export const ageSuffix = '.age';

// X25519 recipients only: bech32 "age1" + 32 bytes (52 characters) + a 6-character checksum.
// The post-quantum and tag recipients age-encryption also takes are refused on purpose: the `age`
// tool in Debian 12 (1.1.1), which a force is told to decrypt with, reads X25519 only.
export const x25519RecipientPattern = /^age1[02-9ac-hj-np-z]{58}$/;

/** The problem with one recipient string, or undefined when it is a valid X25519 recipient. */
export function recipientProblem(recipient: string): string | undefined {
  if (!x25519RecipientPattern.test(recipient)) {
    return `expected an age X25519 public key ("age1" and 58 lower-case bech32 characters, as age-keygen prints), got ${JSON.stringify(recipient.length > 80 ? `${recipient.slice(0, 77)}...` : recipient)}`;
  }
  try {
    new Encrypter().addRecipient(recipient); // the bech32 checksum and the key length
  } catch (err) {
    return `not a valid age X25519 public key (${errorMessage(err)}): ${JSON.stringify(recipient)}`;
  }
  return undefined;
}

// statfs(2) f_type of the file systems that live in RAM only (linux/magic.h).
const TMPFS_MAGIC = 0x01021994;
const RAMFS_MAGIC = 0x858458f6;

/** Throws, naming the folder and its file system type, unless `dir` lives in RAM. */
export async function checkPlaintextDir(dir: string): Promise<void> {
  const fs = await statfs(dir);
  if (fs.type !== TMPFS_MAGIC && fs.type !== RAMFS_MAGIC) {
    throw new Error(`${dir} is not on tmpfs or ramfs (statfs f_type 0x${fs.type.toString(16)}): a segment written there would reach persistent storage in the clear`);
  }
}

/**
 * Encrypts `src` to `dest` for `recipients`, streamed: written under a temporary name, synced and
 * renamed, so `dest` is either whole or absent after a crash. The ciphertext keeps the
 * plaintext's modification time (crash recovery dates a segment by it). Does not remove `src`.
 */
export async function encryptFile(src: string, dest: string, recipients: readonly string[]): Promise<{ bytes: number }> {
  const e = new Encrypter();
  for (const r of recipients) e.addRecipient(r);
  const st = await stat(src);
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp`);
  try {
    // 64 KiB reads, age's chunk size: each step on the event loop encrypts one chunk (about a
    // millisecond on a Pi-class core) and then yields to the file read.
    const input = Readable.toWeb(createReadStream(src, { highWaterMark: 64 * 1024 })) as unknown as ReadableStream<Uint8Array>;
    const encrypted = await e.encrypt(input);
    await pipeline(Readable.fromWeb(encrypted as unknown as WebReadableStream<Uint8Array>), createWriteStream(tmp, { mode: 0o600, flush: true }));
    await utimes(tmp, st.atime, st.mtime);
    await rename(tmp, dest);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  return { bytes: (await stat(dest)).size };
}

type Reply = { id: number; ok: true; bytes: number } | { id: number; ok: false; message: string; code: string | null };

/**
 * encryptFile on a worker thread of its own (encryption-worker.ts), started on first use: the
 * recorder's queue hands it one segment at a time. The thread holds the event loop open only while
 * a segment is being encrypted; if it dies, what it was doing fails and the next call starts a new one.
 */
export class EncryptionThread {
  #worker: Worker | undefined;
  #nextId = 0;
  readonly #pending = new Map<number, { resolve: (r: { bytes: number }) => void; reject: (e: Error) => void }>();

  encrypt(src: string, dest: string, recipients: readonly string[]): Promise<{ bytes: number }> {
    const worker = this.#start();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, src, dest, recipients: [...recipients] });
    });
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    if (w) await w.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    // Under type stripping this module is the worker's sibling .ts; built, both are .js in dist/.
    const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
    const worker = new Worker(fileURLToPath(new URL(`./encryption-worker.${ext}`, import.meta.url)));
    worker.unref();
    worker.on('message', (r: Reply) => {
      const p = this.#pending.get(r.id);
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) worker.unref();
      if (!p) return;
      if (r.ok) p.resolve({ bytes: r.bytes });
      else p.reject(Object.assign(new Error(r.message), r.code ? { code: r.code } : {}));
    });
    const fail = (err: Error) => {
      if (this.#worker === worker) this.#worker = undefined;
      for (const p of this.#pending.values()) p.reject(err);
      this.#pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the encryption thread exited (code ${code})`)));
    this.#worker = worker;
    return worker;
  }
}

/** Encrypts a small in-memory text (the GPS track) to `dest`, atomically. */
export async function encryptTextFile(text: string, dest: string, recipients: readonly string[]): Promise<void> {
  const e = new Encrypter();
  for (const r of recipients) e.addRecipient(r);
  const data = await e.encrypt(text);
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.tmp`);
  const fd = await open(tmp, 'w', 0o600);
  try {
    await fd.writeFile(data);
    await fd.sync();
  } finally {
    await fd.close();
  }
  await rename(tmp, dest);
}

/**
 * The identities (`AGE-SECRET-KEY-1...`) in an age identity file, as age-keygen writes it: one
 * per line, `#` comments and blank lines ignored. Throws naming the file when it holds none.
 */
export function readIdentityFile(file: string): string[] {
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const ids = lines.filter((l) => /^AGE-SECRET-KEY-(PQ-)?1[02-9AC-HJ-NP-Z]+$/.test(l));
  if (ids.length === 0 || ids.length !== lines.length) throw new Error(`${file}: not an age identity file (expected AGE-SECRET-KEY-1... lines, as age-keygen writes)`);
  return ids;
}

export function decrypterFor(identities: readonly string[]): Decrypter {
  const d = new Decrypter();
  for (const id of identities) d.addIdentity(id);
  return d;
}

/**
 * Decrypts `src` and hands the plaintext, chunk by chunk, to `sink` (a Writable, e.g. a file or a
 * content check). Rejects with age's reason on a bad header, a wrong key or a truncated or
 * altered file (each chunk is authenticated).
 */
export async function decryptFileTo(src: string, identities: readonly string[], sink: Writable, through?: Transform): Promise<void> {
  const input = Readable.toWeb(createReadStream(src, { highWaterMark: 256 * 1024 })) as unknown as ReadableStream<Uint8Array>;
  const plain = Readable.fromWeb((await decrypterFor(identities).decrypt(input)) as unknown as WebReadableStream<Uint8Array>);
  if (through) await pipeline(plain, through, sink);
  else await pipeline(plain, sink);
}

/** Decrypts a small file (the track) whole. */
export async function decryptSmallFile(src: string, identities: readonly string[]): Promise<string> {
  return decrypterFor(identities).decrypt(new Uint8Array(readFileSync(src)), 'text');
}

/**
 * A streaming check that a plaintext is an MPEG-TS of H.264 video with a keyframe: every packet
 * starts with the 0x47 sync byte at 188-byte steps, and some packet's payload (per PID, headers and
 * adaptation fields removed, so a start code split across packets is still seen) holds an IDR
 * slice (NAL type 5). Hand-written because it is twenty lines and needs no GStreamer; export and
 * the tests decode the files with GStreamer as well.
 */
export class TsVideoCheck extends Writable {
  packets = 0;
  idr = false;
  syncError: string | undefined;
  #rest = Buffer.alloc(0);
  #tails = new Map<number, Buffer>();

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    let buf = this.#rest.length ? Buffer.concat([this.#rest, chunk]) : chunk;
    let off = 0;
    for (; off + 188 <= buf.length; off += 188) {
      if (buf[off] !== 0x47) {
        this.syncError ??= `no MPEG-TS sync byte at offset ${this.packets * 188}`;
        break;
      }
      this.packets += 1;
      if (!this.idr) this.#scan(buf.subarray(off, off + 188));
    }
    this.#rest = this.syncError ? Buffer.alloc(0) : Buffer.from(buf.subarray(off));
    buf = Buffer.alloc(0);
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    if (this.#rest.length > 0) this.syncError ??= `${this.#rest.length} bytes after the last whole 188-byte packet`;
    done();
  }

  #scan(pkt: Buffer): void {
    const pid = ((pkt[1]! & 0x1f) << 8) | pkt[2]!;
    const afc = (pkt[3]! >> 4) & 0x3;
    if ((afc & 1) === 0) return; // no payload
    const start = afc === 3 ? 5 + pkt[4]! : 4;
    if (start >= 188) return;
    const data = Buffer.concat([this.#tails.get(pid) ?? Buffer.alloc(0), pkt.subarray(start)]);
    for (let i = 0; i + 3 < data.length; i += 1) {
      if (data[i] === 0 && data[i + 1] === 0 && data[i + 2] === 1 && (data[i + 3]! & 0x9f) === 0x05) {
        this.idr = true;
        return;
      }
    }
    this.#tails.set(pid, Buffer.from(data.subarray(Math.max(0, data.length - 3))));
  }

  /** Why the plaintext is not playable video, or undefined when it is. */
  problem(): string | undefined {
    if (this.syncError) return `the plaintext is not MPEG-TS: ${this.syncError}`;
    if (this.packets === 0) return 'the plaintext is empty';
    if (!this.idr) return `the plaintext is MPEG-TS (${this.packets} packets) but holds no H.264 keyframe (IDR)`;
    return undefined;
  }
}
