// Drives the registry's web page in headless Chromium (the system's, through playwright-core)
// against real a8registry processes that the Rust test `ui::the_page_follows_the_registry_live`
// started on 127.0.0.1. It registers, changes and removes instances through the public API and
// checks what a person would see, live, without reloading.
//
// Environment (set by the Rust test):
//   A8_UI_OPEN      base URL of a registry without tenants, with TTLs from 1 s and a file
//                   catalog listing one instance of `legacy-db` (status `down`)
//   A8_UI_TRUSTED   base URL of a registry in trusted mode
//   A8_UI_JWT       base URL of a registry in jwt mode, A8_UI_JWT_SECRET its secret
//   A8_UI_NODE_A, A8_UI_NODE_B  base URLs of the two nodes of a replicating cluster
//   A8_UI_SCREENSHOTS  directory for ui.png (desktop) and ui-phone.png (360 px)
//   A8_UI_PROFILE   a fresh, empty directory for Chromium's profile
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Control lines: the script prints `control: stop` and `control: start` and waits for the test to
// answer `stopped` / `started` on stdin, to take the open registry away and bring it back.
//
// Output: one `ok`/`not ok` line per check and `ui: N passed, N failed`; exit status 1 on failure.

import { chromium } from 'playwright-core';
import { createHmac } from 'node:crypto';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const OPEN = env('A8_UI_OPEN');
const TRUSTED = env('A8_UI_TRUSTED');
const JWT = env('A8_UI_JWT');
const JWT_SECRET = env('A8_UI_JWT_SECRET');
const NODE_A = env('A8_UI_NODE_A');
const NODE_B = env('A8_UI_NODE_B');
const SHOTS = env('A8_UI_SCREENSHOTS');
const PROFILE = env('A8_UI_PROFILE');
// Changes must show within this (the contract's 2 s).
const LIVE_MS = 2000;
// Functional bounds for everything that is not a live update.
const LOAD_MS = 10000;
const RECOVER_MS = 45000;

let passed = 0;
let failed = 0;
function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    console.log(`ok - ${name}`);
  } else {
    failed += 1;
    console.log(`not ok - ${name}${detail === undefined ? '' : ': ' + detail}`);
  }
}
async function attempt(name, body) {
  try {
    await body();
    check(name, true);
  } catch (error) {
    check(name, false, String(error && error.message ? error.message.split('\n')[0] : error));
  }
}

// ---- the test's control channel ------------------------------------------------------------
const stdin = createInterface({ input: process.stdin });
const replies = [];
const waiters = [];
stdin.on('line', (line) => {
  const waiter = waiters.shift();
  if (waiter) waiter(line.trim());
  else replies.push(line.trim());
});
// Without the test at the other end (it stopped), nothing more can be asked: fail what waits.
stdin.on('close', () => {
  while (waiters.length) waiters.shift()('closed');
});
// A bound on the whole script, should anything hang: exit, which also ends the browser.
const WHOLE_SCRIPT_MS = 200000;
setTimeout(() => {
  console.log(`not ok - the script finished within ${WHOLE_SCRIPT_MS} ms`);
  process.exit(1);
}, WHOLE_SCRIPT_MS).unref();
function control(what, expected) {
  console.log(`control: ${what}`);
  return new Promise((resolve, reject) => {
    const done = (line) => (line === expected ? resolve() : reject(new Error(`control answered ${line}`)));
    if (replies.length) done(replies.shift());
    else waiters.push(done);
  });
}

// ---- the API, as a client would use it --------------------------------------------------------
async function call(base, method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}
async function register(base, instance, token) {
  const answer = await call(base, 'POST', '/api/v1/instances', { ttl: 60, ...instance }, token);
  return answer.id;
}
const endpoint = (value) => ({ type: 'http', value });

function jwt(claims, secret) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  const signature = createHmac('sha256', secret).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

// ---- the browser --------------------------------------------------------------------------
const browser = await chromium.launchPersistentContext(PROFILE, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1280, height: 760 },
});
const context = browser;

// Every request the browser makes, and every problem it reports, with the phase it happened in.
let phase = 'start';
const requests = [];
const problems = [];
context.on('request', (request) => requests.push({ url: request.url(), phase, headers: request.headers() }));
// Anything not on 127.0.0.1 is refused before it leaves, and recorded.
await context.route('**/*', (route) => {
  const url = new URL(route.request().url());
  if (url.hostname === '127.0.0.1') return route.continue();
  return route.abort('blockedbyclient');
});
function watchPage(page) {
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      problems.push({ phase, kind: 'console ' + message.type(), text: message.text() });
    }
  });
  page.on('pageerror', (error) => problems.push({ phase, kind: 'exception', text: String(error) }));
  return page;
}
async function newPage() {
  const page = watchPage(await context.newPage());
  await page.addInitScript(() => {
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI);
    });
  });
  return page;
}

const rowOf = (id) => `#instance-rows tr[data-id="${id}"]`;
const serviceButton = (name) => `#services button[data-service="${name}"]`;
async function within(page, ms, predicate, arg) {
  await page.waitForFunction(predicate, arg, { timeout: ms, polling: 50 });
}
// The page, and every part of it, fits the window's width.
async function noSidewaysScrolling(page) {
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (widths[0] > widths[1]) throw new Error(`content ${widths[0]} px in a ${widths[1]} px window`);
  const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
    .filter((e) => !e.classList.contains('visually-hidden'))
    .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    .map((e) => e.className || e.tagName));
  if (wide.length) throw new Error(`scrolls sideways inside: ${wide.join()}`);
}
const text = (page, selector) => page.locator(selector).innerText();

try {
  // ---- an open registry: what is registered appears ------------------------------------------
  phase = 'open';
  const reviews1 = await register(OPEN, { service_name: 'reviews', endpoint: endpoint('10.0.0.5:9080'), tags: ['v1'] });
  const reviews2 = await register(OPEN, {
    service_name: 'reviews', endpoint: endpoint('10.0.0.6:9080'), tags: ['v2', 'canary'], status: 'STARTING',
  });
  const ratings = await register(OPEN, {
    service_name: 'ratings', endpoint: { type: 'tcp', value: '10.0.0.7:7000' },
    metadata: { zone: 'eu-1', weight: 3 }, ttl: 45,
  });
  await register(OPEN, { service_name: 'details', endpoint: endpoint('10.0.0.8:80'), status: 'OUT_OF_SERVICE' });

  const page = await newPage();
  const answer = await page.goto(`${OPEN}/ui`);
  check('/ui leads to the page at /ui/', new URL(page.url()).pathname === '/ui/' && answer.status() === 200,
    `${page.url()} ${answer.status()}`);
  await attempt('the services appear, sorted by name', async () => {
    await within(page, LOAD_MS, () => document.querySelectorAll('#services button').length === 4);
    const names = await page.$$eval('#services button', (b) => b.map((x) => x.dataset.service));
    if (names.join() !== 'details,legacy-db,ratings,reviews') throw new Error(names.join());
  });
  await attempt('each service counts its instances by status', async () => {
    const counts = await text(page, serviceButton('reviews'));
    if (!/UP 1/.test(counts) || !/STARTING 1/.test(counts)) throw new Error(counts);
    const details = await text(page, serviceButton('details'));
    if (!/OUT_OF_SERVICE 1/.test(details)) throw new Error(details);
    const legacy = await text(page, serviceButton('legacy-db'));
    if (!/other 1/.test(legacy)) throw new Error(legacy);
  });
  await attempt('the header shows version, uptime and a healthy store', async () => {
    await within(page, LOAD_MS, () => /\d/.test(document.getElementById('version').textContent)
      && /\ds/.test(document.getElementById('uptime').textContent)
      && document.querySelector('#health li[data-component="store"].ok') !== null
      && document.querySelector('#health li[data-component="catalogs"].ok') !== null
      && document.querySelector('#health li[data-component="catalog files"].ok') !== null);
  });

  // Keyboard only: `/` to the filter, Tab to the services, Enter to choose one.
  await attempt('the keyboard reaches the filter and chooses a service', async () => {
    await page.locator('body').click({ position: { x: 5, y: 5 } });
    await page.keyboard.press('/');
    const focused = await page.evaluate(() => document.activeElement.id);
    if (focused !== 'filter') throw new Error(`focus on ${focused}`);
    for (let i = 0; i < 4; i += 1) await page.keyboard.press('Tab');
    const name = await page.evaluate(() => document.activeElement.dataset.service);
    if (name !== 'reviews') throw new Error(`focus on ${name}`);
    await page.keyboard.press('Enter');
    await within(page, LOAD_MS, () => document.querySelector('#services button[data-service="reviews"]')
      .getAttribute('aria-pressed') === 'true' && document.querySelectorAll('#instance-rows tr').length === 2);
  });
  await attempt('the instance table shows every column', async () => {
    const headers = await page.$$eval('#instances th', (h) => h.map((x) => x.textContent));
    const wanted = 'ID,Endpoint,Status,Tags,Metadata,TTL,Last heartbeat,Source';
    if (headers.join() !== wanted) throw new Error(headers.join());
    const row = await page.$$eval(`${rowOf(reviews2)} td`, (cells) => cells.map((c) => c.innerText.trim()));
    const expected = [reviews2, /http\s+10\.0\.0\.6:9080/, 'STARTING', /v2[\s\S]*canary/, '—', '60 s', /^\d+s ago$/, 'registered'];
    expected.forEach((want, i) => {
      const ok = want instanceof RegExp ? want.test(row[i]) : row[i] === want;
      if (!ok) throw new Error(`column ${i}: ${JSON.stringify(row[i])}`);
    });
  });
  await attempt('a catalog instance is marked as coming from a file', async () => {
    await page.click(serviceButton('legacy-db'));
    await within(page, LOAD_MS, () => document.querySelectorAll('#instance-rows tr').length === 1);
    const row = await page.$$eval('#instance-rows td', (cells) => cells.map((c) => c.innerText.trim()));
    if (row[2] !== 'down' || row[5] !== '—' || row[6] !== '—' || row[7] !== 'file') throw new Error(row.join(' | '));
  });
  await attempt('an instance registered through the Eureka API is marked Eureka', async () => {
    const response = await fetch(`${OPEN}/eureka/v2/apps/WEBSHOP`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ instance: {
        instanceId: 'web-1', hostName: 'web-1.local', app: 'WEBSHOP', ipAddr: '10.0.0.20', status: 'UP',
        port: { $: 8080, '@enabled': 'true' }, vipAddress: 'webshop',
        dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
      } }),
    });
    if (response.status !== 204) throw new Error(`Eureka registration: ${response.status}`);
    await within(page, LIVE_MS, () => document.querySelector('#services button[data-service="WEBSHOP"]') !== null);
    await page.click(serviceButton('WEBSHOP'));
    await within(page, LOAD_MS, () => document.querySelectorAll('#instance-rows tr').length === 1);
    const row = await page.$$eval('#instance-rows td', (cells) => cells.map((c) => c.innerText.trim()));
    if (row[0] !== 'WEBSHOP:web-1' || row[7] !== 'Eureka') throw new Error(row.join(' | '));
    await fetch(`${OPEN}/eureka/v2/apps/WEBSHOP/web-1`, { method: 'DELETE' });
    await within(page, LIVE_MS, () => document.querySelector('#services button[data-service="WEBSHOP"]') === null);
  });
  await attempt('metadata is compact and expands', async () => {
    await page.click(serviceButton('ratings'));
    await within(page, LOAD_MS, (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, ratings);
    const summary = page.locator(`${rowOf(ratings)} summary`);
    const compact = await summary.innerText();
    if (!compact.includes('zone=eu-1') || !compact.includes('weight=3')) throw new Error(compact);
    await summary.focus();
    await page.keyboard.press('Enter');
    const full = await page.locator(`${rowOf(ratings)} details pre`).innerText();
    if (JSON.parse(full).weight !== 3) throw new Error(full);
    if (!(await page.locator(`${rowOf(ratings)} details pre`).isVisible())) throw new Error('not shown');
  });
  await attempt('the filter matches names and tags', async () => {
    await page.fill('#filter', 'canary');
    let names = await page.$$eval('#services button', (b) => b.map((x) => x.dataset.service));
    if (names.join() !== 'reviews') throw new Error(`canary: ${names}`);
    await page.fill('#filter', 'RAT');
    names = await page.$$eval('#services button', (b) => b.map((x) => x.dataset.service));
    if (names.join() !== 'ratings') throw new Error(`RAT: ${names}`);
    await page.fill('#filter', 'nothing-like-this');
    if (!(await page.locator('#services-empty').isVisible())) throw new Error('no message for no match');
    await page.fill('#filter', '');
  });

  // ---- live: changes show within 2 s, without a reload -------------------------------------
  await page.click(serviceButton('reviews'));
  await within(page, LOAD_MS, () => document.querySelectorAll('#instance-rows tr').length === 2);
  await page.evaluate(() => { window.notReloaded = true; });
  await attempt('a registration shows within 2 s', async () => {
    const id = await register(OPEN, { service_name: 'reviews', endpoint: endpoint('10.0.0.9:9080'), tags: ['v3'] });
    await within(page, LIVE_MS, (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, id);
    const counts = await text(page, serviceButton('reviews'));
    if (!/UP 2/.test(counts)) throw new Error(counts);
  });
  await attempt('a change of status and tags shows within 2 s', async () => {
    await register(OPEN, {
      service_name: 'reviews', endpoint: endpoint('10.0.0.6:9080'), tags: ['v2', 'stable'],
      status: 'OUT_OF_SERVICE', metadata: { version: '2.1.0', zone: 'eu-west-1' },
    });
    await within(page, LIVE_MS, (id) => {
      const row = document.querySelector(`#instance-rows tr[data-id="${id}"]`);
      return row && row.dataset.status === 'OUT_OF_SERVICE' && row.innerText.includes('stable');
    }, reviews2);
    const counts = await text(page, serviceButton('reviews'));
    if (!/UP 2/.test(counts) || !/OUT_OF_SERVICE 1/.test(counts)) throw new Error(counts);
  });
  await attempt('a deregistration shows within 2 s', async () => {
    await call(OPEN, 'DELETE', `/api/v1/instances/${reviews1}`);
    await within(page, LIVE_MS, (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) === null, reviews1);
  });
  await attempt('a new service shows within 2 s', async () => {
    await register(OPEN, { service_name: 'productpage', endpoint: endpoint('10.0.0.10:9080'), status: 'STARTING' });
    await within(page, LIVE_MS, () => document.querySelector('#services button[data-service="productpage"]') !== null);
  });
  await attempt('a service whose last instance goes leaves the list within 2 s', async () => {
    const id = await register(OPEN, { service_name: 'zz-short-lived', endpoint: endpoint('10.0.0.11:1') });
    await within(page, LIVE_MS, () => document.querySelector('#services button[data-service="zz-short-lived"]') !== null);
    await call(OPEN, 'DELETE', `/api/v1/instances/${id}`);
    await within(page, LIVE_MS, () => document.querySelector('#services button[data-service="zz-short-lived"]') === null);
  });
  await attempt('an expiry shows within 2 s', async () => {
    const registered = Date.now();
    const id = await register(OPEN, { service_name: 'reviews', endpoint: endpoint('10.0.0.13:9080'), ttl: 1 });
    await within(page, LIVE_MS, (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, id);
    // Invisible 1 s after its registration, removed (the change) by the reaper within a second.
    const left = registered + 1000 + 1000 + LIVE_MS - Date.now();
    await within(page, Math.max(left, 0), (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) === null, id);
  });
  check('the page was not reloaded', await page.evaluate(() => window.notReloaded === true));
  const waiting = requests.filter((r) => r.phase === 'open' && /[?&]index=\d+/.test(r.url));
  check('updates come through blocking queries', waiting.length > 0, `${waiting.length} requests with index`);

  await page.setViewportSize({ width: 1280, height: 720 });
  await attempt('1280 and 900 px wide: the table fits without scrolling', async () => {
    await noSidewaysScrolling(page);
    await page.setViewportSize({ width: 900, height: 720 });
    await noSidewaysScrolling(page);
    await page.setViewportSize({ width: 1280, height: 720 });
  });
  await page.mouse.move(0, 0);
  // As tall as the content, for the README.
  await page.setViewportSize({ width: 1280, height: 400 });
  await page.screenshot({ path: join(SHOTS, 'ui.png'), fullPage: true });

  // ---- a phone-sized window ----------------------------------------------------------------
  await page.setViewportSize({ width: 360, height: 760 });
  await attempt('360 px wide: no horizontal scrolling, every column readable', async () => {
    await page.waitForTimeout(200);
    await noSidewaysScrolling(page);
    const box = await page.locator(`${rowOf(reviews2)} td[data-label="Source"]`).boundingBox();
    if (!box || box.x < 0 || box.x + box.width > 360) throw new Error(JSON.stringify(box));
    const label = await page.evaluate((id) => getComputedStyle(
      document.querySelector(`#instance-rows tr[data-id="${id}"] td[data-label="Status"]`), '::before').content, reviews2);
    if (!label.includes('Status')) throw new Error(`cell label ${label}`);
  });
  await page.screenshot({ path: join(SHOTS, 'ui-phone.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 760 });

  // ---- the registry goes away and comes back ------------------------------------------------
  phase = 'outage';
  await control('stop', 'stopped');
  await attempt('an unreachable registry is said so, on a phone too', async () => {
    await within(page, LOAD_MS, () => {
      const banner = document.getElementById('banner');
      return !banner.hidden && /Cannot reach the registry/.test(banner.textContent);
    });
    await page.setViewportSize({ width: 360, height: 760 });
    await noSidewaysScrolling(page);
    await page.setViewportSize({ width: 1280, height: 760 });
  });
  await control('start', 'started');
  phase = 'recovered';
  await attempt('the page retries and follows the registry that came back', async () => {
    const id = await register(OPEN, { service_name: 'after-restart', endpoint: endpoint('10.0.0.12:80') });
    await within(page, RECOVER_MS, () => document.getElementById('banner').hidden
      && document.querySelector('#services button[data-service="after-restart"]') !== null);
    if (!id) throw new Error('no id');
  });
  check('no CSP violation on the open page', (await page.evaluate(() => window.cspViolations.length)) === 0,
    JSON.stringify(await page.evaluate(() => window.cspViolations)));
  await page.close();

  // ---- trusted mode: the token typed into the Token field ----------------------------------
  phase = 'trusted';
  const mine = await register(TRUSTED, { service_name: 'billing', endpoint: endpoint('10.1.0.1:80') }, 'tenant-a');
  await register(TRUSTED, { service_name: 'secret-of-b', endpoint: endpoint('10.2.0.1:80') }, 'tenant-b');
  const tenant = await newPage();
  await tenant.goto(`${TRUSTED}/ui/`);
  const tokenField = tenant.getByLabel('Token', { exact: true });
  await attempt('without a token the page asks for one, with a message', async () => {
    await tokenField.waitFor({ state: 'visible', timeout: LOAD_MS });
    const message = await text(tenant, '#token-message');
    if (!/Missing request Authorization header/.test(message)) throw new Error(message);
    if (await tenant.locator('#services button').count() !== 0) throw new Error('services shown without a token');
    await tenant.setViewportSize({ width: 360, height: 760 });
    await noSidewaysScrolling(tenant);
    await tenant.setViewportSize({ width: 1280, height: 760 });
  });
  await attempt('a token typed into the Token field shows its namespace only', async () => {
    await tokenField.click();
    await tenant.keyboard.type('tenant-a');
    await tenant.keyboard.press('Enter');
    await within(tenant, LOAD_MS, (id) => document.querySelector('#services button[data-service="billing"]') !== null
      && document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, mine);
    if (await tenant.locator(serviceButton('secret-of-b')).count() !== 0) throw new Error('another tenant shown');
    const sent = requests.filter((r) => r.phase === 'trusted' && r.url.includes('/api/v1/'))
      .map((r) => r.headers.authorization).filter(Boolean);
    if (!sent.includes('Bearer tenant-a')) throw new Error(`sent ${sent}`);
  });
  await attempt('the tenant page is live too', async () => {
    const id = await register(TRUSTED, { service_name: 'billing', endpoint: endpoint('10.1.0.2:80') }, 'tenant-a');
    await within(tenant, LIVE_MS, (id) => document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, id);
  });
  await attempt('the token stays in the tab\'s session storage only', async () => {
    const stored = await tenant.evaluate(() => [sessionStorage.getItem('a8registry.token'), localStorage.length,
      document.cookie]);
    if (stored[0] !== 'tenant-a' || stored[1] !== 0 || stored[2] !== '') throw new Error(JSON.stringify(stored));
    await tenant.reload();
    await within(tenant, LOAD_MS, () => document.querySelector('#services button[data-service="billing"]') !== null);
    const other = await newPage();
    await other.goto(`${TRUSTED}/ui/`);
    await other.getByLabel('Token', { exact: true }).waitFor({ state: 'visible', timeout: LOAD_MS });
    const elsewhere = await other.evaluate(() => sessionStorage.getItem('a8registry.token'));
    await other.close();
    if (elsewhere !== null) throw new Error('another tab has the token');
  });
  await attempt('Forget drops the token and the page asks again', async () => {
    await tenant.click('#forget-token');
    await within(tenant, LOAD_MS, () => sessionStorage.getItem('a8registry.token') === null
      && /A token is needed/.test(document.getElementById('token-message').textContent)
      && document.querySelector('#services button') === null);
  });
  await tenant.close();

  // ---- jwt mode: a wrong token gives a message, a right one the namespace -------------------
  phase = 'jwt';
  await register(JWT, { service_name: 'inventory', endpoint: endpoint('10.3.0.1:80') },
    jwt({ namespace: 'shop' }, JWT_SECRET));
  const signed = await newPage();
  await signed.goto(`${JWT}/ui/`);
  const field = signed.getByLabel('Token', { exact: true });
  await attempt('a wrong token shows a message, not a blank page', async () => {
    await field.waitFor({ state: 'visible', timeout: LOAD_MS });
    await field.fill(jwt({ namespace: 'shop' }, 'not-the-secret'));
    await field.press('Enter');
    await within(signed, LOAD_MS, () => /Token refused: Authorization failure, invalid token/
      .test(document.getElementById('token-message').textContent));
    if (!(await signed.locator('#token-message').isVisible())) throw new Error('message hidden');
  });
  await attempt('the right token then shows the namespace', async () => {
    await field.fill(jwt({ namespace: 'shop' }, JWT_SECRET));
    await field.press('Enter');
    await within(signed, LOAD_MS, () => document.querySelector('#services button[data-service="inventory"]') !== null
      && document.getElementById('token-message').textContent === '');
  });
  await signed.close();

  // ---- a cluster: its health in the header, and what a peer replicates, live ----------------
  phase = 'cluster';
  const member = await newPage();
  await member.goto(`${NODE_A}/ui/`);
  await attempt('a cluster node shows the cluster, replication and its peer as healthy', async () => {
    await within(member, LOAD_MS, () => document.querySelector('#health li[data-component="cluster"].ok') !== null
      && document.querySelector('#health li[data-component="replication"].ok') !== null
      && document.querySelector('#health li[data-component^="peer "].ok') !== null);
  });
  await attempt('an instance registered on the other node shows within 2 s', async () => {
    const id = await register(NODE_B, { service_name: 'replicated', endpoint: endpoint('10.4.0.1:80') });
    await within(member, LIVE_MS, (id) => document.querySelector('#services button[data-service="replicated"]') !== null
      && document.querySelector(`#instance-rows tr[data-id="${id}"]`) !== null, id);
  });
  await member.close();
} catch (error) {
  check('the script ran to its end', false, error && error.stack ? error.stack : String(error));
} finally {
  await browser.close().catch(() => {});
}

// ---- what the browser did ------------------------------------------------------------------
const elsewhere = requests.filter((r) => new URL(r.url).hostname !== '127.0.0.1');
check('no request left 127.0.0.1', elsewhere.length === 0, elsewhere.map((r) => r.url).join(' '));
check('the browser never asked for /favicon.ico',
  !requests.some((r) => new URL(r.url).pathname === '/favicon.ico'));
// The browser itself reports answers it sees as failures (a 401 before the token is given, a
// connection refused or cut while the registry is away): expected in those phases, nothing else is.
// The waiting request of the killed registry may end reset or empty rather than refused.
const serverGone = /^Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED)$/;
const expected = {
  outage: serverGone,
  recovered: serverGone,
  trusted: /^Failed to load resource: the server responded with a status of 401 \(Unauthorized\)$/,
  jwt: /^Failed to load resource: the server responded with a status of 401 \(Unauthorized\)$/,
};
const unexpected = problems.filter((p) => !(p.kind === 'console error' && expected[p.phase] && expected[p.phase].test(p.text)));
check('no console error or warning, no exception', unexpected.length === 0,
  unexpected.map((p) => `[${p.phase}] ${p.kind}: ${p.text}`).join(' | '));
console.log(`ui: ${passed} passed, ${failed} failed`);
stdin.close();
process.exit(failed === 0 ? 0 : 1);
