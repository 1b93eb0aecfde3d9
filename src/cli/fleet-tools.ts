// Fleet-side tools in the agent's CLI, for a backend's operators and for tests: make an issuer
// key and the device trust store, sign a command, and send one over MQTT 5 request/response.
// They implement the issuer's half of docs/protocol.md ("Commands"); the agent never runs them.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { calculateJwkThumbprint, compactVerify, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from 'jose';
import { iceAnswerTokenType, iceOfferTokenType } from '../stream/ice-signalling.ts';
import { commandActions, commandTokenType, type CommandAction } from '../command/types.ts';
import { errorMessage } from '../errors.ts';

/** exitCode 2: the request is wrong (bad option, unreadable key); 3: the fleet side did not answer. */
export class ToolError extends Error {
  readonly exitCode: 2 | 3;
  constructor(message: string, exitCode: 2 | 3 = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

export interface GeneratedIssuer {
  privateJwkFile: string;
  trustStoreFile: string;
  kid: string;
}

export async function generateIssuerKeys(outDir: string, actions: readonly string[]): Promise<GeneratedIssuer> {
  for (const a of actions) {
    if (!(commandActions as readonly string[]).includes(a)) throw new ToolError(`unknown action "${a}" (known: ${commandActions.join(', ')})`);
  }
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' };
  mkdirSync(outDir, { recursive: true });
  const privateJwkFile = path.join(outDir, 'issuer.private.jwk.json');
  const trustStoreFile = path.join(outDir, 'trust.jwks.json');
  writeFileSync(privateJwkFile, `${JSON.stringify(privateJwk, null, 2)}\n`, { mode: 0o600 });
  writeFileSync(trustStoreFile, `${JSON.stringify({ keys: [{ ...publicJwk, kid, alg: 'EdDSA', use: 'sig', bwc_actions: [...actions] }] }, null, 2)}\n`);
  return { privateJwkFile, trustStoreFile, kid };
}

export interface SignOptions {
  keyFile: string;
  device: string;
  action: string;
  reason?: string | undefined;
  operator?: string | undefined;
  issuer?: string | undefined;
  ttlS?: number | undefined;
  maxS?: number | undefined;
  offer?: string | undefined;
  sid?: string | undefined;
  /** config.apply, trust.update, diag.collect: the action's claim (`config`, `trust`, `diag`), parsed JSON. */
  params?: unknown;
  /** agent.update: the release JSON `bwc-agent release sign` printed. */
  release?: unknown;
  force?: boolean | undefined;
  /** audit.fetch: the range of audit entries to publish again. */
  fromSeq?: number | undefined;
  toSeq?: number | undefined;
}

/** The claim that carries a fleet-management action's parameters (docs/protocol.md, "Fleet management"). */
export const paramsClaim: Partial<Record<CommandAction, string>> = { 'config.apply': 'config', 'trust.update': 'trust', 'diag.collect': 'diag' };

export function offerSha256(offer: string): string {
  return createHash('sha256').update(offer, 'utf8').digest('base64url');
}

export async function signCommand(o: SignOptions): Promise<string> {
  if (!(commandActions as readonly string[]).includes(o.action)) throw new ToolError(`unknown action "${o.action}" (known: ${commandActions.join(', ')})`);
  const action = o.action as CommandAction;
  const claims: Record<string, unknown> = { act: action, jti: randomUUID() };
  if (o.reason !== undefined) claims.reason = o.reason;
  if (action === 'stream.start') {
    if (o.offer === undefined) throw new ToolError('stream.start needs --offer FILE (the viewer SDP offer)');
    claims.max_s = o.maxS ?? 300;
    claims.offer_sha256 = offerSha256(o.offer);
  }
  if (action === 'stream.stop') {
    if (!o.sid) throw new ToolError('stream.stop needs --sid SID');
    claims.sid = o.sid;
  }
  const claim = paramsClaim[action];
  if (o.params !== undefined) {
    if (!claim) throw new ToolError(`--params is only for ${Object.keys(paramsClaim).join(', ')}`);
    claims[claim] = o.params;
  } else if (action === 'config.apply' || action === 'trust.update') {
    throw new ToolError(`${action} needs --params FILE (the JSON of its "${claim}" claim)`);
  }
  if (action === 'agent.update') {
    if (o.release === undefined) throw new ToolError('agent.update needs --release FILE (the JSON of: bwc-agent release sign)');
    claims.release = o.release;
    if (o.force) claims.force = true;
  }
  if (action === 'audit.fetch') {
    if (o.fromSeq === undefined || o.toSeq === undefined) throw new ToolError('audit.fetch needs --from-seq N and --to-seq M');
    claims.from_seq = o.fromSeq;
    claims.to_seq = o.toSeq;
  }
  return signAsIssuer(o, commandTokenType, claims);
}

/** An issuer-signed token of `typ` for a device: the key file's kid, iss, sub, aud, iat and exp around `claims` (the ops console signs alert.ack and talk-back starts with it). */
export async function signAsIssuer(
  o: { keyFile: string; device: string; operator?: string | undefined; issuer?: string | undefined; ttlS?: number | undefined },
  typ: string,
  claims: Record<string, unknown>,
): Promise<string> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(readFileSync(o.keyFile, 'utf8')) as JWK;
  } catch (err) {
    throw new ToolError(`cannot read the issuer key ${o.keyFile}: ${errorMessage(err)}`);
  }
  if (!jwk.kid || !jwk.d) throw new ToolError(`${o.keyFile} is not a private JWK with a kid (make one with: bwc-agent keys generate --out DIR)`);
  const key = await importJWK(jwk, 'EdDSA');
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'EdDSA', kid: jwk.kid, typ })
    .setIssuer(o.issuer ?? 'bwc-fleet')
    .setSubject(o.operator ?? process.env.USER ?? 'operator')
    .setAudience(o.device)
    .setIssuedAt(now)
    .setExpirationTime(now + (o.ttlS ?? 60))
    .sign(key);
}

export interface SendOptions {
  url: string;
  device: string;
  token: string;
  offer?: string | undefined;
  topicRoot?: string;
  timeoutMs?: number;
}

/** Publishes a command with a Response Topic and waits for the device's reply. */
export async function sendCommand(o: SendOptions): Promise<Record<string, unknown>> {
  const responseTopic = `bwc-fleet/replies/${randomUUID()}`;
  const correlationData = randomBytes(16);
  const client = mqtt.connect(o.url, { protocolVersion: 5, clean: true, reconnectPeriod: 0, connectTimeout: 10_000 });
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', (err) => reject(new ToolError(`cannot connect to ${o.url}: ${err.message}`, 3)));
    });
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ToolError(`no reply from ${o.device} within ${o.timeoutMs ?? 10_000} ms (is it online?)`, 3)), o.timeoutMs ?? 10_000);
      client.on('message', (topic, payload, packet) => {
        if (topic !== responseTopic || !packet.properties?.correlationData?.equals(correlationData)) return;
        clearTimeout(timer);
        try {
          resolve(JSON.parse(payload.toString('utf8')) as Record<string, unknown>);
        } catch {
          reject(new ToolError(`unreadable reply: ${payload.toString('utf8').slice(0, 200)}`, 3));
        }
      });
    });
    (client.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true);
    await client.subscribeAsync(responseTopic, { qos: 1 });
    const body = JSON.stringify(o.offer === undefined ? { token: o.token } : { token: o.token, offer: o.offer });
    await client.publishAsync(`${o.topicRoot ?? 'bwc/v1'}/${o.device}/cmd`, body, { qos: 1, properties: { responseTopic, correlationData } });
    return await reply;
  } finally {
    await client.endAsync(true);
  }
}

export interface IceAnswerSignOptions {
  keyFile: string;
  device: string;
  sid: string;
  /** The `gen` of the camera's restart offer being answered. */
  generation: number;
  answer: string;
  operator?: string | undefined;
  issuer?: string | undefined;
  ttlS?: number | undefined;
}

/**
 * The token of a viewer's answer to a camera's ICE restart offer (docs/protocol.md, "ICE restart"):
 * bound to the device, the session, the restart and the exact answer.
 */
export async function signIceAnswer(o: IceAnswerSignOptions): Promise<string> {
  return signAsIssuer(o, iceAnswerTokenType, { sid: o.sid, gen: o.generation, answer_sha256: offerSha256(o.answer), jti: randomUUID() });
}

export interface IceOfferClaims {
  sid: string;
  gen: number;
  cause: string;
}

/**
 * Checks a camera's ICE restart offer message ({"token", "offer"}) against the camera's public key
 * (its `state.deviceKey`): the viewer must not follow an offer the camera did not make.
 */
export async function verifyIceOffer(message: unknown, devicePublicJwk: JWK): Promise<IceOfferClaims & { offer: string }> {
  const m = message as { token?: unknown; offer?: unknown };
  if (typeof m?.token !== 'string' || typeof m.offer !== 'string') throw new ToolError('an ICE offer message is {"token", "offer"}');
  const key = await importJWK(devicePublicJwk, 'EdDSA');
  let payload: Record<string, unknown>;
  try {
    const verified = await compactVerify(m.token, key, { algorithms: ['EdDSA'] });
    if (verified.protectedHeader.typ !== iceOfferTokenType) throw new Error(`typ is not ${iceOfferTokenType}`);
    payload = JSON.parse(Buffer.from(verified.payload).toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new ToolError(`ICE offer not signed by the camera: ${errorMessage(err)}`);
  }
  if (payload.offer_sha256 !== offerSha256(m.offer)) throw new ToolError('ICE offer does not match its offer_sha256');
  if (typeof payload.sid !== 'string' || typeof payload.gen !== 'number' || typeof payload.cause !== 'string') throw new ToolError('ICE offer claims incomplete');
  return { sid: payload.sid, gen: payload.gen, cause: payload.cause, offer: m.offer };
}
