// Messages between the agent (talkback.ts) and the talk-back playback process (talkback-player.ts),
// over Node's IPC channel with 'advanced' serialization (Buffers travel as bytes, not JSON).

export type PlayerMessage =
  | {
      type: 'start';
      spurt: string;
      /** The viewer's Opus payload type, from its offer. */
      payloadType: number;
      /** talkback.sink: a GStreamer sink description. */
      sink: string;
      /** rtpjitterbuffer latency, ms. */
      jitterMs: number;
      /** Where to write the spurt as Ogg/Opus (recording on), or null. */
      oggFile: string | null;
    }
  | { type: 'rtp'; spurt: string; packet: Uint8Array }
  | { type: 'end'; spurt: string };

export type PlayerReply =
  | { type: 'ready' }
  | { type: 'playing'; spurt: string }
  | { type: 'ended'; spurt: string; packets: number; oggFile: string | null; error: string | null };
