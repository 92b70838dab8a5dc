"""Chains of the stage flows, each on the task runner [orchestration] names:

- `rebuild`: freeze a release of what the catalogue admits now, build both shard sets from
  that release, and write its attribution report (the weekly deployment).
- `full_rebuild`: `refresh`, then `rebuild`, then (optionally) the training stages on the new
  shards: everything a new release needs, in order.
- `scheduled_refresh`: the refresh flow for the daily deployment.

Each stage flow runs as a subflow and writes its own run summary; `full_rebuild` writes one
more for the chain as a whole.

    python -m flows.full_rebuild --config sao.toml [--release NAME] [--train --t5-path DIR]
"""
from __future__ import annotations

import argparse
from typing import Any

from prefect import flow

from flows import refresh as refresh_flow
from flows import runtime
from flows import shards as shards_flow
from flows.stages import run_stages
from sao import config as config_mod
from sao.pipeline import registry
from sao.pipeline.stage import RunOptions


@flow(name="scheduled-refresh", log_prints=True)
def scheduled_refresh(config_path: str | None = None, base_url: str | None = None, full: bool = False,
                      screen: bool = True, dedup: bool = True) -> dict[str, Any]:
    return refresh_flow.run(config_path, base_url=base_url, full=full, screen=screen, dedup=dedup)


@flow(name="rebuild", log_prints=True)
def rebuild(config_path: str | None = None, release: str | None = None) -> dict[str, Any]:
    """The pipeline's release stages (registry.REBUILD); the shards as their own flow, on a process pool."""
    with runtime.recorded_run(config_path, "rebuild", runtime.current_runner()) as (stages, tally):
        rel = run_stages(config_path, registry.select(["release"]), RunOptions(release_name=release), tally,
                         stages)["release"].details
        built = shards_flow.run(config_path, release=rel["name"])
        stages["shards"] = {"stage": "shards", **_stats(built)}
        report = run_stages(config_path, registry.select(["attribution_report"]),
                            RunOptions(release_name=rel["name"]), tally, stages)["attribution_report"].details
    return {"release": rel, "shards": built, "report": report,
            "stages": {k: v for k, v in stages.items() if k != "run_id"}}


def _stats(built: dict[str, Any]) -> dict[str, Any]:
    from sao.pipeline.stage import Stats
    n = built["recordings"]
    return Stats("shards", items_in=n, passed=n - len(built["decode_failures"]),
                 audio_seconds=built["audio_seconds"]).to_dict()


@flow(name="full_rebuild", log_prints=True)
def full_rebuild(config_path: str | None = None, release: str | None = None, base_url: str | None = None,
                 train: bool = False, train_out: str | None = None, t5_path: str | None = None,
                 vae_steps: int = 40, dit_steps: int = 60) -> dict[str, Any]:
    cfg = config_mod.load(config_path)
    with runtime.recorded_run(config_path, "full_rebuild", runtime.current_runner()) as (stages, tally):
        out = refresh_flow.run(config_path, base_url=base_url)
        stages.update({k: v for k, v in out.items() if k not in ("run_id", "cache_hits")})
        tally.cache_hits += out.get("cache_hits", 0)
        built = rebuild(config_path, release)
        stages.update(built["stages"])
        if train:
            from flows.train import train as train_flow
            out_dir = train_out or str(cfg.path(cfg.paths.checkpoints) / built["release"]["name"])
            stages["train"] = train_flow(built["shards"]["location"], out_dir, vae_steps=vae_steps,
                                         dit_steps=dit_steps, t5_path=t5_path, config_path=config_path)
        print(f"release {built['release']['name']}: shards at {built['shards']['location']}, "
              f"report at {built['report']['html']}")
    return stages


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--release", help="release name (default rel-<content hash>)")
    ap.add_argument("--base-url", help="Freesound API base URL (default [freesound].base_url)")
    ap.add_argument("--train", action="store_true", help="train the autoencoder and the DiT on the new shards")
    ap.add_argument("--train-out")
    ap.add_argument("--t5-path")
    ap.add_argument("--vae-steps", type=int, default=40)
    ap.add_argument("--dit-steps", type=int, default=60)
    a = ap.parse_args(argv)
    full_rebuild(a.config, a.release, a.base_url, a.train, a.train_out, a.t5_path, a.vae_steps, a.dit_steps)


if __name__ == "__main__":
    main()
