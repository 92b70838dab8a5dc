"""Release + attribution report at the paper's scale: 486,492 synthetic recordings (Freesound and
FMA, the paper's license mix, with rejections, music flags, duplicates and take-downs) in a
DuckDB catalogue. Prints the time and peak memory of `create_release` and `build_report`
(CSV files, plots, Markdown, the HTML page and its works sidecar parts), and items/s beside the
obvious baseline: gathering each recording's latest decisions with one query per recording (timed
on a sample and extrapolated). Then opens the report from disk in headless Chromium twice: as it
opens (summary and first page of works), and with ``#q=TITLE`` of the very last work (in the last
sidecar part), which loads every part and searches all works; the page writes performance.now()
when every part ran and when the results were rendered on <body>, and --dump-dom shows them (no
virtual time: real time, beside the wall time of the whole browser process).
Target: release and report under 60 s on 2 cores, index.html under 5 MB, open + search under 3 s.

Every recording with stored audio carries what the decode stage writes (its content sha256, the
probed duration, rate and channels, and a decode decision naming that content; 0.2% do not decode),
since the admission rule admits nothing the decode stage has not passed.

    python bench/attribution_bench.py [N]
    python bench/attribution_bench.py --small     # 3,000 recordings: a few seconds
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import pathlib
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import pyarrow as pa

from sao.attribution.release import create_release
from sao.attribution.report import build_report
from sao.attribution.report_works import read_part
from sao.catalog import Catalog

TAGS = ["field-recording", "ambience", "water", "rain", "wind", "birds", "city", "traffic", "voice", "drum", "synth",
        "guitar", "piano", "loop", "noise", "foley", "door", "footsteps", "machine", "nature", "electronic", "rock"]


def make_catalog(path: pathlib.Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = dt.datetime(2026, 11, 1)
    n_fma = n * 13874 // 486492
    rows, decisions = [], []
    lic_fs = ["cc0-1.0"] * 266 + ["cc-by-4.0"] * 150 + ["cc-by-3.0"] * 45 + ["cc-sampling+-1.0"] * 11 + ["cc-by-nc-4.0"] * 30
    lic_fma = ["cc-by-4.0"] * 9 + ["cc0-1.0"] * 5 + ["cc-by-nc-sa-4.0"] * 2
    for i in range(n):
        fma = i < n_fma
        sid = str(i + 1)
        lic = rng.choice(lic_fma if fma else lic_fs)
        rid = f"{'fma' if fma else 'freesound'}:{sid}"
        author = f"author{rng.randrange(20000)}"
        audio = rng.random() > 0.01
        sha = hashlib.sha256(rid.encode()).hexdigest() if audio else None
        duration, sr, ch = rng.uniform(1, 30) if not fma else rng.uniform(60, 400), \
            rng.choice([44100, 48000, 96000, 22050]), rng.choice([1, 2])
        rows.append({
            "recording_id": rid, "source": "fma" if fma else "freesound", "source_id": sid,
            "title": f"Recording {sid} {rng.choice(TAGS)}", "author": author, "description": "",
            "tags": rng.sample(TAGS, 3), "duration": duration, "sample_rate": sr, "channels": ch,
            "license_raw": lic, "license_canonical": lic,
            "license_url": f"https://creativecommons.org/licenses/{lic}/", "page_url": f"https://example.org/{rid}",
            "audio_path": f"{rid[:2]}/{sid}.flac" if audio else None, "content_sha256": sha,
            # what the decode stage probed from the file (set_probed)
            "audio_duration": duration if audio else None, "audio_sample_rate": sr if audio else None,
            "audio_channels": ch if audio else None,
            "extra": json.dumps({"attribution": {"freesound_line": f"Recording {sid} by {author} -- "
                                                 f"https://freesound.org/s/{sid}/ -- License: {lic}"}} if not fma else {}),
            "crawl_time": now, "first_seen": now,
        })
        ok = "-nc" not in lic
        decisions.append((rid, "license_gate", "pass" if ok else "reject",
                          "license-allowed" if ok else f"license-not-allowed: {lic}", None))
        if ok and audio:          # the decode stage runs on gate-admitted recordings with stored audio
            decodes = rng.random() > 0.002
            decisions.append((rid, "decode", "pass" if decodes else "reject",
                              f"decodes: {duration:.2f} s, {sr} Hz, {ch} ch (FLAC)" if decodes else
                              "audio-corrupt: bench: not a FLAC file", json.dumps({"content_sha256": sha})))
        if ok:
            r = rng.random()
            decisions.append((rid, "copyright_review", *(("pass", "not-music") if r > 0.02 else
                                                         ("review", "queued") if r > 0.01 else ("reject", "rejected")),
                              None))
            decisions.append((rid, "dedup", *(("pass", "unique") if rng.random() > 0.01 else ("reject", "duplicate")),
                              None))
    with Catalog(path) as cat:
        table = pa.Table.from_pylist(rows)
        cat.con.register("_r", table)
        cols = ", ".join(table.column_names)
        cat.con.execute(f"INSERT INTO recordings ({cols}) SELECT {cols.replace('extra', 'CAST(extra AS JSON)')} FROM _r")
        cat.con.unregister("_r")
        d = pa.table({"recording_id": [x[0] for x in decisions], "stage": [x[1] for x in decisions],
                      "verdict": [x[2] for x in decisions], "reason": [x[3] for x in decisions],
                      "details": pa.array([x[4] for x in decisions], pa.string())})
        cat.con.register("_d", d)
        cat.con.execute("INSERT INTO decisions (recording_id, stage, verdict, reason, config_hash, details, "
                        "decided_at) SELECT recording_id, stage, verdict, reason, 'bench', CAST(details AS JSON), "
                        "now() FROM _d")
        cat.con.unregister("_d")
        for rid in rng.sample([r["recording_id"] for r in rows], 50):
            cat.add_takedown(rid, "bench take-down")


def baseline_items_per_s(cat: Catalog, sample: int = 5000) -> float:
    """Per recording: one query for its latest decisions, one for its take-downs."""
    ids = [r[0] for r in cat.con.execute("SELECT recording_id FROM recordings USING SAMPLE 5000 ROWS").fetchall()]
    t = time.perf_counter()
    for rid in ids[:sample]:
        cat.con.execute("SELECT stage, verdict FROM decisions WHERE recording_id = ? QUALIFY row_number() OVER "
                        "(PARTITION BY stage ORDER BY decision_id DESC) = 1", [rid]).fetchall()
        cat.con.execute("SELECT 1 FROM takedowns WHERE recording_id = ? AND status = 'active'", [rid]).fetchall()
    return len(ids[:sample]) / (time.perf_counter() - t)


def chromium_page(page: pathlib.Path, fragment: str, profile: pathlib.Path) -> dict | None:
    """Headless Chromium's view of the page: its <body> data-* numbers, the rendered row ids and the
    wall time of the browser process; None without a Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return None
    t = time.perf_counter()
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                          "--dump-dom", page.as_uri() + fragment], capture_output=True, text=True, timeout=120).stdout
    wall = time.perf_counter() - t
    body = re.search(r"<body([^>]*)>", dom)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))) if body else {}
    return {"wall": wall, "ids": re.findall(r'<tr data-id="([^"$]+)"', dom),
            **{k: float(attrs[k]) for k in ("matches", "parts-loaded", "works-ready-ms", "search-ms",
                                            "search-done-ms") if k in attrs}}


def main(n: int = 486_492, sample: int = 5000) -> None:
    with tempfile.TemporaryDirectory() as d:
        db = pathlib.Path(d) / "c.duckdb"
        t = time.perf_counter()
        # in a child process, so the peak memory below is the release's and the report's alone
        subprocess.run([sys.executable, __file__, "--make", str(db), str(n)], check=True)
        print(f"synthetic catalogue: {n:,} recordings in {time.perf_counter() - t:.1f} s (not timed below)")
        with Catalog(db) as cat:
            t0 = time.perf_counter()
            rel = create_release(cat, "bench", required_stages=["license_gate", "copyright_review", "dedup"])
            t1 = time.perf_counter()
            rep = build_report(cat, "bench", pathlib.Path(d) / "releases")
            t2 = time.perf_counter()
            base = baseline_items_per_s(cat, sample)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        page = pathlib.Path(rep["html"])
        html_mb = page.stat().st_size / 1e6
        parts = sorted((page.parent / "works").glob("part-*.js"))
        side_mb = sum(p.stat().st_size for p in parts) / 1e6
        last = read_part(parts[-1])[1][-1]          # the very last work, in the last sidecar part
        opened = chromium_page(page, "", pathlib.Path(d) / "chromium-1")
        found = chromium_page(page, "#q=" + urllib.parse.quote(last["title"]), pathlib.Path(d) / "chromium-2")
        print(f"release: {rel['recordings']:,} admitted, excluded {rel['excluded']}")
        assert rel["recordings"] > n // 2, "the synthetic catalogue should admit most recordings"
        print(f"  create_release  {t1 - t0:6.1f} s  ({n / (t1 - t0):,.0f} recordings/s)")
        print(f"  build_report    {t2 - t1:6.1f} s  (CSV {rep['files']})")
        print(f"  total           {t2 - t0:6.1f} s  (target < 60 s), peak memory {peak:,.0f} MB")
        print(f"  baseline, one query per recording: {base:,.0f} recordings/s -> {n / base:,.0f} s for the "
              f"release's state gathering alone ({(n / base) / (t1 - t0):.0f}x slower)")
        print(f"report page: index.html {html_mb:.2f} MB (target < 5 MB); works sidecar {len(parts)} part(s), "
              f"{side_mb:.1f} MB in all, {rep['recordings']:,} works")
        met = t2 - t0 < 60 and html_mb < 5
        if opened is None or found is None:
            print("  open + search (headless Chromium): not measured, no Chromium on this machine")
            met = None
        else:
            print(f"  open (headless Chromium): first {len(opened['ids'])} rows rendered "
                  f"{opened.get('search-done-ms', float('nan')):,.0f} ms after navigation, "
                  f"{opened['wall']:.1f} s wall for the browser process")
            hit = last["id"] in found["ids"]
            done = found.get("search-done-ms", float("inf"))
            print(f"  open + search all works (headless Chromium, #q={last['title']!r}): "
                  f"{found.get('parts-loaded', 0):.0f} parts ready {found.get('works-ready-ms', float('nan')):,.0f} ms, "
                  f"search {found.get('search-ms', float('nan')):,.0f} ms, results {done:,.0f} ms after navigation; "
                  f"{found.get('matches', 0):.0f} hit(s), {last['id']} {'found' if hit else 'NOT found'}; "
                  f"{found['wall']:.1f} s wall for the browser process (start and exit included)")
            met = met and hit and done < 3000
        print(f"target: release + report < 60 s ({t2 - t0:.1f} s), index.html < 5 MB ({html_mb:.2f} MB), "
              f"open + search < 3 s in the page -> {'met' if met else 'not measured' if met is None else 'NOT met'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        make_catalog(pathlib.Path(sys.argv[2]), int(sys.argv[3]))
    else:
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("n", nargs="?", type=int, help="recordings (default 486,492; 3,000 with --small)")
        ap.add_argument("--small", action="store_true", help="a few seconds: 3,000 recordings, a 300-query baseline")
        a = ap.parse_args()
        main(a.n or (3000 if a.small else 486_492), sample=300 if a.small else 5000)
