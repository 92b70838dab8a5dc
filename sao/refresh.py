"""The data refresh, as plain functions over a config: crawl Freesound, ingest FMA, run the
license gate, download audio. The CLI, the demo and the Prefect flow (flows/refresh.py) all
call these; each opens the catalogue itself so it can run as an independent task."""
from __future__ import annotations

import logging
import pathlib
from typing import Any

from . import config as config_mod
from .catalog import Catalog
from .config import Config

log = logging.getLogger(__name__)


def make_client(cfg: Config, *, base_url: str | None = None, token: str | None = None, wrap=None):
    """A Freesound client for the config; ``wrap(client)`` may replace parts of it (the Prefect
    flows share its rate limit across workers that way)."""
    from .sources.freesound import FreesoundClient, RetryPolicy
    fs = cfg.freesound
    client = FreesoundClient(base_url or fs.base_url, token or config_mod.freesound_token(cfg),
                             oauth_token=config_mod.freesound_oauth_token(cfg),
                             rate_limit_per_minute=fs.rate_limit_per_minute, timeout=fs.timeout_s,
                             retry=RetryPolicy(max_retries=fs.max_retries,
                                               base_delay=fs.retry_base_delay_s),
                             max_download_bytes=fs.max_download_mb * 1024 * 1024,
                             download_deadline_s=fs.download_deadline_s)
    return wrap(client) if wrap else client


def search_fields(cfg: Config) -> tuple[str, ...]:
    from .sources.freesound import SEARCH_FIELDS
    return SEARCH_FIELDS + (("sim_laion_clap",) if cfg.freesound.request_sim_laion_clap else ())


def stage_crawl_freesound(cfg: Config, *, full: bool = False, reconcile: bool = False,
                          base_url: str | None = None, token: str | None = None, wrap_client=None) -> dict[str, Any]:
    from .sources.freesound_crawl import crawl_freesound, reconcile_freesound
    client = make_client(cfg, base_url=base_url, token=token, wrap=wrap_client)
    try:
        with Catalog(cfg.catalog_path) as cat:
            fields = search_fields(cfg)
            st = crawl_freesound(cat, client, page_size=cfg.freesound.page_size, full=full or reconcile,
                                 fields=fields, commit_every=cfg.freesound.commit_every_pages)
            out = {"pages": st.pages, "items": st.items, "new": st.new, "updated": st.updated,
                   "malformed": st.malformed, "malformed_fields": st.malformed_fields,
                   "per_license": st.per_license, "items_per_s": round(st.items_per_s, 1),
                   "requests": client.stats["requests"], "retries": client.stats["retries"]}
            if reconcile:
                out["reconcile"] = reconcile_freesound(cat, client, st.seen_ids, fields=fields)
            return out
    finally:
        client.close()


def stage_ingest_fma(cfg: Config, fma_dir: str | None = None) -> dict[str, Any]:
    from .sources.fma import ingest_fma
    root = fma_dir or cfg.fma.metadata_dir
    if not root:
        return {"skipped": "no [fma].metadata_dir configured"}
    with Catalog(cfg.catalog_path) as cat:
        st = ingest_fma(cat, cfg.path(root) if not pathlib.Path(root).is_absolute() else root,
                        audio_store=cfg.path(cfg.paths.audio_store), config_hash=cfg.config_hash(),
                        policy=config_mod.license_policy(cfg))     # audio only for what the gate admits
    return {"tracks": st.tracks, "with_audio": st.with_audio, "withheld": st.withheld,
            "audio_missing": st.audio_missing, "audio_corrupt": st.audio_corrupt, "malformed": st.malformed,
            "malformed_fields": st.malformed_fields, "removed": st.removed,
            "tracks_per_s": round(st.tracks / st.seconds, 1) if st.seconds else 0.0}


def stage_license_gate(cfg: Config):
    from .licensing.stage import run_license_gate
    with Catalog(cfg.catalog_path) as cat:
        return run_license_gate(cat, config_mod.license_policy(cfg), config_hash=cfg.config_hash())


def stage_download(cfg: Config, *, base_url: str | None = None, token: str | None = None,
                   limit: int | None = None) -> dict[str, Any]:
    from .sources.audio_download import download_audio
    if not cfg.freesound.download:
        return {"skipped": "[freesound].download = false"}
    client = make_client(cfg, base_url=base_url, token=token)
    try:
        with Catalog(cfg.catalog_path) as cat:
            st = download_audio(cat, client, cfg.path(cfg.paths.audio_store),
                                originals=cfg.freesound.download_originals, limit=limit)
    finally:
        client.close()
    return {"candidates": st.candidates, "downloaded": st.downloaded, "failed": st.failed,
            "megabytes": round(st.bytes / 1e6, 2), "audio_s_per_s": round(st.audio_s_per_s, 1),
            # which items failed and why (the first 50: a summary, the log has every one)
            "failures": dict(list(st.failures.items())[:50])}


def stage_decode(cfg: Config) -> dict[str, Any]:
    """Read every newly stored file (sao.audio.stage): the facts every later decision uses, or a reject."""
    from .audio.stage import run_decode
    with Catalog(cfg.catalog_path) as cat:
        out = run_decode(cat, audio_store=cfg.path(cfg.paths.audio_store), config_hash=cfg.config_hash())
    for rid, why in sorted(out["errors"].items()):
        log.warning("%s: does not decode, rejected: %s", rid, why)
    return out


def refresh(cfg: Config, *, full: bool = False, reconcile: bool = False, fma_dir: str | None = None,
            base_url: str | None = None, token: str | None = None) -> dict[str, Any]:
    """Run the metadata refresh (crawl, FMA, gate, download, decode) and record a run summary in the catalogue.
    The scheduled Prefect flow (flows/refresh.py) runs these and the screens, review and dedup."""
    from .runs import recording
    out: dict[str, Any] = {}
    with recording(cfg.catalog_path, flow="refresh", config_hash=cfg.config_hash(), task_runner="inline",
                   secrets=[token, *config_mod.secrets(cfg)]) as rec:
        rec.stages["freesound"] = out["freesound"] = stage_crawl_freesound(
            cfg, full=full, reconcile=reconcile, base_url=base_url, token=token)
        rec.stages["fma"] = out["fma"] = stage_ingest_fma(cfg, fma_dir)
        out["gate"] = stage_license_gate(cfg)
        rec.stages["gate"] = gate_summary(out["gate"])
        rec.stages["download"] = out["download"] = stage_download(cfg, base_url=base_url, token=token)
        rec.stages["decode"] = out["decode"] = stage_decode(cfg)
    out["run_id"] = rec.run_id
    return out


def gate_summary(st) -> dict[str, Any]:
    return {"evaluated": st.evaluated, "written": st.written, "takedowns": st.takedowns,
            "kept": {f"{s}:{k}": n for (s, k), n in st.kept.items()},
            "rejected": {f"{s}:{k}": n for (s, k), n in st.rejected.items()},
            "new_pass": st.new_pass, "new_rejected": {f"{s}:{k}": n for (s, k), n in st.new_rejected.items()}}


def stage_shards(cfg: Config, *, name: str | None = None, workers: int | None = None,
                 release: str | None = None) -> dict[str, Any]:
    """Build both shard sets for the current catalogue, or for one release's items (see sao.shards.build)."""
    from .shards import PlanConfig, build_shards
    sc = cfg.shards
    plan_cfg = PlanConfig(seed=sc.seed, ae_max_chunks=sc.ae_max_chunks, hifi_extra_chunks=sc.hifi_extra_chunks,
                          max_windows_per_recording=sc.max_windows_per_recording,
                          target_shard_bytes=sc.target_shard_mb * 1024 * 1024)
    with Catalog(cfg.catalog_path) as cat:
        return build_shards(cat, shards_root=config_mod.shards_root(cfg), audio_store=cfg.path(cfg.paths.audio_store),
                            required_stages=list(sc.required_stages), plan_cfg=plan_cfg,
                            config_hash=cfg.config_hash(), name=name, workers=workers or sc.workers,
                            release=release)


def stage_release(cfg: Config, name: str | None, *, notes: str | None = None, key_file: str | None = None,
                  signing_key=None) -> dict[str, Any]:
    """Freeze the admitted recordings (the shards' required stages admit them) into release NAME, signed
    under [paths].releases with SIGNING_KEY, else the configured key (sao.signing), else unsigned."""
    from .attribution.release import create_release
    from .signing import key_file_for, load_signing_key
    key = signing_key or load_signing_key(key_file_for(cfg, key_file))
    with Catalog(cfg.catalog_path) as cat:
        return create_release(cat, name, required_stages=list(cfg.shards.required_stages),
                              config_hash=cfg.config_hash(), notes=notes,
                              signatures_dir=cfg.path(cfg.paths.releases), signing_key=key)


def stage_attribution(cfg: Config, name: str | None = None) -> dict[str, Any]:
    """The attribution report of release NAME (default: the newest) under [paths].releases."""
    from .attribution.release import ReleaseError, latest_release
    from .attribution.report import build_report
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        if name is None:
            newest = latest_release(cat)
            if newest is None:
                raise ReleaseError("no release yet: run `sao release create NAME` first")
            name = newest["name"]
        return build_report(cat, name, cfg.path(cfg.paths.releases))


def screen_config(cfg: Config):
    from .analysis.music_rule import MusicRule, default_music_classes
    from .analysis.music_screen import ScreenConfig
    ms = cfg.music_screen
    return ScreenConfig(rule=MusicRule(threshold=ms.threshold, min_seconds=ms.min_seconds, contiguous=ms.contiguous),
                        classes=tuple(ms.classes or default_music_classes()), window_seconds=ms.window_seconds,
                        batch_size=ms.batch_size)


def load_panns_for(cfg: Config, uncalibrated: bool | None = None, checkpoint: str | None = None):
    from .analysis.panns import load_model
    ms = cfg.music_screen
    ckpt = checkpoint if checkpoint is not None else ms.checkpoint
    return load_model(cfg.path(ckpt) if ckpt else None,
                      uncalibrated=ms.uncalibrated if uncalibrated is None else uncalibrated, device=ms.device or None)


def stage_music_screen(cfg: Config, *, uncalibrated: bool | None = None, checkpoint: str | None = None
                       ) -> dict[str, Any]:
    """PANNs music screen over admitted Freesound audio (refuses random weights unless told)."""
    from .analysis.music_screen import run_music_screen
    lm = load_panns_for(cfg, uncalibrated, checkpoint)
    with Catalog(cfg.catalog_path) as cat:
        return run_music_screen(cat, lm, screen_config(cfg), audio_store=cfg.path(cfg.paths.audio_store),
                                config_hash=cfg.config_hash())


def detection_client(cfg: Config, url: str | None = None, key: str | None = None):
    import os

    from .review.detection_client import DetectionClient
    url = url or cfg.review.detection_url
    if not url:
        return None
    return DetectionClient(url, key or os.environ.get(cfg.review.detection_key_env, ""), timeout=cfg.review.timeout_s)


def stage_review(cfg: Config, *, detection_url: str | None = None, detection_key: str | None = None
                 ) -> dict[str, Any]:
    """Copyright review: content detection for flagged Freesound music, catalogue matching for FMA."""
    from .review.catalogue_match import load_catalogue
    from .review.stage import run_content_review, run_fma_review
    client = detection_client(cfg, detection_url, detection_key)
    try:
        with Catalog(cfg.catalog_path) as cat:
            out: dict[str, Any] = {}
            if cfg.review.copyright_catalogue:
                path = cfg.review.copyright_catalogue
                p = pathlib.Path(path)
                if not p.is_absolute():
                    p = cfg.path(path) if cfg.path(path).exists() else pathlib.Path(__file__).resolve().parents[1] / path
                out["catalogue_rows"] = load_catalogue(cat, p)
            out["freesound"] = run_content_review(cat, client, audio_store=cfg.path(cfg.paths.audio_store),
                                                  config_hash=cfg.config_hash(), wait_seconds=cfg.review.wait_seconds)
            out["fma"] = run_fma_review(cat, config_hash=cfg.config_hash(), title_min=cfg.review.title_min_score)
            return out
    finally:
        if client is not None:
            client.close()


def load_clap_for(cfg: Config, uncalibrated: bool | None = None):
    from .analysis.clap import load_clap
    dc = cfg.dedup
    return load_clap(cfg.path(dc.clap_checkpoint) if dc.clap_checkpoint else None, amodel=dc.clap_model,
                     uncalibrated=dc.uncalibrated if uncalibrated is None else uncalibrated, device=dc.device or None)


def stage_embed(cfg: Config, *, uncalibrated: bool | None = None) -> dict[str, Any]:
    from .dedup.stage import run_embed
    cm = load_clap_for(cfg, uncalibrated)
    with Catalog(cfg.catalog_path) as cat:
        return run_embed(cat, cm, embeddings_dir=cfg.path(cfg.dedup.embeddings_dir),
                         audio_store=cfg.path(cfg.paths.audio_store), batch_size=cfg.dedup.batch_size,
                         max_windows=cfg.dedup.max_windows, reuse_freesound_sim=cfg.dedup.reuse_freesound_sim,
                         config_hash=cfg.config_hash())


def _clap_signature(cfg: Config, uncalibrated: bool) -> tuple[str, str | None]:
    from .analysis.clap import clap_signature
    from .analysis.panns import sha256_file
    dc = cfg.dedup
    sha = sha256_file(cfg.path(dc.clap_checkpoint)) if dc.clap_checkpoint else None
    if sha is None and not uncalibrated:
        return "", None
    return clap_signature(dc.clap_model, sha), sha


def stage_dedup(cfg: Config, *, uncalibrated: bool | None = None) -> dict[str, Any]:
    """Exact copies always; near replicas from the stored embeddings of the configured model."""
    from .analysis.clap import MODEL_NAME
    from .dedup.stage import run_dedup
    unc = cfg.dedup.uncalibrated if uncalibrated is None else uncalibrated
    sig, sha = _clap_signature(cfg, unc)
    with Catalog(cfg.catalog_path) as cat:
        return run_dedup(cat, embeddings_dir=cfg.path(cfg.dedup.embeddings_dir), signature=sig or None,
                         threshold=cfg.dedup.threshold, config_hash=cfg.config_hash(),
                         model_name=f"{MODEL_NAME} {cfg.dedup.clap_model}", checkpoint_sha256=sha,
                         uncalibrated=sha is None)


def stage_memorization(cfg: Config, generated_dir: str, out_dir: str, *, top: int = 50, k: int = 3,
                       uncalibrated: bool | None = None) -> dict[str, Any]:
    import json as _json

    from .dedup.memorization import memorization_report
    from .dedup.stage import admitted
    from .dedup.store import load_embeddings
    from .fsutil import safe_join
    cm = load_clap_for(cfg, uncalibrated)
    train = load_embeddings(cfg.path(cfg.dedup.embeddings_dir), cm.signature)
    store = cfg.path(cfg.paths.audio_store)
    with Catalog(cfg.catalog_path) as cat:
        recs = {r["content_sha256"]: {
            "recording_id": r["recording_id"], "path": str(safe_join(store, r["audio_path"], what="audio_path")),
            "attribution": _json.loads(r["attribution"]) if r["attribution"] else {
                "title": r["title"] or "", "author": r["author"] or "", "license": r["license_canonical"],
                "source_url": r["page_url"] or ""}} for r in admitted(cat)}
    return memorization_report(generated_dir, cm, train, recs, out_dir, top=top, k=k, batch_size=cfg.dedup.batch_size)
