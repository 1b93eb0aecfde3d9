// The live-view session id (sid) the camera mints, and the one check of its shape. A sid arrives
// back in topics (`stream/<sid>/ice-answer`) and claims, where anyone who may publish could put
// 60 KB of anything: a sid of any other shape is refused before it is parsed, stored or logged.
import { randomUUID } from 'node:crypto';

const sessionIdPattern = /^s-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** "s-" and a random UUID (lower-case hex): 38 characters. */
export function newSessionId(): string {
  return `s-${randomUUID()}`;
}

export function isSessionId(sid: string): boolean {
  return sid.length === 38 && sessionIdPattern.test(sid);
}
