"""The attribution report's ``index.html``: the summary (tables, plots) and the works table, whose
rows are the sidecar parts ``sao.attribution.report_works`` writes.

The page script adds ``<script src="works/part-NNNN.js">`` elements itself (a file:// page may run
those, never fetch() them): the part of the page shown at open, every part once a search, a sort
or the hash asks for all works. ``index.html#q=TEXT&sort=-2&page=3`` opens it filtered (a match
lies within one field, case-insensitive), sorted by a column (0 id ... 4 source, ``-`` descending,
natural order: digit runs compare as numbers) and paged (500 rows a page); a click on a header
sorts by it, again reverses. The script writes what it did on <body>: ``data-matches`` (works
matching), ``data-parts-loaded``, ``data-works-ready-ms`` (performance.now() once every part ran),
``data-search-ms`` (the last search, sort and render) and ``data-search-done-ms`` (performance.now()
after it), which headless Chromium's --dump-dom shows (the tests and bench/attribution_bench.py read
them). When the hash asks for all works, every part is added while the page is still loading, so
its load event, and --dump-dom, wait for them.

Only a part's link field makes a href (see report_works), named by the URL without its scheme
("freesound.org/s/123"); every text is escaped (& < > " ') before it goes into the table.
"""
from __future__ import annotations

import re

PAGE = r"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Attribution: {{name}}</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}td.n{text-align:right}
.plots img{max-width:48%;margin:4px;border:1px solid #eee}#search{width:30em;padding:4px}
#works th{cursor:pointer;user-select:none;white-space:nowrap}#works th[aria-sort=ascending]::after{content:" \25b2"}
#works th[aria-sort=descending]::after{content:" \25bc"}</style></head>
<body data-plots-rendered="0">
<h1>Attribution report: release <code>{{name}}</code> (version {{version}})</h1>
<p>Content sha256 <code>{{sha}}</code>, created {{created}} UTC. <b>{{total}} recordings, {{hours}} hours.</b></p>
<p id="model-use">{{model_use}}</p>
{{uncalibrated}}<h2>Recordings and hours per source and license</h2>
<table id="licenses"><tr><th>source</th><th>license</th><th>SPDX</th><th>recordings</th><th>hours</th></tr>{{table}}</table>
<h2>Excluded recordings</h2>
<table id="exclusions"><tr><th>reason</th><th>recordings</th></tr>{{excl}}</table>
<h2>Plots</h2><div class="plots">{{plots}}</div>
<h2>Every attributed work</h2>
<p><input id="search" type="search" placeholder="filter by title, author, license, id..."> <span id="shown"></span>
<button id="prev" type="button">&lsaquo; previous</button> <button id="next" type="button">next &rsaquo;</button></p>
<table id="works"><thead><tr><th data-col="0" aria-sort="none" title="sort by id">id</th>
<th data-col="1" aria-sort="none" title="sort by title">title</th>
<th data-col="2" aria-sort="none" title="sort by author">author</th>
<th data-col="3" aria-sort="none" title="sort by license">license</th>
<th data-col="4" aria-sort="none" title="sort by source">source</th></tr></thead>
<tbody></tbody></table>
<script id="works-index" type="application/json">{{works}}</script>
<script>
(function () {
'use strict';
const INDEX = JSON.parse(document.getElementById('works-index').textContent);
const PARTS = INDEX.parts, TOTAL = INDEX.total, PAGE = 500;
const START = [];                       // global index of each part's first work
PARTS.reduce((n, p, i) => (START[i] = n) + p.rows, 0);
const part = new Array(PARTS.length), requested = new Set(), keyOf = {};
let loaded = 0, failed = null, ready = false;
const st = {q: '', col: null, desc: false, page: 0};
const B = document.body.dataset;
const box = document.getElementById('search'), shown = document.getElementById('shown');
const body = document.querySelector('#works tbody');
const ESC = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'};
function esc(s) { return s == null ? '' : String(s).replace(/[&<>"']/g, c => ESC[c]); }
function request(i) {
  if (requested.has(i)) return;
  requested.add(i);
  const s = document.createElement('script');
  s.src = PARTS[i].file;
  s.onerror = () => { failed = PARTS[i].file; update(); };
  document.head.appendChild(s);
}
function needAll() { for (let i = 0; i < PARTS.length; i++) request(i); return ready; }
function lineStarts(t, n) {             // where each of a text's n lines starts, and one past its end
  const s = new Int32Array(n + 1);
  let k = 1;
  for (let p = t.indexOf('\n'); p !== -1 && k < n; p = t.indexOf('\n', p + 1)) s[k++] = p + 1;
  s[n] = t.length + 1;
  return s;
}
window.saoWorks = function (i, w) {
  if (!Number.isInteger(i) || i < 0 || i >= PARTS.length || part[i] || !w || typeof w.text !== 'string' ||
      typeof w.links !== 'string' || w.n !== PARTS[i].rows) return;
  w.starts = lineStarts(w.text, w.n);
  part[i] = w;
  B.partsLoaded = ++loaded;
  if (loaded === PARTS.length) { ready = true; B.worksReadyMs = performance.now().toFixed(1); }
  update();
};
function locate(g) { let i = PARTS.length - 1; while (START[i] > g) i--; return i; }
function row(g) {                       // work g: [id, title, author, license, url] and its href (or null)
  const i = locate(g), w = part[i], k = g - START[i];
  const f = w.text.slice(w.starts[k], w.starts[k + 1] - 1).split('\t');
  const flag = w.links[k];
  f.href = flag === '1' ? f[4] : flag === '2' && w.cleaned && typeof w.cleaned[k] === 'string' ? w.cleaned[k] : null;
  return f;
}
function hay(w) {                       // the part's text lowercased, as searched: a match lies in one field
  if (!w.hay) {
    w.hay = w.text.toLowerCase();
    w.hayStarts = w.hay.length === w.text.length ? w.starts : lineStarts(w.hay, w.n);
  }
  return w.hay;
}
function search(q) {
  const out = [];
  for (let i = 0; i < PARTS.length; i++) {
    const w = part[i];
    if (!w.n) continue;
    const t = hay(w), s = w.hayStarts;
    for (let p = t.indexOf(q); p !== -1;) {
      let lo = 0, hi = w.n - 1;
      while (lo < hi) { const m = (lo + hi + 1) >> 1; if (s[m] <= p) lo = m; else hi = m - 1; }
      out.push(START[i] + lo);
      p = lo + 1 < w.n ? t.indexOf(q, s[lo + 1]) : -1;
    }
  }
  return out;
}
function keys(c) {                      // a column's sort keys, natural order (digit runs as numbers)
  if (!keyOf[c]) {
    const k = new Array(TOTAL), pad = d => d.padStart(20, '0');
    let g = 0;
    for (const w of part) {
      if (!w.n) continue;
      for (const line of w.text.split('\n')) {
        let f = line.split('\t', c + 1)[c].toLowerCase();
        if (c === 4) f = f.replace(/^https?:\/\//, '');      // as the source column names it
        k[g++] = /\d/.test(f) ? f.replace(/\d+/g, pad) : f;
      }
    }
    keyOf[c] = k;
  }
  return keyOf[c];
}
function rowHtml(f) {
  const name = f.href ? f.href.replace(/^https?:\/\//i, '').replace(/\/$/, '') : '';
  const src = f.href ? `<a href="${esc(f.href)}" title="${esc(f.href)}">${esc(name)}</a>` : esc(f[4]);
  return `<tr data-id="${esc(f[0])}"><td>${esc(f[0])}</td><td>${esc(f[1])}</td><td>${esc(f[2])}</td>` +
    `<td>${esc(f[3])}</td><td>${src}</td></tr>`;
}
function show(list, n, t0) {           // list: global work numbers, or null for every work in order
  const pages = Math.max(1, Math.ceil(n / PAGE));
  st.page = Math.min(Math.max(0, st.page), pages - 1);
  const from = st.page * PAGE, to = Math.min(n, from + PAGE), html = [];
  for (let k = from; k < to; k++) {
    const g = list ? list[k] : k, i = locate(g);
    if (!part[i]) { request(i); shown.textContent = 'loading works...'; return; }
    html.push(rowHtml(row(g)));
  }
  body.innerHTML = html.join('');
  shown.textContent = `${n.toLocaleString('en')} of ${TOTAL.toLocaleString('en')} works match` +
    (n > PAGE ? ` (rows ${(from + 1).toLocaleString('en')}-${to.toLocaleString('en')} shown)` : '');
  document.getElementById('prev').disabled = st.page === 0;
  document.getElementById('next').disabled = st.page >= pages - 1;
  document.querySelectorAll('#works th').forEach(th => th.setAttribute('aria-sort',
    +th.dataset.col === st.col ? (st.desc ? 'descending' : 'ascending') : 'none'));
  B.matches = n;
  B.searchMs = (performance.now() - t0).toFixed(1);
  B.searchDoneMs = performance.now().toFixed(1);
}
function update() {
  const t0 = performance.now();
  if (failed) { shown.textContent = `could not load ${failed} (keep the works/ folder beside index.html)`; return; }
  const q = st.q.toLowerCase().replace(/[\t\n\r]/g, ' ').trim();
  if (!q && st.col === null) return show(null, TOTAL, t0);
  if (!needAll()) { shown.textContent = `loading works (${loaded} of ${PARTS.length} parts)...`; return; }
  let list = q ? search(q) : Array.from({length: TOTAL}, (_, g) => g);
  if (st.col !== null) {
    const k = keys(st.col), d = st.desc ? -1 : 1;
    list.sort((a, b) => (k[a] < k[b] ? -d : k[a] > k[b] ? d : a - b));
  }
  show(list, list.length, t0);
}
function toHash() {
  const h = [];
  if (st.q) h.push('q=' + encodeURIComponent(st.q));
  if (st.col !== null) h.push('sort=' + (st.desc ? '-' : '') + st.col);
  if (st.page) h.push('page=' + (st.page + 1));
  try { history.replaceState(null, '', '#' + h.join('&')); } catch (e) { /* a page that cannot be re-addressed */ }
}
function fromHash() {
  for (const kv of location.hash.replace(/^#/, '').split('&')) {
    const at = kv.indexOf('=');
    if (at < 0) continue;
    const k = kv.slice(0, at);
    let v = kv.slice(at + 1);
    try { v = decodeURIComponent(v); } catch (e) { /* keep it as written */ }
    if (k === 'q') st.q = v;
    if (k === 'sort' && /^-?[0-4]$/.test(v)) { st.desc = v[0] === '-'; st.col = Math.abs(+v); }
    if (k === 'page' && /^[0-9]+$/.test(v)) st.page = Math.max(0, +v - 1);
  }
  box.value = st.q;
}
box.addEventListener('focus', () => needAll());
box.addEventListener('input', () => { st.q = box.value; st.page = 0; toHash(); update(); });
document.querySelectorAll('#works th').forEach(th => th.addEventListener('click', () => {
  const c = +th.dataset.col;
  st.desc = st.col === c ? !st.desc : false;
  st.col = c; st.page = 0; toHash(); update();
}));
document.getElementById('prev').addEventListener('click', () => { st.page--; toHash(); update(); });
document.getElementById('next').addEventListener('click', () => { st.page++; toHash(); update(); });
fromHash();
request(0);
update();
function plotsDone() {
  B.plotsRendered = [...document.querySelectorAll('.plots img')].filter(i => i.complete && i.naturalWidth > 0).length;
}
document.querySelectorAll('.plots img').forEach(i => i.addEventListener('load', plotsDone));
plotsDone();
})();
</script></body></html>
"""


def render(fields: dict[str, str]) -> str:
    """PAGE with every {{key}} replaced by fields[key], in one pass (a value is never read for keys)."""
    return re.sub(r"\{\{(\w+)\}\}", lambda m: fields[m.group(1)], PAGE)
