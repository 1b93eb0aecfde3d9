/// <reference lib="dom" />
// The officer in the loop in the console (issue 19), in headless Chromium against the real console
// process and a real mosquitto. The camera is a test MQTT client publishing on its topics in the
// shapes of the contract (officer.* events, audit entries signed by its device key) and
// answering its `cmd` topic, with a second Chromium page as its WebRTC end (video out, talk-back
// audio in). Checked: a watch-me shows at once (banner, beep, both map kinds, list) and one click on
// "Watch" opens a playing live view with reason officer-request signed for that supervisor; an
// emergency shows until the CAMERA says it was acknowledged ("Acknowledge" signs alert.ack; "Clear"
// the same with clear: true); push-to-talk offers a send-receive audio m-line and attaches the
// (fake) microphone only while held, by mouse or Space; the viewer's playout delay is set; the audit
// view has its bookmark and trigger columns. The end-to-end test with the real agent is
// test/officer-console-e2e.test.ts.
import { createServer } from 'node:http';
import mqtt from 'mqtt';
import t from 'tap';
import { liveChain } from './helpers/audit-fixtures.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { openCanvasCamera, signInToConsole } from './helpers/console-page.ts';
import { startConsole } from './helpers/console-process.ts';
import { startBroker } from './helpers/mosquitto.ts';
import { settledCount } from './helpers/settled-count.ts';

const cam = 'cam-0300';
const users = [
  { user: 'sgt1', operator: 'sgt-0001', password: 'pw-1', roles: ['supervisor'] },
  { user: 'psd1', operator: 'psd-0001', password: 'pw-3', roles: ['standards'] },
];

type Claims = { act: string; sub: string; reason: string; alert_id?: string; clear?: boolean; talk?: boolean; sid?: string };

t.test('officer alerts, watch-me, acknowledgement, push-to-talk, playout delay and the audit columns', async (t) => {
  const t0 = performance.now();
  const broker = await startBroker();
  // A tile server for the base map (tiles are not what is checked here).
  const tiles = createServer((_req, res) => res.writeHead(404).end());
  await new Promise<void>((resolve) => tiles.listen(0, '127.0.0.1', resolve));
  const tileUrl = `http://127.0.0.1:${(tiles.address() as { port: number }).port}/{z}/{x}/{y}.png`;
  // One console (with a base map), Chromium and the camera's key, made side by side.
  const [console_, viewers, chain] = await Promise.all([
    startConsole(broker.url, users, ['--tile-url', tileUrl]),
    ChromiumViewers.launch(['--disable-features=WebRtcHideLocalIpsWithMdns', '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream']),
    liveChain(cam),
  ]);
  const device = await mqtt.connectAsync(broker.url, { protocolVersion: 5 });
  t.teardown(async () => {
    t.comment(`ran in ${Math.round(performance.now() - t0)} ms`);
    await viewers.close();
    await device.endAsync(true);
    await console_.stop();
    await new Promise((resolve) => tiles.close(resolve));
    await broker.dispose();
  });

  // ---- the camera ----
  await console_.enrol(cam, chain.key.publicJwk);
  const views: Record<string, unknown>[] = [];
  const state = () => JSON.stringify({
    online: true, deviceId: cam, recording: true,
    commandPolicy: { reasons: ['officer-safety', 'officer-request', 'public-safety'], maxStreamDurationS: 600, maxConcurrentStreams: 2 },
    streaming: { sessions: views.length, bitrateKbps: null, list: views },
    gps: { gpsd: 'connected', fix: '3d', gpsTime: new Date().toISOString(), lat: 51.5014, lon: -0.1419, accuracyM: 8 },
  });
  await device.publishAsync(`bwc/v1/${cam}/state`, state(), { qos: 1, retain: true });
  const event = (body: Record<string, unknown>) => device.publishAsync(`bwc/v1/${cam}/event`, JSON.stringify({ time: new Date().toISOString(), seq: 1, ...body }), { qos: 1 });

  const cameraPage = await openCanvasCamera(viewers);
  /** The camera's WebRTC answer: video out; the talk-back m-line received only when the token grants talk. */
  const cameraAnswers = (offer: string, talk: boolean) => cameraPage.evaluate(async ({ offer, talk }) => {
    const g = globalThis as unknown as { pc?: RTCPeerConnection; track: MediaStreamTrack };
    g.pc?.close();
    const pc = (g.pc = new RTCPeerConnection());
    await pc.setRemoteDescription({ type: 'offer', sdp: offer });
    for (const tr of pc.getTransceivers()) {
      if (tr.receiver.track.kind === 'video') {
        tr.direction = 'sendonly';
        await tr.sender.replaceTrack(g.track);
      } else tr.direction = talk ? 'recvonly' : 'inactive';
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await new Promise<void>((resolve) => {
      const check = () => pc.iceGatheringState === 'complete' && resolve();
      pc.addEventListener('icegatheringstatechange', check);
      check();
    });
    return pc.localDescription!.sdp;
  }, { offer, talk });
  const cameraAudioPackets = () => cameraPage.evaluate(async () => {
    let n = 0;
    (await (globalThis as unknown as { pc: RTCPeerConnection }).pc.getStats()).forEach((s: Record<string, unknown>) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio' && typeof s.packetsReceived === 'number') n = s.packetsReceived;
    });
    return n;
  });

  const commands: Claims[] = [];
  const offers: string[] = [];
  /** The camera's acknowledgement events wait here until the test lets them go. */
  const heldEvents: (() => Promise<unknown>)[] = [];
  let holdEvents = false;
  let sids = 0;
  await device.subscribeAsync(`bwc/v1/${cam}/cmd`, { qos: 1 });
  device.on('message', (topic, payload, packet) => {
    if (topic !== `bwc/v1/${cam}/cmd`) return;
    const body = JSON.parse(payload.toString()) as { token: string; offer?: string };
    const claims = JSON.parse(Buffer.from(body.token.split('.')[1]!, 'base64url').toString()) as Claims;
    commands.push(claims);
    const reply = (r: Record<string, unknown>) => device.publishAsync(packet.properties!.responseTopic!, JSON.stringify(r), { qos: 1, properties: { correlationData: packet.properties!.correlationData! } });
    void (async () => {
      if (claims.act === 'stream.start') {
        offers.push(body.offer!);
        const answer = await cameraAnswers(body.offer!, claims.talk === true);
        const sid = `s-${++sids}`;
        const endsBy = new Date(Date.now() + 300_000).toISOString();
        views.splice(0, views.length, { sid, operator: claims.sub, reason: claims.reason, state: 'connected', startedAt: new Date().toISOString(), endsBy, covert: false });
        await reply({ ok: true, sid, answer, endsBy });
        await device.publishAsync(`bwc/v1/${cam}/state`, state(), { qos: 1, retain: true });
      } else if (claims.act === 'stream.stop') {
        views.splice(0, views.length);
        await reply({ ok: true });
        await device.publishAsync(`bwc/v1/${cam}/state`, state(), { qos: 1, retain: true });
      } else if (claims.act === 'alert.ack') {
        await reply({ ok: true });
        const said = () => (claims.clear
          ? event({ type: 'officer.emergency_cleared', alertId: claims.alert_id, by: 'operator', operator: claims.sub })
          : event({ type: 'officer.emergency_acknowledged', alertId: claims.alert_id, operator: claims.sub }));
        if (holdEvents) heldEvents.push(said);
        else await said();
      }
    })();
  });

  /** plainMap: Leaflet is kept from loading, so the page falls back to its own SVG map (the other map kind). */
  const signIn = (base: string, user: string, password: string, plainMap = false) =>
    signInToConsole(viewers, {
      base,
      user,
      password,
      camera: cam,
      // The page's default wait, a hang guard: the live-view waits below go through two Chromium pages
      // and ICE (test/officer-console-e2e.test.ts gives the same flow 60 s).
      timeoutMs: 60_000,
      beforeLoad: plainMap ? (page) => page.route('**/vendor/leaflet.js', (route) => route.abort()) : undefined,
    });
  const beeps = async (page: Awaited<ReturnType<typeof signIn>>['page']) => Number(await page.getByTestId('officer-banner').getAttribute('data-beeps'));
  t.comment(`set up in ${Math.round(performance.now() - t0)} ms`);
  const { page, errors } = await signIn(console_.url, 'sgt1', 'pw-1', true);
  const { page: basePage, errors: baseErrors } = await signIn(console_.url, 'sgt1', 'pw-1');

  await t.test('watch-me: banner, beep, both maps, list; one click and the view plays, officer-request for this supervisor', async (t) => {
    await event({ type: 'officer.watch_me', requestId: 'wm-1', position: { lat: 51.5014, lon: -0.1419, accuracyM: 8 }, recordingId: 'rec-1' });
    await page.getByTestId('banner-wm-1').waitFor();
    t.match(await page.getByTestId('banner-wm-1').textContent(), /cam-0300 asks to be watched, at .* 51\.50140, -0\.14190 ±8 m/);
    t.ok(await beeps(page) >= 1, 'a beep was played');
    await page.locator(`[data-testid="map-camera-${cam}"].officer-watch-me`).waitFor();
    t.pass('the camera is marked on the plain map');
    await basePage.locator(`path.cam-${cam}.officer-watch-me`).waitFor();
    t.pass('and on the base map');
    t.equal(await page.getByTestId('officer-alert-wm-1').getAttribute('data-state'), 'open');

    await page.getByTestId('officer-banner').getByTestId('watch-wm-1').click();
    await page.waitForFunction(() => (document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')?.currentTime ?? 0) > 0.3);
    t.pass('one click: the live view plays');
    t.match(commands.at(-1), { act: 'stream.start', reason: 'officer-request', sub: 'sgt-0001' }, 'signed for the supervisor who clicked, reason officer-request');
    t.notOk(commands.at(-1)!.talk, 'no talk claim unless asked for');
    await page.getByTestId('officer-state-wm-1').filter({ hasText: 'Answered by sgt-0001' }).waitFor();
    t.equal(await page.getByTestId('officer-banner').isHidden(), true, 'answered: out of the banner');
    await page.locator(`[data-testid="map-camera-${cam}"]:not(.officer-watch-me)`).waitFor();
    t.equal(await page.getByTestId('live-video').getAttribute('data-playout-delay-ms'), '300', 'the video receiver\'s playout delay is the console\'s (default 300 ms)');
    await page.getByTestId('stop-live').click();
    await page.locator('#viewer').waitFor({ state: 'hidden' });
  });

  await t.test('emergency: shown until the camera says it was acknowledged, then cleared', async (t) => {
    const before = await beeps(page);
    await event({ type: 'officer.emergency', alertId: 'em-1', source: 'trigger', trigger: 'taser', position: { lat: 51.5014, lon: -0.1419, accuracyM: 5 }, recordingId: 'rec-1' });
    await page.getByTestId('banner-em-1').waitFor();
    t.match(await page.getByTestId('banner-em-1').textContent(), /EMERGENCY: cam-0300 \(trigger: taser\)/);
    t.ok(await beeps(page) > before, 'it beeps');
    await page.locator(`[data-testid="map-camera-${cam}"].officer-emergency`).waitFor();
    await basePage.locator(`path.cam-${cam}.officer-emergency`).waitFor();
    t.pass('marked on both maps');

    holdEvents = true;
    await page.getByTestId('officer-banner').getByTestId('officer-ack-em-1').click();
    await page.getByTestId('officer-status').filter({ hasText: 'Acknowledgement of em-1 accepted by cam-0300' }).waitFor();
    t.match(commands.at(-1), { act: 'alert.ack', alert_id: 'em-1', reason: 'officer-safety', sub: 'sgt-0001' }, 'alert.ack signed for the supervisor who clicked');
    t.notOk(commands.at(-1)!.clear);
    t.match(await page.getByTestId('officer-state-em-1').textContent(), /NOT ACKNOWLEDGED/, 'the click alone does not make it acknowledged');
    holdEvents = false;
    for (const said of heldEvents.splice(0)) await said();
    await page.getByTestId('officer-state-em-1').filter({ hasText: 'Acknowledged by sgt-0001' }).waitFor();
    t.pass('acknowledged once the camera said so (officer.emergency_acknowledged)');
    t.equal(await page.getByTestId('officer-banner').isHidden(), true, 'out of the banner');
    t.equal(await page.locator(`[data-testid="map-camera-${cam}"].officer-emergency`).count(), 1, 'still marked on the map until cleared');

    await page.getByTestId('officer-clear-em-1').click();
    await page.getByTestId('officer-state-em-1').filter({ hasText: 'cleared by sgt-0001' }).waitFor();
    t.match(commands.at(-1), { act: 'alert.ack', alert_id: 'em-1', clear: true });
    await page.locator(`[data-testid="map-camera-${cam}"]:not(.officer-emergency)`).waitFor();
    t.pass('cleared: the map mark goes');
    const psd = await signIn(console_.url, 'psd1', 'pw-3');
    t.equal(await psd.page.locator('#officer-card').isHidden(), true, 'a standards user is shown no officer alerts');
    t.equal(await psd.page.getByTestId('officer-banner').isHidden(), true);
  });

  await t.test('push-to-talk: a send-receive audio m-line; the microphone attached only while held', async (t) => {
    await page.getByTestId('talk-check').check();
    await page.getByTestId('reason-select').selectOption('officer-safety');
    await page.getByTestId('request-live').click();
    await page.waitForFunction(() => (document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')?.currentTime ?? 0) > 0.3);
    t.match(commands.at(-1), { act: 'stream.start', talk: true, sub: 'sgt-0001' }, 'the token carries talk: true');
    const audio = offers.at(-1)!.split(/\r\nm=/).find((m) => m.startsWith('audio'));
    t.match(audio, /a=sendrecv/, 'the offer has a send-receive audio m-line');
    const button = page.getByTestId('talk-button');
    await button.waitFor();
    t.equal(await page.getByTestId('talk-state').textContent(), 'not talking');
    t.equal(await cameraAudioPackets(), 0, 'nothing sent before the button is held');

    await button.hover();
    await page.mouse.down();
    await page.getByTestId('talk-state').filter({ hasText: /^talking$/ }).waitFor();
    // Polled (getStats is asynchronous); the deadline is a hang guard, not a speed check.
    for (const deadline = Date.now() + 20_000; (await cameraAudioPackets()) < 25;) {
      if (Date.now() > deadline) throw new Error(`the camera received ${await cameraAudioPackets()} audio packets in 20 s of talking`);
      await new Promise((r) => setTimeout(r, 50));
    }
    t.pass('held: the camera receives the microphone\'s audio');
    await page.mouse.up();
    await page.getByTestId('talk-state').filter({ hasText: 'not talking' }).waitFor();
    // Packets sent just before the release may still be on their way through the two pages' WebRTC
    // threads (a loaded machine): the count at release is the one that has settled, two reads 300 ms
    // apart equal. Audio that never stops never settles: the hang guard then fails the test.
    const atRelease = await settledCount(cameraAudioPackets, 'audio packets received by the camera after the release');
    // Released: let a second of video pass (30 more frames decoded by the page) and count again.
    const frames = () => page.evaluate(async () => {
      const v = document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')!;
      return v.getVideoPlaybackQuality().totalVideoFrames;
    });
    const f0 = await frames();
    await page.waitForFunction((f0) => document.querySelector<HTMLVideoElement>('[data-testid="live-video"]')!.getVideoPlaybackQuality().totalVideoFrames > f0 + 30, f0, { polling: 50 });
    const after = await cameraAudioPackets();
    t.ok(after - atRelease <= 5, `released: the audio stopped (${after - atRelease} packets after release, ${atRelease} while held)`);

    await page.locator('body').click({ position: { x: 2, y: 2 } }); // focus off any form field
    await page.keyboard.down(' ');
    await page.getByTestId('talk-state').filter({ hasText: /^talking$/ }).waitFor();
    t.pass('the Space bar holds it too');
    await page.keyboard.up(' ');
    await page.getByTestId('talk-state').filter({ hasText: 'not talking' }).waitFor();
    await page.getByTestId('stop-live').click();
    await page.locator('#viewer').waitFor({ state: 'hidden' });
  });

  await t.test('the audit view: bookmark and trigger columns', async (t) => {
    const publish = async (record: Parameters<typeof chain.append>[0]) => {
      for (const m of chain.append(record)) await device.publishAsync(`bwc/v1/${cam}/audit`, JSON.stringify(m), { qos: 1 });
    };
    await publish({ type: 'agent.start', detail: { version: 'test' } });
    await publish({ type: 'officer.trigger', detail: { source: 'holster', actions: ['record'], recordingId: 'rec-9' } });
    await publish({ type: 'recording.started', detail: { recordingId: 'rec-9', trigger: { kind: 'trigger', source: 'holster' } } });
    await publish({ type: 'recording.bookmark', detail: { markId: 'mk-1', recordingId: 'rec-9', offsetS: 12.5, source: 'button', operator: null, note: null } });
    await publish({ type: 'recording.bookmark', operator: 'sgt-0001', detail: { markId: 'mk-2', recordingId: 'rec-9', offsetS: 30, source: 'command', operator: 'sgt-0001', note: 'suspect leaves' } });
    await publish({ type: 'officer.trigger', detail: { source: 'input-9', actions: [], recordingId: null } });
    await page.getByTestId(`camera-${cam}`).getByRole('button').click();
    await page.getByTestId('audit-bookmark-5').waitFor();
    t.match(await page.getByTestId('audit-trigger-2').textContent(), /holster → record/);
    t.match(await page.getByTestId('audit-trigger-3').textContent(), /trigger: holster/);
    t.match(await page.getByTestId('audit-bookmark-4').textContent(), /mark at 12\.5 s of rec-9, by the wearer/);
    t.match(await page.getByTestId('audit-bookmark-5').textContent(), /mark at 30\.0 s of rec-9, by sgt-0001 — “suspect leaves”/);
    await page.getByTestId('audit-trigger-6').waitFor();
    t.match(await page.getByTestId('audit-trigger-6').textContent(), /input-9 → ignored \(not configured\)/);
    t.equal(await page.getByTestId('audit-bookmark-2').textContent(), '', 'no bookmark on other entries');
  });

  t.same(errors, [], 'no page errors');
  t.same(baseErrors, [], 'no page errors on the base-map console');
});

