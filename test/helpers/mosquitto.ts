// A real mosquitto broker per test, on a free loopback port, with persistence so a stopped and
// restarted broker keeps its sessions (as a production broker does across a restart).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freeLoopbackPort } from './gpsfake.ts';

export interface Broker {
  port: number;
  url: string;
  /** Starts the broker again on the same port and persistence file. */
  start(): Promise<void>;
  /** SIGTERM: mosquitto saves its sessions and exits. */
  stop(): Promise<void>;
  /** Stops and removes its files. */
  dispose(): Promise<void>;
  readonly log: string;
}

export interface BrokerOptions {
  /** mosquitto's max_inflight_messages, advertised as MQTT 5 Receive Maximum (default 20). */
  maxInflight?: number;
  /** Lines added to the listener (TLS settings, for example). */
  listenerLines?: string[];
}

export async function startBroker(options: BrokerOptions = {}): Promise<Broker> {
  const port = await freeLoopbackPort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-mosquitto-'));
  const conf = path.join(dir, 'mosquitto.conf');
  await writeFile(
    conf,
    [
      // Run as ourselves: started as root, mosquitto would otherwise switch to its own user and
      // could not read our key files or write its persistence file in our temp folder.
      `user ${os.userInfo().username}`,
      `listener ${port} 127.0.0.1`,
      ...(options.listenerLines ?? []),
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${dir}/`,
      'max_queued_messages 1000000',
      'set_tcp_nodelay true',
      `max_inflight_messages ${options.maxInflight ?? 20}`,
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  let log = '';
  const broker: Broker = {
    port,
    url: `${options.listenerLines?.some((l) => l.startsWith('certfile')) ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    get log() {
      return log;
    },
    async start() {
      if (child) return;
      const proc = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      child = proc;
      proc.stderr?.setEncoding('utf8').on('data', (d: string) => {
        log = (log + d).slice(-20_000);
      });
      proc.once('exit', () => {
        if (child === proc) child = undefined;
      });
      await waitForPort(port, 10_000);
    },
    async stop() {
      const proc = child;
      if (!proc) return;
      const exited = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill('SIGTERM');
      await exited;
      child = undefined;
    },
    async dispose() {
      await broker.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await broker.start();
  return broker;
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`mosquitto did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
