// The registry's page. Everything it shows comes from the public API, read with the token the
// person gives (kept in this tab's session storage only). One blocking query on
// /api/v1/instances?status=ALL follows every change of the namespace; /uptime and /ready are read
// every few seconds for the header. Text from the registry is only ever set as text, never as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'a8registry.token';
  // A blocking query returns at the latest after this, so heartbeat times stay fresh.
  const WAIT = '10s';
  const HEALTH_EVERY_MS = 10000;
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 30000;
  // Without an index header (a registry without watches) the page polls this often instead.
  const POLL_WITHOUT_INDEX_MS = 2000;
  const ZERO_TIME = '0001-01-01T00:00:00Z';
  const STATUSES = ['UP', 'STARTING', 'OUT_OF_SERVICE'];
  // Columns whose cells never wrap in the wide table: id, status, TTL, heartbeat, source.
  const KEEP_WHOLE = new Set([0, 2, 5, 6, 7]);
  const COLUMNS = ['ID', 'Endpoint', 'Status', 'Tags', 'Metadata', 'TTL', 'Last heartbeat', 'Source'];

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    instances: null,
    filter: '',
    selected: null,
    // Server clock minus browser clock, when they differ by more than the Date header's second.
    clockOffsetMs: 0,
    // Bumped to end the running watch (a new token); each loop checks it.
    generation: 0,
    controller: null,
    wakeRetry: null,
    uptimeMs: null,
    uptimeAt: 0,
  };

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'text') node.textContent = value;
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      state.wakeRetry = () => { clearTimeout(timer); resolve(); };
    });
  }

  function retryDelay(failures) {
    const base = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(failures - 1, 5));
    return Math.round(base * (0.8 + 0.4 * Math.random()));
  }

  function authHeaders() {
    return state.token ? { Authorization: 'Bearer ' + state.token } : {};
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.Error === 'string') return body.Error;
    } catch (_) { /* not JSON: the status says enough */ }
    return 'HTTP ' + response.status;
  }

  function noteServerClock(response) {
    const date = Date.parse(response.headers.get('Date') || '');
    if (Number.isNaN(date)) return;
    const offset = date - Date.now();
    state.clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
  }

  // ---- connection state -------------------------------------------------------------------

  function setLive(on, text) {
    const live = $('live');
    live.className = 'live ' + (on ? 'on' : 'off');
    live.textContent = text;
  }

  function showUnreachable(reason, delayMs) {
    const seconds = Math.max(1, Math.round(delayMs / 1000));
    $('banner-text').textContent =
      'Cannot reach the registry (' + reason + '). Retrying in ' + seconds + ' s.';
    $('banner').hidden = false;
    setLive(false, 'Offline: the registry does not answer.');
  }

  function hideUnreachable() {
    $('banner').hidden = true;
  }

  function askForToken(message) {
    const form = $('token-form');
    form.hidden = false;
    $('token-intro').textContent = state.token
      ? 'The registry refused this token. Give the token of your namespace.'
      : 'This registry keeps tenants apart: give the token of your namespace.';
    $('token-message').textContent = state.token
      ? 'Token refused: ' + message
      : 'A token is needed: ' + message;
    state.instances = null;
    render();
    setLive(false, 'Waiting for a token.');
    if (!$('token').value && document.activeElement === document.body) $('token').focus();
  }

  // ---- the watch ----------------------------------------------------------------------------

  async function watch() {
    const generation = ++state.generation;
    if (state.controller) state.controller.abort();
    let index = 0;
    let failures = 0;
    while (generation === state.generation) {
      const controller = new AbortController();
      state.controller = controller;
      let url = '/api/v1/instances?status=ALL';
      if (index > 0) url += '&index=' + index + '&wait=' + WAIT;
      let response;
      let body;
      try {
        response = await fetch(url, { headers: authHeaders(), cache: 'no-store', signal: controller.signal });
        if (response.ok) body = await response.json();
      } catch (error) {
        if (generation !== state.generation) return;
        failures += 1;
        index = 0;
        const delay = retryDelay(failures);
        showUnreachable(error && error.name === 'TypeError' ? 'no answer' : String(error), delay);
        await sleep(delay);
        continue;
      }
      if (generation !== state.generation) return;
      noteServerClock(response);
      if (response.status === 401) {
        hideUnreachable();
        askForToken(await errorText(response));
        return; // the token form starts a new watch
      }
      if (!response.ok || !body || !Array.isArray(body.instances)) {
        failures += 1;
        index = 0;
        const delay = retryDelay(failures);
        const why = response.ok ? 'an answer the page cannot read' : await errorText(response);
        $('banner-text').textContent = 'The registry answered ' + response.status + ': ' + why +
          '. Retrying in ' + Math.round(delay / 1000) + ' s.';
        $('banner').hidden = false;
        setLive(false, 'Not up to date.');
        await sleep(delay);
        continue;
      }
      failures = 0;
      hideUnreachable();
      if (state.token) {
        $('token-message').textContent = '';
        $('token-intro').textContent = 'Showing the namespace of the token below.';
      }
      state.instances = body.instances;
      render();
      const next = Number(response.headers.get('X-A8-Index'));
      const when = new Date().toLocaleTimeString();
      if (Number.isInteger(next) && next > 0) {
        index = next;
        setLive(true, 'Live, updated ' + when + '.');
      } else {
        index = 0;
        setLive(true, 'Updated ' + when + ' (polling).');
        await sleep(POLL_WITHOUT_INDEX_MS);
      }
    }
  }

  function restartWatch() {
    watch().catch(reportBug);
  }

  function reportBug(error) {
    // A fault of the page itself: say so where the person looks, and keep it in the console.
    $('banner-text').textContent = 'The page failed: ' + (error && error.message ? error.message : error);
    $('banner').hidden = false;
    throw error;
  }

  // ---- header: version, uptime, health ---------------------------------------------------

  // Go's duration text (`1h2m3.5s`, `850ms`) in milliseconds, or null.
  function parseGoDuration(text) {
    const units = { h: 3600e3, m: 60e3, s: 1e3, ms: 1, us: 1e-3, 'µs': 1e-3, ns: 1e-6 };
    const parts = String(text).match(/(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)/g);
    if (!parts) return null;
    let total = 0;
    for (const part of parts) {
      const [, number, unit] = part.match(/(\d+(?:\.\d+)?)(.+)/);
      total += Number(number) * units[unit];
    }
    return total;
  }

  function humanDuration(ms) {
    let seconds = Math.max(0, Math.floor(ms / 1000));
    const days = Math.floor(seconds / 86400);
    seconds -= days * 86400;
    const hours = Math.floor(seconds / 3600);
    seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60);
    seconds -= minutes * 60;
    if (days) return days + 'd ' + hours + 'h ' + minutes + 'm';
    if (hours) return hours + 'h ' + minutes + 'm ' + seconds + 's';
    if (minutes) return minutes + 'm ' + seconds + 's';
    return seconds + 's';
  }

  function healthItem(name, healthy, detail) {
    const mark = healthy === null ? 'unknown' : healthy ? 'ok' : 'bad';
    const words = healthy === null ? 'unknown' : healthy ? 'healthy' : 'unhealthy';
    const item = el('li', { class: mark, title: detail || words, 'data-component': name });
    item.append(el('span', { text: name }), el('span', { class: 'visually-hidden', text: ': ' + words }));
    if (detail && !healthy) item.append(el('span', { text: ': ' + detail }));
    return item;
  }

  function healthItems(report, ready) {
    const items = [];
    if (ready === null) {
      items.push(healthItem('store', null, 'the registry does not answer'));
    } else {
      const waiting = Array.isArray(ready.waiting) ? ready.waiting : [];
      items.push(healthItem('store', !waiting.includes('store'), waiting.includes('store') ? 'not answering' : ''));
    }
    for (const [name, component] of Object.entries(report || {})) {
      if (name === 'UPTIME' || !component || typeof component !== 'object') continue;
      const properties = component.properties || {};
      const message = typeof component.message === 'string' ? component.message : '';
      items.push(healthItem(name.toLowerCase(), component.healthy === true, message));
      if (name === 'REPLICATION' && Array.isArray(properties.peers)) {
        for (const peer of properties.peers) {
          items.push(healthItem('peer ' + peer.address, peer.connected === true, peer.connected ? '' : 'disconnected'));
        }
      }
      if (name === 'CATALOGS') {
        for (const [source, report] of Object.entries(properties)) {
          const ok = report && report.state !== 'error';
          const error = report && report.last_error && report.last_error.message;
          items.push(healthItem('catalog ' + source, ok, ok ? '' : error || 'in error'));
        }
      }
    }
    return items;
  }

  async function readJson(path) {
    const response = await fetch(path, { cache: 'no-store' });
    return { status: response.status, body: await response.json().catch(() => null) };
  }

  async function refreshHealth() {
    let uptime = null;
    let ready = null;
    try {
      [uptime, ready] = await Promise.all([readJson('/uptime'), readJson('/ready')]);
    } catch (_) { /* unreachable: the marks say unknown */ }
    const report = uptime && uptime.body;
    const properties = report && report.UPTIME && report.UPTIME.properties;
    if (properties) {
      $('version').textContent = properties.build_version || '?';
      state.uptimeMs = parseGoDuration(properties.uptime);
      state.uptimeAt = Date.now();
    }
    tickUptime();
    $('health').replaceChildren(...healthItems(report, ready ? ready.body || {} : null));
  }

  function tickUptime() {
    if (state.uptimeMs === null) return;
    $('uptime').textContent = humanDuration(state.uptimeMs + Date.now() - state.uptimeAt);
  }

  // ---- services ----------------------------------------------------------------------------

  function statusKey(status) {
    return STATUSES.includes(status) ? status : 'other';
  }

  function servicesOf(instances) {
    const byName = new Map();
    for (const instance of instances) {
      const name = String(instance.service_name || '');
      let service = byName.get(name);
      if (!service) {
        service = { name, counts: { UP: 0, STARTING: 0, OUT_OF_SERVICE: 0, other: 0 }, tags: new Set(), instances: [] };
        byName.set(name, service);
      }
      service.counts[statusKey(instance.status)] += 1;
      for (const tag of instance.tags || []) service.tags.add(String(tag));
      service.instances.push(instance);
    }
    return [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  function matchesFilter(service, filter) {
    if (!filter) return true;
    if (service.name.toLowerCase().includes(filter)) return true;
    for (const tag of service.tags) if (tag.toLowerCase().includes(filter)) return true;
    return false;
  }

  function serviceButton(service) {
    const counts = el('span', { class: 'counts' });
    for (const key of [...STATUSES, 'other']) {
      const n = service.counts[key];
      if (n === 0) continue;
      const label = key === 'other' ? 'other' : key;
      counts.append(el('span', { class: 'count s-' + key, 'data-status': key, text: label + ' ' + n }));
    }
    return el('li', null, el('button', {
      type: 'button',
      class: 'service',
      'data-service': service.name,
      'aria-pressed': String(service.name === state.selected),
    }, el('span', { class: 'name', text: service.name }), counts));
  }

  function renderServices(services) {
    const filter = state.filter.trim().toLowerCase();
    const shown = services.filter((s) => matchesFilter(s, filter));
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.service : undefined;
    $('services').replaceChildren(...shown.map(serviceButton));
    if (focused !== undefined) {
      const again = [...$('services').querySelectorAll('button')].find((b) => b.dataset.service === focused);
      if (again) again.focus();
    }
    const total = state.instances ? services.length : 0;
    $('service-total').textContent = state.instances ? '(' + total + ')' : '';
    const empty = $('services-empty');
    empty.hidden = shown.length > 0 || !state.instances;
    empty.textContent = services.length === 0
      ? 'Nothing is registered in this namespace yet.'
      : 'No service matches "' + state.filter.trim() + '".';
  }

  // ---- instances ---------------------------------------------------------------------------

  // Where an instance comes from, told by what the public API shows of it. Catalog instances of
  // Kubernetes and files have no heartbeat and no TTL; the file catalog uses Amalgam8 ids (16 hex
  // digits), Kubernetes `<uid>-<port>`. Eureka ids are `<APP>:<instance id>`, whether registered
  // through the Eureka API or mirrored from a Eureka server (the API does not tell those apart).
  function sourceOf(instance) {
    const id = String(instance.id);
    const noHeartbeat = !instance.last_heartbeat || instance.last_heartbeat === ZERO_TIME;
    if (noHeartbeat && !instance.ttl) return /^[0-9a-f]{16}$/.test(id) ? 'file' : 'Kubernetes';
    return id.includes(':') ? 'Eureka' : 'registered';
  }

  function heartbeatMs(text) {
    if (!text || text === ZERO_TIME) return null;
    // Milliseconds are enough; some engines refuse nine fractional digits.
    const ms = Date.parse(String(text).replace(/(\.\d{3})\d+/, '$1'));
    return Number.isNaN(ms) ? null : ms;
  }

  function agoText(ms) {
    const seconds = Math.max(0, Math.round((Date.now() + state.clockOffsetMs - ms) / 1000));
    return humanDuration(seconds * 1000) + ' ago';
  }

  function metadataCell(metadata, openIds, id) {
    if (metadata === undefined || metadata === null) return el('span', { class: 'muted', text: '—' });
    const isObject = typeof metadata === 'object' && !Array.isArray(metadata);
    const keys = isObject ? Object.keys(metadata) : [];
    let summary = isObject
      ? keys.map((k) => k + '=' + (typeof metadata[k] === 'string' ? metadata[k] : JSON.stringify(metadata[k]))).join(', ')
      : JSON.stringify(metadata);
    if (isObject && keys.length === 0) return el('span', { class: 'muted', text: '{}' });
    if (summary.length > 40) summary = summary.slice(0, 39) + '…';
    return el('details', { open: openIds.has(id), 'data-id': id },
      el('summary', { class: 'mono', text: summary }),
      el('pre', { text: JSON.stringify(metadata, null, 2) }));
  }

  function instanceRow(instance, openIds) {
    const id = String(instance.id);
    const endpoint = instance.endpoint || {};
    const status = String(instance.status || '');
    const tags = el('span', { class: 'tags' });
    for (const tag of instance.tags || []) tags.append(el('span', { class: 'chip', text: String(tag) }));
    const heartbeat = heartbeatMs(instance.last_heartbeat);
    const cells = [
      el('code', { text: id }),
      el('span', null, el('span', { class: 'chip', text: String(endpoint.type || '') }), ' ',
        el('code', { text: String(endpoint.value || '') })),
      el('span', { class: 'status s-' + statusKey(status), text: status }),
      (instance.tags || []).length ? tags : el('span', { class: 'muted', text: '—' }),
      metadataCell(instance.metadata, openIds, id),
      instance.ttl ? el('span', { text: instance.ttl + ' s' }) : el('span', { class: 'muted', text: '—' }),
      heartbeat === null
        ? el('span', { class: 'muted', text: '—' })
        : el('span', { class: 'ago', 'data-since': String(heartbeat), title: String(instance.last_heartbeat), text: agoText(heartbeat) }),
      el('span', { text: sourceOf(instance) }),
    ];
    return el('tr', { 'data-id': id, 'data-status': status },
      ...cells.map((content, i) => el('td', { 'data-label': COLUMNS[i], class: KEEP_WHOLE.has(i) ? 'keep' : null }, content)));
  }

  function renderInstances(services) {
    const table = $('instances');
    const empty = $('instances-empty');
    const title = $('instances-title');
    const service = services.find((s) => s.name === state.selected);
    if (!state.instances) {
      table.hidden = true;
      empty.hidden = true;
      title.textContent = 'Instances';
      return;
    }
    if (!service) {
      table.hidden = true;
      empty.hidden = false;
      title.textContent = 'Instances';
      empty.textContent = state.selected === null
        ? 'Choose a service to see its instances.'
        : 'Service "' + state.selected + '" has no instances now.';
      return;
    }
    title.textContent = 'Instances of ' + service.name + ' (' + service.instances.length + ')';
    const openIds = new Set([...table.querySelectorAll('details[open]')].map((d) => d.dataset.id));
    const rows = [...service.instances].sort((a, b) => (String(a.id) < String(b.id) ? -1 : 1));
    $('instance-rows').replaceChildren(...rows.map((i) => instanceRow(i, openIds)));
    table.hidden = false;
    empty.hidden = true;
  }

  function tickHeartbeats() {
    for (const cell of document.querySelectorAll('.ago[data-since]')) {
      cell.textContent = agoText(Number(cell.dataset.since));
    }
  }

  // ---- selection and rendering -------------------------------------------------------------

  function selectedFromHash() {
    const match = location.hash.match(/^#service=(.*)$/);
    if (!match) return null;
    try { return decodeURIComponent(match[1]); } catch (_) { return null; }
  }

  function render() {
    const services = state.instances ? servicesOf(state.instances) : [];
    if (state.selected === null && services.length > 0) state.selected = services[0].name;
    renderServices(services);
    renderInstances(services);
  }

  function select(name) {
    state.selected = name;
    const hash = '#service=' + encodeURIComponent(name);
    if (location.hash !== hash) history.replaceState(null, '', hash);
    render();
  }

  // ---- wiring ------------------------------------------------------------------------------

  function start() {
    state.selected = selectedFromHash();
    if (state.token) {
      $('token-form').hidden = false;
      $('forget-token').hidden = false;
      $('token').value = state.token;
    }
    $('services').addEventListener('click', (event) => {
      const button = event.target.closest('button[data-service]');
      if (button) select(button.dataset.service);
    });
    $('filter').addEventListener('input', (event) => {
      state.filter = event.target.value;
      render();
    });
    document.addEventListener('keydown', (event) => {
      // `/` jumps to the filter, as in many lists; not while typing somewhere.
      const typing = event.target.closest && event.target.closest('input, textarea');
      if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        $('filter').focus();
      }
    });
    window.addEventListener('hashchange', () => {
      const name = selectedFromHash();
      if (name !== null && name !== state.selected) select(name);
    });
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token').value.trim();
      // fetch refuses header values beyond Latin-1 and with control characters.
      if (!token || !/^[\x20-\x7e\xa0-\xff]+$/.test(token)) {
        $('token-message').textContent = 'A token is one line of printable characters.';
        return;
      }
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('forget-token').hidden = false;
      $('token-message').textContent = '';
      setLive(false, 'Connecting…');
      restartWatch();
    });
    $('forget-token').addEventListener('click', () => {
      state.token = '';
      sessionStorage.removeItem(TOKEN_KEY);
      $('forget-token').hidden = true;
      $('token').value = '';
      state.instances = null;
      render();
      restartWatch();
    });
    $('retry-now').addEventListener('click', () => {
      if (state.wakeRetry) state.wakeRetry();
      refreshHealth();
    });
    setInterval(() => { tickHeartbeats(); tickUptime(); }, 1000);
    setInterval(refreshHealth, HEALTH_EVERY_MS);
    refreshHealth();
    restartWatch();
  }

  start();
})();
