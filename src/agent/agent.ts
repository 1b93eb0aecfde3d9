// The controller: builds the long-lived parts (store, outbox, link, state), then starts the
// extensions in order and stops them in reverse. Each extension does one job and talks to the
// others only through the link, the device state and the calls it is given.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { AuditLog } from '../audit/audit-log.ts';
import { RefusalFolder } from '../audit/refusal-summary.ts';
import { CaptureSupervisor, type CaptureHealth } from '../capture/supervisor.ts';
import { createFirmwareBridge } from '../firmware/create-bridge.ts';
import { FirmwareExtension } from '../firmware/firmware-extension.ts';
import { OfficerExtension } from '../officer/officer-extension.ts';
import { NetworkWatcher } from '../net/network-watcher.ts';
import type { Offloader } from '../offload/offloader.ts';
import { IceSignalling } from '../stream/ice-signalling.ts';
import { checkPlaintextDir, recipientProblem } from '../recording/encryption.ts';
import { bufferDirOf, evidenceDirOf, plaintextSegmentsDirOf } from '../recording/layout.ts';
import { Recorder, type RecordResult } from '../recording/recorder.ts';
import { CommandHandler } from '../command/command-handler.ts';
import { SystemClock, type CommandClock } from '../command/clock.ts';
import { ReplayCache } from '../command/replay-cache.ts';
import { SignedTokenVerifier } from '../command/signed-token.ts';
import type { TrustStore } from '../command/trust-store.ts';
import { CommandVerifier } from '../command/verifier.ts';
import { ConfigError } from '../config/load.ts';
import type { AgentConfig } from '../config/schema.ts';
import { loadOrCreateDeviceKey, type DeviceKey } from '../keys/device-key.ts';
import { ControlServer } from '../control/control-socket.ts';
import { registerCtlHandlers } from '../control/ctl-handlers.ts';
import { FleetLink } from '../link/fleet-link.ts';
import { responseTopicProblem } from '../link/request-channel.ts';
import { Outbox } from '../link/outbox.ts';
import { DeviceState, type CaptureState } from '../state/device-state.ts';
import { openDatabase, type Db } from '../store/database.ts';
import { StorageReserve } from '../store/storage-reserve.ts';
import { ServiceNotifier } from '../systemd/service-notifier.ts';
import { GpsExtension } from '../telemetry/gps-extension.ts';
import { HealthExtension } from '../telemetry/health-extension.ts';
import { StreamManager } from '../stream/stream-manager.ts';
import { Talkback } from '../stream/talkback.ts';
import { agentVersion } from '../version.ts';
import type { Extension } from './extension.ts';
import { errorMessage } from '../errors.ts';
import { FleetManagement, type ConfigSource } from '../fleet/fleet-management.ts';
import type { RecentLog } from '../fleet/diagnostics.ts';
import { RemoteConfigStore } from '../fleet/remote-config.ts';
import { loadTrustStore } from '../fleet/trust-updates.ts';
import { keysSharedWithIssuers, ReleaseKeys } from '../update/release.ts';
import { Updater } from '../update/updater.ts';

export interface AgentOptions {
  config: AgentConfig;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  clock?: CommandClock;
  /** Where the config came from (src/fleet/config-start.ts), for config.apply; default: the state folder's remote config, nothing on trial. */
  configSource?: ConfigSource;
  /** Recent log lines for diag.collect. */
  recentLog?: RecentLog;
  /** Asked by a config.apply or a revert: stop and exit with restartExitCode (src/cli/main.ts). */
  requestRestart?: (reason: string) => void;
}

interface AgentParts {
  deviceKey: DeviceKey;
  trustStore: TrustStore;
  releaseKeys: ReleaseKeys | undefined;
  /**
   * The offloader class, loaded only when offload.enabled: its object store client (the AWS SDK)
   * is ~6 MB of source and code on the V8 heap that a camera without offload never needs (issue 18,
   * measured in bench/shift-memory.ts with a heap snapshot).
   */
  Offloader: typeof Offloader | undefined;
}

/** Coalesces bursts of state changes into one retained publish. */
const statePublishDelayMs = 100;

export class Agent {
  readonly config: AgentConfig;
  readonly #logger: Logger;
  readonly #db: Db;
  readonly #outbox: Outbox;
  readonly #state: DeviceState;
  readonly #link: FleetLink;
  readonly #control: ControlServer;
  readonly #notifier: ServiceNotifier;
  readonly #extensions: Extension[];
  readonly #audit: AuditLog;
  readonly #deviceKey: DeviceKey;
  readonly #trustStore: TrustStore;
  readonly #capture: CaptureSupervisor;
  readonly #recorder: Recorder;
  readonly #refusals: RefusalFolder;
  readonly #clock: CommandClock;
  #offload: Offloader | undefined;
  #started: Extension[] = [];
  #statePublishTimer: NodeJS.Timeout | undefined;
  #stopping: Promise<void> | undefined;

  /** Loads what needs I/O first (device key, trust store); a bad trust store is a config error. */
  static async create(options: AgentOptions): Promise<Agent> {
    const { config } = options;
    const deviceKey = await loadOrCreateDeviceKey(config.stateDir);
    let trustStore: TrustStore;
    try {
      // The file, then the changes signed trust.update commands made (src/fleet/trust-updates.ts).
      trustStore = loadTrustStore(config);
    } catch (err) {
      throw new ConfigError([`commands.trustStore: ${errorMessage(err)}`]);
    }
    if (!config.commands.trustStore) options.logger.warn('no commands.trustStore configured: every command will be refused (unknown_key)');
    await checkEncryptionConfig(config, options.logger);
    let releaseKeys: ReleaseKeys | undefined;
    if (config.update.releaseKeys) {
      try {
        releaseKeys = ReleaseKeys.load(config.update.releaseKeys);
      } catch (err) {
        throw new ConfigError([`update.releaseKeys: ${errorMessage(err)}`]);
      }
      // A release key that is also a command issuer's would let whoever sends commands vouch for code.
      const shared = keysSharedWithIssuers(releaseKeys, config.commands.trustStore);
      if (shared.length) throw new ConfigError([`update.releaseKeys: key(s) ${shared.join(', ')} are also in commands.trustStore (same kid or same public key); a release key must not be a command issuer key`]);
    }
    const OffloaderClass = config.offload.enabled ? (await import('../offload/offloader.ts')).Offloader : undefined;
    return new Agent(options, { deviceKey, trustStore, releaseKeys, Offloader: OffloaderClass });
  }

  private constructor(options: AgentOptions, parts: AgentParts) {
    const { config, logger } = options;
    this.config = config;
    this.#deviceKey = parts.deviceKey;
    this.#trustStore = parts.trustStore;
    this.#logger = logger;
    this.#db = openDatabase({ stateDir: config.stateDir });
    const reserve = new StorageReserve({ path: config.stateDir, percent: config.recording.evidenceReservePercent });
    this.#outbox = new Outbox({ db: this.#db, maxMessages: config.outbox.maxMessages, reserve, logger });
    this.#state = new DeviceState({ deviceId: config.deviceId, agentVersion });
    // The request topics are subscribed by the link, before each "online" (see inboundTopics).
    this.#link = new FleetLink({
      config,
      outbox: this.#outbox,
      logger,
      offlineState: (reason) => this.#state.offline(reason),
      inboundTopics: ['cmd', 'stream/+/ice-answer'],
    });
    this.#control = new ControlServer({ path: path.join(config.stateDir, 'control.sock'), logger });
    this.#notifier = new ServiceNotifier({ logger, isHealthy: () => this.#link.health(), env: options.env ?? process.env });

    // Who talks to whom. Each part is built after the parts it calls, and gets them as arguments;
    // the routes that are events are wired in the last section. Two pairs call each other, so the
    // first-built side of each reaches the stream, built later, through a closure that is only
    // called once the extensions have started:
    //   capture -> stream          RTP packets (onRtp, onAudioRtp)
    //   iceSignalling -> stream    verified ICE-restart answers, and the refused ones for the audit
    //
    //   audit      <- recorder, stream, commands, refusals     (the hash-chained trail)
    //   link       <- gps, health, recorder, firmware, stream, audit   (outbox channels, state)
    //   link       -> commands (request channel `cmd`), iceSignalling (ice-offer / ice-answer topics)
    //   tokens     <- verifier (commands), iceSignalling (answers): one replay cache
    //   recorder   <- commands, firmware (buttons), ctl;   recorder -> capture (segments)
    //   stream     <- commands, network (address change), capture (packets, running)
    //   stream     -> capture (live on/off, keyframes, bitrate), firmware (wearer cues), iceSignalling (offers)
    //   offload    <- recorder (a recording closed), state (live view sessions), network, ctl;  offload -> audit, state
    const gps = new GpsExtension({
      gpsd: config.gps.gpsd,
      recordingIntervalS: config.gps.recordingInterval,
      idleIntervalS: config.gps.idleInterval,
      link: this.#link,
      state: this.#state,
      logger,
    });
    const health = new HealthExtension({
      intervalS: config.health.interval,
      storageLowPercent: config.health.storageLowPercent,
      storagePath: config.stateDir,
      thermalZone: config.health.thermalZone,
      link: this.#link,
      state: this.#state,
      logger,
    });
    this.#audit = new AuditLog({
      db: this.#db,
      deviceId: config.deviceId,
      deviceKey: parts.deviceKey,
      publish: (message) => this.#link.send('audit', message),
      checkpointEvery: config.audit.checkpointEvery,
      checkpointIntervalMs: config.audit.checkpointInterval * 1000,
      // The fleet keeps the newest head it saw and checks a camera's chain against it
      // (`audit verify --expect-head`): an older database put back, or a cut tail, shows.
      onHead: (head) => this.#state.update({ auditHead: head }),
      logger,
    });
    // One folder for every refusal an unauthenticated publisher can cause (cmd, ice-answer).
    this.#refusals = new RefusalFolder({
      audit: this.#audit,
      windowMs: config.commands.refusalWindow * 1000,
      repliesPerWindow: config.commands.refusalReplies,
      reserve,
      logger,
    });
    this.#state.update({ auditHead: this.#audit.head() }, { silent: true });
    const clock = options.clock ?? new SystemClock({ warn: (message) => logger.warn(message) });
    this.#clock = clock;
    // One verifier of signed tokens, one replay cache, for commands and ICE-restart answers alike.
    const replayCache = new ReplayCache(this.#db);
    const tokens = new SignedTokenVerifier({
      deviceId: config.deviceId,
      trustStore: parts.trustStore,
      replayCache,
      clock,
      policy: { clockSkewS: config.commands.clockSkew, maxTokenLifetimeS: config.commands.maxTokenLifetime, unsynchronisedClock: config.commands.unsynchronisedClock },
      logger,
    });

    // Capture always runs (the pre-event buffer); recording keeps what it writes.
    const evidenceDir = evidenceDirOf(config.stateDir);
    const encryption = config.recording.encryption.enabled ? { recipients: config.recording.encryption.recipients, plaintextDir: config.recording.plaintextDir } : undefined;
    this.#capture = new CaptureSupervisor({
      settings: config.capture,
      // With encryption the open segment is in RAM only (the recorder encrypts it once closed).
      segmentDir: encryption ? plaintextSegmentsDirOf(encryption.plaintextDir) : bufferDirOf(evidenceDir),
      keyframeMinIntervalMs: config.stream.keyframeMinInterval,
      liveBitrateKbps: config.stream.bitrate.startKbps,
      onRtp: (packet) => stream.onVideo(packet),
      onAudioRtp: (packet) => stream.onAudio(packet),
      logger,
    });
    this.#recorder = new Recorder({
      db: this.#db,
      evidenceDir,
      deviceId: config.deviceId,
      deviceKey: parts.deviceKey,
      source: this.#capture,
      audit: this.#audit,
      // A sealed recording (its manifest files written) is the offload's cue.
      link: {
        send: (channel, body) => {
          this.#link.send(channel, body);
          const type = (body as { type?: unknown }).type;
          if (type === 'recording.closed' || type === 'recording.sealed_interrupted') this.#offload?.wake();
        },
      },
      state: this.#state,
      position: () => {
        const g = this.#state.snapshot().gps;
        return g && g.lat !== null && g.lon !== null ? { lat: g.lat, lon: g.lon } : null;
      },
      preEventS: config.recording.preEvent,
      preEventAudio: config.recording.preEventAudio && config.capture.audio,
      ...(encryption ? { encryption } : {}),
      logger,
    });
    const capture = this.#capture;
    const recorder = this.#recorder;
    const captureExtension: Extension = {
      name: 'capture',
      start: () => capture.start(),
      stop: async () => {
        await capture.stop();
        await recorder.close();
      },
    };
    const bridge = createFirmwareBridge(config.firmware, logger);
    const firmware = new FirmwareExtension({
      bridge,
      recorder,
      state: this.#state,
      sendEvent: (body) => this.#link.send('event', body),
      reminderIntervalS: config.firmware.reminderInterval,
      logger,
    });
    // The officer in the loop: gestures, trigger inputs, the fall detector, alert.ack and bookmarks.
    const officer = new OfficerExtension({
      config: config.officer,
      whileNotRecording: config.stream.whileNotRecording,
      bridge,
      recorder,
      audit: this.#audit,
      sendEvent: (body) => this.#link.send('event', body),
      state: this.#state,
      wearer: firmware,
      gps,
      logger,
    });
    const iceSignalling = new IceSignalling({
      topics: this.#link.iceTopics(),
      deviceId: config.deviceId,
      deviceKey: parts.deviceKey,
      tokens,
      nowMs: () => clock.nowMs(),
      maxPayloadBytes: config.commands.maxPayloadBytes,
      onAnswer: (answer) => stream.acceptRestartAnswer(answer),
      onRefused: (refusal) => stream.restartAnswerRefused(refusal),
      refusals: this.#refusals,
      logger,
    });
    // Talk-back (issue 19): the supervisor's voice to the wearer, within a view that grants it.
    const talkback = config.talkback.enabled
      ? new Talkback({
          config: config.talkback,
          audit: this.#audit,
          sendEvent: (body) => this.#link.send('event', body),
          wearerCue: () => firmware.talkStarting(),
          evidence: recorder.talkEvidence(),
          logger,
        })
      : undefined;
    const stream = new StreamManager({
      config: config.stream,
      audio: config.capture.audio,
      maxSessions: config.commands.maxConcurrentStreams,
      capture: {
        setLive: (open) => capture.setLive(open),
        requestKeyframe: () => capture.requestKeyframe(),
        setLiveBitrate: (kbps) => capture.setLiveBitrate(kbps),
        liveBitrateAdjustable: () => capture.liveBitrateAdjustable,
      },
      audit: this.#audit,
      sendEvent: (body) => this.#link.send('event', body),
      state: this.#state,
      wearer: { streamStarted: () => firmware.streamStarted(), streamStopped: () => firmware.streamStopped(), streaming: (active) => firmware.streaming(active) },
      publishRestartOffer: (sid, generation, offer, cause) => iceSignalling.publishOffer(sid, generation, offer, cause),
      beforeStart: (sid, command) => officer.beforeStream(sid, command),
      ...(talkback ? { talkback } : {}),
      logger,
    });
    // One object: a live config.apply changes it in place (src/fleet/fleet-management.ts).
    const policy = {
      allowedReasons: config.commands.reasons,
      maxTokenLifetimeS: config.commands.maxTokenLifetime,
      maxStreamDurationS: config.commands.maxStreamDuration,
      clockSkewS: config.commands.clockSkew,
      maxConcurrentStreams: config.commands.maxConcurrentStreams,
      unsynchronisedClock: config.commands.unsynchronisedClock,
      maxPayloadBytes: config.commands.maxPayloadBytes,
    };
    const verifier = new CommandVerifier({
      deviceId: config.deviceId,
      trustStore: parts.trustStore,
      policy,
      replayCache,
      clock,
      activeStreams: () => stream.activeCount,
      logger,
      tokens,
    });
    const link = this.#link;
    const fleet = new FleetManagement({
      config,
      source: options.configSource ?? { load: { env: {}, cwd: process.cwd() }, store: new RemoteConfigStore(config.stateDir), active: undefined, trial: undefined, revertNote: undefined },
      audit: this.#audit,
      sendEvent: (body) => this.#link.send('event', body),
      state: this.#state,
      trustStore: parts.trustStore,
      policy,
      gps,
      link: { connected: () => link.status().connected, health: () => link.health(), onConnectionChange: (l) => link.onConnectionChange(l) },
      requestRestart: options.requestRestart ?? ((reason) => logger.error({ reason }, 'a restart was asked for, but nothing can restart this agent')),
      ...(options.recentLog ? { recentLog: options.recentLog } : {}),
      logger,
    });
    const updater = new Updater({
      config: config.update,
      stateDir: config.stateDir,
      runningVersion: agentVersion,
      releaseKeys: parts.releaseKeys,
      audit: this.#audit,
      state: this.#state,
      sendEvent: (body) => this.#link.send('event', body),
      restart: options.requestRestart ?? ((reason) => void this.stop(reason)),
      logger,
    });
    const recordReply = (r: RecordResult) => (r.ok ? { ok: true as const, recordingId: r.recordingId, already: r.already ?? false } : r);
    const commands = new CommandHandler({
      requests: this.#link.requestChannel('cmd', {
        maxPending: config.commands.maxPending,
        maxPendingBytes: config.commands.maxPendingBytes,
        responseTopicProblem: (topic) => responseTopicProblem(topic, config.mqtt.topicRoot, config.commands.replyTopicPrefixes),
        logger,
      }),
      verifier,
      audit: this.#audit,
      clock,
      // stream.start's reply waits for ICE gathering; the queue need not (command-handler.ts).
      concurrentActions: ['stream.start'],
      executors: {
        'record.start': (command) => recordReply(recorder.start({ kind: 'command', command })),
        'record.stop': (command) => recordReply(recorder.stop({ kind: 'command', command })),
        'stream.start': (command) => stream.startStream(command),
        'stream.stop': (command) => stream.stopStream(command),
        ...fleet.executors(),
        'agent.update': (command) => updater.execute(command),
        // Publishes a range of the chain again through the outbox (the fleet's archive fills a gap).
        'audit.fetch': (command) => ({ ok: true as const, ...this.#audit.republish(command.fromSeq!, command.toSeq!) }),
        'alert.ack': (command) => officer.ack(command),
        'recording.bookmark': (command) => officer.bookmark('command', command),
      },
      refusals: this.#refusals,
      logger,
    });
    const network = new NetworkWatcher({ interfaces: config.stream.ice.interfaces, logger });
    const networkExtension: Extension = { name: 'network', start: () => network.start(), stop: () => network.stop() };
    // The ctl verbs (src/control/ctl-handlers.ts): status, record by hand, simulated hardware input.
    // Evidence offload (src/offload/): sealed recordings to the object store; held while a live
    // view runs (state.streaming.sessions, below), woken when a recording closes or the network changes.
    const offload = (this.#offload = parts.Offloader
      ? new parts.Offloader({
          config: config.offload,
          deviceId: config.deviceId,
          db: this.#db,
          evidenceDir,
          devicePublicJwk: parts.deviceKey.publicJwk,
          audit: this.#audit,
          state: this.#state,
          reserve,
          logger,
        })
      : undefined);
    registerCtlHandlers(this.#control, { recorder, bridge, status: () => this.status(), ...(offload ? { offload } : {}) });

    // Started in this order, stopped in reverse: commands first (nothing new), then the live view
    // (audited as agent_shutdown) while capture and firmware still run, so the wearer feels the stop.
    // Offload stops before capture, so a recording closing at stop waits for the next start.
    this.#extensions = [health, gps, firmware, officer, captureExtension, ...(offload ? [offload] : []), networkExtension, ...(talkback ? [{ name: 'talkback', start: () => undefined, stop: () => talkback.stop() }] : []), stream, iceSignalling, fleet, updater, commands];

    // Routes that are events.
    recorder.on('state', (s) => {
      gps.setRecording(s.recording);
      offload?.wake();
    });
    if (offload) {
      let sessions = 0;
      this.#state.on('changed', (doc) => {
        if (doc.streaming.sessions === sessions) return;
        sessions = doc.streaming.sessions;
        offload.liveViews(sessions);
      });
    }
    capture.on('state', (h) => {
      recorder.captureRunning(h.status === 'running');
      stream.captureRunning(h.status === 'running' || h.status === 'starting');
      this.#state.update({ capture: captureSummary(h) });
    });
    capture.on('fault', (f) => {
      const time = new Date().toISOString();
      this.#link.send('event', { type: 'capture.fault', time, reason: f.reason, restartInMs: f.restartInMs });
      try {
        this.#audit.append({ type: 'capture.fault', detail: { reason: f.reason, restartInMs: f.restartInMs } });
      } catch (err) {
        logger.error({ err: errorMessage(err) }, 'cannot audit a capture fault');
      }
    });
    // A modem that reconnects comes back on a new address: the broker connection is dead (but
    // would look alive until keep-alive ran out) and every live view needs a new ICE path.
    network.on('change', () => {
      this.#link.reconnectNow('network addresses changed');
      stream.networkChanged();
      offload?.wake();
    });
    this.#outbox.on('thinned', (report) => this.#link.send('event', { type: 'outbox.thinned', time: new Date().toISOString(), ...report }));
    this.#state.on('changed', () => this.#scheduleStatePublish());
    const refreshLink = () => this.#state.update({ link: this.#link.summary() });
    this.#link.onConnectionChange(refreshLink);
    this.#link.writer.on('failing', refreshLink);
    this.#link.writer.on('recovered', refreshLink);
  }

  status(): object {
    return { ...this.#state.snapshot(), link: this.#link.status(), stateDir: this.config.stateDir, extensions: this.#started.map((e) => e.name) };
  }

  async start(): Promise<void> {
    this.#logger.info({ version: agentVersion, stateDir: this.config.stateDir, broker: this.config.mqtt.url }, 'bwc-agent starting');
    await this.#control.start();
    const { commands } = this.config;
    this.#state.update(
      {
        devicePublicKey: this.#deviceKey.publicJwk,
        commandPolicy: { reasons: [...commands.reasons], maxStreamDurationS: commands.maxStreamDuration, maxConcurrentStreams: commands.maxConcurrentStreams },
      },
      { silent: true },
    );
    this.#auditStart();
    this.#link.publishState(this.#state.snapshot());
    for (const extension of this.#extensions) {
      await extension.start();
      this.#started.push(extension);
    }
    // Connected last, when every handler listens: the first "online" then means commands and ICE
    // answers are heard (none of the extensions needs the connection to start; the outbox holds
    // what they send meanwhile).
    this.#link.start();
    this.#link.send('event', { type: 'agent.started', time: new Date().toISOString(), version: agentVersion });
    this.#notifier.ready(`running; broker ${this.config.mqtt.url}`);
    this.#notifier.startWatchdog();
    this.#logger.info('bwc-agent running');
  }

  /** Idempotent: a second signal during shutdown waits for the first. */
  stop(reason: string): Promise<void> {
    this.#stopping ??= this.#stop(reason);
    return this.#stopping;
  }

  async #stop(reason: string): Promise<void> {
    this.#logger.info({ reason }, 'bwc-agent stopping');
    this.#notifier.stopping();
    this.#notifier.stopWatchdog();
    clearTimeout(this.#statePublishTimer);
    for (const extension of this.#started.reverse()) {
      try {
        await extension.stop();
      } catch (err) {
        this.#logger.error({ extension: extension.name, err: errorMessage(err) }, 'extension failed to stop');
      }
    }
    this.#started = [];
    this.#refusals.stop();
    this.#audit.append({ type: 'agent.stop', detail: { reason } });
    this.#audit.stop();
    this.#link.send('event', { type: 'agent.stopping', time: new Date().toISOString(), reason });
    await this.#link.stop(reason);
    await this.#control.stop();
    this.#outbox.flush();
    this.#db.close();
    this.#logger.info('bwc-agent stopped');
  }

  /** Audits the start, and a configuration change when the effective settings differ from last time. */
  #auditStart(): void {
    // The config names the trust store by path only; its digest goes in too, so a changed trust
    // store file (other kids, other bwc_actions) is a config.change like any other setting.
    const trustStore = { digest: this.#trustStore.digest(), kids: this.#trustStore.kids().sort(), revoked: this.#trustStore.revokedKids() };
    const configDigest = createHash('sha256').update(JSON.stringify({ config: this.config, trustStoreDigest: trustStore.digest })).digest('base64url');
    const previousDigest = this.#audit.lastStartDigest();
    if (previousDigest !== undefined && previousDigest !== configDigest) {
      this.#audit.append({ type: 'config.change', detail: { previousDigest, configDigest } });
    }
    this.#audit.append({ type: 'agent.start', detail: { version: agentVersion, configDigest, deviceKid: this.#deviceKey.kid, trustStore, clock: this.#clock.state?.() ?? null } });
  }

  #scheduleStatePublish(): void {
    if (this.#statePublishTimer) return;
    this.#statePublishTimer = setTimeout(() => {
      this.#statePublishTimer = undefined;
      this.#link.publishState(this.#state.snapshot());
    }, statePublishDelayMs);
  }
}

function captureSummary(h: CaptureHealth): CaptureState {
  return { status: h.status, restarts: h.restarts, lastFault: h.lastFault ?? null, live: h.live, pid: h.pid ?? null, liveBitrateError: h.liveBitrateError ?? null };
}

/**
 * Encryption at rest is on by default and then needs the force's recipient(s) and a plaintext
 * folder in RAM: each missing or wrong piece is a configuration error naming its setting, so the
 * agent never starts writing footage to disk in the clear by accident.
 */
async function checkEncryptionConfig(config: AgentConfig, logger: Logger): Promise<void> {
  const enc = config.recording.encryption;
  if (!enc.enabled) {
    logger.warn('recording.encryption.enabled is false: evidence is written to disk in the clear');
    return;
  }
  const problems: string[] = [];
  if (enc.recipients.length === 0) {
    problems.push(
      'recording.encryption.recipients: no recipient configured: give the force\'s age X25519 public key(s) (age1...), or set recording.encryption.enabled: false to record in the clear explicitly',
    );
  }
  enc.recipients.forEach((r, i) => {
    const problem = recipientProblem(r);
    if (problem) problems.push(`recording.encryption.recipients.${i}: ${problem}`);
  });
  const dir = config.recording.plaintextDir;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (config.recording.plaintextDirOnDisk) logger.warn({ plaintextDir: dir }, 'recording.plaintextDirOnDisk: the open segment may reach the disk in the clear (tests only)');
    else await checkPlaintextDir(dir);
  } catch (err) {
    problems.push(`recording.plaintextDir: ${errorMessage(err)} (mount a tmpfs there, or point it at one such as /run or /dev/shm)`);
  }
  if (problems.length > 0) throw new ConfigError(problems);
}
