// Talk-back end to end (issue 19 item 5): a real headless Chromium is the supervisor's console
// with its fake microphone playing a 1 kHz tone, a real mosquitto carries a signed stream.start
// that grants talk (claim talk: true, the key holding stream.talk), the agent answers sendrecv
// audio, and its playback pipeline (a WAV file sink here instead of the earpiece) must receive
// that tone: checked by its frequency, not only that bytes arrived. The wearer's cue, the events,
// the audit and the evidence (an encrypted Ogg/Opus file hashed in the recording's manifest) too.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { runCli, tempStateDir } from './helpers/agent-process.ts';
import { decryptedCopy } from './helpers/age-keys.ts';
import { startLiveViewRig } from './helpers/agent-on-broker.ts';
import { makeCommand, makeIssuer } from './helpers/command-tokens.ts';
import { dominantFrequency, makeToneWav, readWav } from './helpers/talkback-audio.ts';

const deviceId = 'cam-talk';
const toneHz = 1000;
type AuditEntry = { type: string; operator: string | null; detail: Record<string, unknown> };

t.test('a supervisor speaks to the wearer', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const stateDir = await tempStateDir();
  const sinkFile = path.join(stateDir, 'earpiece.wav');
  const tone = makeToneWav(path.join(stateDir, 'tone-1k.wav'), toneHz, 3);
  const { recorder, agent, viewers, fleet } = await startLiveViewRig(t, {
    deviceId,
    issuers: [issuer],
    stateDir,
    config: {
      capture: { width: 320, height: 180, framerate: 15, bitrateKbps: 300, audio: true },
      stream: { ice: { interfaces: ['lo'] }, viewerLostGrace: 5, connectTimeout: 20 },
      // 5 s, not the default 1.5 s: the sink keeps only the last spurt, and a 1.5 s stall of a loaded
      // machine splits the speech, leaving a short tail to judge. A split now needs a 5 s stall.
      talkback: { sink: `wavenc ! filesink location=${sinkFile}`, idleMs: 5000 },
    },
    chromiumArgs: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-audio-capture=${tone}`],
  });
  const audit = () => recorder.on('audit').map((m) => m.json?.entry as AuditEntry | undefined).filter((e): e is AuditEntry => e !== undefined);
  const events = () => recorder.on('event').map((m) => m.json as Record<string, unknown> | null).filter((e): e is Record<string, unknown> => e !== null);
  const lastPattern = () => (recorder.on('state').at(-1)?.json as { firmware?: { lastPattern?: string | null } } | undefined)?.firmware?.lastPattern;

  t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'record.start', overrides: { sub: 'sgt-7', reason: 'public-safety' } }).payload), { ok: true }, 'recording');

  const viewer = await viewers.open({ secureOrigin: true });
  const offer = await viewer.createOffer({ talk: true });
  const reply = await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.start', offer, overrides: { sub: 'insp-0042', reason: 'officer-safety', talk: true } }).payload);
  t.match(reply, { ok: true, sid: /^s-/, answer: /^v=0/ }, 'stream.start with talk accepted');
  const sid = reply.sid!;
  t.match(reply.answer!.slice(reply.answer!.indexOf('m=audio')), /a=sendrecv\r?\n/, "the answer's audio m-line is sendrecv");
  await viewer.applyAnswer(reply.answer!);
  await viewer.waitForVideo((v) => v.framesDecoded > 2, 45_000, 'decoded frames');
  t.match(audit().find((e) => e.type === 'stream.start' && e.detail.sid === sid), { detail: { talk: true } }, 'the view is audited as talk-granted');

  await viewer.pressToTalk();
  await recorder.waitFor(() => events().some((e) => e.type === 'stream.talk_started' && e.sid === sid), 20_000, 'stream.talk_started');
  t.match(events().find((e) => e.type === 'stream.talk_started'), { sid, operator: 'insp-0042', time: String }, 'stream.talk_started names the session and the operator');
  t.match(audit().find((e) => e.type === 'stream.talk_started'), { operator: 'insp-0042', detail: { sid } }, 'and is audited');
  await recorder.waitFor(() => lastPattern() === 'talk-start', 10_000, "the wearer's talk-start tone");
  // Two seconds of speech (Chromium sends 50 packets a second), then release.
  const deadline = Date.now() + 20_000;
  while ((await viewer.outboundAudioPackets()) < 100) {
    if (Date.now() > deadline) throw new Error('the console did not send 2 s of audio');
    await new Promise((r) => setTimeout(r, 100));
  }
  await viewer.releaseTalk();
  // A loaded machine may split the speech into more than one spurt (a gap over talkback.idleMs):
  // wait until every spurt started has stopped and been stored. A spurt's file is stored once its
  // pipeline saw EOS, so the WAV sink (the last spurt's) is final by then too.
  const count = (type: string) => audit().filter((e) => e.type === type).length;
  await recorder.waitFor(() => count('stream.talk_stopped') >= 1 && count('stream.talk_stopped') === count('stream.talk_started') && count('recording.talk_stored') === count('stream.talk_started'), 30_000, 'every spurt stopped and stored');
  t.match(audit().find((e) => e.type === 'stream.talk_stopped'), { operator: 'insp-0042', detail: { sid } }, 'the stop is audited');
  t.ok(events().some((e) => e.type === 'stream.talk_stopped' && e.sid === sid && e.operator === 'insp-0042'), 'stream.talk_stopped sent');
  const spurts = count('stream.talk_started');
  t.comment(`${spurts} talk spurt(s)`);

  const wav = readWav(sinkFile);
  t.ok(wav, 'the playback pipeline wrote audio to its sink');
  t.ok(wav!.samples.length > wav!.rate / 2, `${(wav!.samples.length / wav!.rate).toFixed(2)} s played in the last spurt (more than 0.5 s)`);
  const heard = dominantFrequency(wav!);
  t.ok(Math.abs(heard.peakHz - toneHz) <= 20, `the wearer heard ${heard.peakHz} Hz (the console's tone is ${toneHz} Hz)`);
  t.ok(heard.ratio > 30, `the tone is ${heard.ratio.toFixed(0)}x stronger than any other frequency`);
  t.ok(heard.rms > 0.05, `at a level heard (RMS ${heard.rms.toFixed(3)})`);

  // Evidence: the spurt, encrypted, hashed in the recording's manifest.
  const stored = audit().find((e) => e.type === 'recording.talk_stored')!;
  t.match(stored.detail, { file: /^recordings\/.+\/talk-t-.+\.ogg\.age$/, operator: 'insp-0042', sid, inManifest: true }, 'the spurt is stored with the recording, encrypted');
  t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'record.stop', overrides: { sub: 'sgt-7', reason: 'public-safety' } }).payload), { ok: true }, 'recording stopped');
  const recordingId = stored.detail.recordingId as string;
  // recording.closed comes once manifest.json and its signature are written.
  await recorder.waitFor(() => events().some((e) => e.type === 'recording.closed' && e.recordingId === recordingId), 30_000, 'recording closed');
  const manifest = JSON.parse(readFileSync(path.join(stateDir, 'evidence', 'recordings', recordingId, 'manifest.json'), 'utf8')) as { talk?: { file: string; sha256: string; operator: string }[] };
  t.equal(manifest.talk?.length, spurts, 'the manifest lists every talk spurt');
  const file = path.join(stateDir, 'evidence', manifest.talk![0]!.file);
  t.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), manifest.talk![0]!.sha256, "the file's hash is the manifest's");
  const plain = readFileSync(await decryptedCopy(file));
  t.equal(plain.subarray(0, 4).toString('ascii'), 'OggS', 'it decrypts to Ogg');
  t.ok(plain.includes(Buffer.from('OpusHead')), 'holding Opus');
  const verify = await runCli(['evidence', 'verify', '--state-dir', stateDir]);
  t.equal(verify.code, 0, `evidence verify passes with the talk-back files (${verify.stdout.trim().split('\n').at(-1)} ${verify.stderr.trim()})`);

  t.match(await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.stop', overrides: { sid, sub: 'insp-0042' } }).payload), { ok: true }, 'stream.stop');
  await recorder.waitFor(() => audit().some((e) => e.type === 'stream.stop' && e.detail.sid === sid), 10_000, 'stream.stop audited');
  const stop = audit().find((e) => e.type === 'stream.stop' && e.detail.sid === sid)!;
  t.ok((stop.detail.talkPackets as number) >= 50, `${String(stop.detail.talkPackets)} talk packets went to the playback`);
  t.equal(stop.detail.talkRefusedPackets, 0, 'none refused');

  // The playback process is the agent's child and goes with it: nothing of it outlives the agent.
  const players = execFileSync('pgrep', ['-f', '-P', String(agent.child.pid), 'talkback-player'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  t.equal(players.length, 1, 'one playback process ran');
  t.match(await agent.stop('SIGTERM'), { code: 0 }, 'the agent stops cleanly');
  const gone = Date.now() + 10_000;
  while (existsSync(`/proc/${players[0]}`) && readFileSync(`/proc/${players[0]}/stat`, 'utf8').split(' ')[2] !== 'Z') {
    if (Date.now() > gone) throw new Error(`playback process ${players[0]} still running 10 s after the agent stopped`);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.pass('the playback process ended with the agent');
});
