// The live view over a bad link, for real: the agent in its own network namespace with the real
// GStreamer pipeline, impaired with what this kernel has (iptables statistic loss, tc tbf caps,
// UDP blocked), delay from the project's UDP relay in front of a real coturn, and a real Chromium
// as the viewer. How long things took is printed as comments; nothing asserts a duration.
import t from 'tap';
import { createBadLinkRig, videoOver, type Rig } from './helpers/bad-link-rig.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`not seen within ${timeoutMs} ms: ${what}`);
    await sleep(200);
  }
  return Date.now() - started;
}

if (process.getuid?.() !== 0) {
  t.fail('these tests need root (ip netns, iptables, tc); run the suite as root as CI does');
} else {
  t.test('live view over a bad link', async (t) => {
    const rig: Rig = await createBadLinkRig({ turn: true });
    t.teardown(() => rig.dispose());
    const turn = rig.turn!;
    const viewerIce = rig.viewerTurn();

    await t.test('TURN only (direct UDP blocked): through coturn on UDP, then TCP, then TLS', async (t) => {
      for (const transport of ['udp', 'tcp', 'tls'] as const) {
        if (transport === 'udp') await rig.net.blockUdp({ exceptTo: [{ address: turn.listenAddress, port: turn.port }] });
        else await rig.net.blockAllUdp();
        const before = turn.allocations();
        await rig.startAgent({ ice: rig.relayOnlyIce(turn.urls[transport], { turnCaFile: turn.caFile }) });
        const { viewer } = await rig.watch(viewerIce);
        const v = await viewer.waitForVideo((s) => s.framesDecoded > 30, 30_000, `frames over TURN/${transport}`);
        t.ok(v.framesDecoded > 30, `TURN/${transport}: ${v.framesDecoded} frames decoded`);
        const path = await viewer.selectedPath();
        t.equal(path?.remoteType, 'relay', `TURN/${transport}: the camera's side of the path is a relay candidate`);
        t.ok(turn.allocations() >= before + 2, `TURN/${transport}: coturn allocated for both sides (${turn.allocations() - before})`);
        if (transport !== 'udp') t.match(turn.log, transport === 'tcp' ? /TCP/ : /TLS/, `coturn served a ${transport.toUpperCase()} client`);
        await viewer.vanish();
        await rig.stopAgent();
        await rig.net.unblockUdp();
      }
    });

    await t.test('200 ms RTT and 3 % loss: video keeps decoding; RTX answers NACKs', async (t) => {
      await rig.startAgent({ ice: rig.relayOnlyIce(await rig.delayedTurn(100)) });
      const { viewer } = await rig.watch(viewerIce);
      await rig.net.setLoss({ percent: 3, direction: 'both', protocol: 'udp' });
      const start = await viewer.inboundVideo();
      // Ten steps of 15 more decoded frames each (~1 s of video), each waited for, not counted in fixed
      // 2 s windows: a loaded machine's stall would leave a window empty with the link fine. A link
      // that stops delivering still fails the step's 20 s hang guard. The freezes are reported below.
      const stepMs: number[] = [];
      for (let i = 0; i < 10; i++) {
        const from = (await viewer.inboundVideo()).framesDecoded;
        const began = performance.now();
        await viewer.waitForVideo((v) => v.framesDecoded >= from + 15, 20_000, `video still decoding at 3 % loss (step ${i + 1} of 10)`);
        stepMs.push(Math.round(performance.now() - began));
      }
      const end = await viewer.inboundVideo();
      await rig.net.clearLoss();
      const path = await viewer.selectedPath();
      t.pass(`video kept decoding: 15 more frames ten times over (ms per step: ${stepMs.join(' ')})`);
      t.ok(end.packetsLost > start.packetsLost || end.nackCount > start.nackCount, 'the loss was real (packets lost or NACKed)');
      t.ok(end.retransmittedPacketsReceived > start.retransmittedPacketsReceived, `RTX retransmissions received: ${end.retransmittedPacketsReceived - start.retransmittedPacketsReceived}`);
      t.comment(
        `ten steps at 3 % loss, RTT ${path?.rttMs ?? '?'} ms: ${end.framesDecoded - start.framesDecoded} frames, ${end.freezeCount - start.freezeCount} freezes, ` +
          `${(end.totalFreezesDuration - start.totalFreezesDuration).toFixed(2)} s frozen, ${end.nackCount - start.nackCount} NACKs, ${end.pliCount - start.pliCount} PLIs`,
      );
      t.ok((path?.rttMs ?? 0) >= 200, `the path's RTT includes the relay's 200 ms (${path?.rttMs} ms)`);
      await viewer.vanish();
      await rig.stopAgent();
    });

    await t.test('a 500 kbit/s cap: the live bitrate goes under it, and back up when it lifts', async (t) => {
      await rig.startAgent({ ice: { interfaces: [rig.net.cameraInterface] }, bitrate: { startKbps: 1200, maxKbps: 1500, minKbps: 150 } });
      const { viewer } = await rig.watch();
      const bitrate = () => rig.latestState()?.bitrateKbps ?? null;
      await until('the live bitrate reported', () => typeof bitrate() === 'number', 10_000);
      t.ok(bitrate()! > 500, `before the cap: ${bitrate()} kbit/s`);
      await rig.net.capBandwidth(500);
      t.teardown(() => {
        const lines = rig.agentOutput().split('\n').filter((l) => l.includes('"live bitrate"'));
        t.comment(`the agent's last bitrate decisions:\n${lines.slice(-6).join('\n')}`);
      });
      const down = await until('the live bitrate under 500 kbit/s', () => (bitrate() ?? Infinity) < 500, 45_000);
      t.pass(`under the cap ${(down / 1000).toFixed(1)} s after it: ${bitrate()} kbit/s`);
      const from = (await viewer.inboundVideo()).framesDecoded;
      await viewer.waitForVideo((v) => v.framesDecoded >= from + 15, 20_000, 'video still decoding under the cap');
      const capped = await videoOver(viewer, 4000);
      t.pass(`video keeps playing under the cap (then ${capped.frames} frames, ${capped.kbps} kbit/s received over 4 s)`);
      await rig.net.clearCap();
      // An upper bound, not a target: the climb took 22-34 s in earlier runs, but over 60 s in one
      // clean-clone run on 2026-12-02 (after the GOP cache, FEC and talk-back merges, on a loaded
      // machine; the last decisions climbed 10 %/s as designed, so the time went in the hold-off
      // after a congestion signal). Not explained yet: the closing note of issues 18/19 says so.
      const up = await until('the live bitrate back over 700 kbit/s', () => (bitrate() ?? 0) > 700, 120_000);
      t.pass(`back up ${(up / 1000).toFixed(1)} s after the cap lifted: ${bitrate()} kbit/s`);
      await viewer.vanish();
      await rig.stopAgent();
    });

    await t.test('the camera moves to a new address mid-stream: video resumes without a new stream.start; audited', async (t) => {
      await rig.startAgent({ ice: { interfaces: [rig.net.cameraInterface] } });
      const { viewer, sid } = await rig.watch();
      rig.answerRestarts(viewer, sid);
      const old = rig.net.cameraAddress;
      t.equal((await viewer.selectedPath())?.remoteAddress, old, 'media comes from the old address');
      await rig.net.changeAddress();
      const moved = Date.now();
      const frames = (await viewer.inboundVideo()).framesDecoded;
      await until('frames again after the move', async () => (await viewer.inboundVideo()).framesDecoded > frames + 15, 40_000);
      t.comment(`video resumed ${((Date.now() - moved) / 1000).toFixed(1)} s after the address changed`);
      t.equal((await viewer.selectedPath())?.remoteAddress, rig.net.cameraAddress, `media now comes from the new address ${rig.net.cameraAddress}`);
      const audit = rig.audit();
      t.ok(audit.some((e) => e.type === 'stream.ice_restart' && e.detail.sid === sid && e.detail.cause === 'network_changed'), 'the restart offer is audited, cause network_changed');
      t.ok(audit.some((e) => e.type === 'stream.ice_restarted' && e.detail.sid === sid && e.operator === 'console-auto'), 'the accepted answer is audited with who answered');
      t.notOk(audit.some((e) => e.type === 'stream.stop' && e.detail.sid === sid), 'the session did not end');
      t.equal(audit.filter((e) => e.type === 'stream.start' && e.detail.sid === sid).length, 1, 'one stream.start for this view, none after the move');
      await until('state shows the restart', () => (rig.latestState()?.list.find((s) => s.sid === sid)?.iceRestarts ?? 0) >= 1, 10_000);
      // werift's ICE logs (DEBUG=werift-ice*) name every STUN server it asks: its public default must never be one.
      t.match(rig.agentOutput(), /werift-ice/, 'werift\'s ICE log was captured');
      t.notMatch(rig.agentOutput(), /stun\.l\.google\.com/, 'no public STUN server asked, at the first gathering or the restart');
      await viewer.vanish();
      await rig.stopAgent();
    });
  });
}
