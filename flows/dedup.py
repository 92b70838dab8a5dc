"""The `dedup` flow: LAION-CLAP embeddings of new admitted audio, computed in parallel batches
through Prefect's task runner (threads share one loaded model; torch releases the GIL in its
kernels), stored in Parquet, then the grouping of repeated recordings.

    python -m flows.dedup --config sao.toml [--uncalibrated] [--workers 2]
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from sao import config as config_mod
from sao import refresh as stages
from sao.catalog import Catalog


@functools.lru_cache(maxsize=2)
def _model(config_path: str | None, uncalibrated: bool):
    return stages.load_clap_for(config_mod.load(config_path), uncalibrated)


@task(name="plan-embeddings", cache_policy=NO_CACHE)
def plan(config_path: str | None, uncalibrated: bool) -> dict[str, Any]:
    from sao.dedup.stage import plan_embed
    cfg = config_mod.load(config_path)
    cm = _model(config_path, uncalibrated)
    with Catalog(cfg.catalog_path) as cat:
        todo, reused, origin, stored = plan_embed(cat, cm.signature, embeddings_dir=cfg.path(cfg.dedup.embeddings_dir),
                                                  audio_store=cfg.path(cfg.paths.audio_store),
                                                  reuse_freesound_sim=cfg.dedup.reuse_freesound_sim)
    return {"todo": todo, "reused": reused, "origin": origin, "stored": stored}


@task(name="embed-batch", cache_policy=NO_CACHE, retries=1)
def embed_batch(config_path: str | None, uncalibrated: bool, paths: list[str]) -> dict:
    from sao.analysis.clap import embed_files
    cfg = config_mod.load(config_path)
    return embed_files(_model(config_path, uncalibrated), paths, batch_size=cfg.dedup.batch_size,
                       max_windows=cfg.dedup.max_windows)


@task(name="store-embeddings", cache_policy=NO_CACHE)
def store(config_path: str | None, uncalibrated: bool, todo: dict, vectors: dict, origin: dict) -> int:
    from sao.analysis.clap import MODEL_NAME
    from sao.dedup.store import append_embeddings
    cfg = config_mod.load(config_path)
    cm = _model(config_path, uncalibrated)
    rows = {todo[k]: v for k, v in vectors.items()}
    append_embeddings(cfg.path(cfg.dedup.embeddings_dir), cm.signature, rows, origin, f"{MODEL_NAME} {cm.amodel}",
                      cm.checkpoint_sha256)
    return len(rows)


@task(name="group-repeated-recordings", cache_policy=NO_CACHE)
def group(config_path: str | None, uncalibrated: bool) -> dict[str, Any]:
    return stages.stage_dedup(config_mod.load(config_path), uncalibrated=uncalibrated)


@flow(name="dedup", task_runner=ThreadPoolTaskRunner(max_workers=2))
def dedup(config_path: str | None = None, uncalibrated: bool = False, batch_files: int = 16) -> dict[str, Any]:
    p = plan(config_path, uncalibrated)
    paths = sorted(p["todo"])
    chunks = [paths[i:i + batch_files] for i in range(0, len(paths), batch_files)]
    futures = [embed_batch.submit(config_path, uncalibrated, c) for c in chunks]
    vectors: dict = {}
    for f in futures:
        vectors.update(f.result())
    rows = {p["todo"][k]: v for k, v in vectors.items()} | p["reused"]
    n = store(config_path, uncalibrated, {s: s for s in rows}, rows, p["origin"])
    out = group(config_path, uncalibrated)
    out["embedded"] = n - len(p["reused"])
    out["reused_from_freesound"] = len(p["reused"])
    print(out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--uncalibrated", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    dedup.with_options(task_runner=ThreadPoolTaskRunner(max_workers=a.workers))(a.config, a.uncalibrated)


if __name__ == "__main__":
    main()
