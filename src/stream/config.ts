// Settings of the live view; mounted as `stream:` in the main configuration schema. The number of
// views at once is `commands.maxConcurrentStreams` (the verifier refuses one more as `busy`).
import { z } from 'zod';

const iceServerSchema = z.strictObject({
  urls: z
    .union([z.string(), z.array(z.string()).min(1)])
    .transform((u) => (Array.isArray(u) ? u : [u]))
    .pipe(z.array(z.string().regex(/^(stun|turn|turns):[^\s]+$/, 'a stun:, turn: or turns: URL, e.g. turn:turn.example.police.uk:3478?transport=udp')))
    .meta({ description: 'One or more stun:, turn: or turns: URLs.' }),
  username: z.string().min(1).optional().meta({ description: 'TURN user name (long-term credentials).' }),
  credentialFile: z.string().min(1).optional().meta({ description: 'File holding the TURN password (kept out of the config file).' }),
});

export const streamConfigSchema = z
  .strictObject({
    ice: z
      .strictObject({
        servers: z.array(iceServerSchema).default([]).meta({
          description:
            'STUN and TURN servers for the live view. None by default: a police device never uses a public server. Police 4G networks often need TURN over TCP or TLS (turn:host:443?transport=tcp, turns:host:443). werift uses the first stun: and the first turn: URL listed (a turn: over UDP falls back to TCP on its own).',
        }),
        turnCaFile: z.string().min(1).optional().meta({
          description: 'PEM file of the CA a turns: (TLS) server\'s certificate must chain to, when it is not in the system store (a force\'s own PKI).',
        }),
        transportPolicy: z.enum(['all', 'relay']).default('all').meta({ description: '"relay": only TURN-relayed paths (hides the device address, needs a TURN server).' }),
        interfaces: z.array(z.string().min(1)).default([]).meta({
          description:
            'Network interfaces whose IPv4 addresses are offered as host candidates, e.g. ["wwan0", "wlan0"]; "lo" only for tests on one machine. Empty: every interface but loopback.',
        }),
        portRange: z
          .strictObject({
            min: z.number().int().min(1024).max(65_534).meta({ description: 'Lowest UDP port.' }),
            max: z.number().int().min(1025).max(65_535).meta({ description: 'Highest UDP port.' }),
          })
          .refine((r) => r.min < r.max, { message: 'min must be below max', path: ['min'] })
          .optional()
          .meta({ description: 'UDP ports for ICE (a firewall rule can then name them). Default: any free port.' }),
      })
      .prefault({}),
    viewerLostGrace: z.number().min(1).max(300).default(10).meta({
      description: 'A viewer not heard from (no RTCP, ICE failed) for this long is gone: the session ends as viewer_lost.',
      unit: 's',
    }),
    connectTimeout: z.number().min(2).max(300).default(20).meta({
      description: 'An accepted stream whose viewer has not connected by then ends as connect_timeout.',
      unit: 's',
    }),
    captureLossGrace: z.number().min(1).max(600).default(15).meta({
      description: 'Capture down (restarting, failed) this long ends every live session as capture_failed; recording restarts on its own.',
      unit: 's',
    }),
    keyframeMinInterval: z.number().int().min(50).max(10_000).default(250).meta({
      description: 'Shortest gap between two keyframes asked of the encoder by viewers (connect, PLI); bursts collapse into one.',
      unit: 'ms',
    }),
    bitrate: z
      .strictObject({
        adapt: z.boolean().default(true).meta({
          description:
            'Follow each viewer\'s network path (transport-wide congestion control and loss reports) with the live encoder\'s bitrate, between minKbps and maxKbps. Needs capture.liveEncoder "separate" on an x264 preset; the recording keeps capture.bitrateKbps.',
        }),
        minKbps: z.number().int().min(50).max(50_000).default(150).meta({ description: 'Floor of the live bitrate.', unit: 'kbit/s' }),
        maxKbps: z.number().int().min(50).max(50_000).default(2000).meta({ description: 'Ceiling of the live bitrate.', unit: 'kbit/s' }),
        startKbps: z.number().int().min(50).max(50_000).default(800).meta({
          description: 'Live bitrate when a view starts (a cellular uplink rarely has more at once); the Pi encoder stays at it.',
          unit: 'kbit/s',
        }),
      })
      .refine((b) => b.minKbps <= b.startKbps && b.startKbps <= b.maxKbps, {
        message: 'needs minKbps <= startKbps <= maxKbps',
        path: ['startKbps'],
      })
      .prefault({}),
    firstFrame: z.enum(['gop-cache', 'keyframe-on-connect']).default('gop-cache').meta({
      description:
        'How a new viewer gets its first picture. "gop-cache": the live encoder starts (and is asked for a keyframe) when the stream.start is accepted, the agent keeps its latest keyframe and what follows, and sends that the moment the viewer\'s DTLS completes. "keyframe-on-connect" (the behaviour before issue 18, kept for comparison): the encoder starts and is asked for a keyframe only once the viewer has connected.',
    }),
    warmUp: z.boolean().default(true).meta({
      description:
        'Once the agent is up, run one WebRTC handshake between two peer connections inside the agent over 127.0.0.1 (nothing leaves the machine), so the first live view does not wait for werift\'s code to be compiled (measured: that first view\'s DTLS handshake 583 ms at p50 against 67 ms for later ones). Costs ~150 ms of one core once, at start-up (measured 134-172 ms here). false: the first view pays it instead.',
    }),
    fec: z.enum(['auto', 'off']).default('off').meta({
      description:
        '"auto": forward error correction for a viewer that offers it (RED + ULPFEC, as Chromium does): FEC packets in proportion to the loss the viewer reports (none on a clean link, which pays one byte a packet), so a lost packet can be rebuilt at once instead of waiting a round trip for its retransmission. "off" (default until bench/bad-link.ts shows it pays): NACK and retransmission only.',
    }),
    covert: z.boolean().default(false).meta({
      description:
        'Covert live view: the wearer is NOT told (no haptic, tone or LED) when a live view starts or stops. Only where the force\'s policy allows it; every stream started under it says so in the audit.',
      localOnly: true,
    }),
    whileNotRecording: z.enum(['start-recording', 'refuse']).default('start-recording').meta({
      description:
        'What is watched is recorded: a stream.start while the camera is not recording either starts a recording (audited, trigger "stream", pre-event buffer included) or is refused (`not_recording`, audited).',
    }),
  })
  .prefault({});

export type StreamConfig = z.infer<typeof streamConfigSchema>;
export type IceServerConfig = z.infer<typeof iceServerSchema>;
