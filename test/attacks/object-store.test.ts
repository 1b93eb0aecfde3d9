// Threat: a hostile or broken object store (or whoever sits between camera and store) answers
// that it holds the evidence when it does not hold the same bytes: a HEAD after the PUT comes back
// with another ETag and another SHA-256. If the camera took the store's word (the 200 of the
// PUT) and deleted its copy under the retention policy, the only good copy of the evidence would
// be gone. The defence: delete locally only after a HEAD shows our size, MD5 ETag and SHA-256;
// a mismatch is audited, the object sent again, and nothing is deleted. The real agent process
// uploads through a loopback proxy in front of a real Swift that rewrites the HEAD answers.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { tempStateDir } from '../helpers/agent-process.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';
import { auditEntries, createBucket, offloadConfig, recordSegments, waitAudit, waitOffloadState, writeCredentials } from '../helpers/offload-rig.ts';
import { StoreProxy } from '../helpers/store-proxy.ts';
import { startSwift, swiftInstalled } from '../helpers/swift.ts';

t.setTimeout(300_000);
t.test('a store answering a wrong checksum: retried, audited, never followed by a local delete', { skip: swiftInstalled() ? false : 'OpenStack Swift is not installed' }, async (t) => {
  const swift = await startSwift();
  t.teardown(() => swift.dispose());
  await createBucket(swift, 'evidence');
  const creds = await writeCredentials(path.join(await tempStateDir('bwc-creds-'), 'store.yaml'), swift);
  const proxy = await StoreProxy.start(swift.endpoint);
  t.teardown(() => proxy.close());
  proxy.mode = 'corrupt-head';
  const a = await startAgentOnBroker(t, { deviceId: 'cam-hostile', capturing: true, config: offloadConfig({ endpoint: proxy.endpoint, bucket: 'evidence', credentialsFile: creds }) });
  const rec = await recordSegments(a.stateDir, 2);

  // Three verification failures of one object: it was sent again after each.
  const mismatchesOf = (key: unknown) => auditEntries(a.recorder).filter((e) => e.type === 'offload.verify' && e.detail.result === 'mismatch' && e.detail.key === key);
  const mismatches = await waitAudit(a.recorder, (e) => e.type === 'offload.verify' && e.detail.result === 'mismatch', 'a mismatch audited');
  const firstKey = mismatches[0]!.detail.key as string;
  await a.recorder.waitFor(() => mismatchesOf(firstKey).length >= 3, 60_000, `three audited mismatches of ${firstKey}`);
  t.match(mismatches[0]!.detail, { key: new RegExp(`^cam-hostile/${rec.id}/`), sha256: /^[0-9a-f]{64}$/, problem: /is not what was sent: .*sha256 ffffffffffffffff…, expected/ }, 'the mismatch names the key, our checksum and what the store said');
  t.ok(proxy.puts.filter((p) => p.key === firstKey).length >= 3, 'the object was sent again after each mismatch');
  const st = await waitOffloadState(a.recorder, (o) => o.lastError !== null && /is not what was sent/.test(o.lastError.message), 'state: the last error says the store does not hold what was sent');
  t.equal(st.recordingsPending, 1, 'state: the recording is still pending');
  t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.delete' || (e.type === 'offload.verify' && e.detail.result === 'ok')), 'nothing verified, nothing deleted');
  t.ok(existsSync(rec.dir) && readdirSync(rec.dir).some((f) => /\.ts(\.age)?$/.test(f)), 'the local copy is all there');

  // The same store answering truthfully: the same recording goes through, proving the refusal
  // above was the checksum and nothing else.
  proxy.mode = 'pass';
  await waitAudit(a.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === rec.id, 'offloaded once the store tells the truth');
  t.notOk(existsSync(rec.dir), 'deleted only after verification');
});
