"""Repeated recordings as a pipeline stage: exact copies always, near replicas from the stored
embeddings of the configured CLAP model; one recording of each group is kept (sao.dedup)."""
from __future__ import annotations

from ..stage import Plan, Stage, StageContext, Stats
from .embed import clap_signature, uncalibrated


class Dedup(Stage):
    name = "dedup"
    reads = ("playable", "embeddings store")
    writes = ("duplicate_groups", "decisions:dedup")

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...analysis.clap import MODEL_NAME
        from ...dedup.stage import run_dedup
        sig, sha = clap_signature(ctx.cfg, uncalibrated(ctx))
        with ctx.catalog() as cat:
            out = run_dedup(cat, embeddings_dir=ctx.cfg.path(ctx.cfg.dedup.embeddings_dir), signature=sig or None,
                            threshold=ctx.cfg.dedup.threshold, config_hash=ctx.config_hash,
                            model_name=f"{MODEL_NAME} {ctx.cfg.dedup.clap_model}", checkpoint_sha256=sha,
                            uncalibrated=sha is None)
        repeated = sum((out.get("repeated_excluded") or {}).values())
        st = Stats(self.name, items_in=out["recordings"], passed=out["recordings"] - repeated, details=out)
        for source, n in sorted((out.get("repeated_excluded") or {}).items()):
            st.reject(f"repeated recording ({source})", n)
        return st
