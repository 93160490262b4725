// Berth's dashboard: a client of the JSON API (/v1), rendered in the
// browser with no build step. Pages are hash routes; the event stream
// (/v1/events) re-renders the page in view as the cluster changes.
'use strict';

const TASK_STATE = ['unspecified', 'pending', 'running', 'exited', 'failed', 'stopped'];
const DEPLOY_PHASE = ['unspecified', 'running', 'paused', 'succeeded', 'failed', 'rolled-back', 'superseded'];
const HEALTH = ['', 'healthy', 'unhealthy'];

// An element: h('td', {class: 'x'}, 'text', child, ...). Text is never parsed as HTML.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}
const link = (href, text) => h('a', { href }, text);
const table = (head, rows) => h('table', {}, h('thead', {}, h('tr', {}, head.map((c) => h('th', {}, c)))),
  h('tbody', {}, rows));
const bytes = (n) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0; n = Number(n ?? 0);
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};
const cpu = (m) => `${(Number(m ?? 0) / 1000).toFixed(1)} cores`;
// Fields at their default are left out of the JSON (as proto3's mapping does).
const z = (x) => x ?? 0;
const when = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '');
function bar(used, total) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  return h('span', { class: 'bar', title: `${pct.toFixed(0)}%` }, h('span', { style: `width:${pct}%` }));
}

let namespace = localStorage.getItem('berth.ns') || 'default';

// Calls the API as the logged-in user; a 401 goes to the login page.
async function api(path, opts = {}) {
  const sep = path.includes('?') ? '&' : '?';
  const r = await fetch(`${path}${sep}namespace=${encodeURIComponent(namespace)}`,
    { credentials: 'same-origin', ...opts });
  if (r.status === 401) { location.href = '/ui/login'; throw new Error('not logged in'); }
  if (!r.ok) {
    let msg = `${r.status}`;
    try { msg = (await r.json()).message; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r.json();
}

// ---- pages ----

async function overview(view) {
  const o = await api('/v1/overview');
  const s = o.servers;
  const leader = s ? (s.members || []).find((m) => m.id === s.leader) : null;
  view.append(h('h1', {}, 'Cluster'),
    h('div', { class: 'cards' },
      h('div', { class: 'card', id: 'servers' }, h('div', { class: 'muted' }, 'servers'),
        h('div', { class: 'big' }, s ? (s.members || []).length : '–'),
        h('div', {}, leader ? `leader ${leader.id} (${leader.address})` : (s ? 'no leader' : 'not shown'))),
      h('div', { class: 'card', id: 'nodes-ready' }, h('div', { class: 'muted' }, 'nodes ready'), h('div', { class: 'big ok' }, z(o.nodes_ready))),
      h('div', { class: 'card', id: 'nodes-down' }, h('div', { class: 'muted' }, 'nodes down'), h('div', { class: 'big bad' }, z(o.nodes_down))),
      h('div', { class: 'card', id: 'nodes-draining' }, h('div', { class: 'muted' }, 'draining'), h('div', { class: 'big' }, z(o.nodes_draining))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'apps'), h('div', { class: 'big' }, z(o.apps))),
      h('div', { class: 'card' }, h('div', { class: 'muted' }, 'tasks running'), h('div', { class: 'big' }, z(o.tasks_running))),
      h('div', { class: 'card', id: 'pending-count' }, h('div', { class: 'muted' }, 'pending'), h('div', { class: 'big warn' }, z(o.pending)))));
  view.append(h('h2', {}, 'Capacity (ready nodes)'),
    table(['resource', 'allocated', 'allocatable', ''], (o.resources || []).map((r) => {
      const fmt = r.kind === 'cpu' ? cpu : r.kind === 'memory' ? bytes : (n) => `${n} GPUs`;
      return h('tr', { 'data-resource': r.kind + (r.model ? `:${r.model}` : '') },
        h('td', {}, r.kind === 'gpu' ? `GPU ${r.model}` : r.kind), h('td', {}, fmt(z(r.allocated))),
        h('td', {}, fmt(z(r.allocatable))), h('td', {}, bar(z(r.allocated), z(r.allocatable))));
    })));
  view.append(h('h2', {}, `Pending tasks (${z(o.pending)})`),
    (o.pending_tasks || []).length === 0 ? h('p', { class: 'muted' }, 'None.')
      : table(['task', 'app', 'why'], o.pending_tasks.map((t) => h('tr', { class: 'pending-task' },
        h('td', {}, link(`#/tasks/${encodeURIComponent(t.task)}`, t.task)),
        h('td', {}, link(`#/apps/${encodeURIComponent(t.app)}`, t.app)), h('td', { class: 'reason' }, t.reason)))));
}

const NODE_PAGE = 500;
// The node list's search and how many pages are shown, kept across the
// re-renders that live updates cause.
let nodePrefix = '';
let nodePages = 1;

async function nodes(view) {
  const rows = h('tbody', {});
  const shown = h('span', {});
  const more = h('button', { id: 'nodes-more' }, `Next ${NODE_PAGE}`);
  const search = h('input', { id: 'nodes-prefix', placeholder: 'name starts with', size: 24, value: nodePrefix });
  let token = '';
  let count = 0;
  const load = async (fresh) => {
    if (fresh) { rows.replaceChildren(); token = ''; count = 0; }
    const q = `page_size=${NODE_PAGE}&prefix=${encodeURIComponent(nodePrefix)}`
      + (token ? `&page_token=${encodeURIComponent(token)}` : '');
    const r = await api(`/v1/nodes?${q}`);
    for (const n of r.nodes || []) {
      rows.append(h('tr', { class: 'node-row' },
        h('td', {}, link(`#/nodes/${encodeURIComponent(n.name)}`, n.name)),
        h('td', {}, n.drained ? 'drained' : n.state === 1 ? 'ready' : 'down'),
        h('td', {}, `${cpu(n.cpu_used)} / ${cpu(n.cpu_millis)}`),
        h('td', {}, `${bytes(n.memory_used)} / ${bytes(n.memory_bytes)}`),
        h('td', {}, n.gpus ? n.gpu_model : ''), h('td', {}, z(n.tasks))));
      count++;
    }
    token = r.next_page_token || '';
    more.hidden = !token;
    shown.textContent = `${count} shown, by name${token ? '; more follow' : ''}.`;
  };
  more.addEventListener('click', () => {
    nodePages++;
    load(false).catch((e) => shown.append(` ${e.message}`));
  });
  const find = () => {
    if (search.value.trim() === nodePrefix) return;
    nodePrefix = search.value.trim();
    nodePages = 1;
    load(true).catch((e) => { shown.textContent = e.message; });
  };
  search.addEventListener('change', find);
  search.addEventListener('keydown', (e) => { if (e.key === 'Enter') find(); });
  view.append(h('h1', {}, 'Nodes'), h('p', {}, search, ' ', h('span', { class: 'muted' }, shown)),
    h('table', {}, h('thead', {}, h('tr', {}, ['node', 'state', 'CPU', 'memory', 'GPUs', 'tasks'].map((c) => h('th', {}, c)))), rows),
    h('p', {}, more));
  await load(true);
  for (let page = 1; page < nodePages && token; page++) await load(false);
}

async function node(view, name) {
  const n = await api(`/v1/nodes/${encodeURIComponent(name)}`);
  view.append(h('h1', {}, `Node ${n.name}`),
    h('p', {}, `${n.address} · ${n.drained ? 'drained' : n.state === 1 ? 'ready' : 'down'} · `,
      `${cpu(n.cpu_used)} of ${cpu(n.cpu_millis)} · ${bytes(n.memory_used)} of ${bytes(n.memory_bytes)}`),
    h('h2', {}, 'Hardware'),
    n.inventory ? window.drawHardware(n.inventory, n.placed || [], showGpu) : h('p', { class: 'muted' }, 'No inventory reported.'),
    h('h2', {}, 'Tasks here'),
    table(['task', 'state', 'CPU', 'memory', 'GPUs', 'cores'], (n.placed || []).map((t) => {
      const a = t.allocation || {};
      return h('tr', {}, h('td', {}, link(`#/tasks/${encodeURIComponent(t.id)}`, t.id)),
        h('td', { class: `state-${TASK_STATE[t.state]}` }, TASK_STATE[t.state]),
        h('td', {}, cpu(a.cpu_millis || 0)), h('td', {}, bytes(a.memory_bytes || 0)),
        h('td', {}, (a.gpus || []).map((g) => z(g.index)).join(', ')), h('td', {}, (a.cores || []).join(', ')));
    })));
}

function showGpu(gpu, task) {
  const p = document.getElementById('panel');
  p.replaceChildren(h('strong', {}, `GPU ${gpu.index ?? 0}: ${gpu.model}`),
    h('div', {}, `${bytes(gpu.memory_bytes)} · ${gpu.pci_bus_id} · NUMA ${gpu.numa_node ?? '?'}`),
    h('div', { id: 'panel-task' }, task ? ['held by ', link(`#/tasks/${encodeURIComponent(task.id)}`, task.id)] : 'free'),
    h('button', { onclick: () => { p.hidden = true; } }, 'close'));
  p.hidden = false;
}

async function apps(view) {
  const r = await api('/v1/apps');
  view.append(h('h1', {}, 'Apps'),
    table(['app', 'image', 'running', 'version', ''], (r.apps || []).map((a) => h('tr', {},
      h('td', {}, link(`#/apps/${encodeURIComponent(a.name)}`, a.name)), h('td', {}, a.image),
      h('td', {}, `${z(a.running)} / ${z(a.instances)}`), h('td', {}, z(a.version)), h('td', {}, a.stopped ? 'stopped' : '')))));
}

async function app(view, name) {
  const [d, tasks] = await Promise.all([
    api(`/v1/apps/${encodeURIComponent(name)}/deployment`).catch(() => null),
    api(`/v1/tasks?app=${encodeURIComponent(name)}`),
  ]);
  view.append(h('h1', {}, `App ${name}`));
  if (d) {
    view.append(h('h2', {}, 'Deployment'),
      h('p', { id: 'deployment' },
        h('span', { id: 'deploy-phase', class: `phase-${DEPLOY_PHASE[d.phase]}` }, DEPLOY_PHASE[d.phase]),
        ` · deployment ${z(d.id)} (${d.trigger ?? ''}) of version ${z(d.version)} · `,
        h('span', { id: 'deploy-progress', class: 'progress' }, `${z(d.new_ready)}/${z(d.wanted)} new ready`),
        ` · ${z(d.old_total)} old · `, bar(z(d.new_ready), z(d.wanted)),
        d.message ? h('div', { class: 'muted' }, d.message) : ''));
  }
  const list = tasks.tasks || [];
  view.append(h('h2', {}, `Tasks (${list.length})`),
    table(['task', 'version', 'node', 'state', 'health', 'message'], list.map((t) => h('tr', {},
      h('td', {}, link(`#/tasks/${encodeURIComponent(t.id)}`, t.id)), h('td', {}, z(t.version)),
      h('td', {}, t.node ? link(`#/nodes/${encodeURIComponent(t.node)}`, t.node) : ''),
      h('td', { class: `state-${TASK_STATE[t.state]}` }, TASK_STATE[t.state]),
      h('td', {}, HEALTH[t.health] || (t.ready ? 'ready' : '')), h('td', {}, t.message)))));
}

let follow = null; // the log stream being followed, if any
async function task(view, id) {
  const e = await api(`/v1/tasks/${encodeURIComponent(id)}/explain`);
  view.append(h('h1', {}, `Task ${id}`),
    h('p', { id: 'explain-summary' }, e.summary),
    e.node ? h('p', {}, 'on ', link(`#/nodes/${encodeURIComponent(e.node)}`, e.node)) : '',
    h('h2', {}, 'Every node’s verdict'),
    (e.nodes || []).length === 0 ? h('p', { class: 'muted' }, e.detail_available ? 'No nodes.' : 'The deciding server has no detail (restarted since).')
      : table(['node', 'verdict', 'reason', 'score'], e.nodes.map((v) => h('tr', { class: 'verdict' },
        h('td', {}, v.node), h('td', { class: v.filtered_by ? 'bad' : 'ok' }, v.filtered_by ? `filtered by ${v.filtered_by}` : 'feasible'),
        h('td', {}, [v.reason, v.detail].filter(Boolean).join(': ')),
        h('td', {}, v.filtered_by ? '' : z(v.total).toFixed(3))))));
  const pre = h('pre', { class: 'logs', id: 'logs' });
  const followBox = h('input', { type: 'checkbox', id: 'follow' });
  view.append(h('h2', {}, 'Logs'), h('label', {}, followBox, ' follow'), pre);
  const load = async () => {
    if (follow) follow.abort();
    follow = new AbortController();
    pre.textContent = '';
    const on = followBox.checked;
    try {
      const r = await fetch(`/v1/tasks/${encodeURIComponent(id)}/logs?tail=200&follow=${on}&namespace=${encodeURIComponent(namespace)}`,
        { credentials: 'same-origin', signal: follow.signal });
      if (!r.ok) { pre.textContent = (await r.json()).message; return; }
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pre.textContent += dec.decode(value, { stream: true });
        pre.scrollTop = pre.scrollHeight;
      }
    } catch (err) { if (err.name !== 'AbortError') pre.textContent += `\n[${err.message}]`; }
  };
  followBox.addEventListener('change', load);
  load();
}

async function plugins(view) {
  const r = await api('/v1/plugins');
  view.append(h('h1', {}, 'Plugins'),
    table(['plugin', 'kind', 'mode', 'version', 'calls', 'p50 / p99 µs', 'failures', 'shadow'], (r.plugins || []).map((p) => {
      const m = p.metrics || {};
      const f = Object.entries(m.failures || {}).filter(([, n]) => n > 0).map(([c, n]) => `${c}: ${n}`).join(', ');
      const s = p.shadow;
      return h('tr', {}, h('td', {}, p.name), h('td', {}, p.kind), h('td', {}, p.mode),
        h('td', {}, `${z(p.version)} of ${(p.versions || []).length}`, h('div', { class: 'muted' }, (p.digest || '').slice(0, 12))),
        h('td', {}, m.calls || 0), h('td', {}, `${(m.p50_us || 0).toFixed(0)} / ${(m.p99_us || 0).toFixed(0)}`),
        h('td', { class: f ? 'bad' : '' }, f || 'none'),
        h('td', {}, s ? [`${z(s.differed)} of ${z(s.decisions)} differed`, ...(s.recent || []).map((x) => h('div', { class: 'muted' }, x))] : ''));
    })));
}

const seen = []; // recent events, newest first, for the events page
function events(view) {
  view.append(h('h1', {}, 'Events'), h('p', { class: 'muted' }, 'Live; the newest first.'),
    table(['id', 'time', 'kind', 'subject', 'action', 'message'], seen.slice(0, 300).map((e) => h('tr', { class: `event kind-${e.kind}` },
      h('td', {}, e.id), h('td', {}, when(e.at_ms)), h('td', {}, e.kind), h('td', {}, e.subject),
      h('td', {}, e.action), h('td', {}, e.message)))));
}

// ---- routing and live updates ----

const routes = [
  [/^$/, overview], [/^nodes$/, nodes], [/^nodes\/(.+)$/, node], [/^apps$/, apps],
  [/^apps\/(.+)$/, app], [/^tasks\/(.+)$/, task], [/^plugins$/, plugins], [/^events$/, events],
];

let rendering = false;
async function render() {
  if (rendering) { render.again = true; return; }
  rendering = true;
  const path = location.hash.replace(/^#\/?/, '');
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === `#/${path.split('/')[0]}`);
  }
  const view = document.getElementById('view');
  const next = h('main', { id: 'view' });
  try {
    const [, page] = routes.find(([re]) => re.test(path)) || [null, null];
    if (!page) next.append(h('p', {}, 'No such page.'));
    else await page(next, ...path.match(routes.find(([re]) => re.test(path))[0]).slice(1).map(decodeURIComponent));
  } catch (err) {
    next.replaceChildren(h('p', { class: 'error' }, err.message));
  }
  view.replaceWith(next);
  rendering = false;
  if (render.again) { render.again = false; render(); }
}

// The task page keeps its log stream; everything else re-renders on change.
let pendingRender = null;
function changed() {
  if (/^#\/tasks\//.test(location.hash) && follow) return;
  clearTimeout(pendingRender);
  pendingRender = setTimeout(render, 250);
}

let stream = null;
function live() {
  if (stream) stream.close();
  stream = new EventSource(`/v1/events?since=now&all=true&namespace=${encodeURIComponent(namespace)}`);
  const dot = document.getElementById('live');
  stream.onopen = () => { dot.className = 'live on'; };
  stream.onerror = () => { dot.className = 'live off'; };
  const on = (msg) => {
    const e = JSON.parse(msg.data);
    seen.unshift(e);
    if (seen.length > 1000) seen.pop();
    changed();
  };
  for (const k of ['task', 'node', 'deployment', 'preemption', 'plugin', 'quota', 'lost']) stream.addEventListener(k, on);
}

async function namespaces() {
  const sel = document.getElementById('ns');
  try {
    const r = await api('/v1/namespaces');
    const names = (r.namespaces || []).map((n) => n.name);
    if (!names.includes(namespace)) names.push(namespace);
    sel.replaceChildren(...names.map((n) => h('option', { value: n, selected: n === namespace }, n)));
  } catch (_) { sel.replaceChildren(h('option', {}, namespace)); }
  sel.onchange = () => { namespace = sel.value; localStorage.setItem('berth.ns', namespace); live(); render(); };
}

window.addEventListener('hashchange', () => { if (follow) { follow.abort(); follow = null; } render(); });
namespaces();
live();
render();
