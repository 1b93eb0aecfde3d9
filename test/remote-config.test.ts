// The pieces of config.apply that need no agent process: the merge patch, the local-only key
// check, and what a start does with a change still on trial (src/fleet/config-start.ts): past its
// deadline, or after it has failed to start 3 times, it is reverted before anything runs on it.
import t from 'tap';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { tempStateDir } from './helpers/agent-process.ts';
import { writeAgentConfig } from './helpers/agent-config.ts';
import { loadStartConfig } from '../src/fleet/config-start.ts';
import { dropsTls, maxTrialAttempts, mergePatch, protectedKeysIn, RemoteConfigStore, remoteFileProblems } from '../src/fleet/remote-config.ts';
import { localOnlyKeys } from '../src/config/docs.ts';

t.test('mergePatch is RFC 7396', async (t) => {
  t.same(mergePatch({ a: { b: 1, c: 2 }, d: [1] }, { a: { b: null, e: 3 }, d: [2] }), { a: { c: 2, e: 3 }, d: [2] });
  t.same(mergePatch({ a: 1 }, { a: { x: null } }), { a: {} });
  const patch = Object.freeze({ a: Object.freeze({ b: 1 }) });
  const out = mergePatch({}, patch) as { a: { b: number } };
  out.a.b = 2;
  t.equal(patch.a.b, 1, 'the result shares nothing with the (frozen, signed) patch');
});

t.test('local-only keys: named, found below and above, unlockable', async (t) => {
  t.ok(localOnlyKeys().includes('stream.covert') && localOnlyKeys().includes('commands.trustStore') && localOnlyKeys().includes('capture.workerLauncher'));
  t.same(protectedKeysIn({ stream: { covert: true } }, []), ['stream.covert']);
  t.same(protectedKeysIn({ mqtt: { tls: { caFile: '/x' } } }, []), ['mqtt.tls.caFile']);
  t.same(protectedKeysIn({ stream: { covert: true } }, ['stream.covert']), [], 'unlocked by the local file');
  t.same(protectedKeysIn({ mqtt: { tls: { caFile: '/x' } } }, ['mqtt.tls']), [], 'a prefix unlocks what is below it');
  t.same(protectedKeysIn({ gps: { idleInterval: 5 }, commands: { reasons: ['a'] } }, []), []);
});

t.test('files named remotely stay in the config folder; TLS is not dropped', async (t) => {
  const doc = { stream: { ice: { servers: [{ urls: 't', credentialFile: '/etc/bwc-agent/turn.pw' }, { urls: 'u', credentialFile: '/var/lib/bwc-agent/device-key.private.pem' }], turnCaFile: '/etc/bwc-agent/../shadow' } } };
  const state = '/var/lib/bwc-agent';
  t.same(remoteFileProblems(doc, '/etc/bwc-agent/config.yaml', state), ['stream.ice.servers[1].credentialFile', 'stream.ice.turnCaFile']);
  t.same(remoteFileProblems({ stream: { ice: { turnCaFile: 'ca.pem' } } }, '/etc/bwc-agent/config.yaml', state), [], 'relative to the config folder');
  t.same(remoteFileProblems({ stream: { ice: { turnCaFile: '/etc/bwc-agent/ca.pem' } } }, undefined, state), ['stream.ice.turnCaFile'], 'no config file: none');
  t.same(remoteFileProblems({ stream: { ice: { turnCaFile: '/srv/x/keys/k.pem' } } }, '/srv/x/config.yaml', '/srv/x/keys'), ['stream.ice.turnCaFile'], 'never in the state folder, even beside the config file');
  t.equal(dropsTls('mqtts://b:8883', 'mqtt://b:1883'), true);
  t.equal(dropsTls('mqtts://b:8883', 'wss://b/mqtt'), false);
  t.equal(dropsTls('mqtt://b:1883', 'mqtt://c:1883'), false);
});

t.test('a start reverts a trial past its deadline, or after 3 failed starts', async (t) => {
  const stateDir = await tempStateDir();
  const file = await writeAgentConfig(stateDir, { gps: { idleInterval: 9 } });
  const load = { file, env: { BWC_STATE_DIR: stateDir }, cwd: stateDir, machineIdFile: '/nonexistent' };
  const store = new RemoteConfigStore(stateDir);
  const good = { version: 1, document: { gps: { idleInterval: 11 } }, appliedAt: 'x' };
  const trial = { version: 2, document: { gps: { idleInterval: 12 } }, appliedAt: 'y' };

  store.install(trial, { keepAsLastGood: good, trial: { version: 2, deadlineMs: Date.now() + 3_600_000, attempts: 0, fromVersion: 1 } });
  for (let attempt = 1; attempt <= maxTrialAttempts; attempt++) {
    const s = loadStartConfig(load);
    t.equal(s.config.gps.idleInterval, 12, `start ${attempt}: runs the trial`);
    t.equal(s.source.trial?.attempts, attempt);
    t.equal(s.source.revertNote, undefined);
  }
  const crashed = loadStartConfig(load);
  t.equal(crashed.config.gps.idleInterval, 11, 'start 4: back on last good');
  t.match(crashed.source.revertNote, { fromVersion: 2, toVersion: 1, reason: /failed to start 3 times/ });
  t.equal(crashed.source.trial, undefined);
  t.equal(loadStartConfig(load).source.revertNote, undefined, 'the note is handed over once');

  store.install(trial, { keepAsLastGood: good, trial: { version: 2, deadlineMs: Date.now() - 1, attempts: 0, fromVersion: 1 } });
  const late = loadStartConfig(load);
  t.equal(late.config.gps.idleInterval, 11, 'past the deadline: back on last good');
  t.match(late.source.revertNote, { reason: /healthyWithin/ });

  store.install(trial, { keepAsLastGood: null, trial: { version: 2, deadlineMs: Date.now() - 1, attempts: 0, fromVersion: 0 } });
  const none = loadStartConfig(load);
  t.equal(none.config.gps.idleInterval, 9, 'no last good: the local file alone');
  t.equal(none.source.active, undefined);
  t.notOk(existsSync(path.join(store.dir, 'active.json')));
  t.same(readdirSync(store.dir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left behind');
});
