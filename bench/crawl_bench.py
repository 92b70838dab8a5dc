"""Crawl + license gate at the paper's scale: 486,492 synthetic Freesound-format records
(paper section 3: 472,618 Freesound + 13,874 FMA recordings), served as 150-item JSON pages
from disk, ingested page by page exactly as the crawl does (page and cursor in one
transaction), then the license gate over all of them.

Side by side, in the same run: the naive baseline, one INSERT statement per record
(measured on a subset and extrapolated). Prints items/s and peak memory (RSS).

    python bench/crawl_bench.py [N]          # default 486492
    python bench/crawl_bench.py --small      # 3,000 records, a 300-row baseline: a few seconds
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import pathlib
import random
import re
import resource
import tempfile
import time

from sao.catalog import Catalog
from sao.licensing import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.sources.freesound_crawl import crawl_freesound, sound_to_record
from sao.sources.freesound_quota import API_LEVELS, PAPER_FREESOUND_RECORDINGS, crawl_cost

LICENSES = [  # roughly the paper's mix, plus licenses the gate must reject
    ("http://creativecommons.org/publicdomain/zero/1.0/", 0.53),
    ("http://creativecommons.org/licenses/by/3.0/", 0.20),
    ("https://creativecommons.org/licenses/by/4.0/", 0.19),
    ("http://creativecommons.org/licenses/sampling+/1.0/", 0.02),
    ("http://creativecommons.org/licenses/by-nc/3.0/", 0.04),
    ("https://creativecommons.org/licenses/by-nc/4.0/", 0.02),
]
TAGS = "single-note synthesizer field-recording drum loop ambient noise voice water wind bird piano".split()


def make_pages(folder: pathlib.Path, n: int, page_size: int = 150, seed: int = 0) -> int:
    rng = random.Random(seed)
    urls, weights = zip(*LICENSES)
    t0 = dt.datetime(2005, 4, 1)
    pages = 0
    for start in range(0, n, page_size):
        results = []
        for i in range(start, min(n, start + page_size)):
            results.append({
                "id": i + 1, "name": f"recording {i + 1}.wav", "tags": rng.sample(TAGS, 3),
                "description": f"Synthetic record {i + 1} for the crawl benchmark.",
                "license": rng.choices(urls, weights)[0], "username": f"user{rng.randrange(40000)}",
                "duration": round(rng.uniform(0.1, 300.0), 3), "samplerate": rng.choice([44100, 48000, 96000]),
                "channels": rng.choice([1, 2]), "bitdepth": 16, "type": rng.choice(["wav", "flac", "mp3"]),
                "filesize": rng.randrange(10_000, 50_000_000),
                "created": (t0 + dt.timedelta(minutes=10 * i)).strftime("%Y-%m-%dT%H:%M:%S"),
                "md5": f"{rng.getrandbits(128):032x}", "is_remix": False,
                "previews": {"preview-hq-mp3": f"https://cdn.example/previews/{i + 1}-hq.mp3"},
                "download": f"https://freesound.org/apiv2/sounds/{i + 1}/download/",
                "gen_ai_preference": "no-gen-ai" if rng.random() < 0.01 else "no-additional-preferences",
            })
        pages += 1
        nxt = f"page-{pages + 1:05d}.json" if start + page_size < n else None
        (folder / f"page-{pages:05d}.json").write_text(json.dumps({"count": n, "next": nxt, "previous": None,
                                                                    "results": results}))
    return pages


class DiskPages:
    """Stands in for FreesoundClient.search_page: the crawl's keyset requests (``created:[T TO *]``
    sorted by ``created_asc``, page N of that listing) answered from the JSON pages on disk, which
    hold the records in ``created`` order. A page file is parsed when a request first reaches it."""
    site = "https://freesound.org"

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.files = sorted(folder.glob("page-*.json"))
        first = json.loads(self.files[0].read_text())
        self.n, self.file_size = first["count"], len(first["results"])
        self._cache: dict[int, list] = {0: first["results"]}
        self.requests = 0

    def _file(self, i: int) -> list:
        if i not in self._cache:
            if len(self._cache) >= 2:                # the crawl moves forward: two files suffice
                self._cache.pop(min(self._cache))
            self._cache[i] = json.loads(self.files[i].read_text())["results"]
        return self._cache[i]

    def _first_at_or_after(self, since: str | None) -> int:
        """Index of the first record with created >= since (ISO strings sort as times)."""
        if since is None:
            return 0
        lo, hi = 0, len(self.files)                  # the last file whose first record is < since
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self._file_first(mid) < since else (lo, mid)
        rows = self._file(lo)
        return lo * self.file_size + bisect.bisect_left([r["created"] for r in rows], since)

    def _file_first(self, i: int) -> str:
        if i in self._cache:
            return self._cache[i][0]["created"]
        with open(self.files[i]) as f:               # cheap: the first record's created, no full parse
            head = f.read(4096)
        return re.search(r'"created": "([^"]+)"', head).group(1)

    def search_page(self, filter: str, page: int = 1, *, page_size: int = 150, fields=None, sort="created_asc",
                    query: str = "") -> dict:
        self.requests += 1
        m = re.search(r"created:\[(\S+) TO \*\]", filter)
        since = m.group(1).rstrip("Z") if m else None
        k = self._first_at_or_after(since)
        lo, hi = k + (page - 1) * page_size, min(self.n, k + page * page_size)
        results = []
        for i in range(lo // self.file_size, (hi - 1) // self.file_size + 1 if hi > lo else 0):
            base = i * self.file_size
            results += self._file(i)[max(0, lo - base):hi - base]
        return {"count": self.n - k, "next": "more" if hi < self.n else None, "previous": None, "results": results}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def naive_baseline(records: list[dict], db: pathlib.Path) -> float:
    """One parameterised INSERT per record, autocommit: what a first implementation does."""
    with Catalog(db) as cat:
        cols = ["recording_id", "source", "source_id", "title", "author", "description", "tags", "duration",
                "sample_rate", "channels", "license_raw", "license_canonical", "license_url", "page_url",
                "audio_url", "preview_url", "md5", "created_at", "crawl_time", "first_seen", "extra"]
        sql = (f"INSERT INTO recordings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
               "ON CONFLICT (recording_id) DO UPDATE SET title = excluded.title")
        t = time.perf_counter()
        for r in records:
            cat.con.execute(sql, [f"freesound:{r['source_id']}", r["source"], r["source_id"], r["title"], r["author"],
                                  r["description"], r["tags"], r["duration"], r["sample_rate"], r["channels"],
                                  r["license_raw"], r["license_canonical"], r["license_url"], r["page_url"],
                                  r["audio_url"], r["preview_url"], r["md5"], r["created_at"], r["crawl_time"],
                                  r["crawl_time"], json.dumps(r["extra"])])
        return len(records) / (time.perf_counter() - t)


def main(n: int = 486_492, subset: int = 3000) -> None:
    with tempfile.TemporaryDirectory(prefix="sao-crawl-bench-") as d:
        d = pathlib.Path(d)
        pages_dir = d / "pages"
        pages_dir.mkdir()
        t = time.perf_counter()
        pages = make_pages(pages_dir, n)
        print(f"generated {n:,} records in {pages:,} JSON pages ({time.perf_counter() - t:.1f}s, not timed below)")

        with Catalog(d / "sao.duckdb") as cat:
            t = time.perf_counter()
            source = DiskPages(pages_dir)
            crawl = crawl_freesound(cat, source, license_names=("all",))
            crawl_s = time.perf_counter() - t
            t = time.perf_counter()
            gate = run_license_gate(cat, LicensePolicy(), config_hash="bench")
            gate_s = time.perf_counter() - t
            assert cat.counts()["recordings"] == n == crawl.new, (cat.counts(), crawl)
        sao_peak = peak_rss_mb()

        now = dt.datetime.now()
        first = json.loads((pages_dir / "page-00001.json").read_text())["results"]
        recs = [sound_to_record(s, crawl_time=now, site="https://freesound.org")[0] for s in first]
        recs = [dict(recs[i % len(recs)], source_id=str(10_000_000 + i)) for i in range(subset)]
        naive = naive_baseline(recs, d / "naive.duckdb")

    total = crawl_s + gate_s
    kept, rejected = sum(gate.kept.values()), sum(gate.rejected.values())
    print(f"\ncrawl + license gate, {n:,} records, {pages:,} pages, {source.requests:,} keyset requests (2 cores)")
    print(f"  {'stage':34s} {'seconds':>9s} {'items/s':>10s}")
    print(f"  {'crawl (parse, upsert, cursor)':34s} {crawl_s:9.1f} {n / crawl_s:10,.0f}")
    print(f"  {'license gate (+ decisions)':34s} {gate_s:9.1f} {n / gate_s:10,.0f}")
    print(f"  {'total, sao':34s} {total:9.1f} {n / total:10,.0f}   peak RSS {sao_peak:,.0f} MB")
    print(f"  {'naive row-by-row INSERT':34s} {n / naive:9.1f} {naive:10,.0f}   "
          f"(measured on {subset:,} rows, extrapolated)")
    print(f"  speed-up {n / total / naive:.0f}x; gate kept {kept:,}, rejected {rejected:,} "
          f"({', '.join(f'{c}: {v:,}' for (_, c), v in sorted(gate.rejected.items()))})")
    print(f"  target: under 120 s -> {'met' if total < 120 else 'NOT met'}")


def print_crawl_costs(n: int = PAPER_FREESOUND_RECORDINGS) -> None:
    """The README's table: requests and days a crawl of the paper's Freesound recordings needs per API level
    (arithmetic over the quota, not a timing; it is the same at every size of this benchmark)."""
    print(f"\nwhat a crawl of {n:,} Freesound recordings costs, per API level (150 per page)")
    print(f"  {'level':6s} {'rate':>20s} {'listing requests':>17s} {'days':>5s} {'min/day':>8s} "
          f"{'+ originals':>12s} {'days':>5s}")
    for level, per_minute, per_day in API_LEVELS:
        meta = crawl_cost(n, per_minute=per_minute, per_day=per_day)
        full = crawl_cost(n, per_minute=per_minute, per_day=per_day, originals=True)
        print(f"  {level:<6d} {f'{per_minute}/min, {per_day:,}/day':>20s} {meta['requests']:17,d} {meta['days']:5d} "
              f"{meta['minutes_per_day']:8.0f} {full['requests']:12,d} {full['days']:5d}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, help="records (default 486,492; 3,000 with --small)")
    ap.add_argument("--small", action="store_true", help="a few seconds: 3,000 records, a 300-row baseline")
    a = ap.parse_args()
    print_crawl_costs()
    main(a.n or (3000 if a.small else 486_492), subset=300 if a.small else 3000)
