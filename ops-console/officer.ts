// The officer in the loop, the console's half (issue 19): the wearer's watch-me requests and
// emergencies arrive as the camera's events (`officer.*`, shapes checked in message-shapes.ts),
// are kept in the archive's OfficerAlertStore and shown to supervisors and duty officers; the
// console signs, for the operator who clicks, the commands that answer them: `alert.ack` (and with
// `clear: true`, the end of an emergency) and a `stream.start` that may carry the `talk: true`
// claim (talk-back; the camera honours it only if this console's key holds the `stream.talk` grant).
// The camera stays the authority: an emergency shows as acknowledged only once the camera says so
// (officer.emergency_acknowledged), never on the click alone.
import { randomUUID } from 'node:crypto';
import { offerSha256, signAsIssuer } from '../src/cli/fleet-tools.ts';
import { commandTokenType } from '../src/command/types.ts';
import type { NewOfficerAlert, OfficerAlert, OfficerAlertStore } from './archive/archive.ts';
import type { Role } from './roles.ts';

/** Who sees officer alerts and answers them (routeRoles has the routes). */
export const officerAlertRoles: readonly Role[] = ['supervisor', 'duty-officer'];
/** Who may speak to a wearer in a live view they hold, when the console's talk-back is on. */
export const talkRoles: readonly Role[] = ['supervisor', 'duty-officer'];
/** The reason every alert.ack carries (the camera requires one, as for every command). */
export const alertAckReason = 'officer-safety';
/** What a watch-me is answered with: a live view with this reason (the misuse rule checks it was asked). */
export const watchMeReason = 'officer-request';

export interface SignContext {
  keyFile: string;
  issuer: string;
  device: string;
  operator: string;
}

/** alert.ack for one emergency, optionally ending it (`clear: true`). */
export function signAlertAck(c: SignContext, alertId: string, clear: boolean): Promise<string> {
  return signAsIssuer(c, commandTokenType, { act: 'alert.ack', jti: randomUUID(), reason: alertAckReason, alert_id: alertId, ...(clear ? { clear: true } : {}) });
}

/**
 * A stream.start with the talk claim: the claims signCommand makes for stream.start, plus `talk`.
 * (signCommand has no talk option on this branch; the talk-back helper's branch may add one, and
 * then this is its one caller to switch.)
 */
export function signTalkStart(c: SignContext & { reason: string; maxS: number; offer: string }): Promise<string> {
  return signAsIssuer(c, commandTokenType, { act: 'stream.start', jti: randomUUID(), reason: c.reason, max_s: c.maxS, offer_sha256: offerSha256(c.offer), talk: true });
}

type EventBody = { type: string; time: string } & Record<string, unknown>;

/**
 * Applies one camera event to the store: returns the alert it raised or changed (to show), or
 * undefined for any other event or a repeat. The body was shape-checked already (checkEvent).
 */
export async function applyOfficerEvent(store: OfficerAlertStore, deviceId: string, body: EventBody): Promise<OfficerAlert | undefined> {
  const position = (body.position ?? null) as NewOfficerAlert['position'];
  const recordingId = typeof body.recordingId === 'string' ? body.recordingId : null;
  switch (body.type) {
    case 'officer.watch_me': {
      const r = await store.raise({ deviceId, alertId: String(body.requestId), kind: 'watch-me', at: body.time, source: null, trigger: null, position, recordingId });
      return r.repeat ? undefined : r.alert;
    }
    case 'officer.emergency': {
      const r = await store.raise({
        deviceId, alertId: String(body.alertId), kind: 'emergency', at: body.time, source: String(body.source),
        trigger: typeof body.trigger === 'string' ? body.trigger : null, position, recordingId,
      });
      return r.repeat ? undefined : r.alert;
    }
    case 'officer.emergency_acknowledged':
      return store.acknowledge(deviceId, String(body.alertId), String(body.operator), body.time);
    case 'officer.emergency_cleared':
      return store.clear(deviceId, String(body.alertId), body.by === 'wearer' ? 'wearer' : 'operator', typeof body.operator === 'string' ? body.operator : null, body.time);
    default:
      return undefined;
  }
}
