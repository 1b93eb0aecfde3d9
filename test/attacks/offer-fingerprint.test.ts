// Threat: a stream.start is signed for a viewer's offer, and the audit records that viewer's DTLS
// fingerprint as who watched. An offer that names a second certificate beside it (another
// fingerprint line, at media or session level, or a stronger hash werift would check instead)
// lets a different DTLS peer, Y, complete the handshake and receive the media while the audit
// names X. Whoever builds the offer the fleet signs (a compromised console page, a tampered
// backend) could do this. The camera must refuse any offer that does not name exactly one
// sha-256 certificate, before any socket is opened, with a message naming what is wrong.
import t from 'tap';
import { makeCommand, makeIssuer, sdpOffer } from '../helpers/command-tokens.ts';
import { FleetClient } from '../helpers/fleet-client.ts';
import { startAgentOnBroker } from '../helpers/agent-on-broker.ts';

const deviceId = 'cam-fingerprint-attack';
const viewerFp = '7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08';
const otherFp = '11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00';
const sha512 = Array.from({ length: 64 }, (_, i) => (i % 256).toString(16).padStart(2, '0').toUpperCase()).join(':');

t.test('offers naming more than one DTLS certificate, or not by sha-256, are refused', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { broker, recorder, agent } = await startAgentOnBroker(t, {
    deviceId,
    issuers: [issuer],
    capturing: true,
    config: { commands: { maxConcurrentStreams: 2 }, stream: { ice: { interfaces: ['lo'] } } },
  });
  const fleet = await FleetClient.connect(broker.url);
  t.teardown(() => fleet.close());
  const start = (offer: string) => fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.start', offer, overrides: { sub: 'insp-0042', reason: 'public-safety' } }).payload);
  const { offer } = sdpOffer('fingerprint-attack');
  const viewerLine = `a=fingerprint:sha-256 ${viewerFp}`;
  t.ok(offer.includes(viewerLine), 'the fixture offer names the viewer by one sha-256 line');

  const cases: [string, string, RegExp][] = [
    ['a second sha-256 line in the video section', offer.replace(viewerLine, `${viewerLine}\r\na=fingerprint:sha-256 ${otherFp}`), /names 2 DTLS certificates/],
    ['a different one at session level', offer.replace('a=group:BUNDLE', `a=fingerprint:sha-256 ${otherFp}\r\na=group:BUNDLE`), /names 2 DTLS certificates/],
    ['another in the audio section', offer.replace('a=mid:1', `a=mid:1\r\na=fingerprint:sha-256 ${otherFp}`), /names 2 DTLS certificates/],
    ['a sha-512 beside the sha-256 (werift checks the strongest)', offer.replace(viewerLine, `${viewerLine}\r\na=fingerprint:sha-512 ${sha512}`), /sha-512 DTLS fingerprint: only sha-256/],
    ['sha-1 only', offer.replace(viewerLine, 'a=fingerprint:sha-1 11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44'), /sha-1 DTLS fingerprint: only sha-256/],
  ];
  for (const [name, hostile, message] of cases) {
    const reply = await start(hostile);
    t.match(reply, { ok: false, code: 'unsupported_offer', message }, `${name}: unsupported_offer, naming why`);
    t.notOk('answer' in reply, `${name}: no answer`);
  }
  // The same certificate on every m-line (what browsers send) is one certificate: accepted.
  const bundled = offer.replace('a=mid:1', `a=mid:1\r\na=fingerprint:sha-256 ${viewerFp.toLowerCase()}`);
  const ok = await start(bundled);
  t.match(ok, { ok: true, sid: /^s-/, answer: /^v=0/ }, 'one certificate named on each m-line: accepted');
  type Entry = { type?: string; detail?: { sid?: string; viewerFingerprint?: string } };
  const starts = () => recorder.on('audit').map((m) => m.json?.entry as Entry | undefined).filter((e) => e?.type === 'stream.start');
  // Audit entries are published in order: once this start is seen, any earlier one would be too.
  await recorder.waitFor(() => starts().some((e) => e?.detail?.sid === ok.sid), 10_000, 'the accepted stream.start audited');
  t.equal(starts().length, 1, 'no stream.start audited for any refused offer');
  t.equal(starts()[0]?.detail?.viewerFingerprint, `sha-256 ${viewerFp}`, "the audit names the one certificate that can complete the handshake");
});
