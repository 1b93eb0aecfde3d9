// Threat: someone makes the camera speak into the officer's ear without the authority to. A
// supervisor's talk-back is honoured only for a stream.start whose signing key the trust store
// grants `stream.talk` (docs/protocol.md, "Talk-back"). Attackers modelled here, each with the real
// agent, a real mosquitto and a real headless Chromium whose fake microphone plays a 1 kHz tone:
//   - a console key without the grant signs a stream.start claiming `talk: true`;
//   - a viewer with a valid receive-only view offers sendrecv audio anyway, rewrites the camera's
//     answer in its own browser so Chromium sends, and pushes Opus RTP at the camera;
//   - a token whose act is `stream.talk` itself (a grant used as a command).
// Nothing may reach the playback pipeline (a WAV file sink here: it must never be written), the
// dropped packets must be counted and the attempt audited.
import { existsSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { tempStateDir } from '../helpers/agent-process.ts';
import { startLiveViewRig } from '../helpers/agent-on-broker.ts';
import { makeCommand, makeIssuer } from '../helpers/command-tokens.ts';
import { makeToneWav } from '../helpers/talkback-audio.ts';

const deviceId = 'cam-talk-attack';
type AuditEntry = { type: string; operator: string | null; reason: string | null; decision: string | null; code: string | null; detail: Record<string, unknown> };

t.test('talk-back without the grant', async (t) => {
  // A receive-only console key: what a viewing-only operator's service holds.
  const viewOnly = await makeIssuer({ iss: 'bwc-view-only', actions: ['stream.start', 'stream.stop'] });
  const fullKey = await makeIssuer({ iss: 'bwc-fleet' });
  const stateDir = await tempStateDir();
  const sinkFile = path.join(stateDir, 'played.wav');
  const tone = makeToneWav(path.join(stateDir, 'tone-1k.wav'), 1000, 3);
  const { recorder, agent, viewers, fleet } = await startLiveViewRig(t, {
    deviceId,
    issuers: [viewOnly, fullKey],
    stateDir,
    config: {
      commands: { maxConcurrentStreams: 2 },
      capture: { width: 320, height: 180, framerate: 15, bitrateKbps: 300, audio: true },
      stream: { ice: { interfaces: ['lo'] }, viewerLostGrace: 5, connectTimeout: 20 },
      talkback: { sink: `wavenc ! filesink location=${sinkFile}`, idleMs: 500 },
    },
    chromiumArgs: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-audio-capture=${tone}`],
  });
  const audit = () => recorder.on('audit').map((m) => m.json?.entry as AuditEntry | undefined).filter((e): e is AuditEntry => e !== undefined);
  const events = () => recorder.on('event').map((m) => m.json as { type?: string } | null);

  await t.test('a key without stream.talk signs talk: true: action_not_permitted', async (t) => {
    const viewer = await viewers.open();
    // A plain receive-only offer: the claim alone must be enough to refuse.
    const offer = await viewer.createOffer({ audio: true });
    const reply = await fleet.request(deviceId, makeCommand({ issuer: viewOnly, deviceId, action: 'stream.start', offer, overrides: { sub: 'pc-1234', reason: 'public-safety', talk: true } }).payload);
    t.match(reply, { ok: false, code: 'action_not_permitted', message: /stream\.talk/ }, 'refused, naming the missing grant');
    await recorder.waitFor(() => audit().some((e) => e.type === 'command.decision' && e.decision === 'rejected' && e.code === 'action_not_permitted'), 10_000, 'the refusal audited');
    t.notOk(audit().some((e) => e.type === 'stream.start'), 'no live view started');
    await viewer.page.close();
  });

  await t.test('a token whose act is stream.talk: refused', async (t) => {
    const reply = await fleet.request(deviceId, makeCommand({ issuer: fullKey, deviceId, action: 'stream.talk' as 'stream.start', overrides: { sub: 'pc-1234', reason: 'public-safety' } }).payload);
    t.match(reply, { ok: false, code: 'malformed', message: /stream\.talk/ }, 'refused as malformed, naming the act');
  });

  await t.test('a receive-only view that sends Opus anyway is never played', async (t) => {
    const viewer = await viewers.open({ secureOrigin: true });
    // The console's push-to-talk offer (sendrecv audio), with a token that does not grant talk.
    const offer = await viewer.createOffer({ talk: true });
    const reply = await fleet.request(deviceId, makeCommand({ issuer: viewOnly, deviceId, action: 'stream.start', offer, overrides: { sub: 'pc-1234', reason: 'public-safety' } }).payload);
    t.match(reply, { ok: true, sid: /^s-/, answer: /^v=0/ }, 'the view itself is accepted');
    const sid = reply.sid!;
    const answer = reply.answer!;
    const audioSection = answer.slice(answer.indexOf('m=audio'));
    t.match(audioSection, /a=(sendonly|inactive)\r?\n/, 'the answer never receives audio');
    t.notMatch(audioSection, /a=(sendrecv|recvonly)\r?\n/, 'no receiving direction in the audio m-line');
    // The attacker rewrites the answer in its own browser so Chromium believes the camera listens.
    const at = answer.indexOf('m=audio');
    const forged = answer.slice(0, at) + audioSection.replace(/a=sendonly(\r?\n)/, 'a=sendrecv$1').replace(/a=inactive(\r?\n)/, 'a=recvonly$1');
    await viewer.applyAnswer(forged);
    await viewer.waitForVideo((v) => v.framesDecoded > 2, 45_000, 'decoded frames');
    await viewer.pressToTalk();
    // Wait on what the camera says, not on time: the refusal is audited at the first packet.
    await recorder.waitFor(() => audit().some((e) => e.type === 'stream.talk_refused' && e.detail.sid === sid), 20_000, 'stream.talk_refused audited');
    // Chromium serves getStats from a cache (~50 ms): the camera can have refused the first packet
    // before the viewer's packetsSent shows it, so read until it does (bounded), not once.
    let sentBefore = await viewer.outboundAudioPackets();
    for (const until = Date.now() + 10_000; sentBefore === 0 && Date.now() < until; sentBefore = await viewer.outboundAudioPackets()) {
      await new Promise((r) => setTimeout(r, 20));
    }
    t.ok(sentBefore > 0, `the viewer sent ${sentBefore} audio packets`);
    t.equal(audit().filter((e) => e.type === 'stream.talk_refused' && e.detail.sid === sid).length, 1, 'audited once per session');
    t.match(audit().find((e) => e.type === 'stream.talk_refused')!, { operator: 'pc-1234', detail: { sid } }, 'the refusal names the operator');
    // Let it keep sending until the camera has dropped a good many, counted when the view ends. 100 sent
    // for the 50 judged: what is still in flight when the stop is handled is not counted.
    const deadline = Date.now() + 20_000;
    while ((await viewer.outboundAudioPackets()) < sentBefore + 100) {
      if (Date.now() > deadline) throw new Error('the viewer stopped sending audio');
      await new Promise((r) => setTimeout(r, 100));
    }
    t.match(await fleet.request(deviceId, makeCommand({ issuer: viewOnly, deviceId, action: 'stream.stop', overrides: { sid, sub: 'pc-1234' } }).payload), { ok: true }, 'stream.stop');
    await recorder.waitFor(() => audit().some((e) => e.type === 'stream.stop' && e.detail.sid === sid), 10_000, 'stream.stop audited');
    const stop = audit().find((e) => e.type === 'stream.stop' && e.detail.sid === sid)!;
    t.ok((stop.detail.talkRefusedPackets as number) >= 50, `the camera dropped ${String(stop.detail.talkRefusedPackets)} audio packets before any decoder`);
    t.equal(stop.detail.talkPackets, 0, 'none reached the playback');
    t.notOk(events().some((e) => e?.type === 'stream.talk_started'), 'no stream.talk_started');
    t.notOk(existsSync(sinkFile), 'the playback pipeline never ran (its sink file does not exist)');
    await viewer.page.close();
  });
});
