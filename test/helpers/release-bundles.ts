// Real release bundles for the update tests and bench: scripts/dist-host.sh's bundle of this
// build (made once, cached in .build-host/), and variants of it that differ in their version (and,
// for a release "built to exit at start", in dist/src/cli/main.js), also cached per build. Plus a
// loopback HTTP server for them that answers Range requests and can cut a download part way.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './agent-process.ts';

const run = promisify(execFile);
const buildDir = path.join(repoRoot, '.build-host');

export interface HostBundle {
  version: string;
  tarball: string;
  /** The unpacked bundle (.build-host/bwc-agent-<version>-linux-<arch>). */
  stage: string;
}

export async function hostBundle(): Promise<HostBundle> {
  const { stdout } = await run(path.join(repoRoot, 'scripts', 'dist-host.sh'), { maxBuffer: 1 << 20 });
  const tarball = stdout.trim().split('\n').at(-1)!;
  const name = path.basename(tarball, '.tar.gz');
  const version = /^bwc-agent-(\d+\.\d+\.\d+)-/.exec(name)![1]!;
  return { version, tarball, stage: path.join(buildDir, name) };
}

/** A releases folder as install.sh leaves it: `<version>` (here a link to the staged bundle), current, committed. */
export function installBase(releasesDir: string, base: HostBundle): void {
  mkdirSync(releasesDir, { recursive: true });
  symlinkSync(base.stage, path.join(releasesDir, base.version));
  for (const link of ['current', 'committed']) symlinkSync(base.version, path.join(releasesDir, link));
}

export interface VariantOptions {
  /** The release's main.js exits 1 at once: a release that cannot start. */
  exitAtStart?: boolean;
  /** The release's capture worker exits at once: it starts and connects, but never captures (never healthy). */
  noCapture?: boolean;
}

/** The host bundle with another version (a real bundle: the same node, addons and agent). */
export async function variantBundle(base: HostBundle, version: string, o: VariantOptions = {}): Promise<string> {
  const stamp = readFileSync(path.join(buildDir, 'BUILD_STAMP'), 'utf8').trim().slice(0, 16);
  const arch = path.basename(base.tarball).replace(/^bwc-agent-[\d.]+-linux-/, '').replace(/\.tar\.gz$/, '');
  const name = `bwc-agent-${version}-linux-${arch}`;
  const dir = path.join(buildDir, 'variants', `${stamp}${o.exitAtStart ? '-exit' : ''}${o.noCapture ? '-nocapture' : ''}`);
  const tarball = path.join(dir, `${name}.tar.gz`);
  if (existsSync(tarball)) return tarball;
  // Per process: test files running in parallel may make the same variant; the rename below is atomic.
  const work = path.join(dir, `work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  // Hard links: the variant shares the node binary and node_modules with the staged bundle; the
  // files that differ are unlinked first, so the staged bundle is not changed through them.
  await run('cp', ['-al', base.stage, path.join(work, name)]);
  const pkgFile = path.join(work, name, 'package.json');
  const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { version: string };
  pkg.version = version;
  unlinkSync(pkgFile);
  writeFileSync(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`);
  if (o.exitAtStart) {
    const main = path.join(work, name, 'dist', 'src', 'cli', 'main.js');
    unlinkSync(main);
    writeFileSync(main, "process.stderr.write('bwc-agent: this release is built to exit at start\\n');\nprocess.exit(1);\n");
  }
  if (o.noCapture) {
    const worker = path.join(work, name, 'dist', 'src', 'capture', 'worker.js');
    unlinkSync(worker);
    writeFileSync(worker, "process.stderr.write('capture worker: this release is built without a working capture\\n');\nprocess.exit(1);\n");
  }
  await run('sh', ['-c', `tar --sort=name --owner=0 --group=0 --numeric-owner -C "$1" -cf - "$2" | gzip -1 > "$3.$4.tmp"`, 'sh', work, name, tarball, String(process.pid)]);
  renameSync(`${tarball}.${process.pid}.tmp`, tarball);
  rmSync(work, { recursive: true, force: true });
  return tarball;
}

export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

export interface ReleaseServer {
  url(name: string): string;
  /** Bytes sent per path, over all requests. */
  sent: Map<string, number>;
  /** Requests per path, with their Range header. */
  requests: { path: string; range: string | undefined }[];
  /** The next GET of `name` is cut after this many bytes (the socket destroyed). */
  cutNext(name: string, afterBytes: number): void;
  /** The next GET of `name` stops sending after this many bytes and stays open; resolves once they are sent. */
  holdNext(name: string, afterBytes: number): Promise<void>;
  close(): Promise<void>;
}

/** Serves `files` (name -> path) on 127.0.0.1 with single-range support (bytes=N- and N-M). */
export async function startReleaseServer(files: Record<string, string>): Promise<ReleaseServer> {
  const sent = new Map<string, number>();
  const requests: ReleaseServer['requests'] = [];
  const cuts = new Map<string, number>();
  const holds = new Map<string, { afterBytes: number; reached: () => void }>();
  const server = http.createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').slice(1));
    const file = files[name];
    requests.push({ path: name, range: req.headers.range });
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const size = statSync(file).size;
    let start = 0;
    let end = size - 1;
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (req.headers.range !== undefined) {
      if (!m || Number(m[1]) >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
        return;
      }
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), size - 1);
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}`, 'accept-ranges': 'bytes' });
    } else {
      res.writeHead(200, { 'content-length': size, 'accept-ranges': 'bytes' });
    }
    const cut = cuts.get(name);
    cuts.delete(name);
    const hold = holds.get(name);
    holds.delete(name);
    let count = 0;
    const stream = createReadStream(file, { start, end });
    res.on('close', () => stream.destroy());
    stream.on('data', (chunk) => {
      const buf = chunk as Buffer;
      if (hold !== undefined && count + buf.length >= hold.afterBytes) {
        const part = buf.subarray(0, hold.afterBytes - count);
        count += part.length;
        sent.set(name, (sent.get(name) ?? 0) + part.length);
        stream.pause();
        res.write(part, () => hold.reached());
        return;
      }
      if (cut !== undefined && count + buf.length >= cut) {
        const part = buf.subarray(0, cut - count);
        count += part.length;
        sent.set(name, (sent.get(name) ?? 0) + part.length);
        stream.destroy();
        res.write(part, () => res.socket?.destroy());
        return;
      }
      count += buf.length;
      sent.set(name, (sent.get(name) ?? 0) + buf.length);
      if (!res.write(buf)) {
        stream.pause();
        res.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => res.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    sent,
    requests,
    cutNext: (name, afterBytes) => cuts.set(name, afterBytes),
    holdNext: (name, afterBytes) => new Promise<void>((reached) => holds.set(name, { afterBytes, reached })),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
