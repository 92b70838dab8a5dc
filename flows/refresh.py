"""The `refresh` flow: crawl Freesound, ingest FMA, run the license gate, download audio,
screen Freesound audio for music and run the copyright review.

Each stage is a Prefect task that opens the catalogue itself. Retries are limited to
transient errors (connection problems, 429, 5xx, a busy database); a 4xx or a data error
fails the run at once so a person looks at it. Task results are not cached: a crawl with the
same parameters must still fetch what is new since the last run (the catalogue's cursors
make the rerun cheap instead). The API token never travels as a task parameter; each task
reads it from the environment or the token file named in the config.

    python -m flows.refresh --config sao.toml [--full] [--reconcile] [--fma-dir DIR]
"""
from __future__ import annotations

import argparse
import json
from typing import Any

import requests
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from sao import config as config_mod
from sao import refresh as stages


def is_transient(exc: BaseException) -> bool:
    from sao.sources.freesound import FreesoundError
    if isinstance(exc, FreesoundError):
        return exc.status is None or exc.status == 429 or exc.status >= 500
    from sao.review.detection_client import DetectionError
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, DetectionError)):
        return True
    try:
        import duckdb
        if isinstance(exc, duckdb.IOException):       # e.g. the catalogue is locked by another writer
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


_RETRY = dict(retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=transient_only, cache_policy=NO_CACHE)


@task(name="crawl-freesound", timeout_seconds=12 * 3600, **_RETRY)
def crawl_freesound(config_path: str | None, full: bool, reconcile: bool, base_url: str | None) -> dict[str, Any]:
    return stages.stage_crawl_freesound(config_mod.load(config_path), full=full, reconcile=reconcile,
                                        base_url=base_url)


@task(name="ingest-fma", timeout_seconds=6 * 3600, **_RETRY)
def ingest_fma(config_path: str | None, fma_dir: str | None) -> dict[str, Any]:
    return stages.stage_ingest_fma(config_mod.load(config_path), fma_dir)


@task(name="license-gate", timeout_seconds=3600, **_RETRY)
def license_gate(config_path: str | None) -> dict[str, Any]:
    st = stages.stage_license_gate(config_mod.load(config_path))
    return {"written": st.written, "takedowns": st.takedowns,
            "kept": {f"{s}:{k}": n for (s, k), n in st.kept.items()},
            "rejected": {f"{s}:{k}": n for (s, k), n in st.rejected.items()}}


@task(name="download-audio", timeout_seconds=24 * 3600, **_RETRY)
def download_audio(config_path: str | None, base_url: str | None) -> dict[str, Any]:
    return stages.stage_download(config_mod.load(config_path), base_url=base_url)


@task(name="music-screen", timeout_seconds=24 * 3600, **_RETRY)
def music_screen(config_path: str | None) -> dict[str, Any]:
    return stages.stage_music_screen(config_mod.load(config_path))


@task(name="copyright-review", timeout_seconds=6 * 3600, **_RETRY)
def copyright_review(config_path: str | None) -> dict[str, Any]:
    return stages.stage_review(config_mod.load(config_path))


@flow(name="refresh", log_prints=True)
def refresh(config_path: str | None = None, full: bool = False, reconcile: bool = False,
            fma_dir: str | None = None, base_url: str | None = None, screen: bool = True) -> dict[str, Any]:
    out = {
        "freesound": crawl_freesound(config_path, full, reconcile, base_url),
        "fma": ingest_fma(config_path, fma_dir),
    }
    out["gate"] = license_gate(config_path)
    out["download"] = download_audio(config_path, base_url)
    if screen:
        out["music_screen"] = music_screen(config_path)
        out["review"] = copyright_review(config_path)
    print(json.dumps(out, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--full", action="store_true")
    p.add_argument("--reconcile", action="store_true")
    p.add_argument("--fma-dir")
    p.add_argument("--base-url")
    p.add_argument("--no-screen", action="store_true", help="skip the music screen and copyright review")
    a = p.parse_args(argv)
    refresh(a.config, a.full, a.reconcile, a.fma_dir, a.base_url, not a.no_screen)


if __name__ == "__main__":
    main()
