import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { ServiceNotifier } from '../src/systemd/service-notifier.ts';

const fixture = fileURLToPath(new URL('./fixtures/service-notifier-child.ts', import.meta.url));

// Node cannot bind unix datagram sockets, so python plays systemd's side of NOTIFY_SOCKET: one JSON
// string per received datagram on stdout. The timeout keeps a forgotten listener from living on.
const LISTENER = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
print(json.dumps("LISTENING"), flush=True)
while True:
    try:
        data = s.recv(65536)
    except socket.timeout:
        sys.exit(3)
    print(json.dumps(data.decode()), flush=True)
`;

const silent = pino({ level: 'silent' });

function kill(p: ChildProcess): void {
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

t.test('does nothing without NOTIFY_SOCKET', async (t) => {
  let checked = 0;
  const n = new ServiceNotifier({
    logger: silent,
    isHealthy: () => {
      checked++;
      return { healthy: true };
    },
    env: { WATCHDOG_USEC: '200000' },
  });
  t.equal(n.active, false);
  n.ready('x');
  n.status('y');
  n.startWatchdog();
  n.stopWatchdog();
  n.stopping();
  t.equal(checked, 0, 'no watchdog without a notify socket');
});

t.test('leaves the watchdog to the process named by WATCHDOG_PID', async (t) => {
  let checked = 0;
  const dir = mkdtempSync(join(tmpdir(), 'bwc-notify-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const n = new ServiceNotifier({
    logger: silent,
    isHealthy: () => {
      checked++;
      return { healthy: true };
    },
    // Nothing listens there: sd_notify fails quietly, which is all this case needs.
    env: { NOTIFY_SOCKET: join(dir, 'none.sock'), WATCHDOG_USEC: '200000', WATCHDOG_PID: String(process.pid + 1) },
  });
  t.equal(n.active, true);
  n.startWatchdog();
  n.stopWatchdog();
  t.equal(checked, 0, 'startWatchdog did not start pinging');
});

t.test('talks sd_notify to a listening socket and gates pings on health', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bwc-notify-'));
  const socketPath = join(dir, 'notify.sock');
  const procs: ChildProcess[] = [];
  t.teardown(() => {
    for (const p of procs) kill(p);
    rmSync(dir, { recursive: true, force: true });
  });

  const listener = spawn('python3', ['-c', LISTENER, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(listener);
  const messages: string[] = [];
  let onMessage: (() => void) | undefined;
  createInterface({ input: listener.stdout! }).on('line', (line) => {
    messages.push(JSON.parse(line) as string);
    onMessage?.();
  });
  const waitFor = (pred: () => boolean, what: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (pred()) {
          onMessage = undefined;
          resolve();
        }
      };
      onMessage = check;
      listener.once('exit', (code) => reject(new Error(`listener exited (${code}) while waiting for ${what}`)));
      check();
    });

  await waitFor(() => messages.includes('LISTENING'), 'the listener to bind');

  const child = spawn(process.execPath, [fixture], {
    env: { ...process.env, NOTIFY_SOCKET: socketPath, WATCHDOG_USEC: '200000', WATCHDOG_PID: undefined },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  procs.push(child);
  const logs: { level: number; msg: string; reason?: string }[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => logs.push(JSON.parse(line)));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));

  // A crashed child would otherwise leave the wait hanging until tap's timeout.
  const crashed = exited.then((code) => {
    if (code !== 0) throw new Error(`child exited with ${code} before STOPPING=1`);
  });
  await Promise.race([waitFor(() => messages.includes('STOPPING=1'), 'STOPPING=1'), crashed.then(() => new Promise(() => {}))]);
  t.equal(await exited, 0, 'child exits by itself once stopped');

  const got = messages.slice(messages.indexOf('LISTENING') + 1);
  t.same(
    got,
    [
      'READY=1',
      'STATUS=phase=started\n',
      'WATCHDOG=1',
      'WATCHDOG=1',
      'WATCHDOG=1',
      // The fixture reports unhealthy for four checks here: no pings may arrive.
      'STATUS=phase=wedged\n',
      'STATUS=phase=recovered\n',
      'WATCHDOG=1',
      'WATCHDOG=1',
      'STOPPING=1',
    ],
    'datagrams in order',
  );

  const warns = logs.filter((l) => l.level === 40);
  t.equal(warns.length, 1, 'one warning for the one transition to unhealthy');
  t.equal(warns[0]?.reason, 'mqtt link wedged');
  t.ok(
    logs.some((l) => l.level === 30 && /healthy again/.test(l.msg)),
    'recovery logged',
  );
});
