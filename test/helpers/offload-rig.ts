// What the offload tests share: a bucket in the test Swift, a credentials file, the agent's offload
// config, and waits on the audit trail the agent publishes (every upload, verification and
// deletion is an audit entry, so the tests wait on those, never on time).
import { existsSync, readdirSync, watch } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { runCli } from './agent-process.ts';
import type { MqttRecorder } from './mqtt-recorder.ts';
import type { Swift } from './swift.ts';

export interface AuditEntryJson {
  seq: number;
  type: string;
  reason: string | null;
  detail: Record<string, unknown>;
}

export function s3Client(swift: Swift, endpoint = swift.endpoint): S3Client {
  return new S3Client({
    endpoint,
    region: swift.region,
    forcePathStyle: true,
    credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

export async function createBucket(swift: Swift, bucket: string): Promise<void> {
  const c = s3Client(swift);
  await c.send(new CreateBucketCommand({ Bucket: bucket }));
  c.destroy();
}

export async function writeCredentials(file: string, swift: Swift, secret = swift.secretAccessKey): Promise<string> {
  await writeFile(file, `accessKeyId: "${swift.accessKeyId}"\nsecretAccessKey: "${secret}"\n`, { mode: 0o600 });
  return file;
}

export function offloadConfig(o: { endpoint: string; bucket: string; credentialsFile: string } & Record<string, unknown>): Record<string, unknown> {
  return {
    offload: { enabled: true, region: 'us-east-1', interfaces: ['lo'], keepDays: 0, retryMinDelay: 200, retryMaxDelay: 1000, requestTimeout: 10_000, ...o },
    // Pre-event off: a recording holds exactly what was recorded after start.
    recording: { preEvent: 0 },
  };
}

export function auditEntries(recorder: MqttRecorder): AuditEntryJson[] {
  return recorder
    .on('audit')
    .map((m) => m.json?.entry as AuditEntryJson | undefined)
    .filter((e): e is AuditEntryJson => e !== undefined);
}

export async function waitAudit(recorder: MqttRecorder, pred: (e: AuditEntryJson) => boolean, what: string, timeoutMs = 60_000, count = 1): Promise<AuditEntryJson[]> {
  await recorder.waitFor(() => auditEntries(recorder).filter(pred).length >= count, timeoutMs, what);
  return auditEntries(recorder).filter(pred);
}

export interface OffloadStateJson {
  status: string;
  pausedBy: string[];
  recordingsPending: number;
  bytesPending: number;
  objectsSent: number;
  bytesSent: number;
  lastUploadAt: string | null;
  lastError: { message: string; at: string } | null;
  held: number;
}

export function offloadStates(recorder: MqttRecorder): OffloadStateJson[] {
  return recorder
    .on('state')
    .map((m) => m.json?.offload as OffloadStateJson | null | undefined)
    .filter((o): o is OffloadStateJson => o !== null && o !== undefined);
}

export async function waitOffloadState(recorder: MqttRecorder, pred: (o: OffloadStateJson) => boolean, what: string, timeoutMs = 60_000): Promise<OffloadStateJson> {
  await recorder.waitFor(() => offloadStates(recorder).some(pred), timeoutMs, what);
  return offloadStates(recorder).filter(pred).at(-1)!;
}

/** Waits until the folder (made at record start) holds `n` segment files, on fs events. */
export async function waitForSegments(dir: string, n: number, timeoutMs = 60_000): Promise<void> {
  await waitForPath(dir, timeoutMs);
  const count = () => readdirSync(dir).filter((f) => /^\d{6,}_.*\.ts(\.age)?$/.test(f)).length;
  return new Promise<void>((resolve, reject) => {
    const watcher = watch(dir, () => {
      if (count() >= n) done(undefined);
    });
    const timer = setTimeout(() => done(new Error(`${dir} did not get ${n} segments within ${timeoutMs} ms (has ${count()})`)), timeoutMs);
    const done = (err: Error | undefined) => {
      clearTimeout(timer);
      watcher.close();
      if (err) reject(err);
      else resolve();
    };
    if (count() >= n) done(undefined);
  });
}

/** Waits until `file` exists, watching its folder (which must exist). */
export function waitForPath(file: string, timeoutMs = 60_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const watcher = watch(path.dirname(file), () => {
      if (existsSync(file)) done(undefined);
    });
    const timer = setTimeout(() => done(new Error(`${file} did not appear within ${timeoutMs} ms`)), timeoutMs);
    const done = (err: Error | undefined) => {
      clearTimeout(timer);
      watcher.close();
      if (err) reject(err);
      else resolve();
    };
    if (existsSync(file)) done(undefined);
  });
}

/** `ctl record start`, `segments` segments recorded, `ctl record stop`; returns the recording id and its folder. */
export async function recordSegments(stateDir: string, segments: number): Promise<{ id: string; dir: string }> {
  const start = await runCli(['ctl', 'record', 'start', '--state-dir', stateDir]);
  const id = (JSON.parse(start.stdout) as { recordingId: string }).recordingId;
  const dir = path.join(stateDir, 'evidence', 'recordings', id);
  await waitForSegments(dir, segments);
  await runCli(['ctl', 'record', 'stop', '--state-dir', stateDir]);
  return { id, dir };
}
