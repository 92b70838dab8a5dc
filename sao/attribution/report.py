"""The attribution report of one release (``attribution/releases/NAME/``).

Files: ``attribution-<source>.csv`` in the published Stable Audio Open format
(id,title,author,license,url), ``attribution-tasl.csv`` (title, author, source link, license with
version and link, for every item), each source's own attribution lines where it has them
(``Source.own_attribution_file``: ``freesound-attribution.txt``, Freesound's own line per
Freesound item), ``summary.json``, ``report.md`` with ``plots/*.png``, and ``index.html``: one
self-contained page with the paper-style table, exclusion counts, plots and a searchable table
of every attributed work (``index.html#q=TEXT`` opens it filtered). Every count comes from a
DuckDB query over the release's rows. The folder is written beside its final name and renamed.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import pathlib
import shutil
import tempfile
import time
import urllib.parse
from typing import Any

from ..catalog import Catalog
from ..licensing.attribution import license_name_with_version
from ..licensing.gate import shown
from ..licensing.model_use import BY_NAME as MODEL_USES_BY_NAME
from ..licensing.table import BY_ID, license_name
from ..sources import SOURCES
from . import policy
from .release import check_name, get_release, uncalibrated_admissions

LINK_SCHEMES = ("http", "https")        # the only URLs that become links; everything else is shown as text
# what a browser drops from a URL before reading its scheme: tab/CR/LF anywhere, C0 controls and
# spaces at either end (so "java\tscript:" and " javascript:" are javascript: to it)
_URL_DROPPED = str.maketrans("", "", "\t\r\n")
_URL_ENDS = "".join(map(chr, range(0x21)))
_SCRIPT_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                      "\u2028": "\\u2028", "\u2029": "\\u2029"})


def link_url(url: Any) -> str | None:
    """The URL to put in an href, or None when it must stay text: only an absolute http(s) URL with
    a host, read the way a browser reads it (exact scheme allow-list, case-insensitive)."""
    if not isinstance(url, str):
        return None
    cleaned = url.translate(_URL_DROPPED).strip(_URL_ENDS)
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in cleaned):
        return None
    try:
        parts = urllib.parse.urlsplit(cleaned)
        host = parts.hostname
    except ValueError:                  # e.g. an unbalanced [IPv6] host
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not host:
        return None
    return cleaned


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no "<", ">" or "&" (so no </script>, <!-- or <script
    can end the element or switch the HTML parser's script states) and no U+2028/2029."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_JSON_ESCAPES)



def license_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source and license, by the license table's human name ("CC BY 4.0"): the version is
    part of the attribution, so 3.0 and 4.0 stay apart. Within a source, rows follow the table's rank."""
    def rank(c: str) -> int:
        return BY_ID[c].rank if c in BY_ID else len(BY_ID)
    rows = sorted(rows, key=lambda r: (r["source"], rank(r["license_canonical"]), r["license_canonical"]))
    return [{"source": r["source"], "license": license_name(r["license_canonical"]), "recordings": r["n"],
             "hours": round(r["seconds"] / 3600, 2)} for r in rows]


def model_use_statement(use: Any) -> dict[str, Any]:
    """What the report says about the model use a release was built for (releases.model_use): its name, what
    the person who declared it promised, and which gen_ai_preference values that let in (sao.licensing.model_use)."""
    row = MODEL_USES_BY_NAME.get(use) if isinstance(use, str) else None
    if row is None:
        text = ("Model use: not recorded (this release was made before [policy].model_use existed)." if use is None
                else f"Model use {shown(use)}: not one that sao.licensing.model_use knows.")
        return {"name": use, "summary": None, "admitted_gen_ai_preferences": None, "text": text}
    admitted = sorted(row.admits)
    return {"name": row.name, "summary": row.summary, "admitted_gen_ai_preferences": admitted,
            "text": f"Built for model use {row.name} ({row.summary}). A Freesound recording was admitted only when "
                    f"its author's gen_ai_preference admits this use: {', '.join(admitted)}, or none stated."}


def summary(cat: Catalog, name: str) -> dict[str, Any]:
    rel = get_release(cat, name)
    q = lambda sql, extra=(): cat.query(sql, [name, *extra])  # noqa: E731
    table = license_table(q("SELECT source, license_canonical, count(*) AS n, coalesce(sum(duration), 0) AS seconds "
                            "FROM release_items WHERE release_name = ? GROUP BY ALL"))
    by_source = q("SELECT source, count(*) AS recordings, round(coalesce(sum(duration), 0) / 3600, 2) AS hours "
                  "FROM release_items WHERE release_name = ? GROUP BY ALL ORDER BY source")
    total = q("SELECT count(*) AS recordings, round(coalesce(sum(duration), 0) / 3600, 2) AS hours "
              "FROM release_items WHERE release_name = ?")[0]
    exclusions = {r["reason"]: r["n"] for r in q(
        "SELECT reason, count(*) AS n FROM release_exclusions WHERE release_name = ? GROUP BY ALL")}
    tags = q("SELECT tag, count(*) AS n FROM (SELECT unnest(tags) AS tag FROM release_items WHERE release_name = ?) "
             "GROUP BY ALL ORDER BY n DESC, tag LIMIT 20")
    rates = q("SELECT coalesce(CAST(sample_rate AS VARCHAR), 'unknown') AS k, count(*) AS n FROM release_items "
              "WHERE release_name = ? GROUP BY ALL ORDER BY n DESC")
    channels = q("SELECT coalesce(CAST(channels AS VARCHAR), 'unknown') AS k, count(*) AS n FROM release_items "
                 "WHERE release_name = ? GROUP BY ALL ORDER BY n DESC")
    cc_by_missing = q("SELECT count(*) AS n FROM release_items WHERE release_name = ? AND license_canonical LIKE "
                      "'cc-by-%' AND (coalesce(title, '') = '' OR coalesce(author, '') = '' OR coalesce(url, '') = '' "
                      "OR coalesce(license_url, '') = '')")[0]["n"]
    return {
        "release": {k: (str(v) if k == "created_at" else v) for k, v in rel.items()},
        "table": table, "by_source": by_source, "total": total,
        "exclusions": {r: exclusions.get(r, 0) for r in policy.EXCLUSION_REASONS},
        "top_tags": tags, "sample_rates": rates, "channels": channels, "cc_by_missing_tasl": cc_by_missing,
        "uncalibrated_admissions": uncalibrated_admissions(cat, name),
        "model_use": model_use_statement(rel.get("model_use")),
    }


def _plots(cat: Catalog, name: str, s: dict[str, Any]) -> dict[str, bytes]:
    import logging

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)   # numeric-looking labels are fine
    durations = np.array([r[0] for r in cat.con.execute(
        "SELECT duration FROM release_items WHERE release_name = ? AND duration IS NOT NULL", [name]).fetchall()],
        dtype=float)
    out = {}

    def save(fig, key):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        out[key] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(6, 3.2))
    if len(durations):
        ax.hist(np.clip(durations, 0, 600), bins=60, color="#3a6ea5")
    ax.set_xlabel("duration (s, clipped at 600)")
    ax.set_ylabel("recordings")
    ax.set_title("Duration histogram")
    save(fig, "durations")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = [f"{r['source']} {r['license']}" for r in s["table"]]
    ax.barh(labels, [r["hours"] for r in s["table"]], color="#6a9f58")
    ax.set_xlabel("hours")
    ax.set_title("License shares (hours)")
    save(fig, "licenses")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    tags = s["top_tags"][::-1]
    ax.barh([t["tag"] for t in tags], [t["n"] for t in tags], color="#c7783a")
    ax.set_title("Top tags")
    save(fig, "tags")
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2))
    for ax, key, title in ((axes[0], "sample_rates", "Sample rates"), (axes[1], "channels", "Channels")):
        rows = s[key][:8]
        ax.bar([r["k"] for r in rows], [r["n"] for r in rows], color="#7f5fa8")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
    save(fig, "format")
    return out


def own_attribution_files() -> dict[str, str]:
    """{source: file of its own attribution lines} for the sources that have them."""
    return {n: s.own_attribution_file for n, s in SOURCES.items() if s.own_attribution_file}


def _write_csvs(cat: Catalog, name: str, folder: pathlib.Path) -> dict[str, int]:
    written: dict[str, int] = {}
    cur = cat.con.execute(
        "SELECT recording_id, source, source_id, title, author, license_canonical, license_url, url, attribution_line "
        "FROM release_items WHERE release_name = ? ORDER BY source, recording_id", [name])
    files: dict[str, Any] = {}
    writers: dict[str, Any] = {}
    tasl_f = open(folder / "attribution-tasl.csv", "w", newline="", encoding="utf-8")
    # every source's own file is written, empty when the release holds none of its items
    own = {src: open(folder / fn, "w", encoding="utf-8") for src, fn in own_attribution_files().items()}
    try:
        tasl = csv.writer(tasl_f)
        tasl.writerow(["recording_id", "source", "id", "title", "author", "source_url", "license", "license_name",
                       "license_url", "attribution_line"])
        while rows := cur.fetchmany(50_000):
            for rid, source, sid, title, author, lic, lic_url, url, line in rows:
                if source not in writers:
                    files[source] = open(folder / f"attribution-{source}.csv", "w", newline="", encoding="utf-8")
                    writers[source] = csv.writer(files[source])
                    writers[source].writerow(policy.PUBLISHED_COLUMNS)
                writers[source].writerow([sid, title or "", author or "", policy.published_license(lic), url or ""])
                written[source] = written.get(source, 0) + 1
                tasl.writerow([rid, source, sid, title or "", author or "", url or "", lic,
                               license_name_with_version(lic), lic_url or "", line or ""])
                if source in own:
                    own[source].write(line + "\n")
    finally:
        for f in (*files.values(), tasl_f, *own.values()):
            f.close()
    return written


def _markdown(s: dict[str, Any], files: dict[str, int]) -> str:
    rel = s["release"]
    lines = [f"# Attribution report: release `{rel['name']}` (version {rel['version']})", "",
             f"Content sha256 `{rel['content_sha256']}`, created {rel['created_at']} UTC, admitted by the latest "
             f"`{'`, `'.join(rel['required_stages'] or [])}` decisions.", "",
             html.escape(s["model_use"]["text"], quote=False), "",     # a renderer may pass HTML through
             f"**{s['total']['recordings']:,} recordings, {s['total']['hours']:,} hours.**", "",
             *(["**UNCALIBRATED**: recordings admitted by decisions made with random weights ("
                + ", ".join(f"{k}: {v:,}" for k, v in s["uncalibrated_admissions"].items())
                + "). This release checks the pipeline; it is not a curated dataset.", ""]
               if s["uncalibrated_admissions"] else []),
             "| source | license | recordings | hours |", "|---|---|---:|---:|"]
    lines += [f"| {r['source']} | {r['license']} | {r['recordings']:,} | {r['hours']:,} |" for r in s["table"]]
    lines += ["", "## Excluded recordings", "", "| reason | recordings |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in s["exclusions"].items()]
    lines += ["", "## Files", ""]
    lines += [f"- `attribution-{src}.csv`: {n:,} rows in the published format (id,title,author,license,url)"
              for src, n in sorted(files.items())]
    lines += ["- `attribution-tasl.csv`: title, author, source link, license with version and link, every item",
              *(f"- `{fn}`: {SOURCES[src].title}'s own attribution line per {SOURCES[src].title} item"
                for src, fn in own_attribution_files().items()),
              "- `index.html`: this report with a searchable table of every attributed work", "", "## Plots", ""]
    lines += [f"![{k}](plots/{k}.png)" for k in ("durations", "licenses", "tags", "format")]
    return "\n".join(lines) + "\n"


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Attribution: {name}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}td.n{{text-align:right}}
.plots img{{max-width:48%;margin:4px;border:1px solid #eee}}#search{{width:30em;padding:4px}}</style></head>
<body data-plots-rendered="0">
<h1>Attribution report: release <code>{name}</code> (version {version})</h1>
<p>Content sha256 <code>{sha}</code>, created {created} UTC. <b>{total:,} recordings, {hours:,} hours.</b></p>
<p id="model-use">{model_use}</p>
{uncalibrated}<h2>Recordings and hours per source and license</h2>
<table id="licenses"><tr><th>source</th><th>license</th><th>recordings</th><th>hours</th></tr>{table}</table>
<h2>Excluded recordings</h2>
<table id="exclusions"><tr><th>reason</th><th>recordings</th></tr>{excl}</table>
<h2>Plots</h2><div class="plots">{plots}</div>
<h2>Every attributed work</h2>
<p><input id="search" type="search" placeholder="filter by title, author, license, id..."> <span id="shown"></span></p>
<table id="works"><thead><tr><th>id</th><th>title</th><th>author</th><th>license</th><th>source</th></tr></thead>
<tbody></tbody></table>
<script id="rows" type="application/json">{rows}</script>
<script>
const ROWS = JSON.parse(document.getElementById('rows').textContent);
const LIMIT = 500;
function esc(s) {{ const d = document.createElement('div'); d.textContent = s == null ? '' : String(s); return d.innerHTML; }}
function render(q) {{
  q = (q || '').toLowerCase().trim();
  const hits = q ? ROWS.filter(r => r.join(' ').toLowerCase().includes(q)) : ROWS;
  const body = document.querySelector('#works tbody');
  body.innerHTML = hits.slice(0, LIMIT).map(r =>
    `<tr data-id="${{esc(r[0])}}"><td>${{esc(r[0])}}</td><td>${{esc(r[1])}}</td><td>${{esc(r[2])}}</td>` +
    `<td>${{esc(r[3])}}</td><td>${{r[5] ? `<a href="${{esc(r[5])}}">link</a>` : esc(r[4])}}</td></tr>`).join('');
  document.getElementById('shown').textContent =
    `${{hits.length}} of ${{ROWS.length}} works match` + (hits.length > LIMIT ? ` (first ${{LIMIT}} shown)` : '');
  document.body.dataset.matches = hits.length;
}}
const box = document.getElementById('search');
box.addEventListener('input', () => render(box.value));
const fromHash = decodeURIComponent((location.hash.match(/q=([^&]*)/) || [])[1] || '');
box.value = fromHash; render(fromHash);
function plotsDone() {{
  document.body.dataset.plotsRendered =
    [...document.querySelectorAll('.plots img')].filter(i => i.complete && i.naturalWidth > 0).length;
}}
document.querySelectorAll('.plots img').forEach(i => i.addEventListener('load', plotsDone));
plotsDone();
</script></body></html>
"""


def _html(cat: Catalog, name: str, s: dict[str, Any], plots: dict[str, bytes]) -> str:
    e = html.escape
    rel = s["release"]
    table = "".join(f"<tr><td>{e(r['source'])}</td><td>{e(r['license'])}</td><td class=n>{r['recordings']}</td>"
                    f"<td class=n>{r['hours']}</td></tr>" for r in s["table"])
    excl = "".join(f"<tr><td>{e(k)}</td><td class=n>{v}</td></tr>" for k, v in s["exclusions"].items())
    imgs = "".join(f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
                   for k, v in plots.items())
    # the last field is the only one the page script turns into a link: an allowed URL or null
    rows = [[rid, title, author, license_name_with_version(lic), url, link_url(url)]
            for rid, title, author, lic, url in cat.con.execute(
                "SELECT recording_id, title, author, license_canonical, url FROM release_items "
                "WHERE release_name = ? ORDER BY recording_id", [name]).fetchall()]
    data = script_json(rows)
    return _PAGE.format(name=e(name), version=rel["version"], sha=e(rel["content_sha256"]), created=e(rel["created_at"]),
                        total=s["total"]["recordings"], hours=s["total"]["hours"], table=table, excl=excl, plots=imgs,
                        rows=data, uncalibrated=_uncalibrated_banner(s["uncalibrated_admissions"]),
                        model_use=e(s["model_use"]["text"]))


def _uncalibrated_banner(unc: dict[str, int]) -> str:
    if not unc:
        return ""
    per = ", ".join(f"{html.escape(k)}: {v:,}" for k, v in unc.items())
    return (f'<p id="uncalibrated" style="border:2px solid #c00;padding:6px"><b>UNCALIBRATED</b>: recordings '
            f"admitted by decisions made with random weights ({per}). This release checks the pipeline; it is "
            "not a curated dataset.</p>\n")


def build_report(cat: Catalog, name: str, releases_root: str | pathlib.Path) -> dict[str, Any]:
    check_name(name)
    t0 = time.perf_counter()
    root = pathlib.Path(releases_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    work = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        s = summary(cat, name)
        files = _write_csvs(cat, name, work)
        plots = _plots(cat, name, s)
        (work / "plots").mkdir()
        for k, v in plots.items():
            (work / "plots" / f"{k}.png").write_bytes(v)
        (work / "summary.json").write_text(json.dumps(dict(s, files=files), indent=1, default=str))
        (work / "report.md").write_text(_markdown(s, files), encoding="utf-8")
        (work / "index.html").write_text(_html(cat, name, s, plots), encoding="utf-8")
        if final.exists():                     # replace a previous report of the same release
            old = root / f".{name}.old-{os.getpid()}"
            final.rename(old)
            work.rename(final)
            shutil.rmtree(old)
        else:
            work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"release": name, "folder": str(final), "html": str(final / "index.html"),
            "markdown": str(final / "report.md"), "recordings": s["total"]["recordings"], "files": files,
            "seconds": round(time.perf_counter() - t0, 2)}
