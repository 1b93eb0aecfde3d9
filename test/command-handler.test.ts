// The whole path from an MQTT payload to the reply and the audit, in-process: the real verifier,
// replay cache and audit log over SQLite, a stand-in for the MQTT session. For any payload at all:
// nothing is accepted, nothing throws, exactly one reply with a code, exactly one audit entry,
// and the audit entry is committed before the reply goes out.
import os from 'node:os';
import path from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import fc from 'fast-check';
import pino from 'pino';
import t from 'tap';
import { AuditLog, type AuditMessage } from '../src/audit/audit-log.ts';
import { verifyAuditMessages } from '../src/audit/verify.ts';
import { CommandHandler } from '../src/command/command-handler.ts';
import { RequestChannel } from '../src/link/request-channel.ts';
import { ReplayCache } from '../src/command/replay-cache.ts';
import { TrustStore } from '../src/command/trust-store.ts';
import { defaultReasonCodes, rejectionCodes } from '../src/command/types.ts';
import { CommandVerifier } from '../src/command/verifier.ts';
import { loadOrCreateDeviceKey } from '../src/keys/device-key.ts';
import { openDatabase } from '../src/store/database.ts';
import { makeCommand, makeIssuer, trustStoreJwks } from './helpers/command-tokens.ts';

const logger = pino({ level: 'silent' });

t.test('payload -> verdict -> audit -> reply, for valid and arbitrary payloads', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'bwc-handler-'));
  const db = openDatabase({ stateDir });
  const deviceKey = await loadOrCreateDeviceKey(stateDir);
  const issuer = await makeIssuer();
  const published: AuditMessage[] = [];
  const audit = new AuditLog({ db, deviceId: 'cam-h', deviceKey, publish: (m) => published.push(m), logger });
  const verifier = new CommandVerifier({
    deviceId: 'cam-h',
    trustStore: TrustStore.fromJwks(trustStoreJwks([issuer]), []),
    policy: { allowedReasons: defaultReasonCodes, maxTokenLifetimeS: 300, maxStreamDurationS: 1800, clockSkewS: 30, maxConcurrentStreams: 2, unsynchronisedClock: 'accept', maxPayloadBytes: 65_536 },
    replayCache: new ReplayCache(db),
    clock: { nowMs: () => Date.now(), synchronised: () => false },
    activeStreams: () => 0,
    logger,
  });
  const replies: { body: Record<string, unknown>; auditSeqAtReply: number }[] = [];
  const session = Object.assign(new EventEmitter(), {
    connected: true,
    subscribe: async () => undefined,
    publish: (_topic: string, payload: string | Buffer, _o: unknown, cb?: (e?: Error) => void) => {
      replies.push({ body: JSON.parse(String(payload)) as Record<string, unknown>, auditSeqAtReply: audit.head().seq });
      cb?.();
    },
  });
  const acted: string[] = [];
  const handler = new CommandHandler({
    requests: new RequestChannel({ bus: session as never, topic: 'bwc/v1/cam-h/cmd', logger }),
    verifier,
    audit,
    executors: {
      'record.start': (c) => (acted.push(c.action), { ok: true }),
      'record.stop': (c) => (acted.push(c.action), { ok: true }),
      'stream.start': (c) => (acted.push(c.action), { ok: false, code: 'unavailable', message: 'no' }),
      'stream.stop': (c) => (acted.push(c.action), { ok: false, code: 'unknown_session', message: 'no' }),
      'agent.update': (c) => (acted.push(c.action), { ok: true }),
      'audit.fetch': (c) => (acted.push(c.action), { ok: true }),
    },
    logger,
  });
  handler.start();
  const deliver = async (payload: Buffer) => {
    const before = replies.length;
    session.emit('message', 'bwc/v1/cam-h/cmd', payload, { properties: { responseTopic: 'r', correlationData: Buffer.from('c') } });
    await handler.stop(); // waits for the queue
    handler.start();
    return replies.slice(before);
  };

  const good = makeCommand({ issuer, deviceId: 'cam-h', action: 'record.start' });
  const [accepted] = await deliver(good.payload);
  t.same(accepted?.body, { ok: true });
  t.same(acted, ['record.start']);
  const entry = published.filter((m) => m.kind === 'entry').at(-1);
  t.equal(entry?.kind === 'entry' && entry.entry.decision, 'accepted');
  t.ok(accepted!.auditSeqAtReply >= 1, 'audited before the reply');

  const codes = new Set<string>(rejectionCodes);
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.json().map((j) => new TextEncoder().encode(j)), fc.string().map((s) => new TextEncoder().encode(JSON.stringify({ token: s })))), async (bytes) => {
      const seqBefore = audit.head().seq;
      const out = await deliver(Buffer.from(bytes));
      if (out.length !== 1) return false;
      const reply = out[0]!;
      if (reply.body.ok !== false || !codes.has(String(reply.body.code))) return false;
      if (audit.head().seq !== seqBefore + 1) return false; // exactly one entry per command
      return reply.auditSeqAtReply === seqBefore + 1; // committed before the reply went out
    }),
    { numRuns: 300 },
  );
  t.same(acted, ['record.start'], 'nothing arbitrary was ever acted on');
  audit.stop();
  const verified = verifyAuditMessages(published);
  t.ok(verified.ok, `the published audit verifies (${verified.entries} entries)`);
  db.close();
});
