// The store client (src/offload/object-store.ts) against a real Swift's S3 API: a multipart
// upload cut after its first part resumes from a fresh client with ListParts and sends only the
// parts the store does not hold; the result verifies by size, multipart ETag and SHA-256. And the
// token bucket holds a body to its rate, the gate holds it entirely.
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ObjectStore } from '../src/offload/object-store.ts';
import { multipartEtag } from '../src/offload/offloader.ts';
import { TokenBucket, UploadGate } from '../src/offload/throttle.ts';
import { tempStateDir } from './helpers/agent-process.ts';
import { createBucket } from './helpers/offload-rig.ts';
import { startSwift, swiftInstalled } from './helpers/swift.ts';

t.setTimeout(300_000);
t.test('multipart upload resumed with ListParts after a cut', { skip: swiftInstalled() ? false : 'OpenStack Swift is not installed' }, async (t) => {
  const swift = await startSwift();
  t.teardown(() => swift.dispose());
  await createBucket(swift, 'parts');
  const dir = await tempStateDir('bwc-parts-');
  const file = path.join(dir, 'big.ts');
  const partSize = 5 * 1024 * 1024;
  const data = randomBytes(partSize * 2 + 12345);
  writeFileSync(file, data);
  const sha256 = createHash('sha256').update(data).digest('hex');
  const src = { file, sha256, bytes: data.length };
  const options = { endpoint: swift.endpoint, bucket: 'parts', region: 'us-east-1', credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey } };
  const gate = new UploadGate();
  const unlimited = new TokenBucket(0);

  // First attempt: cut once the first part is through and the second has started.
  let saved: string | null = null;
  const first = new ObjectStore(options);
  const cut = new AbortController();
  let sent1 = 0;
  await t.rejects(
    first.putMultipart('r/big.ts', src, partSize, null, (id) => (saved = id), unlimited, gate, (n) => {
      sent1 += n;
      if (sent1 > partSize + 65_536) cut.abort(new Error('cut'));
    }, cut.signal),
  );
  first.destroy();
  t.ok(saved, 'the upload id was handed over for saving before any part went');

  // A fresh client (a restarted agent) with the saved id.
  const second = new ObjectStore(options);
  t.teardown(() => second.destroy());
  let sent2 = 0;
  const r = await second.putMultipart('r/big.ts', src, partSize, saved, (id) => (saved = id), unlimited, gate, (n) => (sent2 += n));
  t.equal(r.partsKept, 1, 'the part the store held was not sent again');
  t.equal(r.partsSent, 2, 'the other two were');
  t.equal(sent2, data.length - partSize, 'bytes sent after the resume: all but the first part');
  t.equal(saved, null, 'the upload id is cleared once complete');
  const expectedEtag = await multipartEtag(file, data.length, partSize);
  t.equal(r.etag, expectedEtag);
  const h = await second.verify('r/big.ts', { bytes: data.length, sha256, etag: expectedEtag });
  t.equal(h.etag, expectedEtag, 'the store\'s HEAD gives the S3 multipart ETag (MD5 of the part MD5s, -3)');
  await t.rejects(second.verify('r/big.ts', { bytes: data.length, sha256: '0'.repeat(64), etag: expectedEtag }), /is not what was sent: sha256/, 'a different SHA-256 fails verification');
});

t.test('token bucket and gate', async (t) => {
  const bucket = new TokenBucket(8_000); // 1,000,000 bytes/s
  const gate = new UploadGate();
  const startMs = performance.now();
  for (let i = 0; i < 40; i++) await bucket.take(16_384);
  const elapsedS = (performance.now() - startMs) / 1000;
  // 655,360 bytes at 1 MB/s after a 250,000-byte burst: at least 0.4 s.
  t.ok(elapsedS >= 0.38, `the cap holds the bytes back (${elapsedS.toFixed(2)} s)`);
  gate.close('live-view');
  let opened = false;
  const waiting = gate.waitOpen().then(() => (opened = true));
  await Promise.resolve();
  t.notOk(opened, 'closed: the body waits');
  gate.open('live-view');
  await waiting;
  t.ok(opened, 'opened: it goes on');
});
