// Who may do what in the console. Each user has roles in users.json; each route names the roles it
// serves (routeRoles below) and the server refuses anything else with 403 naming the role needed,
// before it signs or reads anything. A user may hold several roles.
//
//   supervisor    requests live views and watches them; stops the views they started; sees the
//                 wearers' watch-me and emergency alerts and acknowledges emergencies; talks back
//   duty-officer  also stops anyone's live view (the control room's duty inspector); reads and
//                 acknowledges alerts; sees and acknowledges officer alerts
//   standards     professional standards: read-only (audit, alerts, the oversight report);
//                 acknowledges alerts (a review, not a change to anything a camera holds)
//   fleet-admin   enrolment and fleet management (their routes name this role)

export const roles = ['supervisor', 'duty-officer', 'standards', 'fleet-admin'] as const;
export type Role = (typeof roles)[number];

export const isRole = (v: unknown): v is Role => typeof v === 'string' && (roles as readonly string[]).includes(v);

/** What each role is for, in the words users.ts and the README use. */
export const roleWords: Record<Role, string> = {
  supervisor: 'requests and watches live views, stops its own',
  'duty-officer': "stops anyone's live view; reads and acknowledges alerts",
  standards: 'read-only: audit, alerts, reports; acknowledges alerts',
  'fleet-admin': 'enrolment and fleet management',
};

/**
 * The roles each route serves; a route not listed here is open to every signed-in user (its own
 * account, the page's configuration and event stream). Keys are "METHOD /path" with :param.
 */
export const routeRoles: Record<string, readonly Role[]> = {
  'POST /api/live': ['supervisor'],
  'POST /api/live/ice': ['supervisor'],
  'POST /api/live/stop': ['supervisor', 'duty-officer'],
  'GET /api/audit/:deviceId': ['supervisor', 'duty-officer', 'standards', 'fleet-admin'],
  'GET /api/alerts': ['standards', 'duty-officer'],
  'POST /api/alerts/:id/ack': ['standards', 'duty-officer'],
  // The wearer's watch-me requests and emergencies (officer.ts): seen and answered by those who
  // deal with them; a standards reviewer reads them in the camera's audit, never answers them.
  'GET /api/officer/alerts': ['supervisor', 'duty-officer'],
  'POST /api/officer/ack': ['supervisor', 'duty-officer'],
  // The oversight report (report.ts): live views, reasons and alerts of a period, for review.
  'GET /api/report': ['standards', 'duty-officer'],
  // The fleet-admin desk (fleet-admin.ts): config, key revocation, updates, diagnostics, enrolment.
  'GET /api/fleet/cameras': ['fleet-admin'],
  'POST /api/fleet/config': ['fleet-admin'],
  'POST /api/fleet/revoke': ['fleet-admin'],
  'POST /api/fleet/update': ['fleet-admin'],
  'POST /api/fleet/diag': ['fleet-admin'],
  'GET /api/fleet/diag/:id': ['fleet-admin'],
  'POST /api/fleet/enrol': ['fleet-admin'],
};

/** Undefined when allowed, else the refusal in words. */
export function refusal(route: string, held: readonly Role[]): string | undefined {
  const needed = routeRoles[route];
  if (!needed || needed.some((r) => held.includes(r))) return undefined;
  return `this needs the ${needed.join(' or ')} role (you have ${held.length ? held.join(', ') : 'none'})`;
}

/**
 * A shift as users.ts takes it, "HH:MM-HH:MM" in the console's local time; one that ends before it
 * starts runs past midnight (19:00-07:00). Minutes from midnight.
 */
export interface Shift {
  startMin: number;
  endMin: number;
}

export function parseShift(text: string): Shift {
  const m = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$/.exec(text);
  if (!m) throw new Error(`a shift is HH:MM-HH:MM, e.g. 07:00-19:00 (got ${JSON.stringify(text)})`);
  const startMin = Number(m[1]) * 60 + Number(m[2]);
  const endMin = Number(m[3]) * 60 + Number(m[4]);
  if (startMin === endMin) throw new Error(`a shift must not start and end at the same time (got ${JSON.stringify(text)})`);
  return { startMin, endMin };
}

/** Whether a minute of the day (local) is inside the shift. */
export function inShift(shift: Shift, minuteOfDay: number): boolean {
  return shift.startMin < shift.endMin
    ? minuteOfDay >= shift.startMin && minuteOfDay < shift.endMin
    : minuteOfDay >= shift.startMin || minuteOfDay < shift.endMin;
}
