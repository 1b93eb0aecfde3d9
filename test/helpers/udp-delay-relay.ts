// The project's small userspace UDP relay, for delay on a link (this kernel has no netem):
// datagrams to {address, port} are forwarded to a target after a one-way delay, each client
// source address getting its own upstream socket so the target's replies go back to that client
// after the other direction's delay. Optional random loss per direction. Order is preserved:
// each direction is a FIFO with one timer for its head, and a packet is never due before the one
// queued ahead of it, even when the delay is lowered at run time. A packet is never sent early:
// due times are checked against performance.now() when the timer fires.
import dgram from 'node:dgram';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface Endpoint {
  address: string;
  port: number;
}

export type Direction = 'upstream' | 'downstream';

export interface UdpDelayRelayOptions {
  /** Where clients send (port 0: pick a free one). */
  listen: Endpoint;
  /** Where their datagrams go. */
  target: Endpoint;
  /** One-way delay client→target (ms). */
  upstreamDelayMs?: number;
  /** One-way delay target→client (ms). */
  downstreamDelayMs?: number;
  /** Drop probability client→target, 0..1. */
  upstreamLoss?: number;
  /** Drop probability target→client, 0..1. */
  downstreamLoss?: number;
  /** Local address for the upstream sockets (default: chosen by the kernel from the route to the target). */
  upstreamBindAddress?: string;
  /** Most datagrams queued per direction before new ones are dropped (default 10000). */
  maxQueue?: number;
  /** Most distinct clients (default 256); datagrams from more are dropped. */
  maxClients?: number;
}

export interface DirectionCounters {
  /** Datagrams that reached the relay in this direction (forwarded + dropped + queued). */
  received: number;
  /** Datagrams sent on after their delay. */
  forwarded: number;
  /** Dropped by the loss setting or a full queue. */
  dropped: number;
  /** Waiting for their time. */
  queued: number;
  bytes: number;
}

interface Queued {
  due: number;
  data: Buffer;
  socket: dgram.Socket;
  port: number;
  address: string;
}

class DelayLine {
  delayMs = 0;
  loss = 0;
  received = 0;
  forwarded = 0;
  dropped = 0;
  bytes = 0;
  private queue: Queued[] = [];
  private head = 0;
  private lastDue = 0;
  private timer: NodeJS.Timeout | undefined;

  private readonly maxQueue: number;

  constructor(maxQueue: number) {
    this.maxQueue = maxQueue;
  }

  get length(): number {
    return this.queue.length - this.head;
  }

  push(data: Buffer, socket: dgram.Socket, port: number, address: string): void {
    this.received++;
    if (this.loss > 0 && Math.random() < this.loss) {
      this.dropped++;
      return;
    }
    if (this.length >= this.maxQueue) {
      this.dropped++;
      return;
    }
    const due = Math.max(performance.now() + this.delayMs, this.lastDue);
    this.lastDue = due;
    this.queue.push({ due, data, socket, port, address });
    if (this.length === 1) this.arm();
  }

  private arm(): void {
    if (this.timer !== undefined) return;
    const next = this.queue[this.head];
    if (!next) return;
    const wait = Math.max(0, Math.ceil(next.due - performance.now()));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
  }

  private flush(): void {
    const now = performance.now();
    for (;;) {
      const item = this.queue[this.head];
      if (!item || item.due > now) break;
      this.queue[this.head] = undefined as unknown as Queued;
      this.head++;
      this.forwarded++;
      this.bytes += item.data.length;
      try {
        item.socket.send(item.data, item.port, item.address);
      } catch {
        // socket closed meanwhile (client expired or relay stopping)
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.arm();
  }

  clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
    this.head = 0;
  }

  counters(): DirectionCounters {
    return { received: this.received, forwarded: this.forwarded, dropped: this.dropped, queued: this.length, bytes: this.bytes };
  }
}

function checkLoss(p: number): number {
  if (!(p >= 0 && p <= 1)) throw new Error(`loss must be a probability 0..1, got ${p}`);
  return p;
}

function checkDelay(ms: number): number {
  if (!(ms >= 0 && Number.isFinite(ms))) throw new Error(`delay must be ≥ 0 ms, got ${ms}`);
  return ms;
}

export class UdpDelayRelay {
  private readonly options: UdpDelayRelayOptions;
  private socket: dgram.Socket | undefined;
  private readonly clients = new Map<string, dgram.Socket>();
  private readonly up: DelayLine;
  private readonly down: DelayLine;
  private boundPort = 0;

  constructor(options: UdpDelayRelayOptions) {
    this.options = options;
    const maxQueue = options.maxQueue ?? 10_000;
    this.up = new DelayLine(maxQueue);
    this.down = new DelayLine(maxQueue);
    this.up.delayMs = checkDelay(options.upstreamDelayMs ?? 0);
    this.down.delayMs = checkDelay(options.downstreamDelayMs ?? 0);
    this.up.loss = checkLoss(options.upstreamLoss ?? 0);
    this.down.loss = checkLoss(options.downstreamLoss ?? 0);
  }

  /** Where clients send to; valid after start(). */
  get address(): Endpoint {
    return { address: this.options.listen.address, port: this.boundPort };
  }

  get clientCount(): number {
    return this.clients.size;
  }

  async start(): Promise<Endpoint> {
    if (this.socket) return this.address;
    const family = net.isIPv6(this.options.listen.address) ? 'udp6' : 'udp4';
    const socket = dgram.createSocket(family);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(this.options.listen.port, this.options.listen.address, () => {
        socket.removeListener('error', reject);
        resolve();
      });
    });
    socket.on('error', () => {
      // ICMP errors surface here on some sends; a relay carries on.
    });
    socket.on('message', (data, rinfo) => this.fromClient(data, rinfo));
    this.socket = socket;
    this.boundPort = socket.address().port;
    return this.address;
  }

  private fromClient(data: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${rinfo.address}|${rinfo.port}`;
    let upstream = this.clients.get(key);
    if (!upstream) {
      if (this.clients.size >= (this.options.maxClients ?? 256)) {
        this.up.received++;
        this.up.dropped++;
        return;
      }
      const listen = this.socket;
      if (!listen) return;
      const target = this.options.target;
      const up = dgram.createSocket(net.isIPv6(target.address) ? 'udp6' : 'udp4');
      up.on('error', () => {
        // e.g. ECONNREFUSED from an ICMP port unreachable: the target is not there (yet)
      });
      up.on('message', (reply, from) => {
        if (from.address !== target.address || from.port !== target.port) return;
        this.down.push(reply, listen, rinfo.port, rinfo.address);
      });
      // bind() happens implicitly on first send when no bind address is given.
      if (this.options.upstreamBindAddress !== undefined) up.bind(0, this.options.upstreamBindAddress);
      this.clients.set(key, up);
      upstream = up;
    }
    this.up.push(data, upstream, this.options.target.port, this.options.target.address);
  }

  /** Changes one or both one-way delays (ms) for datagrams arriving from now on. */
  setDelay(delay: number | { upstreamMs?: number; downstreamMs?: number }): void {
    if (typeof delay === 'number') {
      this.up.delayMs = checkDelay(delay);
      this.down.delayMs = checkDelay(delay);
      return;
    }
    if (delay.upstreamMs !== undefined) this.up.delayMs = checkDelay(delay.upstreamMs);
    if (delay.downstreamMs !== undefined) this.down.delayMs = checkDelay(delay.downstreamMs);
  }

  /** Changes one or both drop probabilities (0..1). */
  setLoss(loss: number | { upstream?: number; downstream?: number }): void {
    if (typeof loss === 'number') {
      this.up.loss = checkLoss(loss);
      this.down.loss = checkLoss(loss);
      return;
    }
    if (loss.upstream !== undefined) this.up.loss = checkLoss(loss.upstream);
    if (loss.downstream !== undefined) this.down.loss = checkLoss(loss.downstream);
  }

  get delay(): { upstreamMs: number; downstreamMs: number } {
    return { upstreamMs: this.up.delayMs, downstreamMs: this.down.delayMs };
  }

  counters(): { upstream: DirectionCounters; downstream: DirectionCounters; clients: number } {
    return { upstream: this.up.counters(), downstream: this.down.counters(), clients: this.clients.size };
  }

  /** Closes every socket and timer; queued datagrams are discarded. Idempotent. */
  async stop(): Promise<void> {
    this.up.clear();
    this.down.clear();
    const sockets = [...this.clients.values()];
    this.clients.clear();
    if (this.socket) sockets.push(this.socket);
    this.socket = undefined;
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            try {
              s.close(() => resolve());
            } catch {
              resolve(); // already closed
            }
          }),
      ),
    );
  }
}
