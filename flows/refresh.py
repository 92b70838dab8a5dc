"""The `refresh` flow: the pipeline's data stages (sao.pipeline.registry.group("refresh"): every source's
ingest, the license gate, audio download, decode, the music screen, copyright review, embeddings,
repeated recordings) as Prefect tasks, each stage's batches mapped over the task runner
[orchestration] names (flows/stages.py). `sao refresh` runs exactly the same stage list inline.

The run summary (items in, passed, rejected by reason, throughput, cache hits) goes to the
catalogue's `runs` table; `sao status` prints it.

    python -m flows.refresh --config sao.toml [--full] [--reconcile] [--fma-dir DIR] [--runner dask]
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from prefect import flow

from sao import config as config_mod
from sao.pipeline import registry
from sao.pipeline.stage import RunOptions

from flows import runtime
from flows.stages import is_transient, run_stages  # noqa: F401 - is_transient: the retry rule, imported by tests

SCREEN_STAGES = ("music_screen", "copyright_review")
DEDUP_STAGES = ("embed", "dedup")


def refresh_stages(screen: bool = True, dedup: bool = True, skip: list[str] | None = None) -> list:
    left_out = set(skip or ()) | (set() if screen else set(SCREEN_STAGES)) | (set() if dedup else set(DEDUP_STAGES))
    for name in left_out:
        registry.get(name)                          # an unknown name is an error, not a no-op
    return [s for s in registry.group("refresh") if s.name not in left_out]


@flow(name="refresh", log_prints=True)
def refresh(config_path: str | None = None, full: bool = False, reconcile: bool = False,
            fma_dir: str | None = None, base_url: str | None = None, screen: bool = True,
            dedup: bool = True, refresh_cache: bool = False, local_dir: str | None = None,
            skip: list[str] | None = None) -> dict[str, Any]:
    cfg = config_mod.load(config_path)
    options = RunOptions(full=full, reconcile=reconcile, fma_dir=fma_dir, base_url=base_url,
                         refresh_cache=refresh_cache, local_dir=local_dir)
    with runtime.recorded_run(config_path, "refresh", runtime.current_runner()) as (out, tally):
        shared = bool(cfg.orchestration.freesound_rate_limit)
        if shared:
            runtime.ensure_freesound_limit(cfg)
        run_stages(config_path, refresh_stages(screen, dedup, skip), options, tally, out, shared_limit=shared)
        out["cache_hits"] = tally.cache_hits
        print(json.dumps({k: v.get("details", v) if isinstance(v, dict) else v for k, v in out.items()
                          if k != "run_id"}, indent=1, default=str))
    return out


def run(config_path: str | None = None, *, runner: str | None = None, workers: int | None = None, **kw
        ) -> dict[str, Any]:
    """The refresh flow on the task runner [orchestration] names (or ``runner``/``workers``)."""
    cfg = config_mod.load(config_path)
    return refresh.with_options(task_runner=runtime.task_runner(cfg, runner, workers))(config_path, **kw)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--full", action="store_true")
    p.add_argument("--reconcile", action="store_true")
    p.add_argument("--fma-dir")
    p.add_argument("--local-dir", help="a local folder source (audio + metadata.csv), overriding [local].folder")
    p.add_argument("--base-url")
    p.add_argument("--no-screen", action="store_true", help="skip the music screen and copyright review")
    p.add_argument("--no-dedup", action="store_true", help="skip the embeddings and the grouping of repeats")
    p.add_argument("--skip", action="append", metavar="STAGE", help="leave out this stage (repeatable)")
    p.add_argument("--refresh-cache", action="store_true", help="recompute cached batches and the FMA ingest")
    p.add_argument("--runner", choices=["thread", "dask", "ray"], help="override [orchestration].task_runner")
    p.add_argument("--workers", type=int)
    a = p.parse_args(argv)
    run(a.config, runner=a.runner, workers=a.workers, full=a.full, reconcile=a.reconcile, fma_dir=a.fma_dir,
        base_url=a.base_url, screen=not a.no_screen, dedup=not a.no_dedup, refresh_cache=a.refresh_cache,
        local_dir=a.local_dir, skip=a.skip)


if __name__ == "__main__":
    main()
