/// <reference lib="dom" />
// A real remote viewer: Debian's headless Chromium driven by playwright-core. Each Viewer is one
// page with one RTCPeerConnection that makes a recvonly offer (as the fleet's console would),
// applies the camera's answer, and reports what it decoded from getStats().
import { chromium, type Browser, type Page } from 'playwright-core';

export const chromiumPath = process.env.BWC_CHROMIUM ?? '/usr/bin/chromium';

export interface InboundVideo {
  framesDecoded: number;
  frameWidth: number;
  frameHeight: number;
  packetsReceived: number;
  packetsLost: number;
  nackCount: number;
  retransmittedPacketsReceived: number;
  pliCount: number;
  freezeCount: number;
  totalFreezesDuration: number;
  bytesReceived: number;
}

export interface ViewerState {
  connectionState: string;
  iceConnectionState: string;
}

export interface OfferOptions {
  video?: boolean;
  audio?: boolean;
  /** The viewer's own STUN/TURN servers (none by default). */
  iceServers?: { urls: string[]; username?: string; credential?: string }[];
  /**
   * Talk-back (issue 19): the audio m-line is sendrecv, as the console's push-to-talk offers it;
   * the microphone goes on the sender only with pressToTalk (RTCRtpSender.replaceTrack).
   */
  talk?: boolean;
  /** "relay": only TURN-relayed candidates (default "all"). */
  iceTransportPolicy?: 'all' | 'relay';
}

export interface SelectedPath {
  localType: string;
  remoteType: string;
  remoteAddress: string;
  rttMs: number | undefined;
}

export class ChromiumViewers {
  readonly #browser: Browser;

  private constructor(browser: Browser) {
    this.#browser = browser;
  }

  /** extraArgs: e.g. --ignore-certificate-errors-spki-list for a test TURN server's certificate. */
  static async launch(extraArgs: string[] = []): Promise<ChromiumViewers> {
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      // No sandbox: tests run as root in CI. No network features that could reach outside loopback.
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--autoplay-policy=no-user-gesture-required', ...extraArgs],
    });
    return new ChromiumViewers(browser);
  }

  /**
   * secureOrigin: the page is http://localhost/ (served by playwright's routing, no server), a
   * secure context, so getUserMedia exists (talk-back's microphone); about:blank has none.
   */
  async open(options: { secureOrigin?: boolean } = {}): Promise<Viewer> {
    const page = await this.#browser.newPage();
    if (options.secureOrigin) {
      await page.route('http://localhost/', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>viewer</title>' }));
      await page.goto('http://localhost/');
    } else {
      await page.goto('about:blank');
    }
    return new Viewer(page);
  }

  async close(): Promise<void> {
    await this.#browser.close();
  }
}

export class Viewer {
  readonly page: Page;

  constructor(page: Page) {
    this.page = page;
  }

  /** A recvonly offer with every candidate gathered (no trickle: the command carries one SDP). */
  async createOffer(options: OfferOptions = {}): Promise<string> {
    const { video = true, audio = false, iceServers = [], talk = false, iceTransportPolicy = 'all' } = options;
    return this.page.evaluate(
      async ({ video, audio, iceServers, talk, iceTransportPolicy }) => {
        const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy });
        (globalThis as unknown as { pc: RTCPeerConnection }).pc = pc;
        // Epoch ms of the milestones, for the first-frame benchmark.
        const marks: Record<string, number> = {};
        (globalThis as unknown as { marks: Record<string, number> }).marks = marks;
        pc.addEventListener('connectionstatechange', () => {
          if (pc.connectionState === 'connected') marks.connected ??= Date.now();
        });
        pc.addEventListener('iceconnectionstatechange', () => {
          if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') marks.iceConnected ??= Date.now();
        });
        if (video) pc.addTransceiver('video', { direction: 'recvonly' });
        if (talk) (globalThis as unknown as { talk: RTCRtpTransceiver }).talk = pc.addTransceiver('audio', { direction: 'sendrecv' });
        else if (audio) pc.addTransceiver('audio', { direction: 'recvonly' });
        pc.ontrack = (e: RTCTrackEvent) => {
          const el = document.createElement(e.track.kind === 'video' ? 'video' : 'audio');
          el.autoplay = true;
          el.muted = true;
          el.srcObject = new MediaStream([e.track]);
          document.body.appendChild(el);
          // When the first frame, decoded, was handed to the compositor (the first-frame benchmark's
          // last step): the frame's own presentationTime, not the callback's (up to a frame later),
          // nor getStats' framesDecoded (polled, and Chromium serves getStats from a cache).
          if (el instanceof HTMLVideoElement) el.requestVideoFrameCallback((_now, frame) => (marks.presented ??= performance.timeOrigin + frame.presentationTime));
        };
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise<void>((resolve) => {
          if (pc.iceGatheringState === 'complete') return resolve();
          pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
          setTimeout(resolve, 3000);
        });
        return pc.localDescription!.sdp;
      },
      { video, audio, iceServers, talk, iceTransportPolicy },
    );
  }

  /** Answers the camera's ICE restart offer (all candidates gathered); returns the answer. */
  async answerRestart(offer: string): Promise<string> {
    return this.page.evaluate(async (sdp) => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await new Promise<void>((resolve) => {
        if (pc.iceGatheringState === 'complete') return resolve();
        pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
        setTimeout(resolve, 3000);
      });
      return pc.localDescription!.sdp;
    }, offer);
  }

  /** The candidate pair media flows on now, if any. */
  async selectedPath(): Promise<SelectedPath | undefined> {
    return this.page.evaluate(async () => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      const stats = new Map<string, Record<string, unknown>>();
      (await pc.getStats()).forEach((s: Record<string, unknown>) => stats.set(s.id as string, s));
      for (const s of stats.values()) {
        if (s.type !== 'transport' || typeof s.selectedCandidatePairId !== 'string') continue;
        const pair = stats.get(s.selectedCandidatePairId);
        const local = pair && stats.get(pair.localCandidateId as string);
        const remote = pair && stats.get(pair.remoteCandidateId as string);
        if (!pair || !local || !remote) return undefined;
        return {
          localType: String(local.candidateType),
          remoteType: String(remote.candidateType),
          remoteAddress: String(remote.address ?? remote.ip),
          rttMs: typeof pair.currentRoundTripTime === 'number' ? Math.round(pair.currentRoundTripTime * 1000) : undefined,
        };
      }
      return undefined;
    });
  }

  async applyAnswer(sdp: string): Promise<void> {
    await this.page.evaluate(async (sdp) => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      await pc.setRemoteDescription({ type: 'answer', sdp });
    }, sdp);
  }

  /**
   * Polls getStats in the page every 5 ms until the first frame is decoded; returns the epoch ms
   * (this machine's clock, shared with the test) of DTLS connected and of that first frame.
   */
  async firstFrame(timeoutMs: number): Promise<{ connectedAt: number; firstFrameAt: number; iceConnectedAt: number }> {
    return this.page.evaluate(async (timeoutMs) => {
      const g = globalThis as unknown as { pc: RTCPeerConnection; marks: Record<string, number> };
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        let decoded = 0;
        (await g.pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && typeof s.framesDecoded === 'number') decoded = s.framesDecoded;
        });
        if (decoded > 0) return { connectedAt: g.marks.connected ?? NaN, firstFrameAt: Date.now(), iceConnectedAt: g.marks.iceConnected ?? NaN };
        if (Date.now() > deadline) throw new Error(`no decoded frame within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }, timeoutMs);
  }

  /**
   * Epoch ms at which the first video frame, decoded, was handed to the compositor
   * (requestVideoFrameCallback's presentationTime); waits in the page for it.
   */
  async presented(timeoutMs: number): Promise<number> {
    return this.page.evaluate(async (timeoutMs) => {
      const marks = (globalThis as unknown as { marks: Record<string, number> }).marks;
      const deadline = Date.now() + timeoutMs;
      while (marks.presented === undefined) {
        if (Date.now() > deadline) throw new Error(`no frame presented within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 2));
      }
      return marks.presented;
    }, timeoutMs);
  }

  /** Epoch ms of the page's milestones so far (connected, iceConnected, presented). */
  async marks(): Promise<Record<string, number>> {
    return this.page.evaluate(() => ({ ...(globalThis as unknown as { marks: Record<string, number> }).marks }));
  }

  async state(): Promise<ViewerState> {
    return this.page.evaluate(() => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      return { connectionState: pc.connectionState, iceConnectionState: pc.iceConnectionState };
    });
  }

  /** The inbound video stream's counters; zeros before anything arrived. */
  async inboundVideo(): Promise<InboundVideo> {
    return this.page.evaluate(async () => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      const out = {
        framesDecoded: 0, frameWidth: 0, frameHeight: 0, packetsReceived: 0, packetsLost: 0,
        nackCount: 0, retransmittedPacketsReceived: 0, pliCount: 0, freezeCount: 0, totalFreezesDuration: 0, bytesReceived: 0,
      };
      const stats = await pc.getStats();
      stats.forEach((s: Record<string, unknown>) => {
        if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
        for (const k of Object.keys(out) as (keyof typeof out)[]) if (typeof s[k] === 'number') out[k] = s[k] as number;
      });
      return out;
    });
  }

  /** Inbound audio packets received (0 without an audio stream). */
  async inboundAudioPackets(): Promise<number> {
    return this.page.evaluate(async () => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      let n = 0;
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio' && typeof s.packetsReceived === 'number') n = s.packetsReceived;
      });
      return n;
    });
  }

  /** Polls until the predicate holds on the inbound video stats; returns the last sample. */
  async waitForVideo(predicate: (v: InboundVideo) => boolean, timeoutMs: number, what: string): Promise<InboundVideo> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.inboundVideo();
      if (predicate(v)) return v;
      if (Date.now() > deadline) throw new Error(`viewer: ${what} not seen within ${timeoutMs} ms (last stats ${JSON.stringify(v)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Closes the page without a goodbye: the camera only notices through ICE. */
  async vanish(): Promise<void> {
    await this.page.close();
  }

  /** Closes the peer connection politely (DTLS close alert) but keeps the page. */
  async hangUp(): Promise<void> {
    await this.page.evaluate(() => (globalThis as unknown as { pc: RTCPeerConnection }).pc.close());
  }

  /**
   * Push-to-talk pressed: the (fake) microphone on the talk sender, as the console does it
   * (replaceTrack, no renegotiation). Chromium must run with --use-fake-device-for-media-stream
   * (and --use-file-for-fake-audio-capture=WAV for a known sound).
   */
  async pressToTalk(): Promise<void> {
    await this.page.evaluate(async () => {
      const g = globalThis as unknown as { talk: RTCRtpTransceiver; mic?: MediaStreamTrack };
      g.mic ??= (await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } })).getAudioTracks()[0]!;
      await g.talk.sender.replaceTrack(g.mic);
    });
  }

  /** Push-to-talk released: replaceTrack(null), the viewer stops sending audio. */
  async releaseTalk(): Promise<void> {
    await this.page.evaluate(async () => {
      await (globalThis as unknown as { talk: RTCRtpTransceiver }).talk.sender.replaceTrack(null);
    });
  }

  /** Audio RTP packets this viewer has sent (outbound-rtp), 0 before any. */
  async outboundAudioPackets(): Promise<number> {
    return this.page.evaluate(async () => {
      const pc = (globalThis as unknown as { pc: RTCPeerConnection }).pc;
      let n = 0;
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === 'outbound-rtp' && s.kind === 'audio' && typeof s.packetsSent === 'number') n = s.packetsSent;
      });
      return n;
    });
  }
}
