// A camera on a bad link, for the live-view tests and benchmarks: the agent runs in its own
// network namespace (netns.ts) with the real GStreamer pipeline, the broker listens on the root
// side of the veth as well as on loopback, an optional coturn serves both sides, and a real
// Chromium in the root namespace is the viewer. The rig also plays the fleet backend's part of an
// ICE restart: it checks the camera's signed offer, has Chromium answer it and signs the answer.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import type { JWK } from 'jose';
import { signIceAnswer, verifyIceOffer } from '../../src/cli/fleet-tools.ts';
import { agentBin, spawnAgent, tempStateDir, type AgentProcess } from './agent-process.ts';
import { writeAgentConfig } from './agent-config.ts';
import { ChromiumViewers, type OfferOptions, type Viewer } from './chromium-viewer.ts';
import { makeCommand, makeIssuer, writeTrustStore, type Issuer } from './command-tokens.ts';
import { startCoturn, type Coturn } from './coturn.ts';
import { FleetClient } from './fleet-client.ts';
import { freeLoopbackPort } from './gpsfake.ts';
import { startBroker, type Broker } from './mosquitto.ts';
import { MqttRecorder } from './mqtt-recorder.ts';
import { createCameraNetwork, type CameraNetwork } from './netns.ts';
import { UdpDelayRelay } from './udp-delay-relay.ts';

export interface AuditEntry {
  type: string;
  operator: string | null;
  reason: string | null;
  detail: Record<string, unknown>;
}

export interface StreamingState {
  sessions: number;
  bitrateKbps: number | null;
  list: { sid: string; state: string; iceRestarts: number; rttMs: number | null }[];
}

export interface RigOptions {
  deviceId?: string;
  /** Start a coturn on the root side of the veth. */
  turn?: boolean;
  capture?: Record<string, unknown>;
}

export interface Rig {
  net: CameraNetwork;
  broker: Broker;
  turn: Coturn | undefined;
  /** coturn's password in a file, for stream.ice.servers[].credentialFile. */
  turnPasswordFile: string;
  issuer: Issuer;
  viewers: ChromiumViewers;
  fleet: FleetClient;
  recorder: MqttRecorder;
  deviceId: string;
  /** Starts the agent in the namespace with this `stream:` config; resolves when online and capturing. */
  startAgent(stream: Record<string, unknown>, capture?: Record<string, unknown>, extra?: Record<string, unknown>): Promise<AgentProcess>;
  /** The running (or last) agent's state folder. */
  agentStateDir(): string | undefined;
  stopAgent(): Promise<void>;
  /** What the running (or last) agent printed. */
  agentOutput(): string;
  /** Opens a viewer, has a stream.start signed and answered, and waits for decoded frames. */
  watch(offer?: OfferOptions, maxS?: number): Promise<{ viewer: Viewer; sid: string }>;
  /** Answers the camera's ICE restart offers for this viewer's session (as a fleet backend would). */
  answerRestarts(viewer: Viewer, sid: string): void;
  /** Each restart offer the rig answered: when it arrived and when the answer went out (epoch ms). */
  readonly restarts: { sid: string; gen: number; cause: string; offerAt: number; answerAt: number }[];
  /** The viewer's own ICE settings: coturn over UDP (it needs a relay candidate to reach a relay-only camera). */
  viewerTurn(): OfferOptions;
  /** `stream.ice` for a relay-only camera through the TURN server at `url` (coturn's credentials). */
  relayOnlyIce(url: string, extra?: Record<string, unknown>): Record<string, unknown>;
  /** A UDP delay relay in front of coturn (`oneWayMs` each way); its turn: URL. Stopped by dispose(). */
  delayedTurn(oneWayMs: number): Promise<string>;
  latestState(): StreamingState | undefined;
  audit(): AuditEntry[];
  dispose(): Promise<void>;
}

export async function createBadLinkRig(options: RigOptions = {}): Promise<Rig> {
  const deviceId = options.deviceId ?? `cam-badlink-${process.pid}`;
  const net = await createCameraNetwork();
  const port = await freeLoopbackPort();
  // The camera reaches the broker over the veth: a second listener on the root side's address,
  // which only the namespace can reach. Kept after changeAddress(), as a fleet broker's would be.
  const broker = await startBroker({ listenerLines: [`listener ${port} ${net.hostAddress}`] });
  const brokerForCamera = `mqtt://${net.hostAddress}:${port}`;
  const turn = options.turn ? await startCoturn({ listenAddress: net.hostAddress }) : undefined;
  const issuer = await makeIssuer({ iss: 'bwc-fleet' });
  const stateDir = await tempStateDir('bwc-badlink-');
  const issuerKeyFile = path.join(stateDir, 'issuer.private.jwk.json');
  const turnPasswordFile = path.join(stateDir, 'turn-password');
  await writeFile(turnPasswordFile, `${turn?.password ?? ''}\n`, { mode: 0o600 });
  await writeFile(issuerKeyFile, JSON.stringify({ ...issuer.privateKey.export({ format: 'jwk' }), kid: issuer.kid, alg: 'EdDSA' }));
  const viewers = await ChromiumViewers.launch(turn ? [`--ignore-certificate-errors-spki-list=${turn.spkiSha256}`] : []);
  const fleet = await FleetClient.connect(broker.url);
  const recorder = await MqttRecorder.connect(broker.url, `bwc/v1/${deviceId}/#`);
  const responder: MqttClient = await mqtt.connectAsync(broker.url, { protocolVersion: 5, clean: true });
  await responder.subscribeAsync(`bwc/v1/${deviceId}/stream/+/ice-offer`, { qos: 1 });
  const restartViewers = new Map<string, Viewer>();
  const restarts: Rig['restarts'] = [];
  const answering = new Set<string>();
  let agent: AgentProcess | undefined;
  let agentDir: string | undefined;
  const relays: UdpDelayRelay[] = [];
  const needTurn = (): Coturn => {
    if (!turn) throw new Error('this rig has no coturn: createBadLinkRig({ turn: true })');
    return turn;
  };

  const stateDoc = () => recorder.on('state').at(-1)?.json as { streaming: StreamingState; devicePublicKey: JWK | null } | undefined;
  responder.on('message', (topic, payload) => {
    const sid = topic.split('/').at(-2)!;
    const viewer = restartViewers.get(sid);
    const deviceKey = stateDoc()?.devicePublicKey;
    if (!viewer || !deviceKey) return;
    const offerAt = Date.now();
    void (async () => {
      const offer = await verifyIceOffer(JSON.parse(payload.toString()), deviceKey);
      // The camera sends an unanswered offer again after a reconnection: answer each restart once.
      if (restarts.some((r) => r.sid === sid && r.gen === offer.gen) || answering.has(`${sid}/${offer.gen}`)) return;
      answering.add(`${sid}/${offer.gen}`);
      const answer = await viewer.answerRestart(offer.offer);
      const token = await signIceAnswer({ keyFile: issuerKeyFile, device: deviceId, sid, generation: offer.gen, answer, operator: 'console-auto' });
      await responder.publishAsync(`bwc/v1/${deviceId}/stream/${sid}/ice-answer`, JSON.stringify({ token, answer }), { qos: 1 });
      restarts.push({ sid, gen: offer.gen, cause: offer.cause, offerAt, answerAt: Date.now() });
    })().catch((err: unknown) => process.stderr.write(`rig: ICE restart answer failed: ${(err as Error).message}\n`));
  });

  const rig: Rig = {
    net,
    broker,
    turn,
    turnPasswordFile,
    issuer,
    viewers,
    fleet,
    recorder,
    deviceId,
    async startAgent(stream, capture = {}, extra = {}) {
      await agent?.stop('SIGTERM');
      const dir = await tempStateDir('bwc-badlink-agent-');
      agentDir = dir;
      const config = await writeAgentConfig(dir, {
        ...extra,
        commands: { trustStore: writeTrustStore(dir, [issuer]), unsynchronisedClock: 'accept', maxConcurrentStreams: 2 },
        capture: { width: 640, height: 360, framerate: 15, bitrateKbps: 1500, testPattern: 'snow', ...options.capture, ...capture },
        stream: { ice: { interfaces: [net.cameraInterface] }, viewerLostGrace: 15, ...stream },
      });
      const from = recorder.on('state').length;
      agent = spawnAgent(['run', '--config', config], { BWC_DEVICE_ID: deviceId, BWC_MQTT_URL: brokerForCamera, BWC_STATE_DIR: dir, BWC_GPSD: '127.0.0.1:9', DEBUG: 'werift-ice*' }, [...net.prefix, agentBin]);
      await recorder.waitFor(
        () =>
          recorder.on('state').slice(from).some((m) => m.json?.online === true && (m.json?.capture as { status?: string } | null)?.status === 'running'),
        60_000,
        'agent online and capturing',
      );
      return agent;
    },
    async stopAgent() {
      await agent?.stop('SIGTERM');
    },
    agentOutput: () => agent?.output ?? '',
    agentStateDir: () => agentDir,
    async watch(offer = {}, maxS = 300) {
      const viewer = await viewers.open();
      const sdp = await viewer.createOffer(offer);
      const reply = await fleet.request(deviceId, makeCommand({ issuer, deviceId, action: 'stream.start', offer: sdp, overrides: { sub: 'insp-0042', reason: 'public-safety', max_s: maxS } }).payload, 30_000);
      if (!reply.ok || !reply.answer || !reply.sid) throw new Error(`stream.start refused: ${JSON.stringify(reply)}`);
      await viewer.applyAnswer(reply.answer);
      await viewer.waitForVideo((v) => v.framesDecoded > 5, 30_000, 'decoded frames');
      return { viewer, sid: reply.sid };
    },
    restarts,
    answerRestarts(viewer, sid) {
      restartViewers.set(sid, viewer);
    },
    viewerTurn: () => {
      const t = needTurn();
      return { iceServers: [{ urls: [t.urls.udp], username: t.username, credential: t.password }] };
    },
    relayOnlyIce: (url, extra = {}) => ({
      interfaces: [net.cameraInterface],
      servers: [{ urls: url, username: needTurn().username, credentialFile: turnPasswordFile }],
      transportPolicy: 'relay',
      ...extra,
    }),
    async delayedTurn(oneWayMs) {
      const t = needTurn();
      const relay = new UdpDelayRelay({
        listen: { address: net.hostAddress, port: 0 },
        target: { address: t.listenAddress, port: t.port },
        upstreamDelayMs: oneWayMs,
        downstreamDelayMs: oneWayMs,
      });
      relays.push(relay);
      const at = await relay.start();
      return `turn:${at.address}:${at.port}?transport=udp`;
    },
    latestState: () => stateDoc()?.streaming,
    audit: () => recorder.on('audit').map((m) => m.json?.entry as AuditEntry | undefined).filter((e): e is AuditEntry => e !== undefined),
    async dispose() {
      const steps: [string, () => Promise<unknown>][] = [
        ['agent', async () => agent?.stop('SIGKILL')],
        ['chromium', () => viewers.close()],
        ['fleet client', () => fleet.close()],
        ['responder', () => responder.endAsync(true)],
        ['recorder', () => recorder.close()],
        ['delay relays', () => Promise.all(relays.map((r) => r.stop()))],
        ['coturn', async () => turn?.stop()],
        ['broker', () => broker.dispose()],
        ['network', () => net.destroy()],
      ];
      // Each step bounded: a stuck one must not keep the others (the namespace) from going.
      for (const [name, step] of steps) {
        let timer: NodeJS.Timeout | undefined;
        const bounded = new Promise<void>((resolve) => (timer = setTimeout(() => (process.stderr.write(`rig: ${name} did not close in 10 s\n`), resolve()), 10_000)));
        await Promise.race([step().catch((err: unknown) => process.stderr.write(`rig: ${name}: ${(err as Error).message}\n`)), bounded]);
        clearTimeout(timer);
      }
    },
  };
  return rig;
}

/** Received-video counters over a window, from Chromium's getStats. */
export async function videoOver(viewer: Viewer, ms: number): Promise<{ frames: number; kbps: number; freezes: number; freezeS: number }> {
  const a = await viewer.inboundVideo();
  await new Promise((r) => setTimeout(r, ms));
  const b = await viewer.inboundVideo();
  return {
    frames: b.framesDecoded - a.framesDecoded,
    kbps: Math.round(((b.bytesReceived - a.bytesReceived) * 8) / ms),
    freezes: b.freezeCount - a.freezeCount,
    freezeS: Math.round((b.totalFreezesDuration - a.totalFreezesDuration) * 100) / 100,
  };
}
