// An all-in-one OpenStack Swift (Debian 12's swift 2.30 packages) on loopback, reached through its
// s3api middleware: the real S3-compatible object store the offload tests upload to. One replica,
// one device in a temporary folder, tempauth (`test:tester` / `testing`), memcached on its own port.
// Started once per test file; `stop()` and `start()` keep the data folder (a store outage and its
// return), `dispose()` removes it. The procedure is ../shared/notes/swift-s3api.md.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freeLoopbackPort } from './gpsfake.ts';

export interface Swift {
  /** The S3 endpoint, http://127.0.0.1:PORT (path-style). */
  readonly endpoint: string;
  readonly port: number;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  /** Starts every server again on the same ports and data folder. */
  start(): Promise<void>;
  /** Stops every server (the data stays). */
  stop(): Promise<void>;
  dispose(): Promise<void>;
  readonly log: string;
}

const python = '/usr/bin/python3'; // a pyenv shim on PATH may lack swift

export function swiftInstalled(): boolean {
  return spawnSync(python, ['-c', 'import swift.common.ring'], { stdio: 'ignore' }).status === 0 && spawnSync('which', ['swift-proxy-server', 'memcached'], { stdio: 'ignore' }).status === 0;
}

export async function startSwift(): Promise<Swift> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bwc-swift-'));
  const etc = path.join(dir, 'etc');
  const srv = path.join(dir, 'srv');
  mkdirSync(etc);
  mkdirSync(path.join(srv, 'd1'), { recursive: true });
  mkdirSync(path.join(dir, 'recon'));
  const ports = { memcached: await freeLoopbackPort(), proxy: await freeLoopbackPort(), object: await freeLoopbackPort(), container: await freeLoopbackPort(), account: await freeLoopbackPort() };
  const user = os.userInfo().username;
  writeFileSync(path.join(etc, 'swift.conf'), ['[swift-hash]', 'swift_hash_path_prefix = bwcprefix', 'swift_hash_path_suffix = bwcsuffix', '', '[storage-policy:0]', 'name = gold', 'default = yes', ''].join('\n'));
  const defaults = (port: number) => [
    '[DEFAULT]',
    'bind_ip = 127.0.0.1',
    `bind_port = ${port}`,
    `devices = ${srv}`,
    'mount_check = false',
    `swift_dir = ${etc}`,
    `user = ${user}`,
    'workers = 0',
    'log_level = WARNING',
    `log_address = ${path.join(dir, 'no-syslog')}`,
    `recon_cache_path = ${path.join(dir, 'recon')}`,
    '',
  ];
  for (const kind of ['object', 'container', 'account'] as const) {
    writeFileSync(
      path.join(etc, `${kind}-server.conf`),
      [...defaults(ports[kind]), '[pipeline:main]', `pipeline = ${kind}-server`, '', `[app:${kind}-server]`, `use = egg:swift#${kind}`, '', `[${kind}-replicator]`, '', `[${kind}-updater]`, '', `[${kind}-auditor]`, ''].join('\n'),
    );
  }
  const filters = ['catch_errors', 'gatekeeper', 'healthcheck', 'proxy-logging', 'cache', 'listing_formats', 'bulk', 's3api', 'tempauth', 'copy', 'slo', 'dlo'];
  writeFileSync(
    path.join(etc, 'proxy-server.conf'),
    [
      ...defaults(ports.proxy),
      '[pipeline:main]',
      `pipeline = ${filters.join(' ')} proxy-logging proxy-server`,
      '',
      '[app:proxy-server]',
      'use = egg:swift#proxy',
      'account_autocreate = true',
      '',
      ...filters.flatMap((f) => [`[filter:${f}]`, `use = egg:swift#${f === 'proxy-logging' ? 'proxy_logging' : f === 'cache' ? 'memcache' : f}`, ...extraFilterLines(f, ports.memcached), '']),
    ].join('\n'),
  );
  // The rings in one python run: nine swift-ring-builder calls cost seconds more (the note).
  const ringScript = `
from swift.common.ring import RingBuilder
for kind, port in (('object', ${ports.object}), ('container', ${ports.container}), ('account', ${ports.account})):
    b = RingBuilder(4, 1, 1)
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': port, 'device': 'd1', 'weight': 100})
    b.rebalance()
    b.save('${etc}/%s.builder' % kind)
    b.get_ring().save('${etc}/%s.ring.gz' % kind)
`;
  const ring = spawnSync(python, ['-c', ringScript], { encoding: 'utf8' });
  if (ring.status !== 0) throw new Error(`building the swift rings failed: ${ring.stderr}`);

  let children: ChildProcess[] = [];
  let log = '';
  const spawnLogged = (cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const add = (d: Buffer) => {
      log = (log + d.toString()).slice(-20_000);
    };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    children.push(child);
    return child;
  };
  const swift: Swift = {
    endpoint: `http://127.0.0.1:${ports.proxy}`,
    port: ports.proxy,
    accessKeyId: 'test:tester',
    secretAccessKey: 'bwc-swift-secret-7f3e9a',
    region: 'us-east-1',
    get log() {
      return log;
    },
    async start() {
      if (children.length > 0) return;
      spawnLogged('memcached', ['-l', '127.0.0.1', '-p', String(ports.memcached), '-U', '0', '-u', user, '-m', '16']);
      for (const kind of ['object', 'container', 'account'] as const) spawnLogged(`swift-${kind}-server`, [path.join(etc, `${kind}-server.conf`)]);
      spawnLogged('swift-proxy-server', [path.join(etc, 'proxy-server.conf')]);
      const deadline = Date.now() + 60_000;
      for (const port of [ports.memcached, ports.object, ports.container, ports.account, ports.proxy]) await waitForPort(port, deadline, () => log);
      // The proxy answers before the backends are ready; the healthcheck and one account HEAD
      // through the backends tell when the store really takes requests.
      await waitForHealthy(`${swift.endpoint}/healthcheck`, deadline, () => log);
    },
    async stop() {
      const running = children;
      children = [];
      await Promise.all(
        running.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null || c.signalCode !== null) return resolve();
              c.once('exit', () => resolve());
              c.kill('SIGTERM');
            }),
        ),
      );
    },
    async dispose() {
      await swift.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await swift.start();
  return swift;
}

function extraFilterLines(filter: string, memcachedPort: number): string[] {
  if (filter === 'cache') return [`memcache_servers = 127.0.0.1:${memcachedPort}`];
  if (filter === 's3api') return ['location = us-east-1'];
  if (filter === 'tempauth') return ['user_test_tester = bwc-swift-secret-7f3e9a .admin', 'user_test_other = otherpass'];
  return [];
}

async function waitForPort(port: number, deadline: number, log: () => string): Promise<void> {
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
    if (Date.now() > deadline) throw new Error(`swift: nothing listened on ${port} in time; log:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForHealthy(url: string, deadline: number, log: () => string): Promise<void> {
  for (;;) {
    const ok = await fetch(url).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`swift: ${url} did not answer 200 in time; log:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// `node test/helpers/swift.ts DIR BUCKET`: the demo's store (scripts/demo.sh). Starts Swift, creates
// BUCKET, writes DIR/store.yaml (the agent's offload.credentialsFile), prints one line
// `swift: ENDPOINT` and runs until SIGTERM or SIGINT, then stops every server and removes its data.
if (process.argv[1] && path.resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  const [dir, bucket] = process.argv.slice(2);
  if (!dir || !bucket) {
    process.stderr.write('usage: node test/helpers/swift.ts DIR BUCKET\n');
    process.exit(2);
  }
  const swift = await startSwift();
  const stop = async () => {
    await swift.dispose();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  const { CreateBucketCommand, S3Client } = await import('@aws-sdk/client-s3');
  const client = new S3Client({
    endpoint: swift.endpoint,
    region: swift.region,
    forcePathStyle: true,
    credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  client.destroy();
  writeFileSync(path.join(dir, 'store.yaml'), `accessKeyId: "${swift.accessKeyId}"\nsecretAccessKey: "${swift.secretAccessKey}"\n`, { mode: 0o600 });
  process.stdout.write(`swift: ${swift.endpoint}\n`);
}
