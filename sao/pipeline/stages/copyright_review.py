"""Copyright review as a pipeline stage: audio the music screen flagged goes to content detection,
catalogue-matched sources (FMA) are matched against the copyrighted-music catalogue; a match waits
for a person (sao.review)."""
from __future__ import annotations

import logging
import os
import pathlib

from ...config import Config
from ...review.queue import STAGE
from ..stage import Plan, Stage, StageContext, Stats

ROOT = pathlib.Path(__file__).resolve().parents[3]
log = logging.getLogger(__name__)


def detection_client(cfg: Config, url: str | None = None, key: str | None = None):
    from ...review.detection_client import DetectionClient
    url = url or cfg.review.detection_url
    if not url:
        return None
    return DetectionClient(url, key or os.environ.get(cfg.review.detection_key_env, ""), timeout=cfg.review.timeout_s)


def catalogue_file(cfg: Config) -> pathlib.Path | None:
    """[review].copyright_catalogue: relative to the config's folder, else to the project."""
    path = cfg.review.copyright_catalogue
    if not path:
        return None
    p = pathlib.Path(path)
    if not p.is_absolute():
        p = cfg.path(path) if cfg.path(path).exists() else ROOT / path
    return p


class CopyrightReview(Stage):
    name = STAGE
    reads = ("decisions:music_screen", "playable", "copyright_catalogue", "detection service")
    writes = ("review_queue", "decisions:copyright_review")

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from ...review.catalogue_match import NoCatalogue, load_catalogue
        from ...review.stage import run_content_review, run_fma_review
        client = detection_client(ctx.cfg, ctx.options.detection_url, ctx.secrets.get("detection_key"))
        try:
            with ctx.catalog() as cat:
                details: dict = {}
                cat_file = catalogue_file(ctx.cfg)
                if cat_file is not None:
                    details["catalogue_rows"] = load_catalogue(cat, cat_file)
                content = run_content_review(cat, client, audio_store=ctx.audio_store, config_hash=ctx.config_hash,
                                             wait_seconds=ctx.cfg.review.wait_seconds)
                try:
                    meta = run_fma_review(cat, config_hash=ctx.config_hash, title_min=ctx.cfg.review.title_min_score)
                except NoCatalogue as exc:    # the tracks stay pending (out of every release) and the run says so
                    log.warning("copyright review: %s", exc)
                    meta = {"checked": 0, "no_match": 0, "to_human_review": 0, "not_run": str(exc)}
        finally:
            if client is not None:
                client.close()
        details.update(content=content, catalogue_match=meta)
        st = Stats(self.name, items_in=content["submitted"] + content["not_music_passed"] + meta["checked"],
                   passed=content["cleared"] + content["not_music_passed"] + meta["no_match"], details=details)
        st.reject("content match (to human review)", content["flagged"])
        st.reject("catalogue match (to human review)", meta["to_human_review"])
        st.reject("detection error (retried next run)", content["errors"])
        if meta.get("not_run"):
            st.error("catalogue match", meta["not_run"])
        return st
