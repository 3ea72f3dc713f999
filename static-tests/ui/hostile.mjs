// Drives the registry's web page in headless Chromium against hostile data: markup and script in
// every field a client can set, answers a registry would never give (garbage, wrong types, a proxy
// that ignores `wait`), thousands of instances, and unbreakable long names on a phone. The page is
// served by a real a8registry that the Rust test `ui::the_page_withstands_hostile_registry_data`
// started; the odd answers are injected by intercepting the page's own API requests.
//
// Environment: A8_UI_OPEN (base URL of an open registry), A8_UI_PROFILE (a fresh directory for
// Chromium's profile), CHROMIUM (the browser, default /usr/bin/chromium).
// Output: one `ok`/`not ok` line per check and `hostile: N passed, N failed`; exit 1 on failure.

import { chromium } from 'playwright-core';

const OPEN = process.env.A8_UI_OPEN;
const PROFILE = process.env.A8_UI_PROFILE;
if (!OPEN || !PROFILE) throw new Error('A8_UI_OPEN and A8_UI_PROFILE must be set');
const LOAD_MS = 10000;

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
setTimeout(() => {
  console.log('not ok - the script finished within 150000 ms');
  process.exit(1);
}, 150000).unref();

async function register(instance) {
  const response = await fetch(`${OPEN}/api/v1/instances`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ttl: 60, ...instance }),
  });
  const text = await response.text();
  if (response.status !== 201) throw new Error(`register: ${response.status} ${text}`);
  return JSON.parse(text).id;
}

const browser = await chromium.launchPersistentContext(PROFILE, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 760 },
});
await browser.route('**/*', (route) => (new URL(route.request().url()).hostname === '127.0.0.1'
  ? route.continue() : route.abort('blockedbyclient')));
const exceptions = [];
async function newPage() {
  const page = await browser.newPage();
  page.on('pageerror', (error) => exceptions.push(String(error)));
  page.on('dialog', (dialog) => { exceptions.push('a dialog opened: ' + dialog.message()); dialog.dismiss(); });
  return page;
}
async function within(page, ms, predicate, arg) {
  await page.waitForFunction(predicate, arg, { timeout: ms, polling: 50 });
}
// Answers the page's watch with `answer(n)` for its n-th request (from 1), counting them.
async function answerWatch(page, answer) {
  const seen = { count: 0 };
  await page.route('**/api/v1/instances?*', (route) => {
    seen.count += 1;
    const { status = 200, body, index } = answer(seen.count);
    const headers = { 'Content-Type': 'application/json; charset=utf-8' };
    if (index !== undefined) headers['X-A8-Index'] = String(index);
    return route.fulfill({ status, headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
  });
  return seen;
}
const instance = (id, service, extra) => ({
  id, service_name: service, endpoint: { type: 'http', value: `10.0.0.1:${id.length}` }, ttl: 30, status: 'UP',
  last_heartbeat: new Date().toISOString(), ...extra,
});

try {
  // ---- markup and script in every field a client sets, through the real registry ------------
  const evil = '<img src=x onerror="window.pwned=1">';
  await register({
    service_name: evil, endpoint: { type: 'http', value: 'javascript:window.pwned=1//' },
    tags: ['<script>window.pwned=1</script>', '" onmouseover="window.pwned=1'],
    metadata: { '<b onclick=window.pwned=1>': '<iframe src=javascript:window.pwned=1>', href: 'javascript:x' },
  });
  const eureka = await fetch(`${OPEN}/eureka/v2/apps/EVIL`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ instance: {
      instanceId: '<svg onload=window.pwned=1>', hostName: '<svg/onload=window.pwned=1>', app: 'EVIL',
      ipAddr: '10.0.0.2', status: '<b>UP</b>', port: { $: 80, '@enabled': 'true' }, vipAddress: 'evil',
      metadata: { 'amalgam8.tags': '<u>t</u>' },
      dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
    } }),
  });
  check('a Eureka registration with markup in its fields is taken', eureka.status === 204, String(eureka.status));
  const page = await newPage();
  await page.goto(`${OPEN}/ui/#service=` + encodeURIComponent(evil));
  await attempt('markup in names, tags, metadata, ids, endpoints and Eureka fields is shown as text', async () => {
    await within(page, LOAD_MS, () => document.querySelectorAll('#services button').length === 2
      && document.querySelectorAll('#instance-rows tr').length === 1);
    await page.locator('#instance-rows details summary').click();
    await page.locator('#instance-rows .chip').last().hover();
    const shown = await page.locator('#instance-rows').innerText();
    for (const want of ['<script>window.pwned=1</script>', 'javascript:window.pwned=1//', '<iframe src=']) {
      if (!shown.includes(want)) throw new Error(`${want} not shown as text in ${shown}`);
    }
    await page.click('#services button[data-service="EVIL"]');
    await within(page, LOAD_MS, () => document.getElementById('instance-rows').innerText.includes('<svg onload'));
    await page.waitForTimeout(300);
    const made = await page.evaluate(() => [window.pwned,
      document.querySelectorAll('main img, main svg, main script, main iframe, main b, main u, a[href]').length]);
    if (made[0] !== undefined || made[1] !== 0) throw new Error(`pwned=${made[0]}, ${made[1]} elements made`);
  });
  await page.close();

  // ---- answers a registry never gives ---------------------------------------------------------
  const odd = await newPage();
  const oddSeen = await answerWatch(odd, (n) => (n === 1
    ? {
      index: 3,
      body: { instances: [null, 5, 'x', [], {
        id: { a: 1 }, service_name: ['s'], tags: 'abc', endpoint: 7, status: {}, ttl: '<b>', metadata: { a: null },
        last_heartbeat: {},
      }, { id: 'n1', service_name: 'numbers', tags: [{}, null, 3], endpoint: { type: null, value: 8 } }] },
    }
    : { index: 4 + n, body: { instances: [instance('good-1', 'after-garbage')] } }));
  await odd.goto(`${OPEN}/ui/`);
  await attempt('instances of the wrong shape neither break the page nor stop it following', async () => {
    await within(odd, LOAD_MS, () => document.querySelector('#services button[data-service="after-garbage"]') !== null);
    if (exceptions.length) throw new Error(exceptions.join(' | '));
  });
  await odd.close();

  const garbage = await newPage();
  await answerWatch(garbage, () => ({ body: '<html>proxy error</html>' }));
  await garbage.goto(`${OPEN}/ui/`);
  await attempt('a 200 that is not JSON is told apart from an unreachable registry', async () => {
    await within(garbage, LOAD_MS, () => !document.getElementById('banner').hidden);
    const banner = await garbage.locator('#banner-text').innerText();
    if (/Cannot reach/.test(banner) || !/200/.test(banner)) throw new Error(banner);
  });
  await garbage.close();

  // A proxy that ignores `wait` answers at once, with the same index or a new one each time; and a
  // registry failing fast. The page must not turn either into a tight loop of requests.
  for (const [what, answer, most] of [
    ['the same index at once', () => ({ index: 9, body: { instances: [instance('a1', 'fast')] } }), 12],
    ['a new index at once', (n) => ({ index: 9 + n, body: { instances: [instance('a1', 'fast')] } }), 12],
    ['a fast 500', () => ({ status: 500, body: { Error: 'Failed to enumerate instances' } }), 5],
  ]) {
    const fast = await newPage();
    const seen = await answerWatch(fast, answer);
    await fast.goto(`${OPEN}/ui/`);
    await fast.waitForTimeout(4000);
    await fast.close();
    check(`a registry answering ${what} gets a bounded request rate`, seen.count <= most,
      `${seen.count} requests in 4 s`);
  }
  check('the odd answers were asked for', oddSeen.count >= 2, String(oddSeen.count));

  // ---- the header's health report: odd shapes, and a registry that never answers it ----------
  const health = await newPage();
  await health.route('**/uptime', (route) => route.fulfill({
    status: 200,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      UPTIME: { healthy: true, properties: { build_version: { v: 1 }, uptime: 7 } },
      REPLICATION: { healthy: true, properties: { peers: [null, 3, { address: '<b>p</b>', connected: true }] } },
      CATALOGS: { healthy: false, properties: { a: null, b: { state: 'error', last_error: { message: { m: 1 } } } } },
      STORE: 'x',
    }),
  }));
  await health.goto(`${OPEN}/ui/`);
  await attempt('a health report of the wrong shape is shown without an exception', async () => {
    await within(health, LOAD_MS, () => document.querySelector('#health li[data-component="peer <b>p</b>"]') !== null);
    if (exceptions.length) throw new Error(exceptions.join(' | '));
  });
  await health.close();

  // The health report is asked for every 10 s (the page's clock is run forward here): a registry
  // that never answers must not collect a pile of waiting requests, which would take the
  // browser's few connections to the host and starve the watch.
  const stuck = await newPage();
  const pending = { now: 0, most: 0 };
  await stuck.route('**/uptime', () => {
    pending.now += 1;
    pending.most = Math.max(pending.most, pending.now);
  });
  stuck.on('requestfailed', (request) => {
    if (new URL(request.url()).pathname === '/uptime') pending.now -= 1;
  });
  await stuck.clock.install();
  await stuck.goto(`${OPEN}/ui/`);
  await stuck.clock.runFor(45000);
  await stuck.waitForTimeout(300);
  check('a health report that never comes leaves one request waiting at most', pending.most === 1,
    `${pending.most} waiting at once`);
  await stuck.close();

  // ---- thousands of instances, big metadata, long unbreakable names -------------------------
  const big = await newPage();
  const metadata = {};
  for (let i = 0; i < 40; i += 1) metadata['key' + i] = 'v'.repeat(20);
  const many = [];
  for (let i = 0; i < 2000; i += 1) {
    many.push(instance(`big-${String(i).padStart(4, '0')}`, 'big', { metadata, tags: ['t' + i] }));
  }
  for (let i = 0; i < 1000; i += 1) many.push(instance(`svc-${i}`, `service-${String(i).padStart(4, '0')}`));
  const long = 'x'.repeat(64);
  many.push(instance('y'.repeat(120), long, { endpoint: { type: 'http', value: 'z'.repeat(128) }, tags: ['w'.repeat(200)],
    metadata: { ['k'.repeat(100)]: 'v'.repeat(500) } }));
  await answerWatch(big, (n) => ({ index: 100 + n, body: { instances: many } }));
  await big.goto(`${OPEN}/ui/#service=big`);
  await attempt('2,000 instances of one service show and the filter stays responsive', async () => {
    await within(big, 20000, () => document.querySelectorAll('#instance-rows tr').length === 2000);
    const started = Date.now();
    await big.locator('#filter').pressSequentially('service-09', { delay: 20 });
    await within(big, 10000, () => document.querySelectorAll('#services button').length === 100);
    const took = Date.now() - started;
    if (took > 10000) throw new Error(`typing took ${took} ms`);
    console.log(`# typing 10 characters with 3,001 instances listed took ${took} ms`);
  });
  // On a desktop the wide table may scroll inside its panel; a phone's cards never do.
  await attempt('360 px wide: long names, ids, endpoints, tags and metadata do not scroll sideways', async () => {
    await big.locator('#filter').fill('');
    await big.click(`#services button[data-service="${long}"]`);
    await within(big, LOAD_MS, () => document.querySelectorAll('#instance-rows tr').length === 1);
    await big.locator('#instance-rows details summary').click();
    for (const width of [360, 1280]) {
      await big.setViewportSize({ width, height: 760 });
      await big.waitForTimeout(200);
      const wide = await big.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth,
        ...[...document.querySelectorAll('body *')]
          .filter((e) => !e.classList.contains('visually-hidden'))
          .filter((e) => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
          .map((e) => e.className || e.tagName)]);
      if (wide[0] > wide[1] || (width === 360 && wide.length > 2)) throw new Error(`${width} px: ${wide.join()}`);
    }
  });
  await big.close();
} catch (error) {
  check('the script ran to its end', false, error && error.stack ? error.stack : String(error));
} finally {
  await browser.close().catch(() => {});
}
check('no exception and no dialog in the page', exceptions.length === 0, exceptions.join(' | '));
console.log(`hostile: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
