"""The `attribution` flow: freeze a release of the admitted recordings (optional), then build the
attribution files and report of that release, or the newest (attribution/releases/NAME/).

    python -m flows.attribution [--config sao.toml] [--release NAME] [--create]
"""
from __future__ import annotations

import argparse
from typing import Any

from prefect import flow

from flows import runtime
from flows.stages import run_stages
from sao.pipeline import registry
from sao.pipeline.stage import RunOptions


@flow(name="attribution")
def attribution(config_path: str | None = None, release: str | None = None, create: bool = False) -> dict[str, Any]:
    names = ["release", "attribution_report"] if create else ["attribution_report"]
    with runtime.recorded_run(config_path, "attribution", runtime.current_runner()) as (stages, tally):
        done = run_stages(config_path, registry.select(names), RunOptions(release_name=release), tally, stages)
    return {"release": done["release"].details if create else None, "report": done["attribution_report"].details}


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
