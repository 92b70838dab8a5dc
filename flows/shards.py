"""The `shards` flow: plan both shard sets from the catalogue, write the shards in parallel
through Prefect's task runner (a process pool by default: FLAC encoding is CPU bound), then
record decode failures and write the shard index.

Each shard is its own task; a shard that already exists is skipped, so a failed or
interrupted run is resumed by running the flow again (an unchanged shard costs nothing).
[orchestration].task_runner = "dask" or "ray" spreads the shards over that cluster; the default
"thread" runner becomes a process pool of [shards].workers here, because FLAC encoding is CPU bound.

    python -m flows.shards --config sao.toml [--name NAME] [--release NAME] [--workers 2] [--runner dask]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ProcessPoolTaskRunner

from sao import config as config_mod
from sao.catalog import Catalog

from . import runtime
from sao.shards import PlanConfig, finalize_build, prepare_build
from sao.shards.writer import write_shard


def _plan_cfg(cfg) -> PlanConfig:
    sc = cfg.shards
    return PlanConfig(seed=sc.seed, ae_max_chunks=sc.ae_max_chunks, hifi_extra_chunks=sc.hifi_extra_chunks,
                      max_windows_per_recording=sc.max_windows_per_recording,
                      target_shard_bytes=sc.target_shard_mb * 1024 * 1024)


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_shards(config_path: str | None, name: str | None, release: str | None = None):
    cfg = config_mod.load(config_path)
    with Catalog(cfg.catalog_path) as cat:
        return prepare_build(cat, shards_root=config_mod.shards_root(cfg), audio_store=cfg.path(cfg.paths.audio_store),
                             required_stages=list(cfg.shards.required_stages), plan_cfg=_plan_cfg(cfg), name=name,
                             release=release)


@task(name="write-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def write_shard_task(spec, ctx):
    return write_shard(spec, ctx)


@task(name="finalize-shards", cache_policy=NO_CACHE)
def finalize(config_path: str | None, plan, results, seconds: float) -> dict[str, Any]:
    cfg = config_mod.load(config_path)
    with Catalog(cfg.catalog_path) as cat:
        return finalize_build(cat, plan, results, config_hash=cfg.config_hash(), seconds=seconds)


@flow(name="shards", task_runner=ProcessPoolTaskRunner(max_workers=2))
def shards(config_path: str | None = None, name: str | None = None, release: str | None = None) -> dict[str, Any]:
    with runtime.recorded_run(config_path, "shards", runtime.current_runner()) as (stages, tally):
        t0 = time.perf_counter()
        plan = tally.result(plan_shards(config_path, name, release, return_state=True))
        futures = write_shard_task.map(plan.specs, ctx=unmapped(plan.ctx)) if plan.specs else []
        results = tally.results(futures)
        out = tally.result(finalize(config_path, plan, results, time.perf_counter() - t0, return_state=True))
        stages["shards"] = summary(out)
        print(f"shards {out['name']}: {out['shards']} shard(s), {out['bytes'] / 1e6:.1f} MB at {out['location']}")
    return out


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """A build's result without its per-shard checksums and settings (what a run summary keeps)."""
    return {k: v for k, v in out.items() if k not in ("shard_sha256", "settings")}


def shards_runner(cfg, kind: str | None = None, workers: int | None = None):
    kind = kind or cfg.orchestration.task_runner
    if kind == "thread":
        return ProcessPoolTaskRunner(max_workers=workers or cfg.shards.workers)
    return runtime.task_runner(cfg, kind, workers)


def run(config_path: str | None = None, *, name: str | None = None, release: str | None = None,
        runner: str | None = None, workers: int | None = None) -> dict[str, Any]:
    cfg = config_mod.load(config_path)
    return shards.with_options(task_runner=shards_runner(cfg, runner, workers))(config_path, name, release)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config")
    p.add_argument("--name")
    p.add_argument("--release", help="build from this release's recordings (sao release create)")
    p.add_argument("--workers", type=int)
    p.add_argument("--runner", choices=["thread", "dask", "ray"])
    a = p.parse_args(argv)
    run(a.config, name=a.name, release=a.release, runner=a.runner, workers=a.workers)


if __name__ == "__main__":
    main()
