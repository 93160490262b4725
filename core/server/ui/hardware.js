// Draws a node's hardware from its inventory (GET /v1/nodes/{name}):
// packages with their NUMA nodes and cores (cores held exclusively are
// marked with their task), NICs and devices under their NUMA node and
// PCIe switch, and the GPUs grouped by NVLink island with their links.
// Clicking a GPU shows its task.
'use strict';

(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    for (const k of kids.flat()) if (k !== undefined && k !== null) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  };
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };

  // GPUs joined by NVLink, as lists of GPUs (an island of one: no links).
  function islands(gpus) {
    const byUuid = new Map(gpus.map((g) => [g.uuid, g]));
    const seen = new Set();
    const out = [];
    for (const g of gpus) {
      if (seen.has(g.uuid)) continue;
      const island = [];
      const todo = [g];
      seen.add(g.uuid);
      while (todo.length) {
        const x = todo.pop();
        island.push(x);
        for (const l of x.nvlinks || []) {
          const p = byUuid.get(l.peer);
          if (p && !seen.has(p.uuid)) { seen.add(p.uuid); todo.push(p); }
        }
      }
      island.sort((a, b) => (a.index ?? 0) - (b.index ?? 0));
      out.push(island);
    }
    return out;
  }

  function switches(items) {
    const by = new Map();
    for (const x of items) {
      const k = x.pcie_switch || '';
      if (!by.has(k)) by.set(k, []);
      by.get(k).push(x);
    }
    return [...by.entries()];
  }

  function drawIsland(island, n, holder, onGpu) {
    const size = island.length === 1 ? 120 : 300;
    const c = size / 2;
    const r = island.length === 1 ? 0 : size / 2 - 42;
    const pos = new Map(island.map((g, i) => {
      const a = (2 * Math.PI * i) / island.length - Math.PI / 2;
      return [g.uuid, [c + r * Math.cos(a), c + r * Math.sin(a)]];
    }));
    const s = svg('svg', { width: size, height: size, viewBox: `0 0 ${size} ${size}` });
    const drawn = new Set();
    for (const g of island) {
      for (const l of g.nvlinks || []) {
        const key = [g.uuid, l.peer].sort().join('|');
        if (drawn.has(key) || !pos.has(l.peer)) continue;
        drawn.add(key);
        const [x1, y1] = pos.get(g.uuid);
        const [x2, y2] = pos.get(l.peer);
        const line = svg('line', { x1, y1, x2, y2, class: 'link', 'stroke-width': Math.max(1, Math.min(6, l.links / 3)) });
        line.append(Object.assign(svg('title'), { textContent: `${l.links} NVLinks` }));
        s.append(line);
      }
    }
    for (const g of island) {
      const [x, y] = pos.get(g.uuid);
      const task = holder.get(g.index ?? 0);
      const grp = svg('g', { class: task ? 'gpu held' : 'gpu', id: `gpu-${g.index ?? 0}`, 'data-index': g.index ?? 0, 'data-task': task ? task.id : '' });
      grp.append(svg('rect', { x: x - 34, y: y - 20, width: 68, height: 40, rx: 5 }));
      const t1 = svg('text', { x, y: y - 3, 'text-anchor': 'middle' });
      t1.textContent = `GPU ${g.index ?? 0}`;
      const t2 = svg('text', { x, y: y + 12, 'text-anchor': 'middle' });
      t2.textContent = task ? task.app : `NUMA ${g.numa_node ?? '?'}`;
      grp.append(t1, t2, Object.assign(svg('title'), { textContent: `GPU ${g.index ?? 0} ${g.model}${task ? ` — ${task.id}` : ' — free'}` }));
      grp.addEventListener('click', () => onGpu(g, task));
      s.append(grp);
    }
    const models = [...new Set(island.map((g) => g.model))].join(', ');
    return el('div', { class: 'island', 'data-gpus': island.length },
      el('div', { class: 'title' }, island.length > 1 ? `NVLink island ${n}: ${island.length} GPUs` : `GPU ${island[0].index ?? 0} (no NVLink)`),
      el('div', { class: 'muted' }, models), s);
  }

  window.drawHardware = function (inv, placed, onGpu) {
    const coreTask = new Map();
    const gpuTask = new Map();
    for (const t of placed) {
      const a = t.allocation || {};
      for (const c of a.cores || []) coreTask.set(c, t);
      for (const g of a.gpus || []) gpuTask.set(g.index ?? 0, t);
    }
    const nicsOf = (numa) => (inv.nics || []).filter((x) => (x.numa_node ?? null) === numa);
    const devsOf = (numa) => (inv.devices || []).filter((x) => (x.numa_node ?? null) === numa);
    const nicBox = (list) => el('div', { class: 'nics' }, switches(list).map(([sw, nics]) => el('div', { class: 'switch' },
      el('div', { class: 'muted' }, sw ? `PCIe switch ${sw}` : 'no PCIe switch known'),
      nics.map((x) => el('span', { class: 'nic', title: `${x.mac} ${x.pci_bus_id || ''}` },
        `${x.name}${x.speed_mbps ? ` ${x.speed_mbps / 1000} Gb/s` : ''}${x.rdma_device ? ` (${x.rdma_device})` : ''}${x.link_up ? '' : ' down'}`)))));
    const devBox = (list) => (list.length ? el('div', { class: 'devices' }, list.map((d) => el('span', { class: 'nic' }, `${d.kind} ${d.name}`))) : '');
    const root = el('div', { class: 'hw', id: 'hardware' });
    for (const p of inv.packages || []) {
      root.append(el('div', { class: 'package', id: `package-${p.id ?? 0}` },
        el('div', { class: 'title' }, `Package ${p.id ?? 0}${p.model ? ` · ${p.model}` : ''}`),
        el('div', { class: 'numas' }, (p.numa_nodes || []).map((nn) => el('div', { class: 'numa', id: `numa-${nn.id ?? 0}` },
          el('div', { class: 'title' }, `NUMA ${nn.id ?? 0} · ${(nn.cores || []).length} cores · ${(Number(nn.memory_bytes) / 2 ** 30).toFixed(0)} GiB`),
          el('div', { class: 'cores' }, (nn.cores || []).map((c) => {
            const t = coreTask.get(c.id ?? 0);
            return el('div', { class: t ? 'core held' : 'core', title: t ? `core ${c.id ?? 0}: ${t.id}` : `core ${c.id ?? 0} (PUs ${(c.pus || []).join(',')})`, 'data-task': t ? t.id : null }, c.id ?? 0);
          })),
          nicsOf(nn.id ?? 0).length ? nicBox(nicsOf(nn.id ?? 0)) : '',
          devBox(devsOf(nn.id ?? 0)))))));
    }
    const loose = nicsOf(null);
    if (loose.length || devsOf(null).length) root.append(el('div', { class: 'package' }, el('div', { class: 'title' }, 'Not on a NUMA node'), nicBox(loose), devBox(devsOf(null))));
    const gpus = inv.gpus || [];
    if (gpus.length) root.append(el('div', { class: 'islands', id: 'gpus' }, islands(gpus).map((isl, i) => drawIsland(isl, i + 1, gpuTask, onGpu))));
    return root;
  };
}());
