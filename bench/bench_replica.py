"""Freesound replica search throughput: pages/s and items/s when following `next` with a
keep-alive session (what sao's client does) vs a new connection per request (the baseline).

    python bench/bench_replica.py [--rounds 20]
    python bench/bench_replica.py --small      # 2 rounds
"""
from __future__ import annotations

import argparse
import time

import requests

from sao.sources import sample_corpus
from sao.sources.replica import ReplicaServer, ReplicaSettings, build_freesound_sounds

HEAD = {"Authorization": "Token sao-demo-token"}


def crawl(api: str, get) -> tuple[int, int]:
    url, params, pages, items = f"{api}/search/", {"page_size": 5, "fields": "id,name,license,md5"}, 0, 0
    while url:
        j = get(url, params=params, headers=HEAD, timeout=30).json()
        url, params, pages, items = j["next"], None, pages + 1, items + len(j["results"])
    return pages, items


def main(rounds: int = 20) -> None:
    sounds = build_freesound_sounds(sample_corpus.load_metadata())
    with ReplicaServer(sounds, ReplicaSettings(rate_limit_per_minute=0)) as srv:
        results = {}
        with requests.Session() as s:
            for name, get in (("keep-alive session (sao)", s.get), ("new connection each (baseline)", requests.get)):
                t = time.perf_counter()
                pages = items = 0
                for _ in range(rounds):
                    p, i = crawl(srv.api_url, get)
                    pages, items = pages + p, items + i
                dt = time.perf_counter() - t
                results[name] = (pages / dt, items / dt)
    print(f"replica search crawl, {rounds} rounds over {len(sounds)} sounds at page_size=5")
    for name, (pps, ips) in results.items():
        print(f"  {name:32s} {pps:8.1f} pages/s {ips:9.1f} items/s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help="crawls of the whole replica per client (default 20; 2 with --small)")
    ap.add_argument("--small", action="store_true", help="a few seconds: 2 rounds")
    a = ap.parse_args()
    main(a.rounds or (2 if a.small else 20))
