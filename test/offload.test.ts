// Evidence offload end to end: the real agent process records with its real capture pipeline and
// uploads through the S3 API to a real OpenStack Swift (test/helpers/swift.ts) on loopback, with a
// counting proxy in front where the test needs to see what was sent. Waits are on the audit trail
// and the retained state the agent publishes, never on time.
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import t from 'tap';
import { runCli, tempStateDir } from './helpers/agent-process.ts';
import { startAgentOnBroker, startLiveViewRig } from './helpers/agent-on-broker.ts';
import { auditEntries, createBucket, offloadConfig, offloadStates, recordSegments, s3Client, waitAudit, waitOffloadState, writeCredentials } from './helpers/offload-rig.ts';
import { StoreProxy } from './helpers/store-proxy.ts';
import { startSwift, swiftInstalled } from './helpers/swift.ts';
import { makeCommand, makeIssuer } from './helpers/command-tokens.ts';

t.setTimeout(600_000);
if (!swiftInstalled()) {
  t.test('offload against Swift', { skip: 'OpenStack Swift is not installed (scripts/setup.sh installs it)' }, () => undefined);
} else {
  const swift = await startSwift();
  t.teardown(() => swift.dispose());
  const bucket = 'evidence';
  await createBucket(swift, bucket);
  const credsDir = await tempStateDir('bwc-creds-');
  const creds = await writeCredentials(path.join(credsDir, 'store.yaml'), swift);

  t.test('a recording is uploaded, verified in the store, audited, deleted locally, and verifiable from the bucket alone', async (t) => {
    const proxy = await StoreProxy.start(swift.endpoint);
    t.teardown(() => proxy.close());
    const a = await startAgentOnBroker(t, { deviceId: 'cam-up', capturing: true, config: offloadConfig({ endpoint: proxy.endpoint, bucket, credentialsFile: creds }) });
    const rec = await recordSegments(a.stateDir, 3);
    const deleted = await waitAudit(a.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === rec.id, 'offload.delete of the recording');
    const objects = deleted[0]!.detail.objects as { key: string; sha256: string }[];
    const prefix = `cam-up/${rec.id}/`;
    t.ok(objects.length >= 6, `the deletion lists every object with its checksum (${objects.length})`);
    t.ok(objects.every((o) => o.key.startsWith(prefix) && /^[0-9a-f]{64}$/.test(o.sha256)), 'one prefix per recording, <device>/<recording>/');
    for (const name of ['manifest.json', 'manifest.sig', 'device.jwk.json']) t.ok(objects.some((o) => o.key === prefix + name), `${name} is in the store`);

    const audit = auditEntries(a.recorder);
    const deleteSeq = deleted[0]!.seq;
    for (const o of objects) {
      t.ok(audit.some((e) => e.type === 'offload.upload' && e.detail.key === o.key && e.detail.sha256 === o.sha256 && e.seq < deleteSeq), `upload of ${o.key} audited before the deletion`);
      t.ok(audit.some((e) => e.type === 'offload.verify' && e.detail.key === o.key && e.detail.result === 'ok' && e.seq < deleteSeq), `verification of ${o.key} audited before the deletion`);
    }
    t.equal(Math.max(...proxy.completePutsByKey().values()), 1, 'no object sent twice');
    t.notOk(existsSync(rec.dir), 'the local copy is gone (keepDays 0)');

    // The store holds what the manifest says.
    const c = s3Client(swift);
    t.teardown(() => c.destroy());
    const listed = (await c.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents?.map((o) => o.Key).sort();
    t.same(listed, objects.map((o) => o.key).sort(), 'the bucket holds exactly the recording\'s objects');

    // The camera-side verifier knows the recording went to the store.
    const local = await runCli(['evidence', 'verify', '--state-dir', a.stateDir]);
    t.equal(local.code, 0, `evidence verify on the camera still passes after the offload: ${local.stdout}${local.stderr}`);

    // An auditor, from the store alone, with the device key pinned.
    const state = a.recorder.on('state').at(-1)!.json as { devicePublicKey: Record<string, unknown> };
    const pinFile = path.join(credsDir, 'cam-up.jwk.json');
    await writeFile(pinFile, JSON.stringify(state.devicePublicKey));
    const url = `${swift.endpoint}/${bucket}`;
    const pinned = await runCli(['evidence', 'verify', '--bucket', url, '--recording', rec.id, '--credentials', creds, '--public-key', pinFile]);
    t.equal(pinned.code, 0, `evidence verify --bucket passes: ${pinned.stdout}${pinned.stderr}`);
    t.match(pinned.stdout, /evidence OK in the store: \d+ segments.*\(pinned\)/);
    const unpinned = await runCli(['evidence', 'verify', '--bucket', url, '--recording', `cam-up/${rec.id}`, '--credentials', creds]);
    t.equal(unpinned.code, 0, 'without a pin it passes too...');
    t.match(unpinned.stdout, /key_not_pinned: .*pin it with --public-key/, '...and says the key came from the store itself');

    // A segment replaced in the store is found by hashing what the store serves.
    const seg = objects.find((o) => /\.ts(\.age)?$/.test(o.key))!;
    await c.send(new PutObjectCommand({ Bucket: bucket, Key: seg.key, Body: Buffer.from('not the evidence') }));
    const tampered = await runCli(['evidence', 'verify', '--bucket', url, '--recording', rec.id, '--credentials', creds, '--public-key', pinFile]);
    t.equal(tampered.code, 1, 'a replaced segment fails the check');
    t.match(tampered.stdout, new RegExp(`modified: ${seg.key.replace(/[.]/g, '\\.')}: the store's object is 16 bytes`));

    // Credentials never reach the logs or the state (what the fleet and journald see).
    t.notMatch(a.agent.output, swift.secretAccessKey, 'the secret is not in the agent\'s logs');
    t.notOk(a.recorder.messages.some((m) => m.payload.includes(swift.secretAccessKey)), 'nor in anything published (state, events, audit)');
    const status = await runCli(['ctl', 'offload', 'status', '--state-dir', a.stateDir]);
    t.notMatch(status.stdout, swift.secretAccessKey, 'nor in ctl offload status');
    const st = offloadStates(a.recorder).at(-1)!;
    t.equal(st.recordingsPending, 0, 'state: nothing pending');
    t.ok(st.lastUploadAt, 'state: the last upload time');
  });

  t.test('a recording under hold is uploaded but kept until released; ctl pause holds uploads', async (t) => {
    const a = await startAgentOnBroker(t, { deviceId: 'cam-hold', capturing: true, config: offloadConfig({ endpoint: swift.endpoint, bucket, credentialsFile: creds }) });
    const paused = await runCli(['ctl', 'offload', 'pause', '--state-dir', a.stateDir]);
    t.match(JSON.parse(paused.stdout), { status: 'paused', pausedBy: ['ctl'] });
    const start = await runCli(['ctl', 'record', 'start', '--state-dir', a.stateDir]);
    const id = (JSON.parse(start.stdout) as { recordingId: string }).recordingId;
    const hold = await runCli(['ctl', 'offload', 'hold', id, 'case', 'CR-2026-0042', '--state-dir', a.stateDir]);
    t.equal(hold.code, 0, hold.stderr);
    await waitAudit(a.recorder, (e) => e.type === 'offload.hold' && e.detail.recordingId === id && e.reason === 'case CR-2026-0042', 'the hold audited');
    await runCli(['ctl', 'record', 'stop', '--state-dir', a.stateDir]);
    await waitAudit(a.recorder, (e) => e.type === 'recording.sealed' && e.detail.recordingId === id, 'the recording sealed');
    await waitOffloadState(a.recorder, (o) => o.status === 'paused' && o.recordingsPending === 1, 'state: paused with one recording pending');
    t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.upload'), 'nothing uploaded while paused');
    await runCli(['ctl', 'offload', 'resume', '--state-dir', a.stateDir]);
    await waitAudit(a.recorder, (e) => e.type === 'offload.recording' && e.detail.recordingId === id, 'the held recording uploaded');
    const dir = path.join(a.stateDir, 'evidence', 'recordings', id);
    t.ok(existsSync(dir), 'uploaded, verified, past keepDays 0, but held: kept');
    t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.delete'), 'no deletion audited');
    const release = await runCli(['ctl', 'offload', 'release', id, '--state-dir', a.stateDir]);
    t.equal(release.code, 0, release.stderr);
    await waitAudit(a.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === id, 'deleted once released');
    t.notOk(existsSync(dir), 'released: the retention policy deletes it');
    const types = auditEntries(a.recorder).map((e) => e.type);
    t.ok(['offload.pause', 'offload.resume', 'offload.hold', 'offload.release'].every((x) => types.includes(x)), 'pause, resume, hold and release are audited');
  });

  t.test('a live view holds uploads until it ends (offload.pauseDuringLiveView)', async (t) => {
    const issuer = await makeIssuer({ iss: 'bwc-fleet' });
    const a = await startLiveViewRig(t, { deviceId: 'cam-live', issuers: [issuer], config: offloadConfig({ endpoint: swift.endpoint, bucket, credentialsFile: creds }) });
    const { viewers, fleet } = a;
    await runCli(['ctl', 'offload', 'pause', '--state-dir', a.stateDir]);
    const rec = await recordSegments(a.stateDir, 1);
    await waitAudit(a.recorder, (e) => e.type === 'recording.sealed' && e.detail.recordingId === rec.id, 'sealed');
    const viewer = await viewers.open();
    const reply = await fleet.request('cam-live', makeCommand({ issuer, deviceId: 'cam-live', action: 'stream.start', offer: await viewer.createOffer(), overrides: { sub: 'insp-0042', reason: 'public-safety' } }).payload);
    t.ok(reply.ok, 'the live view starts');
    await viewer.applyAnswer(reply.answer!);
    await waitOffloadState(a.recorder, (o) => o.pausedBy.includes('live-view'), 'state: paused by the live view');
    // The hand-set pause is lifted: only the live view holds the upload now.
    await runCli(['ctl', 'offload', 'resume', '--state-dir', a.stateDir]);
    await waitOffloadState(a.recorder, (o) => o.status === 'paused' && o.pausedBy.join() === 'live-view' && o.recordingsPending === 1, 'state: still paused, by the live view alone');
    t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.upload'), 'nothing uploaded while the view runs');
    const stop = await fleet.request('cam-live', makeCommand({ issuer, deviceId: 'cam-live', action: 'stream.stop', overrides: { sid: reply.sid!, sub: 'insp-0042' } }).payload);
    t.ok(stop.ok, 'the live view stops');
    await waitAudit(a.recorder, (e) => e.type === 'offload.recording' && e.detail.recordingId === rec.id, 'uploaded once the view ended');
    const stopSeq = auditEntries(a.recorder).find((e) => e.type === 'stream.stop')!.seq;
    t.ok(auditEntries(a.recorder).filter((e) => e.type === 'offload.upload').every((e) => e.seq > stopSeq), 'every upload came after the view stopped');
  });

  t.test('kill -9 mid-upload, then restart: the upload resumes, nothing sent twice in full, nothing lost', async (t) => {
    const proxy = await StoreProxy.start(swift.endpoint);
    t.teardown(() => proxy.close());
    proxy.mode = 'hold-put';
    proxy.holdKey = /\/000002_[^/]*\.ts(\.age)?$/;
    const stateDir = await tempStateDir();
    const config = offloadConfig({ endpoint: proxy.endpoint, bucket, credentialsFile: creds });
    const first = await startAgentOnBroker(t, { deviceId: 'cam-kill', capturing: true, stateDir, config });
    const held = new Promise<string>((resolve) => proxy.once('held', resolve));
    const rec = await recordSegments(stateDir, 4);
    const heldKey = await held;
    await first.agent.stop('SIGKILL');
    t.equal(proxy.puts.filter((p) => p.key === heldKey).length, 0, 'the held object never reached the store');
    const before = new Map(proxy.completePutsByKey());
    t.ok(before.size >= 2, `objects before the held one were stored (${before.size})`);

    proxy.mode = 'pass';
    const second = await startAgentOnBroker(t, { deviceId: 'cam-kill', capturing: true, stateDir, config });
    const deleted = await waitAudit(second.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === rec.id, 'the recording finished after the restart');
    const keys = (deleted[0]!.detail.objects as { key: string }[]).map((o) => o.key);
    const puts = proxy.completePutsByKey();
    t.same([...puts.keys()].sort(), [...keys].sort(), 'every object of the recording reached the store');
    for (const k of keys) t.equal(puts.get(k), 1, `${k} sent in full once`);
    t.ok(keys.includes(heldKey), 'the one cut by the kill was sent after the restart');
  });

  t.test('the store down for a while, then back: the backlog drains, nothing lost', async (t) => {
    const a = await startAgentOnBroker(t, { deviceId: 'cam-outage', capturing: true, config: offloadConfig({ endpoint: swift.endpoint, bucket, credentialsFile: creds }) });
    await swift.stop();
    let restarted = false;
    t.teardown(async () => {
      if (!restarted) await swift.start();
    });
    const r1 = await recordSegments(a.stateDir, 2);
    const r2 = await recordSegments(a.stateDir, 2);
    const down = await waitOffloadState(a.recorder, (o) => o.lastError !== null && /offload\.endpoint/.test(o.lastError.message) && o.recordingsPending === 2, 'state: the error names offload.endpoint, two pending');
    t.match(down.lastError!.message, /cannot reach the store at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
    t.ok(existsSync(r1.dir) && existsSync(r2.dir), 'nothing deleted while the store is down');
    await swift.start();
    restarted = true;
    for (const r of [r1, r2]) await waitAudit(a.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === r.id, `${r.id} offloaded after the outage`, 120_000);
    await waitOffloadState(a.recorder, (o) => o.recordingsPending === 0 && o.lastError === null, 'state: backlog drained, error cleared');
  });

  t.test('bad settings: wrong credentials, a missing bucket, an unreachable endpoint: an error naming the setting, nothing deleted', async (t) => {
    const wrongCreds = await writeCredentials(path.join(credsDir, 'wrong.yaml'), swift, 'not-the-secret');
    const cases = [
      { deviceId: 'cam-badcreds', config: { endpoint: swift.endpoint, bucket, credentialsFile: wrongCreds }, setting: /^offload\.credentialsFile: the store at .* refused the credentials/ },
      { deviceId: 'cam-nobucket', config: { endpoint: swift.endpoint, bucket: 'no-such-bucket', credentialsFile: creds }, setting: /^offload\.bucket: the store at .* has no bucket "no-such-bucket"/ },
      { deviceId: 'cam-unreach', config: { endpoint: 'http://127.0.0.1:9', bucket, credentialsFile: creds }, setting: /^offload\.endpoint: cannot reach the store at http:\/\/127\.0\.0\.1:9: ECONNREFUSED/ },
    ];
    const agents = await Promise.all(cases.map((c) => startAgentOnBroker(t, { deviceId: c.deviceId, capturing: true, config: offloadConfig(c.config) })));
    const recs = await Promise.all(agents.map((a) => recordSegments(a.stateDir, 1)));
    for (const [i, c] of cases.entries()) {
      const a = agents[i]!;
      const st = await waitOffloadState(a.recorder, (o) => o.lastError !== null && c.setting.test(o.lastError.message), `${c.deviceId}: an error naming the setting`);
      t.match(st.lastError!.message, c.setting, `${c.deviceId}: ${st.lastError!.message}`);
      t.match(a.agent.output, /"module":"offload".*"setting":"offload\./, `${c.deviceId}: the log line names the setting`);
      t.ok(existsSync(recs[i]!.dir) && readdirSync(recs[i]!.dir).length > 0, `${c.deviceId}: nothing deleted`);
      t.notOk(auditEntries(a.recorder).some((e) => e.type === 'offload.delete' || e.type === 'offload.upload'), `${c.deviceId}: nothing uploaded or deleted`);
    }
    // The credentials file is re-read when it changes: the right secret, and the backlog goes.
    await writeCredentials(wrongCreds, swift);
    await waitAudit(agents[0]!.recorder, (e) => e.type === 'offload.delete' && e.detail.recordingId === recs[0]!.id, 'uploaded once the credentials file was fixed');
    t.notMatch(agents[0]!.agent.output, swift.secretAccessKey, 'the secret is not in the logs');
    t.notMatch(agents[0]!.agent.output, 'not-the-secret', 'nor the wrong one');
  });
}
