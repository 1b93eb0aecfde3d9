// Commands from `<root>/<deviceId>/cmd`, as the link's request channel hands them over one at a time
// (src/link/request-channel.ts: the queue, its bounds, the Response Topic policy and the reply):
// has them verified, writes the decision to the audit trail BEFORE anything acts on it, runs the
// authorised ones and returns the reply body. Commands are handled one at a time, so the replay
// cache and the concurrent-stream count see a consistent picture. One exception, for
// `concurrentActions` (stream.start in the agent): the next command is taken as soon as the
// executor has started, not when it has finished, since a stream.start's reply waits for ICE
// gathering (hundreds of ms, seconds with TURN) and a record.start must not wait behind it. That is
// safe because the verifier has already recorded the jti (replay) and the executor reserves its
// stream slot before its first await (StreamManager.activeCount counts the sessions still
// opening), so the next command's busy check sees it.
//
// Hostile input from anyone who may publish on `cmd`: repeated refusals (overloaded, a refused
// Response Topic, a token that does not verify) are folded into counted summaries
// (src/audit/refusal-summary.ts) instead of one audit row each.
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/audit-log.ts';
import type { RefusalFolder } from '../audit/refusal-summary.ts';
import { errorMessage } from '../errors.ts';
import type { InboundRequest, QueueLimits, RequestChannel, RequestHandler } from '../link/request-channel.ts';
import type { AuthorisedCommand } from './authorised-command.ts';
import type { ClockState } from './clock.ts';
import type { CommandAction } from './types.ts';
import type { CommandVerifier } from './verifier.ts';
import type { Extension } from '../agent/extension.ts';

/** What an action returns: merged into the `{"ok": true}` reply, or a refusal with its code. */
export type ActionResult = { ok: true; [member: string]: unknown } | { ok: false; code: string; message: string };

/** The result code when an action's executor throws instead of answering. */
export const actionFailedCode = 'internal_error';

/** The result code of an accepted action this handler has no executor for. */
export const notSupportedCode = 'not_supported';

/**
 * `reply.more` publishes a further message on the command's Response Topic, with its Correlation
 * Data (a diag.collect bundle's chunks after the reply); nothing when the command had no
 * Response Topic.
 */
export interface ActionReply {
  more(body: object): void;
}

export type ActionExecutor = (command: AuthorisedCommand, reply: ActionReply) => Promise<ActionResult> | ActionResult;

export interface CommandHandlerOptions {
  /** The link's channel for `cmd` (FleetLink.requestChannel): queue, bounds, Response Topic, reply. */
  requests: Pick<RequestChannel, 'listen' | 'close'>;
  verifier: Pick<CommandVerifier, 'verify'>;
  audit: Pick<AuditLog, 'append'>;
  /**
   * One per action this handler carries out. Partial so that a handler built for some actions (a
   * test's, a bench's) need not list the fleet-management ones; an action without one is
   * answered `not_supported` after its acceptance is audited.
   */
  executors: Partial<Record<CommandAction, ActionExecutor>>;
  logger: Logger;
  /** Folds repeated refusals; without one every refusal is audited in full and answered. */
  refusals?: Pick<RefusalFolder, 'refused' | 'flush'>;
  /**
   * Actions whose executor reserves, before its first await, everything the verifier's checks
   * count: the next command is handled while they finish (see the top of the file).
   */
  concurrentActions?: readonly CommandAction[];
  /** The device clock's verdict and estimated error, recorded with every decision (docs/protocol.md, "Clock"). */
  clock?: { state?(): ClockState };
}

/** Longest part of a hostile Response Topic kept in the audit. */
const auditedTopicChars = 256;

export class CommandHandler implements Extension, RequestHandler {
  readonly name = 'commands';
  readonly #options: CommandHandlerOptions;
  readonly #logger: Logger;
  /** Executions of concurrentActions still running, awaited by stop(). */
  readonly #inflight = new Set<Promise<void>>();

  constructor(options: CommandHandlerOptions) {
    this.#options = options;
    this.#logger = options.logger.child({ module: 'commands' });
  }

  // The link subscribes the command topic on every connection, before the state says online
  // (FleetLink's inboundTopics): the handler only listens.
  start(): void {
    this.#options.requests.listen(this);
  }

  async stop(): Promise<void> {
    await this.#options.requests.close();
    await Promise.all(this.#inflight);
  }

  /** Not verified, not acted on, not answered (the channel refused its Response Topic): audited. */
  responseTopicRefused(request: InboundRequest, problem: string): void {
    const { payload } = request;
    const responseTopic = request.responseTopic ?? '';
    this.#refuse('response_topic_refused', payload.length, undefined, () => {
      this.#options.audit.append({
        type: 'command.decision',
        decision: 'rejected',
        code: 'response_topic_refused',
        detail: { message: problem, responseTopic: responseTopic.slice(0, auditedTopicChars), responseTopicBytes: Buffer.byteLength(responseTopic), bytes: payload.length },
      });
      this.#logger.warn({ code: 'response_topic_refused', responseTopic: responseTopic.slice(0, auditedTopicChars), reason: problem }, 'command rejected');
    });
  }

  /** One command, in the channel's queue: verified, audited, executed, answered. */
  async handle(request: InboundRequest): Promise<void> {
    const { payload } = request;
    const verdict = await this.#options.verifier.verify(payload);
    const clock = this.#clockState();

    if (!verdict.ok) {
      const a = verdict.audit;
      const reply = { ok: false, code: verdict.code, message: verdict.message };
      this.#refuse(verdict.code, payload.length, () => request.reply(reply), () => {
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
      const executor = this.#options.executors[command.action];
      running = executor
        ? Promise.resolve(executor(command, { more: (body) => request.reply(body) }))
        : Promise.resolve({ ok: false, code: notSupportedCode, message: `this agent does not carry out ${command.action}` });
    } catch (err) {
      running = Promise.reject(err as Error);
    }
    const done = this.#finish(command, running, request).catch((err: unknown) => {
      this.#logger.error({ err, action: command.action }, 'command result handling failed');
    });
    if (!this.#options.concurrentActions?.includes(command.action)) return done;
    this.#inflight.add(done);
    void done.finally(() => this.#inflight.delete(done));
  }

  /** Too many commands wait: refused at once, answered where the Response Topic is allowed. */
  overloaded(request: { payload: Buffer; reply: ((body: object) => void) | undefined }, limits: QueueLimits): void {
    const { payload } = request;
    const message = `more than ${limits.maxPending} commands or ${limits.maxPendingBytes} bytes are waiting (commands.maxPending, commands.maxPendingBytes); try again`;
    const reply = request.reply ? () => request.reply!({ ok: false, code: 'overloaded', message }) : undefined;
    try {
      this.#refuse('overloaded', payload.length, reply, () => {
        this.#options.audit.append({ type: 'command.decision', decision: 'rejected', code: 'overloaded', detail: { message, bytes: payload.length } });
        this.#logger.warn({ code: 'overloaded', pending: limits.pending }, 'command rejected');
      });
    } catch (err) {
      this.#logger.error({ err: errorMessage(err) }, 'overloaded command could not be audited');
    }
  }

  async #finish(command: AuthorisedCommand, running: Promise<ActionResult>, request: InboundRequest): Promise<void> {
    let result: ActionResult;
    try {
      result = await running;
    } catch (err) {
      result = { ok: false, code: actionFailedCode, message: errorMessage(err) };
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
    request.reply(result);
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

  /** `{clock: ClockState}` for an audit entry's detail, or nothing when the clock cannot tell. */
  #clockState(): { clock?: ClockState } {
    try {
      const state = this.#options.clock?.state?.();
      return state === undefined ? {} : { clock: state };
    } catch (err) {
      this.#logger.warn({ err: errorMessage(err) }, 'cannot read the clock state for the audit');
      return {};
    }
  }
}
