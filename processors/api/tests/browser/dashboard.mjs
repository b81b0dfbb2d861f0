// Drives Debian's Chromium through the dashboard of a running formbridge-api, as a person would:
// sign in through a one-time portal link, read the charts, replay a failed delivery, and check
// that the session is HttpOnly, SameSite=Strict and CSRF-protected. Every number the page shows
// is compared with what the API returns to a Bearer key of the same tenant.
//
//   FB_PORTAL_LINK=http://127.0.0.1:8090/portal#<token> FB_API_BASE=http://127.0.0.1:8090 \
//   FB_API_KEY=<key> FB_SCREENSHOT=/tmp/dashboard.png \
//   FB_REPLAY_SUBMISSION=<submission id> FB_REPLAY_DESTINATION=<destination id> node dashboard.mjs
//
// It exits 0 and prints one line of JSON when every step held; otherwise it names the step that
// failed, prints a JSON line with ok=false, saves a "-failure" screenshot and exits 1.
import { chromium } from 'playwright-core';

const TIMEOUT_MS = 30_000;
const WHOLE_RUN_MS = 180_000;
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

class StepFailure extends Error {}
const check = (condition, message) => {
  if (!condition) throw new StepFailure(message);
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setting(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`dashboard.mjs: set ${name} (see the top of this file)`);
    process.exit(2);
  }
  return value;
}

const config = {
  portalLink: setting('FB_PORTAL_LINK'),
  apiBase: setting('FB_API_BASE').replace(/\/$/, ''),
  apiKey: setting('FB_API_KEY'),
  screenshot: setting('FB_SCREENSHOT'),
  replaySubmission: setting('FB_REPLAY_SUBMISSION'),
  replayDestination: setting('FB_REPLAY_DESTINATION'),
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
};

async function apiGet(path) {
  const response = await fetch(`${config.apiBase}${path}`, {
    headers: { Authorization: `Bearer ${config.apiKey}`, Accept: 'application/json' },
  });
  const body = await response.json().catch(() => null);
  check(response.ok, `GET ${path} with the API key answered ${response.status}: ${JSON.stringify(body)}`);
  return body;
}

// ---- what the page must agree with the API on --------------------------------------------------

// Reads, in one go, the numbers a chart plotted and the numbers its table shows.
function readChart(name) {
  const chart = window.fbCharts?.[name];
  const holder = document.querySelector(`[data-testid="chart-${name}"]`);
  const table = document.querySelector(`[data-testid="${name}-table"]`);
  if (!chart || !holder || !table) return null;
  const plotted = {};
  chart.series.slice(1).forEach((series, i) => { plotted[series.label] = chart.data[i + 1]; });
  const rows = [...table.querySelectorAll('tbody tr')].map((tr) => ({
    x: Number(tr.dataset.x),
    forms: Object.fromEntries([...tr.querySelectorAll('td[data-form]')].map((td) => [td.dataset.form, Number(td.dataset.value)])),
    total: Number(tr.querySelector('td[data-total]')?.dataset.value),
  }));
  const footer = Object.fromEntries([...table.querySelectorAll('tfoot td[data-form]')].map((td) => [td.dataset.form, Number(td.dataset.value)]));
  const footerTotal = Number(table.querySelector('tfoot td[data-total]')?.dataset.value);
  return { query: holder.dataset.query, xs: [...chart.data[0]], plotted, rows, footer, footerTotal };
}

const WINDOWS = { hourly: { step: 3600, slots: 48, granularity: 'hour' }, daily: { step: 86400, slots: 30, granularity: 'day' } };

// Returns the list of disagreements between the page's chart `name` and the API (empty: agreed).
async function compareChart(page, name) {
  const shown = await page.evaluate(readChart, name);
  if (!shown) return [`chart ${name}: window.fbCharts.${name} or its table is missing`];
  const problems = [];
  const span = WINDOWS[name];
  const query = new URLSearchParams(shown.query ?? '');
  const from = Date.parse(query.get('from')) / 1000;
  const to = Date.parse(query.get('to')) / 1000;
  const now = Date.now() / 1000;
  if (query.get('granularity') !== span.granularity) problems.push(`${name}: data-query has granularity ${query.get('granularity')}`);
  if (to - from !== span.step * span.slots || to % span.step !== 0 || to < now - span.step || to > now + span.step) {
    problems.push(`${name}: data-query "${shown.query}" is not the last ${span.slots} whole UTC ${span.granularity}s`);
  }
  if (problems.length) return problems;

  const api = await apiGet(`/v1/metrics?${shown.query}`);
  const expected = new Map(); // x -> forms
  for (const bucket of api.buckets) expected.set(Date.parse(bucket.start) / 1000, bucket.forms ?? {});
  const apiForms = [...new Set(api.buckets.flatMap((b) => Object.keys(b.forms ?? {})))].sort();
  const pageForms = Object.keys(shown.plotted).sort();
  if (apiForms.join() !== pageForms.join()) problems.push(`${name}: forms plotted [${pageForms}] but the API has [${apiForms}]`);
  if (shown.xs.length !== span.slots || shown.rows.length !== span.slots) {
    problems.push(`${name}: ${shown.xs.length} points and ${shown.rows.length} table rows, expected ${span.slots}`);
  }
  for (const x of expected.keys()) if (!shown.xs.includes(x)) problems.push(`${name}: API bucket ${new Date(x * 1000).toISOString()} is not on the chart`);

  // Every slot, every form: API (absent = 0) = plotted = table cell.
  shown.xs.forEach((x, i) => {
    const row = shown.rows[i];
    if (row?.x !== x) problems.push(`${name}: table row ${i} is x=${row?.x}, chart point is x=${x}`);
    for (const form of pageForms) {
      const want = expected.get(x)?.[form] ?? 0;
      const plotted = shown.plotted[form][i] ?? 0;
      const cell = row?.forms[form];
      if (want !== plotted || want !== cell) {
        problems.push(`${name} ${new Date(x * 1000).toISOString()} ${form}: API ${want}, chart ${plotted}, table ${cell}`);
      }
    }
  });
  // Totals per form: the API's own totals (when it gives them per form) = sum of its buckets = page.
  const sum = (values) => values.reduce((a, b) => a + (b ?? 0), 0);
  for (const form of apiForms) {
    const fromBuckets = sum(api.buckets.map((b) => b.forms?.[form]));
    const fromTotals = api.totals?.forms?.[form] ?? fromBuckets;
    const plotted = sum(shown.plotted[form] ?? []);
    if (new Set([fromBuckets, fromTotals, plotted, shown.footer[form]]).size !== 1) {
      problems.push(`${name} total ${form}: API buckets ${fromBuckets}, API totals ${fromTotals}, chart ${plotted}, table ${shown.footer[form]}`);
    }
  }
  if (shown.footerTotal !== api.totals.submissions) {
    problems.push(`${name}: table total ${shown.footerTotal}, API totals.submissions ${api.totals.submissions}`);
  }
  return problems;
}

// ---- the run ---------------------------------------------------------------------------------

const summary = { ok: false, api: config.apiBase, steps: [] };
let current = 'start';

async function step(name, work) {
  current = name;
  const started = Date.now();
  const result = await work();
  summary.steps.push({ step: name, ms: Date.now() - started });
  return result;
}

// Uncaught errors in the page, and anything the Content-Security-Policy blocked, are failures.
function watch(page, problems) {
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) problems.push(`CSP: ${message.text()}`);
  });
}

async function run(browser) {
  const pageProblems = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  watch(page, pageProblems);
  summary.page = page;

  await step('1 sign in through the portal link', async () => {
    await page.goto(config.portalLink);
    await page.waitForURL((url) => url.pathname === '/', { timeout: TIMEOUT_MS }).catch(async () => {
      const error = await page.locator('[data-testid=portal-error]').textContent().catch(() => '');
      throw new StepFailure(`the portal did not open the dashboard (at ${page.url()}): ${error || 'no error shown'}`);
    });
    await page.waitForSelector('[data-testid=dashboard-ready]', { state: 'attached' }).catch(() => {
      throw new StepFailure('the dashboard never marked itself ready ([data-testid=dashboard-ready])');
    });
    check(!(await page.isVisible('[data-testid=signed-out]')), 'the dashboard says it is signed out');
    const panelErrors = await page.locator('[data-testid=panel-error]').allTextContents();
    check(panelErrors.length === 0, `panels failed to load: ${panelErrors.join(' | ')}`);
    summary.tenant = (await page.textContent('[data-testid=tenant]')).trim();
    check(summary.tenant && summary.tenant !== '…', 'the tenant name is not shown');

    const cookie = (await context.cookies(config.apiBase)).find((c) => c.name === 'fb_session');
    check(cookie, 'no fb_session cookie after signing in');
    check(cookie.httpOnly, 'the fb_session cookie is not HttpOnly');
    check(cookie.sameSite === 'Strict', `the fb_session cookie is SameSite=${cookie.sameSite}, not Strict`);
    check(!(await page.evaluate(() => document.cookie)).includes('fb_session'), 'page script can read fb_session');

    await page.waitForSelector('[data-testid=live-badge][data-state=on]').catch(() => {
      throw new StepFailure('the live badge never showed a connected /v1/metrics/live stream');
    });
  });

  await step('2 the portal link works only once', async () => {
    const fresh = await browser.newContext();
    try {
      const again = await fresh.newPage();
      watch(again, pageProblems);
      await again.goto(config.portalLink);
      const error = again.locator('[data-testid=portal-error]');
      await error.waitFor({ state: 'visible', timeout: TIMEOUT_MS }).catch(() => {
        throw new StepFailure(`a second use of the portal link showed no error (at ${again.url()})`);
      });
      summary.second_use_error = (await error.textContent()).trim();
      check(summary.second_use_error.length > 0, 'the portal error is empty');
      const url = new URL(again.url());
      check(url.pathname === '/portal', `a second use of the portal link ended at ${url.pathname}`);
      check(url.hash === '', 'the portal page left the token in the address bar');
      const cookies = await fresh.cookies(config.apiBase);
      check(!cookies.some((c) => c.name === 'fb_session'), 'a second use of the portal link got a session cookie');
    } finally {
      await fresh.close();
    }
  });

  await step('3 charts hold exactly what the API reports', async () => {
    // A busy pipeline can move a number between the page's load and our read; three fresh
    // loads that all disagree are a real disagreement.
    let problems = [];
    for (let tries = 1; tries <= 3; tries += 1) {
      problems = [...await compareChart(page, 'hourly'), ...await compareChart(page, 'daily')];
      if (problems.length === 0) break;
      if (tries < 3) {
        await page.reload();
        await page.waitForSelector('[data-testid=dashboard-ready]', { state: 'attached' });
      }
    }
    check(problems.length === 0, `the charts disagree with the API:\n  ${problems.slice(0, 20).join('\n  ')}`);
    summary.charts = await page.evaluate(() => Object.fromEntries(Object.entries(window.fbCharts).map(([name, chart]) => [
      name, Object.fromEntries(chart.series.slice(1).map((s, i) => [s.label, chart.data[i + 1].reduce((a, b) => a + (b ?? 0), 0)])),
    ])));
  });

  const replayPath = `/v1/submissions/${encodeURIComponent(config.replaySubmission)}/deliveries/${encodeURIComponent(config.replayDestination)}/replay`;

  await step('4 replay a failed delivery from the page', async () => {
    const findDelivery = (body) => body.deliveries.find((d) => d.destination_id === config.replayDestination);
    const before = findDelivery(await apiGet(`/v1/submissions/${encodeURIComponent(config.replaySubmission)}`));
    check(before, `the API shows no delivery of ${config.replaySubmission} to ${config.replayDestination}`);
    check(before.status === 'failed', `that delivery is ${before.status}, not failed: the test needs a failed one`);

    const row = page.locator(`[data-testid=failed-delivery-row][data-submission-id="${config.replaySubmission}"][data-destination-id="${config.replayDestination}"]`);
    check(await row.count() === 1, `the Failing deliveries panel has ${await row.count()} rows for that delivery, expected 1`);
    const [request] = await Promise.all([
      page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === replayPath),
      row.locator('[data-testid=replay]').click(),
    ]);
    check(request.headers()['x-csrf-token'], 'the page sent the replay without an X-CSRF-Token header');
    const response = await request.response();
    check(response.status() === 202, `the replay answered ${response.status()}: ${await response.text()}`);
    await row.locator('[data-testid=replay-status]', { hasText: /replay queued/i }).waitFor().catch(async () => {
      throw new StepFailure(`the row shows "${await row.locator('[data-testid=replay-status]').textContent()}", not "replay queued"`);
    });

    const deadline = Date.now() + 30_000;
    let after = before;
    while (Date.now() < deadline) {
      after = findDelivery(await apiGet(`/v1/submissions/${encodeURIComponent(config.replaySubmission)}`));
      if (after.status !== 'failed' || after.attempts.length > before.attempts.length || after.attempts.some((a) => a.trigger === 'replay')) break;
      await sleep(1000);
    }
    const replayed = after.status !== 'failed' || after.attempts.length > before.attempts.length || after.attempts.some((a) => a.trigger === 'replay');
    check(replayed, `30 s after the replay the delivery is still failed with ${after.attempts.length} attempts and no replay attempt`);
    summary.replay = { submission: config.replaySubmission, destination: config.replayDestination, status: after.status, attempts: after.attempts.length };
  });

  await step('5 a state change without the CSRF header is refused', async () => {
    const answers = await page.evaluate(async (path) => {
      const send = async (headers) => {
        const response = await fetch(path, { method: 'POST', credentials: 'same-origin', headers });
        return { status: response.status, body: await response.json().catch(() => null) };
      };
      return { missing: await send({}), wrong: await send({ 'X-CSRF-Token': 'not-the-token' }) };
    }, replayPath);
    for (const [kind, answer] of Object.entries(answers)) {
      check(answer.status === 403 && answer.body?.error?.code === 'csrf_failed',
        `a replay with a ${kind} X-CSRF-Token answered ${answer.status} ${JSON.stringify(answer.body)}, expected 403 csrf_failed`);
    }
  });

  await step('6 submission history and screenshot', async () => {
    const first = page.locator('[data-testid=submission-row]').first();
    check(await first.count() === 1, 'the Latest submissions panel is empty');
    const id = await first.getAttribute('data-submission-id');
    await first.locator('[data-testid=open-submission]').click();
    await page.waitForSelector(`[data-testid=submission-detail][data-submission-id="${id}"]`).catch(() => {
      throw new StepFailure(`clicking submission ${id} did not show its delivery history`);
    });
    check(pageProblems.length === 0, `the page reported problems:\n  ${pageProblems.join('\n  ')}`);
    await page.screenshot({ path: config.screenshot, fullPage: true });
    summary.screenshot = config.screenshot;
  });
}

const started = Date.now();
const watchdog = setTimeout(() => {
  console.error(`dashboard.mjs: gave up after ${WHOLE_RUN_MS / 1000} s in step "${current}"`);
  process.exit(1);
}, WHOLE_RUN_MS);

const browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: CHROMIUM_ARGS });
let exitCode = 0;
try {
  await run(browser);
  summary.ok = true;
} catch (error) {
  exitCode = 1;
  summary.failed_step = current;
  summary.error = error instanceof StepFailure ? error.message : String(error.stack || error);
  console.error(`dashboard.mjs: step "${current}" failed: ${summary.error}`);
  const failureShot = config.screenshot.replace(/(\.png)?$/i, '-failure.png');
  await summary.page?.screenshot({ path: failureShot, fullPage: true }).then(() => { summary.screenshot = failureShot; }, () => {});
} finally {
  delete summary.page;
  await browser.close();
  clearTimeout(watchdog);
}
summary.ms = Date.now() - started;
console.log(JSON.stringify(summary));
process.exit(exitCode);
