// The one schema of every setting: its type, default, unit and meaning.
// docs/configuration.md is generated from it (src/config/docs.ts) and a test keeps the two in step.
import { z } from 'zod';
import { gpioConfigSchema } from '../../firmware-bridge/src/gpio-config.ts';
import { TRIGGER_SOURCE_PATTERN } from '../../firmware-bridge/src/interface.ts';
import { captureConfigSchema } from '../capture/config.ts';
import { defaultReasonCodes } from '../command/types.ts';
import { x25519RecipientPattern } from '../recording/encryption.ts';
import { streamConfigSchema } from '../stream/config.ts';

const deviceIdPattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const hostPort = /^[^\s:]+:\d{1,5}$/;

const seconds = (description: string, min: number, max: number, dflt: number) =>
  z.number().min(min).max(max).default(dflt).meta({ description, unit: 's' });
const milliseconds = (description: string, min: number, max: number, dflt: number) =>
  z.number().int().min(min).max(max).default(dflt).meta({ description, unit: 'ms' });

export const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const configSchema = z.strictObject({
  deviceId: z
    .string()
    .regex(deviceIdPattern, 'a device id: 1-64 letters, digits, "-" or "_", starting with a letter or digit')
    .optional()
    .meta({
      description:
        'Device id, used in the MQTT topic root and as the MQTT client id. Default: "bwc-" and the first 12 characters of /etc/machine-id (else the host name).',
      env: 'BWC_DEVICE_ID',
      localOnly: true,
    }),
  stateDir: z.string().min(1).optional().meta({
    description:
      'Folder for the database, keys and control socket. Default: $STATE_DIRECTORY (set by systemd), else ./var under the working directory.',
    env: 'BWC_STATE_DIR',
    localOnly: true,
  }),
  log: z
    .strictObject({
      level: z.enum(logLevels).default('info').meta({ description: 'Lowest log level written.', env: 'BWC_LOG_LEVEL' }),
      pretty: z.boolean().default(false).meta({ description: 'Human-readable coloured logs (the demo); JSON lines otherwise, for journald.' }),
    })
    .prefault({}),
  mqtt: z
    .strictObject({
      url: z
        .string()
        .regex(/^(mqtt|mqtts|ws|wss):\/\/[^\s]+$/, 'a broker URL such as mqtt://host:1883 or mqtts://host:8883')
        .default('mqtt://127.0.0.1:1883')
        .meta({ description: 'Broker URL (mqtt:, mqtts:, ws:, wss:).', env: 'BWC_MQTT_URL' }),
      topicRoot: z
        .string()
        .regex(/^[^#+\s]+[^/#+\s]$/, 'a topic prefix without wildcards or a trailing "/"')
        .default('bwc/v1')
        .meta({ description: 'Topic prefix; the device publishes under <topicRoot>/<deviceId>/.' }),
      clientId: z.string().min(1).max(64).optional().meta({ description: 'MQTT client id. Default: the device id (fixed, so the broker keeps the session).' }),
      username: z.string().optional().meta({ description: 'Broker user name.', localOnly: true }),
      passwordFile: z.string().optional().meta({ description: 'File holding the broker password (kept out of the config file).', localOnly: true }),
      tls: z
        .strictObject({
          caFile: z.string().optional().meta({ description: 'PEM file of the CA(s) that sign the broker certificate.', localOnly: true }),
          certFile: z.string().optional().meta({ description: 'PEM client certificate for mutual TLS.', localOnly: true }),
          keyFile: z.string().optional().meta({ description: 'PEM private key of the client certificate.', localOnly: true }),
          rejectUnauthorized: z.boolean().default(true).meta({ description: 'Refuse a broker whose certificate does not verify.', localOnly: true }),
        })
        .prefault({}),
      keepalive: seconds('MQTT keep-alive interval.', 5, 600, 30),
      sessionExpiry: seconds('How long the broker keeps the session (subscriptions, queued QoS 1) while the device is away.', 60, 4_294_967, 86_400),
      connectTimeout: milliseconds('Time allowed for one connection attempt.', 1000, 120_000, 10_000),
      reconnectMinDelay: milliseconds('First reconnect delay; doubles on each failure, with jitter.', 100, 60_000, 1000),
      reconnectMaxDelay: milliseconds('Cap of the reconnect delay.', 1000, 600_000, 30_000),
      maxInflight: z.number().int().min(1).max(65_535).default(100).meta({
        description: 'Most outbox messages awaiting the broker acknowledgement at once (lowered to the broker Receive Maximum).',
      }),
    })
    .prefault({}),
  outbox: z
    .strictObject({
      maxMessages: z.number().int().min(1000).max(10_000_000).default(500_000).meta({
        description: 'Outbox size above which GPS fixes are thinned (events and audit entries are never dropped).',
      }),
    })
    .prefault({}),
  gps: z
    .strictObject({
      gpsd: z
        .string()
        .regex(hostPort, 'host:port, e.g. 127.0.0.1:2947')
        .default('127.0.0.1:2947')
        .meta({ description: 'gpsd address (its JSON protocol over TCP).', env: 'BWC_GPSD' }),
      recordingInterval: seconds('Position publication interval while recording.', 1, 3600, 10),
      idleInterval: seconds('Position publication interval while not recording.', 1, 86_400, 60),
    })
    .prefault({}),
  health: z
    .strictObject({
      interval: seconds('Health sampling and state refresh interval.', 5, 3600, 60),
      storageLowPercent: z.number().min(0).max(100).default(10).meta({ description: 'Free storage below which a storage_low event is raised.', unit: '%' }),
      thermalZone: z.string().default('/sys/class/thermal/thermal_zone0/temp').meta({ description: 'Where the CPU temperature is read (millidegrees C); absent on boards without one.' }),
    })
    .prefault({}),
  commands: z
    .strictObject({
      trustStore: z.string().min(1).optional().meta({
        description: 'JWKS file of the issuers whose signed commands are accepted; each key lists its actions in `bwc_actions`. Without one every command is refused (unknown_key).',
        env: 'BWC_TRUST_STORE',
        localOnly: true,
      }),
      revokedKeys: z.array(z.string().min(1)).default([]).meta({
        description: 'Key ids (kid) no longer trusted, whatever the trust store says (a signed trust.update revokes keys remotely; this list cannot be shortened by one).',
        localOnly: true,
      }),
      reasons: z
        .array(z.string().regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'a reason code: lower-case letters, digits and "-"'))
        .min(1)
        .default([...defaultReasonCodes])
        .meta({ description: 'Reason codes a command may give (`reason` claim).' }),
      maxTokenLifetime: seconds('Longest accepted token lifetime (exp - iat).', 10, 3600, 300),
      maxStreamDuration: seconds('Longest live view a stream.start may ask for (max_s).', 10, 14_400, 1800),
      clockSkew: seconds('Clock difference allowed between issuer and device.', 0, 300, 30),
      maxConcurrentStreams: z.number().int().min(0).max(8).default(2).meta({ description: 'Live views at once; one more gets `busy`.' }),
      unsynchronisedClock: z.enum(['reject', 'accept']).default('reject').meta({
        description:
          'When the device clock is not known to be synchronised (the kernel, asked with adjtimex, does not call it synchronised: no NTP daemon, chrony or GNSS time source disciplines it): refuse commands and ICE-restart answers (clock_unsynchronised), or accept them with the fact in the audit.',
        localOnly: true,
      }),
      maxPayloadBytes: z.number().int().min(1024).max(1_048_576).default(65_536).meta({ description: 'Largest command payload considered (token and SDP offer).', unit: 'bytes' }),
      maxPending: z.number().int().min(1).max(100_000).default(4096).meta({
        description: 'Commands waiting to be handled at once; one more is refused at once (`overloaded`, folded like any refusal), so a flood cannot grow memory. With `maxPendingBytes`, whichever is reached first.',
      }),
      maxPendingBytes: z.number().int().min(65_536).max(67_108_864).default(4_194_304).meta({
        description:
          'Bytes of commands waiting to be handled at once (each counts its payload plus 512 for its topic and properties); one more is refused `overloaded`. Memory is what a flood must not take, and junk is refused in microseconds: a budget in bytes lets a burst of thousands of small junk commands queue (so a valid command behind them is still answered) while only 64 payloads of the 64 KiB maximum fit.',
        unit: 'bytes',
      }),
      refusalWindow: seconds(
        'Refusal folding window: the first refusal of a source and code in it is audited in full, the rest are counted into one `refusals.summarised` entry at its end (or at the next accepted command, or at stop).',
        1,
        3600,
        60,
      ),
      refusalReplies: z.number().int().min(0).max(10_000).default(20).meta({
        description: 'Replies sent per refusal code and window; further refusals of that code get none until the window ends (counted as `unanswered` in the summary).',
      }),
      replyTopicPrefixes: z
        .array(z.string().min(1).regex(/^[^#+\s]+$/, 'a topic prefix without wildcards or spaces'))
        .default([])
        .meta({
          description:
            'Response Topics under mqtt.topicRoot are refused (`response_topic_refused`, never published to) unless they start with one of these; topics outside the root are allowed.',
          localOnly: true,
        }),
    })
    .prefault({}),
  capture: captureConfigSchema,
  stream: streamConfigSchema,
  recording: z
    .strictObject({
      preEvent: seconds('Seconds of buffered video that become the start of a recording (the pre-event buffer).', 0, 120, 30),
      preEventAudio: z.boolean().default(false).meta({ description: 'Whether the pre-event buffer keeps audio (needs capture.audio); off by default, as the market leader does.' }),
      evidenceReservePercent: z.number().min(0).max(50).default(5).meta({
        description:
          'Share of the state folder\'s file system kept for evidence: below it the outbox (GPS, events, audit copies) holds messages in memory and refusals are only counted, while segments and the audit entries of recordings and live views may use it. 0 turns it off.',
        unit: '%',
      }),
      encryption: z
        .strictObject({
          enabled: z.boolean().default(true).meta({
            description:
              'Encrypt every segment, the pre-event buffer and the GPS track at rest with age (docs/evidence.md). On with no recipient is a start-up refusal, so the embedded defaults never write footage in the clear; false is the explicit opt-out (segments in the clear, as before). Only the device changes it: a remote change must not turn encryption off.',
            localOnly: true,
          }),
          recipients: z
            .array(z.string().regex(x25519RecipientPattern, 'an age X25519 public key ("age1" and 58 lower-case bech32 characters, as age-keygen prints)'))
            .default([])
            .meta({
              description:
                'The force\'s age X25519 public key(s) (`age1...`), e.g. a primary and an escrow key: every file is decryptable by any one of them. The camera holds no key that decrypts its footage. Only the device changes them (or remoteConfig.unlockedKeys): a remote change could otherwise encrypt the footage to someone else\'s key.',
              localOnly: true,
            }),
        })
        .prefault({}),
      plaintextDir: z.string().min(1).default('/run/bwc-agent').meta({
        description:
          'Folder in RAM (tmpfs or ramfs, checked at start-up) where the capture writes the segment still open, in the clear; each closed segment is encrypted to the state folder and unlinked here. The systemd unit\'s RuntimeDirectory. Used only with encryption.enabled.',
        localOnly: true,
      }),
      plaintextDirOnDisk: z.boolean().default(false).meta({
        description: 'Tests and development only: accept a recording.plaintextDir that is not tmpfs/ramfs (plaintext would reach the disk).',
        localOnly: true,
      }),
    })
    .prefault({}),
  firmware: z
    .strictObject({
      backend: z.enum(['sim', 'serial', 'gpio']).default('sim').meta({
        description: 'How the buttons, haptics, LEDs and battery are reached: the camera MCU over a UART ("serial"), the Raspberry Pi rig\'s GPIO pins ("gpio"), or the in-process simulator ("sim", driven by `bwc-agent ctl button|battery`).',
        env: 'BWC_FIRMWARE',
      }),
      serial: z
        .strictObject({
          path: z.string().min(1).default('/dev/ttyAMA0').meta({ description: 'UART device of the camera MCU (firmware-bridge/PROTOCOL.md).' }),
          baudRate: z.number().int().min(1200).max(4_000_000).default(115_200).meta({ description: 'UART speed.', unit: 'baud' }),
        })
        .prefault({}),
      gpio: gpioConfigSchema,
      reminderInterval: seconds('Reminder vibration while recording; 0 turns it off.', 0, 3600, 120),
    })
    .prefault({}),
  remoteConfig: z
    .strictObject({
      healthyWithin: z.number().min(5).max(3600).default(120).meta({
        description:
          'After a config.apply that restarts the agent: if it is not connected to the broker and healthy within this long (or fails to start 3 times), it goes back to the last good configuration by itself (event and audit `config.reverted`).',
        unit: 's',
        localOnly: true,
      }),
      unlockedKeys: z
        .array(z.string().min(1))
        .default([])
        .meta({
          description:
            'Local-only keys (marked so in this table) that a signed config.apply may nevertheless change on this device, e.g. ["stream.covert"] where the force allows fleet ops to set it. A key here unlocks every key below it.',
          localOnly: true,
        }),
    })
    .prefault({}),
  offload: z
    .strictObject({
      enabled: z.boolean().default(false).meta({ description: 'Upload closed recordings to an S3-compatible object store (AWS S3, Ceph RGW, MinIO, OpenStack Swift s3api); docs/protocol.md, "Evidence offload".' }),
      endpoint: z
        .string()
        .regex(/^https?:\/\/[^\s/]+\/?$/, 'an http(s) URL of the store, e.g. https://s3.example.org or http://127.0.0.1:8080')
        .optional()
        .meta({ description: 'The store\'s S3 endpoint (path-style requests: ENDPOINT/BUCKET/KEY). Needed when enabled.' }),
      bucket: z
        .string()
        .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 lower-case letters, digits, "." or "-"')
        .optional()
        .meta({ description: 'Bucket the recordings go to; it must exist (the camera never creates one). Needed when enabled.' }),
      region: z.string().min(1).default('us-east-1').meta({ description: 'Region used in the request signature (any the store accepts).' }),
      prefix: z
        .string()
        .regex(/^([A-Za-z0-9._-]+\/)*$/, 'empty, or path segments each ending in "/", e.g. "fleet-a/"')
        .default('')
        .meta({ description: 'Key prefix before <deviceId>/<recordingId>/ (docs/protocol.md).' }),
      credentialsFile: z.string().min(1).optional().meta({
        description: 'File holding the store credentials as YAML or JSON: `accessKeyId`, `secretAccessKey` (and optionally `sessionToken`). Re-read when it changes; never logged or put in state. Needed when enabled.',
      }),
      interfaces: z.array(z.string().min(1)).default([]).meta({
        description: 'Network interfaces uploads may use (e.g. ["wlan0", "eth0"] for Wi-Fi or a dock); uploads wait while none has an address, and go out from that address. Empty: any.',
      }),
      bandwidthKbps: z.number().int().min(0).max(10_000_000).default(0).meta({ description: 'Upload bandwidth cap (request bodies, token bucket); 0: no cap.', unit: 'kbit/s' }),
      pauseDuringLiveView: z.boolean().default(true).meta({ description: 'Hold uploads while a live view runs, so the view keeps the uplink.' }),
      keepDays: z.number().min(0).max(3650).default(7).meta({
        description:
          'Retention: the local copy of a recording is deleted this many days after it stopped, and only once every object of it is in the store with the same SHA-256 (checked again just before). A recording not yet uploaded, or under hold (`bwc-agent ctl offload hold`), is never deleted. 0: delete as soon as verified.',
        unit: 'days',
      }),
      multipartThresholdBytes: z.number().int().min(5_242_880).max(5_368_709_120).default(67_108_864).meta({ description: 'Objects this large or larger go up in parts (multipart upload, resumed with ListParts).', unit: 'bytes' }),
      partSizeBytes: z.number().int().min(5_242_880).max(536_870_912).default(8_388_608).meta({ description: 'Part size of a multipart upload (S3\'s minimum is 5 MiB).', unit: 'bytes' }),
      retryMinDelay: milliseconds('First retry delay after a failed upload pass; doubles on each failure.', 100, 600_000, 2000),
      retryMaxDelay: milliseconds('Cap of the retry delay.', 1000, 3_600_000, 300_000),
      requestTimeout: milliseconds('A store request that makes no progress for this long fails (and is retried).', 1000, 600_000, 60_000),
    })
    .prefault({})
    .superRefine((o, ctx) => {
      if (!o.enabled) return;
      for (const key of ['endpoint', 'bucket', 'credentialsFile'] as const) {
        if (o[key] === undefined) ctx.addIssue({ code: 'custom', path: [key], message: `required when offload.enabled is true` });
      }
    }),
  audit: z
    .strictObject({
      checkpointEvery: z.number().int().min(1).max(100_000).default(100).meta({ description: 'A signed checkpoint after this many audit entries...' }),
      checkpointInterval: seconds('...and at least this often while entries are being added.', 10, 86_400, 600),
    })
    .prefault({}),
  update: z
    .strictObject({
      releasesDir: z.string().min(1).default('/opt/bwc-agent/releases').meta({
        description:
          'Folder of the installed releases for agent.update: one folder per version, a `current` symlink (what the systemd unit runs) and a `committed` symlink (the last release that came up healthy, whose boot check runs first).',
        localOnly: true,
      }),
      releaseKeys: z.string().min(1).optional().meta({
        description:
          'JWKS file of the release public keys (Ed25519) that sign release bundles; not the command trust store: an issuer key cannot sign a release. Without it every agent.update is refused. Only the device changes it: a remote change could swap in a key that vouches for any code.',
        localOnly: true,
      }),
      minVersion: z
        .string()
        .regex(/^\d+\.\d+\.\d+$/, 'a version such as 1.4.0')
        .default('0.0.0')
        .meta({ description: 'The floor: an agent.update to a lower version is refused (a downgrade to a release with a known hole). Only the device lowers it.', localOnly: true }),
      healthTimeout: seconds('After an update, time the new release has to be online with the capture running; else the previous release is put back.', 5, 3600, 180),
      maxFailedStarts: z.number().int().min(1).max(10).default(2).meta({
        description: 'Starts of a new release that end before it commits (counted by the committed release\'s boot check, ExecStartPre) before the previous release is put back.',
      }),
      maxBundleBytes: z.number().int().min(1_000_000).default(1_000_000_000).meta({ description: 'Largest release bundle downloaded.', unit: 'bytes' }),
    })
    .prefault({}),
  // The officer in the loop (issue 19; docs/protocol.md, "Officer alerts and bookmarks").
  officer: z
    .strictObject({
      buttons: z
        .record(
          z.string().regex(/^(record:(double|hold)|function:(press|long|double|hold))$/, 'a gesture "BUTTON:PRESS": function:press|long|double|hold, record:double|hold (record:press starts and record:long stops a recording, always)'),
          z.enum(['bookmark', 'watch-me', 'emergency', 'none']),
        )
        .default({ 'function:press': 'bookmark', 'function:double': 'watch-me', 'function:hold': 'emergency', 'record:hold': 'emergency' })
        .meta({
          description:
            'What each button gesture means: "bookmark" (a mark in the recording), "watch-me" (record, and ask the supervisors for a live view), "emergency" (officer down: record, alert, GPS every emergencyGpsInterval; the same gesture again cancels a false alarm) or "none". A gesture not listed means nothing. A map in the config file replaces the default map.',
        }),
      triggers: z
        .record(z.string().regex(TRIGGER_SOURCE_PATTERN, 'a trigger source name: lower-case letters, digits and "-" (holster, taser, lightbar, vehicle-door, siren, weapon, input-N)'), z.array(z.enum(['record', 'alert'])))
        .default({ holster: ['record'], taser: ['record', 'alert'], lightbar: ['record'], weapon: ['record', 'alert'] })
        .meta({
          description:
            'What each trigger input does (firmware-bridge TRIGGER, GPIO input lines, `ctl trigger`): "record" starts a recording, "alert" raises an emergency. Every trigger is audited with its source (`officer.trigger`); a source not listed is audited and does nothing. A trigger never stops a recording. A map in the config file replaces the default map.',
        }),
      fallIsEmergency: z.boolean().default(true).meta({ description: 'The MCU\'s fall detector raises an emergency (source "fall").' }),
      emergencyGpsInterval: seconds('GPS reporting interval while an emergency is raised (until a supervisor or the wearer clears it).', 0.5, 60, 1),
      watchMeExpiry: seconds('A watch-me request shows in `state` until a live view with reason officer-request connects, or this long.', 10, 3600, 600),
    })
    .prefault({}),
  talkback: z
    .strictObject({
      enabled: z.boolean().default(true).meta({
        description:
          'Talk-back (docs/protocol.md, "Talk-back"): within a live view whose stream.start grants it (claim talk: true from a key holding stream.talk) the supervisor\'s voice is played to the wearer. false: every view is receive-only, whatever the token says.',
      }),
      sink: z.string().min(1).default('autoaudiosink').meta({
        description:
          'GStreamer sink description the decoded talk-back audio goes to, e.g. "alsasink device=plughw:CARD=Headphones" on the Raspberry Pi rig (the earpiece), "autoaudiosink" elsewhere; tests use "wavenc ! filesink location=FILE". Only the device changes it: it is a pipeline description, and a remote one could write files.',
        localOnly: true,
      }),
      idleMs: z.number().int().min(200).max(10_000).default(1500).meta({
        description: 'A talk spurt ends (stream.talk_stopped) when the supervisor has sent no audio for this long; the next audio starts a new spurt, with the wearer\'s talk-start tone.',
        unit: 'ms',
      }),
      jitterMs: z.number().int().min(0).max(500).default(20).meta({
        description: 'Latency of the playback\'s jitter buffer (rtpjitterbuffer): more smooths a bad link, less is heard sooner. bench/talkback.ts, loopback on an otherwise idle 2-core machine, p50 mouth-to-ear: 69 ms at 20, 89 ms at 40, 56 ms at 0 (goal 150); Opus concealment covers a late packet.',
        unit: 'ms',
      }),
    })
    .prefault({}),
});

export type AgentConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;

/** The settings after defaults that depend on the machine have been filled in. */
export type AgentConfig = Omit<ParsedConfig, 'deviceId' | 'stateDir'> & { deviceId: string; stateDir: string };

/** Environment overrides: variable -> dotted key. */
export const envOverrides = {
  BWC_DEVICE_ID: 'deviceId',
  BWC_STATE_DIR: 'stateDir',
  BWC_MQTT_URL: 'mqtt.url',
  BWC_GPSD: 'gps.gpsd',
  BWC_LOG_LEVEL: 'log.level',
  BWC_TRUST_STORE: 'commands.trustStore',
  BWC_CAMERA: 'capture.preset',
  BWC_FIRMWARE: 'firmware.backend',
} as const;
