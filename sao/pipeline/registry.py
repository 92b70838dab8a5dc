"""The pipeline, in paper order, in one place: every source's ingest, the license gate, every
source's post-gate audio fetch, decode, the music screen, copyright review, embeddings, repeated
recordings; then release, shards and the attribution report.

``sao refresh``, the Prefect flows (flows/), ``sao demo`` and the chaos runner all run these
lists through one runner (sao.pipeline.runner, flows/stages.py). Adding a stage is one class
(sao.pipeline.stage.Stage) and one line in ``STAGES``; adding a source is one file (sao/sources/base.py).
"""
from __future__ import annotations

from .stage import Stage
from .stages.copyright_review import CopyrightReview
from .stages.decode import Decode
from .stages.dedup import Dedup
from .stages.embed import Embed
from .stages.license_gate import LicenseGate
from .stages.music_screen import MusicScreen
from .stages.release import AttributionReport, Release, Shards


def _source_stages(kind: str) -> list[Stage]:
    from ..sources import SOURCES
    made = (getattr(src, kind)() for src in SOURCES.values())
    return [s for s in made if s is not None]


# Every stage, in paper order. A stage's ``group`` says which runs include it: "refresh" (the data
# stages: `sao refresh`, the scheduled refresh flow, the demo) or "rebuild" (release, shards, report).
STAGES: list[Stage] = [
    *_source_stages("ingest_stage"),
    LicenseGate(),
    *_source_stages("audio_stage"),
    Decode(),
    MusicScreen(),
    CopyrightReview(),
    Embed(),
    Dedup(),
    Release(),
    Shards(),
    AttributionReport(),
]
GROUPS = ("refresh", "rebuild", "all")


def group(name: str) -> list[Stage]:
    if name not in GROUPS:
        raise KeyError(f"no stage group {name!r} (groups: {', '.join(GROUPS)})")
    return [s for s in STAGES if name == "all" or s.group == name]


def get(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no pipeline stage named {name!r} (stages: {', '.join(s.name for s in STAGES)})")


def select(names: str | list[str] | None) -> list[Stage]:
    """A group name ("refresh", "rebuild", "all"), a list of stage names (run in registry order), or None (refresh)."""
    if names is None:
        return group("refresh")
    if isinstance(names, str):
        return group(names)
    wanted = {get(n).name for n in names}
    return [s for s in STAGES if s.name in wanted]
