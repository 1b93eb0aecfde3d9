// Threat: an issuer key that fleet ops hold for everyday work (a stream.start / stream.stop key,
// used by a busy console and so the likeliest to leak) is used to rewrite whom the camera obeys:
// it signs a `trust.update` that grants itself more actions (trust.update, record.stop, config
// changes) or adds a second key its holder controls. And a fleet-admin key, once it holds
// `trust.update`, tries to mint another admin key, or to extend its own reach, remotely. Both
// must be refused and audited with the key that tried; only a key holding `trust.update` may
// change the trust store, and keys holding it are changed only on the device
// (docs/protocol.md, "Trust-store rotation"). A key the fleet admin revokes is refused on its
// very next command, and stays refused after a restart.
//
// The real agent process on a real mosquitto; a real mqtt.js client (FleetClient) plays the
// fleet and the attacker; every wait is on a reply or an audit entry the agent publishes.
import t from 'tap';
import { makeCommand, makeIssuer, type Issuer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';
import { rejectionCodes, type CommandAction } from '../../src/command/types.ts';

const deviceId = 'cam-trust';
// A record.stop with nothing recording is answered "not recording": what counts here is that the
// verifier let the key through, i.e. the reply is no verifier refusal.
const passedVerifier = (r: { ok: boolean; code?: string }) => r.ok || !(rejectionCodes as readonly string[]).includes(r.code ?? '');
type Entry = { type: string; decision: string | null; code: string | null; action: string | null; detail: Record<string, unknown> };

t.test('trust.update: self-escalation refused, admin limits, revocation effective at once', async (t) => {
  const operator = await makeIssuer({ kid: 'ops-console-1', actions: ['stream.start', 'stream.stop'] });
  const admin = await makeIssuer({ kid: 'fleet-admin-1', actions: ['trust.update' as CommandAction] });
  const recorderKey = await makeIssuer({ kid: 'records-1', actions: ['record.start', 'record.stop'] });
  const rig = await startAgentOnBroker(t, { deviceId, issuers: [operator, admin, recorderKey] });
  const fleet = await FleetClient.connect(rig.broker.url);
  t.teardown(() => fleet.close());
  const audit = () => rig.recorder.on('audit').map((m) => m.json?.entry as Entry | undefined).filter((e): e is Entry => e !== undefined);
  const send = (issuer: Issuer, action: string, overrides: Record<string, unknown>) =>
    fleet.request(deviceId, makeCommand({ issuer, deviceId, action: action as CommandAction, overrides: { reason: 'fleet-maintenance', ...overrides } }).payload);

  await t.test('an operator key granting itself trust.update is refused and audited', async (t) => {
    const grown = { ...operator.publicJwk, bwc_actions: ['stream.start', 'stream.stop', 'trust.update', 'record.stop'] };
    const reply = await send(operator, 'trust.update', { trust: { add: [grown] } });
    t.equal(reply.ok, false);
    t.equal(reply.code, 'action_not_permitted', `refused: ${reply.message}`);
    await rig.recorder.waitFor(() => audit().some((e) => e.action === 'trust.update' && e.code === 'action_not_permitted'), 20_000, 'the refusal in the audit');
    const row = audit().find((e) => e.action === 'trust.update' && e.code === 'action_not_permitted')!;
    t.equal(row.detail.kid, operator.kid, 'the audit names the key that tried');
    // It did not work: the operator still cannot do what it tried to grant itself.
    const again = await send(operator, 'trust.update', { trust: { revoke: [admin.kid] } });
    t.equal(again.code, 'action_not_permitted');
  });

  await t.test('a trust change smuggled on another action is malformed, never acted on', async (t) => {
    const rogue = await makeIssuer({ kid: 'smuggled', actions: ['stream.start'] });
    const reply = await send(operator, 'stream.stop', { sid: 'x', trust: { add: [rogue.publicJwk] } });
    t.equal(reply.code, 'malformed');
    t.match(reply.message, /trust is only for trust\.update/);
  });

  await t.test('a fleet-admin key cannot mint or change admin keys remotely', async (t) => {
    const rogue = await makeIssuer({ kid: 'rogue-admin', actions: ['trust.update' as CommandAction] });
    const mint = await send(admin, 'trust.update', { trust: { add: [rogue.publicJwk] } });
    t.equal(mint.ok, false);
    t.equal(mint.code, 'trust_admin_local_only', `refused: ${mint.message}`);
    t.match(mint.message, /rogue-admin/);
    const selfRevoke = await send(admin, 'trust.update', { trust: { revoke: [admin.kid] } });
    t.equal(selfRevoke.code, 'trust_admin_local_only');
    const replace = await send(admin, 'trust.update', { trust: { add: [{ ...recorderKey.publicJwk, bwc_actions: ['record.start'] }] } });
    t.equal(replace.code, 'trust_update_invalid', `a kid already trusted is not silently replaced: ${replace.message}`);
    const privateKey = await send(admin, 'trust.update', { trust: { add: [{ ...rogue.publicJwk, kid: 'leaky', bwc_actions: ['record.start'], d: 'AAAA' }] } });
    t.equal(privateKey.code, 'trust_update_invalid');
    t.match(privateKey.message, /private key/);
  });

  await t.test('a revoked key is refused on its next command; the change is audited before and after', async (t) => {
    const before = await send(recorderKey, 'record.stop', {});
    t.ok(passedVerifier(before), `the key works before: ${before.code ?? 'ok'}`);
    const newcomer = await makeIssuer({ kid: 'records-2', actions: ['record.start', 'record.stop'] });
    const update = await send(admin, 'trust.update', { trust: { revoke: [recorderKey.kid], add: [newcomer.publicJwk] } });
    t.equal(update.ok, true, `accepted: ${update.message ?? ''}`);
    await rig.recorder.waitFor(() => audit().some((e) => e.type === 'trust.update'), 20_000, 'the trust.update audit entry');
    const row = audit().find((e) => e.type === 'trust.update')!;
    const before2 = row.detail.before as { keys: { kid: string; actions: string[] }[]; revoked: string[] };
    const after = row.detail.after as { keys: { kid: string; actions: string[] }[]; revoked: string[] };
    t.ok(before2.keys.some((k) => k.kid === recorderKey.kid) && !before2.revoked.includes(recorderKey.kid), 'before: the key trusted');
    t.ok(after.revoked.includes(recorderKey.kid), 'after: the key revoked');
    t.same(after.keys.find((k) => k.kid === 'records-2')?.actions, ['record.start', 'record.stop'], 'after: the new key with its actions');
    t.equal(row.detail.kid, admin.kid, 'signed by the admin key');

    const refused = await send(recorderKey, 'record.stop', {});
    t.equal(refused.ok, false);
    t.equal(refused.code, 'revoked_key', 'the revoked key is refused at once');
    const fresh = await send(newcomer, 'record.stop', {});
    t.ok(passedVerifier(fresh), `the added key works at once: ${fresh.code ?? 'ok'}`);
  });
});
