"""The attribution report of one release (``attribution/releases/NAME/``).

Files: ``attribution-<source>.csv`` in the published Stable Audio Open format
(id,title,author,license,url), ``attribution-tasl.csv`` (title, author, source link, license with
version and link, for every item), each source's own attribution lines where it has them
(``Source.own_attribution_file``: ``freesound-attribution.txt``, Freesound's own line per
Freesound item), ``summary.json``, ``report.md`` with ``plots/*.png``, and ``index.html``: the
paper-style table, exclusion counts, plots and a searchable, sortable, paged table of every
attributed work (``index.html#q=TEXT`` opens it filtered), whose rows are the sidecar parts
``works/part-*.js`` (``report_works``) the page loads when it needs them, so the page stays small
and the folder still opens from disk. Every count comes from a DuckDB query over the release's
rows. The folder is written beside its final name and renamed.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any

from ..catalog import Catalog
from ..fsutil import is_remote, local_part, output_folder
from ..licensing.attribution import license_name_with_version
from ..licensing.gate import shown
from ..licensing.model_use import BY_NAME as MODEL_USES_BY_NAME
from ..licensing.table import BY_ID, license_name, spdx_id
from ..sources import SOURCES
from . import policy, publish
from .release import check_name, get_release, uncalibrated_admissions
from .report_page import render as _render_page
from .report_works import LINK_SCHEMES, PART_ROWS, link_url, script_json, write_works  # noqa: F401


def hours_text(seconds: float | None) -> str:
    """Hours as a table shows them: one decimal from 10 h, else two significant digits (a few
    minutes read 0.05, not 0.0); a tiny release's hours are never shown as nothing."""
    h = (seconds or 0) / 3600
    if h <= 0:
        return "0"
    if h >= 10:
        return f"{h:,.1f}"
    return f"{h:,.{max(1, 1 - math.floor(math.log10(h)))}f}"


def license_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source and license, by the license table's human name ("CC BY 4.0"): the version is
    part of the attribution, so 3.0 and 4.0 stay apart. Within a source, rows follow the table's rank."""
    def rank(c: str) -> int:
        return BY_ID[c].rank if c in BY_ID else len(BY_ID)
    rows = sorted(rows, key=lambda r: (r["source"], rank(r["license_canonical"]), r["license_canonical"]))
    return [{"source": r["source"], "license": license_name(r["license_canonical"]),
             "spdx": spdx_id(r["license_canonical"]), "license_canonical": r["license_canonical"],
             "recordings": r["n"], "hours": round(r["seconds"] / 3600, 2), "hours_text": hours_text(r["seconds"]),
             "seconds": r["seconds"]} for r in rows]


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
    by_source = q("SELECT source, count(*) AS recordings, round(coalesce(sum(duration), 0) / 3600, 2) AS hours, "
                  "coalesce(sum(duration), 0) AS seconds FROM release_items WHERE release_name = ? GROUP BY ALL "
                  "ORDER BY source")
    total = q("SELECT count(*) AS recordings, round(coalesce(sum(duration), 0) / 3600, 2) AS hours, "
              "coalesce(sum(duration), 0) AS seconds FROM release_items WHERE release_name = ?")[0]
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
    durations = np.asarray(cat.con.execute(
        "SELECT CAST(duration AS DOUBLE) AS d FROM release_items WHERE release_name = ? AND duration IS NOT NULL",
        [name]).fetchnumpy()["d"], dtype=float)
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
    ax.barh(labels, [r["seconds"] / 3600 for r in s["table"]], color="#6a9f58")
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


def _license_case(cat: Catalog, name: str, as_text: Any) -> tuple[str, list[Any]]:
    """SQL for as_text(license_canonical) over the release's licenses, and its parameters (as_text
    may refuse a license, as policy.published_license does one the gate never admits)."""
    lics = [r[0] for r in cat.con.execute("SELECT DISTINCT license_canonical FROM release_items "
                                          "WHERE release_name = ?", [name]).fetchall()]
    return ("CASE" + " WHEN license_canonical = ? THEN ?" * len(lics) + " ELSE license_canonical END",
            [x for c in lics for x in (c, as_text(c))])


def _write_csvs(cat: Catalog, name: str, folder: pathlib.Path) -> dict[str, int]:
    """The CSV and text files, rows in (source, recording_id) order: DuckDB gives each file's rows
    as they are written (csv.writerows, no Python loop per row)."""
    def copy(path: pathlib.Path, header: Any, sql: str, params: list[Any]) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            cur = cat.con.execute(sql, params)
            while rows := cur.fetchmany(50_000):
                w.writerows(rows)

    written = {src: n for src, n in cat.con.execute(
        "SELECT source, count(*) FROM release_items WHERE release_name = ? GROUP BY ALL ORDER BY source",
        [name]).fetchall()}
    published, pub_params = _license_case(cat, name, policy.published_license)
    for source in written:
        copy(folder / f"attribution-{source}.csv", policy.PUBLISHED_COLUMNS,
             f"SELECT source_id, coalesce(title, ''), coalesce(author, ''), {published}, coalesce(url, '') "
             "FROM release_items WHERE release_name = ? AND source = ? ORDER BY recording_id",
             [*pub_params, name, source])
    named, name_params = _license_case(cat, name, license_name_with_version)
    spdx, spdx_params = _license_case(cat, name, spdx_id)
    copy(folder / "attribution-tasl.csv",
         ["recording_id", "source", "id", "title", "author", "source_url", "license", "license_name", "license_url",
          "attribution_line"],
         "SELECT recording_id, source, source_id, coalesce(title, ''), coalesce(author, ''), coalesce(url, ''), "
         f"{spdx}, {named}, coalesce(license_url, ''), coalesce(attribution_line, '') FROM release_items "
         "WHERE release_name = ? ORDER BY source, recording_id", [*spdx_params, *name_params, name])
    # every source's own file is written, empty when the release holds none of its items
    for src, fn in own_attribution_files().items():
        with open(folder / fn, "w", encoding="utf-8") as f:
            cur = cat.con.execute("SELECT coalesce(attribution_line, '') || E'\\n' FROM release_items "
                                  "WHERE release_name = ? AND source = ? ORDER BY recording_id", [name, src])
            while rows := cur.fetchmany(50_000):
                f.write("".join(r[0] for r in rows))
    return written


def _markdown(s: dict[str, Any], files: dict[str, int]) -> str:
    rel = s["release"]
    lines = [f"# Attribution report: release `{rel['name']}` (version {rel['version']})", "",
             f"Content sha256 `{rel['content_sha256']}`, created {rel['created_at']} UTC, admitted by the latest "
             f"`{'`, `'.join(rel['required_stages'] or [])}` decisions.", "",
             html.escape(s["model_use"]["text"], quote=False), "",     # a renderer may pass HTML through
             f"**{s['total']['recordings']:,} recordings, {hours_text(s['total']['seconds'])} hours.**", "",
             *(["**UNCALIBRATED**: recordings admitted by decisions made with random weights ("
                + ", ".join(f"{k}: {v:,}" for k, v in s["uncalibrated_admissions"].items())
                + "). This release checks the pipeline; it is not a curated dataset.", ""]
               if s["uncalibrated_admissions"] else []),
             "| source | license | SPDX | recordings | hours |", "|---|---|---|---:|---:|"]
    lines += [f"| {r['source']} | {r['license']} | `{r['spdx']}` | {r['recordings']:,} | {r['hours_text']} |"
              for r in s["table"]]
    lines += ["", "## Excluded recordings", "", "| reason | recordings |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in s["exclusions"].items()]
    lines += ["", "## Files", ""]
    lines += [f"- `attribution-{src}.csv`: {n:,} rows in the published format (id,title,author,license,url)"
              for src, n in sorted(files.items())]
    lines += ["- `attribution-tasl.csv`: title, author, source link, license with version and link, every item",
              *(f"- `{fn}`: {SOURCES[src].title}'s own attribution line per {SOURCES[src].title} item"
                for src, fn in own_attribution_files().items()),
              "- `index.html`: this report with a searchable, sortable table of every attributed work "
              "(its rows in `works/part-*.js`, loaded when needed)", "", "## Plots", ""]
    lines += [f"![{k}](plots/{k}.png)" for k in ("durations", "licenses", "tags", "format")]
    return "\n".join(lines) + "\n"


def _html(s: dict[str, Any], plots: dict[str, bytes], works: dict[str, Any]) -> str:
    e = html.escape
    rel = s["release"]
    table = "".join(f"<tr><td>{e(r['source'])}</td><td>{e(r['license'])}</td><td><code>{e(r['spdx'])}</code></td>"
                    f"<td class=n>{r['recordings']:,}</td>"
                    f"<td class=n title=\"{r['seconds']:,.0f} s\">{hours_text(r['seconds'])}</td></tr>" for r in s["table"])
    excl = "".join(f"<tr><td>{e(k)}</td><td class=n>{v:,}</td></tr>" for k, v in s["exclusions"].items())
    imgs = "".join(f'<img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}">'
                   for k, v in plots.items())
    index = dict(works, parts=[{"file": p["file"], "rows": p["rows"]} for p in works["parts"]])
    return _render_page({
        "name": e(rel["name"]), "version": e(str(rel["version"])), "sha": e(str(rel["content_sha256"])),
        "created": e(str(rel["created_at"])), "total": f"{s['total']['recordings']:,}", "hours": hours_text(s["total"]["seconds"]),
        "table": table, "excl": excl, "plots": imgs, "works": script_json(index),
        "uncalibrated": _uncalibrated_banner(s["uncalibrated_admissions"]), "model_use": e(s["model_use"]["text"])})


def _uncalibrated_banner(unc: dict[str, int]) -> str:
    if not unc:
        return ""
    per = ", ".join(f"{html.escape(k)}: {v:,}" for k, v in unc.items())
    return (f'<p id="uncalibrated" style="border:2px solid #c00;padding:6px"><b>UNCALIBRATED</b>: recordings '
            f"admitted by decisions made with random weights ({per}). This release checks the pipeline; it is "
            "not a curated dataset.</p>\n")


def build_report(cat: Catalog, name: str, releases_root: str | pathlib.Path,
                 part_rows: int = PART_ROWS) -> dict[str, Any]:
    """Writes the report folder ``releases_root/name`` (replacing an older one whole); ``part_rows``
    works per sidecar part of the works table. ``releases_root`` may be any fsspec URL: the report
    is built in a local temporary folder and uploaded there, file by file."""
    check_name(name)
    if is_remote(releases_root):
        with output_folder(str(releases_root), prune=True) as local:
            out = build_report(cat, name, local, part_rows)
        url = f"{str(releases_root).rstrip('/')}/{name}"
        return {**out, **{k: url + v[len(out["folder"]):] for k, v in out.items()
                          if isinstance(v, str) and v.startswith(out["folder"])}}
    releases_root = local_part(releases_root)
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
        works = write_works(cat, name, work, part_rows)
        (work / "index.html").write_text(_html(s, plots, works), encoding="utf-8")
        # the forms a dataset is published in: Croissant JSON-LD (pinned to the TASL CSV by its sha256)
        # and a Hugging Face dataset card
        tasl_sha = hashlib.sha256((work / "attribution-tasl.csv").read_bytes()).hexdigest()
        (work / "croissant.json").write_text(json.dumps(publish.croissant(s, tasl_sha), indent=1), encoding="utf-8")
        (work / "README.md").write_text(publish.dataset_card(s, files), encoding="utf-8")
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
            "markdown": str(final / "report.md"), "croissant": str(final / "croissant.json"),
            "dataset_card": str(final / "README.md"), "recordings": s["total"]["recordings"], "files": files,
            "works_parts": len(works["parts"]),
            "seconds": round(time.perf_counter() - t0, 2)}
