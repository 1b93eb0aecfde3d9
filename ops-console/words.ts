// What the console shows people: the force's reason-code catalogue with labels, and each code a
// camera can refuse with, in words (the codes are docs/protocol.md's).
export const reasonCatalogue: { code: string; label: string }[] = [
  { code: 'officer-safety', label: 'Officer safety' },
  { code: 'public-safety', label: 'Public safety' },
  { code: 'major-incident', label: 'Major incident' },
  { code: 'evidence-preservation', label: 'Evidence preservation' },
  { code: 'welfare-check', label: 'Welfare check' },
  { code: 'officer-request', label: 'Requested by the officer' },
  // In the catalogue of some forces, not in the cameras' default policy: the camera refuses it.
  { code: 'training-exercise', label: 'Training exercise' },
];

const words: Record<string, string> = {
  too_large: 'the request was too large for the camera',
  malformed: 'the camera could not read the request',
  unsupported_alg: 'the request was not signed the way the camera requires',
  wrong_type: 'the request was not a camera command',
  unknown_key: 'the camera does not trust this console\'s signing key',
  revoked_key: 'this console\'s signing key has been revoked or has expired',
  bad_signature: 'the request\'s signature did not verify',
  wrong_device: 'the request was for another camera',
  clock_unsynchronised: 'the camera\'s clock is not synchronised, so it refuses commands',
  not_yet_valid: 'the request is dated in the future (check the clocks)',
  expired: 'the request had expired when the camera received it',
  too_long_lived: 'the request was valid for longer than the camera allows',
  action_not_permitted: 'this console may not ask the camera for that',
  reason_missing: 'no reason was given',
  reason_not_allowed: 'that reason is not allowed on this camera',
  duration_exceeds_policy: 'the duration is longer than the camera allows',
  offer_missing: 'the browser\'s video offer was missing',
  offer_mismatch: 'the browser\'s video offer did not match the signed request',
  replayed: 'the request had already been used once',
  busy: 'the camera already has as many live views as it allows',
  unsupported_offer: 'this browser offered no video the camera can send',
  no_network: 'the camera has no network path for a live view',
  capture_unavailable: 'the camera is not capturing at the moment',
  audit_failed: 'the camera could not record the request in its audit trail, so it refused',
  unavailable: 'the camera is shutting down',
  unknown_session: 'that live view has already ended',
  no_reply: 'the camera did not answer (is it online?)',
  internal_error: 'the camera failed to carry out the request',
  overloaded: 'the camera has too many requests waiting; try again shortly',
  response_topic_refused: 'the camera will not answer on the reply topic this console gave',
  not_recording: 'the camera is not recording',
  not_supported: 'this camera\'s software cannot do that yet',
  config_invalid: 'the camera refused the configuration: a setting is not valid (see the message)',
  config_key_protected: 'that setting can only be changed on the camera itself',
  config_conflict: 'the camera runs another configuration version than the change was made against; reload and try again',
  config_pending: 'the camera is still trying out the previous configuration change; try again shortly',
  trust_admin_local_only: 'fleet-admin keys can only be changed on the camera itself',
  trust_update_invalid: 'the camera refused the key change (see the message)',
  unknown_alert: 'that alert is no longer open on the camera (already cleared, or another alert)',
};

/** Codes the console itself answers with, never a camera: a reply that did not come. */
export const consoleOnlyCodes: readonly string[] = ['no_reply'];

/** Every code there are words for (test/console-words.test.ts checks them against the agent's). */
export const wordedCodes: readonly string[] = Object.keys(words);

export function inWords(code: string): string {
  return words[code] ?? `refused (${code})`;
}
