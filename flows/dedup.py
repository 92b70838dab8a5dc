"""The `dedup` flow on its own: LAION-CLAP embeddings of new playable audio, mapped over batches
(cached by content), then the grouping of repeated recordings: the refresh flow's last two stages.

    python -m flows.dedup --config sao.toml [--runner dask] [--workers 2]
"""
from __future__ import annotations

import argparse
from typing import Any

from prefect import flow

from flows import runtime
from flows.stages import run_stages
from sao import config as config_mod
from sao.pipeline import registry
from sao.pipeline.stage import RunOptions


@flow(name="dedup", log_prints=True)
def dedup(config_path: str | None = None) -> dict[str, Any]:
    with runtime.recorded_run(config_path, "dedup", runtime.current_runner()) as (out, tally):
        run_stages(config_path, registry.select(["embed", "dedup"]), RunOptions(), tally, out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--runner", choices=["thread", "dask", "ray"])
    ap.add_argument("--workers", type=int)
    a = ap.parse_args(argv)
    cfg = config_mod.load(a.config)
    dedup.with_options(task_runner=runtime.task_runner(cfg, a.runner, a.workers))(a.config)


if __name__ == "__main__":
    main()
