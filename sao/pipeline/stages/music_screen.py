"""The PANNs music screen as a pipeline stage: batches of audio through Cnn14_DecisionLevelMax,
each verdict bound to the model's checksum and the rule (sao.analysis.music_screen)."""
from __future__ import annotations

from ...analysis import music_screen as screen_mod
from ...config import Config
from ..stage import Plan, Stage, StageContext, Stats, file_identity


def screen_config(cfg: Config):
    from ...analysis.music_rule import MusicRule, default_music_classes
    from ...analysis.music_screen import ScreenConfig
    ms = cfg.music_screen
    return ScreenConfig(rule=MusicRule(threshold=ms.threshold, min_seconds=ms.min_seconds, contiguous=ms.contiguous),
                        classes=tuple(ms.classes or default_music_classes()), window_seconds=ms.window_seconds,
                        batch_size=ms.batch_size)


def load_panns_for(cfg: Config, uncalibrated: bool | None = None, checkpoint: str | None = None):
    from ...analysis.panns import load_model
    ms = cfg.music_screen
    ckpt = checkpoint if checkpoint is not None else ms.checkpoint
    return load_model(cfg.path(ckpt) if ckpt else None,
                      uncalibrated=ms.uncalibrated if uncalibrated is None else uncalibrated, device=ms.device or None)


def _uncalibrated(ctx: StageContext) -> bool:
    o = ctx.options.uncalibrated
    return ctx.cfg.music_screen.uncalibrated if o is None else o


class MusicScreen(Stage):
    name = screen_mod.STAGE
    reads = ("playable", "audio store", "PANNs checkpoint")
    writes = ("decisions:music_screen",)
    batched = True
    cacheable = True          # a batch names each file by content; the model by checksum (meta)
    timeout_s = 12 * 3600

    def skip(self, ctx: StageContext) -> str | None:
        if not (ctx.options.screen_checkpoint or ctx.cfg.music_screen.checkpoint) and not _uncalibrated(ctx):
            return ("no [music_screen].checkpoint configured (Cnn14_DecisionLevelMax.pth); unscreened audio stays "
                    "out of every release. uncalibrated = true screens with random weights, marked as such")
        return None

    def _model(self, ctx: StageContext):
        unc, ckpt = _uncalibrated(ctx), ctx.options.screen_checkpoint
        path = ckpt if ckpt is not None else ctx.cfg.music_screen.checkpoint
        return ctx.model(("panns", unc, file_identity(ctx.cfg.path(path) if path else None)),
                         lambda: load_panns_for(ctx.cfg, unc, ckpt))

    def plan(self, ctx: StageContext) -> Plan:
        # the weights' checksum, not the model: a run with nothing to screen loads nothing (compute
        # loads it and checks it is the one planned)
        from ...fsutil import sha256_file
        ckpt = ctx.options.screen_checkpoint
        path = ckpt if ckpt is not None else ctx.cfg.music_screen.checkpoint
        sha = sha256_file(ctx.cfg.path(path)) if path else None
        sig = screen_config(ctx.cfg).signature(sha)
        with ctx.catalog(read_only=True) as cat:
            items = screen_mod.pending_screen(cat, sig, ctx.audio_store)
        return Plan(items, {"signature": sig, "checkpoint_sha256": sha, "uncalibrated": sha is None})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> dict:
        lm = self._model(ctx)
        sc = screen_config(ctx.cfg)
        if sc.signature(lm.checkpoint_sha256) != meta["signature"]:
            raise ValueError(f"music screen: the configured model or rule changed during the run "
                             f"({meta['signature']} planned)")
        results, st = screen_mod.screen_audio(batch, lm, sc)
        return {"results": results, "stats": st}

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        sc = screen_config(ctx.cfg)
        found = {k: v for b in results for k, v in b["results"].items()}
        meta = plan.meta
        decisions, counts = screen_mod.screen_decisions(found, sc, checkpoint_sha256=meta["checkpoint_sha256"],
                                             uncalibrated=meta["uncalibrated"], config_hash=ctx.config_hash)
        with ctx.catalog() as cat:
            cat.add_decisions(decisions)
        total = {k: sum(b["stats"][k] for b in results) for k in ("audio_seconds", "model_seconds", "early_stops",
                                                                  "wall_seconds")}
        summary = screen_mod.screen_summary(counts, len(found), sc, checkpoint_sha256=meta["checkpoint_sha256"],
                                 uncalibrated=meta["uncalibrated"], audio_seconds=total["audio_seconds"],
                                 wall_seconds=total["wall_seconds"], model_seconds=total["model_seconds"],
                                 early_stops=total["early_stops"])
        st = Stats(self.name, items_in=len(found), passed=len(found) - counts.get("music", 0) - counts.get("errors", 0),
                   audio_seconds=total["audio_seconds"], details=summary)
        st.reject("music (to copyright review)", counts.get("music", 0))
        st.reject("audio-corrupt", counts.get("errors", 0))
        for rid, r in found.items():
            if isinstance(r, dict) and r.get("error"):
                st.error(rid, r["error"])
        return st
