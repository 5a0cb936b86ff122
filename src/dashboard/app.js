// deja's dashboard: reads GET /v1/analytics/cache with an admin key and draws each route's
// cache on plain canvases (no libraries, nothing fetched from elsewhere). Each canvas records
// how many data points it drew in data-points, which the browser test reads.
'use strict';

const COLORS = {
  hit: '#3fb950', sem: '#58a6ff', miss: '#f0883e', err: '#f85149', retry: '#d2a8ff',
  grid: '#2a3542', dim: '#8393a5', ink: '#d8dee6', threshold: '#f2cc60',
};
const $ = (id) => document.getElementById(id);
let timer = null;

function key() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get('key');
  if (fromHash) {
    sessionStorage.setItem('deja-key', fromHash);
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem('deja-key') || '';
}

function fmt(n, digits = 2) {
  if (!isFinite(n)) return '–';
  if (Math.abs(n) >= 1000) return n.toLocaleString('en', { maximumFractionDigits: 0 });
  return n.toLocaleString('en', { maximumFractionDigits: digits });
}
const pct = (x) => `${fmt(100 * x, 1)}%`;
// Money: cents when it reaches a cent, else "< $0.01" (never 3.7e-5), and no "-0".
function usd(x) {
  if (!isFinite(x)) return '–';
  if (Math.abs(x) < 0.005) return x > 0 ? '< $0.01' : '$0.00';
  return `$${x.toLocaleString('en', { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

// One plot area with axes; returns helpers to map values to pixels.
function frame(canvas, xs, yMax, yLabel) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, left = 46, right = 10, top = 10, bottom = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.font = '11px system-ui, sans-serif';
  ctx.strokeStyle = COLORS.grid;
  ctx.fillStyle = COLORS.dim;
  for (let i = 0; i <= 4; i++) {
    const y = top + ((h - top - bottom) * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
    ctx.fillText(yLabel(yMax * (1 - i / 4)), 2, y + 4);
  }
  const x = (i) => left + ((w - left - right) * i) / Math.max(1, xs.length - 1);
  const y = (v) => top + (h - top - bottom) * (1 - (yMax > 0 ? v / yMax : 0));
  return { ctx, x, y, w, h, left, right, top, bottom };
}

function timeAxis(f, series) {
  const { ctx } = f;
  ctx.fillStyle = COLORS.dim;
  const label = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const last = series.length - 1;
  for (const [i, align] of [[0, 'left'], [Math.floor(last / 2), 'center'], [last, 'right']]) {
    if (!series[i]) continue;
    ctx.textAlign = align;
    ctx.fillText(label(series[i].at), f.x(i), f.h - 6);
  }
  ctx.textAlign = 'left';
}

function legend(f, entries) {
  let at = f.left + 6;
  for (const [name, color] of entries) {
    f.ctx.fillStyle = color; f.ctx.fillRect(at, f.top + 2, 10, 10);
    f.ctx.fillStyle = COLORS.ink; f.ctx.fillText(name, at + 14, f.top + 11);
    at += 18 + f.ctx.measureText(name).width + 12;
  }
}

// Lines over the series; `lines` is [[name, color, point => value | null]]. Returns points drawn.
function lineChart(canvas, series, lines, { max, label }) {
  const values = lines.flatMap(([, , get]) => series.map(get).filter((v) => v !== null));
  // An all-zero series still gets a readable 0..1 axis.
  const top = Math.max(0, ...values);
  const yMax = max ?? (top > 0 ? top * 1.1 : 1);
  const f = frame(canvas, series, yMax, label);
  let drawn = 0;
  for (const [, color, get] of lines) {
    f.ctx.strokeStyle = color; f.ctx.fillStyle = color; f.ctx.lineWidth = 2;
    f.ctx.beginPath();
    let started = false;
    series.forEach((p, i) => {
      const v = get(p);
      if (v === null) return;
      if (started) f.ctx.lineTo(f.x(i), f.y(v)); else f.ctx.moveTo(f.x(i), f.y(v));
      started = true;
    });
    f.ctx.stroke();
    series.forEach((p, i) => {
      const v = get(p);
      if (v === null) return;
      f.ctx.beginPath(); f.ctx.arc(f.x(i), f.y(v), 4, 0, 2 * Math.PI); f.ctx.fill();
      drawn++;
    });
  }
  f.ctx.lineWidth = 1;
  timeAxis(f, series);
  legend(f, lines.map(([name, color]) => [name, color]));
  canvas.dataset.points = String(drawn);
}

function similarityChart(canvas, sim, threshold) {
  const groups = [['hits', COLORS.sem], ['misses (nearest)', COLORS.miss], ['refused by a guard', COLORS.err]];
  const counts = [sim.hits, sim.misses, sim.refused];
  // A multiple of the 4 grid steps, so counts on the axis are whole numbers.
  const yMax = Math.ceil((Math.max(1, ...counts.flat()) * 1.15) / 4) * 4;
  const f = frame(canvas, sim.buckets, yMax, (v) => fmt(v, 0));
  const n = sim.buckets.length, slot = (f.w - f.left - f.right) / n, bar = slot / 4;
  const xOf = (s) => f.left + ((s - sim.buckets[0]) / (sim.buckets[1] - sim.buckets[0])) * slot;
  let drawn = 0;
  counts.forEach((values, g) => {
    f.ctx.fillStyle = groups[g][1];
    values.forEach((c, i) => {
      if (c === 0) return;
      const x = f.left + i * slot + bar * (g + 0.5);
      f.ctx.fillRect(x, f.y(c), bar - 1, f.y(0) - f.y(c));
      drawn++;
    });
  });
  f.ctx.fillStyle = COLORS.dim;
  sim.buckets.forEach((b, i) => { if (i % 2 === 0) f.ctx.fillText(b.toFixed(2), f.left + i * slot, f.h - 6); });
  const tx = xOf(threshold);
  f.ctx.strokeStyle = COLORS.threshold; f.ctx.lineWidth = 2; f.ctx.setLineDash([5, 4]);
  f.ctx.beginPath(); f.ctx.moveTo(tx, f.top); f.ctx.lineTo(tx, f.y(0)); f.ctx.stroke();
  f.ctx.setLineDash([]); f.ctx.lineWidth = 1;
  f.ctx.fillStyle = COLORS.threshold; f.ctx.fillText(`threshold ${threshold.toFixed(2)}`, tx + 4, f.top + 26);
  legend(f, groups);
  canvas.dataset.points = String(drawn);
  canvas.dataset.threshold = String(threshold);
}

function kpis(dl, r) {
  const refusals = Object.values(r.guard_refusals).reduce((a, b) => a + b, 0);
  const items = [
    ['requests', fmt(r.requests, 0)],
    ['exact hits', pct(r.exact_hit_ratio)],
    ['semantic hits', pct(r.semantic_hit_ratio)],
    ['hit p50 / miss p50', `${fmt(r.latency.semantic_hit.count + r.latency.hit.count ? Math.min(...[r.latency.hit, r.latency.semantic_hit].filter((s) => s.count).map((s) => s.p50)) : NaN)} / ${fmt(r.latency.miss.count ? r.latency.miss.p50 : NaN)} ms`],
    ['time saved', `${fmt(r.latency_saved_ms / 1000, 1)} s`],
    ['tokens saved', fmt(r.tokens_saved, 0)],
    ['cost saved', usd(r.cost_saved_usd)],
    ['errors / retries', `${pct(r.error_ratio)} / ${pct(r.retry_ratio)}`],
    ['guard refusals', fmt(refusals, 0)],
    [`near misses (−${r.near_misses.band})`, `${fmt(r.near_misses.count, 0)} · ${pct(r.near_misses.share_of_misses)}`],
  ];
  dl.replaceChildren(...items.map(([name, value]) => {
    const div = document.createElement('div');
    const dt = document.createElement('dt'); dt.textContent = name;
    const dd = document.createElement('dd'); dd.textContent = value; dd.dataset.kpi = name;
    div.append(dt, dd);
    return div;
  }));
}

function drawRoute(section, r) {
  section.dataset.route = r.route;
  section.querySelector('h2').textContent = `route ${r.route}`;
  kpis(section.querySelector('.kpis'), r);
  const chart = (name) => section.querySelector(`canvas[data-chart="${name}"]`);
  const busy = (get) => (p) => (p.requests > 0 ? get(p) : null);
  lineChart(chart('hits'), r.series, [
    ['any tier', COLORS.hit, busy((p) => p.hit_ratio)],
    ['semantic', COLORS.sem, busy((p) => p.semantic_hit_ratio)],
  ], { max: 1, label: (v) => `${Math.round(100 * v)}%` });
  lineChart(chart('latency'), r.series, [
    ['hits', COLORS.hit, (p) => (p.hit_ratio > 0 ? p.hit_p50_ms : null)],
    ['misses', COLORS.miss, (p) => (p.requests > 0 && p.hit_ratio < 1 && p.miss_p50_ms > 0 ? p.miss_p50_ms : null)],
  ], { label: (v) => fmt(v, 1) });
  let total = 0;
  const cumulative = r.series.map((p) => (total += p.cost_saved_usd));
  lineChart(chart('savings'), r.series.map((p, i) => ({ ...p, cumulative: cumulative[i] })), [
    ['saved', COLORS.hit, (p) => p.cumulative],
  ], { label: (v) => (v < 0.01 && v > 0 ? v.toExponential(0) : fmt(v, 2)) });
  lineChart(chart('errors'), r.series, [
    ['errors', COLORS.err, busy((p) => p.error_ratio)],
    ['retried', COLORS.retry, busy((p) => p.retry_ratio)],
  ], { max: 1, label: (v) => `${Math.round(100 * v)}%` });
  similarityChart(chart('similarity'), r.similarity, r.threshold);
}

async function refresh() {
  const status = $('status');
  const windowValue = $('window').value;
  let res;
  try {
    res = await fetch(`/v1/analytics/cache?window=${encodeURIComponent(windowValue)}&buckets=30`, {
      headers: { 'x-portkey-api-key': key() },
    });
  } catch (e) {
    status.textContent = `deja unreachable: ${e.message}`; status.className = 'error';
    return;
  }
  if (res.status === 401 || res.status === 403) {
    $('login').hidden = false;
    status.textContent = 'admin key needed'; status.className = 'error';
    return;
  }
  const body = await res.json();
  if (!res.ok) {
    status.textContent = body.error?.message ?? `HTTP ${res.status}`; status.className = 'error';
    return;
  }
  $('login').hidden = true;
  const main = $('routes');
  if (body.routes.length === 0) {
    main.innerHTML = '<p class="empty">No chat completions in this window yet.</p>';
  } else {
    const seen = new Set();
    for (const r of body.routes) {
      seen.add(r.route);
      let section = [...main.querySelectorAll('section.route')].find((s) => s.dataset.route === r.route);
      if (!section) {
        main.querySelector('.empty')?.remove();
        section = $('route-template').content.firstElementChild.cloneNode(true);
        main.append(section);
      }
      drawRoute(section, r);
    }
    main.querySelectorAll('section.route').forEach((s) => { if (!seen.has(s.dataset.route)) s.remove(); });
  }
  await refreshLog();
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  status.textContent = `updated ${new Date().toLocaleTimeString()}`; status.className = '';
}

// The request log, newest first, filtered; a click on a row shows its prompt and answer.
const CACHE_LABEL = { hit: 'HIT', semantic_hit: 'SEMANTIC HIT', miss: 'MISS', refresh: 'REFRESH', disabled: 'DISABLED', none: '–' };
const CACHE_CLASS = { hit: 'hit', semantic_hit: 'semantic', miss: 'miss' };
const opened = new Set();

async function refreshLog() {
  const params = new URLSearchParams({ limit: '50' });
  for (const [name, id] of [['route', 'f-route'], ['status', 'f-status'], ['cache_status', 'f-cache']]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  const res = await fetch(`/v1/logs?${params}`, { headers: { 'x-portkey-api-key': key() } });
  if (!res.ok) return;
  const rows = (await res.json()).data;
  const body = $('log').tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const tr = body.insertRow();
    tr.className = 'row';
    tr.dataset.id = r.id;
    const cells = [
      new Date(r.at).toLocaleTimeString(), r.route, r.model, r.status,
      CACHE_LABEL[r.cache_status] ?? r.cache_status,
      r.similarity == null ? '' : r.similarity.toFixed(3),
      `${fmt(r.latency_ms, 1)} ms`, r.tokens, usd(r.cost_usd), Math.max(0, r.attempts - 1),
      r.target,
    ];
    for (const value of cells) tr.insertCell().textContent = String(value);
    tr.cells[4].className = CACHE_CLASS[r.cache_status] ?? '';
    tr.addEventListener('click', () => {
      if (opened.has(r.id)) opened.delete(r.id); else opened.add(r.id);
      refreshLog();
    });
    if (opened.has(r.id)) {
      const detail = body.insertRow();
      detail.className = 'bodies';
      const cell = detail.insertCell();
      cell.colSpan = cells.length;
      cell.textContent = r.prompt == null && r.answer == null
        ? 'Bodies are not kept ([log] bodies = false).'
        : `prompt: ${r.prompt ?? ''}\n\nanswer: ${r.answer ?? ''}`;
    }
  }
  $('requests').hidden = false;
  document.body.dataset.logRows = String(rows.length);
}

function schedule() {
  clearInterval(timer);
  const fromQuery = new URLSearchParams(location.search).get('refresh');
  if (fromQuery) $('refresh').value = fromQuery;
  const seconds = Number($('refresh').value || fromQuery);
  if (seconds > 0) timer = setInterval(refresh, seconds * 1000);
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('deja-key', $('key').value.trim());
  refresh();
});
$('window').addEventListener('change', refresh);
$('log-filters').addEventListener('input', refreshLog);
$('log-filters').addEventListener('submit', (e) => e.preventDefault());
$('refresh').addEventListener('change', () => { history.replaceState(null, '', location.pathname); schedule(); });
schedule();
refresh();
