"""`sao demo`: run every stage that exists so far, end to end, on the embedded defaults.

Like a datatrove pipeline, the demo is a list of small steps with one job each; every step
returns its stats and the demo prints them. Later stages (crawl, screens, dedup, shards,
training, attribution) append their step here as they land.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from .config import Config

log = logging.getLogger(__name__)


@dataclass
class DemoContext:
    cfg: Config
    corpus: list[dict[str, Any]] = field(default_factory=list)
    replica: Any = None
    outputs: dict[str, str] = field(default_factory=dict)


def step_verify_corpus(ctx: DemoContext) -> dict[str, Any]:
    from .sources import sample_corpus
    t = time.perf_counter()
    rep = sample_corpus.verify(ctx.cfg.path(ctx.cfg.paths.sample_corpus))
    if not rep.ok:
        raise RuntimeError("sample corpus is damaged:\n  " + "\n  ".join(rep.problems))
    ctx.corpus = sample_corpus.load_metadata(ctx.cfg.path(ctx.cfg.paths.sample_corpus))
    dt_ = time.perf_counter() - t
    return {"files": rep.checked, "audio_seconds": round(rep.seconds, 1), "megabytes": round(rep.bytes / 1e6, 2),
            "audio_s_per_s": round(rep.seconds / dt_, 1)}


def step_catalog(ctx: DemoContext) -> dict[str, Any]:
    from .catalog import Catalog
    with Catalog(ctx.cfg.catalog_path) as cat:
        ctx.outputs["catalogue"] = str(ctx.cfg.catalog_path)
        return {"schema_version": cat.schema_version(), **{f"rows.{k}": v for k, v in cat.counts().items()
                                                            if k != "schema_migrations"}}


def step_build_replicas(ctx: DemoContext) -> dict[str, Any]:
    from .sources.replica import build_fma_replica, build_freesound_sounds
    root = ctx.cfg.path(ctx.cfg.replica.data_dir)
    sounds = build_freesound_sounds(ctx.corpus)
    fma_dir = build_fma_replica(ctx.corpus, root / "fma")
    ctx.outputs["fma replica"] = str(fma_dir)
    ctx._sounds = sounds  # type: ignore[attr-defined]
    return {"freesound_sounds": len(sounds), "fma_tracks": sum(e["replica"] == "fma" for e in ctx.corpus)}


def step_serve_replicas(ctx: DemoContext) -> dict[str, Any]:
    from .sources.replica import ReplicaServer, ReplicaSettings
    rc = ctx.cfg.replica
    settings = ReplicaSettings(api_tokens=rc.api_tokens, oauth_tokens=rc.oauth_tokens,
                               rate_limit_per_minute=rc.rate_limit_per_minute, max_page_size=rc.max_page_size)
    root = ctx.cfg.path(rc.data_dir)
    ctx.replica = ReplicaServer(ctx._sounds, settings, fma_dir=root / "fma", cache_dir=root / "previews",  # type: ignore[attr-defined]
                                host=rc.host, port=rc.port)
    ctx.replica.start()
    return {"api": ctx.replica.api_url, "fma": f"{ctx.replica.base_url}/fma/"}


def step_probe_replicas(ctx: DemoContext) -> dict[str, Any]:
    """Ask the Freesound replica for each allowed license, following `next`, and read the FMA tracks."""
    import io

    import pandas as pd
    token = ctx.cfg.replica.api_tokens[0]
    out: dict[str, Any] = {}
    with requests.Session() as s:
        s.headers["Authorization"] = f"Token {token}"
        for name in ("Creative Commons 0", "Attribution", "Sampling+"):
            url, params, n, pages = f"{ctx.replica.api_url}/search/", {
                "query": "", "filter": f'license:"{name}"', "page_size": 150,
                "fields": "id,name,license,duration,samplerate,channels,md5"}, 0, 0
            while url:
                r = s.get(url, params=params, timeout=30)
                r.raise_for_status()
                j = r.json()
                n, pages, url, params = n + len(j["results"]), pages + 1, j["next"], None
            out[f"freesound[{name}]"] = f"{n} sounds in {pages} page(s)"
        total = s.get(f"{ctx.replica.api_url}/search/", params={"page_size": 1}, timeout=30).json()["count"]
        out["freesound[all licenses]"] = total
        csv = s.get(f"{ctx.replica.base_url}/fma/fma_metadata/tracks.csv", timeout=30).text
    tracks = pd.read_csv(io.StringIO(csv), index_col=0, header=[0, 1])
    out["fma tracks by license"] = json.dumps(tracks[("track", "license")].fillna("(none)").value_counts().to_dict())
    return out


def step_export(ctx: DemoContext) -> dict[str, Any]:
    from .catalog import TABLES, Catalog
    dest = ctx.cfg.path(ctx.cfg.paths.exports)
    with Catalog(ctx.cfg.catalog_path) as cat:
        for t in TABLES:
            cat.export_parquet(t, dest / f"{t}.parquet")
    ctx.outputs["parquet exports"] = str(dest)
    return {"tables": len(TABLES)}


STEPS: list[tuple[str, Callable[[DemoContext], dict[str, Any]]]] = [
    ("verify sample corpus", step_verify_corpus),
    ("open catalogue (migrate)", step_catalog),
    ("build replicas", step_build_replicas),
    ("serve replicas on loopback", step_serve_replicas),
    ("probe replicas", step_probe_replicas),
    ("export catalogue to Parquet", step_export),
]


def run_demo(cfg: Config, echo: Callable[[str], None] = print) -> DemoContext:
    ctx = DemoContext(cfg)
    t0 = time.perf_counter()
    try:
        for i, (name, fn) in enumerate(STEPS, 1):
            t = time.perf_counter()
            stats = fn(ctx)
            echo(f"[{i}/{len(STEPS)}] {name} ({time.perf_counter() - t:.2f}s)")
            for k, v in stats.items():
                echo(f"      {k}: {v}")
    finally:
        if ctx.replica is not None:
            ctx.replica.stop()
    echo(f"\ndemo finished in {time.perf_counter() - t0:.1f}s. Outputs:")
    for k, v in ctx.outputs.items():
        echo(f"  {k:18s} {pathlib.Path(v).resolve()}")
    return ctx
