"""Freesound as a pipeline source: the crawl (sao.sources.freesound_crawl) as its ingest stage and
the audio download (sao.sources.audio_download) as its post-gate stage, with the client they share.

* ``crawl_freesound`` (unbatched): one search per allowed license name, each page committed with its
  cursor as it goes (a killed crawl resumes where it stopped); ``--full`` lists everything,
  ``--reconcile`` then checks what the listing no longer holds (deleted: take-down; re-licensed:
  updated, and the gate decides).
* ``download`` (batched): HQ previews (or originals, with OAuth2) of the items the license gate
  admitted, into the content-addressed store; a batch touches no catalogue.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from .. import config as config_mod
from ..config import Config
from ..licensing.attribution import freesound_attribution_line
from ..pipeline.stage import Plan, Stage, StageContext, Stats
from .base import Source

FAILURES_SHOWN = 50          # failures kept in a download's details (the log has every one)


def make_client(cfg: Config, *, base_url: str | None = None, token: str | None = None, wrap=None):
    """A Freesound client for the config; ``wrap(client)`` may replace parts of it (the Prefect
    flows share its rate limit across workers that way)."""
    from .freesound import FreesoundClient, RetryPolicy
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
    from .freesound import SEARCH_FIELDS
    return SEARCH_FIELDS + (("sim_laion_clap",) if cfg.freesound.request_sim_laion_clap else ())


def _client(ctx: StageContext):
    return make_client(ctx.cfg, base_url=ctx.options.base_url, token=ctx.secrets.get("freesound_token"),
                       wrap=ctx.wrap_client)


class CrawlFreesound(Stage):
    name = "crawl_freesound"
    reads = ("Freesound APIv2", "crawl_cursors")
    writes = ("recordings", "decisions:record", "crawl_cursors", "takedowns")

    def skip(self, ctx: StageContext) -> str | None:
        return None if ctx.cfg.freesound.enabled else "[freesound].enabled = false"

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from .freesound_crawl import crawl_freesound, reconcile_freesound
        t0 = time.perf_counter()
        opts, fs = ctx.options, ctx.cfg.freesound
        client = _client(ctx)
        try:
            with ctx.catalog() as cat:
                fields = search_fields(ctx.cfg)
                st = crawl_freesound(cat, client, page_size=fs.page_size, full=opts.full or opts.reconcile,
                                     fields=fields, commit_every=fs.commit_every_pages)
                reconciled = reconcile_freesound(cat, client, st.seen_ids, fields=fields) if opts.reconcile else None
            requests, retries = client.stats["requests"], client.stats["retries"]
        finally:
            client.close()
        out = Stats(self.name, ingest=True, items_in=st.items + st.malformed, passed=st.items,
                    seconds=time.perf_counter() - t0)
        out.reject("unusable-item", st.malformed)               # not stored (no usable id, a NUL byte)
        out.reject("malformed-record", st.malformed_fields)     # stored, bad fields NULL, a record reject
        for reason in st.malformed_reasons[:FAILURES_SHOWN]:        # "<the item's id>: <why>"
            what, _, why = reason.partition(": ")
            out.error(f"item {what}", why)
        out.details = {"pages": st.pages, "items": st.items, "new": st.new, "updated": st.updated,
                       "malformed": st.malformed, "malformed_fields": st.malformed_fields,
                       "per_license": dict(st.per_license), "items_per_s": round(st.items_per_s, 1),
                       "requests": requests, "retries": retries}
        if reconciled is not None:
            out.details["reconcile"] = reconciled
        return out


class Download(Stage):
    name = "download"
    reads = ("gate_admitted", "Freesound APIv2")
    writes = ("audio store", "recordings.content_sha256/audio_path")
    batched = True
    stores_batches = True     # each batch's files are recorded as it lands: a killed run keeps what it fetched
    timeout_s = 12 * 3600

    def skip(self, ctx: StageContext) -> str | None:
        if not ctx.cfg.freesound.enabled:
            return "[freesound].enabled = false"
        return None if ctx.cfg.freesound.download else "[freesound].download = false"

    def plan(self, ctx: StageContext) -> Plan:
        from .audio_download import pending_downloads
        with ctx.catalog(read_only=True) as cat:
            items = pending_downloads(cat, FreesoundSource.name)
        limit = ctx.options.limit
        return Plan(items[:limit] if limit is not None else items,
                    {"originals": ctx.cfg.freesound.download_originals})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> dict:
        from .audio_download import download_items
        client = _client(ctx)
        try:
            done, st = download_items(client, batch, ctx.audio_store, originals=meta["originals"],
                                      show_progress=False)
            requests, retries = client.stats["requests"], client.stats["retries"]
        finally:
            client.close()
        return {"done": done, "stats": dataclasses.asdict(st), "requests": requests, "retries": retries}

    def store_batch(self, ctx: StageContext, plan: Plan, result: dict) -> None:
        from .audio_download import record_downloads
        with ctx.catalog() as cat:
            with cat.transaction():
                record_downloads(cat, result["done"])

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        done = [d for r in results for d in r["done"]]
        tot: dict[str, Any] = {k: sum(r["stats"][k] for r in results)
                               for k in ("candidates", "downloaded", "failed", "bytes", "audio_seconds")}
        failures = {rid: why for r in results for rid, why in r["stats"]["failures"].items()}
        out = Stats(self.name, items_in=len(plan.items), passed=len(done), audio_seconds=tot["audio_seconds"])
        out.reject("download-failed (retried next run)", tot["failed"])
        for rid, why in failures.items():
            out.error(rid, why)
        out.details = {"candidates": tot["candidates"], "downloaded": tot["downloaded"], "failed": tot["failed"],
                       "megabytes": round(tot["bytes"] / 1e6, 2),
                       "requests": sum(r["requests"] for r in results),
                       "retries": sum(r["retries"] for r in results),
                       "originals": plan.meta.get("originals", False),
                       "failures": dict(list(failures.items())[:FAILURES_SHOWN])}
        return out


class FreesoundSource(Source):
    name = "freesound"
    title = "Freesound"
    gate_reads = "license_raw"           # Freesound's license field, checked by exact name or deed URL
    music_screen = True
    copyright_review = "content"
    prompt_style = "freesound"
    autoencoder_chunks = True
    always_hifi = False
    own_attribution_file = "freesound-attribution.txt"

    def ingest_stage(self) -> Stage:
        return CrawlFreesound()

    def audio_stage(self) -> Stage:
        return Download()

    def attribution_line(self, rec: dict[str, Any]) -> str:
        """Freesound's own attribution text ("{name} by {username} -- https://freesound.org/s/{id}/ --
        License: {license}"), as the crawl recorded it, or made the same way."""
        line = ((rec.get("extra") or {}).get("attribution") or {}).get("freesound_line")
        if line:
            return line
        from urllib.parse import urlsplit
        parts = urlsplit(rec.get("page_url") or "")
        site = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "https://freesound.org"
        return freesound_attribution_line(name=rec.get("title") or "", username=rec.get("author") or "",
                                          sound_id=rec.get("source_id") or "",
                                          license_canonical=rec.get("license_canonical") or "unknown", site=site)
