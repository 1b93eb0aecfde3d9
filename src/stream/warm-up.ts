// The first view after start-up took 1.2-2.5 s against 0.3 s for later ones (bench/stream.ts,
// 2026-12-02, cold rows): its DTLS handshake alone 583 ms and werift's offer handling 184 ms at p50,
// the cost of V8 compiling werift's ICE, DTLS and SRTP code on its first use, not of the network.
// So once the agent is up, two werift peer connections in this process run one handshake with each
// other over loopback, and the first real view finds that code compiled.
//
// Nothing leaves the machine: both ends bind 127.0.0.1 only, gather no server candidates (no STUN
// or TURN: werift's public default is cleared as in session.ts), and are closed when the handshake
// is done or after `timeoutMs`. No viewer and no command is involved, so there is nothing to audit;
// the log line says what ran and how long it took.
import type { Logger } from 'pino';
import { MediaStreamTrack, RTCPeerConnection, RtpHeader, RtpPacket, useH264, type PeerConfig } from 'werift';
import { errorMessage } from '../errors.ts';

const loopbackOnly: Partial<PeerConfig> = {
  codecs: { video: [useH264()], audio: [] },
  iceServers: [],
  iceUseIpv4: false,
  iceUseIpv6: false,
  iceUseTcp: false,
  iceAdditionalHostAddresses: ['127.0.0.1'],
  iceInterfaceAddresses: { udp4: '127.0.0.1' },
};

function gathered(pc: RTCPeerConnection): Promise<void> {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const sub = pc.iceGatheringStateChange.subscribe((state) => {
      if (state === 'complete') {
        sub.unSubscribe();
        resolve();
      }
    });
  });
}

export interface WarmUpResult {
  /** Offer, answer, ICE, DTLS and the first SRTP packet across, ms. */
  handshakeMs: number;
}

/**
 * One loopback handshake between two in-process peer connections, the camera's end answering as a
 * real session does (DTLS server) and sending H.264 RTP through SRTP until the other end receives it.
 */
export async function warmUpWebrtc(timeoutMs = 10_000, signal?: AbortSignal): Promise<WarmUpResult> {
  const started = performance.now();
  const camera = new RTCPeerConnection(loopbackOnly);
  const viewer = new RTCPeerConnection(loopbackOnly);
  let timer: NodeJS.Timeout | undefined;
  let send: NodeJS.Timeout | undefined;
  // The agent stopping (the stream manager's stop) ends it at once: its sockets must not hold the exit.
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no loopback handshake within ${timeoutMs} ms`)), timeoutMs);
    if (signal?.aborted) reject(new Error('stopped'));
    signal?.addEventListener('abort', () => reject(new Error('stopped')), { once: true });
  });
  const handshake = async () => {
    const sender = camera.addTransceiver(new MediaStreamTrack({ kind: 'video', codec: useH264() }), { direction: 'sendonly' }).sender;
    const received = new Promise<void>((resolve) => {
      viewer.addTransceiver('video', { direction: 'recvonly' }).onTrack.subscribe((track) => {
        track.onReceiveRtp.once(() => resolve());
      });
    });
    const connected = new Promise<void>((resolve) => {
      const sub = camera.connectionStateChange.subscribe((state) => {
        if (state === 'connected') {
          sub.unSubscribe();
          resolve();
        }
      });
    });
    await viewer.setLocalDescription(await viewer.createOffer());
    await gathered(viewer);
    await camera.setRemoteDescription(viewer.localDescription!);
    await camera.setLocalDescription(await camera.createAnswer());
    await gathered(camera);
    await viewer.setRemoteDescription(camera.localDescription!);
    await connected;
    // A few packets through SRTP, as the first view's keyframe goes, until one is received.
    const payload = Buffer.alloc(1000);
    let sequenceNumber = 0;
    send = setInterval(() => {
      sequenceNumber += 1;
      const header = new RtpHeader({ payloadType: sender.codec?.payloadType ?? 96, sequenceNumber, timestamp: sequenceNumber * 3000, ssrc: sender.ssrc, marker: true });
      sender.sendRtp(new RtpPacket(header, payload));
    }, 5);
    await received;
  };
  try {
    await Promise.race([handshake(), deadline]);
    return { handshakeMs: Math.round(performance.now() - started) };
  } finally {
    clearTimeout(timer);
    clearInterval(send);
    await Promise.allSettled([camera.close(), viewer.close()]);
  }
}

/** Runs the warm-up and logs its outcome; never throws (the first view then pays as before). */
export async function warmUpAndLog(log: Logger, signal: AbortSignal): Promise<void> {
  try {
    const { handshakeMs } = await warmUpWebrtc(10_000, signal);
    log.info({ handshakeMs }, 'live view warmed up: one loopback handshake between two in-process peer connections');
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'live view warm-up failed: the first view will compile werift itself');
  }
}
