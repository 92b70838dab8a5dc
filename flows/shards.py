"""The `shards` flow: plan both shard sets from the catalogue (or a release), write each shard as its
own task through Prefect's task runner (a process pool by default: FLAC encoding is CPU bound), then
record decode failures and write the shard index: the pipeline's `shards` stage (flows/stages.py).

A shard that already exists is skipped, so a failed or interrupted run is resumed by running the
flow again. [orchestration].task_runner = "dask" or "ray" spreads the shards over that cluster; the
default "thread" runner becomes a process pool of [shards].workers here.

    python -m flows.shards --config sao.toml [--name NAME] [--release NAME] [--workers 2] [--runner dask]
"""
from __future__ import annotations

import argparse
from typing import Any

from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner

from flows import runtime
from flows.stages import run_stages
from sao import config as config_mod
from sao.pipeline import registry
from sao.pipeline.stage import RunOptions


@flow(name="shards", task_runner=ProcessPoolTaskRunner(max_workers=2))
def shards(config_path: str | None = None, name: str | None = None, release: str | None = None) -> dict[str, Any]:
    with runtime.recorded_run(config_path, "shards", runtime.current_runner()) as (stages, tally):
        st = run_stages(config_path, registry.select(["shards"]), RunOptions(shards_name=name, release_name=release),
                        tally, stages)["shards"]
        out = st.details
        print(f"shards {out['name']}: {out['shards']} shard(s), {out['bytes'] / 1e6:.1f} MB at {out['location']}")
    return out


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
