import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import pino from 'pino';
import t from 'tap';
import { GpsdClient, type GpsdClientEvents, type GpsFix } from '../src/telemetry/gpsd-client.ts';
import { GpsReporter, type GpsReport } from '../src/telemetry/gps-reporter.ts';
import { gpsLogPath, startGpsfake, type RunningGpsfake } from './helpers/gpsfake.ts';

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0];

const logger = pino({ level: 'silent' });

// Deadlines only stop a test that would otherwise hang; nothing asserts how fast things are.
const DEADLINE_MS = 60_000; // up to eight gpsd and gpsfake pairs replay at once (t.jobs)

// The gpsfake cases each own a port, so they can share the wall clock.
t.jobs = 8;

const KNOTS_TO_MPS = 1852 / 3600;
// gpsd 3.22 guesses a GPS week rollover for dates long before it was built and moves them
// 1024 weeks on (bu353s4's 2014-12-31 arrives as 2034-08-16). That is gpsd's doing, and
// the client passes TPV.time through untouched, so the tests accept either date.
const GPS_WEEK_ROLLOVER_MS = 1024 * 7 * 86_400_000;

interface LogRmc {
  secondsOfDay: number;
  lat: number;
  lon: number;
  speedMps: number;
}

/** The valid ($..RMC status A) positions the receiver itself wrote into the log. */
function rmcSentences(logName: string): LogRmc[] {
  const sentences: LogRmc[] = [];
  for (const line of readFileSync(gpsLogPath(logName), 'latin1').split(/\r?\n/)) {
    const f = line.split(',');
    if (!/^\$..RMC$/.test(f[0] ?? '') || f[2] !== 'A') continue;
    const time = f[1] ?? '';
    sentences.push({
      secondsOfDay: Number(time.slice(0, 2)) * 3600 + Number(time.slice(2, 4)) * 60 + Number(time.slice(4)),
      lat: nmeaDegrees(f[3] ?? '', f[4] ?? ''),
      lon: nmeaDegrees(f[5] ?? '', f[6] ?? ''),
      speedMps: Number(f[7] || 0) * KNOTS_TO_MPS,
    });
  }
  return sentences;
}

function nmeaDegrees(value: string, hemisphere: string): number {
  const raw = Number(value);
  const degrees = Math.trunc(raw / 100);
  const magnitude = degrees + (raw - degrees * 100) / 60;
  return hemisphere === 'S' || hemisphere === 'W' ? -magnitude : magnitude;
}

function secondsOfDay(isoTime: string): number {
  const date = new Date(isoTime);
  return date.getUTCHours() * 3600 + date.getUTCMinutes() * 60 + date.getUTCSeconds() + date.getUTCMilliseconds() / 1000;
}

/** A fix that is exactly what one RMC sentence in the log says: same epoch, place and speed. */
function matchesSomeRmc(fix: GpsFix, sentences: LogRmc[]): boolean {
  if (fix.gpsTime === null || fix.lat === null || fix.lon === null || fix.speedMps === null) return false;
  const at = secondsOfDay(fix.gpsTime);
  return sentences.some(
    (s) =>
      Math.abs(s.secondsOfDay - at) < 0.002 &&
      Math.abs(s.lat - fix.lat!) < 1e-6 &&
      Math.abs(s.lon - fix.lon!) < 1e-6 &&
      Math.abs(s.speedMps - fix.speedMps!) < 0.01,
  );
}

const hasPosition = (fix: GpsFix): boolean => fix.lat !== null && fix.lon !== null;

async function waitFor(condition: () => boolean, deadlineMs = DEADLINE_MS): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

interface Replay {
  gpsfake: RunningGpsfake;
  client: GpsdClient;
  fixes: GpsFix[];
}

async function replay(t: TestContext, logName: string, opts: { port?: number } = {}): Promise<Replay> {
  const gpsfake = await startGpsfake(gpsLogPath(logName), { cycleS: 0.01, maxSeconds: 90, ...opts });
  t.teardown(() => gpsfake.stop());
  const client = new GpsdClient({
    host: '127.0.0.1',
    port: gpsfake.port,
    logger,
    reconnectMinDelayMs: 50,
    reconnectMaxDelayMs: 400,
  });
  const fixes: GpsFix[] = [];
  client.on('fix', (fix) => fixes.push(fix));
  t.teardown(() => client.stop());
  client.start();
  return { gpsfake, client, fixes };
}

interface PlaceExpectation {
  log: string;
  /** Where the log's own GGA/RMC sentences put the receiver. */
  lat: number;
  lon: number;
  toleranceDeg: number;
}

function checkPositionsAgainstLog(t: TestContext, fixes: GpsFix[], place: PlaceExpectation): void {
  const positioned = fixes.filter(hasPosition);
  t.ok(positioned.length >= 5, `got positioned fixes (${positioned.length})`);
  t.ok(
    positioned.every((f) => f.mode === '2d' || f.mode === '3d'),
    'every fix with a position is 2d or 3d',
  );
  const outside = positioned.filter(
    (f) => Math.abs(f.lat! - place.lat) > place.toleranceDeg || Math.abs(f.lon! - place.lon) > place.toleranceDeg,
  );
  t.same(outside, [], `every position is within ${place.toleranceDeg} deg of ${place.lat}, ${place.lon}`);
  t.ok(
    fixes.filter((f) => f.mode === 'no-fix').every((f) => f.lat === null && f.lon === null),
    'no-fix reports carry no position',
  );
  const sentences = rmcSentences(place.log);
  t.ok(
    positioned.some((f) => matchesSomeRmc(f, sentences)),
    'some fix has exactly the time, position and speed of an RMC sentence in the log',
  );
  t.ok(
    positioned.some((f) => f.horizontalAccuracyM !== null && f.horizontalAccuracyM > 0),
    'an accuracy estimate is reported',
  );
}

t.test('bu353s4.log: SiRF-IV fix in Hamilton, NZ (southern and eastern hemisphere)', async (t) => {
  const { fixes } = await replay(t, 'bu353s4.log');
  // Enough fixes to see both the stationary start and the receiver's time.
  t.ok(await waitFor(() => fixes.filter(hasPosition).length >= 10 && fixes.some((f) => f.gpsTime !== null)));
  // $GPGGA,030719.000,3747.0873,S,17518.8938,E: 37.7848 S, 175.3149 E.
  checkPositionsAgainstLog(t, fixes, { log: 'bu353s4.log', lat: -37.78, lon: 175.31, toleranceDeg: 0.05 });
  const timed = fixes.filter((f) => f.gpsTime !== null);
  const logDay = Date.parse('2014-12-31T00:00:00Z');
  t.ok(
    timed.every((f) => {
      const at = Date.parse(f.gpsTime!);
      return [logDay, logDay + GPS_WEEK_ROLLOVER_MS].some((day) => at >= day && at < day + 86_400_000);
    }),
    `gpsTime is on the log's 2014-12-31 (or gpsd's rollover of it): ${timed[0]?.gpsTime}`,
  );
  t.ok(timed.every((f) => secondsOfDay(f.gpsTime!) >= secondsOfDay('2014-12-31T03:07:19Z')), 'time of day from 03:07:19');
  t.ok(fixes.some((f) => f.mode === '3d' && f.altitudeM !== null), '3d fixes carry an altitude');
});

t.test('ublox-zed-f9p-nmea.log: multi-constellation (GN talker) fix in Dunedin, NZ', async (t) => {
  const { fixes } = await replay(t, 'ublox-zed-f9p-nmea.log');
  t.ok(await waitFor(() => fixes.filter((f) => hasPosition(f) && f.gpsTime !== null).length >= 10));
  // $GNRMC,003956.00,A,4552.65403,S,17030.00668,E: 45.87757 S, 170.50011 E (stationary).
  checkPositionsAgainstLog(t, fixes, { log: 'ublox-zed-f9p-nmea.log', lat: -45.87757, lon: 170.50011, toleranceDeg: 0.001 });
  t.ok(
    fixes.filter(hasPosition).every((f) => f.speedMps === null || f.speedMps < 0.1),
    'a stationary receiver reports (almost) no speed',
  );
  t.ok(fixes.some((f) => f.gpsTime?.startsWith('2019-04-12T00:')), 'gpsTime is the log date 2019-04-12');
});

t.test('telit-he910.log: LTE modem GNSS, fix in Brussels after a cold start', async (t) => {
  const { fixes } = await replay(t, 'telit-he910.log');
  // The first ~260 sentences are the modem searching; wait for a few timed fixes after that.
  t.ok(await waitFor(() => fixes.filter((f) => hasPosition(f) && f.gpsTime !== null).length >= 10));
  // $GPRMC,105153.71,A,5050.4122,N,00420.8266,E: 50.84020 N, 4.34711 E.
  checkPositionsAgainstLog(t, fixes, { log: 'telit-he910.log', lat: 50.8402, lon: 4.34711, toleranceDeg: 0.001 });
  const firstPositioned = fixes.findIndex(hasPosition);
  t.ok(firstPositioned > 0, 'the search phase is reported before the first fix');
  t.ok(
    fixes.slice(0, firstPositioned).every((f) => f.mode === 'no-fix'),
    'everything before the first position is no-fix',
  );
});

t.test('haicom-305N.log: SiRF-II fix near Brisbane, walking', async (t) => {
  const { fixes } = await replay(t, 'haicom-305N.log');
  t.ok(await waitFor(() => fixes.filter((f) => hasPosition(f) && f.gpsTime !== null).length >= 20));
  // $GPRMC,095304.802,A,2712.6520,S,15303.1397,E: 27.21087 S, 153.05233 E; the walk
  // stays within ~50 m of it.
  checkPositionsAgainstLog(t, fixes, { log: 'haicom-305N.log', lat: -27.2109, lon: 153.0523, toleranceDeg: 0.001 });
  t.ok(fixes.some((f) => f.speedMps !== null && f.speedMps > 0.5), 'walking speed is reported');
  t.ok(fixes.some((f) => f.courseDeg !== null), 'a course is reported');
});

t.test('bu303-nofix.log: a receiver without a fix never yields a position', async (t) => {
  const { fixes } = await replay(t, 'bu303-nofix.log');
  // The log holds seven epochs; gpsfake loops it, so 21 TPVs mean it played three times.
  t.ok(await waitFor(() => fixes.length >= 21, 30_000), `TPVs received (${fixes.length})`);
  t.ok(fixes.length > 0);
  t.same(
    fixes.filter((f) => f.mode !== 'no-fix' || f.lat !== null || f.lon !== null || f.altitudeM !== null),
    [],
    'only no-fix, with no position',
  );
  t.ok(fixes.every((f) => f.speedMps === null && f.horizontalAccuracyM === null), 'no speed or accuracy without a fix');
});

t.test('reconnects when gpsd goes away and comes back on the same port', async (t) => {
  const first = await replay(t, 'bu353s4.log');
  const { client, fixes } = first;
  t.ok(await waitFor(() => fixes.some(hasPosition)), 'fixes from the first gpsd');
  t.ok(client.connected);

  const disconnected = new Promise<string>((resolve) => client.once('disconnected', resolve));
  await first.gpsfake.stop();
  const reason = await disconnected;
  t.type(reason, 'string', `disconnected (${reason})`);
  t.equal(client.connected, false);

  const retriesBefore = client.reconnects;
  t.ok(await waitFor(() => client.reconnects >= retriesBefore + 3), 'keeps retrying while gpsd is down');
  t.equal(client.connected, false, 'nothing to connect to yet');
  const fixesWhileDown = fixes.length;

  const connectedAgain = new Promise<void>((resolve) => client.once('connected', () => resolve()));
  const second = await startGpsfake(gpsLogPath('bu353s4.log'), { cycleS: 0.01, maxSeconds: 90, port: first.gpsfake.port });
  t.teardown(() => second.stop());
  await connectedAgain;
  t.ok(client.connected, 'connected to the new gpsd');
  t.ok(await waitFor(() => fixes.slice(fixesWhileDown).some(hasPosition)), 'fixes resume');
});

/** A stand-in gpsd that sends exactly the bytes a test gives it. */
async function fakeGpsd(t: TestContext, script: (socket: net.Socket) => Promise<void>): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    void script(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 5));

t.test('client parses a hostile stream: split lines, garbage, oversized lines, stale fields', async (t) => {
  let received = '';
  const port = await fakeGpsd(t, async (socket) => {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => (received += text));
    socket.write('{"class":"VERSION","release":"3.22","proto_major":3,"proto_minor":14}\r\n');
    await tick();
    socket.write('not json at all\n{"no":"class"}\n[1,2]\n');
    socket.write('{"class":"TPV","device":"/dev/ttyACM0","mode":3,"time":"2024-05-01T10:00:00.000Z","lat":-37.7');
    await tick();
    socket.write('8,"lon":175.31,"altHAE":83.6,"alt":59.9,"epx":9,"epy":4,"eph":20.9,"speed":1.5,"track":181.4}\r\n');
    await tick();
    // One line far beyond any real gpsd report; the TPV inside it must not surface.
    const oversized = 'x'.repeat(50_000) + '{"class":"TPV","mode":3,"lat":1,"lon":1}' + 'y'.repeat(50_000);
    for (let i = 0; i < oversized.length; i += 16_384) {
      socket.write(oversized.slice(i, i + 16_384));
      await tick();
    }
    socket.write('\n');
    socket.write('{"class":"TPV","mode":3,"lat":2,"lon":2,"pad":"' + 'z'.repeat(70_000) + '"}\n');
    socket.write('{"class":"ERROR","message":"Unrecognized request"}\n');
    socket.write('{"class":"TPV","mode":1,"time":"2024-05-01T10:00:01.000Z","lat":-37.78,"lon":175.31,"alt":59,"eph":20,"speed":2,"track":90}\n');
    socket.write('{"class":"SKY","satellites":[]}\n');
    socket.write('{"class":"TPV","mode":2,"lat":10.5,"lon":20.25,"alt":100,"epx":3,"epy":4}\n');
    socket.write('{"class":"TPV","mode":3,"lat":10.5}\n');
    socket.write('{"class":"TPV","mode":3,"lat":-37.78,"lon":175.31,"altMSL":59.9}\n');
  });
  const client = new GpsdClient({ host: '127.0.0.1', port, logger });
  const fixes: GpsFix[] = [];
  client.on('fix', (fix) => fixes.push(fix));
  t.teardown(() => client.stop());
  client.start();
  t.ok(await waitFor(() => fixes.length >= 5), `fixes parsed (${fixes.length})`);
  t.match(received, /^\?WATCH=\{"enable":true,"json":true\}\n/, 'asked gpsd to stream JSON');
  t.same(fixes, [
    {
      mode: '3d',
      gpsTime: '2024-05-01T10:00:00.000Z',
      lat: -37.78,
      lon: 175.31,
      altitudeM: 83.6,
      horizontalAccuracyM: 20.9,
      speedMps: 1.5,
      courseDeg: 181.4,
      device: '/dev/ttyACM0',
    },
    {
      mode: 'no-fix',
      gpsTime: '2024-05-01T10:00:01.000Z',
      lat: null,
      lon: null,
      altitudeM: null,
      horizontalAccuracyM: null,
      speedMps: null,
      courseDeg: null,
      device: null,
    },
    {
      mode: '2d',
      gpsTime: null,
      lat: 10.5,
      lon: 20.25,
      altitudeM: null,
      horizontalAccuracyM: 4,
      speedMps: null,
      courseDeg: null,
      device: null,
    },
    {
      mode: 'no-fix',
      gpsTime: null,
      lat: null,
      lon: null,
      altitudeM: null,
      horizontalAccuracyM: null,
      speedMps: null,
      courseDeg: null,
      device: null,
    },
    {
      mode: '3d',
      gpsTime: null,
      lat: -37.78,
      lon: 175.31,
      altitudeM: 59.9,
      horizontalAccuracyM: null,
      speedMps: null,
      courseDeg: null,
      device: null,
    },
  ]);
  t.same(client.lastFix, fixes[4]);
  await client.stop();
  t.equal(client.connected, false);
});

t.test('client backs off from a peer that hangs up at once, and stop() ends the retries', async (t) => {
  const port = await fakeGpsd(t, async (socket) => {
    // A port that answers but is no gpsd.
    socket.destroy();
  });
  const client = new GpsdClient({ host: '127.0.0.1', port, logger, reconnectMinDelayMs: 10, reconnectMaxDelayMs: 40 });
  let connects = 0;
  client.on('connected', () => connects++);
  client.start();
  t.ok(await waitFor(() => client.reconnects >= 3), 'retries a peer that keeps hanging up');
  await client.stop();
  const retriesAtStop = client.reconnects;
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.equal(client.reconnects, retriesAtStop, 'no retry after stop()');
  t.ok(connects >= 1);
  t.equal(client.connected, false);
});

class FakeFixSource extends EventEmitter<GpsdClientEvents> {
  connected = true;
  lastFix: GpsFix | null = null;
}

function fix3d(lat: number, lon: number): GpsFix {
  return {
    mode: '3d',
    gpsTime: '2024-05-01T10:00:00.000Z',
    lat,
    lon,
    altitudeM: 60,
    horizontalAccuracyM: 5,
    speedMps: 1.2,
    courseDeg: 180,
    device: '/dev/ttyACM0',
  };
}

const noFix: GpsFix = {
  mode: 'no-fix',
  gpsTime: '2024-05-01T10:00:05.000Z',
  lat: null,
  lon: null,
  altitudeM: null,
  horizontalAccuracyM: null,
  speedMps: null,
  courseDeg: null,
  device: '/dev/ttyACM0',
};

function reporterWith(
  t: TestContext,
  source: FakeFixSource,
  intervals: { recordingIntervalS: number; idleIntervalS: number; fixStaleAfterS?: number },
  publish?: (report: GpsReport) => void,
): { reporter: GpsReporter; reports: GpsReport[] } {
  const reports: GpsReport[] = [];
  const reporter = new GpsReporter({
    source,
    publish: (report) => {
      reports.push(report);
      publish?.(report);
    },
    logger,
    ...intervals,
  });
  t.teardown(() => reporter.stop());
  return { reporter, reports };
}

// An idle interval this long never fires during a test, so counting publishes is exact.
const NEVER_S = 3600;

t.test('reporter: publishes at start, then at the recording or idle cadence', async (t) => {
  const source = new FakeFixSource();
  source.lastFix = fix3d(-37.78, 175.31);
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: 0.2, idleIntervalS: NEVER_S });
  reporter.start();
  t.equal(reports.length, 1, 'published once at start');
  t.match(reports[0], { gpsd: 'connected', fix: '3d', lat: -37.78, lon: 175.31, accuracyM: 5 });
  t.same(reporter.last, reports[0]);

  reporter.setRecording(true);
  t.equal(reports.length, 2, 'publishes at once when recording starts');
  t.ok(await waitFor(() => reports.length >= 5), 'keeps publishing at the recording cadence');

  reporter.setRecording(false);
  const afterStop = reports.length;
  t.equal(reports[afterStop - 1]?.fix, '3d', 'publishes at once when recording stops');
  reporter.setRecording(false);
  t.equal(reports.length, afterStop, 'no publish when the recording state does not change');
  await new Promise((resolve) => setTimeout(resolve, 600));
  t.equal(reports.length, afterStop, 'back on the idle cadence');
});

t.test('reporter: the periodic report carries the latest fix', async (t) => {
  const source = new FakeFixSource();
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: 0.2, idleIntervalS: NEVER_S });
  reporter.start();
  reporter.setRecording(true);
  source.emit('fix', fix3d(-37.78, 175.31));
  source.emit('fix', fix3d(-37.79, 175.32));
  t.ok(await waitFor(() => reports.some((r) => r.lat === -37.79)), 'moved position is published on the next tick');
});

t.test('reporter: fix acquired or lost is published at once, 2d/3d changes are not', async (t) => {
  const source = new FakeFixSource();
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: NEVER_S, idleIntervalS: NEVER_S });
  reporter.start();
  t.match(reports, [{ gpsd: 'connected', fix: 'no-fix', lat: null, lon: null }]);

  source.emit('fix', noFix);
  t.equal(reports.length, 1, 'no-fix after no-fix is no news');
  source.emit('fix', fix3d(-37.78, 175.31));
  t.equal(reports.length, 2, 'fix acquired is published at once');
  t.match(reports[1], { fix: '3d', lat: -37.78, lon: 175.31, altitudeM: 60, speedMps: 1.2, courseDeg: 180 });

  source.emit('fix', fix3d(-37.781, 175.311));
  source.emit('fix', { ...fix3d(-37.782, 175.312), mode: '2d', altitudeM: null });
  t.equal(reports.length, 2, 'moving or 3d -> 2d waits for the cadence');

  source.emit('fix', noFix);
  t.equal(reports.length, 3, 'fix lost is published at once');
  t.same(reports[2], {
    gpsd: 'connected',
    fix: 'no-fix',
    gpsTime: '2024-05-01T10:00:05.000Z',
    lat: null,
    lon: null,
    altitudeM: null,
    accuracyM: null,
    speedMps: null,
    courseDeg: null,
  });
});

t.test('reporter: gpsd disconnect is published as no-fix, and the old fix is not reused', async (t) => {
  const source = new FakeFixSource();
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: NEVER_S, idleIntervalS: NEVER_S });
  reporter.start();
  source.emit('fix', fix3d(-37.78, 175.31));
  t.equal(reports.length, 2);

  source.connected = false;
  source.emit('disconnected', 'ECONNRESET');
  t.equal(reports.length, 3, 'disconnect is published at once');
  t.same(reports[2], {
    gpsd: 'disconnected',
    fix: 'no-fix',
    gpsTime: null,
    lat: null,
    lon: null,
    altitudeM: null,
    accuracyM: null,
    speedMps: null,
    courseDeg: null,
  });

  source.connected = true;
  source.emit('connected');
  t.equal(reports.length, 4, 'reconnect is published at once');
  t.match(reports[3], { gpsd: 'connected', fix: 'no-fix', lat: null, lon: null });

  source.emit('fix', fix3d(-37.79, 175.32));
  t.equal(reports.length, 5);
  t.match(reports[4], { gpsd: 'connected', fix: '3d', lat: -37.79 });
});

t.test('reporter: starts disconnected when gpsd is not there', async (t) => {
  const source = new FakeFixSource();
  source.connected = false;
  source.lastFix = fix3d(-37.78, 175.31);
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: NEVER_S, idleIntervalS: NEVER_S });
  reporter.start();
  t.match(reports, [{ gpsd: 'disconnected', fix: 'no-fix', lat: null, lon: null }]);
});

t.test('reporter: a fix the receiver stopped refreshing turns into no-fix', async (t) => {
  const source = new FakeFixSource();
  const { reporter, reports } = reporterWith(t, source, {
    recordingIntervalS: 0.2,
    idleIntervalS: NEVER_S,
    fixStaleAfterS: 0.3,
  });
  reporter.start();
  reporter.setRecording(true);
  source.emit('fix', fix3d(-37.78, 175.31));
  t.equal(reporter.last?.fix, '3d');
  t.ok(await waitFor(() => reporter.last?.fix === 'no-fix'), 'stale fix reported as no-fix');
  t.match(reporter.last, { gpsd: 'connected', fix: 'no-fix', gpsTime: null, lat: null, lon: null });
});

t.test('reporter: a failing publish does not stop the cadence; stop() does', async (t) => {
  const source = new FakeFixSource();
  let failures = 0;
  const { reporter, reports } = reporterWith(t, source, { recordingIntervalS: 0.2, idleIntervalS: NEVER_S }, () => {
    if (failures++ < 2) throw new Error('broker down');
  });
  reporter.start();
  reporter.setRecording(true);
  t.ok(await waitFor(() => reports.length >= 4), 'publishing continues after failures');

  reporter.stop();
  const atStop = reports.length;
  t.equal(source.listenerCount('fix'), 0, 'listeners removed');
  t.equal(source.listenerCount('disconnected'), 0);
  source.emit('fix', fix3d(-37.78, 175.31));
  reporter.setRecording(false);
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal(reports.length, atStop, 'nothing published after stop()');
});
