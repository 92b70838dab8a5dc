"""Freeze what the catalogue admits into a signed release, build both WebDataset shard sets from it,
and write its attribution report: the three stages that turn the catalogue into something to train
on and to publish (sao.attribution, sao.shards)."""
from __future__ import annotations

import time

from ... import config as config_mod
from ..stage import Plan, Stage, StageContext, Stats


def _release_name(ctx: StageContext, cat) -> str | None:
    """The release this run names (or froze, see Release.carry), else the newest one."""
    from ...attribution.release import latest_release
    if ctx.options.release_name:
        return ctx.options.release_name
    newest = latest_release(cat)
    return newest["name"] if newest else None


class Release(Stage):
    name = "release"
    group = "rebuild"
    reads = ("admitted",)
    writes = ("releases", "release_items", "release_exclusions", "[paths].releases/<name>.sig")

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...attribution.release import create_release
        from ...signing import key_file_for, load_signing_key
        from ...fsutil import is_remote
        if is_remote(ctx.cfg.paths.releases):     # the signature files are verified from a local folder
            raise config_mod.ConfigError(
                f"[paths].releases = {ctx.cfg.paths.releases!r}: release signatures need a local folder; keep "
                "it local and publish reports elsewhere with `sao release report --out URL`")
        key = load_signing_key(key_file_for(ctx.cfg, ctx.options.key_file))
        with ctx.catalog() as cat:
            out = create_release(cat, ctx.options.release_name, required_stages=list(ctx.cfg.shards.required_stages),
                                 config_hash=ctx.config_hash, notes=ctx.options.release_notes,
                                 signatures_dir=ctx.cfg.path(ctx.cfg.paths.releases), signing_key=key,
                                 gate_policy=config_mod.license_policy(ctx.cfg))
        excluded = out.get("excluded") if isinstance(out.get("excluded"), dict) else {}
        st = Stats(self.name, items_in=out["recordings"] + sum(excluded.values()), passed=out["recordings"],
                   details=out)
        for reason, n in sorted(excluded.items()):
            st.reject(reason, n)
        return st

    def carry(self, stats: Stats) -> dict:
        return {"release_name": stats.details["name"]}      # the shards and the report of this run use it


class Shards(Stage):
    name = "shards"
    group = "rebuild"
    reads = ("release_items (or admitted)", "audio store")
    writes = ("[paths].shards/<snapshot>/", "decisions:decode (files that fail while writing)")
    batched = True
    batch_size = 1            # one shard per task: a shard that exists is skipped, so a rerun resumes
    max_reruns = 1

    def workers(self, ctx: StageContext) -> int:
        return ctx.options.workers or ctx.cfg.shards.workers

    def plan(self, ctx: StageContext) -> Plan:
        from ...shards import prepare_build
        from ...shards.plan import PlanConfig
        sc = ctx.cfg.shards
        plan_cfg = PlanConfig(seed=sc.seed, ae_max_chunks=sc.ae_max_chunks, hifi_extra_chunks=sc.hifi_extra_chunks,
                              max_windows_per_recording=sc.max_windows_per_recording,
                              target_shard_bytes=sc.target_shard_mb * 1024 * 1024)
        with ctx.catalog() as cat:
            build = prepare_build(cat, shards_root=config_mod.shards_root(ctx.cfg), audio_store=ctx.audio_store,
                                  required_stages=list(sc.required_stages), plan_cfg=plan_cfg,
                                  name=ctx.options.shards_name, release=ctx.options.release_name,
                                  gate_policy=config_mod.license_policy(ctx.cfg))
        return Plan(list(build.specs), {"write": build.ctx}, keep={"build": build, "t0": time.time()})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> list:
        from ...shards.writer import write_shard
        return [write_shard(spec, meta["write"]) for spec in batch]

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...shards import finalize_build
        written = [r for b in results for r in b]
        with ctx.catalog() as cat:
            out = finalize_build(cat, plan.keep["build"], written, config_hash=ctx.config_hash,
                                 seconds=time.time() - plan.keep["t0"])
        st = Stats(self.name, items_in=out["recordings"], passed=out["recordings"] - len(out["decode_failures"]),
                   audio_seconds=out["audio_seconds"],
                   details={k: v for k, v in out.items() if k not in ("shard_sha256", "settings")})
        st.reject("decode-failure", len(out["decode_failures"]))
        for rid, why in sorted(out["decode_failures"].items()):
            st.error(rid, why)
        return st

    def again(self, ctx: StageContext, stats: Stats) -> bool:
        # a recording that failed part-way is a decode reject now: the next plan leaves it out
        return stats.details.get("status") == "incomplete"


class AttributionReport(Stage):
    name = "attribution_report"
    group = "rebuild"
    reads = ("releases", "release_items", "release_exclusions")
    writes = ("[paths].releases/<name>/ (CSV, Markdown, HTML, plots)",)

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...attribution.release import ReleaseError
        from ...attribution.report import build_report
        with ctx.catalog(read_only=True) as cat:
            name = _release_name(ctx, cat)
            if name is None:
                raise ReleaseError("no release yet: run `sao release create NAME` first")
            out = build_report(cat, name, ctx.cfg.location(ctx.cfg.paths.releases))
        return Stats(self.name, items_in=out.get("recordings", 0), passed=out.get("recordings", 0), details=out)
