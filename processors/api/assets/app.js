// The Form-Bridge dashboard and the portal sign-in page, in plain browser JavaScript with no
// build step. The page never sees a credential it could leak: the session cookie is HttpOnly,
// the portal token lives only in the URL fragment until it is exchanged, and every request that
// changes state carries the CSRF token from /v1/session. Text from the API is only ever set as
// text (never as HTML), and nothing is fetched from anywhere but this origin.
'use strict';

const HOUR = 3600;
const DAY = 86400;
const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = { Accept: 'application/json', ...options.headers };
  const response = await fetch(path, { credentials: 'same-origin', ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`,
      error.message || `${response.status} ${response.statusText}`);
  }
  return body;
}

// ---- small DOM and formatting helpers -------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);
const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  node.append(...children.flat().filter((c) => c != null).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function fillTable(table, caption, headers, rows, footer) {
  table.replaceChildren(
    el('caption', { class: 'visually-hidden' }, caption),
    el('thead', {}, el('tr', {}, headers.map((h) => (h instanceof Node ? h : el('th', { scope: 'col' }, h))))),
    el('tbody', {}, rows),
  );
  if (footer) table.append(el('tfoot', {}, footer));
}

const integer = new Intl.NumberFormat('en-US');
const percent = new Intl.NumberFormat('en-US', { style: 'percent', maximumFractionDigits: 1 });

function bytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function usd(n) {
  if (n == null) return '—';
  const digits = Math.abs(n) < 1 ? 4 : 2;
  return new Intl.NumberFormat('en-US', { style: 'currency', currency: 'USD', maximumFractionDigits: digits }).format(n);
}

const ms = (n) => (n == null ? '—' : `${integer.format(n)} ms`);
const rate = (n) => (n == null ? '—' : percent.format(n));
const toSeconds = (iso) => Math.floor(Date.parse(iso) / 1000);
const toIso = (seconds) => new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
const utcMinute = (iso) => (iso ? new Date(iso).toISOString().slice(0, 16).replace('T', ' ') : '—');
// ULIDs of one period share their leading (time) characters: the tail tells them apart.
const shortId = (id) => el('code', { title: id }, id.length > 12 ? `…${id.slice(-8)}` : id);
const numeric = (text) => el('th', { scope: 'col', class: 'num' }, text);

// ---- portal sign-in -------------------------------------------------------------------------

async function signIn() {
  // The token is read once and removed from the address bar before anything else happens, so
  // it is not left in history, bookmarks or a screenshot.
  const token = location.hash.slice(1);
  history.replaceState(null, '', location.pathname + location.search);
  const status = byTestId('portal-status');
  const fail = (message) => {
    status.textContent = 'Sign-in failed.';
    const error = byTestId('portal-error');
    error.textContent = message;
    error.hidden = false;
  };
  if (!token) {
    fail('This sign-in link has no token: open the full link you were sent.');
    return;
  }
  try {
    await api('/v1/portal/exchange', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token }),
    });
    status.textContent = 'Signed in, opening the dashboard…';
    location.replace('/');
  } catch (e) {
    fail(e instanceof ApiError ? e.message : 'The sign-in service could not be reached; try the link again.');
  }
}

// ---- dashboard state ------------------------------------------------------------------------

const state = {
  session: null,
  destinations: new Map(),
  series: {}, // name -> model (see seriesModel)
  pendingLive: [], // buckets that arrived before the charts' first load
  live: null,
  latestCursor: null,
  selected: null,
};
window.fbCharts = {};

const destinationName = (id) => state.destinations.get(id)?.name ?? id;

// The windows the charts show: whole UTC hours and days, `to` exclusive and at the end of the
// current hour or day, so the bucket being filled right now is the last point.
function windows(now = Date.now()) {
  const hourEnd = Math.floor(now / 1000 / HOUR) * HOUR + HOUR;
  const dayEnd = Math.floor(now / 1000 / DAY) * DAY + DAY;
  return {
    hourly: { granularity: 'hour', step: HOUR, slots: 48, to: hourEnd },
    daily: { granularity: 'day', step: DAY, slots: 30, to: dayEnd },
  };
}

const queryOf = (model) => {
  const from = model.to - model.slots * model.step;
  return `granularity=${model.granularity}&from=${toIso(from)}&to=${toIso(model.to)}`;
};

// A chart's model: one row of per-form counts per slot. The API leaves out empty buckets; they
// are slots with no counts here, plotted as zero.
function seriesModel(range, response) {
  const model = { ...range, rows: new Map() };
  for (let x = range.to - range.slots * range.step; x < range.to; x += range.step) model.rows.set(x, {});
  for (const bucket of response.buckets) model.rows.set(toSeconds(bucket.start), { ...bucket.forms });
  return model;
}

// Moves a model's window forward so that slot `x` is its last one.
function slide(model, x) {
  while (model.to <= x) {
    model.rows.set(model.to, {});
    model.to += model.step;
  }
  for (const key of model.rows.keys()) if (key < model.to - model.slots * model.step) model.rows.delete(key);
}

function modelData(model) {
  const xs = [...model.rows.keys()].sort((a, b) => a - b);
  const forms = [...new Set(xs.flatMap((x) => Object.keys(model.rows.get(x))))].sort();
  return { xs, forms, counts: forms.map((form) => xs.map((x) => model.rows.get(x)[form] ?? 0)) };
}

// ---- charts and their tables ----------------------------------------------------------------

function drawSeries(name) {
  const model = state.series[name];
  const { xs, forms, counts } = modelData(model);
  const container = byTestId(`chart-${name}`);
  container.dataset.query = queryOf(model);
  drawChart(name, container, model.step, xs, forms, counts);
  drawSeriesTable(name, model.step, xs, forms, counts);
}

// 24-hour UTC labels: the hour, or the date where a day starts.
function axisLabel(ts, step) {
  const iso = toIso(ts);
  return step === DAY || iso.slice(11, 13) === '00' ? iso.slice(5, 10) : iso.slice(11, 16);
}

function drawChart(name, container, step, xs, forms, counts) {
  const data = [xs, ...counts];
  const labels = forms.join('\n');
  const existing = window.fbCharts[name];
  if (existing && existing.fbForms === labels) {
    existing.setData(data);
    return;
  }
  existing?.destroy();
  const chart = new uPlot({
    width: Math.max(300, container.clientWidth),
    height: 240,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    scales: { y: { range: (u, min, max) => [0, Math.max(5, Math.ceil(max * 1.1))] } },
    series: [
      { label: step === DAY ? 'Day' : 'Hour', value: (u, ts) => (ts == null ? '—' : toIso(ts).slice(0, step === DAY ? 10 : 16).replace('T', ' ')) },
      ...forms.map((form, i) => ({
        label: form,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        points: { show: step === DAY },
      })),
    ],
    axes: [{ values: (u, splits) => splits.map((ts) => axisLabel(ts, step)) }, { label: 'submissions', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6] }],
  }, data, container);
  chart.fbForms = labels;
  window.fbCharts[name] = chart;
  container.dataset.forms = forms.join(',');
}

function drawSeriesTable(name, step, xs, forms, counts) {
  const label = (x) => toIso(x).slice(0, step === DAY ? 10 : 16).replace('T', ' ');
  const cell = (value, attrs) => el('td', { class: 'num', 'data-value': value, ...attrs }, integer.format(value));
  const rows = xs.map((x, i) => {
    const total = counts.reduce((sum, c) => sum + c[i], 0);
    return el('tr', { 'data-x': x },
      el('th', { scope: 'row' }, label(x)),
      forms.map((form, f) => cell(counts[f][i], { 'data-form': form })),
      cell(total, { 'data-total': '' }));
  });
  const sums = counts.map((c) => c.reduce((a, b) => a + b, 0));
  const footer = el('tr', {},
    el('th', { scope: 'row' }, 'Total'),
    forms.map((form, f) => cell(sums[f], { 'data-form': form })),
    cell(sums.reduce((a, b) => a + b, 0), { 'data-total': '' }));
  fillTable(byTestId(`${name}-table`), `Submissions per ${step === DAY ? 'day' : 'hour'} and form`,
    [step === DAY ? 'Day' : 'Hour', ...forms.map((f) => el('th', { scope: 'col', class: 'num', 'data-form': f }, f)), numeric('Total')],
    rows, footer);
}

// ---- panels ---------------------------------------------------------------------------------

function renderNow(bucket) {
  const deliveries = Object.values(bucket?.deliveries ?? {});
  const sum = (field) => deliveries.reduce((total, d) => total + (d[field] ?? 0), 0);
  byTestId('now-submissions').textContent = integer.format(bucket?.submissions ?? 0);
  byTestId('now-succeeded').textContent = integer.format(sum('succeeded'));
  byTestId('now-failed').textContent = integer.format(sum('failed'));
  byTestId('now-bytes-saved').textContent = bytes(bucket?.bytes_saved ?? 0);
}

function currentHourBucket(response) {
  const hour = Math.floor(Date.now() / 1000 / HOUR) * HOUR;
  return response.buckets.find((b) => toSeconds(b.start) === hour) ?? null;
}

function renderCompression(totals) {
  byTestId('bytes-saved').textContent = bytes(totals.bytes_saved);
  byTestId('bytes-saved-percent').textContent = totals.raw_bytes > 0 ? percent.format(totals.bytes_saved / totals.raw_bytes) : '—';
  byTestId('raw-bytes').textContent = bytes(totals.raw_bytes);
  byTestId('stored-bytes').textContent = bytes(totals.stored_bytes);
}

function renderDestinations(destinations, totals) {
  const stats = totals.deliveries ?? {};
  const ids = [...new Set([...destinations.map((d) => d.destination_id), ...Object.keys(stats)])];
  const rows = ids.map((id) => {
    const s = stats[id] ?? {};
    const health = state.destinations.get(id)?.health?.state ?? 'deleted';
    return el('tr', { 'data-testid': 'destination-row', 'data-destination-id': id },
      el('th', { scope: 'row' }, destinationName(id)),
      el('td', {}, el('span', { class: `state state-${health}` }, health)),
      el('td', { class: 'num' }, integer.format(s.succeeded ?? 0)),
      el('td', { class: 'num' }, integer.format(s.failed ?? 0)),
      el('td', { class: 'num' }, integer.format(s.attempts ?? 0)),
      el('td', { class: 'num', 'data-testid': 'success-rate' }, rate(s.success_rate)),
      el('td', { class: 'num' }, ms(s.latency_p50_ms)),
      el('td', { class: 'num', 'data-testid': 'latency-p95' }, ms(s.latency_p95_ms)));
  });
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No destinations yet.')));
  fillTable(byTestId('destinations-table'), 'Delivery success rate and latency per destination',
    ['Destination', 'Health', ...['Delivered', 'Failed', 'Attempts', 'Success rate', 'p50 latency', 'p95 latency'].map(numeric)], rows);
}

function renderHealth(destinations) {
  const unhealthy = destinations.filter((d) => d.health?.state !== 'healthy');
  const holder = byTestId('health-list');
  if (unhealthy.length === 0) {
    holder.replaceChildren(el('p', { class: 'ok', 'data-testid': 'health-ok' },
      `All ${destinations.length} destinations are healthy.`));
    return;
  }
  const table = el('table', {});
  fillTable(table, 'Destinations that are failing or paused', ['Destination', 'State', numeric('Failures in a row'), 'URL', 'Enabled'],
    unhealthy.map((d) => el('tr', { 'data-testid': 'unhealthy-destination', 'data-destination-id': d.destination_id },
      el('th', { scope: 'row' }, d.name),
      el('td', {}, el('span', { class: `state state-${d.health?.state}` }, d.health?.state ?? 'unknown')),
      el('td', { class: 'num' }, integer.format(d.health?.consecutive_failures ?? 0)),
      el('td', {}, el('code', {}, d.url)),
      el('td', {}, d.enabled ? 'yes' : 'no'))));
  holder.replaceChildren(table);
}

function renderFailed(body) {
  const holder = byTestId('failed-list');
  if (body.deliveries.length === 0) {
    holder.replaceChildren(el('p', { class: 'ok', 'data-testid': 'failed-none' }, 'No failed deliveries.'));
    return;
  }
  const table = el('table', {});
  fillTable(table, 'Failed deliveries', ['Submission', 'Form', 'Destination', numeric('Attempts'), numeric('Last response'), 'Reason', 'Updated', 'Status',
    el('th', { scope: 'col' }, el('span', { class: 'visually-hidden' }, 'Action'))],
    body.deliveries.map(failedRow));
  holder.replaceChildren(table);
  if (body.next_cursor) holder.append(el('p', { class: 'muted' }, `Showing the first ${body.deliveries.length}.`));
}

function failedRow(d) {
  const status = el('td', { 'data-testid': 'replay-status' }, d.status);
  const button = el('button', {
    type: 'button',
    'data-testid': 'replay',
    'aria-label': `Replay submission ${d.submission_id} to ${destinationName(d.destination_id)}`,
  }, 'Replay');
  button.addEventListener('click', () => replay(d, button, status));
  return el('tr', { 'data-testid': 'failed-delivery-row', 'data-submission-id': d.submission_id, 'data-destination-id': d.destination_id },
    el('td', {}, shortId(d.submission_id)),
    el('td', {}, d.form_id ?? '—'),
    el('td', {}, destinationName(d.destination_id)),
    el('td', { class: 'num' }, integer.format(d.attempts ?? 0)),
    el('td', { class: 'num' }, d.last_status ?? '—'),
    el('td', {}, [d.reason, d.last_error].filter(Boolean).join(': ') || '—'),
    el('td', { class: 'when' }, utcMinute(d.updated_at)),
    status,
    el('td', {}, button));
}

async function replay(delivery, button, status) {
  button.disabled = true;
  status.textContent = 'replaying…';
  try {
    await api(`/v1/submissions/${encodeURIComponent(delivery.submission_id)}/deliveries/${encodeURIComponent(delivery.destination_id)}/replay`, {
      method: 'POST',
      headers: { 'X-CSRF-Token': state.session.csrf_token },
    });
    status.textContent = 'replay queued';
    status.dataset.state = 'queued';
  } catch (e) {
    if (e.status === 401) signedOut();
    status.textContent = `replay failed: ${e.message}`;
    status.dataset.state = 'error';
    button.disabled = false;
  }
}

const units = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });

function renderCost(cost) {
  byTestId('cost-so-far').textContent = usd(cost.so_far_usd);
  byTestId('cost-projected').textContent = usd(cost.projected_usd);
  byTestId('cost-per-submission').textContent =
    cost.usd_per_submission == null ? '–' : usd(cost.usd_per_submission * 1000) + ' per 1,000';
  byTestId('cost-prices').textContent = `${cost.month}, ${cost.prices} prices`;
  fillTable(byTestId('cost-table'), 'Cost items this month', ['Item', numeric('Units'), numeric('USD')],
    cost.items.map((item) => el('tr', {},
      el('th', { scope: 'row' }, item.item),
      el('td', { class: 'num' }, units.format(item.units)),
      el('td', { class: 'num' }, usd(item.usd)))));
}

// ---- latest submissions and one submission's delivery history ------------------------------

async function loadLatest(more = false) {
  const cursor = more && state.latestCursor ? `&cursor=${encodeURIComponent(state.latestCursor)}` : '';
  const body = await api(`/v1/submissions?limit=20${cursor}`);
  state.latestCursor = body.next_cursor;
  const holder = byTestId('latest-list');
  let table = $('table', holder);
  if (!more || !table) {
    table = el('table', {});
    fillTable(table, 'Latest submissions', ['Submission', 'Received', 'Form', 'Site', numeric('Size'), 'Deliveries'], []);
    holder.replaceChildren(table);
  }
  $('tbody', table).append(...body.submissions.map(submissionRow));
  $('[data-testid=latest-more]', holder)?.remove();
  if (body.submissions.length === 0 && !more) holder.append(el('p', { class: 'muted' }, 'No submissions yet.'));
  if (state.latestCursor) {
    holder.append(el('button', { type: 'button', 'data-testid': 'latest-more', onclick: () => loadLatest(true).catch(panelError('panel-latest')) }, 'Older submissions'));
  }
}

function submissionRow(s) {
  const open = el('button', { type: 'button', class: 'link', 'data-testid': 'open-submission', 'aria-label': `Show deliveries of submission ${s.submission_id}` },
    shortId(s.submission_id));
  open.addEventListener('click', () => showSubmission(s.submission_id).catch(panelError('panel-latest')));
  return el('tr', { 'data-testid': 'submission-row', 'data-submission-id': s.submission_id },
    el('td', {}, open),
    el('td', { class: 'when' }, utcMinute(s.received_at)),
    el('td', {}, s.form_id),
    el('td', {}, s.site),
    el('td', { class: 'num' }, bytes(s.raw_size)),
    el('td', {}, deliverySummary(s.deliveries)));
}

// "2 succeeded, 1 failed" from a submission's recorded deliveries (destination → status).
function deliverySummary(deliveries) {
  const counts = {};
  for (const status of Object.values(deliveries || {})) counts[status] = (counts[status] || 0) + 1;
  const parts = Object.entries(counts).map(([status, n]) => `${n} ${status}`);
  return parts.length ? parts.join(', ') : 'none yet';
}

async function showSubmission(id) {
  state.selected = id;
  for (const row of document.querySelectorAll('[data-testid=submission-row]')) {
    row.classList.toggle('selected', row.dataset.submissionId === id);
  }
  const body = await api(`/v1/submissions/${encodeURIComponent(id)}`);
  const s = body.submission;
  const panel = byTestId('submission-detail');
  panel.dataset.submissionId = id;
  panel.replaceChildren(...[
    el('h2', { id: 'detail-title' }, 'Delivery history'),
    el('dl', { class: 'facts' },
      el('dt', {}, 'Submission'), el('dd', {}, el('code', {}, s.submission_id)),
      el('dt', {}, 'Form'), el('dd', {}, `${s.form_id} on ${s.site}`),
      el('dt', {}, 'Received'), el('dd', {}, utcMinute(s.received_at)),
      el('dt', {}, 'Size'), el('dd', {}, `${bytes(s.raw_size)} raw, ${bytes(s.stored_size)} stored`)),
    body.deliveries.length === 0 ? el('p', { class: 'muted' }, 'No deliveries for this submission.') : null,
    body.deliveries.map(deliveryHistory),
    el('details', {}, el('summary', {}, 'Payload'), el('pre', {}, JSON.stringify(s.payload, null, 2))),
  ].flat().filter(Boolean));
}

function deliveryHistory(d) {
  const table = el('table', { class: 'compact' });
  fillTable(table, `Attempts to ${destinationName(d.destination_id)}`, [numeric('#'), 'At', numeric('Response'), numeric('Latency'), 'Trigger', 'Error'],
    d.attempts.map((a) => el('tr', { 'data-testid': 'attempt' },
      el('td', { class: 'num' }, a.attempt),
      el('td', { class: 'when' }, utcMinute(a.at)),
      el('td', { class: 'num' }, a.status_code ?? '—'),
      el('td', { class: 'num' }, ms(a.latency_ms)),
      el('td', {}, a.trigger),
      el('td', {}, a.error ?? ''))));
  return el('section', { class: 'delivery', 'data-testid': 'delivery-history', 'data-destination-id': d.destination_id },
    el('h3', {}, destinationName(d.destination_id), ' ', el('span', { class: `state state-${d.status}` }, d.status)),
    table);
}

// ---- live updates ---------------------------------------------------------------------------

function setLive(value) {
  const badge = byTestId('live-badge');
  badge.dataset.state = value;
  badge.textContent = `live: ${value}`;
}

function connectLive() {
  state.live?.close();
  const source = new EventSource('/v1/metrics/live');
  state.live = source;
  setLive('connecting');
  source.onopen = () => setLive('on');
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      setLive('reconnecting');
      return;
    }
    // The browser gives up on a refused stream (e.g. 401): find out whether the session ended.
    setLive('off');
    api('/v1/session').then(() => setTimeout(() => state.live === source && connectLive(), 10_000))
      .catch((e) => (e.status === 401 ? signedOut() : setTimeout(() => state.live === source && connectLive(), 10_000)));
  };
  source.addEventListener('bucket', (event) => applyLiveBucket(JSON.parse(event.data)));
}

// One hourly bucket changed: replace (or append) its point, and move the day it falls in by the
// same difference so both charts keep agreeing.
function applyLiveBucket(bucket) {
  const hourly = state.series.hourly;
  const daily = state.series.daily;
  if (!hourly || !daily) {
    state.pendingLive.push(bucket);
    return;
  }
  const x = toSeconds(bucket.start);
  slide(hourly, x);
  const before = hourly.rows.get(x) ?? {};
  const after = { ...bucket.forms };
  hourly.rows.set(x, after);

  const day = Math.floor(x / DAY) * DAY;
  slide(daily, day);
  const counts = { ...daily.rows.get(day) };
  for (const form of new Set([...Object.keys(before), ...Object.keys(after)])) {
    counts[form] = (counts[form] ?? 0) + (after[form] ?? 0) - (before[form] ?? 0);
  }
  daily.rows.set(day, counts);

  drawSeries('hourly');
  drawSeries('daily');
  if (x === Math.max(...hourly.rows.keys())) renderNow(bucket);
}

// ---- loading ---------------------------------------------------------------------------------

function signedOut() {
  state.live?.close();
  state.live = null;
  setLive('off');
  byTestId('signed-out').hidden = false;
  $('#dashboard').hidden = true;
}

const panelError = (testid) => (e) => {
  if (e.status === 401) signedOut();
  const panel = byTestId(testid);
  $('[data-testid=panel-error]', panel)?.remove();
  panel.append(el('p', { class: 'banner', role: 'alert', 'data-testid': 'panel-error' }, `Could not load: ${e.message}`));
};

async function panel(testid, work) {
  $('[data-testid=panel-error]', byTestId(testid))?.remove();
  return work.catch(panelError(testid));
}

async function loadPanels() {
  const main = $('#dashboard');
  main.setAttribute('aria-busy', 'true');
  const w = windows();
  const destinations = api('/v1/destinations').then((body) => {
    state.destinations = new Map(body.destinations.map((d) => [d.destination_id, d]));
    return body.destinations;
  });
  const hourly = api(`/v1/metrics?${queryOf(w.hourly)}`);
  const daily = api(`/v1/metrics?${queryOf(w.daily)}`);
  await Promise.all([
    panel('panel-hourly', hourly.then((r) => { state.series.hourly = seriesModel(w.hourly, r); drawSeries('hourly'); })),
    panel('panel-now', hourly.then((r) => renderNow(currentHourBucket(r)))),
    panel('panel-daily', daily.then((r) => { state.series.daily = seriesModel(w.daily, r); drawSeries('daily'); })),
    panel('panel-compression', daily.then((r) => renderCompression(r.totals))),
    panel('panel-destinations', Promise.all([destinations, daily]).then(([d, r]) => renderDestinations(d, r.totals))),
    panel('panel-health', destinations.then(renderHealth)),
    panel('panel-failed', Promise.all([destinations.catch(() => []), api('/v1/deliveries?status=failed&limit=50')])
      .then(([, body]) => renderFailed(body))),
    panel('panel-latest', loadLatest()),
    panel('panel-cost', api('/v1/cost').then(renderCost)),
  ]);
  for (const bucket of state.pendingLive.splice(0)) applyLiveBucket(bucket);
  if (state.selected) await showSubmission(state.selected).catch(panelError('panel-latest'));
  main.setAttribute('aria-busy', 'false');
}

async function startDashboard() {
  try {
    state.session = await api('/v1/session');
  } catch (e) {
    if (e.status === 401) { signedOut(); return; }
    byTestId('signed-out').textContent = `The dashboard could not start: ${e.message}`;
    byTestId('signed-out').hidden = false;
    return;
  }
  byTestId('tenant').textContent = state.session.tenant;
  byTestId('session-expires').textContent = `Session ends ${utcMinute(state.session.expires_at)} UTC`;
  $('#dashboard').hidden = false;
  $('#refresh').addEventListener('click', () => loadPanels());
  for (const name of ['hourly', 'daily']) {
    new ResizeObserver(() => {
      const chart = window.fbCharts[name];
      const width = byTestId(`chart-${name}`).clientWidth;
      if (chart && width > 0 && width !== chart.width) chart.setSize({ width, height: 240 });
    }).observe(byTestId(`chart-${name}`));
  }
  connectLive();
  await loadPanels();
  // Tests and people wait on this: every panel has finished its first load (or shows its error).
  document.body.append(el('span', { 'data-testid': 'dashboard-ready', hidden: true }));
}

if (document.body.dataset.page === 'portal') {
  // A second link opened in the same tab only changes the fragment, which reloads nothing.
  window.addEventListener('hashchange', () => location.hash && signIn());
  signIn();
} else {
  startDashboard();
}
