// Receives commands on `<root>/<deviceId>/cmd`, has them verified, writes the decision to the
// audit trail BEFORE anything acts on it, runs the authorised ones and answers each on the MQTT 5
// Response Topic with the requester's Correlation Data. Commands are handled one at a time, so
// the replay cache and the concurrent-stream count see a consistent picture. One exception, for
// `concurrentActions` (stream.start in the agent): the next command is taken as soon as the
// executor has started, not when it has finished, since a stream.start's reply waits for ICE
// gathering (hundreds of ms, seconds with TURN) and a record.start must not wait behind it. That is
// safe because the verifier has already recorded the jti (replay) and the executor reserves its
// stream slot before its first await (StreamManager.activeCount counts the sessions still
// opening), so the next command's busy check sees it.
//
// Hostile input from anyone who may publish on `cmd` is bounded: at most `maxPending` commands
// and `maxPendingBytes` bytes wait (the rest are refused `overloaded` at once), repeated refusals are folded into counted
// summaries (src/audit/refusal-summary.ts) instead of one audit row each, and a Response Topic
// under the topic root (the camera's own or another device's topics) is refused, never published to.
import type { IPublishPacket } from 'mqtt';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import type { RefusalFolder } from '../audit/refusal-summary.ts';
import type { MqttSession } from '../link/mqtt-session.ts';
import type { AuthorisedCommand } from './authorised-command.ts';
import type { ClockState } from './clock.ts';
import type { CommandAction } from './types.ts';
import type { CommandVerifier } from './verifier.ts';

/** What an action returns: merged into the `{"ok": true}` reply, or a refusal with its code. */
export type ActionResult = { ok: true; [member: string]: unknown } | { ok: false; code: string; message: string };

/** The result code when an action's executor throws instead of answering. */
export const actionFailedCode = 'internal_error';

export type ActionExecutor = (command: AuthorisedCommand) => Promise<ActionResult> | ActionResult;

export interface CommandHandlerOptions {
  topic: string;
  session: Pick<MqttSession, 'publish' | 'on' | 'off'>;
  verifier: Pick<CommandVerifier, 'verify'>;
  audit: Pick<AuditLog, 'append'>;
  executors: Record<CommandAction, ActionExecutor>;
  logger: Logger;
  /** Folds repeated refusals; without one every refusal is audited in full and answered. */
  refusals?: Pick<RefusalFolder, 'refused' | 'flush'>;
  /** Most commands waiting to be handled; one more is refused `overloaded`. Default: no bound. */
  maxPending?: number;
  /** Most bytes of commands waiting (payload + pendingOverheadBytes each); one more is refused `overloaded`. Default: no bound. */
  maxPendingBytes?: number;
  /** Why a Response Topic is refused (see responseTopicProblem), or undefined if it may be used. */
  responseTopicProblem?: (topic: string) => string | undefined;
  /**
   * Actions whose executor reserves, before its first await, everything the verifier's checks
   * count: the next command is handled while they finish (see the top of the file).
   */
  concurrentActions?: readonly CommandAction[];
  /** The device clock's verdict and estimated error, recorded with every decision (docs/protocol.md, "Clock"). */
  clock?: { state?(): ClockState };
}

/** What one waiting command costs besides its payload (topic, properties, the queue's closure), for maxPendingBytes. */
export const pendingOverheadBytes = 512;

/** Longest part of a hostile Response Topic kept in the audit. */
const auditedTopicChars = 256;

/**
 * A Response Topic the camera must not publish to: anything under `<topicRoot>/` (its own
 * `audit`, `state`... or another device's) unless under one of `allowedPrefixes`, and anything
 * that is not a plain topic name ($-topics, wildcards, empty levels are not replies).
 */
export function responseTopicProblem(topic: string, topicRoot: string, allowedPrefixes: readonly string[]): string | undefined {
  if (topic.startsWith('$') || /[#+\u0000]/.test(topic)) return 'a Response Topic may not start with "$" or hold wildcards';
  if (allowedPrefixes.some((p) => topic.startsWith(p))) return undefined;
  if (topic === topicRoot || topic.startsWith(`${topicRoot}/`)) {
    return `Response Topic is under the topic root "${topicRoot}/" and not under commands.replyTopicPrefixes`;
  }
  return undefined;
}

export class CommandHandler {
  readonly name = 'commands';
  readonly #options: CommandHandlerOptions;
  readonly #logger: Logger;
  #queue: Promise<void> = Promise.resolve();
  #handled = 0;
  #pending = 0;
  #pendingBytes = 0;
  /** Executions of concurrentActions still running, awaited by stop(). */
  readonly #inflight = new Set<Promise<void>>();
  readonly #onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
    if (topic !== this.#options.topic) return;
    // The queue is a promise chain: without a bound a flood would hold every payload in memory.
    // Bounded in count and in bytes: small junk (refused in microseconds) may queue by the
    // thousand, so a valid command behind a burst is still reached; large payloads fill the byte
    // budget quickly.
    const bytes = payload.length + pendingOverheadBytes;
    if (this.#pending >= (this.#options.maxPending ?? Infinity) || this.#pendingBytes + bytes > (this.#options.maxPendingBytes ?? Infinity)) {
      this.#overloaded(payload, packet);
      return;
    }
    this.#pending += 1;
    this.#pendingBytes += bytes;
    this.#queue = this.#queue
      .then(() => this.#handle(payload, packet))
      .catch((err: unknown) => {
        this.#logger.error({ err }, 'command handling failed');
      })
      .finally(() => {
        this.#pending -= 1;
        this.#pendingBytes -= bytes;
      });
  };

  constructor(options: CommandHandlerOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ module: 'commands' });
  }

  get handled(): number {
    return this.#handled;
  }

  // The link subscribes the command topic on every connection, before the state says online
  // (FleetLink's inboundTopics): the handler only listens.
  start(): void {
    this.#options.session.on('message', this.#onMessage);
  }

  async stop(): Promise<void> {
    this.#options.session.off('message', this.#onMessage);
    await this.#queue;
    await Promise.all(this.#inflight);
  }

  /** Exposed for tests and `ctl`: the same path as a message from the broker. */
  async #handle(payload: Buffer, packet: Pick<IPublishPacket, 'properties'>): Promise<void> {
    this.#handled += 1;
    const responseTopic = packet.properties?.responseTopic;
    const correlationData = packet.properties?.correlationData;
    const topicProblem = responseTopic === undefined ? undefined : this.#options.responseTopicProblem?.(responseTopic);
    if (topicProblem !== undefined) {
      // Not verified, not acted on, not answered: a reply there would be the camera writing on
      // its own audit or state topic (or another device's) in its own name.
      this.#refuse('response_topic_refused', payload.length, undefined, () => {
        this.#options.audit.append({
          type: 'command.decision',
          decision: 'rejected',
          code: 'response_topic_refused',
          detail: { message: topicProblem, responseTopic: responseTopic!.slice(0, auditedTopicChars), responseTopicBytes: Buffer.byteLength(responseTopic!), bytes: payload.length },
        });
        this.#logger.warn({ code: 'response_topic_refused', responseTopic: responseTopic!.slice(0, auditedTopicChars), reason: topicProblem }, 'command rejected');
      });
      return;
    }
    const verdict = await this.#options.verifier.verify(payload);
    const clock = this.#clockState();

    if (!verdict.ok) {
      const a = verdict.audit;
      const reply = { ok: false, code: verdict.code, message: verdict.message };
      this.#refuse(verdict.code, payload.length, () => this.#reply(responseTopic, correlationData, reply), () => {
        this.#options.audit.append({
          type: 'command.decision',
          operator: a.operator ?? null,
          action: a.action ?? null,
          reason: a.reason ?? null,
          decision: 'rejected',
          code: verdict.code,
          tokenDigest: verdict.tokenDigest ?? null,
          // Only signature-verified claims are recorded as claims; header fields of a token that did
          // not verify are kept apart, marked as the attacker-controlled values they are.
          detail: {
            verified: a.verified,
            issuer: a.issuer ?? null,
            jti: a.jti ?? null,
            kid: a.kid ?? null,
            unverifiedHeader: a.unverified ?? null,
            message: verdict.message,
            bytes: payload.length,
            ...clock,
          },
        });
        this.#logger.warn({ code: verdict.code, reason: verdict.message, operator: a.operator, action: a.action }, 'command rejected');
      });
      return;
    }

    const command = verdict.command;
    // Folded refusals are summarised before an accepted command, so the audit reads in order.
    this.#options.refusals?.flush();
    this.#options.audit.append({
      type: 'command.decision',
      operator: command.operator,
      action: command.action,
      reason: command.reason,
      decision: 'accepted',
      code: null,
      tokenDigest: command.tokenDigest,
      detail: { issuer: command.issuer, jti: command.jti, kid: command.kid, expiresAt: command.expiresAt, ...clock },
    });
    this.#logger.info({ action: command.action, operator: command.operator, reason: command.reason, jti: command.jti }, 'command accepted');

    // Called here, in the queue, so its synchronous part (a concurrent action's reservation) runs
    // before the next command is verified.
    let running: Promise<ActionResult>;
    try {
      running = Promise.resolve(this.#options.executors[command.action](command));
    } catch (err) {
      running = Promise.reject(err as Error);
    }
    const done = this.#finish(command, running, responseTopic, correlationData).catch((err: unknown) => {
      this.#logger.error({ err, action: command.action }, 'command result handling failed');
    });
    if (!this.#options.concurrentActions?.includes(command.action)) return done;
    this.#inflight.add(done);
    void done.finally(() => this.#inflight.delete(done));
  }

  async #finish(command: AuthorisedCommand, running: Promise<ActionResult>, responseTopic: string | undefined, correlationData: Buffer | undefined): Promise<void> {
    let result: ActionResult;
    try {
      result = await running;
    } catch (err) {
      result = { ok: false, code: actionFailedCode, message: (err as Error).message };
    }
    if (!result.ok) {
      this.#options.audit.append({
        type: 'command.result',
        operator: command.operator,
        action: command.action,
        reason: command.reason,
        decision: null,
        code: result.code,
        tokenDigest: command.tokenDigest,
        detail: { message: result.message },
      });
      this.#logger.warn({ action: command.action, code: result.code, reason: result.message }, 'authorised command could not be carried out');
    }
    this.#reply(responseTopic, correlationData, result);
  }

  /**
   * A refusal: audited in full (`auditInFull`, which also logs), or folded into the next summary;
   * answered (`reply`) while the window's reply budget lasts.
   */
  #refuse(code: string, bytes: number, reply: (() => void) | undefined, auditInFull: () => void): void {
    const folder = this.#options.refusals;
    if (!folder) {
      auditInFull();
      reply?.();
      return;
    }
    const outcome = folder.refused('cmd', code, bytes, auditInFull);
    if (outcome.reply) reply?.();
  }

  #overloaded(payload: Buffer, packet: Pick<IPublishPacket, 'properties'>): void {
    this.#handled += 1;
    const message = `more than ${this.#options.maxPending} commands or ${this.#options.maxPendingBytes} bytes are waiting (commands.maxPending, commands.maxPendingBytes); try again`;
    const responseTopic = packet.properties?.responseTopic;
    const allowed = responseTopic !== undefined && this.#options.responseTopicProblem?.(responseTopic) === undefined;
    const reply = allowed ? () => this.#reply(responseTopic, packet.properties?.correlationData, { ok: false, code: 'overloaded', message }) : undefined;
    try {
      this.#refuse('overloaded', payload.length, reply, () => {
        this.#options.audit.append({ type: 'command.decision', decision: 'rejected', code: 'overloaded', detail: { message, bytes: payload.length } });
        this.#logger.warn({ code: 'overloaded', pending: this.#pending }, 'command rejected');
      });
    } catch (err) {
      this.#logger.error({ err: (err as Error).message }, 'overloaded command could not be audited');
    }
  }

  /** `{clock: ClockState}` for an audit entry's detail, or nothing when the clock cannot tell. */
  #clockState(): { clock?: ClockState } {
    try {
      const state = this.#options.clock?.state?.();
      return state === undefined ? {} : { clock: state };
    } catch (err) {
      this.#logger.warn({ err: (err as Error).message }, 'cannot read the clock state for the audit');
      return {};
    }
  }

  #reply(topic: string | undefined, correlationData: Buffer | undefined, body: object): void {
    if (!topic) {
      this.#logger.warn('command without a Response Topic: decision audited, no reply sent');
      return;
    }
    const properties = correlationData ? { correlationData } : {};
    this.#options.session.publish(topic, JSON.stringify(body), { qos: 1, properties }, (err) => {
      if (err) this.#logger.warn({ err: err.message, topic }, 'command reply not delivered');
    });
  }
}
