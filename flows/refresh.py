"""The `refresh` flow: crawl Freesound, ingest FMA, run the license gate, download audio, screen
Freesound audio for music, run the copyright review, embed new audio with LAION-CLAP and group
repeated recordings.

How it runs:
- Every stage is a task; the heavy ones (download, music screen, embedding) are planned from
  the catalogue and mapped over batches of [orchestration].batch_files files, so they spread
  over the task runner's workers (threads, Dask or Ray: see flows/runtime.py). Only plan and
  store tasks open the catalogue, one at a time, so DuckDB's single writer is never contended.
- Batches of the screen and the embedding are cached across runs by their content (sha256s) and
  the model's signature, with results persisted under [orchestration].results_dir: a batch that
  was computed and not stored (a crash, a failed store) costs nothing the next time. The FMA
  ingest is cached by the digest of the dump it reads. The crawl and the downloads are not cached:
  the catalogue's cursors and audio paths make their reruns incremental instead.
- Retries only for transient errors (connection problems, 429, 5xx, a busy catalogue); a 4xx or
  a data error fails the run at once so a person looks at it. Every task has a timeout.
- The Freesound rate limit is a Prefect global concurrency limit shared by every worker.
- The run summary (items in, passed, rejected by reason, throughput, cache hits) goes to the
  catalogue's `runs` table; `sao status` prints it.
The API token never travels as a task parameter; each task reads it from the environment or the
token file named in the config.

    python -m flows.refresh --config sao.toml [--full] [--reconcile] [--fma-dir DIR] [--runner dask]
"""
from __future__ import annotations

import argparse
import functools
import json
import time
from typing import Any

import requests
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE

from sao import config as config_mod
from sao import refresh as stages
from sao.catalog import Catalog

from . import runtime


def is_transient(exc: BaseException) -> bool:
    from sao.sources.freesound import FreesoundError
    if isinstance(exc, FreesoundError):
        return exc.transient
    from sao.review.detection_client import DetectionError
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, DetectionError)):
        return True
    from sao.catalog import CatalogInUse
    if isinstance(exc, CatalogInUse):                 # the catalogue is locked by another writer
        return True
    try:
        import duckdb
        if isinstance(exc, duckdb.IOException):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def transient_only(task_, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only when the failure was transient."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


RETRY_DELAYS = [10, 60, 300]
_RETRY = dict(retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
# batch tasks are cached by runtime.cached(), which also sets where their results persist
_BATCH = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=transient_only, cache_policy=NO_CACHE)


def _cfg(config_path: str | None):
    return config_mod.load(config_path)


def _wrap(cfg, shared: bool):
    return (lambda c: runtime.share_rate_limit(c, cfg)) if shared else None


# -- metadata ------------------------------------------------------------------------------------
@task(name="crawl-freesound", timeout_seconds=12 * 3600, **_RETRY)
def crawl_freesound(config_path: str | None, full: bool, reconcile: bool, base_url: str | None,
                    shared_limit: bool) -> dict[str, Any]:
    cfg = _cfg(config_path)
    return stages.stage_crawl_freesound(cfg, full=full, reconcile=reconcile, base_url=base_url,
                                        wrap_client=_wrap(cfg, shared_limit))


@task(name="fma-source-key", timeout_seconds=3600, **_RETRY)
def fma_source_key(config_path: str | None, fma_dir: str | None) -> dict[str, Any] | None:
    """What an FMA ingest would read (the dump's digest) and the catalogue it would write to. A
    catalogue restored from an older backup keeps its id: rerun with --refresh-cache then."""
    from sao.sources.fma import source_digest
    cfg = _cfg(config_path)
    root = fma_dir or cfg.fma.metadata_dir
    if not root:
        return None
    with Catalog(cfg.catalog_path) as cat:
        catalogue = cat.instance_id()
    return {"dump": source_digest(cfg.path(root)), "catalogue": catalogue, "config_hash": cfg.config_hash()}


@task(name="ingest-fma", timeout_seconds=6 * 3600, **_BATCH)
def ingest_fma(config_path: str | None, fma_dir: str | None, source_key: dict | None) -> dict[str, Any]:
    # cached by source_key: an unchanged dump into the same catalogue is not read again
    return stages.stage_ingest_fma(_cfg(config_path), fma_dir)


@task(name="license-gate", timeout_seconds=3600, **_RETRY)
def license_gate(config_path: str | None) -> dict[str, Any]:
    return stages.gate_summary(stages.stage_license_gate(_cfg(config_path)))


# -- audio -----------------------------------------------------------------------------------------
@task(name="plan-downloads", timeout_seconds=600, **_RETRY)
def plan_downloads(config_path: str | None) -> list[dict]:
    from sao.sources.audio_download import pending_downloads
    cfg = _cfg(config_path)
    if not cfg.freesound.download:
        return []
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        return pending_downloads(cat)


@task(name="download-batch", timeout_seconds=6 * 3600, **_RETRY)
def download_batch(config_path: str | None, base_url: str | None, items: list[dict], shared_limit: bool
                   ) -> dict[str, Any]:
    import dataclasses

    from sao.sources.audio_download import download_items
    cfg = _cfg(config_path)
    client = stages.make_client(cfg, base_url=base_url, wrap=_wrap(cfg, shared_limit))
    try:
        done, st = download_items(client, items, cfg.path(cfg.paths.audio_store),
                                  originals=cfg.freesound.download_originals, show_progress=False)
    finally:
        client.close()
    return {"done": done, "stats": dataclasses.asdict(st)}


@task(name="record-downloads", timeout_seconds=600, **_RETRY)
def record_downloads(config_path: str | None, done: list[dict]) -> int:
    from sao.sources import audio_download
    cfg = _cfg(config_path)
    with Catalog(cfg.catalog_path) as cat:
        return audio_download.record_downloads(cat, done)


@task(name="decode-audio", timeout_seconds=6 * 3600, **_RETRY)
def decode_audio(config_path: str | None) -> dict[str, Any]:
    return stages.stage_decode(_cfg(config_path))


@functools.lru_cache(maxsize=2)
def _panns(config_path: str | None):
    return stages.load_panns_for(_cfg(config_path))


@task(name="plan-music-screen", timeout_seconds=1800, **_RETRY)
def plan_screen(config_path: str | None) -> dict[str, Any]:
    from sao.analysis.music_screen import pending_screen
    cfg = _cfg(config_path)
    lm = _panns(config_path)
    sig = stages.screen_config(cfg).signature(lm.checkpoint_sha256)
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        items = pending_screen(cat, sig, cfg.path(cfg.paths.audio_store))
    return {"signature": sig, "checkpoint_sha256": lm.checkpoint_sha256, "uncalibrated": lm.uncalibrated,
            "items": items}


@task(name="music-screen-batch", timeout_seconds=12 * 3600, **_BATCH)
def screen_batch(config_path: str | None, signature: str, items: list[dict]) -> dict[str, Any]:
    from sao.analysis.music_screen import screen_audio
    cfg = _cfg(config_path)
    lm = _panns(config_path)
    sc = stages.screen_config(cfg)
    if sc.signature(lm.checkpoint_sha256) != signature:
        raise ValueError(f"music screen: the configured model or rule changed during the run ({signature} planned)")
    results, st = screen_audio(items, lm, sc)
    return {"results": results, "stats": st}


@task(name="store-music-screen", timeout_seconds=1800, **_RETRY)
def store_screen(config_path: str | None, plan: dict, batches: list[dict], seconds: float) -> dict[str, Any]:
    from sao.analysis.music_screen import screen_decisions, screen_summary
    cfg = _cfg(config_path)
    sc = stages.screen_config(cfg)
    results = {k: v for b in batches for k, v in b["results"].items()}
    decisions, counts = screen_decisions(results, sc, checkpoint_sha256=plan["checkpoint_sha256"],
                                         uncalibrated=plan["uncalibrated"], config_hash=cfg.config_hash())
    with Catalog(cfg.catalog_path) as cat:
        cat.add_decisions(decisions)
    total = {k: sum(b["stats"][k] for b in batches) for k in ("audio_seconds", "model_seconds", "early_stops")}
    return screen_summary(counts, len(results), sc, checkpoint_sha256=plan["checkpoint_sha256"],
                          uncalibrated=plan["uncalibrated"], audio_seconds=total["audio_seconds"],
                          wall_seconds=seconds, model_seconds=total["model_seconds"], early_stops=total["early_stops"])


@task(name="copyright-review", timeout_seconds=6 * 3600, **_RETRY)
def copyright_review(config_path: str | None) -> dict[str, Any]:
    return stages.stage_review(_cfg(config_path))


# -- repeated recordings ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _clap(config_path: str | None):
    return stages.load_clap_for(_cfg(config_path))


@task(name="plan-embeddings", timeout_seconds=1800, **_RETRY)
def plan_embed(config_path: str | None) -> dict[str, Any]:
    from sao.dedup.stage import plan_embed as plan
    cfg = _cfg(config_path)
    cm = _clap(config_path)
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        todo, reused, origin, stored = plan(cat, cm.signature, embeddings_dir=cfg.path(cfg.dedup.embeddings_dir),
                                            audio_store=cfg.path(cfg.paths.audio_store),
                                            reuse_freesound_sim=cfg.dedup.reuse_freesound_sim)
    return {"signature": cm.signature, "files": sorted(todo.items()), "reused": reused, "origin": origin,
            "stored": stored}


@task(name="embed-batch", timeout_seconds=12 * 3600, **_BATCH)
def embed_batch(config_path: str | None, signature: str, files: list[tuple[str, str]]) -> dict[str, Any]:
    from sao.analysis.clap import embed_files
    cfg = _cfg(config_path)
    cm = _clap(config_path)
    if cm.signature != signature:
        raise ValueError(f"embedding: the configured CLAP model changed during the run ({signature} planned)")
    sha = dict(files)
    errors: dict[str, str] = {}
    failed: dict[str, tuple[str, str]] = {}          # by path: store_embeddings names and rejects them

    def on_error(p: str, e: str) -> None:
        errors[sha[p]] = e
        failed[p] = (sha[p], e)
    vectors = embed_files(cm, list(sha), batch_size=cfg.dedup.batch_size, max_windows=cfg.dedup.max_windows,
                          on_error=on_error)
    return {"vectors": {sha[p]: v for p, v in vectors.items()}, "errors": errors, "failed_files": failed}


@task(name="store-embeddings", timeout_seconds=1800, **_RETRY)
def store_embeddings(config_path: str | None, plan: dict, batches: list[dict], seconds: float) -> dict[str, Any]:
    from sao.analysis.clap import MODEL_NAME
    from sao.dedup.store import append_embeddings
    cfg = _cfg(config_path)
    cm = _clap(config_path)
    rows = {k: v for b in batches for k, v in b["vectors"].items()}
    n = len(rows)
    rows.update(plan["reused"])
    append_embeddings(cfg.path(cfg.dedup.embeddings_dir), plan["signature"], rows, plan["origin"],
                      f"{MODEL_NAME} {cm.amodel}", cm.checkpoint_sha256)
    from sao.dedup.stage import record_undecodable     # named and rejected, as `sao embed` does
    failed = {p: tuple(f) for b in batches for p, f in b.get("failed_files", {}).items()}
    with Catalog(cfg.catalog_path) as cat:
        undecodable, written = record_undecodable(cat, failed, config_hash=cfg.config_hash())
    return {"embedded": n, "reused_from_freesound": len(plan["reused"]), "already_stored": plan["stored"],
            "decode_errors": sum(len(b["errors"]) for b in batches), "undecodable": undecodable,
            "decode_rejects_written": written, "uncalibrated": cm.uncalibrated,
            "signature": plan["signature"], "files_per_s": round(n / seconds, 2) if seconds else 0.0}


@task(name="group-repeated-recordings", timeout_seconds=6 * 3600, **_RETRY)
def group_duplicates(config_path: str | None) -> dict[str, Any]:
    return stages.stage_dedup(_cfg(config_path))


# -- the flow --------------------------------------------------------------------------------------
def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@flow(name="refresh", log_prints=True)
def refresh(config_path: str | None = None, full: bool = False, reconcile: bool = False,
            fma_dir: str | None = None, base_url: str | None = None, screen: bool = True,
            dedup: bool = True, refresh_cache: bool = False) -> dict[str, Any]:
    cfg = _cfg(config_path)
    with runtime.recorded_run(config_path, "refresh", runtime.current_runner()) as (out, tally):
        shared = bool(cfg.orchestration.freesound_rate_limit)
        if shared:
            runtime.ensure_freesound_limit(cfg)
        size = cfg.orchestration.batch_files
        cached = functools.partial(runtime.cached, cfg=cfg, refresh=refresh_cache)
        out["freesound"] = tally.result(crawl_freesound(config_path, full, reconcile, base_url, shared,
                                                        return_state=True))
        key = tally.result(fma_source_key(config_path, fma_dir, return_state=True))
        if key is None:
            out["fma"] = {"skipped": "no [fma].metadata_dir configured"}
        else:
            state = cached(ingest_fma)(config_path, fma_dir, key, return_state=True)
            fma = tally.result(state)
            out["fma"] = ({"unchanged": "same dump and catalogue as the last ingest (cached)", "tracks": 0}
                          if state.name == "Cached" else fma)
        out["gate"] = tally.result(license_gate(config_path, return_state=True))

        t0 = time.perf_counter()
        todo = tally.result(plan_downloads(config_path, return_state=True))
        got = tally.results(download_batch.map(unmapped(config_path), unmapped(base_url),
                                                        batches(todo, size), unmapped(shared)))
        done = [d for g in got for d in g["done"]]
        tally.result(record_downloads(config_path, done, return_state=True))
        secs = time.perf_counter() - t0
        out["decode"] = tally.result(decode_audio(config_path, return_state=True))
        audio = sum(g["stats"]["audio_seconds"] for g in got)
        out["download"] = {"candidates": len(todo), "downloaded": len(done),
                           "failed": sum(g["stats"]["failed"] for g in got),
                           "megabytes": round(sum(g["stats"]["bytes"] for g in got) / 1e6, 2),
                           "batches": len(got), "audio_s_per_s": round(audio / secs, 1) if secs else 0.0}
        if screen:
            t0 = time.perf_counter()
            plan = tally.result(plan_screen(config_path, return_state=True))
            got = tally.results(cached(screen_batch).map(unmapped(config_path), unmapped(plan["signature"]),
                                                         batches(plan["items"], size)))
            out["music_screen"] = tally.result(store_screen(config_path, {k: v for k, v in plan.items() if k != "items"},
                                                            got, time.perf_counter() - t0, return_state=True))
            out["music_screen"]["batches"] = len(got)
            out["review"] = tally.result(copyright_review(config_path, return_state=True))
        if dedup:
            t0 = time.perf_counter()
            plan = tally.result(plan_embed(config_path, return_state=True))
            got = tally.results(cached(embed_batch).map(unmapped(config_path), unmapped(plan["signature"]),
                                                        batches(plan["files"], size)))
            out["embed"] = tally.result(store_embeddings(config_path, {k: v for k, v in plan.items() if k != "files"},
                                                         got, time.perf_counter() - t0, return_state=True))
            out["embed"]["batches"] = len(got)
            out["dedup"] = tally.result(group_duplicates(config_path, return_state=True))
        out["cache_hits"] = tally.cache_hits
        print(json.dumps({k: v for k, v in out.items() if k != "run_id"}, indent=1, default=str))
    return out


def run(config_path: str | None = None, *, runner: str | None = None, workers: int | None = None, **kw
        ) -> dict[str, Any]:
    """The refresh flow on the task runner [orchestration] names (or ``runner``/``workers``)."""
    cfg = _cfg(config_path)
    return refresh.with_options(task_runner=runtime.task_runner(cfg, runner, workers))(config_path, **kw)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--full", action="store_true")
    p.add_argument("--reconcile", action="store_true")
    p.add_argument("--fma-dir")
    p.add_argument("--base-url")
    p.add_argument("--no-screen", action="store_true", help="skip the music screen and copyright review")
    p.add_argument("--no-dedup", action="store_true", help="skip the embeddings and the grouping of repeats")
    p.add_argument("--refresh-cache", action="store_true", help="recompute cached batches and the FMA ingest")
    p.add_argument("--runner", choices=["thread", "dask", "ray"], help="override [orchestration].task_runner")
    p.add_argument("--workers", type=int)
    a = p.parse_args(argv)
    run(a.config, runner=a.runner, workers=a.workers, full=a.full, reconcile=a.reconcile, fma_dir=a.fma_dir,
        base_url=a.base_url, screen=not a.no_screen, dedup=not a.no_dedup, refresh_cache=a.refresh_cache)


if __name__ == "__main__":
    main()
