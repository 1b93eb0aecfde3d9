// The local control socket (`bwc-agent ctl ...`): newline-delimited JSON over a Unix socket in
// the state folder, mode 0600, so only the agent's own user (and root) can drive it.
//
// The socket is bound under a umask of 0177, so it is 0600 from the moment it exists. A chmod
// after listen() (as before) left it open to every local user between bind(2) and the chmod
// wherever the agent runs without systemd's UMask=0077 and the state folder is not 0700. A 0700
// folder of its own would also do, but would move the socket away from the path operators and
// `ctl` use; the umask needs no new path. The umask is process-wide, so it is restored as soon as
// listen() has bound (Node binds a socket path synchronously inside listen(); the callbacks are
// the latest point, a tick later, and anything created meanwhile only gets narrower modes).
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { errorMessage } from '../errors.ts';

export interface ControlRequest {
  verb: string;
  args?: unknown;
}

export type ControlResponse = { ok: true; result: unknown } | { ok: false; error: string };

export type ControlHandler = (args: unknown) => unknown;

const maxRequestBytes = 64 * 1024;

export class ControlServer {
  readonly #path: string;
  readonly #logger: Logger;
  readonly #handlers = new Map<string, ControlHandler>();
  #server: net.Server | undefined;

  constructor(options: { path: string; logger: Logger }) {
    this.#path = options.path;
    this.#logger = options.logger.child({ module: 'control' });
  }

  get path(): string {
    return this.#path;
  }

  handle(verb: string, handler: ControlHandler): void {
    this.#handlers.set(verb, handler);
  }

  async start(): Promise<void> {
    await this.#removeStaleSocket();
    const server = net.createServer((socket) => this.#serve(socket));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      const previousUmask = process.umask(0o177);
      let restored = false;
      const restoreUmask = () => {
        if (!restored) process.umask(previousUmask);
        restored = true;
      };
      const onError = (err: Error) => {
        restoreUmask();
        reject(err);
      };
      server.once('error', onError);
      try {
        server.listen(this.#path, () => {
          restoreUmask();
          server.off('error', onError);
          resolve();
        });
      } catch (err) {
        restoreUmask();
        throw err;
      }
    });
    // Already 0600 from the umask; kept for file systems that ignore the umask for sockets.
    chmodSync(this.#path, 0o600);
    this.#logger.info({ path: this.#path }, 'control socket listening');
  }

  async stop(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #serve(socket: net.Socket): void {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > maxRequestBytes) {
        this.#reply(socket, { ok: false, error: 'request too large' });
        return;
      }
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      const line = buffered.slice(0, newline);
      socket.pause();
      void this.#dispatch(line).then((response) => this.#reply(socket, response));
    });
  }

  async #dispatch(line: string): Promise<ControlResponse> {
    let request: ControlRequest;
    try {
      request = JSON.parse(line) as ControlRequest;
    } catch {
      return { ok: false, error: 'request is not JSON' };
    }
    const handler = typeof request.verb === 'string' ? this.#handlers.get(request.verb) : undefined;
    if (!handler) return { ok: false, error: `unknown verb "${String(request.verb)}" (known: ${[...this.#handlers.keys()].join(', ')})` };
    try {
      return { ok: true, result: await handler(request.args) };
    } catch (err) {
      this.#logger.warn({ verb: request.verb, err: errorMessage(err) }, 'control request failed');
      return { ok: false, error: errorMessage(err) };
    }
  }

  #reply(socket: net.Socket, response: ControlResponse): void {
    socket.end(`${JSON.stringify(response)}\n`);
  }

  /** A socket file left by a killed agent blocks listen(); one nobody answers on is removed. */
  async #removeStaleSocket(): Promise<void> {
    const alive = await new Promise<boolean>((resolve) => {
      const probe = net.connect(this.#path);
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (alive) throw new Error(`another agent is already running on ${this.#path}`);
    try {
      unlinkSync(this.#path);
    } catch {
      // nothing to remove
    }
  }
}

export class ControlClientError extends Error {}

/** Sends one request to a running agent and returns its result. */
export async function controlRequest(path: string, verb: string, args?: unknown, timeoutMs = 10_000): Promise<unknown> {
  const response = await new Promise<ControlResponse>((resolve, reject) => {
    const socket = net.connect(path);
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlClientError(`no answer from the agent on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify({ verb, args })}\n`));
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(data) as ControlResponse);
      } catch {
        reject(new ControlClientError(`unreadable answer from the agent: ${data.slice(0, 200)}`));
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why = err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? 'is the agent running?' : err.message;
      reject(new ControlClientError(`cannot reach the agent's control socket ${path} (${err.code ?? ''}): ${why}`));
    });
  });
  if (!response.ok) throw new ControlClientError(response.error);
  return response.result;
}
