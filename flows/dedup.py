"""The `dedup` flow on its own: LAION-CLAP embeddings of new admitted audio, mapped over batches
(cached by content, like the refresh flow's embedding), stored in Parquet, then the grouping of
repeated recordings. The refresh flow runs the same tasks as its last stages.

    python -m flows.dedup --config sao.toml [--runner dask] [--workers 2]
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from prefect import flow, unmapped

from sao import config as config_mod

from . import runtime
from .refresh import batches, embed_batch, group_duplicates, plan_embed, store_embeddings


@flow(name="dedup", log_prints=True)
def dedup(config_path: str | None = None) -> dict[str, Any]:
    cfg = config_mod.load(config_path)
    with runtime.recorded_run(config_path, "dedup", runtime.current_runner()) as (out, tally):
        t0 = time.perf_counter()
        plan = tally.result(plan_embed(config_path, return_state=True))
        got = tally.results(runtime.cached(embed_batch, cfg).map(
            unmapped(config_path), unmapped(plan["signature"]), batches(plan["files"], cfg.orchestration.batch_files)))
        out["embed"] = tally.result(store_embeddings(config_path, {k: v for k, v in plan.items() if k != "files"},
                                                     got, time.perf_counter() - t0, return_state=True))
        out["dedup"] = tally.result(group_duplicates(config_path, return_state=True))
        print(out)
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
