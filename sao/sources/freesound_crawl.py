"""The Freesound crawl stage: one search per allowed license name, page by page, each page
and its cursor committed together, so a crash resumes where it stopped and a rerun only
fetches what is new.

Pages are committed in groups of ``commit_every`` (default 20 pages = 3,000 items: one
DuckDB commit per 150-row page costs ~6x more); a crash loses at most that group.

Cursor rule: for each license search the catalogue keeps ``last_created``, the newest
``created`` among committed items. A run asks for ``created:[last_created TO *]`` sorted by
``created_asc``; the boundary item is fetched again and upserted in place. Resuming from the
watermark (not from a page number) cannot skip items when the server's pages shift between
the crash and the rerun; ``next_page`` records where the interrupted pass was, for reports.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from typing import Any, Callable, Iterable

from ..catalog import Catalog
from ..licensing import canonical_license, freesound_attribution_line, tasl
from ..log import progress
from .freesound import ALLOWED_LICENSE_NAMES, SEARCH_FIELDS, FreesoundClient

log = logging.getLogger(__name__)
SOURCE = "freesound"


@dataclasses.dataclass
class CrawlStats:
    pages: int = 0
    items: int = 0
    new: int = 0
    updated: int = 0
    malformed: int = 0
    per_license: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    seen_ids: set = dataclasses.field(default_factory=set, repr=False)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def parse_created(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=None)
    except ValueError:
        return None


def sound_to_record(s: dict[str, Any], *, crawl_time: dt.datetime, site: str) -> dict[str, Any]:
    """Freesound sound JSON -> catalogue recording (raises KeyError/ValueError on malformed input)."""
    sid = int(s["id"])
    name, user = str(s.get("name") or ""), str(s.get("username") or "")
    lic = s.get("license")
    canonical = canonical_license(lic)
    # the API's own page URL when it gives one (freesound.org does), else one built on the site
    page_url = str(s.get("url") or f"{site.rstrip('/')}/people/{user}/sounds/{sid}/")
    if s.get("url"):
        from urllib.parse import urlsplit
        parts = urlsplit(page_url)
        site = f"{parts.scheme}://{parts.netloc}"
    previews = s.get("previews") or {}
    extra = {k: s.get(k) for k in ("type", "filesize", "bitdepth", "is_remix", "gen_ai_preference") if k in s}
    extra["attribution"] = tasl(title=name, author=user, source_url=page_url, license_canonical=canonical,
                                license_url=lic or "")
    extra["attribution"]["freesound_line"] = freesound_attribution_line(
        name=name, username=user, sound_id=sid, license_canonical=canonical, site=site)
    if "sim_laion_clap" in s:
        extra["sim_laion_clap"] = s["sim_laion_clap"]
    tags = s.get("tags") or []
    return {
        "source": SOURCE, "source_id": str(sid), "title": name, "author": user,
        "description": s.get("description"), "tags": [str(t) for t in tags],
        "duration": float(s["duration"]) if s.get("duration") is not None else None,
        "sample_rate": int(s["samplerate"]) if s.get("samplerate") else None,
        "channels": int(s["channels"]) if s.get("channels") else None,
        "license_raw": lic, "license_canonical": canonical, "license_url": lic,
        "page_url": page_url, "audio_url": s.get("download"), "preview_url": previews.get("preview-hq-mp3"),
        "md5": s.get("md5"), "created_at": parse_created(s.get("created")), "crawl_time": crawl_time,
        "extra": extra,
    }


def _filter(name: str, since: dt.datetime | None) -> str:
    f = f'license:"{name}"'
    if since is not None:
        f += f" created:[{since.strftime('%Y-%m-%dT%H:%M:%S')}Z TO *]"
    return f


def crawl_freesound(cat: Catalog, client: FreesoundClient, *, license_names: Iterable[str] = ALLOWED_LICENSE_NAMES,
                    page_size: int = 150, full: bool = False, fields: tuple[str, ...] = SEARCH_FIELDS,
                    commit_every: int = 20,
                    clock: Callable[[], dt.datetime] | None = None,
                    on_page: Callable[[str, int], None] | None = None) -> CrawlStats:
    """Crawl every allowed license search into the catalogue. ``full`` ignores the cursors
    (a full listing, used to reconcile deletions and re-licensing)."""
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    stats = CrawlStats()
    t0 = time.perf_counter()
    known = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE])}
    for name in license_names:
        key = f'license:"{name}"'
        cursor = cat.get_cursor(SOURCE, key)
        watermark = None if (full or cursor is None) else cursor["last_created"]
        n_license = 0
        bar = progress(desc=f"freesound {name}", unit="item")
        pending: list[dict[str, Any]] = []
        pending_pages = 0

        def flush(next_page: int) -> None:
            nonlocal pending, pending_pages, watermark
            newest = max((r["created_at"] for r in pending if r["created_at"]), default=None)
            if newest is not None and (watermark is None or newest > watermark):
                watermark = newest
            with cat.transaction():          # these pages and the cursor commit together
                cat.upsert_recordings(pending)
                cat.set_cursor(SOURCE, key, watermark, next_page)
            for r in pending:
                stats.seen_ids.add(r["source_id"])
                if r["source_id"] in known:
                    stats.updated += 1
                else:
                    stats.new += 1
                    known.add(r["source_id"])
            pending, pending_pages = [], 0

        # Keyset pagination: every request asks for created >= the newest upload time seen so far,
        # so a sound deleted (or added) between two requests cannot shift later sounds past a page
        # boundary. Sounds seen twice (the inclusive boundary, a repeated or stale page) are kept once.
        since, page, asked = watermark, 1, 0
        seen_pass: set[str] = set()
        while True:
            data = client.search_page(_filter(name, since), page, page_size=page_size, fields=fields)
            crawl_time = clock()
            fresh = []
            for s in data["results"]:
                sid = str(s.get("id")) if isinstance(s, dict) else None
                if sid in seen_pass:
                    continue
                try:
                    rec = sound_to_record(s, crawl_time=crawl_time, site=client.site)
                    Catalog.validate_recording(rec)      # one bad item (a NUL byte...) never sinks its page
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    stats.malformed += 1
                    log.error("freesound search %s page %d: skipping malformed item %r: %s", key, page,
                              s.get("id") if isinstance(s, dict) else s, exc)
                    continue
                seen_pass.add(rec["source_id"])
                fresh.append(rec)
            pending.extend(fresh)
            pending_pages += 1
            stats.pages += 1
            stats.items += len(fresh)
            n_license += len(fresh)
            bar.update(len(fresh))
            # one transaction per few pages: DuckDB's per-commit cost dominates at 150 rows
            if pending_pages >= commit_every:
                flush(page)
            if on_page:
                on_page(name, stats.pages)
            if data["results"] and not fresh:
                # nothing new on a full page: a stale or repeated page (ask again), or more sounds
                # share one upload time than a page holds (then step to the next page)
                asked += 1
                if asked <= 2:
                    continue
                if not data.get("next"):
                    break
                page, asked = page + 1, 0
                continue
            asked = 0
            if not data.get("next"):
                break
            newest = max((r["created_at"] for r in fresh if r["created_at"]), default=None)
            if newest is not None and (since is None or newest > since):
                since, page = newest, 1
            else:
                page += 1
        if pending or pending_pages:
            flush(page)
        bar.close()
        cat.set_cursor(SOURCE, key, watermark, 1)    # pass complete
        stats.per_license[name] = n_license
        log.info("freesound %s: %d items", name, n_license)
    stats.seconds = time.perf_counter() - t0
    return stats


def reconcile_freesound(cat: Catalog, client: FreesoundClient, seen_ids: set[str], *,
                        fields: tuple[str, ...] = SEARCH_FIELDS) -> dict[str, int]:
    """After a full crawl: an item in the catalogue that no allowed-license search returned was
    deleted at the source (take-down) or re-licensed (updated; the gate then rejects it and
    writes the take-down)."""
    out = {"deleted": 0, "relicensed": 0}
    missing = [r["source_id"] for r in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE])
               if r["source_id"] not in seen_ids]
    taken = cat.active_takedowns()
    for sid in missing:
        rid = f"{SOURCE}:{sid}"
        if rid in taken:
            continue
        s = client.sound(int(sid), fields)
        if s is None:
            cat.add_takedown(rid, "deleted-at-source: the sound no longer exists on Freesound", "crawl")
            out["deleted"] += 1
            log.warning("%s: deleted at the source; take-down recorded", rid)
        else:
            cat.upsert_recordings([sound_to_record(s, crawl_time=dt.datetime.utcnow(), site=client.site)])
            out["relicensed"] += 1
            log.warning("%s: no longer under an allowed license name (now %s)", rid, s.get("license"))
    return out
