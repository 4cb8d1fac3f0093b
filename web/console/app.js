// sipd console: vanilla JS, no framework, no CDN. Talks to httpd only:
//   POST mi (JSON-RPC 2.0: ul_dump, dlg_list, ...), GET api/commands, api/processes, api/statistics/*.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
  return e;
};

let rpcId = 0;
let timers = [];
function clearTimers() { timers.forEach(clearInterval); timers = []; }

// One JSON-RPC call. Resolves to {result} or {error: {code, message}}; transport
// failures become an error too, so every page can show "code reason".
async function rpc(method, params = [], onProgress) {
  const body = JSON.stringify({ jsonrpc: '2.0', method, params, id: ++rpcId });
  const headers = { 'Content-Type': 'application/json', ...authHeaders() };
  let response;
  try {
    response = await fetch('mi', { method: 'POST', headers, body });
  } catch (e) {
    return { error: { code: 0, message: 'network error: ' + e.message } };
  }
  let text = '';
  if (onProgress && response.body && response.body.getReader) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      onProgress(text);
    }
    text += decoder.decode();
  } else {
    text = await response.text();
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    return { error: { code: response.status, message: 'unreadable reply (HTTP ' + response.status + '): ' + text.slice(0, 200) } };
  }
}

function authHeaders() {
  const token = sessionStorage.getItem('sipd.token');
  return token ? { Authorization: 'Bearer ' + token } : {};
}

async function getJson(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error('HTTP ' + response.status + ' for ' + url);
  return response.json();
}

function errorBox(error) {
  return el('div', { class: 'error', role: 'alert', 'data-testid': 'error' },
    `${error.code} ${error.message}`);
}

// A reply's nodes as a nested list: "name:: value  attr=value".
function renderTree(nodes) {
  const ul = el('ul', { class: 'tree', 'data-testid': 'reply-tree' });
  const add = (parent, list) => {
    for (const node of list || []) {
      const li = el('li');
      if (node.name) li.append(el('span', { class: 'n', text: node.name }), ':: ');
      if (node.value) li.append(el('span', { class: 'v', text: node.value }));
      for (const a of node.attributes || []) li.append(' ', el('span', { class: 'a', text: `${a.name || ''}=${a.value || ''}` }));
      if (node.kids) { const sub = el('ul'); add(sub, node.kids); li.append(sub); }
      parent.append(li);
    }
  };
  add(ul, nodes);
  return ul;
}

function renderReply(reply, target) {
  target.replaceChildren();
  if (reply.error) { target.append(errorBox(reply.error)); return; }
  const r = reply.result;
  target.append(el('div', { class: 'status-ok', 'data-testid': 'reply-status', text: `${r.code} ${r.reason}` }));
  target.append(renderTree(r.nodes));
}

// ---------------------------------------------------------------- Commands page
let commandsCache = null;

function shellQuote(s) { return /^[A-Za-z0-9_.:@\/=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`; }

function copyLines(name, args) {
  const q = args.map(shellQuote).join(' ');
  const grpc = JSON.stringify({ command: name, params: args });
  return [
    `sipctl ${name}${q ? ' ' + q : ''}`,
    `opensipsctl fifo ${name}${q ? ' ' + q : ''}`,
    `grpcurl -plaintext -d ${shellQuote(grpc)} 127.0.0.1:8090 sipd.mi.v1.Management/Execute`,
    `curl -s ${location.origin}/mi -d ${shellQuote(JSON.stringify({ jsonrpc: '2.0', method: name, params: args, id: 1 }))}`,
  ].join('\n');
}

async function showCommands(main, selected) {
  main.replaceChildren(el('p', { class: 'muted', text: 'Loading commands…' }));
  try {
    commandsCache = commandsCache || await getJson('api/commands');
  } catch (e) {
    main.replaceChildren(errorBox({ code: 0, message: e.message }));
    return;
  }
  const filter = el('input', { type: 'search', placeholder: 'Filter commands', 'aria-label': 'Filter commands', id: 'command-filter' });
  const list = el('div', { class: 'list', role: 'list', id: 'command-list' });
  const detail = el('section', { id: 'command-detail', 'aria-live': 'polite' });
  const fill = () => {
    const f = filter.value.toLowerCase();
    list.replaceChildren(...commandsCache
      .filter(c => !f || c.name.includes(f) || c.module.includes(f))
      .map(c => el('button', { type: 'button', role: 'listitem', 'data-command': c.name, 'aria-pressed': String(c.name === selected),
        onclick: () => { location.hash = '#/commands/' + encodeURIComponent(c.name); } },
        c.name, ' ', el('small', { text: c.module }))));
  };
  filter.addEventListener('input', fill);
  fill();
  main.replaceChildren(el('div', { class: 'layout' }, el('div', {}, filter, list), detail));
  const command = commandsCache.find(c => c.name === selected);
  if (!command) { detail.append(el('p', { class: 'muted', text: `${commandsCache.length} commands. Pick one.` })); return; }

  const form = el('form', { id: 'command-form' });
  const inputs = command.parameters.map((p, i) => {
    const id = 'param-' + i;
    const input = p.arity === 'repeated'
      ? el('textarea', { id, name: p.name, rows: 2, placeholder: 'one value per line' })
      : el('input', { id, name: p.name, required: p.arity === 'required', placeholder: p.arity });
    form.append(el('label', { for: id, text: `${p.name} (${p.arity})` }), input, el('div', { class: 'muted', text: p.help }));
    return { p, input };
  });
  const copy = el('div', { class: 'copy', 'data-testid': 'copy-as', 'aria-label': 'Copy as' });
  const output = el('div', { id: 'reply', 'data-testid': 'reply' });
  const args = () => inputs.flatMap(({ p, input }) => p.arity === 'repeated'
    ? input.value.split('\n').map(s => s.trim()).filter(Boolean)
    : (input.value === '' ? [] : [input.value]));
  const updateCopy = () => { copy.textContent = copyLines(command.name, args()); };
  form.addEventListener('input', updateCopy);
  form.append(el('p', {}, el('button', { class: 'primary', type: 'submit', id: 'run' }, 'Run')));
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    updateCopy();
    output.replaceChildren(el('p', { class: 'muted', text: 'Running…' }));
    const streaming = command.flags.includes('streaming');
    const progress = streaming ? text => {
      output.replaceChildren(el('p', { class: 'muted', text: `Receiving… ${text.length} bytes` }),
        el('pre', { class: 'raw', text: text.slice(-4000) }));
    } : undefined;
    renderReply(await rpc(command.name, args(), progress), output);
  });
  detail.append(
    el('h2', { text: command.name }),
    el('p', {}, el('span', { class: 'muted', text: 'module ' + command.module + ' ' }),
      el('span', { class: 'flags' }, ...command.flags.map(f => el('span', { text: f })))),
    el('p', { text: command.help || 'no help' }),
    form, el('h3', { text: 'Copy as' }), copy, el('h3', { text: 'Reply' }), output);
  updateCopy();
  (inputs[0] ? inputs[0].input : $('#run')).focus();
}

// ---------------------------------------------------------------- Statistics page
const charted = new Set(JSON.parse(localStorage.getItem('sipd.charts') || '["core:rcv_requests"]'));
function saveCharts() { localStorage.setItem('sipd.charts', JSON.stringify([...charted])); }

// Points to plot: the value for gauges, the rate per second for counters.
function points(series, times) {
  const out = [];
  for (let i = 0; i < series.values.length; i++) {
    if (!series.counter) { out.push([times[i], series.values[i]]); continue; }
    if (i === 0) continue;
    const dt = (times[i] - times[i - 1]) / 1000;
    const dv = series.values[i] - series.values[i - 1];
    out.push([times[i], dt > 0 && dv >= 0 ? dv / dt : 0]);
  }
  return out;
}

function drawChart(canvas, pts) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * ratio; canvas.height = h * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, w, h);
  const pad = { l: 48, r: 6, t: 6, b: 18 };
  const max = Math.max(1, ...pts.map(p => p[1]));
  const t0 = pts.length ? pts[0][0] : 0, t1 = pts.length ? pts[pts.length - 1][0] : 1;
  const x = t => pad.l + (w - pad.l - pad.r) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
  const y = v => h - pad.b - (h - pad.t - pad.b) * (v / max);
  g.strokeStyle = '#d0d5dd'; g.fillStyle = '#667085'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(pad.l, y(max * f)); g.lineTo(w - pad.r, y(max * f)); g.stroke();
    g.fillText(formatNumber(max * f), 2, y(max * f) + 4);
  }
  if (pts.length) {
    const span = Math.round((t1 - t0) / 1000);
    g.fillText(span >= 120 ? `last ${Math.round(span / 60)} min` : `last ${span} s`, pad.l, h - 4);
  }
  g.strokeStyle = '#1f6feb'; g.lineWidth = 1.5; g.beginPath();
  pts.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[1])) : g.moveTo(x(p[0]), y(p[1]))));
  g.stroke();
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// `#/statistics/core:rcv_requests,tm:` opens those charts (a link to share).
async function showStatistics(main, arg) {
  let catalog = [];
  try { catalog = await getJson('api/statistics/catalog'); } catch (e) { main.replaceChildren(errorBox({ code: 0, message: e.message })); return; }
  const names = el('datalist', { id: 'stat-names' },
    ...[...new Set(catalog.map(s => s.name.split(':')[0] + ':'))].map(g => el('option', { value: g })),
    ...catalog.map(s => el('option', { value: s.name })));
  const pick = el('input', { id: 'stat-pick', list: 'stat-names', placeholder: 'core:rcv_requests or tm:', 'aria-label': 'Statistic or group' });
  const charts = el('div', { class: 'charts', id: 'charts' });
  const add = () => {
    const v = pick.value.trim();
    if (!v) return;
    const matches = v.endsWith(':') ? catalog.filter(s => s.name.startsWith(v)).map(s => s.name) : catalog.filter(s => s.name === v).map(s => s.name);
    if (!matches.length) { charts.before(errorBox({ code: 404, message: `no statistic ${v}` })); return; }
    matches.forEach(m => charted.add(m)); saveCharts(); pick.value = ''; refresh();
  };
  pick.addEventListener('keydown', e => { if (e.key === 'Enter') add(); });
  if (arg) {
    for (const v of decodeURIComponent(arg).split(',').filter(Boolean)) {
      catalog.filter(s => (v.endsWith(':') ? s.name.startsWith(v) : s.name === v)).forEach(s => charted.add(s.name));
    }
    saveCharts();
  }
  main.replaceChildren(el('div', { class: 'toolbar' }, pick, names,
    el('button', { class: 'primary', type: 'button', id: 'stat-add', onclick: add }, 'Add chart'),
    el('span', { class: 'muted', text: 'Gauges show the value, counters the rate per second; 1 s samples, last hour kept by sipd.' })), charts);
  const boxes = new Map();
  async function refresh() {
    if (!charted.size) { charts.replaceChildren(el('p', { class: 'muted', text: 'No chart yet.' })); return; }
    let history;
    try { history = await getJson('api/statistics/history?last=3600&stats=' + encodeURIComponent([...charted].join(','))); }
    catch (e) { charts.replaceChildren(errorBox({ code: 0, message: e.message })); return; }
    for (const s of history.series) {
      let box = boxes.get(s.name);
      if (!box || !box.isConnected) {
        const remove = el('button', { class: 'plain', type: 'button', 'aria-label': 'Remove chart ' + s.name,
          onclick: () => { charted.delete(s.name); saveCharts(); box.remove(); boxes.delete(s.name); } }, '×');
        box = el('figure', { class: 'chart', 'data-stat': s.name },
          el('h3', {}, el('span', { text: s.name + (s.counter ? ' (rate/s)' : '') }), el('span', { class: 'now' }), remove),
          el('canvas', { role: 'img', 'aria-label': 'chart of ' + s.name }));
        if (s.help) box.append(el('figcaption', { class: 'muted', text: s.help }));
        boxes.set(s.name, box); charts.append(box);
      }
      const pts = points(s, history.times);
      const last = pts.length ? pts[pts.length - 1][1] : 0;
      // The last 5 s average for counters: what an operator (and the browser test) reads.
      const recent = pts.slice(-5);
      const avg = recent.length ? recent.reduce((a, p) => a + p[1], 0) / recent.length : 0;
      box.dataset.value = String(last);
      box.dataset.points = String(pts.length);
      box.dataset.lastTime = String(history.times[history.times.length - 1] || 0);
      box.dataset.rate5s = String(avg);
      $('.now', box).textContent = s.counter ? `${formatNumber(avg)}/s` : formatNumber(last);
      drawChart($('canvas', box), pts);
    }
  }
  await refresh();
  timers.push(setInterval(refresh, 1000));
}

// ---------------------------------------------------------------- Processes page
async function showProcesses(main) {
  const body = el('tbody');
  const table = el('div', { class: 'table-wrap' }, el('table', { id: 'processes' },
    el('thead', {}, el('tr', {}, ...['ID', 'PID', 'Type', 'CPU %', 'CPU s', 'Memory (RSS)'].map(h => el('th', { scope: 'col', text: h })))), body));
  main.replaceChildren(table);
  let previous = null, previousAt = 0;
  async function refresh() {
    let data;
    try { data = await getJson('api/processes'); } catch (e) { main.replaceChildren(errorBox({ code: 0, message: e.message })); return; }
    const now = performance.now();
    body.replaceChildren(...data.processes.map(p => {
      const before = previous && previous.get(p.pid);
      const cpu = before !== undefined ? (100 * (p.cpu_seconds - before) / ((now - previousAt) / 1000)).toFixed(1) : '…';
      return el('tr', {}, ...[p.id, p.pid, p.type, cpu, p.cpu_seconds.toFixed(2), (p.rss_bytes / 1048576).toFixed(1) + ' MiB'].map(v => el('td', { text: String(v) })));
    }));
    previous = new Map(data.processes.map(p => [p.pid, p.cpu_seconds])); previousAt = now;
  }
  await refresh();
  timers.push(setInterval(refresh, 2000));
}

// ---------------------------------------------------------------- Registrations page
async function showRegistrations(main) {
  const search = el('input', { type: 'search', id: 'reg-search', placeholder: 'Search AOR or contact', 'aria-label': 'Search registrations' });
  const info = el('span', { class: 'muted', id: 'reg-info' });
  const prev = el('button', { class: 'plain', type: 'button', id: 'reg-prev' }, '‹ Previous');
  const next = el('button', { class: 'plain', type: 'button', id: 'reg-next' }, 'Next ›');
  const body = el('tbody');
  const status = el('div', { 'aria-live': 'polite', id: 'reg-status' });
  main.replaceChildren(el('div', { class: 'toolbar' }, search,
    el('button', { class: 'plain', type: 'button', id: 'reg-reload', onclick: () => load() }, 'Reload'), prev, next, info), status,
    el('div', { class: 'table-wrap' }, el('table', { id: 'registrations' },
      el('thead', {}, el('tr', {}, ...['Table', 'AOR', 'Contact', 'Expires', 'Q', ''].map(h => el('th', { scope: 'col', text: h })))), body)));
  const pageSize = 50;
  let rows = [], page = 0;
  function render() {
    const f = search.value.toLowerCase();
    const shown = rows.filter(r => !f || r.aor.toLowerCase().includes(f) || r.contact.toLowerCase().includes(f));
    const pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(page, pages - 1);
    info.textContent = `${shown.length} contacts, page ${page + 1} of ${pages}`;
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    body.replaceChildren(...shown.slice(page * pageSize, (page + 1) * pageSize).map(r => el('tr', { 'data-aor': r.aor, 'data-contact': r.contact },
      el('td', { text: r.table }), el('td', { text: r.aor }), el('td', { text: r.contact }), el('td', { text: r.expires }), el('td', { text: r.q }),
      el('td', {}, el('button', { class: 'danger', type: 'button', 'aria-label': `Remove ${r.contact} of ${r.aor}`, onclick: () => remove(r) }, 'Remove')))));
  }
  async function remove(r) {
    if (!window.confirm(`Remove contact ${r.contact} of ${r.aor}?`)) return;
    const reply = await rpc('ul_rm_contact', [r.table, r.aor, r.contact]);
    if (reply.error) { status.replaceChildren(errorBox(reply.error)); return; }
    status.replaceChildren(el('p', { class: 'status-ok', text: `Removed ${r.contact} of ${r.aor}` }));
    await load();
  }
  async function load() {
    const reply = await rpc('ul_dump');
    if (reply.error) { status.replaceChildren(errorBox(reply.error)); rows = []; render(); return; }
    rows = [];
    for (const domain of reply.result.nodes) {
      for (const aor of domain.kids || []) {
        if (aor.name !== 'AOR') continue;
        for (const contact of aor.kids || []) {
          if (contact.name !== 'Contact') continue;
          const kid = n => ((contact.kids || []).find(k => k.name === n) || {}).value || '';
          const q = ((contact.attributes || []).find(a => a.name === 'Q') || {}).value || '';
          rows.push({ table: domain.value, aor: aor.value, contact: contact.value, expires: kid('Expires'), q });
        }
      }
    }
    render();
  }
  search.addEventListener('input', () => { page = 0; render(); });
  prev.addEventListener('click', () => { page--; render(); });
  next.addEventListener('click', () => { page++; render(); });
  await load();
}

// ---------------------------------------------------------------- Dialogs page
const dialogStates = { 1: 'unconfirmed', 2: 'early', 3: 'confirmed (no ACK)', 4: 'confirmed', 5: 'deleted' };

// "2026-11-29 08:10:00" for a unix time, '' for 0 (no start / no timeout).
function unixDate(v) {
  const n = Number(v);
  return n > 0 ? new Date(n * 1000).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '';
}

async function showDialogs(main) {
  const search = el('input', { type: 'search', id: 'dlg-search', placeholder: 'Search Call-ID, URI or tag', 'aria-label': 'Search dialogs' });
  const info = el('span', { class: 'muted', id: 'dlg-info' });
  const prev = el('button', { class: 'plain', type: 'button', id: 'dlg-prev' }, '‹ Previous');
  const next = el('button', { class: 'plain', type: 'button', id: 'dlg-next' }, 'Next ›');
  const body = el('tbody');
  const status = el('div', { 'aria-live': 'polite', id: 'dlg-status' });
  main.replaceChildren(el('div', { class: 'toolbar' }, search,
    el('button', { class: 'plain', type: 'button', id: 'dlg-reload', onclick: () => load() }, 'Reload'), prev, next, info), status,
    el('div', { class: 'table-wrap' }, el('table', { id: 'dialogs', class: 'cards' },
      el('thead', {}, el('tr', {}, ...['Hash', 'State', 'Call-ID', 'From', 'To', 'Start', 'Timeout', ''].map(h => el('th', { scope: 'col', text: h })))), body)));
  const pageSize = 50;
  let rows = [], page = 0;
  const party = (label, uri, tag) => el('td', { 'data-label': label, class: 'wrap' },
    el('div', {}, el('div', { text: uri }), tag ? el('div', { class: 'muted', text: 'tag ' + tag }) : null));
  function render() {
    const f = search.value.toLowerCase();
    const shown = rows.filter(r => !f || [r.hash, r.callid, r.from_uri, r.to_uri, r.from_tag, r.to_tag]
      .some(v => v.toLowerCase().includes(f)));
    const pages = Math.max(1, Math.ceil(shown.length / pageSize));
    page = Math.min(page, pages - 1);
    info.textContent = `${shown.length} dialog${shown.length === 1 ? '' : 's'}, page ${page + 1} of ${pages}`;
    prev.disabled = page === 0; next.disabled = page >= pages - 1;
    // data-label: the column's name, shown beside each cell when narrow screens turn rows into cards.
    const cell = (label, attrs, ...kids) => el('td', { 'data-label': label, ...attrs }, ...kids);
    body.replaceChildren(...shown.slice(page * pageSize, (page + 1) * pageSize).map(r => el('tr', { 'data-hash': r.hash, 'data-callid': r.callid },
      cell('Hash', { text: r.hash }), cell('State', { text: dialogStates[r.state] ? `${r.state} ${dialogStates[r.state]}` : r.state }),
      cell('Call-ID', { class: 'wrap', text: r.callid }), party('From', r.from_uri, r.from_tag), party('To', r.to_uri, r.to_tag),
      cell('Start', { text: unixDate(r.timestart) }), cell('Timeout', { text: unixDate(r.timeout) }),
      cell('', {}, el('button', { class: 'danger', type: 'button', 'aria-label': `End call ${r.callid} (${r.hash})`, onclick: () => end(r) }, 'End call')))));
  }
  async function end(r) {
    if (!window.confirm(`End call ${r.callid} (${r.hash}) from ${r.from_uri} to ${r.to_uri}? Both sides get a BYE.`)) return;
    const [hEntry, hId] = r.hash.split(':');
    const reply = await rpc('dlg_end_dlg', [hEntry, hId]);
    if (reply.error) { status.replaceChildren(errorBox(reply.error)); await load(false); return; }
    status.replaceChildren(el('p', { class: 'status-ok', text: `Ended call ${r.callid} (${r.hash})` }));
    await load(false);
  }
  async function load(clearStatus = true) {
    const reply = await rpc('dlg_list');
    if (reply.error) { status.replaceChildren(errorBox(reply.error)); rows = []; render(); return; }
    if (clearStatus) status.replaceChildren();
    rows = [];
    for (const d of reply.result.nodes || []) {
      if (d.name !== 'dialog') continue;
      const kid = n => ((d.kids || []).find(k => k.name === n) || {}).value || '';
      const hash = ((d.attributes || []).find(a => a.name === 'hash') || {}).value || '';
      const callees = (d.kids || []).find(k => k.name === 'CALLEES');
      const callee = callees && (callees.kids || [])[0];
      const toTag = callee ? (((callee.kids || []).find(k => k.name === 'callee_tag') || {}).value || '') : '';
      rows.push({ hash, state: kid('state'), callid: kid('callid'), from_uri: kid('from_uri'), to_uri: kid('to_uri'),
        from_tag: kid('caller_tag'), to_tag: toTag, timestart: kid('timestart'), timeout: kid('timeout') });
    }
    render();
  }
  search.addEventListener('input', () => { page = 0; render(); });
  prev.addEventListener('click', () => { page--; render(); });
  next.addEventListener('click', () => { page++; render(); });
  await load();
}

// ---------------------------------------------------------------- routing
async function route() {
  clearTimers();
  const [, page = 'commands', arg] = location.hash.match(/^#\/([a-z]+)\/?(.*)$/) || [];
  document.querySelectorAll('nav a').forEach(a => a.toggleAttribute('aria-current', a.dataset.page === page) || a.dataset.page === page && a.setAttribute('aria-current', 'page'));
  const main = $('#main');
  main.dataset.page = page;
  const pages = { commands: m => showCommands(m, decodeURIComponent(arg || '')), statistics: m => showStatistics(m, arg), processes: showProcesses, registrations: showRegistrations, dialogs: showDialogs };
  await (pages[page] || pages.commands)(main);
  main.dataset.ready = page;
}

// A token for commands beyond the local read role (security: tokens file or
// run_dir/admin.token); kept for this tab only.
function setupToken() {
  const input = $('#token');
  input.value = sessionStorage.getItem('sipd.token') || '';
  input.addEventListener('change', () => {
    if (input.value) sessionStorage.setItem('sipd.token', input.value.trim());
    else sessionStorage.removeItem('sipd.token');
  });
}

window.addEventListener('hashchange', route);
window.addEventListener('DOMContentLoaded', async () => {
  setupToken();
  route();
  const v = await rpc('version');
  if (v.result) $('#server-info').textContent = v.result.nodes.map(n => n.value).filter(Boolean).slice(0, 1).join(' ');
});
