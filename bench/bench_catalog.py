"""Catalogue write throughput: sao's batched, transactional upsert vs the obvious baseline,
one INSERT ... ON CONFLICT per item in autocommit. Prints items/s for both, side by side.

    python bench/bench_catalog.py [N]        # default 5000
    python bench/bench_catalog.py --small    # 200 recordings: a few seconds
"""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time

from sao.catalog import Catalog


def records(n: int, offset: int = 0):
    now = dt.datetime(2026, 1, 1)
    return [dict(source="freesound", source_id=offset + i, title=f"sound {i}", author="bench", tags=["a", "b", "c"],
                 duration=3.0, sample_rate=44100, channels=2, license_raw="http://creativecommons.org/licenses/by/4.0/",
                 crawl_time=now) for i in range(n)]


def main(n: int = 5000) -> None:
    with tempfile.TemporaryDirectory() as d:
        with Catalog(f"{d}/batched.duckdb") as cat:
            t = time.perf_counter()
            cat.upsert_recordings(records(n))
            batched = n / (time.perf_counter() - t)
            t = time.perf_counter()
            cat.upsert_recordings(records(n))          # every row now updates in place
            batched_update = n / (time.perf_counter() - t)
        with Catalog(f"{d}/single.duckdb") as cat:
            t = time.perf_counter()
            for r in records(n):
                cat.upsert_recordings([r])              # baseline: one transaction per item
            single = n / (time.perf_counter() - t)
    print(f"catalogue upsert, {n} recordings")
    print(f"  {'batched (sao)':28s} {batched:10.0f} items/s")
    print(f"  {'batched, all updates':28s} {batched_update:10.0f} items/s")
    print(f"  {'one item per transaction':28s} {single:10.0f} items/s   (baseline)")
    print(f"  speed-up: {batched / single:.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, help="recordings (default 5000; 200 with --small)")
    ap.add_argument("--small", action="store_true", help="a few seconds: 200 recordings")
    a = ap.parse_args()
    main(a.n or (200 if a.small else 5000))
