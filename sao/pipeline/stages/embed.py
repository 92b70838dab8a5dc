"""LAION-CLAP embeddings of playable audio not yet embedded with the configured model, stored by
content (sao.dedup.store); the repeated-recording grouping (dedup.py) reads them."""
from __future__ import annotations

from ...config import Config
from ..stage import Plan, Stage, StageContext, Stats, file_identity


def load_clap_for(cfg: Config, uncalibrated: bool | None = None):
    from ...analysis.clap import load_clap
    dc = cfg.dedup
    return load_clap(cfg.path(dc.clap_checkpoint) if dc.clap_checkpoint else None, amodel=dc.clap_model,
                     uncalibrated=dc.uncalibrated if uncalibrated is None else uncalibrated, device=dc.device or None)


def clap_signature(cfg: Config, unc: bool) -> tuple[str, str | None]:
    """(the configured model's embedding signature, its checkpoint's sha256); ("", None) when there is
    no checkpoint and random weights were not asked for."""
    from ...analysis.clap import clap_signature as signature
    from ...fsutil import sha256_file
    dc = cfg.dedup
    sha = sha256_file(cfg.path(dc.clap_checkpoint)) if dc.clap_checkpoint else None
    if sha is None and not unc:
        return "", None
    return signature(dc.clap_model, sha), sha


def uncalibrated(ctx: StageContext) -> bool:
    o = ctx.options.uncalibrated
    return ctx.cfg.dedup.uncalibrated if o is None else o


class Embed(Stage):
    name = "embed"
    reads = ("playable", "audio store", "CLAP checkpoint")
    writes = ("embeddings store", "decisions:decode (files CLAP cannot read)")
    batched = True
    cacheable = True          # files by content sha256, the model by signature (meta)
    timeout_s = 12 * 3600

    def skip(self, ctx: StageContext) -> str | None:
        if not ctx.cfg.dedup.clap_checkpoint and not uncalibrated(ctx):
            return ("no [dedup].clap_checkpoint configured: exact copies are still grouped; near replicas need "
                    "LAION-CLAP weights (uncalibrated = true embeds with random weights, marked as such)")
        return None

    def _model(self, ctx: StageContext):
        unc, path = uncalibrated(ctx), ctx.cfg.dedup.clap_checkpoint
        return ctx.model(("clap", unc, file_identity(ctx.cfg.path(path) if path else None)),
                         lambda: load_clap_for(ctx.cfg, unc))

    def plan(self, ctx: StageContext) -> Plan:
        from ...dedup.stage import plan_embed
        signature, sha = clap_signature(ctx.cfg, uncalibrated(ctx))   # nothing to embed: nothing loaded
        with ctx.catalog(read_only=True) as cat:
            todo, reused, origin, stored = plan_embed(cat, signature,
                                                      embeddings_dir=ctx.cfg.path(ctx.cfg.dedup.embeddings_dir),
                                                      audio_store=ctx.audio_store,
                                                      reuse_freesound_sim=ctx.cfg.dedup.reuse_freesound_sim)
        return Plan(sorted(todo.items()), {"signature": signature},
                    keep={"reused": reused, "origin": origin, "stored": stored, "sha": sha})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> dict:
        from ...analysis.clap import embed_files
        cm = self._model(ctx)
        if cm.signature != meta["signature"]:
            raise ValueError(f"embedding: the configured CLAP model changed during the run ({meta['signature']} planned)")
        sha = dict(batch)
        failed: dict[str, tuple[str, str]] = {}          # by path: record_undecodable names and rejects them
        vectors = embed_files(cm, list(sha), batch_size=ctx.cfg.dedup.batch_size, max_windows=ctx.cfg.dedup.max_windows,
                              on_error=lambda p, e: failed.__setitem__(p, (sha[p], e)))
        return {"vectors": {sha[p]: v for p, v in vectors.items()}, "failed_files": failed}

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...analysis.clap import MODEL_NAME
        from ...dedup.stage import record_undecodable
        from ...dedup.store import append_embeddings
        rows = {k: v for b in results for k, v in b["vectors"].items()}
        n = len(rows)
        reused = plan.keep["reused"]
        rows.update(reused)
        append_embeddings(ctx.cfg.path(ctx.cfg.dedup.embeddings_dir), plan.meta["signature"], rows,
                          plan.keep["origin"], f"{MODEL_NAME} {ctx.cfg.dedup.clap_model}", plan.keep["sha"])
        failed = {p: tuple(f) for b in results for p, f in b["failed_files"].items()}
        with ctx.catalog() as cat:
            undecodable, written = record_undecodable(cat, failed, config_hash=ctx.config_hash)
        st = Stats(self.name, items_in=len(plan.items) + len(reused), passed=n + len(reused),
                   details={"embedded": n, "reused_from_freesound": len(reused),
                            "already_stored": plan.keep["stored"], "undecodable": undecodable, "decode_errors": len(failed),
                            "decode_rejects_written": written, "uncalibrated": plan.keep["sha"] is None,
                            "signature": plan.meta["signature"]})
        st.reject("audio-corrupt", len(failed))
        for path, (_sha, why) in sorted(failed.items()):
            st.error(path, why)
        return st
