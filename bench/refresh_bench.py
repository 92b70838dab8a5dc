"""End-to-end refresh throughput on the shipped sample corpus, side by side in one run: the
refresh flow on Prefect's thread pool and on a Dask LocalCluster of 2 worker processes.

Each runner gets a fresh catalogue and crawls the loopback Freesound/FMA replica, ingests FMA,
runs the license gate, downloads, screens for music (PANNs), reviews, embeds (LAION-CLAP) and
groups repeats; then runs again with nothing new (the incremental rerun). Models carry random
weights (no checkpoints here): the timings are what they measure, the verdicts mean nothing.
A local Prefect server on loopback is started for the run (process workers need one).

    python bench/refresh_bench.py [--workers 2] [--batch-files 8] [--runners thread,dask]
    python bench/refresh_bench.py --small   # 4 Freesound sounds and 2 FMA tracks (~65 s of audio), batches
                                            # of 2 files, the thread pool only (a Dask cluster, whose workers
                                            # load both models again, adds ~40 s on 2 cores); --runners overrides
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SAO_NO_PROGRESS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TOKEN = "bench-token-0001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --small: one Freesound item per allowed license name (CC0, Attribution, Sampling+), one long enough
# for the music screen's model to run (the rule skips the short ones), an FMA track the gate admits
# and one it rejects (BY-SA)
SMALL = ("minetest-water-1", "minetest-dig-metal", "gcompris-drum-kit", "lomiri-time-not-lost",
         "fma-sakenointi", "fma-marimbach")


def _config(folder: pathlib.Path, fma_dir: pathlib.Path, runner: str, workers: int, batch: int) -> pathlib.Path:
    folder.mkdir(parents=True)
    cfg = folder / "sao.toml"
    cfg.write_text("\n".join([
        "[paths]", f'catalog = "{folder / "c.duckdb"}"', f'audio_store = "{folder / "audio"}"',
        "[fma]", f'metadata_dir = "{fma_dir}"',
        "[freesound]", "rate_limit_per_minute = 6000",
        "[music_screen]", "uncalibrated = true",
        "[dedup]", "uncalibrated = true", f'embeddings_dir = "{folder / "emb"}"',
        # the FMA match has no built-in catalogue: the shipped sample one, as the tests use
        "[review]", f'copyright_catalogue = "{REPO / "datasets" / "copyright_catalogue" / "sample.csv"}"',
        "[orchestration]", f'task_runner = "{runner}"', f"workers = {workers}", f"batch_files = {batch}",
        f'results_dir = "{folder / "results"}"', ""]))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-files", type=int, help="files per mapped batch (default 8; 2 with --small)")
    ap.add_argument("--runners", help="comma-separated task runners (default thread,dask; thread with --small)")
    ap.add_argument("--small", action="store_true",
                    help="6 corpus files, batches of 2, the thread pool only")
    a = ap.parse_args()
    a.batch_files = a.batch_files or (2 if a.small else 8)
    runners = (a.runners or ("thread" if a.small else "thread,dask")).split(",")
    from flows.serve import start_server, stop_server
    from sao.sources import sample_corpus
    from sao.sources.replica import ReplicaServer, ReplicaSettings, build_fma_replica, build_freesound_sounds
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sao-refresh-bench-"))
    corpus = sample_corpus.load_metadata(REPO / "datasets" / "sample")
    if a.small:
        corpus = [e for e in corpus if e["id"] in SMALL]
    sounds = build_freesound_sounds(corpus)
    fma_dir = build_fma_replica(corpus, tmp / "fma")
    server, api = start_server(port=_free_port(), home=tmp / "prefect-home")
    os.environ["PREFECT_API_URL"] = api
    os.environ["FREESOUND_API_TOKEN"] = TOKEN
    from flows.refresh import run
    rows = []
    try:
        with ReplicaServer(sounds, ReplicaSettings(api_tokens=[TOKEN], rate_limit_per_minute=0)) as srv:
            for runner in runners:
                cfg = _config(tmp / runner, fma_dir, runner, a.workers, a.batch_files)
                t = time.perf_counter()
                out = run(str(cfg), base_url=srv.api_url)
                first = time.perf_counter() - t
                t = time.perf_counter()
                again = run(str(cfg), base_url=srv.api_url)
                rerun = time.perf_counter() - t
                items = sum(v["items_in"] for v in out.values() if isinstance(v, dict) and v.get("ingest"))
                from sao.catalog import Catalog
                with Catalog(tmp / runner / "c.duckdb", read_only=True) as cat:   # the audio the run stored
                    audio = cat.query("SELECT sum(duration) AS s FROM recordings WHERE audio_path IS NOT NULL")[0]["s"]
                rows.append({"runner": f"{runner}:{a.workers}", "items": items, "first_s": round(first, 1),
                             "items_per_s": round(items / first, 2), "audio_s_per_s": round(audio / first, 1),
                             "screened": out["music_screen"]["details"]["screened"],
                             "embedded": out["embed"]["details"]["embedded"],
                             "rerun_s": round(rerun, 1), "rerun_new": again["crawl_freesound"]["details"]["new"],
                             "rerun_cache_hits": again["cache_hits"]})
    finally:
        from prefect.logging.handlers import APILogWorker
        APILogWorker.drain_all(timeout=10)        # send the runs' logs before the server goes
        stop_server(server)
    print(f"\nrefresh flow on the sample corpus ({len(sounds)} Freesound sounds served, "
          f"{sum(e['replica'] == 'fma' for e in corpus)} FMA tracks), batch_files={a.batch_files}, "
          f"CPU threads={os.cpu_count()}")
    head = f"{'runner':10s} {'items':>6s} {'first run s':>12s} {'items/s':>8s} {'audio-s/s':>10s} " \
           f"{'screened':>8s} {'embedded':>8s} {'rerun s':>8s} {'rerun new':>9s} {'cache hits':>10s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['runner']:10s} {r['items']:6d} {r['first_s']:12.1f} {r['items_per_s']:8.2f} {r['audio_s_per_s']:10.1f} "
              f"{r['screened']:8d} {r['embedded']:8d} {r['rerun_s']:8.1f} {r['rerun_new']:9d} {r['rerun_cache_hits']:10d}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
