// The oversight report page (ops-console/report.ts builds the report): a period and optional
// filters, the live views and alerts in two tables, and the same report as CSV and as a signed JSON
// document to download. Every string reaches the page through textContent, never as markup.
const $ = (id) => document.getElementById(id);

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '' : String(text);
  return td;
}
function row(values) {
  const tr = document.createElement('tr');
  tr.append(...values.map(cell));
  return tr;
}

function query(format) {
  const form = new FormData($('report-form'));
  const q = new URLSearchParams();
  for (const [k, v] of form) {
    if (v === '') continue;
    // datetime-local is the browser's local time: sent as an instant.
    q.set(k, k === 'from' || k === 'to' ? new Date(v).toISOString() : v);
  }
  q.set('format', format);
  return `/api/report?${q}`;
}

async function show(event) {
  event?.preventDefault();
  $('report-status').textContent = 'Loading…';
  const res = await fetch(query('json'), { credentials: 'same-origin' });
  if (res.status === 401) {
    $('report-signin').hidden = false;
    $('report-status').textContent = '';
    return;
  }
  const data = await res.json();
  if (!res.ok) {
    $('report-status').textContent = `The report could not be made: ${data.error ?? res.status}`;
    return;
  }
  // The page shows the signed payload itself: what it shows is what was signed.
  const report = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(data.payload.replace(/-/g, '+').replace(/_/g, '/')), (c) => c.charCodeAt(0))));
  $('report-views').tBodies[0].replaceChildren(...report.liveViews.map((v) => row([
    v.deviceId, v.operator, v.unit ?? '', v.reason, v.startedAt, v.durationS ?? 'running', v.endCause ?? '', v.auditRefs.map((r) => r.seq).join(' '),
  ])));
  $('report-alerts').tBodies[0].replaceChildren(...report.alerts.map((a) => row([
    a.at, a.rule, a.severity, a.deviceId ?? '', a.operator ?? '', a.detail?.message ?? JSON.stringify(a.detail), a.acknowledgedBy ? `${a.acknowledgedBy} ${a.acknowledgedAt}` : 'no',
  ])));
  $('report-status').textContent = `${report.liveViews.length} live view(s) and ${report.alerts.length} alert(s) from ${report.period.from} to ${report.period.to}.`;
  $('report-csv').href = query('csv');
  $('report-json').href = query('json');
  $('report-downloads').hidden = false;
}

function localInput(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const now = new Date();
$('report-from').value = localInput(new Date(now.getTime() - 7 * 86_400_000));
$('report-to').value = localInput(new Date(now.getTime() + 60_000));
$('report-form').addEventListener('submit', show);
