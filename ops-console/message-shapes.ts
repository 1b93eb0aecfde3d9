// What the console accepts from the broker. Anyone who can publish under a camera's topics (a
// stolen camera credential, a loose ACL) can send the console anything, so every message is
// checked for size and shape before it is kept or shown: a state whose fields are not what the
// page draws (a number for gps.fix stopped the camera table for every supervisor), an audit
// message of megabytes, or a topic naming an impossible device id is refused with words naming
// what is wrong. zod (already the agent's config validator) states the shapes; the fields the
// console does not read are let through as they are (a newer agent may add some), within the size
// limit. The shapes follow src/state/device-state.ts (DeviceStateDoc) and src/audit/audit-log.ts
// (AuditMessage); the console never imports the agent's runtime, only these types' meaning.
import { z } from 'zod';

export interface MessageLimits {
  /** Largest state document kept (bytes). A real one is a few KB. */
  stateBytes: number;
  /** Largest audit message kept (bytes). A real entry or checkpoint is well under 4 KB. */
  auditBytes: number;
  /** Largest event message (bytes). */
  eventBytes: number;
  /** Largest ICE restart offer message (bytes): an SDP with all candidates is a few KB. */
  iceOfferBytes: number;
  /** Audit messages kept in memory per camera; past it the oldest go (the archive keeps them all). */
  auditPerCamera: number;
  /** Versions of one audit seq kept: two show a fork; more only cost memory and time. */
  versionsPerSeq: number;
  /** Cameras the console keeps a record of; a publisher inventing device ids stops here. */
  cameras: number;
}

export const defaultLimits: MessageLimits = {
  stateBytes: 64 * 1024,
  auditBytes: 32 * 1024,
  eventBytes: 16 * 1024,
  iceOfferBytes: 128 * 1024,
  auditPerCamera: 20_000,
  versionsPerSeq: 2,
  cameras: 20_000,
};

/** A device id the console's routes can name (GET /api/audit/:id uses the same pattern). */
export const deviceIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

const text = (max = 256) => z.string().max(max);
const count = z.number().int().min(0);
const finite = z.number().finite();

const streamSession = z.looseObject({
  sid: text(128),
  operator: text(128),
  reason: text(128),
  state: text(32),
  startedAt: text(64),
  endsBy: text(64),
  covert: z.boolean(),
});

export const stateShape = z.looseObject({
  online: z.boolean(),
  deviceId: text(128).optional(),
  reason: text().optional(),
  agentVersion: text(64).nullable().optional(),
  recording: z.boolean().optional(),
  capture: z.looseObject({
    status: text(64),
    restarts: count.optional(),
    lastFault: z.looseObject({ at: text(64), reason: text(1024) }).nullable().optional(),
  }).nullable().optional(),
  streaming: z.looseObject({
    sessions: count,
    bitrateKbps: finite.nullable().optional(),
    list: z.array(streamSession).max(64),
  }).optional(),
  commandPolicy: z.looseObject({
    reasons: z.array(text(64)).max(64),
    maxStreamDurationS: finite.optional(),
    maxConcurrentStreams: count.optional(),
  }).nullable().optional(),
  battery: z.looseObject({ percent: finite.nullable().optional(), charging: z.boolean().nullable().optional() }).optional(),
  devicePublicKey: z.looseObject({ kty: text(16) }).nullable().optional(),
  auditHead: z.looseObject({ seq: count, hash: text(128) }).nullable().optional(),
  gps: z.looseObject({
    gpsd: z.enum(['connected', 'disconnected']),
    fix: z.enum(['no-fix', '2d', '3d']),
    gpsTime: text(64).nullable().optional(),
    lat: z.number().min(-90).max(90).nullable(),
    lon: z.number().min(-180).max(180).nullable(),
    accuracyM: z.number().min(0).finite().nullable().optional(),
  }).nullable().optional(),
  startedAt: text(64).optional(),
  time: text(64).optional(),
  // The wearer's open requests (issue 19): the page marks the camera while either is set.
  officer: z.looseObject({
    emergency: z.looseObject({ alertId: text(128), since: text(64), source: text(64), acknowledgedBy: text(128).nullable() }).nullable().optional(),
    watchMe: z.looseObject({ requestId: text(128), since: text(64) }).nullable().optional(),
  }).nullable().optional(),
});

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits');

export const auditShape = z.discriminatedUnion('kind', [
  z.looseObject({
    kind: z.literal('entry'),
    entry: z.looseObject({
      seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
      time: text(64),
      device: text(128),
      type: text(64),
      operator: text(128).nullable(),
      action: text(64).nullable(),
      reason: text(128).nullable(),
      decision: z.enum(['accepted', 'rejected']).nullable(),
      code: text(64).nullable(),
      tokenDigest: text(128).nullable(),
      detail: z.record(z.string(), z.unknown()),
      prevHash: hex64,
      hash: hex64,
    }),
  }),
  z.looseObject({
    kind: z.literal('checkpoint'),
    checkpoint: z.looseObject({
      seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
      headHash: hex64,
      time: text(64),
      device: text(128),
      kid: text(128),
      signature: text(256),
      publicJwk: z.looseObject({ kty: text(16) }),
    }),
  }),
]);

/** A camera event (docs/protocol.md, `event`): what the rules read is its type and time. */
export const eventShape = z.looseObject({ type: text(64), time: text(64) });

/** A wearer's position in an officer alert (the agent's last fix), or null without one. */
const officerPosition = z.looseObject({
  lat: z.number().min(-90).max(90),
  lon: z.number().min(-180).max(180),
  accuracyM: z.number().min(0).finite().nullable().optional(),
}).nullable();

/**
 * The officer-in-the-loop events (issue 19, docs/protocol.md "event"): what the console shows as
 * alerts and in the audit view, so each field it draws or stores is checked as the others are.
 * Ids are at most 128 characters (the agent makes UUIDs); unknown fields pass, as elsewhere.
 */
export const officerEventShapes: Record<string, z.ZodType> = {
  'officer.watch_me': z.looseObject({ requestId: text(128), position: officerPosition, recordingId: text(128).nullable() }),
  'officer.emergency': z.looseObject({
    alertId: text(128), source: z.enum(['button', 'fall', 'trigger']), trigger: text(64).optional(),
    position: officerPosition, recordingId: text(128).nullable(),
  }),
  'officer.emergency_acknowledged': z.looseObject({ alertId: text(128), operator: text(128) }),
  'officer.emergency_cleared': z.looseObject({ alertId: text(128), by: z.enum(['wearer', 'operator']), operator: text(128).nullable() }),
  'officer.trigger': z.looseObject({ source: text(64), actions: z.array(z.enum(['record', 'alert'])).max(8), recordingId: text(128).nullable() }),
  'recording.bookmark': z.looseObject({
    markId: text(128), recordingId: text(128).nullable(), offsetS: z.number().min(0).finite().nullable(),
    source: z.enum(['button', 'command']), operator: text(128).nullable(), note: text(200).nullable(),
  }),
  'stream.talk_started': z.looseObject({ sid: text(128), operator: text(128) }),
  'stream.talk_stopped': z.looseObject({ sid: text(128), operator: text(128) }),
};

/** Size only: the server's verifyIceOffer checks the rest and logs what it drops, in its own words. */
const iceOfferShape = z.looseObject({});

export type ShapeCheck<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Parses a payload as JSON and checks its size and shape; the problem names the field. */
export function checkPayload<T>(payload: Buffer, maxBytes: number, shape: z.ZodType<T>): ShapeCheck<T> {
  if (payload.length > maxBytes) return { ok: false, problem: `${payload.length.toLocaleString('en-GB')} bytes, over the ${maxBytes.toLocaleString('en-GB')}-byte limit` };
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    return { ok: false, problem: 'not JSON' };
  }
  const r = shape.safeParse(value);
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0]!;
  return { ok: false, problem: `${issue.path.length ? issue.path.join('.') : 'the message'}: ${issue.message}` };
}

export const checkState = (payload: Buffer, limits: MessageLimits) => checkPayload(payload, limits.stateBytes, stateShape);
export const checkAudit = (payload: Buffer, limits: MessageLimits) => checkPayload(payload, limits.auditBytes, auditShape);
export const checkIceOffer = (payload: Buffer, limits: MessageLimits) => checkPayload(payload, limits.iceOfferBytes, iceOfferShape);
export function checkEvent(payload: Buffer, limits: MessageLimits): ShapeCheck<z.infer<typeof eventShape>> {
  const r = checkPayload(payload, limits.eventBytes, eventShape);
  const officer = r.ok ? officerEventShapes[r.value.type] : undefined;
  if (!r.ok || !officer) return r;
  const o = officer.safeParse(r.value);
  if (o.success) return r;
  const issue = o.error.issues[0]!;
  return { ok: false, problem: `${issue.path.length ? issue.path.join('.') : 'the message'}: ${issue.message} (in ${r.value.type})` };
}
