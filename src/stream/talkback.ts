// Talk-back (issue 19, docs/protocol.md "Talk-back"): the supervisor's voice, received by a live
// view whose stream.start granted it (session.ts decides and screens), played to the wearer.
//
// A talk spurt begins at the first audio packet after silence: the wearer hears the firmware
// bridge's `talk-start` pattern (two 1.2 kHz tones from the camera's own buzzer: the bridge's
// pattern rather than an audiotestsrc tone in the playback, so the cue needs no audio path of its
// own, plays even while the earpiece pipeline is still starting, and never mixes into the
// supervisor's words in the evidence), `stream.talk_started` {sid, operator} is audited and sent,
// and the packets go to the playback process (talkback-player.ts). The spurt ends when no audio has
// come for talkback.idleMs: the pipeline gets EOS, `stream.talk_stopped` is audited and sent, and
// with recording on the spurt's Ogg/Opus file is handed to the evidence (encrypted and hashed in
// the recording's manifest like a segment). One spurt at a time: the wearer has one ear; audio of
// a second view while a spurt runs is dropped and counted.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import { errorMessage } from '../errors.ts';
import type { TalkHooks } from './session.ts';
import type { PlayerMessage, PlayerReply } from './talkback-protocol.ts';

export interface TalkbackConfig {
  enabled: boolean;
  sink: string;
  idleMs: number;
  jitterMs: number;
}

/** Where a spurt's recording goes while the camera records (the recorder implements it). */
export interface TalkEvidence {
  /** The recording running now and a plaintext path for a new Ogg file, or null when not recording. */
  open(spurt: string): { recordingId: string; file: string } | null;
  /** The spurt's finished Ogg file: encrypt it (if on), hash it into the recording's manifest. */
  store(recordingId: string, file: string, detail: TalkSpurtDetail): Promise<void>;
}

export interface TalkSpurtDetail {
  spurt: string;
  sid: string;
  operator: string;
  startedAt: string;
  endedAt: string;
}

export interface TalkbackOptions {
  config: TalkbackConfig;
  audit: Pick<AuditLog, 'append'>;
  sendEvent: (body: Record<string, unknown>) => void;
  /** Plays the bridge's talk-start pattern (FirmwareExtension.talkStarting). */
  wearerCue: () => void;
  evidence?: TalkEvidence;
  logger: Logger;
  /** Player entry point; default talkback-player.ts/.js next to this module. */
  playerPath?: string;
}

interface Spurt {
  id: string;
  sid: string;
  operator: string;
  startedAt: number;
  idleTimer: NodeJS.Timeout;
  /** The Ogg file being written for the recording; null when not recording (or not played). */
  evidence: { recordingId: string; file: string } | null;
  packets: number;
}

function defaultPlayerPath(): string {
  // Under type stripping this module is talkback-player.ts's sibling; built, both are .js in dist/.
  const ext = import.meta.url.endsWith('.ts') ? 'ts' : 'js';
  return fileURLToPath(new URL(`./talkback-player.${ext}`, import.meta.url));
}

export class Talkback implements TalkHooks {
  readonly #o: TalkbackOptions;
  readonly #log: Logger;
  #player: ChildProcess | undefined;
  #spurt: Spurt | undefined;
  /** Spurts whose pipeline is finishing, by id: their evidence arrives with the player's `ended`. */
  readonly #finishing = new Map<string, Spurt>();
  /** Audio dropped because another view held the wearer's ear. */
  busyDropped = 0;
  #stopped = false;

  constructor(o: TalkbackOptions) {
    this.#o = o;
    this.#log = o.logger.child({ module: 'talkback' });
  }

  /** Started when a talk-granted view opens, so the first words find the player ready. */
  warm(): void {
    if (this.#stopped || this.#player) return;
    const child = spawn(process.execPath, [this.#o.playerPath ?? defaultPlayerPath()], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    this.#player = child;
    child.on('message', (m: PlayerReply) => this.#onReply(m));
    child.on('exit', (code, signal) => {
      if (this.#player === child) this.#player = undefined;
      if (!this.#stopped) this.#log.warn({ code, signal }, 'talk-back player exited; the next spurt starts a new one');
      for (const s of this.#finishing.values()) this.#onReply({ type: 'ended', spurt: s.id, packets: s.packets, oggFile: s.evidence?.file ?? null, error: 'the player exited' });
    });
    child.on('error', (err) => this.#log.error({ err: errorMessage(err) }, 'talk-back player could not start'));
  }

  audio(sid: string, operator: string, packet: Buffer, payloadType: number): void {
    if (this.#stopped) return;
    let s = this.#spurt;
    if (s && s.sid !== sid) {
      this.busyDropped++;
      return;
    }
    if (!s) s = this.#begin(sid, operator, payloadType);
    s.packets++;
    s.idleTimer.refresh();
    this.#send({ type: 'rtp', spurt: s.id, packet });
  }

  refused(sid: string, operator: string, why: string): void {
    try {
      this.#o.audit.append({ type: 'stream.talk_refused', operator, action: null, reason: null, tokenDigest: null, detail: { sid, why } });
    } catch (err) {
      this.#log.error({ sid, err: errorMessage(err) }, 'stream.talk_refused could not be audited');
    }
  }

  /** The view ended: its spurt, if any, ends now. */
  sessionEnded(sid: string): void {
    if (this.#spurt?.sid === sid) this.#end(this.#spurt);
  }

  async stop(): Promise<void> {
    if (this.#spurt) this.#end(this.#spurt);
    this.#stopped = true;
    const child = this.#player;
    if (!child) return;
    // Let the last spurt's EOS reach its sink and file, then disconnect: the player exits.
    const deadline = Date.now() + 4000;
    while (this.#finishing.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.disconnect();
      setTimeout(() => {
        child.kill('SIGKILL');
        resolve();
      }, 2000).unref();
    });
  }

  #begin(sid: string, operator: string, payloadType: number): Spurt {
    this.warm();
    const id = `t-${randomUUID()}`;
    const startedAt = Date.now();
    const evidence = this.#openEvidence(id);
    const s: Spurt = { id, sid, operator, startedAt, evidence, packets: 0, idleTimer: setTimeout(() => this.#end(s), this.#o.config.idleMs) };
    this.#spurt = s;
    const detail = { sid, spurt: id, recordingId: evidence?.recordingId ?? null };
    // Audited before a sound is made: a voice in the wearer's ear that the trail cannot account
    // for is not played (the spurt is then silent: its packets go nowhere until it ends).
    if (!this.#auditTalk('stream.talk_started', operator, detail)) {
      s.evidence = null;
      return s;
    }
    this.#o.wearerCue();
    this.#send({ type: 'start', spurt: id, payloadType, sink: this.#o.config.sink, jitterMs: this.#o.config.jitterMs, oggFile: evidence?.file ?? null });
    this.#o.sendEvent({ type: 'stream.talk_started', time: new Date(startedAt).toISOString(), sid, operator });
    this.#log.info({ ...detail, operator }, 'talk-back started');
    return s;
  }

  #end(s: Spurt): void {
    if (this.#spurt !== s) return;
    this.#spurt = undefined;
    clearTimeout(s.idleTimer);
    this.#finishing.set(s.id, s);
    this.#send({ type: 'end', spurt: s.id });
    const now = Date.now();
    const detail = { sid: s.sid, spurt: s.id, packets: s.packets, durationS: Math.round((now - s.startedAt) / 100) / 10, recordingId: s.evidence?.recordingId ?? null };
    this.#auditTalk('stream.talk_stopped', s.operator, detail);
    this.#o.sendEvent({ type: 'stream.talk_stopped', time: new Date(now).toISOString(), sid: s.sid, operator: s.operator });
    this.#log.info({ ...detail, operator: s.operator }, 'talk-back stopped');
  }

  #openEvidence(spurt: string): { recordingId: string; file: string } | null {
    try {
      return this.#o.evidence?.open(spurt) ?? null;
    } catch (err) {
      this.#log.error({ spurt, err: errorMessage(err) }, 'talk-back evidence file could not be opened; played, not recorded');
      return null;
    }
  }

  #onReply(m: PlayerReply): void {
    if (m.type !== 'ended') return;
    const s = this.#finishing.get(m.spurt) ?? (this.#spurt?.id === m.spurt ? this.#spurt : undefined);
    if (m.error !== null) this.#log.error({ spurt: m.spurt, error: m.error }, 'talk-back playback failed');
    if (!s) return;
    this.#finishing.delete(m.spurt);
    if (s.evidence && this.#o.evidence) {
      const detail: TalkSpurtDetail = { spurt: s.id, sid: s.sid, operator: s.operator, startedAt: new Date(s.startedAt).toISOString(), endedAt: new Date().toISOString() };
      this.#o.evidence.store(s.evidence.recordingId, s.evidence.file, detail).catch((err: unknown) => this.#log.error({ spurt: s.id, err: errorMessage(err) }, 'talk-back evidence could not be stored'));
    }
  }

  #auditTalk(type: 'stream.talk_started' | 'stream.talk_stopped', operator: string, detail: Record<string, unknown>): boolean {
    try {
      this.#o.audit.append({ type, operator, action: null, reason: null, tokenDigest: null, detail });
      return true;
    } catch (err) {
      this.#log.error({ type, err: errorMessage(err) }, 'talk-back could not be audited');
      return false;
    }
  }

  #send(m: PlayerMessage): void {
    const child = this.#player;
    if (!child?.connected) return;
    child.send(m, (err) => {
      if (err) this.#log.debug({ err: errorMessage(err) }, 'talk-back player message not sent');
    });
  }
}
