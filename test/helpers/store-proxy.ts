// A loopback HTTP proxy in front of the object store, for the offload tests: it counts what
// the camera sends (each PUT of an object, complete and forwarded, per key), and can play a
// hostile or broken store: answer HEAD with a wrong ETag and SHA-256 (a store that lies about
// what it holds), hold a PUT's body so the test can kill the agent mid-upload, or refuse
// connections (the store down). Signing is end to end (the proxy forwards the bytes as they are).
import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ProxyMode = 'pass' | 'corrupt-head' | 'hold-put';

export interface PutRecord {
  key: string;
  bytes: number;
  status: number;
  part: boolean;
}

export class StoreProxy extends EventEmitter<{ put: [PutRecord]; held: [string]; head: [string] }> {
  mode: ProxyMode = 'pass';
  /** With 'hold-put': hold the PUTs of objects whose key matches; others pass. */
  holdKey: RegExp = /$^/;
  readonly puts: PutRecord[] = [];
  readonly heads: string[] = [];
  readonly #server: http.Server;
  readonly #upstream: URL;
  #port = 0;
  #host = '127.0.0.1';
  /** Request body bytes taken in, every request. */
  bytesIn = 0;

  private constructor(upstream: string) {
    super();
    this.#upstream = new URL(upstream);
    this.#server = http.createServer((req, res) => this.#handle(req, res));
  }

  /** `host`: where it listens (default loopback; the offload bench gives the veth's root side). */
  static async start(upstream: string, host = '127.0.0.1'): Promise<StoreProxy> {
    const p = new StoreProxy(upstream);
    p.#host = host;
    p.#server.listen(0, host);
    await once(p.#server, 'listening');
    p.#port = (p.#server.address() as AddressInfo).port;
    return p;
  }

  get endpoint(): string {
    return `http://${this.#host}:${this.#port}`;
  }

  /** Complete, accepted PUTs of whole objects (not parts) per key. */
  completePutsByKey(): Map<string, number> {
    const m = new Map<string, number>();
    for (const p of this.puts) if (!p.part && p.status >= 200 && p.status < 300) m.set(p.key, (m.get(p.key) ?? 0) + 1);
    return m;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((r) => this.#server.close(r));
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const key = decodeURIComponent(url.pathname).split('/').slice(2).join('/');
    const part = url.searchParams.has('partNumber');
    if (req.method === 'PUT' && this.mode === 'hold-put' && key && this.holdKey.test(key)) {
      // Take the body and never forward it: the camera's upload is cut where a kill -9 would cut it.
      req.once('data', () => this.emit('held', key));
      req.resume();
      return;
    }
    let bytes = 0;
    const up = http.request(
      { host: this.#upstream.hostname, port: this.#upstream.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        const headers = { ...upRes.headers };
        if (req.method === 'HEAD' && key) {
          this.heads.push(key);
          this.emit('head', key);
          if (this.mode === 'corrupt-head' && (upRes.statusCode ?? 0) < 300) {
            // A store that says it holds something else: another ETag, another SHA-256.
            headers.etag = '"00000000000000000000000000000000"';
            headers['x-amz-meta-sha256'] = 'f'.repeat(64);
          }
        }
        res.writeHead(upRes.statusCode ?? 502, headers);
        upRes.pipe(res);
        if (req.method === 'PUT' && key) {
          const record = { key, bytes, status: upRes.statusCode ?? 0, part };
          this.puts.push(record);
          this.emit('put', record);
        }
      },
    );
    up.on('error', () => res.destroy());
    req.on('data', (d: Buffer) => {
      bytes += d.length;
      this.bytesIn += d.length;
    });
    req.pipe(up);
  }
}
