import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig, resolveStateDir } from '../src/config/load.ts';
import { configKeys, renderConfigDoc } from '../src/config/docs.ts';
import { agentBin, repoRoot, spawnAgent } from './helpers/agent-process.ts';

const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-config-'));
const machineIdFile = path.join(dir, 'machine-id');
await writeFile(machineIdFile, '0123456789abcdef0123456789abcdef\n');
const base = { env: {}, cwd: dir, machineIdFile };

async function file(name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error('expected a ConfigError');
}

t.test('embedded defaults', async (t) => {
  const c = loadConfig(base);
  t.equal(c.deviceId, 'bwc-0123456789ab', 'device id from /etc/machine-id');
  t.equal(c.stateDir, path.join(dir, 'var'));
  t.equal(c.mqtt.url, 'mqtt://127.0.0.1:1883');
  t.equal(c.gps.recordingInterval, 10);
  t.equal(c.gps.idleInterval, 60);
  t.equal(c.log.level, 'info');
  t.equal(loadConfig({ ...base, env: { STATE_DIRECTORY: '/var/lib/bwc-agent' } }).stateDir, '/var/lib/bwc-agent', 'systemd StateDirectory');
});

t.test('a YAML file sets values, the environment overrides them', async (t) => {
  const f = await file('ok.yaml', 'deviceId: cam-7\nmqtt:\n  url: mqtts://broker.example:8883\n  maxInflight: 50\ngps:\n  idleInterval: 30\n');
  const c = loadConfig({ ...base, file: f });
  t.equal(c.deviceId, 'cam-7');
  t.equal(c.mqtt.url, 'mqtts://broker.example:8883');
  t.equal(c.mqtt.maxInflight, 50);
  t.equal(c.gps.idleInterval, 30);
  t.equal(c.gps.recordingInterval, 10, 'untouched keys keep defaults');
  const o = loadConfig({ ...base, file: f, env: { BWC_DEVICE_ID: 'cam-8', BWC_MQTT_URL: 'mqtt://10.0.0.1:1883', BWC_GPSD: 'gps.local:2947', BWC_LOG_LEVEL: 'debug', BWC_STATE_DIR: 'st' } });
  t.equal(o.deviceId, 'cam-8');
  t.equal(o.mqtt.url, 'mqtt://10.0.0.1:1883');
  t.equal(o.gps.gpsd, 'gps.local:2947');
  t.equal(o.log.level, 'debug');
  t.equal(o.stateDir, path.join(dir, 'st'));
  const json = await file('ok.json', '{"deviceId": "cam-9"}');
  t.equal(loadConfig({ ...base, file: json }).deviceId, 'cam-9', 'JSON is valid YAML');
});

t.test('bad values name the key, the value and what was expected', async (t) => {
  const f = await file('bad.yaml', 'mqtt:\n  reconnectMaxDelay: fast\n  keepalive: 1\ngps:\n  recordingInterval: 0\nlog:\n  level: loud\n');
  const problems = problemsOf(() => loadConfig({ ...base, file: f }));
  t.equal(problems.length, 4);
  t.match(problems.join('\n'), /mqtt\.reconnectMaxDelay: expected a number, got "fast"/);
  t.match(problems.join('\n'), /mqtt\.keepalive: expected a number >= 5, got 1/);
  t.match(problems.join('\n'), /gps\.recordingInterval: expected a number >= 1, got 0/);
  t.match(problems.join('\n'), /log\.level: expected one of "trace", .*got "loud"/);
  t.ok(problems.every((p) => p.startsWith(f)), 'each problem names the file');
});

t.test('unknown keys are refused (a typo is not silently ignored)', async (t) => {
  const f = await file('typo.yaml', 'mqtt:\n  ulr: mqtt://x:1883\n');
  t.match(problemsOf(() => loadConfig({ ...base, file: f })).join('\n'), /unknown setting "mqtt\.ulr"/);
});

t.test('broken files', async (t) => {
  const yaml = await file('broken.yaml', 'mqtt:\n  url: [unclosed\n');
  t.match(problemsOf(() => loadConfig({ ...base, file: yaml })).join('\n'), /not valid YAML/);
  const scalar = await file('scalar.yaml', 'just a string\n');
  t.match(problemsOf(() => loadConfig({ ...base, file: scalar })).join('\n'), /expected a mapping of settings/);
  t.match(problemsOf(() => loadConfig({ ...base, file: path.join(dir, 'missing.yaml') })).join('\n'), /cannot read the config file \(ENOENT\)/);
  const dup = await file('dup.yaml', 'deviceId: a\ndeviceId: b\n');
  t.match(problemsOf(() => loadConfig({ ...base, file: dup })).join('\n'), /not valid YAML/);
  const empty = await file('empty.yaml', '# nothing set\n');
  t.equal(loadConfig({ ...base, file: empty }).mqtt.url, 'mqtt://127.0.0.1:1883', 'an empty file means defaults');
});

t.test('bad environment values name the variable and the key', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['BWC_GPSD', 'nowhere', /BWC_GPSD \(gps\.gpsd\): expected host:port, e\.g\. 127\.0\.0\.1:2947, got "nowhere"/],
    ['BWC_MQTT_URL', 'http://x', /BWC_MQTT_URL \(mqtt\.url\): expected a broker URL/],
    ['BWC_DEVICE_ID', 'cam/1', /BWC_DEVICE_ID \(deviceId\): expected a device id/],
    ['BWC_LOG_LEVEL', 'chatty', /BWC_LOG_LEVEL \(log\.level\): expected one of/],
  ];
  for (const [variable, value, pattern] of cases) {
    t.match(problemsOf(() => loadConfig({ ...base, env: { [variable]: value } })).join('\n'), pattern, variable);
  }
});

t.test('ctl finds the state folder like the agent', async (t) => {
  t.equal(resolveStateDir('/x', { BWC_STATE_DIR: '/y' }, '/'), '/x');
  t.equal(resolveStateDir(undefined, { BWC_STATE_DIR: '/y', STATE_DIRECTORY: '/z' }, '/'), '/y');
  t.equal(resolveStateDir(undefined, { STATE_DIRECTORY: '/z' }, '/'), '/z');
  t.equal(resolveStateDir(undefined, {}, '/w'), '/w/var');
});

t.test('docs/configuration.md is generated from the schema and in step with it', async (t) => {
  const doc = await readFile(path.join(repoRoot, 'docs', 'configuration.md'), 'utf8');
  t.equal(doc, renderConfigDoc(), 'run `make docs` after changing src/config/schema.ts');
  for (const key of configKeys()) t.ok(doc.includes(`| \`${key}\` |`), `documents ${key}`);
});

t.test('the daemon exits 2 naming the key for a broken file and a bad environment value', async (t) => {
  const f = await file('cli-bad.yaml', 'outbox:\n  maxMessages: ten\n');
  const a = spawnAgent(['run', '--config', f], { BWC_STATE_DIR: path.join(dir, 'cli-state') });
  const ra = await a.exited;
  t.equal(ra.code, 2, 'exit code 2');
  t.match(a.output, /outbox\.maxMessages: expected a number, got "ten"/);
  const b = spawnAgent(['run'], { BWC_STATE_DIR: path.join(dir, 'cli-state'), BWC_GPSD: 'localhost' });
  t.equal((await b.exited).code, 2);
  t.match(b.output, /BWC_GPSD \(gps\.gpsd\)/);
  const c = spawnAgent(['run', '--bogus'], {});
  t.equal((await c.exited).code, 2, 'unknown option is a usage error');
  t.match(c.output, /Unknown option '--bogus'/);
  t.ok(agentBin.endsWith('bin/bwc-agent'));
});

t.test('the shipped example config (systemd/config.example.yaml) is valid', async (t) => {
  const c = loadConfig({ ...base, file: path.join(repoRoot, 'systemd', 'config.example.yaml') });
  t.match(c.mqtt.url, /^mqtts:/);
});
