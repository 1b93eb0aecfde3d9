// The device's retained `state` document: what fleet ops see on the map and the camera list.
// Modules set their part; listeners (the MQTT link, `ctl status`) read the whole.
import { EventEmitter } from 'node:events';
import type { JWK } from 'jose';

export interface LinkStatus {
  connected: boolean;
  reconnects: number;
  outboxQueued: number;
  outboxThinned: Record<string, number>;
  /** Messages held in memory because the outbox (the disk) cannot be written. */
  outboxHeldInMemory: number;
  /** Why the outbox cannot be written (a full disk, say), or null. */
  outboxWriteError: string | null;
}

/** Capture health for the fleet: is the camera producing evidence? */
export interface CaptureState {
  status: 'starting' | 'running' | 'restarting' | 'failed' | 'stopped';
  restarts: number;
  lastFault: { reason: string; at: string } | null;
  live: boolean;
  /** The capture worker's process id, for diagnosis. */
  pid: number | null;
  /** Why the live bitrate cannot be set on the Pi encoder now (the view keeps its last rate), or null. Absent in older agents. */
  liveBitrateError?: string | null;
}

/** The firmware bridge: the MCU link (or the Pi rig's GPIO), and what the wearer was last told. */
export interface FirmwareState {
  backend: 'sim' | 'serial' | 'gpio';
  linkUp: boolean;
  firmwareVersion: string | null;
  lastPattern: string | null;
  lastError: string | null;
}

/** One live view as fleet ops see it (never the viewer's SDP or address). */
export interface StreamSessionState {
  sid: string;
  /** Who asked for it (the token's `sub`) and why. */
  operator: string;
  reason: string;
  /** `interrupted`: connected once, the viewer is not heard now (within viewerLostGrace). */
  state: 'connecting' | 'connected' | 'interrupted';
  startedAt: string;
  /** When max_s runs out. */
  endsBy: string;
  covert: boolean;
  /** Round-trip time to the viewer from its receiver reports. */
  rttMs: number | null;
  /** ICE restarts so far (network changes, failed paths). */
  iceRestarts: number;
}

/**
 * Where the camera is, as the state document shows it. The GPS extension maps its reports into this;
 * the full report (altitude, speed, course) goes to the `gps` channel, not the state.
 */
export interface GpsState {
  gpsd: 'connected' | 'disconnected';
  fix: 'no-fix' | '2d' | '3d';
  /** The receiver's time (ISO 8601) as gpsd reports it, or null before the receiver knows it. */
  gpsTime: string | null;
  lat: number | null;
  lon: number | null;
  accuracyM: number | null;
}

/** The device's health as the state document shows it; the health probe samples exactly this. */
export interface HealthState {
  storage: { path: string; freeBytes: number; totalBytes: number; freePercent: number };
  cpuTemperatureC: number | null;
  load: [number, number, number];
  memory: { totalBytes: number; availableBytes: number; agentRssBytes: number };
  systemUptimeS: number;
  agentUptimeS: number;
}

/** What a fleet console needs to offer a live view this camera will accept. */
export interface CommandPolicyState {
  reasons: string[];
  maxStreamDurationS: number;
  maxConcurrentStreams: number;
}

/** Evidence offload to the object store (src/offload/): what is still to go up, and how it went. */
export interface OffloadState {
  /** uploading, idle (nothing pending), paused (by ctl or a live view), waiting (no allowed interface, or retrying after an error). */
  status: 'uploading' | 'idle' | 'paused' | 'waiting';
  pausedBy: ('ctl' | 'live-view')[];
  recordingsPending: number;
  bytesPending: number;
  /** Objects and bytes sent since the agent started. */
  objectsSent: number;
  bytesSent: number;
  lastUploadAt: string | null;
  /** Names the setting at fault where one is (offload.endpoint, offload.bucket, offload.credentialsFile...). */
  lastError: { message: string; at: string } | null;
  held: number;
}

/** The officer in the loop (src/officer/officer-extension.ts): an emergency raised, a watch-me request open. */
export interface OfficerState {
  emergency: null | { alertId: string; since: string; source: 'button' | 'fall' | 'trigger'; trigger?: string; acknowledgedBy: string | null };
  watchMe: null | { requestId: string; since: string };
}

export interface DeviceStateDoc {
  online: boolean;
  deviceId: string;
  agentVersion: string;
  /** Recording state; the capture issue adds buffering/recording. */
  recording: boolean;
  capture: CaptureState | null;
  /** bitrateKbps: the live encoder's bitrate while it follows the viewers' links, else null. */
  streaming: { sessions: number; bitrateKbps: number | null; list: StreamSessionState[] };
  commandPolicy: CommandPolicyState | null;
  battery: { percent: number | null; charging: boolean | null };
  firmware: FirmwareState | null;
  /** The device's Ed25519 public key (JWK with its kid): checks audit checkpoints and manifests. */
  devicePublicKey: JWK | null;
  /** The newest audit entry's seq and hash: the fleet keeps the highest it saw for `audit verify --expect-head`. */
  auditHead: { seq: number; hash: string } | null;
  gps: GpsState | null;
  health: HealthState | null;
  link: LinkStatus;
  /**
   * The running configuration: version of the remote document (0: the local file alone), digest
   * of the effective settings, whether a change is still on trial, and the trust store's digest.
   */
  config: { version: number; digest: string; pending: boolean; trustDigest: string } | null;
  /** Null while offload is not enabled. */
  offload: OffloadState | null;
  officer: OfficerState;
  startedAt: string;
  time: string;
}

type Part = Omit<DeviceStateDoc, 'time'>;

export class DeviceState extends EventEmitter<{ changed: [DeviceStateDoc] }> {
  #doc: Part;

  constructor(initial: Pick<Part, 'deviceId' | 'agentVersion'>) {
    super();
    this.#doc = {
      online: true,
      deviceId: initial.deviceId,
      agentVersion: initial.agentVersion,
      recording: false,
      capture: null,
      streaming: { sessions: 0, bitrateKbps: null, list: [] },
      commandPolicy: null,
      battery: { percent: null, charging: null },
      firmware: null,
      devicePublicKey: null,
      auditHead: null,
      gps: null,
      health: null,
      link: { connected: false, reconnects: 0, outboxQueued: 0, outboxThinned: {}, outboxHeldInMemory: 0, outboxWriteError: null },
      config: null,
      offload: null,
      officer: { emergency: null, watchMe: null },
      startedAt: new Date().toISOString(),
    };
  }

  snapshot(): DeviceStateDoc {
    return { ...this.#doc, time: new Date().toISOString() };
  }

  /** Merges a change; `silent` updates what `ctl status` shows without republishing the retained state. */
  update(change: Partial<Part>, options: { silent?: boolean } = {}): void {
    this.#doc = { ...this.#doc, ...change };
    if (!options.silent) this.emit('changed', this.snapshot());
  }

  /** The document the Last Will and a clean shutdown publish. */
  offline(reason: string): DeviceStateDoc & { reason: string } {
    return { ...this.snapshot(), online: false, streaming: { sessions: 0, bitrateKbps: null, list: [] }, reason };
  }
}
