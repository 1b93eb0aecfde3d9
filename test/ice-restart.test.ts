// ICE restarts of a live view (src/stream/ice-restart.ts) through StreamManager, with stand-in
// sessions (helpers/stream-rig.ts): when a restart is offered and re-offered, and which answers are taken.
import t, { type Test } from 'tap';
import { answerSdp, authorised, rig, until } from './helpers/stream-rig.ts';

/** A connected session whose device then changed address: the rig once the restart offer is out. */
async function restartOffered(t: Test) {
  // The manager checks an answer with werift's SDP parser, imported on first use (seconds, cold, on a
  // loaded machine). Loaded before the offer: the stand-in's path stays failed after it, so 5 s on a
  // second offer (generation 2) would make the test's generation-1 answer stale.
  await import('../src/stream/offer.ts');
  const r = rig({ viewerLostGrace: 30 });
  t.teardown(() => r.manager.stop());
  const accepted = await r.manager.startStream(await authorised('stream.start'));
  const sid = (accepted as unknown as { sid: string }).sid;
  const s = r.sessions[0]!;
  s.setConnection('connected');
  r.manager.networkChanged();
  await until('a restart offer', () => r.restartOffers.length === 1);
  return { r, sid, s };
}

t.test('ICE restart: a network change offers one; only the viewer\'s answer to the open restart is taken', async (t) => {
  const { r, sid, s } = await restartOffered(t);
  t.match(r.restartOffers[0], { sid, generation: 1, cause: 'network_changed' });
  t.equal(s.restartOffers.length, 1, 'the session made the offer on freshly resolved ICE settings');
  t.match(r.audit.find((e) => e.type === 'stream.ice_restart'), { detail: { sid, generation: 1, cause: 'network_changed' } });
  const answer = { sid, generation: 1, answer: answerSdp('AA:BB'), operator: 'console', issuer: 'fleet', jti: 'j1', tokenDigest: 'd1' };
  t.match(await r.manager.acceptRestartAnswer({ ...answer, generation: 7 }), { ok: false, code: 'stale_generation' });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: answerSdp('CC:DD') }), { ok: false, code: 'wrong_viewer' });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, sid: 's-nope' }), { ok: false, code: 'unknown_session' });
  t.same(
    r.audit.filter((e) => e.type === 'stream.ice_refused').map((e) => e.detail?.code),
    ['stale_generation', 'wrong_viewer', 'unknown_session'],
    'each refusal audited',
  );
  t.same(s.restartAnswers, [], 'no refused answer reached the peer connection');
  t.match(await r.manager.acceptRestartAnswer(answer), { ok: true });
  t.same(s.restartAnswers, [answer.answer]);
  t.match(r.audit.find((e) => e.type === 'stream.ice_restarted'), { operator: 'console', detail: { sid, generation: 1, cause: 'network_changed' } });
  t.match(await r.manager.acceptRestartAnswer(answer), { ok: false, code: 'stale_generation' }, 'the same answer again is refused');
  t.ok(r.events.some((e) => e.type === 'stream.ice_restarted'));
  s.setConnection('connected');
  t.equal(r.state().list[0]?.iceRestarts, 1);
});

t.test('ICE restart: a failed path offers again until answered, and the grace still ends a gone viewer', async (t) => {
  const r = rig({ viewerLostGrace: 12 });
  t.teardown(() => r.manager.stop());
  await r.manager.startStream(await authorised('stream.start'));
  const s = r.sessions[0]!;
  s.setConnection('connected');
  s.alive = false;
  s.setConnection('failed');
  await until('a restart offer', () => r.restartOffers.length >= 1);
  t.equal(r.restartOffers[0]!.cause, 'ice_failed');
  await until('a second offer after the first went unanswered', () => r.restartOffers.length >= 2, 15_000);
  t.equal(r.restartOffers[1]!.generation, 2, 'with the next generation');
  await until('viewer_lost', () => r.audit.some((e) => e.detail?.cause === 'viewer_lost'), 20_000);
});

t.test('ICE restart: an answer naming a second DTLS certificate beside the viewer\'s is refused (issue 14, finding 7)', async (t) => {
  const { r, sid, s } = await restartOffered(t);
  const answer = { sid, generation: 1, answer: answerSdp('AA:BB'), operator: 'console', issuer: 'fleet', jti: 'j1', tokenDigest: 'd1' };
  const withLine = (line: string) => answer.answer.replace('a=mid:0', `a=mid:0\r\n${line}`);
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-256 CC:DD') }), { ok: false, code: 'wrong_viewer', message: /names 2 DTLS certificates/ });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-512 CC:DD') }), { ok: false, code: 'wrong_viewer', message: /sha-512 DTLS fingerprint: only sha-256/ });
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: 'not sdp' }), { ok: false, code: 'wrong_viewer' });
  t.same(s.restartAnswers, [], 'none reached the peer connection');
  t.match(await r.manager.acceptRestartAnswer({ ...answer, answer: withLine('a=fingerprint:sha-256 aa:bb') }), { ok: true }, 'the same certificate named twice is one: taken');
});
