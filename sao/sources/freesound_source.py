"""Freesound as a pipeline source: the crawl (sao.sources.freesound_crawl) as its ingest stage and
the audio download (sao.sources.audio_download) as its post-gate stage, with the client they share.

* ``crawl_freesound`` (unbatched): one search per allowed license name, each page committed with its
  cursor as it goes (a killed crawl resumes where it stopped); ``--full`` lists everything,
  ``--reconcile`` then checks what the listing no longer holds (deleted: take-down; re-licensed:
  updated, and the gate decides).
* ``download`` (batched): HQ previews (or originals, with OAuth2) of the items the license gate
  admitted, into the content-addressed store; a batch touches no catalogue.

Both count against the day's request quota (sao.sources.freesound_quota says how the count is shared):
the crawl's budget is the catalogue's, written as it goes; an originals download plans at most what
the day still allows and gives each batch one request per item. When the quota stops either, the
stage's ``Stats.details["paused"]`` says until when; it is not an error, later stages run on what is
stored, and the next run continues. Previews come from the CDN and are not counted.
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
    from .freesound_oauth import provider_for as oauth_provider_for
    fs = cfg.freesound
    client = FreesoundClient(base_url or fs.base_url, token or config_mod.freesound_token(cfg),
                             oauth_token=oauth_provider_for(cfg, base_url or fs.base_url),
                             rate_limit_per_minute=fs.rate_limit_per_minute, timeout=fs.timeout_s,
                             retry=RetryPolicy(max_retries=fs.max_retries,
                                               base_delay=fs.retry_base_delay_s),
                             max_download_bytes=fs.max_download_mb * 1024 * 1024,
                             download_deadline_s=fs.download_deadline_s, requests_per_day=fs.requests_per_day)
    return wrap(client) if wrap else client


def attach_budget(client, cat, cfg: Config, *, clock=None) -> None:
    """Give ``client`` the catalogue's budget for its credential (written as each request goes), and
    seed its per-minute limiter with the last minute's requests (a run right after another waits)."""
    from .freesound_quota import load_budget, recent_ages
    clock = clock or time.time
    fs = cfg.freesound
    client.budget = load_budget(cat, client.credential_id, per_day=fs.requests_per_day,
                                per_minute=fs.rate_limit_per_minute, clock=clock)
    local = getattr(client.limiter, "local", client.limiter)     # the flows wrap it in a shared one
    local.seed(recent_ages(cat, client.credential_id, clock()))


def quota_figures(budget) -> dict[str, Any]:
    """Requests used and left today in ``budget``, and when the next may go, for a stage's details."""
    from .freesound_quota import utc
    why = budget.refusal()
    return {"used_today": budget.used_today(), "left_today": budget.remaining(), "requests_per_day": budget.per_day,
            "next_allowed": f"{utc(why.next_allowed):%Y-%m-%dT%H:%M:%S}Z" if why else None}


def remember_block(cat, client, cfg: Config) -> None:
    """A refusal by the server (not by the budget) is recorded, so no later run asks before it."""
    from .freesound_quota import save_block
    stop = client.quota_stop
    if stop is not None and stop.by_server and stop.scope in ("day", "hour"):
        save_block(cat, client.credential_id, stop.next_allowed, stop.scope,
                   per_day=cfg.freesound.requests_per_day, per_minute=cfg.freesound.rate_limit_per_minute)


def search_fields(cfg: Config) -> tuple[str, ...]:
    from .freesound import SEARCH_FIELDS
    return SEARCH_FIELDS + (("sim_laion_clap",) if cfg.freesound.request_sim_laion_clap else ())


def _client(ctx: StageContext):
    return make_client(ctx.cfg, base_url=ctx.options.base_url, token=ctx.secrets.get("freesound_token"),
                       wrap=ctx.wrap_client)


class CrawlFreesound(Stage):
    name = "crawl_freesound"
    reads = ("Freesound APIv2", "crawl_cursors", "crawl_passes", "api_requests")
    writes = ("recordings", "decisions:record", "crawl_cursors", "crawl_passes", "api_requests", "takedowns")

    def skip(self, ctx: StageContext) -> str | None:
        return None if ctx.cfg.freesound.enabled else "[freesound].enabled = false"

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        from .freesound_crawl import crawl_freesound
        from .freesound_reconcile import reconcile_freesound
        t0 = time.perf_counter()
        opts, fs = ctx.options, ctx.cfg.freesound
        client = _client(ctx)
        reconciled = None
        try:
            with ctx.catalog() as cat:
                attach_budget(client, cat, ctx.cfg)
                fields = search_fields(ctx.cfg)
                kind = "reconcile" if opts.reconcile else "full"
                st = crawl_freesound(cat, client, page_size=fs.page_size, full=opts.full or opts.reconcile,
                                     fields=fields, commit_every=fs.commit_every_pages, pass_kind=kind)
                if opts.reconcile and st.paused is None:
                    reconciled = reconcile_freesound(cat, client, pass_id=st.pass_id, fields=fields)
                # -- remix sources (sao.sources.freesound_remix): Freesound's own attribution text of an
                # admitted remix appends its sources'; same client, same request budget
                from .freesound_remix import update_remix_attributions
                remixes = update_remix_attributions(cat, client).as_details()
                remember_block(cat, client, ctx.cfg)
                quota = quota_figures(client.budget)
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
            for rid, why in list((reconciled.get("failed") or {}).items())[:FAILURES_SHOWN]:
                out.error(rid, f"reconcile lookup failed (checked again by the next pass): {why}")
        out.details["quota"] = quota
        if st.pass_id:
            out.details["pass"] = {"pass_id": st.pass_id, "kind": "reconcile" if opts.reconcile else "full",
                                   "listing_done": st.pass_done}
        stop = st.paused or (reconciled or {}).get("paused")
        if stop:
            # not an error: what was fetched is committed, and the next run of this kind continues
            out.details["paused"] = stop
        out.details["remix_sources"] = remixes        # remix sources (sao.sources.freesound_remix)
        return out


class Download(Stage):
    name = "download"
    reads = ("gate_admitted", "Freesound APIv2", "api_requests")
    writes = ("audio store", "recordings.content_sha256/audio_path", "api_requests")
    batched = True
    stores_batches = True     # each batch's files are recorded as it lands: a killed run keeps what it fetched
    timeout_s = 12 * 3600

    def skip(self, ctx: StageContext) -> str | None:
        if not ctx.cfg.freesound.enabled:
            return "[freesound].enabled = false"
        return None if ctx.cfg.freesound.download else "[freesound].download = false"

    def plan(self, ctx: StageContext) -> Plan:
        from .audio_download import pending_downloads
        from .freesound_quota import credential_id, read_budget
        fs = ctx.cfg.freesound
        quota: dict[str, Any] | None = None
        with ctx.catalog(read_only=True) as cat:
            items = pending_downloads(cat, FreesoundSource.name)
            limit = ctx.options.limit
            items = items[:limit] if limit is not None else items
            token = fs.download_originals and (ctx.secrets.get("freesound_token")
                                               or config_mod.freesound_token(ctx.cfg))
            if token:
                # originals are API requests: plan at most what the day still allows, one request each
                budget = read_budget(cat, credential_id(token), per_day=fs.requests_per_day)
                why = budget.refusal()
                quota = {"credential_id": credential_id(token), "left_today": budget.remaining(),
                         "next_allowed": quota_figures(budget)["next_allowed"], "why": why.why if why else None}
        deferred = 0
        if quota is not None and len(items) > quota["left_today"]:
            deferred = len(items) - quota["left_today"]
            items = items[:quota["left_today"]]
        meta: dict[str, Any] = {"originals": fs.download_originals}
        if quota is not None:            # previews are the CDN's: no quota, and the plan says nothing of one
            meta["quota"] = quota
        return Plan(items, meta, keep={"deferred": deferred})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> dict:
        from .audio_download import download_items
        from .freesound_quota import RequestBudget, known_block
        client = _client(ctx)
        quota = meta.get("quota")
        if quota is not None:
            # this batch's share: one request per item (the plan gave out no more than the day had left),
            # so batches running at once can never spend more than that together; a refusal an earlier
            # batch met in this process holds here too
            block = known_block(client.credential_id)
            client.budget = RequestBudget(ctx.cfg.freesound.requests_per_day, allowance=len(batch),
                                          blocked_until=block[0] if block else None)
            if block:
                client.budget.blocked_scope = block[1]
        try:
            done, st = download_items(client, batch, ctx.audio_store, originals=meta["originals"],
                                      show_progress=False)
            requests, retries = client.stats["requests"], client.stats["retries"]
        finally:
            client.close()
        stats = dataclasses.asdict(st)
        # items not asked for because the quota was spent are deferred to the next run, not failures
        refused = set(client.quota_refused)
        deferred = sorted(i["recording_id"] for i in batch if i["recording_id"] in stats["failures"]
                          and (i.get("audio_url") or "").split("?")[0] in refused)
        for rid in deferred:
            del stats["failures"][rid]
        stats["failed"] -= len(deferred)
        stop = client.quota_stop
        return {"done": done, "stats": stats, "requests": requests, "retries": retries, "deferred": deferred,
                "spent": client.budget.spent_seconds() if quota is not None else [],
                "quota_stop": None if stop is None else {"scope": stop.scope, "next_allowed": stop.next_allowed,
                                                         "by_server": stop.by_server, "why": str(stop)}}

    def store_batch(self, ctx: StageContext, plan: Plan, result: dict) -> None:
        from .audio_download import record_downloads
        from .freesound_quota import save_block
        fs, quota, stop = ctx.cfg.freesound, plan.meta.get("quota"), result.get("quota_stop")
        with ctx.catalog() as cat:
            with cat.transaction():          # the files and the requests they cost, together
                record_downloads(cat, result["done"])
                if quota is not None:
                    cat.record_api_requests(quota["credential_id"], result.get("spent") or [])
                    if stop and stop["by_server"] and stop["scope"] in ("day", "hour"):
                        save_block(cat, quota["credential_id"], stop["next_allowed"], stop["scope"],
                                   per_day=fs.requests_per_day, per_minute=fs.rate_limit_per_minute)

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
        stopped = sorted({r["stats"].get("stopped") for r in results if r["stats"].get("stopped")})
        if stopped:            # e.g. OAuth2 refused: the message names the fix (`sao auth freesound`)
            out.details["stopped"] = stopped
            out.error("originals download", stopped[0])
        deferred = plan.keep.get("deferred", 0) + sum(len(r.get("deferred") or ()) for r in results)
        if deferred or plan.meta.get("quota") and plan.meta["quota"]["why"]:
            from .freesound_quota import utc
            stops = [r["quota_stop"] for r in results if r.get("quota_stop") and r["quota_stop"]["scope"] != "allowance"]
            when = (f"{utc(max(s['next_allowed'] for s in stops)):%Y-%m-%dT%H:%M:%S}Z" if stops
                    else plan.meta["quota"]["next_allowed"])
            # not an error: the rest waits for the next run, when the day allows it
            out.details["deferred_by_quota"] = deferred
            out.details["paused"] = {"scope": stops[0]["scope"] if stops else "day", "next_allowed": when,
                                     "why": stops[0]["why"] if stops else (plan.meta["quota"]["why"] or
                                                                            "the day's requests are planned out")}
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
