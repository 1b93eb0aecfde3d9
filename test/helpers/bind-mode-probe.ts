// Loaded into an agent under test with NODE_OPTIONS=--import: reports on stderr the mode a Unix
// socket file has at the moment listen() returns. Node binds a socket path synchronously inside
// listen(), so this is the mode the socket had before any later JavaScript (a chmod, say) could
// narrow it: a test can tell "created owner-only" from "created open, then closed a moment later".
import { statSync } from 'node:fs';
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (this: net.Server, ...args: unknown[]): net.Server {
  const result = (listen as (...a: unknown[]) => net.Server).apply(this, args);
  const first = args[0];
  const socketPath = typeof first === 'string' ? first : typeof first === 'object' && first !== null ? (first as { path?: unknown }).path : undefined;
  if (typeof socketPath === 'string') {
    const st = statSync(socketPath, { throwIfNoEntry: false });
    const mode = st ? (st.mode & 0o777).toString(8).padStart(4, '0') : 'absent';
    process.stderr.write(`bind-mode-probe: ${socketPath} mode ${mode} when listen() returned\n`);
  }
  return result;
} as typeof listen;
