// The live view end to end: a real headless Chromium is the remote viewer, a real mosquitto
// carries the signed commands, the agent process runs the real GStreamer pipeline (videotestsrc,
// x264enc, Opus) and answers with werift. Every way a session can end is driven for real and
// checked in the reply, `state`, the audit trail and the wearer's notifications.
import t from 'tap';
import { startLiveViewRig } from './helpers/agent-on-broker.ts';
import { type Viewer } from './helpers/chromium-viewer.ts';
import { makeCommand, makeIssuer, type Command } from './helpers/command-tokens.ts';
import { settledCount } from './helpers/settled-count.ts';
import { udpSockets } from './helpers/udp-sockets.ts';

const deviceId = 'cam-live';
const width = 640;
const height = 360;

type AuditEntry = { type: string; operator: string | null; reason: string | null; detail: Record<string, unknown> };

t.test('live view through a real broker to a real Chromium', async (t) => {
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const { recorder, agent, viewers, fleet } = await startLiveViewRig(t, {
    deviceId,
    issuers: [issuer],
    config: {
      commands: { maxConcurrentStreams: 2 },
      capture: { width, height, framerate: 15, bitrateKbps: 600, audio: true },
      // One machine: the viewer reaches the camera on loopback. Short grace so the test is quick.
      stream: { ice: { interfaces: ['lo'] }, viewerLostGrace: 3, connectTimeout: 20 },
    },
  });

  const request = (payload: Buffer) => fleet.request(deviceId, payload);
  const startCommand = (offer: string, overrides: Record<string, unknown> = {}): Command =>
    makeCommand({ issuer, deviceId, action: 'stream.start', offer, overrides: { sub: 'insp-0042', reason: 'public-safety', ...overrides } });
  const stopCommand = (sid: string) => makeCommand({ issuer, deviceId, action: 'stream.stop', overrides: { sid, sub: 'insp-0042' } });
  const latestState = () => recorder.on('state').at(-1)?.json as { streaming: { sessions: number; list: { sid: string; state: string; operator: string }[] }; firmware: { lastPattern: string | null } };
  const auditEntries = () => recorder.on('audit').map((m) => m.json?.entry as AuditEntry | undefined).filter((e): e is AuditEntry => e !== undefined);
  const stopEntry = (sid: string) => auditEntries().find((e) => e.type === 'stream.stop' && e.detail.sid === sid);
  const waitForStop = async (sid: string, timeoutMs: number, what: string): Promise<AuditEntry> => {
    await recorder.waitFor(() => stopEntry(sid) !== undefined, timeoutMs, what);
    return stopEntry(sid)!;
  };
  /** Opens a viewer, has its stream authorised and waits for decoded frames. */
  const watch = async (overrides: Record<string, unknown> = {}): Promise<{ viewer: Viewer; sid: string; acceptedAt: number }> => {
    const viewer = await viewers.open();
    const offer = await viewer.createOffer({ audio: true });
    const reply = await request(startCommand(offer, overrides).payload);
    const acceptedAt = Date.now();
    t.match(reply, { ok: true, sid: /^s-/, answer: /^v=0/ }, 'stream.start accepted with an answer');
    await viewer.applyAnswer(reply.answer!);
    await viewer.waitForVideo((v) => v.framesDecoded > 5, 20_000, 'decoded frames');
    return { viewer, sid: reply.sid!, acceptedAt };
  };

  await t.test('a viewer decodes the configured picture and audio; stream.stop ends it', async (t) => {
    // stream.warmUp (the default): before any view, one loopback handshake inside the agent.
    await agent.waitForOutput(/live view warm(ed up|-up)/, 30_000);
    const warmUp = agent.output.split('\n').find((l) => /live view warm(ed up|-up)/.test(l))!;
    t.match(JSON.parse(warmUp), { msg: /^live view warmed up/, handshakeMs: Number }, `the agent warmed werift up before the first view: ${warmUp}`);
    const { viewer, sid } = await watch();
    // The default stream.firstFrame, "gop-cache": the agent breaks the first frame into its steps;
    // the keyframe came from the cache, or (the encoder slower than ICE and DTLS) from the encoder.
    await agent.waitForOutput(new RegExp(`"sid":"${sid}"[^\\n]*live view first keyframe sent`), 10_000);
    const firstFrame = agent.output.split('\n').filter((l) => l.includes('live view first keyframe sent') && l.includes(sid)).map((l) => JSON.parse(l) as { firstFrame: string; source: string; steps: { verified: number; answered: number; dtlsConnected: number; keyframe: number } })[0]!;
    t.equal(firstFrame.firstFrame, 'gop-cache', 'the GOP cache is the default');
    t.match(firstFrame.source, /^(gop-cache|encoder)$/, `first keyframe from: ${firstFrame.source}`);
    t.ok(firstFrame.steps.verified <= firstFrame.steps.answered && firstFrame.steps.answered <= firstFrame.steps.dtlsConnected && firstFrame.steps.dtlsConnected <= firstFrame.steps.keyframe, `steps in order: ${JSON.stringify(firstFrame.steps)}`);
    const answer = auditEntries();
    t.ok(answer.some((e) => e.type === 'command.decision' && e.operator === 'insp-0042'), 'the decision names the operator');
    const first = await viewer.waitForVideo((v) => v.framesDecoded > 20, 20_000, 'frames keep coming');
    t.equal(first.frameWidth, width, `frame width ${first.frameWidth} as configured`);
    t.equal(first.frameHeight, height, `frame height ${first.frameHeight} as configured`);
    t.ok((await viewer.inboundAudioPackets()) > 0, 'Opus audio arrives');
    await recorder.waitFor(() => latestState()?.streaming.list.some((s) => s.sid === sid && s.state === 'connected') ?? false, 10_000, 'state shows the session connected');
    t.equal(latestState().streaming.list.find((s) => s.sid === sid)?.operator, 'insp-0042', 'state names who is watching');
    await recorder.waitFor(() => latestState()?.firmware?.lastPattern === 'stream-start', 10_000, 'the wearer was told: stream-start');

    t.match(await request(stopCommand(sid).payload), { ok: true, sid }, 'stream.stop accepted');
    const stop = await waitForStop(sid, 10_000, 'stream.stop audited');
    t.match(stop, { operator: 'insp-0042', detail: { cause: 'stream_stop' } }, 'audited as stopped by the operator');
    t.ok(auditEntries().some((e) => e.type === 'stream.start' && e.detail.sid === sid && e.reason === 'public-safety'), 'the start is audited with its reason');
    // Wait for the viewer to see its connection end (the camera's DTLS close, or ICE consent
    // running out), not for a guessed time: a loaded machine still decodes buffered frames a
    // second after the stop. From then on no packet can be accepted, so a count that still grows
    // means the camera kept sending.
    const deadline = Date.now() + 30_000;
    while ((await viewer.state()).connectionState === 'connected') {
      if (Date.now() > deadline) throw new Error('the viewer still connected 30 s after stream.stop');
      await new Promise((r) => setTimeout(r, 100));
    }
    // Then the count must settle (two reads 300 ms apart equal; packets received just before the end can
    // still be in Chromium's stats under load); a camera that keeps sending video never settles.
    const after = await settledCount(async () => (await viewer.inboundVideo()).packetsReceived, 'video packets received after the viewer saw the connection end');
    await new Promise((r) => setTimeout(r, 1000));
    t.equal((await viewer.inboundVideo()).packetsReceived, after, 'no video packet arrives once the viewer saw the connection end');
    await recorder.waitFor(() => latestState()?.streaming.sessions === 0, 10_000, 'the session is gone from state');
    t.same(latestState().streaming.list, [], 'no session listed');
    await recorder.waitFor(() => latestState()?.firmware?.lastPattern === 'stream-stop', 10_000, 'the wearer was told: stream-stop');
    t.match(await request(stopCommand(sid).payload), { ok: false, code: 'unknown_session' }, 'a second stop: unknown_session');
    await viewer.vanish();
  });

  await t.test('forged or mismatched commands: a reason code, no answer, no socket', async (t) => {
    const pid = agent.child.pid!;
    const viewer = await viewers.open();
    const offer = await viewer.createOffer();
    const other = await (await viewers.open()).createOffer();
    const before = udpSockets(pid);
    const swapped = startCommand(other);
    const cases: [string, Buffer, string][] = [
      ['swapped offer', Buffer.from(JSON.stringify({ token: swapped.token, offer })), 'offer_mismatch'],
      ['wrong device', makeCommand({ issuer, deviceId: 'cam-elsewhere', action: 'stream.start', offer }).payload, 'wrong_device'],
      ['expired', makeCommand({ issuer, deviceId, action: 'stream.start', offer, nowS: Math.floor(Date.now() / 1000) - 900 }).payload, 'expired'],
      ['unknown issuer', makeCommand({ issuer: await makeIssuer({ kid: 'stranger' }), deviceId, action: 'stream.start', offer }).payload, 'unknown_key'],
      ['over the duration policy', startCommand(offer, { max_s: 999_999 }).payload, 'duration_exceeds_policy'],
    ];
    for (const [name, payload, code] of cases) {
      const reply = await request(payload);
      t.match(reply, { ok: false, code }, `${name} -> ${code}`);
      t.notOk('answer' in reply, `${name}: no answer`);
    }
    const sendrecv = offer.replace(/a=recvonly/g, 'a=sendrecv');
    t.match(await request(startCommand(sendrecv).payload), { ok: false, code: 'unsupported_offer' }, 'a viewer that would send media: unsupported_offer');
    t.same([...udpSockets(pid)].sort(), [...before].sort(), 'the agent opened no UDP socket for any of them');
    await recorder.waitFor(() => auditEntries().filter((e) => e.type === 'command.decision' && (e as { decision?: string } & AuditEntry).decision === 'rejected').length >= 5, 10_000, 'the refusals are audited');
    t.equal(auditEntries().filter((e) => e.type === 'stream.start').length, 1, 'no stream.start audited beyond the first test');
    await viewer.vanish();
  });

  await t.test('two viewers at once both decode; a third gets busy', async (t) => {
    const a = await watch();
    const b = await watch({ reason: 'major-incident' });
    const [va, vb] = [await a.viewer.inboundVideo(), await b.viewer.inboundVideo()];
    await a.viewer.waitForVideo((v) => v.framesDecoded > va.framesDecoded + 10, 15_000, 'viewer A keeps decoding');
    await b.viewer.waitForVideo((v) => v.framesDecoded > vb.framesDecoded + 10, 15_000, 'viewer B keeps decoding');
    t.pass('both decode at once');
    const third = await viewers.open();
    const reply = await request(startCommand(await third.createOffer()).payload);
    t.match(reply, { ok: false, code: 'busy' }, 'the third: busy');
    t.notOk('answer' in reply, 'no answer for the third');
    await recorder.waitFor(() => latestState()?.streaming.sessions === 2, 10_000, 'state lists two sessions');
    // One leaves politely (RTCPeerConnection.close: a DTLS close alert), the other is stopped.
    await a.viewer.hangUp();
    await b.viewer.vanish();
    t.match(await request(stopCommand(b.sid).payload), { ok: true }, 'stream.stop for B');
    const endA = await waitForStop(a.sid, 20_000, 'A ended');
    t.equal(endA.detail.cause, 'viewer_closed', 'A hung up: viewer_closed, at once, not after the grace');
    await a.viewer.vanish();
    await third.vanish();
    await recorder.waitFor(() => latestState()?.streaming.sessions === 0, 10_000, 'no sessions left');
  });

  await t.test('viewer loss: a page closed without a goodbye ends the session as viewer_lost', async (t) => {
    const { viewer, sid } = await watch();
    const goneAt = Date.now();
    await viewer.vanish();
    const stop = await waitForStop(sid, 3_000 + 20_000, 'viewer_lost');
    t.equal(stop.detail.cause, 'viewer_lost', 'audited as viewer_lost');
    const lastHeardS = stop.detail.lastHeardS as number;
    t.ok(lastHeardS >= 3, `the viewer was silent for the whole grace (${lastHeardS} s >= 3 s)`);
    t.comment(`ended ${((Date.now() - goneAt) / 1000).toFixed(1)} s after the page closed (grace 3 s)`);
  });

  await t.test('max_s ends a session on time, never before', async (t) => {
    const { viewer, sid } = await watch({ max_s: 6 });
    const stop = await waitForStop(sid, 6_000 + 20_000, 'max_duration');
    t.equal(stop.detail.cause, 'max_duration', 'audited as max_duration');
    const start = auditEntries().find((e) => e.type === 'stream.start' && e.detail.sid === sid)!;
    const endsBy = Date.parse(start.detail.endsBy as string);
    const stoppedAt = Date.parse((stop as AuditEntry & { time: string }).time);
    t.ok(stoppedAt >= endsBy, `not cut short: stopped at ${new Date(stoppedAt).toISOString()}, max_s ran out at ${start.detail.endsBy as string}`);
    t.comment(`ended ${stoppedAt - endsBy} ms after max_s ran out`);
    await viewer.vanish();
  });

  await t.test('a capture worker crash mid-view: the worker restarts and the same view carries on', async (t) => {
    const { viewer, sid } = await watch();
    const capture = () => (recorder.on('state').at(-1)?.json as { capture: { pid: number | null; restarts: number; status: string } }).capture;
    const { pid, restarts } = capture();
    t.ok(pid, `capture worker pid ${pid}`);
    process.kill(pid!, 'SIGKILL');
    await recorder.waitFor(() => capture().restarts > restarts && capture().status === 'running', 30_000, 'capture restarted');
    const before = (await viewer.inboundVideo()).framesDecoded;
    await viewer.waitForVideo((v) => v.framesDecoded > before + 15, 20_000, 'frames from the new worker');
    t.pass('the viewer decodes the restarted worker\'s stream');
    t.equal(stopEntry(sid), undefined, 'the session was not ended by a restart within the grace');
    t.ok(recorder.on('event').some((m) => m.json?.type === 'capture.fault'), 'the crash is reported as capture.fault');
    t.match(await request(stopCommand(sid).payload), { ok: true });
    await viewer.vanish();
  });

  await t.test('agent shutdown ends a live session, audited', async (t) => {
    const { sid } = await watch();
    const exit = await agent.stop('SIGTERM');
    t.equal(exit.code, 0, 'clean exit');
    const stop = await waitForStop(sid, 10_000, 'agent_shutdown audited');
    t.equal(stop.detail.cause, 'agent_shutdown', 'audited as agent_shutdown');
    await recorder.waitFor(() => recorder.on('state').at(-1)?.json?.online === false, 10_000, 'the offline state');
    t.match(recorder.on('state').at(-1)?.json, { online: false, streaming: { sessions: 0, list: [] } }, 'offline state shows no live view');
  });
});
