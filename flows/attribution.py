"""The `attribution` flow: freeze a release of the admitted recordings (optional), then build the
attribution files and report of the newest release (attribution/releases/NAME/).

    python -m flows.attribution [--config sao.toml] [--release NAME] [--create]
"""
from __future__ import annotations

import argparse
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from sao import config as config_mod
from sao.refresh import stage_attribution, stage_release

from . import runtime


@task(name="create-release", cache_policy=NO_CACHE)
def release_task(config_path: str | None, name: str | None) -> dict[str, Any]:
    return stage_release(config_mod.load(config_path), name)


@task(name="attribution-report", cache_policy=NO_CACHE)
def report_task(config_path: str | None, name: str | None) -> dict[str, Any]:
    return stage_attribution(config_mod.load(config_path), name)


@flow(name="attribution")
def attribution(config_path: str | None = None, release: str | None = None, create: bool = False) -> dict[str, Any]:
    with runtime.recorded_run(config_path, "attribution", runtime.current_runner()) as (stages, tally):
        created = tally.result(release_task(config_path, release, return_state=True)) if create else None
        report = tally.result(report_task(config_path, created["name"] if created else release, return_state=True))
        stages.update(release=created, report=report)
    return {"release": created, "report": report}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config")
    ap.add_argument("--release", help="release name (default: the newest; with --create, rel-<content hash>)")
    ap.add_argument("--create", action="store_true", help="freeze a release of the catalogue first")
    a = ap.parse_args(argv)
    out = attribution(a.config, a.release, a.create)
    print(f"attribution report: {out['report']['html']}")


if __name__ == "__main__":
    main()
