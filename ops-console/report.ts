// The oversight report for a professional-standards role: every live view in a period (filtered by
// operator, camera or unit) with its reason, duration and how it ended, and every alert, from the
// console's archive. Exported as CSV and as a JSON document signed by the console's key (a JWS in
// the flattened JSON serialization, made and checked with jose like every other signature in the
// project), which anyone holding the console's public key checks without the console:
//
//   node ops-console/report.ts verify --key console.public.jwk.json report.json
//   node ops-console/report.ts keygen --out DIR          (console.private.jwk.json, console.public.jwk.json)
//   node ops-console/report.ts make --archive SPEC --key console.private.jwk.json --from ISO --to ISO
//        [--operator ID] [--device ID] [--unit UNIT] [--csv]     (the page's download, from a shell)
//
// Exit 0 and a summary when the signature verifies and the payload is a report; exit 1 naming
// what is wrong otherwise (any changed byte of the payload or the signature fails).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { calculateJwkThumbprint, exportJWK, flattenedVerify, FlattenedSign, generateKeyPair, importJWK, type FlattenedJWS, type JWK } from 'jose';
import type { Alert, Archive, LiveViewFilter } from './archive/archive.ts';
import { openArchive } from './archive/archive.ts';

export const reportType = 'bwc-oversight-report+json';

export interface ReportView {
  deviceId: string;
  sid: string;
  operator: string;
  unit: string | null;
  reason: string;
  startedAt: string;
  endedAt: string | null;
  /** Seconds; null while the view has not ended. */
  durationS: number | null;
  /** How it ended (the camera's end cause), null while it runs. */
  endCause: string | null;
  endedBy: string | null;
  /** The camera's audit entries behind it. */
  auditRefs: { deviceId: string; seq: number }[];
}

export interface OversightReport {
  type: typeof reportType;
  generatedAt: string;
  generatedBy: string;
  period: { from: string; to: string };
  filter: { operator: string | null; deviceId: string | null; unit: string | null };
  liveViews: ReportView[];
  alerts: Alert[];
}

export interface ReportRequest {
  from: string;
  to: string;
  operator?: string | undefined;
  deviceId?: string | undefined;
  unit?: string | undefined;
}

/** Throws naming the bad parameter. */
export function checkReportRequest(r: Record<string, string | null | undefined>): ReportRequest {
  const iso = (name: string) => {
    const v = r[name];
    if (typeof v !== 'string' || !Number.isFinite(Date.parse(v))) throw new Error(`${name} must be a date and time (ISO 8601), got ${JSON.stringify(v ?? null)}`);
    return new Date(Date.parse(v)).toISOString();
  };
  const from = iso('from');
  const to = iso('to');
  if (to <= from) throw new Error(`to (${to}) must be after from (${from})`);
  const opt = (name: string) => {
    const v = r[name];
    if (v === undefined || v === null || v === '') return undefined;
    if (v.length > 128) throw new Error(`${name} is longer than 128 characters`);
    return v;
  };
  return { from, to, operator: opt('operator'), deviceId: opt('deviceId'), unit: opt('unit') };
}

export async function buildReport(archive: Archive, r: ReportRequest, generatedBy: string): Promise<OversightReport> {
  const filter: LiveViewFilter = { from: r.from, to: r.to, ...(r.operator ? { operator: r.operator } : {}), ...(r.deviceId ? { deviceId: r.deviceId } : {}), ...(r.unit ? { unit: r.unit } : {}) };
  const views = await archive.liveViews(filter);
  let alerts = await archive.alerts.list({ from: r.from, to: r.to, ...(r.deviceId ? { deviceId: r.deviceId } : {}), limit: 100_000 });
  // An operator (or unit) filter keeps the alerts about that operator, and those about the cameras they viewed.
  if (r.operator || r.unit) {
    const cameras = new Set(views.map((v) => v.deviceId));
    const operators = new Set(views.map((v) => v.operator));
    alerts = alerts.filter((a) => (a.operator !== null && (a.operator === r.operator || operators.has(a.operator))) || (a.operator === null && a.deviceId !== null && cameras.has(a.deviceId)));
  }
  return {
    type: reportType,
    generatedAt: new Date().toISOString(),
    generatedBy,
    period: { from: r.from, to: r.to },
    filter: { operator: r.operator ?? null, deviceId: r.deviceId ?? null, unit: r.unit ?? null },
    liveViews: views.map((v) => ({
      deviceId: v.deviceId, sid: v.sid, operator: v.operator, unit: v.unit, reason: v.reason, startedAt: v.startedAt, endedAt: v.endedAt,
      durationS: v.endedAt ? Math.round((Date.parse(v.endedAt) - Date.parse(v.startedAt)) / 100) / 10 : null,
      endCause: v.endCause, endedBy: v.endedBy, auditRefs: v.auditSeqs.map((seq) => ({ deviceId: v.deviceId, seq })),
    })),
    alerts: [...alerts].reverse(), // oldest first, like the views
  };
}

// RFC 4180: every field quoted, quotes doubled. A field starting with = + - @ (or a tab or CR)
// gets a leading apostrophe so a spreadsheet does not run it as a formula (CSV injection): the
// operator ids, reasons and alert words come from cameras and users.
function csvField(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return `"${s.replace(/"/g, '""')}"`;
}

export function reportCsv(report: OversightReport): string {
  const header = ['record', 'deviceId', 'sid', 'operator', 'unit', 'reason', 'startedAt', 'endedAt', 'durationS', 'endCause', 'endedBy', 'auditRefs', 'alertId', 'rule', 'severity', 'at', 'acknowledgedBy', 'acknowledgedAt', 'detail'];
  const rows: unknown[][] = [
    ...report.liveViews.map((v) => ['live-view', v.deviceId, v.sid, v.operator, v.unit, v.reason, v.startedAt, v.endedAt, v.durationS, v.endCause, v.endedBy, v.auditRefs.map((r) => r.seq).join(' '), '', '', '', '', '', '', '']),
    ...report.alerts.map((a) => ['alert', a.deviceId, '', a.operator, '', '', '', '', '', '', '', a.auditRefs.map((r) => `${r.deviceId}#${r.seq}`).join(' '), a.id, a.rule, a.severity, a.at, a.acknowledgedBy, a.acknowledgedAt, a.detail]),
  ];
  return `${[header, ...rows].map((r) => r.map(csvField).join(',')).join('\r\n')}\r\n`;
}

/** The report as a flattened JWS JSON document, signed with the console's private key (EdDSA). */
export async function signReport(report: OversightReport, privateJwk: JWK): Promise<FlattenedJWS> {
  if (!privateJwk.d) throw new Error('the report key must be a private JWK (node ops-console/report.ts keygen makes one)');
  const key = await importJWK(privateJwk, 'EdDSA');
  const kid = privateJwk.kid ?? (await calculateJwkThumbprint({ kty: privateJwk.kty!, crv: privateJwk.crv!, x: privateJwk.x! }));
  return new FlattenedSign(new TextEncoder().encode(JSON.stringify(report))).setProtectedHeader({ alg: 'EdDSA', typ: reportType, kid }).sign(key);
}

/** Checks a signed report with the console's public key; throws naming what is wrong. */
export async function verifyReport(document: unknown, publicJwk: JWK): Promise<OversightReport> {
  if (typeof document !== 'object' || document === null || typeof (document as FlattenedJWS).payload !== 'string' || typeof (document as FlattenedJWS).signature !== 'string') {
    throw new Error('not a signed report: expected a JSON object with payload, protected and signature (a flattened JWS)');
  }
  if ('d' in publicJwk) throw new Error('give the PUBLIC key (console.public.jwk.json), not the private one');
  const key = await importJWK(publicJwk, 'EdDSA');
  let verified;
  try {
    verified = await flattenedVerify(document as FlattenedJWS, key, { algorithms: ['EdDSA'] });
  } catch (err) {
    throw new Error(`the signature does not verify with this key: ${(err as Error).message}`);
  }
  if (verified.protectedHeader?.typ !== reportType) throw new Error(`the signed document is a ${String(verified.protectedHeader?.typ)}, not an oversight report`);
  const report = JSON.parse(new TextDecoder().decode(verified.payload)) as OversightReport;
  if (report.type !== reportType) throw new Error('the signed payload is not an oversight report');
  return report;
}

export async function generateReportKeys(dir: string): Promise<{ privateFile: string; publicFile: string }> {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const pub = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(pub);
  mkdirSync(dir, { recursive: true });
  const privateFile = path.join(dir, 'console.private.jwk.json');
  const publicFile = path.join(dir, 'console.public.jwk.json');
  writeFileSync(privateFile, `${JSON.stringify({ ...(await exportJWK(privateKey)), kid, alg: 'EdDSA' })}\n`, { mode: 0o600 });
  writeFileSync(publicFile, `${JSON.stringify({ ...pub, kid, alg: 'EdDSA' }, null, 2)}\n`);
  return { privateFile, publicFile };
}

function readJwk(file: string): JWK {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as JWK;
  } catch (err) {
    throw new Error(`cannot read the key ${file}: ${(err as Error).message}`);
  }
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      key: { type: 'string' }, out: { type: 'string' }, archive: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' },
      operator: { type: 'string' }, device: { type: 'string' }, unit: { type: 'string' }, csv: { type: 'boolean' },
    },
  });
  const [verb, file] = positionals;
  if (verb === 'verify') {
    if (!values.key || !file) throw new Error('usage: node ops-console/report.ts verify --key console.public.jwk.json report.json');
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      process.stderr.write(`${file} is not a JSON document: ${(err as Error).message}\n`);
      return 1;
    }
    try {
      const r = await verifyReport(doc, readJwk(values.key));
      process.stdout.write(`verified: oversight report ${r.period.from} to ${r.period.to}, ${r.liveViews.length} live view(s), ${r.alerts.length} alert(s), made ${r.generatedAt} by ${r.generatedBy}\n`);
      return 0;
    } catch (err) {
      process.stderr.write(`NOT VERIFIED: ${(err as Error).message}\n`);
      return 1;
    }
  }
  if (verb === 'keygen') {
    if (!values.out) throw new Error('usage: node ops-console/report.ts keygen --out DIR');
    const k = await generateReportKeys(values.out);
    process.stdout.write(`${k.privateFile} (keep on the console)\n${k.publicFile} (give to whoever checks reports)\n`);
    return 0;
  }
  if (verb === 'make') {
    if (!values.archive || !values.key) throw new Error('usage: node ops-console/report.ts make --archive SPEC --key console.private.jwk.json --from ISO --to ISO [--operator ID] [--device ID] [--unit U] [--csv]');
    const request = checkReportRequest({ from: values.from, to: values.to, operator: values.operator, deviceId: values.device, unit: values.unit });
    const archive = await openArchive(values.archive);
    try {
      const report = await buildReport(archive, request, process.env.USER ?? 'report-cli');
      process.stdout.write(values.csv ? reportCsv(report) : `${JSON.stringify(await signReport(report, readJwk(values.key)), null, 2)}\n`);
    } finally {
      await archive.close();
    }
    return 0;
  }
  process.stderr.write('usage: node ops-console/report.ts verify|keygen|make ... (see the top of ops-console/report.ts)\n');
  return 2;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`ops-console report: ${(err as Error).message}\n`);
      process.exit(2);
    },
  );
}
