// The shared vocabulary of signed commands (docs/protocol.md, "Commands"): actions, the stable
// rejection codes in the order they are checked, and the envelope that arrives on `cmd`.

export const commandActions = [
  'record.start',
  'record.stop',
  'stream.start',
  'stream.stop',
  // Fleet management (docs/protocol.md, "Fleet management"): a key holding these is a fleet-admin key.
  'config.apply',
  'trust.update',
  'diag.collect',
  // Software update (docs/protocol.md, "Software update"): signed again by a release key.
  'agent.update',
  // The fleet archive back-fills a gap in a camera's chain (docs/protocol.md, "Back-filling").
  'audit.fetch',
  // The officer in the loop (docs/protocol.md, "Officer alerts and bookmarks"): a supervisor
  // acknowledges (and may clear) an officer's emergency; a signed bookmark marks the recording.
  'alert.ack',
  'recording.bookmark',
  // Talk-back (docs/protocol.md, "Talk-back"): a GRANT in a key's bwc_actions, never a token's act.
  // A stream.start claiming `talk: true` is honoured only from a key that holds it.
  'stream.talk',
] as const;

/** recording.bookmark: the longest `note`, characters (it goes into the signed manifest as it is). */
export const bookmarkNoteMaxChars = 200;

/** Actions a trust-store key may hold that no token may name as its act (grants on another action). */
export const grantOnlyActions: readonly CommandAction[] = ['stream.talk'];

/**
 * audit.fetch (docs/protocol.md): the most entries one command may ask to be published again, so a
 * fleet key cannot make the camera flood its uplink with one command.
 */
export const auditFetchMaxEntries = 1000;
export type CommandAction = (typeof commandActions)[number];

/** Rejection codes, in the order the verifier checks them: the first that applies is reported. */
export const rejectionCodes = [
  'too_large',
  'malformed',
  'unsupported_alg',
  'wrong_type',
  'unknown_key',
  'revoked_key',
  'bad_signature',
  'wrong_device',
  'clock_unsynchronised',
  'not_yet_valid',
  'expired',
  'too_long_lived',
  'action_not_permitted',
  'reason_missing',
  'reason_not_allowed',
  'duration_exceeds_policy',
  'offer_missing',
  'offer_mismatch',
  'replayed',
  'busy',
] as const;
export type RejectionCode = (typeof rejectionCodes)[number];

/**
 * Refusals by the command handler itself, before the verifier sees the payload: too many
 * commands waiting (commands.maxPending), or a Response Topic the camera must not publish to.
 */
export const handlerRejectionCodes = ['overloaded', 'response_topic_refused'] as const;
export type HandlerRejectionCode = (typeof handlerRejectionCodes)[number];

export const defaultReasonCodes = [
  'officer-safety',
  'public-safety',
  'major-incident',
  'evidence-preservation',
  'welfare-check',
  'officer-request',
  // Configuration, trust-store and diagnostics commands from fleet ops.
  'fleet-maintenance',
] as const;

/** `typ` header every command token must carry. */
export const commandTokenType = 'bwc-cmd+jwt';

/** The JSON published to `bwc/v1/<deviceId>/cmd`. */
export interface CommandEnvelope {
  token: string;
  /** The viewer's SDP offer, for stream.start only. */
  offer?: string;
}

/** What the verifier needs to decide; all from config except the live parts. */
export interface CommandPolicy {
  allowedReasons: readonly string[];
  /** Longest accepted exp - iat, seconds. */
  maxTokenLifetimeS: number;
  /** Longest accepted max_s of a stream.start, seconds. */
  maxStreamDurationS: number;
  /** Allowed difference between the issuer's clock and ours, seconds. */
  clockSkewS: number;
  maxConcurrentStreams: number;
  /** What to do when the device clock is not known to be synchronised. */
  unsynchronisedClock: 'reject' | 'accept';
  /** Largest MQTT payload considered, bytes. */
  maxPayloadBytes: number;
}

/** The claims every signed token has (commands and ICE answers), known to be well typed. */
export interface TokenClaims {
  iss: string;
  sub: string;
  aud: string;
  iat: number;
  exp: number;
  nbf?: number;
  jti: string;
}

/** The claims of a command token that are known to be well-typed (some may be absent). */
export interface CommandClaims extends TokenClaims {
  act: CommandAction;
  reason?: string;
  max_s?: number;
  offer_sha256?: string;
  sid?: string;
  /** config.apply: a whole remote document, or a JSON merge patch against the version `base`. */
  config?: { document: Record<string, unknown> } | { patch: Record<string, unknown>; base: number };
  /** trust.update: keys to add, key ids to revoke, keys to expire. */
  trust?: { add?: unknown[]; revoke?: string[]; expire?: { kid: string; exp: number }[] };
  /** diag.collect: the largest bundle wanted, bytes. */
  diag?: { maxBytes?: number };
  /** agent.update only: the release (src/update/release.ts). */
  release?: unknown;
  /** agent.update only: update even while recording or streaming. */
  force?: boolean;
  /** audit.fetch only: the first and last audit seq to publish again. */
  from_seq?: number;
  to_seq?: number;
  /** alert.ack only, required: the alertId of the officer.emergency acknowledged. */
  alert_id?: string;
  /** alert.ack only: the supervisor also ends the emergency. */
  clear?: boolean;
  /** recording.bookmark only: a short note, at most bookmarkNoteMaxChars characters. */
  note?: string;
  /** stream.start only: the supervisor may speak to the wearer (needs the key's `stream.talk` grant). */
  talk?: boolean;
}
