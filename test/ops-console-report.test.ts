/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The oversight report (ops-console/report.ts) through the running console: every live view in a
// period with its filters, every alert, CSV (with spreadsheet formulas neutralised) and a JSON
// document signed by the console's key that a third party checks with the documented command
// (`node ops-console/report.ts verify --key console.public.jwk.json report.json`), where a one-byte
// edit fails; and, in headless Chromium, the report page renders and its CSV downloads.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { generateIssuerKeys } from '../src/cli/fleet-tools.ts';
import { Fleet } from '../ops-console/fleet.ts';
import { generateReportKeys } from '../ops-console/report.ts';
import { ConsoleServer } from '../ops-console/server.ts';
import { hashPassword, UserStore } from '../ops-console/users.ts';
import { repoRoot } from './helpers/agent-process.ts';
import { ChromiumViewers } from './helpers/chromium-viewer.ts';
import { startBroker } from './helpers/mosquitto.ts';

const run = promisify(execFile);

t.test('the oversight report', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'bwc-report-'));
  const broker = await startBroker();
  const keys = await generateIssuerKeys(dir, ['stream.start', 'stream.stop']);
  const reportKeys = await generateReportKeys(path.join(dir, 'console'));
  const fleet = await Fleet.connect(broker.url, `report-test-${process.pid}`);
  const server = new ConsoleServer({
    fleet,
    users: new UserStore([{ user: 'std1', operator: 'std-0001', name: 'Insp Standards', roles: ['standards'], password: hashPassword('pw-1') }]),
    issuerKeyFile: keys.privateJwkFile,
    issuer: 'test-console',
    maxDurationS: 600,
    reportKeyFile: reportKeys.privateFile,
    log: () => {},
  });
  const base = await server.listen(0);
  t.teardown(async () => {
    await server.close();
    await fleet.close();
    await broker.dispose();
  });
  const { archive } = await server.archive;
  await archive.openLiveView({ deviceId: 'cam-1', sid: 's-1', operator: 'sgt-1', unit: 'north', reason: 'officer-safety', startedAt: '2026-12-01T10:00:00.000Z', auditSeqs: [4] });
  await archive.closeLiveView('cam-1', 's-1', { at: '2026-12-01T10:02:30.000Z', cause: 'stream_stop', by: 'sgt-1', auditSeqs: [6] });
  await archive.openLiveView({ deviceId: 'cam-2', sid: 's-2', operator: 'sgt-2', unit: 'south', reason: '=HYPERLINK("http://evil")', startedAt: '2026-12-01T11:00:00.000Z', auditSeqs: [9] });
  await archive.closeLiveView('cam-2', 's-2', { at: '2026-12-01T11:30:00.000Z', cause: 'max_duration', auditSeqs: [12] });
  await archive.openLiveView({ deviceId: 'cam-1', sid: 's-3', operator: 'sgt-1', unit: 'north', reason: 'welfare-check', startedAt: '2026-11-20T10:00:00.000Z', auditSeqs: [1] });
  await archive.closeLiveView('cam-1', 's-3', { at: '2026-11-20T10:01:00.000Z', cause: 'viewer_closed' });
  await archive.alerts.insert({ rule: 'view_too_long', severity: 'warning', deviceId: 'cam-2', operator: 'sgt-2', at: '2026-12-01T11:30:00.000Z', auditRefs: [{ deviceId: 'cam-2', seq: 12 }], detail: { message: 'a 30 min view' } });

  const login = await fetch(new URL('/api/login', base), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'std1', password: 'pw-1' }) });
  const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  const get = (q: string) => fetch(new URL(`/api/report?${q}`, base), { headers: { cookie } });
  const period = 'from=2026-12-01T00:00:00.000Z&to=2026-12-02T00:00:00.000Z';

  t.test('signed JSON, checked by the documented command; a one-byte edit fails', async (t) => {
    const res = await get(period);
    t.equal(res.status, 200);
    t.match(res.headers.get('content-disposition'), /attachment; filename="oversight-report-2026-12-01-2026-12-02\.json"/);
    const text = await res.text();
    const file = path.join(dir, 'report.json');
    await writeFile(file, text);
    const verify = (f: string) => run(process.execPath, [path.join(repoRoot, 'ops-console/report.ts'), 'verify', '--key', reportKeys.publicFile, f]).then(
      (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout, err: e.stderr }),
    );
    const ok = await verify(file);
    t.equal(ok.code, 0, ok.err);
    t.match(ok.out, /verified: oversight report 2026-12-01T00:00:00.000Z to 2026-12-02T00:00:00.000Z, 2 live view\(s\), 1 alert\(s\), made .* by std-0001/);
    const doc = JSON.parse(text) as { payload: string };
    const report = JSON.parse(Buffer.from(doc.payload, 'base64url').toString()) as { liveViews: { sid: string; durationS: number; endCause: string }[] };
    t.match(report.liveViews, [{ sid: 's-1', durationS: 150, endCause: 'stream_stop' }, { sid: 's-2', durationS: 1800, endCause: 'max_duration' }], 'the views in the period, with duration and how they ended');
    // One byte of the payload changed (one base64url character of it, decoding to different bytes).
    const i = text.indexOf('"payload": "') + 20;
    const edited = text.slice(0, i) + (text[i] === 'A' ? 'B' : 'A') + text.slice(i + 1);
    await writeFile(path.join(dir, 'edited.json'), edited);
    const bad = await verify(path.join(dir, 'edited.json'));
    t.equal(bad.code, 1, 'a one-byte edit fails');
    t.match(bad.err, /NOT VERIFIED: the signature does not verify/);
    const other = await generateReportKeys(path.join(dir, 'other'));
    const wrongKey = await run(process.execPath, [path.join(repoRoot, 'ops-console/report.ts'), 'verify', '--key', other.publicFile, file]).catch((e: { code: number }) => e);
    t.equal((wrongKey as { code: number }).code, 1, 'another key fails');
  });

  t.test('filters and CSV', async (t) => {
    const north = (await (await get(`${period}&unit=north`)).json()) as { payload: string };
    const r = JSON.parse(Buffer.from(north.payload, 'base64url').toString()) as { liveViews: unknown[]; alerts: unknown[] };
    t.equal(r.liveViews.length, 1, 'unit filter');
    t.equal(r.alerts.length, 0, 'alerts about other operators and cameras are left out');
    const csv = await get(`${period}&format=csv`);
    t.match(csv.headers.get('content-type'), /text\/csv/);
    const text = await csv.text();
    const lines = text.trim().split('\r\n');
    t.equal(lines.length, 4, 'a header, two views and one alert');
    t.match(lines[2], /"'=HYPERLINK\(""http:\/\/evil""\)"/, 'a formula is neutralised, quotes doubled');
    t.equal((await get('from=yesterday&to=2026-12-02T00:00:00Z')).status, 400);
    t.match(await (await get('from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z')).json(), { error: /to .* must be after from/ });
    t.equal((await fetch(new URL(`/api/report?${period}`, base))).status, 401, 'signed in only');
  });

  t.test('in Chromium: the report page renders and its CSV downloads', async (t) => {
    const viewers = await ChromiumViewers.launch();
    t.teardown(() => viewers.close());
    const { page } = await viewers.open();
    await page.goto(base);
    await page.evaluate(async () => {
      await fetch('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'std1', password: 'pw-1' }) });
    });
    await page.goto(new URL('/report.html', base).href);
    await page.fill('[data-testid=report-from]', '2026-12-01T00:00');
    await page.fill('[data-testid=report-to]', '2026-12-02T00:00');
    await page.click('[data-testid=report-show]');
    await page.waitForSelector('[data-testid=report-views] tbody tr');
    const cells = await page.$$eval('[data-testid=report-views] tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((c) => c.textContent)));
    t.match(cells, [['cam-1', 'sgt-1', 'north', 'officer-safety'], ['cam-2', 'sgt-2', 'south', '=HYPERLINK("http://evil")']], 'the views, as text');
    t.equal(await page.$$eval('[data-testid=report-alerts] tbody tr', (rows) => rows.length), 1);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=report-csv]')]);
    t.match(download.suggestedFilename(), /^oversight-report-.*\.csv$/);
    const csv = await readFile((await download.path())!, 'utf8');
    t.match(csv, /"live-view","cam-1","s-1","sgt-1","north","officer-safety"/);
  });
});
