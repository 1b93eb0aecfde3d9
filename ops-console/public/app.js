// bwc ops console: the supervisor's page. It signs in, follows every camera's retained state over
// Server-Sent Events, and asks the server for a live view of one camera at a time. The camera is
// the authority: it decides every request (reason, duration, concurrency) and audits it, so this
// page never pre-filters a request and only reports what the camera said.
//
// Every string from the server reaches the page through textContent or attributes (the h()/s()
// helpers), never innerHTML: state documents and audit entries are data, not markup.

const $ = (id) => document.getElementById(id);
const M_PER_DEG = 6371008.8 * Math.PI / 180; // metres per degree on the mean-radius sphere
const MIN_SPAN_M = 300; // one camera alone still gets a street-level scale
const ICE_WAIT_MS = 3000; // no STUN/TURN, so host candidates come at once; never hang on gathering
const STOP_GRACE_MS = 2000; // see tick()
const AUDIT_ROWS = 50;

// Words for the causes the agent audits a stream.stop with (src/stream/stream-manager.ts).
const CAUSES = {
  stream_stop: 'stopped by an operator', max_duration: 'time limit reached', viewer_lost: 'viewer lost',
  viewer_closed: 'viewer hung up', connect_timeout: 'viewer never connected', capture_failed: 'camera capture failed',
  agent_shutdown: 'camera agent shut down', audit_failed: 'audit could not be written',
};
const causeWords = (c) => (CAUSES[c] ? `${CAUSES[c]} (${c})` : c);
const STATUS_WORDS = { offline: 'offline', buffering: 'buffering', recording: 'recording', streaming: 'live view' };
// Why the camera restarted ICE (docs/protocol.md, "ICE restart").
const RESTART_WORDS = {
  network_changed: 'Camera changed network', ice_failed: 'Connection to the camera failed', viewer_silent: 'The camera stopped hearing this page',
};
// Which page this is, so the server sends a camera's ICE restart offer to the tab that started the
// view and no other (it is not a secret: the sign-in is the authority).
const PAGE_ID = crypto.randomUUID();

const ALERT_READERS = ['standards', 'duty-officer'];
// Who sees the wearers' watch-me requests and emergencies and answers them (server: roles.ts).
const OFFICER_ALERT_ROLES = ['supervisor', 'duty-officer'];
// A watch-me the camera stops holding after 10 minutes (docs/protocol.md, state.officer.watchMe).
const WATCH_ME_MS = 10 * 60_000;
// An emergency nobody has acknowledged sounds again this often.
const EMERGENCY_REPEAT_MS = 10_000;
const FLEET_ADMINS = ['fleet-admin'];

const app = {
  config: { reasons: [], maxDurationS: 1800, tiles: null, talk: false, playoutDelayMs: 300, watchMeReason: 'officer-request' },
  me: null, // { operator, name, roles, unit, shift }
  alerts: new Map(), // id -> alert (the server's AlertStore record)
  officerAlerts: new Map(), // `${deviceId}/${alertId}` -> the server's OfficerAlert record
  beep: { ctx: null, lastAt: 0 }, // the Web Audio context, made at sign-in (a user gesture)
  fleet: [], // the fleet-admin desk's rows (GET /api/fleet/cameras)
  fleetLoading: null, // the pending reload: events come in bursts, one request serves them
  basemap: null, // { map, layer, fitted } once the Leaflet base map is made
  cameras: new Map(), // deviceId -> { state, receivedAt }
  selected: null,
  events: null,
  view: null, // the one live view this page holds: { deviceId, pc, sid, endsBy, seen, cameraState, restart }
  ended: null, // { deviceId, sid } of a view that ended without us, to name its cause from the audit
  auditToken: 0,
  reasonKey: '',
};

// ---- Helpers ---------------------------------------------------------------------------------

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) if (v != null && v !== false) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
const s = (tag, attrs, ...children) => build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);

const pad = (n) => String(n).padStart(2, '0');
const parseTime = (iso) => (typeof iso === 'string' && Number.isFinite(Date.parse(iso)) ? Date.parse(iso) : null);

/** Local HH:MM:SS, with the date when it is not today: audit trails span days. */
function clock(iso) {
  const t = parseTime(iso);
  if (t === null) return '—';
  const d = new Date(t);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return d.toDateString() === new Date().toDateString() ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}
const timeEl = (iso) => h('time', { datetime: iso, title: iso }, clock(iso));

function ago(ms) {
  const sec = Math.round((Date.now() - ms) / 1000);
  if (sec < 5) return 'just now';
  if (sec < 120) return `${sec} s ago`;
  return sec < 7200 ? `${Math.round(sec / 60)} min ago` : `${Math.round(sec / 3600)} h ago`;
}
/** An age the one-second tick keeps current. */
const ageEl = (ms) => h('span', { 'data-since': ms }, ago(ms));

function mmss(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${pad(Math.floor(total / 60))}:${pad(total % 60)}`;
}

function show(el, text) {
  el.textContent = text ?? '';
  el.hidden = !text;
}
const liveSays = (text) => { $('live-status').textContent = text; };
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** Re-rendering replaces nodes; keyboard focus goes back to the same camera's control. */
function keepingFocus(container, render) {
  const el = container.contains(document.activeElement) ? document.activeElement : null;
  const id = el?.getAttribute('data-device');
  render();
  if (id) container.querySelector(`${el.localName}[data-device="${CSS.escape(id)}"]`)?.focus();
}

// ---- Server ----------------------------------------------------------------------------------

class SignedOut extends Error {}

async function request(path, body) {
  const res = await fetch(path, body === undefined ? { credentials: 'same-origin' } : {
    method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: res.status, data: res.status === 204 ? null : await res.json().catch(() => null) };
}

/** A signed-out answer anywhere sends the supervisor back to sign-in rather than failing quietly. */
async function api(path, body) {
  const { status, data } = await request(path, body);
  if (status === 401) {
    signedOut('Your session has ended. Sign in again.');
    throw new SignedOut('signed out');
  }
  if (status >= 400) throw new Error(data?.error ?? `the server answered ${status}`);
  return data;
}

// ---- Sign-in ---------------------------------------------------------------------------------

async function boot() {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', logout);
  $('live-form').addEventListener('submit', requestLive);
  $('stop-live').addEventListener('click', () => stopLive());
  $('fleet').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-enrol]');
    if (b) confirmEnrolment(b.getAttribute('data-enrol'), b.getAttribute('data-kid'), b.getAttribute('data-replace') === 'true');
  });
  $('fleet-device').addEventListener('change', fillBase);
  $('fleet-apply').addEventListener('click', applyPatch);
  $('fleet-revoke').addEventListener('click', revokeKey);
  $('fleet-update').addEventListener('click', sendUpdate);
  $('fleet-diag').addEventListener('click', collectDiag);
  for (const el of [$('officer-list'), $('officer-banner')]) el.addEventListener('click', officerClick);
  const talk = $('talk-button');
  // Push-to-talk: held with the mouse or a finger (pointer events cover both), or the Space bar.
  talk.addEventListener('pointerdown', (e) => { e.preventDefault(); talk.setPointerCapture?.(e.pointerId); setTalking(true); });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) talk.addEventListener(type, () => setTalking(false));
  talk.addEventListener('keydown', (e) => { if (e.key === ' ' || e.key === 'Enter') e.preventDefault(); }); // no click: handled below
  document.addEventListener('keydown', (e) => {
    if (e.key !== ' ' || e.repeat || !app.view?.talk || $('talk-controls').hidden || /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement?.tagName ?? '')) return;
    e.preventDefault();
    setTalking(true);
  });
  document.addEventListener('keyup', (e) => { if (e.key === ' ' && app.view?.talkWanted) { e.preventDefault(); setTalking(false); } });
  window.addEventListener('blur', () => setTalking(false)); // a key released in another window is never seen here
  $('alert-list').addEventListener('click', (e) => {
    const ack = e.target.closest('[data-ack]');
    if (ack) return acknowledge(Number(ack.getAttribute('data-ack')));
    pick(e.target);
  });
  for (const el of [$('cameras'), $('map'), $('no-fix')]) {
    el.addEventListener('click', (e) => pick(e.target));
    // Map markers are SVG groups, not buttons: give them the keys a button has.
    el.addEventListener('keydown', (e) => {
      if ((e.key === 'Enter' || e.key === ' ') && e.target.closest('g[data-device]')) { e.preventDefault(); pick(e.target); }
    });
  }
  setInterval(tick, 1000);
  try {
    const me = await request('/api/me');
    if (me.status === 200) await signedIn(me.data);
    else signedOut();
  } catch (err) {
    signedOut(`The console server cannot be reached (${err.message}).`);
  }
}

async function login(e) {
  e.preventDefault();
  const button = e.submitter ?? e.target.querySelector('button');
  button.disabled = true;
  show($('login-error'), '');
  try {
    const r = await request('/api/login', { user: $('login-user').value, password: $('login-password').value });
    if (r.status === 200) await signedIn(r.data);
    else show($('login-error'), r.data?.error ?? `Sign-in failed (the server answered ${r.status}).`);
  } catch (err) {
    show($('login-error'), `Sign-in failed: ${err.message}`);
  } finally {
    button.disabled = false;
    $('login-password').value = '';
  }
}

async function logout() {
  await stopLive({ quiet: true });
  await request('/api/logout', {}).catch(() => {});
  $('login-user').value = ''; // a shared control-room screen: the next person types their own
  signedOut();
}

const hasRole = (...roles) => (app.me?.roles ?? []).some((r) => roles.includes(r));

async function signedIn(me) {
  app.me = me;
  $('operator').textContent = me.name ? `${me.name} (${me.operator})` : me.operator;
  for (const [id, hide] of [['login', true], ['console', false], ['who', false]]) $(id).hidden = hide;
  app.config = { reasons: [], maxDurationS: 1800, ...(await api('/api/config')) };
  $('duration').max = String(app.config.maxDurationS);
  $('duration').value = String(Math.min(300, app.config.maxDurationS));
  $('alerts-card').hidden = !hasRole(...ALERT_READERS);
  $('officer-card').hidden = !hasRole(...OFFICER_ALERT_ROLES);
  $('talk-field').hidden = !app.config.talk;
  // The sign-in click is the user gesture that lets the page make sound later (autoplay policy).
  if (hasRole(...OFFICER_ALERT_ROLES) && !app.beep.ctx && globalThis.AudioContext) app.beep.ctx = new AudioContext();
  $('fleet-card').hidden = !hasRole(...FLEET_ADMINS);
  follow();
  if (hasRole(...ALERT_READERS)) loadAlerts();
  if (hasRole(...OFFICER_ALERT_ROLES)) loadOfficerAlerts();
  if (hasRole(...FLEET_ADMINS)) loadFleet();
  render();
}

/** Drops everything this page knew: the next operator at this screen starts from nothing. */
function signedOut(note) {
  endView(null);
  app.events?.close();
  Object.assign(app, { events: null, selected: null, ended: null, reasonKey: '', auditToken: app.auditToken + 1, me: null });
  if (app.basemap) app.basemap.fitted = false;
  app.cameras.clear();
  app.alerts.clear();
  app.officerAlerts.clear();
  app.fleet = [];
  renderAlerts();
  renderOfficer();
  renderFleet();
  render();
  showAudit(null, 'Select a camera to see its audit trail.', '');
  liveSays('');
  show($('live-error'), '');
  for (const [id, hide] of [['login', false], ['console', true], ['who', true], ['feed', true]]) $(id).hidden = hide;
  show($('login-note'), note);
  $('login-user').focus();
}

// ---- Live state feed -------------------------------------------------------------------------

function follow() {
  app.events?.close();
  const es = new EventSource(`/api/events?page=${encodeURIComponent(PAGE_ID)}`);
  app.events = es;
  es.addEventListener('open', () => {
    feed('Live updates connected', 'ok');
    if (app.selected) loadAudit(app.selected); // audit events sent while the feed was down are lost
  });
  es.addEventListener('error', () => {
    if (es.readyState !== EventSource.CLOSED) return feed('Live updates lost: reconnecting…', 'warn');
    // EventSource gives up for good on an HTTP error answer, most often an ended session: api()
    // sends a signed-out supervisor to sign-in (which clears app.events); otherwise try again.
    feed('Live updates stopped: retrying…', 'bad');
    setTimeout(() => api('/api/me').catch(() => {}).then(() => { if (app.events === es) follow(); }), 3000);
  });
  es.addEventListener('camera', (e) => {
    const msg = JSON.parse(e.data);
    app.cameras.set(msg.deviceId, { state: msg.state ?? {}, receivedAt: parseTime(msg.receivedAt) ?? Date.now() });
    checkView(msg.deviceId);
    render();
  });
  es.addEventListener('audit', (e) => {
    if (JSON.parse(e.data).deviceId === app.selected) loadAudit(app.selected);
  });
  es.addEventListener('ice-offer', (e) => iceRestart(JSON.parse(e.data)));
  es.addEventListener('fleet', () => loadFleet());
  es.addEventListener('officer-alert', (e) => officerAlertIn(JSON.parse(e.data)));
  es.addEventListener('alert', (e) => {
    const a = JSON.parse(e.data);
    app.alerts.set(a.id, a);
    renderAlerts();
    renderMap();
  });
}

function feed(text, tone) {
  Object.assign($('feed'), { textContent: text, className: `feed ${tone}`, hidden: false });
}

// ---- Cameras ---------------------------------------------------------------------------------

/** What a marker's colour stands for. A live view outranks recording: it is the rarer, more intrusive act. */
function camStatus(st) {
  if (!st.online) return 'offline';
  if ((st.streaming?.sessions ?? 0) > 0) return 'streaming';
  return st.recording ? 'recording' : 'buffering';
}

function position(st) {
  const g = st.gps;
  return g && Number.isFinite(g.lat) && Number.isFinite(g.lon) && g.fix !== 'no-fix' ? g : null;
}

const reasonLabel = (code) => app.config.reasons.find((r) => r.code === code)?.label ?? code;
const sortedCameras = () => [...app.cameras].sort(([a], [b]) => a.localeCompare(b));

function pick(target) {
  pickId(target.closest('[data-device]')?.getAttribute('data-device'));
}

function pickId(id) {
  if (!id || id === app.selected) return;
  app.selected = id;
  render();
  loadAudit(id);
}

function render() {
  renderMap();
  renderTable();
  renderLive();
}

// ---- Map -------------------------------------------------------------------------------------

/** Alerts not yet acknowledged about a camera (only those who read alerts have any). */
const openAlerts = (id) => [...app.alerts.values()].filter((a) => a.deviceId === id && !a.acknowledgedBy).length;

function renderMap() {
  if (app.config.tiles && globalThis.L) return renderBaseMap();
  $('basemap').hidden = true;
  const svg = $('map');
  svg.style.display = ''; // an SVG element has no `hidden` property
  const W = 600, H = 400, PAD = 48;
  const placed = [], unplaced = [];
  for (const [id, cam] of sortedCameras()) (position(cam.state) ? placed : unplaced).push({ id, cam, p: position(cam.state) });

  keepingFocus(svg, () => {
    svg.replaceChildren(s('rect', { class: 'map-bg', width: W, height: H }));
    if (placed.length === 0) {
      svg.append(s('text', { class: 'map-empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No camera has reported a position yet.'));
      return;
    }
    // Local equirectangular projection in metres about the centre of the cameras' bounds: over the
    // few kilometres of one incident it is as good as any map projection, and it needs no tiles.
    const lats = placed.map((c) => c.p.lat), lons = placed.map((c) => c.p.lon);
    const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2, lon0 = (Math.min(...lons) + Math.max(...lons)) / 2;
    const k = Math.cos(lat0 * Math.PI / 180);
    const toM = (p) => ({ x: (p.lon - lon0) * k * M_PER_DEG, y: (p.lat - lat0) * M_PER_DEG });
    const spanX = Math.max(MIN_SPAN_M, ...placed.map((c) => 2 * Math.abs(toM(c.p).x)));
    const spanY = Math.max(MIN_SPAN_M, ...placed.map((c) => 2 * Math.abs(toM(c.p).y)));
    const pxPerM = Math.min((W - 2 * PAD) / spanX, (H - 2 * PAD) / spanY);

    for (const { id, cam, p } of placed) {
      const st = camStatus(cam.state);
      const m = toM(p), x = W / 2 + m.x * pxPerM, y = H / 2 - m.y * pxPerM;
      const selected = id === app.selected;
      const words = `${id}, ${STATUS_WORDS[st]}${Number.isFinite(p.accuracyM) ? `, within ${Math.round(p.accuracyM)} m` : ''}`;
      const alerts = openAlerts(id);
      const officer = officerMark(id);
      svg.append(s('g', {
        class: `marker st-${st}${alerts ? ' alerted' : ''}${officer ? ` officer-${officer}` : ''}`, 'data-device': id, 'data-alerts': alerts || null, 'data-officer': officer,
        'data-testid': `map-camera-${id}`,
        tabindex: 0, role: 'button', 'aria-pressed': String(selected), 'aria-label': words,
      },
      p.accuracyM > 0 ? s('circle', { class: 'accuracy', cx: x, cy: y, r: p.accuracyM * pxPerM }) : null,
      selected ? s('circle', { class: 'halo', cx: x, cy: y, r: 13 }) : null,
      s('circle', { class: 'dot', cx: x, cy: y, r: 7 }),
      s('text', { class: 'label', x: x + 11, y: y - 9 }, id),
      s('text', { class: 'label sub', x: x + 11, y: y + 6 }, STATUS_WORDS[st]),
      s('title', {}, words)));
    }
    svg.append(scaleBar(pxPerM, H), s('g', { class: 'north', role: 'img', 'aria-label': 'North is up' },
      s('path', { d: `M${W - 24} 14l7 18h-14z` }), s('text', { x: W - 24, y: 46, 'text-anchor': 'middle' }, 'N')));
  });

  renderNoFix(unplaced);
}

/** Cameras with no position, under the map (either kind). */
function renderNoFix(unplaced) {
  const list = $('no-fix');
  list.replaceChildren(...(unplaced.length ? ['No fix: '] : []), ...unplaced.flatMap(({ id, cam }, i) => [
    i ? ', ' : '',
    h('button', { type: 'button', class: 'link', 'data-device': id }, id),
    ` (${!cam.state.gps ? 'no GPS report' : cam.state.gps.gpsd === 'disconnected' ? 'gpsd disconnected' : 'no fix'})`,
  ]));
  list.hidden = unplaced.length === 0;
}

/**
 * The force's own map under the cameras (Leaflet, XYZ raster tiles from the console's --tile-url):
 * markers coloured by state as on the plain map, a red edge for an open alert; the view fits the
 * cameras once, then stays where the supervisor puts it.
 */
function renderBaseMap() {
  const el = $('basemap');
  el.hidden = false;
  $('map').style.display = 'none';
  if (!app.basemap) {
    const map = L.map(el, { zoomControl: true }).setView([0, 0], 2);
    L.tileLayer(app.config.tiles.url, { attribution: app.config.tiles.attribution, maxZoom: 19 }).addTo(map);
    app.basemap = { map, layer: L.layerGroup().addTo(map), fitted: false };
  }
  const { map, layer } = app.basemap;
  layer.clearLayers();
  const placed = [], unplaced = [];
  for (const [id, cam] of sortedCameras()) {
    const p = position(cam.state);
    if (!p) { unplaced.push({ id, cam }); continue; }
    placed.push([p.lat, p.lon]);
    const st = camStatus(cam.state);
    if (p.accuracyM > 0) L.circle([p.lat, p.lon], { radius: p.accuracyM, className: 'accuracy', interactive: false }).addTo(layer);
    const officer = officerMark(id);
    L.circleMarker([p.lat, p.lon], { radius: 8, className: `cam cam-${id} st-${st}${openAlerts(id) ? ' alerted' : ''}${officer ? ` officer-${officer}` : ''}${id === app.selected ? ' selected' : ''}` })
      .bindTooltip(`${id}, ${STATUS_WORDS[st]}`)
      .on('click', () => pickId(id))
      .addTo(layer);
  }
  if (placed.length && !app.basemap.fitted) {
    map.fitBounds(placed, { maxZoom: 16, padding: [40, 40] });
    app.basemap.fitted = true;
  }
  renderNoFix(unplaced);
}

/** The longest 1-2-5 length that fits in a quarter of the map, in the projection's own metres. */
function scaleBar(pxPerM, H) {
  const target = 150 / pxPerM;
  const p10 = 10 ** Math.floor(Math.log10(target));
  const metres = [5, 2, 1].map((f) => f * p10).find((v) => v <= target);
  const len = metres * pxPerM, x = 16, y = H - 18;
  const text = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
  return s('g', { class: 'scale', role: 'img', 'aria-label': `Scale bar: ${text}` },
    s('path', { d: `M${x} ${y - 6}V${y}H${x + len}V${y - 6}` }),
    s('text', { x: x + len / 2, y: y - 9, 'text-anchor': 'middle' }, text));
}

// ---- Camera list -----------------------------------------------------------------------------

function renderTable() {
  const tbody = $('cameras').tBodies[0];
  keepingFocus(tbody, () => tbody.replaceChildren(...sortedCameras().map(([id, cam]) => cameraRow(id, cam))));
  $('no-cameras').hidden = app.cameras.size > 0;
}

function cameraRow(id, { state: st, receivedAt }) {
  const selected = id === app.selected;
  const views = st.streaming?.list ?? [];
  const count = st.streaming?.sessions ?? views.length;
  const watchers = [...new Set(views.map((v) => v.operator))].join(', ');
  const b = st.battery ?? {};
  const cap = st.capture;
  return h('tr', { 'data-testid': `camera-${id}`, 'data-device': id, class: selected ? 'selected' : null },
    h('th', { scope: 'row' }, h('button', { type: 'button', class: 'pick', 'data-device': id, 'aria-pressed': String(selected) }, id)),
    h('td', {}, st.online ? h('span', { class: 'pill st-buffering' }, 'Online')
      : [h('span', { class: 'pill st-offline' }, 'Offline'), st.reason ? h('small', {}, ` ${st.reason}`) : null]),
    h('td', {}, st.recording ? h('span', { class: 'pill st-recording' }, 'Recording') : 'No'),
    h('td', {}, count ? [h('span', { class: 'pill st-streaming' }, `${count} live`), watchers ? h('small', {}, ` ${watchers}`) : null] : 'None'),
    h('td', {}, b.percent == null ? 'unknown' : `${b.percent} %${b.charging ? ', charging' : ''}`),
    h('td', {}, fixCell(st.gps, receivedAt)),
    h('td', {}, st.agentVersion ?? '—'),
    h('td', cap?.lastFault ? { class: 'has-tip', title: `Last fault at ${clock(cap.lastFault.at)}: ${cap.lastFault.reason}` } : {},
      cap ? `${cap.status}${cap.restarts ? ` (${plural(cap.restarts, 'restart')})` : ''}` : '—'),
    h('td', { 'data-testid': `offload-${id}`, ...(st.offload?.lastError ? { class: 'has-tip', title: `Last error at ${clock(st.offload.lastError.at)}: ${st.offload.lastError.message}` } : {}) }, offloadCell(st.offload)));
}

// Evidence offload (state.offload, docs/protocol.md): what is still on the camera only.
function offloadCell(o) {
  if (!o) return 'off';
  const pending = o.recordingsPending ? `${plural(o.recordingsPending, 'recording')} (${mebibytes(o.bytesPending)}) pending` : 'all in the store';
  const how = o.status === 'paused' ? ` · paused (${o.pausedBy.join(', ')})` : o.lastError ? ' · failing' : o.status === 'uploading' ? ' · uploading' : '';
  const last = o.lastUploadAt ? [' · last ', ageEl(parseTime(o.lastUploadAt))] : [];
  return [pending, how, ...last];
}

function mebibytes(bytes) {
  return `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 1 : 0)} MiB`;
}

function fixCell(gps, receivedAt) {
  if (!gps) return 'no GPS report';
  if (gps.gpsd === 'disconnected') return 'gpsd disconnected';
  if (!position({ gps })) return 'no fix';
  // The receiver's own time says how old the fix is; when it was received here is the fallback.
  // A GPS time more than a day from the camera's report is a receiver clock problem (or a replayed
  // log, as in the demo), not a day-old fix: show it as such rather than as an age.
  const gpsAt = parseTime(gps.gpsTime);
  const accuracy = Number.isFinite(gps.accuracyM) ? ` · ±${Math.round(gps.accuracyM)} m` : '';
  if (gpsAt != null && Math.abs(receivedAt - gpsAt) > 86_400_000) {
    return [gps.fix.toUpperCase(), ' · ', h('span', { class: 'has-tip', title: `GPS time ${gps.gpsTime}` }, 'GPS clock off'), ' · reported ', ageEl(receivedAt), accuracy];
  }
  return [gps.fix.toUpperCase(), ' · ', ageEl(gpsAt ?? receivedAt), accuracy];
}

// ---- Live view -------------------------------------------------------------------------------

function renderLive() {
  const id = app.selected;
  const cam = app.cameras.get(id);
  // Only a supervisor requests views (the server refuses anyone else; roles.ts).
  $('live-form').hidden = !cam || !hasRole('supervisor');
  $('live-title').textContent = cam ? `Live view — ${id}` : 'Live view';
  $('sessions').hidden = true;
  if (!cam) return show($('live-camera'), 'Select a camera in the list or on the map.');
  const st = cam.state;
  fillReasons(id, st.commandPolicy?.reasons);
  const camMax = st.commandPolicy?.maxStreamDurationS;
  $('duration-hint').textContent = `Up to ${app.config.maxDurationS} s${camMax ? `; this camera's policy allows ${camMax} s` : ''}.`;
  $('request-live').disabled = app.view !== null || !st.online;
  $('talk-field').hidden = !app.config.talk;
  show($('live-camera'), !st.online ? `${id} is offline${st.reason ? ` (${st.reason})` : ''}: it cannot be asked for a live view.`
    : app.view && app.view.deviceId !== id ? `You are watching ${app.view.deviceId}: stop that view to request another.` : '');

  // Everyone watching this camera, not only this page: a supervisor should know who else is.
  const list = st.streaming?.list ?? [];
  $('sessions').hidden = list.length === 0;
  $('session-list').replaceChildren(...list.map((v) => h('li', {},
    h('strong', {}, v.operator), ` — ${reasonLabel(v.reason)}, ${v.state}, until `, timeEl(v.endsBy),
    v.covert ? h('span', { class: 'pill covert' }, 'covert') : null,
    app.view?.sid === v.sid ? h('small', {}, ' (this page)') : null)));
}

/**
 * The camera's own policy first, then every other code in the force's catalogue: a supervisor can
 * still ask, and the camera refuses and audits it, rather than the console hiding the choice.
 * Rebuilt only when that set changes, so a state update does not undo the supervisor's choice.
 */
function fillReasons(id, policy) {
  const key = `${id}|${policy?.join(',') ?? '-'}|${app.config.reasons.length}`;
  if (key === app.reasonKey) return;
  app.reasonKey = key;
  const select = $('reason');
  const previous = select.value;
  const allowed = policy ?? [];
  const others = app.config.reasons.map((r) => r.code).filter((c) => !allowed.includes(c));
  const option = (code) => h('option', { value: code }, reasonLabel(code));
  select.replaceChildren(...allowed.map(option));
  if (others.length) {
    const label = policy ? "Not in this camera's policy" : 'This camera has not published its policy';
    select.append(h('optgroup', { label }, ...others.map(option)));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
}

function requestLive(e) {
  e.preventDefault();
  return startLive(app.selected, $('reason').value, Number($('duration').value), app.config.talk && $('talk').checked);
}

/**
 * Asks the camera for a live view (the server signs it for this operator). With talk, the offer
 * also carries a send-receive audio m-line (the camera answers it only if the token's talk claim
 * is granted); no microphone track is attached until the push-to-talk button is held.
 */
async function startLive(deviceId, reason, durationS, talk) {
  if (!deviceId || app.view) return;
  show($('live-error'), '');
  app.ended = null;
  const pc = new RTCPeerConnection({ iceServers: [] });
  app.view = { deviceId, pc, sid: null, endsBy: null, seen: false, cameraState: null, restart: null, restarts: Promise.resolve(), talk: null, talkWanted: false, mic: null };
  renderLive();
  liveSays(`Asking ${deviceId} for a live view…`);
  pc.addTransceiver('video', { direction: 'recvonly' });
  if (talk) app.view.talk = pc.addTransceiver('audio', { direction: 'sendrecv' });
  pc.addEventListener('track', (ev) => {
    if (ev.track.kind !== 'video') return; // the talk-back m-line's receive side carries nothing to show
    // The playout delay (README, "Live view"): how much the receiver buffers to ride out loss and
    // jitter on the camera's 4G link; Chromium's jitterBufferTarget, in milliseconds.
    try {
      ev.receiver.jitterBufferTarget = app.config.playoutDelayMs;
    } catch { /* a browser without it plays with its own default */ }
    $('live-video').dataset.playoutDelayMs = String(ev.receiver.jitterBufferTarget ?? '');
    $('live-video').srcObject = ev.streams[0] ?? new MediaStream([ev.track]);
  });
  pc.addEventListener('connectionstatechange', () => {
    viewFacts();
    // The camera went offline and this page's connection to it has failed: it is not coming back.
    if (pc.connectionState === 'failed' && app.view?.pc === pc && app.view.sid && app.cameras.get(deviceId)?.state.online !== true) {
      app.ended = { deviceId, sid: app.view.sid };
      endView(`Live view of ${deviceId} lost: the camera is offline.`);
    }
  });
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const r = await api('/api/live', { deviceId, reason, durationS, offer: pc.localDescription.sdp, page: PAGE_ID, ...(talk ? { talk: true } : {}) });
    if (app.view?.pc !== pc) return; // signed out meanwhile
    if (!r.ok) {
      endView(null);
      return show($('live-error'), refusal('Refused', r));
    }
    Object.assign(app.view, { sid: r.sid, endsBy: parseTime(r.endsBy) });
    checkView(deviceId); // the feed can beat this answer: the camera may already list the sid
    await pc.setRemoteDescription({ type: 'answer', sdp: r.answer });
    liveSays(`Live view of ${deviceId} accepted (${r.sid}).`);
    $('viewer').hidden = false;
    // Talk-back only when the camera's answer takes the viewer's audio (it does only with the grant).
    // From this side: 'sendrecv' or 'sendonly' means the camera takes our audio; 'recvonly'/'inactive' that it will not.
    const talkAnswered = app.view.talk && /^(sendrecv|sendonly)$/.test(app.view.talk.currentDirection ?? '');
    if (app.view.talk && !talkAnswered) app.view.talk = null;
    $('talk-controls').hidden = !talkAnswered;
    if (talk && !talkAnswered) liveSays(`Live view of ${deviceId} accepted (${r.sid}), without talk-back: the camera did not grant it.`);
    viewFacts();
    tick();
  } catch (err) {
    if (app.view?.pc !== pc) return;
    const sid = app.view.sid;
    endView(null);
    // Accepted by the camera but unusable here: end it there too rather than leave it to time out.
    if (sid) request('/api/live/stop', { deviceId, sid }).catch(() => {});
    if (!(err instanceof SignedOut)) show($('live-error'), `The live view could not be opened: ${err.message}`);
  }
}

/**
 * The camera restarted ICE (its network changed, ICE failed, or it stopped hearing us): answer its
 * signed offer (the server checked it) on the same peer connection, so the same DTLS session and
 * fingerprint carry on, with all our candidates (no trickle), and have the server sign the answer.
 * Offers are answered one at a time; one overtaken by a newer offer is skipped.
 */
function iceRestart(msg) {
  const v = app.view;
  if (!v || v.sid !== msg.sid || v.deviceId !== msg.deviceId || typeof msg.offer !== 'string') return;
  v.latestGen = Math.max(v.latestGen ?? 0, msg.gen);
  v.restart = { gen: msg.gen, frames: null };
  liveSays(`${RESTART_WORDS[msg.cause] ?? 'The camera restarted the connection'} — reconnecting…`);
  v.restarts = v.restarts.then(async () => {
    if (app.view !== v || msg.gen < v.latestGen) return;
    try {
      await v.pc.setRemoteDescription({ type: 'offer', sdp: msg.offer });
      await v.pc.setLocalDescription(await v.pc.createAnswer());
      await iceGathered(v.pc);
      if (app.view !== v || msg.gen < v.latestGen) return;
      const r = await api('/api/live/ice', { deviceId: v.deviceId, sid: v.sid, gen: msg.gen, answer: v.pc.localDescription.sdp });
      if (app.view === v && r?.ok && v.restart?.gen === msg.gen) v.restart.frames = await framesDecoded(v.pc);
    } catch (err) {
      // The camera offers again (next gen) if no answer comes; the view ends by its rules otherwise.
      if (app.view === v && !(err instanceof SignedOut)) liveSays(`Reconnecting to ${v.deviceId} failed: ${err.message}`);
    }
  });
}

/** Video frames this page has decoded so far: a restart is over when this grows again. */
async function framesDecoded(pc) {
  let n = 0;
  for (const r of (await pc.getStats()).values()) if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded ?? 0;
  return n;
}

/** Back to the plain status line once frames flow after the answer. */
async function restartDone(v) {
  const restart = v.restart;
  if (restart?.frames == null) return;
  const n = await framesDecoded(v.pc);
  if (app.view !== v || v.restart !== restart || n <= restart.frames) return;
  v.restart = null;
  liveSays(`Live view of ${v.deviceId} reconnected (${v.sid}).`);
}

/**
 * Resolves when ICE gathering is complete, or after ICE_WAIT_MS with whatever candidates there are.
 * Right after an ICE restart's setLocalDescription the state can still read "complete" (from the
 * previous round) while the new description has no candidate yet: that is not done.
 */
function iceGathered(pc) {
  const complete = () => pc.iceGatheringState === 'complete' && /\r\na=candidate:/.test(pc.localDescription?.sdp ?? '');
  if (complete()) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      pc.removeEventListener('icecandidate', check);
      resolve();
    };
    const check = () => { if (complete()) done(); };
    const timer = setTimeout(done, ICE_WAIT_MS);
    pc.addEventListener('icegatheringstatechange', check);
    pc.addEventListener('icecandidate', check);
  });
}

function refusal(prefix, r) {
  const words = r.words || r.message || 'no reason given';
  const said = r.message && r.message !== words ? ` (the camera said: “${r.message}”)` : '';
  return `${prefix} (${r.code ?? 'unknown'}): ${words}${said}`;
}

async function stopLive({ quiet = false } = {}) {
  const v = app.view;
  if (!v) return;
  // Ask the camera first, so its audit says an operator stopped the view, not that the viewer hung up.
  $('stop-live').disabled = true;
  const answer = !v.sid ? { ok: true } : await api('/api/live/stop', { deviceId: v.deviceId, sid: v.sid })
    .catch((err) => (err instanceof SignedOut ? null : { ok: false, code: 'console_error', words: err.message }));
  $('stop-live').disabled = false;
  if (!answer || app.view !== v) return; // signed out, or ended meanwhile
  endView(quiet ? null : `Live view of ${v.deviceId} stopped.`);
  if (!answer.ok && !quiet) show($('live-error'), `${refusal('Stop refused', answer)}. This page has hung up; the camera ends the view when it notices.`);
}

/** Ends the view on this page only: the peer connection, the video, the countdown. */
function endView(message) {
  app.view?.mic?.stop();
  app.view?.pc.close();
  app.view = null;
  $('talk-controls').hidden = true;
  showTalking(false);
  $('live-video').srcObject = null;
  $('viewer').hidden = true;
  $('live-countdown').textContent = '--:--';
  if (message !== null) liveSays(message);
  renderLive();
}

/** The camera's state is the truth about a session: once it stops listing ours, the view is over. */
function checkView(deviceId) {
  const v = app.view;
  if (!v?.sid || v.deviceId !== deviceId) return;
  const st = app.cameras.get(deviceId)?.state;
  // An offline state (the camera's Will) lists no views, yet a camera that changed network is often
  // reported offline for a moment and then restarts ICE with the view intact: wait for it.
  if (st && st.online !== true) return;
  const listed = st?.streaming?.list?.find((x) => x.sid === v.sid);
  if (listed) {
    Object.assign(v, { seen: true, cameraState: listed.state });
    viewFacts();
  } else if (v.seen) {
    app.ended = { deviceId, sid: v.sid };
    endView(`Live view of ${deviceId} ended by the camera.`);
    if (app.selected === deviceId) loadAudit(deviceId); // to name the cause
  }
}

function viewFacts() {
  const v = app.view;
  if (!v) return;
  $('view-camera').textContent = `${v.deviceId}${v.sid ? ` · ${v.sid}` : ''}`;
  $('view-state').textContent = `this page: ${v.pc.connectionState}; camera: ${v.cameraState ?? 'not reported yet'}`;
}

/** Once a second: the ages in the list and the live view's countdown. */
function tick() {
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = ago(Number(el.getAttribute('data-since')));
  const officer = [...app.officerAlerts.values()];
  if (officer.some(emergencyUnacknowledged) && Date.now() - app.beep.lastAt >= EMERGENCY_REPEAT_MS) beep();
  // A watch-me ages out of the banner and off the map after 10 minutes, as the camera drops it.
  const watching = officer.filter(watchMeOpen).length;
  if (watching !== app.beep.watching) { app.beep.watching = watching; renderOfficer(); renderMap(); }
  const v = app.view;
  if (!v?.endsBy) return;
  restartDone(v).catch(() => {});
  const left = v.endsBy - Date.now();
  $('live-countdown').textContent = mmss(left);
  // The camera ends the view itself at endsBy and audits max_duration. Hanging up first would be
  // audited as the viewer's hang-up, so give its timer (and clock skew) a moment before closing.
  if (left <= -STOP_GRACE_MS) {
    app.ended = { deviceId: v.deviceId, sid: v.sid };
    endView(`Live view of ${v.deviceId} ended: its time ran out.`);
  }
}

// ---- Alerts ------------------------------------------------------------------------------------

async function loadAlerts() {
  try {
    const { alerts } = await api('/api/alerts');
    for (const a of alerts) app.alerts.set(a.id, a);
  } catch (err) {
    if (!(err instanceof SignedOut)) show($('alerts-status'), `Alerts unavailable: ${err.message}`);
    return;
  }
  renderAlerts();
  renderMap();
}

const SEVERITY_WORDS = { info: 'for information', warning: 'warning', critical: 'critical' };

/** Open alerts first, newest first; each names the camera audit entries behind it. */
function renderAlerts() {
  const list = [...app.alerts.values()].sort((a, b) => (!a.acknowledgedBy - !b.acknowledgedBy) * -1 || b.id - a.id);
  const open = list.filter((a) => !a.acknowledgedBy).length;
  $('alerts-status').textContent = list.length ? `${plural(open, 'open alert')}, ${list.length - open} acknowledged.` : 'No alerts.';
  $('alert-list').replaceChildren(...list.map((a) => h('li', { 'data-testid': `alert-${a.id}`, 'data-rule': a.rule, class: `sev-${a.severity}${a.acknowledgedBy ? ' acknowledged' : ''}` },
    h('strong', {}, String(a.detail?.summary ?? a.rule)),
    h('span', { class: 'meta' }, `${a.rule} · ${SEVERITY_WORDS[a.severity] ?? a.severity} · `, timeEl(a.at),
      a.deviceId ? [' · ', h('button', { type: 'button', class: 'link', 'data-device': a.deviceId }, a.deviceId)] : null,
      (a.auditRefs ?? []).length ? ` · audit ${a.auditRefs.map((r) => `${r.deviceId === a.deviceId ? '' : `${r.deviceId} `}#${r.seq}`).join(', ')}` : null),
    a.acknowledgedBy
      ? h('span', { class: 'meta', 'data-testid': `ack-by-${a.id}` }, `Acknowledged by ${a.acknowledgedBy} at `, timeEl(a.acknowledgedAt))
      : h('button', { type: 'button', 'data-testid': `ack-${a.id}`, 'data-ack': a.id, disabled: a.operator === app.me?.operator ? 'disabled' : null,
        title: a.operator === app.me?.operator ? 'An alert about you is acknowledged by someone else' : null }, 'Acknowledge'))));
}

async function acknowledge(id) {
  try {
    const a = await api(`/api/alerts/${id}/ack`, {});
    app.alerts.set(a.id, a);
    renderAlerts();
    renderMap();
  } catch (err) {
    if (!(err instanceof SignedOut)) show($('alerts-status'), `Could not acknowledge alert ${id}: ${err.message}`);
  }
}

// ---- Officer alerts (supervisors and duty officers) ---------------------------------------------
// The wearer asked to be watched (watch-me) or raised an emergency (button, fall, a trigger). Both
// show at once in a banner with a sound, in the list, and on the map, until dealt with: a watch-me
// until a live view answers it (or the camera drops it after 10 minutes), an emergency until the
// camera says it was acknowledged (the banner) and then cleared (the list and the map).

const officerKey = (a) => `${a.deviceId}/${a.alertId}`;
const watchMeOpen = (a) => a.kind === 'watch-me' && !a.answeredBy && Date.now() - (parseTime(a.at) ?? 0) < WATCH_ME_MS;
const emergencyUnacknowledged = (a) => a.kind === 'emergency' && !a.acknowledgedBy && !a.clearedAt;
const emergencyOngoing = (a) => a.kind === 'emergency' && !a.clearedAt;
/** Needs someone now: in the banner, with a sound. */
const officerUrgent = (a) => watchMeOpen(a) || emergencyUnacknowledged(a);

/** The strongest officer mark for a camera on the map: 'emergency', 'watch-me' or null. */
function officerMark(id) {
  const mine = [...app.officerAlerts.values()].filter((a) => a.deviceId === id);
  if (mine.some(emergencyOngoing)) return 'emergency';
  return mine.some(watchMeOpen) ? 'watch-me' : null;
}

async function loadOfficerAlerts() {
  try {
    const { alerts } = await api('/api/officer/alerts');
    for (const a of alerts) app.officerAlerts.set(officerKey(a), a);
  } catch (err) {
    if (!(err instanceof SignedOut)) show($('officer-status'), `Officer alerts unavailable: ${err.message}`);
    return;
  }
  renderOfficer();
  renderMap();
  if ([...app.officerAlerts.values()].some(officerUrgent)) beep();
}

function officerAlertIn(a) {
  const before = app.officerAlerts.get(officerKey(a));
  app.officerAlerts.set(officerKey(a), a);
  renderOfficer();
  renderMap();
  if (!before && officerUrgent(a)) beep();
}

/**
 * A short two-tone beep (Web Audio: no sound file to serve or to be blocked). Counted on the banner
 * (data-beeps): a test, or a control-room log, can tell the sound was played.
 */
function beep() {
  const ctx = app.beep.ctx;
  app.beep.lastAt = Date.now();
  const banner = $('officer-banner');
  banner.dataset.beeps = String(Number(banner.dataset.beeps ?? 0) + 1);
  if (!ctx) return;
  void ctx.resume?.();
  const gain = ctx.createGain();
  gain.gain.value = 0.25;
  gain.connect(ctx.destination);
  for (const [i, hz] of [880, 660].entries()) {
    const osc = ctx.createOscillator();
    osc.frequency.value = hz;
    osc.connect(gain);
    osc.start(ctx.currentTime + i * 0.18);
    osc.stop(ctx.currentTime + i * 0.18 + 0.15);
  }
}

const positionWords = (p) => (p ? `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}${Number.isFinite(p.accuracyM) ? ` ±${Math.round(p.accuracyM)} m` : ''}` : 'no position');
const sourceWords = (a) => (a.source === 'trigger' ? `trigger: ${a.trigger ?? '?'}` : a.source === 'fall' ? 'fall detected' : 'button');

function officerButtons(a) {
  const data = { 'data-device': null, 'data-officer-device': a.deviceId, 'data-alert': a.alertId };
  const out = [];
  if (watchMeOpen(a) && hasRole('supervisor')) {
    out.push(h('button', { type: 'button', ...data, 'data-officer-action': 'watch', 'data-testid': `watch-${a.alertId}`, disabled: app.view ? 'disabled' : null }, 'Watch'));
  }
  if (emergencyUnacknowledged(a)) out.push(h('button', { type: 'button', ...data, 'data-officer-action': 'ack', 'data-testid': `officer-ack-${a.alertId}` }, 'Acknowledge'));
  if (emergencyOngoing(a)) out.push(h('button', { type: 'button', class: 'danger', ...data, 'data-officer-action': 'clear', 'data-testid': `officer-clear-${a.alertId}` }, 'Clear'));
  return out;
}

function officerState(a) {
  if (a.kind === 'watch-me') {
    if (a.answeredBy) return ['Answered by ', a.answeredBy, ' at ', timeEl(a.answeredAt)];
    return watchMeOpen(a) ? ['Waiting for a supervisor'] : ['Expired unanswered'];
  }
  const parts = [];
  if (a.acknowledgedBy) parts.push('Acknowledged by ', a.acknowledgedBy, ' at ', timeEl(a.acknowledgedAt));
  else if (!a.clearedAt) parts.push('NOT ACKNOWLEDGED');
  if (a.clearedAt) parts.push(parts.length ? ' · ' : '', a.clearedBy === 'wearer' ? 'cancelled by the wearer (false alarm)' : `cleared by ${a.clearedOperator ?? 'an operator'}`, ' at ', timeEl(a.clearedAt));
  return parts;
}

function renderOfficer() {
  const list = [...app.officerAlerts.values()].sort((a, b) => (officerUrgent(b) - officerUrgent(a)) || (emergencyOngoing(b) - emergencyOngoing(a)) || String(b.at).localeCompare(String(a.at)));
  const urgent = list.filter(officerUrgent);
  $('officer-status').textContent = list.length ? `${plural(urgent.length, 'request')} waiting, ${list.length} in all.` : 'No officer has asked for help.';
  $('officer-list').replaceChildren(...list.map((a) => h('li', {
    'data-testid': `officer-alert-${a.alertId}`, 'data-kind': a.kind, 'data-device': a.deviceId,
    'data-state': officerUrgent(a) ? 'open' : emergencyOngoing(a) ? 'acknowledged' : 'dealt-with',
    class: `${a.kind}${officerUrgent(a) || emergencyOngoing(a) ? ' open' : ''}`,
  },
  h('strong', {}, a.kind === 'emergency' ? `EMERGENCY — ${a.deviceId}` : `Watch me — ${a.deviceId}`),
  h('span', { class: 'meta' }, ' ', a.kind === 'emergency' ? `${sourceWords(a)} · ` : '', timeEl(a.at), ` · ${positionWords(a.position)}`,
    a.recordingId ? ` · recording ${a.recordingId}` : ''),
  h('span', { class: 'meta', 'data-testid': `officer-state-${a.alertId}` }, ' ', ...officerState(a)),
  ' ', ...officerButtons(a))));
  const banner = $('officer-banner');
  banner.hidden = urgent.length === 0;
  banner.classList.toggle('watch-only', urgent.every((a) => a.kind === 'watch-me'));
  banner.replaceChildren(...urgent.map((a) => h('p', { 'data-testid': `banner-${a.alertId}` },
    a.kind === 'emergency' ? `EMERGENCY: ${a.deviceId} (${sourceWords(a)}) at ` : `${a.deviceId} asks to be watched, at `, timeEl(a.at), ` — ${positionWords(a.position)}`,
    ...officerButtons(a))));
}

function officerClick(e) {
  const b = e.target.closest('[data-officer-action]');
  if (!b) return pick(e.target);
  const deviceId = b.getAttribute('data-officer-device'), alertId = b.getAttribute('data-alert');
  const action = b.getAttribute('data-officer-action');
  if (action === 'watch') return watch(deviceId);
  return acknowledgeEmergency(deviceId, alertId, action === 'clear', b);
}

/** One click: a live view of that camera with reason officer-request (signed for this supervisor). */
function watch(deviceId) {
  pickId(deviceId);
  if ([...$('reason').options].some((o) => o.value === app.config.watchMeReason)) $('reason').value = app.config.watchMeReason;
  return startLive(deviceId, app.config.watchMeReason, Math.min(300, app.config.maxDurationS), app.config.talk && $('talk').checked);
}

/** alert.ack signed for this operator; shown as acknowledged when the camera says so, not before. */
async function acknowledgeEmergency(deviceId, alertId, clear, button) {
  button.disabled = true;
  try {
    const r = await api('/api/officer/ack', { deviceId, alertId, ...(clear ? { clear: true } : {}) });
    $('officer-status').textContent = r.ok
      ? `${clear ? 'Clearance' : 'Acknowledgement'} of ${alertId} accepted by ${deviceId}; the wearer is told.`
      : refusal(`${deviceId} refused the ${clear ? 'clearance' : 'acknowledgement'}`, r);
  } catch (err) {
    if (!(err instanceof SignedOut)) $('officer-status').textContent = `Could not send it to ${deviceId}: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// ---- Talk-back (push-to-talk) -------------------------------------------------------------------

/**
 * Holding the button attaches the microphone to the talk-back m-line (replaceTrack: no new offer,
 * no renegotiation), releasing detaches it; the camera audits talk start and stop itself. The
 * microphone is asked for on the first press only, and released when the view ends.
 */
async function setTalking(on) {
  const v = app.view;
  if (!v?.talk || v.talkWanted === on) return;
  v.talkWanted = on;
  try {
    if (on && !v.mic) {
      v.mic = (await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } })).getAudioTracks()[0];
      if (app.view !== v) { v.mic.stop(); return; }
    }
    if (v.talkWanted !== on) return; // released (or pressed again) while the microphone was coming
    await v.talk.sender.replaceTrack(on ? v.mic : null);
    if (app.view === v && v.talkWanted === on) showTalking(on);
  } catch (err) {
    v.talkWanted = false;
    showTalking(false);
    liveSays(`Talk-back failed: ${err.message}`);
  }
}

function showTalking(on) {
  $('talk-button').setAttribute('aria-pressed', String(on));
  $('talk-state').textContent = on ? 'talking' : 'not talking';
  $('talk-state').dataset.talking = String(on);
}

// ---- Fleet (fleet admins) -----------------------------------------------------------------------

/** Reloads the desk's rows; events arriving meanwhile are served by one more reload after it. */
function loadFleet() {
  if (!hasRole(...FLEET_ADMINS)) return;
  if (app.fleetLoading) { app.fleetLoading.again = true; return; }
  const pending = { again: false };
  app.fleetLoading = pending;
  api('/api/fleet/cameras').then(({ cameras }) => { app.fleet = cameras; renderFleet(); }, (err) => {
    if (!(err instanceof SignedOut)) show($('fleet-status'), `Fleet unavailable: ${err.message}`);
  }).finally(() => {
    app.fleetLoading = null;
    if (pending.again) loadFleet();
  });
}

const ENROLMENT_WORDS = { enrolled: 'Enrolled', 'not-enrolled': 'Not enrolled', 'different-key': 'DIFFERENT KEY', 'no-key': 'No key seen' };
const shortKid = (kid) => (kid ? `${kid.slice(0, 12)}…` : '—');

function renderFleet() {
  const rows = app.fleet;
  $('fleet-status').textContent = rows.length ? `${plural(rows.length, 'camera')}, ${rows.filter((r) => r.enrolment.state !== 'enrolled').length} not trusted yet.` : 'No cameras seen yet.';
  $('fleet').querySelector('tbody').replaceChildren(...rows.map((r) => {
    const e = r.enrolment;
    const last = r.update.at(-1);
    const canConfirm = e.stateKid && e.state !== 'enrolled';
    return h('tr', { 'data-testid': `fleet-row-${r.deviceId}`, 'data-device': r.deviceId },
      h('th', { scope: 'row' }, r.deviceId),
      h('td', { class: r.online ? 'ok' : 'muted' }, r.online ? 'online' : 'offline'),
      h('td', { 'data-testid': `fleet-agent-${r.deviceId}` }, r.agentVersion ?? '—'),
      h('td', { 'data-testid': `fleet-config-${r.deviceId}` }, r.config
        ? [`v${r.config.version} `, h('code', { title: r.config.digest }, r.config.digest.slice(0, 10)), r.config.pending ? ' (on trial)' : '']
        : 'not reported'),
      h('td', { 'data-testid': `fleet-enrolment-${r.deviceId}`, 'data-state': e.state, class: e.state === 'different-key' ? 'bad' : null },
        `${ENROLMENT_WORDS[e.state] ?? e.state} `, h('code', { title: e.stateKid ?? '' }, shortKid(e.stateKid)),
        e.state === 'different-key' ? ` (enrolled ${shortKid(e.enrolledKid)})` : null,
        canConfirm ? [' ', h('button', { type: 'button', 'data-testid': `fleet-enrol-${r.deviceId}`, 'data-enrol': r.deviceId, 'data-kid': e.stateKid, 'data-replace': e.state === 'different-key' ? 'true' : 'false' },
          e.state === 'different-key' ? 'Re-pin this key' : 'Confirm this key')] : null),
      h('td', { 'data-testid': `fleet-update-${r.deviceId}` }, last
        ? [`${last.type.replace(/^update\./, '')}${last.version ? ` ${last.version}` : ''} `, timeEl(last.time), r.update.length > 1 ? h('span', { class: 'meta' }, ` (${r.update.map((u) => u.type.replace(/^update\./, '')).join(' → ')})`) : null]
        : '—'));
  }));
  const select = $('fleet-device');
  const chosen = select.value;
  select.replaceChildren(...rows.map((r) => h('option', { value: r.deviceId }, r.deviceId)));
  if (rows.some((r) => r.deviceId === chosen)) select.value = chosen;
  if ($('fleet-base').value === '') fillBase();
}

function fillBase() {
  const row = app.fleet.find((r) => r.deviceId === $('fleet-device').value);
  $('fleet-base').value = row?.config ? String(row.config.version) : '';
}

/** Posts to the desk and says what came back, in the panel. */
async function fleetAction(path, body, done) {
  const out = $('fleet-result');
  out.textContent = 'Sending…';
  try {
    const r = await api(path, body);
    out.textContent = r.ok === true ? done(r) : `Refused by ${body.deviceId}: ${r.code}${r.message ? ` (${r.message})` : ''}`;
    out.className = `status-line ${r.ok === true ? 'ok' : 'bad'}`;
    loadFleet();
    return r;
  } catch (err) {
    if (!(err instanceof SignedOut)) Object.assign(out, { textContent: err.message, className: 'status-line bad' });
    return null;
  }
}

function parseJsonField(id, what) {
  try {
    const v = JSON.parse($(id).value);
    if (v && typeof v === 'object' && !Array.isArray(v)) return v;
  } catch { /* named below */ }
  Object.assign($('fleet-result'), { textContent: `${what} must be a JSON object`, className: 'status-line bad' });
  return null;
}

function applyPatch() {
  const patch = parseJsonField('fleet-patch', 'The config patch');
  if (!patch) return;
  const deviceId = $('fleet-device').value;
  fleetAction('/api/fleet/config', { deviceId, patch, base: Number($('fleet-base').value) },
    (r) => `${deviceId} now runs config version ${r.version} (applied ${r.applied}${r.changed ? `: ${[].concat(r.changed).join(', ')}` : ''})`).then((r) => {
    if (r?.ok) $('fleet-base').value = String(r.version);
  });
}

function revokeKey() {
  const deviceId = $('fleet-device').value;
  const kid = $('fleet-kid').value.trim();
  fleetAction('/api/fleet/revoke', { deviceId, kid }, () => `${deviceId} revoked key ${kid}`);
}

function sendUpdate() {
  const release = parseJsonField('fleet-release', 'The release');
  if (!release) return;
  const deviceId = $('fleet-device').value;
  fleetAction('/api/fleet/update', { deviceId, release, force: $('fleet-force').checked },
    (r) => `${deviceId} accepted the update to ${release.version}: ${r.status ?? 'started'}; progress shows in its row`);
}

function collectDiag() {
  const deviceId = $('fleet-device').value;
  const out = $('fleet-diag-result');
  out.hidden = true;
  fleetAction('/api/fleet/diag', { deviceId }, (r) => {
    out.replaceChildren(`${r.bytes} bytes, SHA-256 `, h('code', { 'data-testid': 'fleet-diag-sha256' }, r.sha256), ' · ',
      h('a', { href: r.download, download: `diag-${deviceId}-${r.id}.json`, 'data-testid': 'fleet-diag-download' }, 'Download the bundle'));
    out.hidden = false;
    return `Diagnostics of ${deviceId} collected`;
  });
}

function confirmEnrolment(deviceId, kid, replace) {
  fleetAction('/api/fleet/enrol', { deviceId, kid, ...(replace ? { replace: true } : {}) },
    (r) => (r.already ? `${deviceId} was already enrolled with ${kid}` : `${deviceId} enrolled with device key ${r.kid} by ${r.enrolledBy}`));
}

// ---- Audit -----------------------------------------------------------------------------------

function showAudit(deviceId, text, tone) {
  const el = $('audit-status');
  Object.assign(el, { textContent: text, className: `audit-status ${tone}` });
  el.dataset.device = deviceId ?? '';
  $('audit-title').textContent = deviceId ? `Audit trail — ${deviceId}` : 'Audit trail';
  if (tone === '') $('audit').hidden = $('audit-more').hidden = true;
}

async function loadAudit(deviceId) {
  const token = ++app.auditToken; // selections and events race: only the newest request may draw
  if ($('audit-status').dataset.device !== deviceId) showAudit(deviceId, `Loading the audit trail of ${deviceId}…`, '');
  let data;
  try {
    data = await api(`/api/audit/${encodeURIComponent(deviceId)}`);
  } catch (err) {
    if (token === app.auditToken && !(err instanceof SignedOut)) showAudit(deviceId, `Audit trail unavailable: ${err.message}`, 'bad');
    return;
  }
  if (token !== app.auditToken) return;
  const entries = data.entries ?? [];
  // ok: null (nothing received yet, or the console joined after entry 1) cannot be checked, which
  // is not the same as a broken chain: no false alarm for it.
  const v = data.verification ?? {};
  const [word, tone] = v.ok === true ? ['Chain verified', 'good'] : v.ok === false ? ['Chain BROKEN', 'bad'] : ['Chain not checked', 'warn'];
  showAudit(deviceId, `${word} — ${v.summary ?? 'no verification result'}`, tone);
  const shown = entries.slice(-AUDIT_ROWS).reverse();
  $('audit').tBodies[0].replaceChildren(...shown.map(auditRow));
  $('audit').hidden = shown.length === 0;
  show($('audit-more'), entries.length > shown.length ? `Newest ${shown.length} of ${entries.length} entries shown.`
    : entries.length ? '' : 'No entries yet.');
  nameEndCause(deviceId, entries);
}

function auditRow(e) {
  const decision = e.decision
    ? [h('span', { class: `pill ${e.decision === 'accepted' ? 'good' : 'bad'}` }, e.decision), e.code ? ` ${e.code}` : '']
    : e.code ?? '';
  return h('tr', { class: e.decision === 'rejected' ? 'rejected' : null },
    h('td', { class: 'num' }, e.seq),
    h('td', {}, timeEl(e.time)),
    h('td', {}, h('code', {}, e.type), e.action && e.action !== e.type ? h('small', {}, ` ${e.action}`) : null),
    h('td', {}, e.operator ?? '—'),
    h('td', { title: e.reason ? reasonLabel(e.reason) : null }, e.reason ?? '—'),
    h('td', {}, decision),
    h('td', { 'data-testid': `audit-bookmark-${e.seq}` }, bookmarkCell(e.type, e.detail ?? {})),
    h('td', { 'data-testid': `audit-trigger-${e.seq}` }, triggerCell(e.type, e.detail ?? {})),
    h('td', {}, details(e.type, e.detail ?? {})));
}

/** A recording.bookmark: where in which recording, who marked it and why (an investigator's index). */
function bookmarkCell(type, d) {
  if (type !== 'recording.bookmark') return '';
  const at = Number.isFinite(d.offsetS) ? ` at ${d.offsetS.toFixed(1)} s` : '';
  const of = d.recordingId ? ` of ${d.recordingId}` : ' (not recording)';
  const by = d.source === 'command' ? `by ${d.operator ?? 'an operator'}` : 'by the wearer';
  return [h('span', { class: 'pill' }, 'mark'), `${at}${of}, ${by}`, d.note ? ` — “${d.note}”` : ''];
}

/** What started something: an officer.trigger's source and actions, a recording's or an emergency's trigger. */
function triggerCell(type, d) {
  if (type === 'officer.trigger') return [h('strong', {}, String(d.source ?? '?')), ` → ${(d.actions ?? []).length ? d.actions.join(', ') : 'ignored (not configured)'}`];
  if (type === 'officer.emergency') return d.source === 'trigger' ? `trigger: ${d.trigger ?? '?'}` : String(d.source ?? '');
  if (type.startsWith('recording.') && d.trigger) {
    const t = d.trigger;
    return typeof t === 'string' ? t : [t.kind ?? t.source ?? '?', t.source && t.kind ? `: ${t.source}` : '', t.sid ? ` (view ${t.sid})` : ''].join('');
  }
  return '';
}

/** The few detail fields a reviewer needs at a glance; the rest stays in the stored entry. */
function details(type, d) {
  const parts = [d.sid && `session ${d.sid}`];
  if (type === 'stream.start') parts.push(d.endsBy && `ends by ${clock(d.endsBy)}`, d.covert && 'covert');
  if (type === 'stream.stop') parts.push(d.cause && causeWords(d.cause), Number.isFinite(d.durationS) && `${d.durationS} s`);
  if (type.startsWith('recording.')) parts.push(d.recordingId && `recording ${d.recordingId}`);
  if (type === 'officer.watch_me' || type === 'officer.emergency') parts.push(d.position && positionWords(d.position), d.recordingId && `recording ${d.recordingId}`);
  if (type === 'officer.emergency_acknowledged') parts.push(d.operator && `acknowledged by ${d.operator}`);
  if (type === 'stream.talk_started' || type === 'stream.talk_stopped') parts.push(d.operator && `${d.operator} ${type.endsWith('started') ? 'started' : 'stopped'} talking`);
  if (type === 'capture.fault' || type === 'agent.stop') parts.push(d.reason);
  if (type === 'agent.start') parts.push(d.version && `version ${d.version}`);
  if (type === 'command.result') parts.push(d.message);
  return parts.filter((p) => typeof p === 'string' && p).join(' · ');
}

/** "Ended by the camera" is more use with the why, which only the audit entry carries. */
function nameEndCause(deviceId, entries) {
  const ended = app.ended;
  if (ended?.deviceId !== deviceId || app.view) return;
  const stop = entries.findLast((e) => e.type === 'stream.stop' && e.detail?.sid === ended.sid);
  if (!stop?.detail?.cause) return;
  liveSays(`Live view of ${deviceId} ended: ${causeWords(stop.detail.cause)} after ${stop.detail.durationS ?? '?'} s.`);
  app.ended = null;
}

boot();
