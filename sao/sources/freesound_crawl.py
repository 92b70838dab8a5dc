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

Every item is checked field by field (sao.sources.record_checks): a bad field is stored NULL
with a ``record`` reject, an item whose id is unusable is counted and skipped, and the rest of
its page is committed. A known item whose re-fetched copy cannot be stored (in the crawl or in
reconcile) gets a ``record`` reject (``malformed-record: refetch: ...``) instead of keeping the
admission its old copy earned. ``updated`` counts only known items whose stored values changed (the
boundary item fetched again on every rerun is not an update).

Multi-day passes: a full listing (``--full``) and a reconcile (``--reconcile``: a full listing, then
a check of each known item it did not show) can need more requests than one day allows (the paper's
472,618 recordings at 150 per page: 3,151 searches; a standard key allows 2,000 a day). Each kind
keeps its own pass in the catalogue (``crawl_passes``): per search a cursor of its own
(``crawl_pass_cursors``, the same watermark rule) and the ids it has listed (``crawl_pass_seen``, which
the reconcile reads), so a run that meets the quota stops cleanly (what it fetched is committed, the
stats say ``paused`` and until when) and the next run of that kind continues the pass. A new
``--full`` while one runs continues it; ``sao catalog restart-pass full`` starts the next from zero.
The incremental cursor (``crawl_cursors``) only moves forward (``Catalog.advance_cursor``): a pass
never writes it while it lists, and when a search's listing is complete it moves it up to the
pass's watermark (never back), since everything before that has been listed.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from ..catalog import Catalog, CatalogError
from ..licensing import UNKNOWN, canonical_license, freesound_attribution_line, tasl
from ..log import progress
from . import record_checks as rc
from .freesound import ALLOWED_LICENSE_NAMES, SEARCH_FIELDS, FreesoundClient, QuotaExhausted

log = logging.getLogger(__name__)
SOURCE = "freesound"


@dataclasses.dataclass
class CrawlStats:
    pages: int = 0
    items: int = 0
    new: int = 0
    updated: int = 0          # known items whose stored values changed (an unchanged re-fetch is not counted)
    malformed: int = 0        # items that could not be stored (unusable id, NUL byte), once each per run
    malformed_fields: int = 0  # items stored with bad fields left NULL and a ``record`` reject
    malformed_reasons: list = dataclasses.field(default_factory=list)
    per_license: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    seen_ids: set = dataclasses.field(default_factory=set, repr=False)
    pass_id: str | None = None      # the multi-day pass this run continued (a full listing or a reconcile)
    pass_done: bool = False         # ... and whether its listing is now complete
    paused: dict | None = None      # the quota stopped the run: {"scope", "next_allowed" (UTC), "why"}

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


def parse_created(value: object) -> dt.datetime | None:
    """A Freesound ``created`` value as naive UTC, or None when it is not an ISO 8601 string."""
    t, _ = rc.timestamp(value) if value is not None else (None, None)
    return t


# Freesound's documented ``type`` values (APIv2 docs, Sound instance). What may become a stored
# file's extension is a narrower list (sao.fsutil.AUDIO_EXTENSIONS), checked at download time.
FREESOUND_TYPES = frozenset({"wav", "aif", "aiff", "ogg", "mp3", "m4a", "flac"})
_EXTRA_RULES: dict[str, rc.Rule] = {
    "type": rc.one_of(FREESOUND_TYPES), "filesize": rc.int_in(0, rc.MAX_BYTES), "bitdepth": rc.int_in(0, 64),
    "is_remix": rc.boolean, "gen_ai_preference": rc.text,
}


def _sim_vector(v: object) -> tuple[object, str | None]:
    if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) for x in v):
        return None, "expected a list of finite numbers"
    return v, None


def sound_to_record(s: object, *, crawl_time: dt.datetime, site: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Freesound sound JSON -> (catalogue recording, {field: why} for each field that failed its
    check; that field is None in the record). Raises ``UnusableItem`` when the item is not a JSON
    object or its id is unusable: then it cannot be stored at all."""
    if not isinstance(s, dict):
        raise rc.UnusableItem(f"expected a JSON object, got {type(s).__name__}")
    sid = rc.item_id(s.get("id"))
    f = rc.Fields(s)
    name, user = f.get("name", rc.text), f.get("username", rc.text)
    lic = f.get("license", rc.text)
    license_raw = lic
    if "license" in f.problems:
        # the raw value as JSON text: the gate sees an unrecognisable license, never a guessed one
        license_raw = rc.raw_text(s["license"])
    canonical = canonical_license(lic) if lic is not None else UNKNOWN
    # the API's own page URL when it gives one (freesound.org does), else one built on the site
    page_url = f.get("url", rc.http_url)
    if page_url:
        parts = urlsplit(page_url)
        site = f"{parts.scheme}://{parts.netloc}"
    else:
        page_url = f"{site.rstrip('/')}/people/{user or ''}/sounds/{sid}/"
    previews, preview = s.get("previews"), None
    if isinstance(previews, dict):
        preview = f.check("previews.preview-hq-mp3", previews.get("preview-hq-mp3"), rc.http_url)
    elif previews is not None:
        f.add("previews", f"expected an object, got {type(previews).__name__}")
    extra = {k: f.get(k, rule) for k, rule in _EXTRA_RULES.items() if k in s}
    if "gen_ai_preference" in f.problems:
        # kept as text that is no known value, so the gate refuses it (None would read as consent)
        extra["gen_ai_preference"] = rc.raw_text(s["gen_ai_preference"])
    extra["attribution"] = tasl(title=name or "", author=user or "", source_url=page_url,
                                license_canonical=canonical, license_url=lic or "")
    extra["attribution"]["freesound_line"] = freesound_attribution_line(
        name=name or "", username=user or "", sound_id=sid, license_canonical=canonical, site=site)
    if "sim_laion_clap" in s:
        extra["sim_laion_clap"] = f.get("sim_laion_clap", _sim_vector)
    rec = {
        "source": SOURCE, "source_id": str(sid), "title": name, "author": user,
        "description": f.get("description", rc.text), "tags": f.get("tags", rc.text_list),
        "duration": f.get("duration", rc.number_in(0.0, rc.MAX_DURATION_S)),
        "sample_rate": f.get("samplerate", rc.int_in(1, rc.MAX_SAMPLE_RATE, integral_float=True)),
        "channels": f.get("channels", rc.int_in(1, rc.MAX_CHANNELS)),
        "license_raw": license_raw, "license_canonical": canonical, "license_url": lic,
        "page_url": page_url, "audio_url": f.get("download", rc.http_url), "preview_url": preview,
        "md5": f.get("md5", rc.md5_hex), "created_at": f.get("created", rc.timestamp), "crawl_time": crawl_time,
        "extra": extra,
    }
    return rec, f.problems


# the columns an upsert would change; crawl_time and first_seen say when, not what
_COMPARED = ("title", "author", "description", "tags", "duration", "sample_rate", "channels", "license_raw",
             "license_canonical", "license_url", "page_url", "audio_url", "preview_url", "md5", "created_at", "extra")


def _as_stored(rec: dict[str, Any]) -> tuple:
    extra = rec.get("extra")
    return tuple(json.loads(json.dumps(extra, sort_keys=True)) if c == "extra" and extra is not None
                 else rec.get(c) for c in _COMPARED)


def changed_ids(cat: Catalog, records: list[dict[str, Any]]) -> set[str]:
    """source_ids of ``records`` whose stored values differ from the record (new ones included)."""
    ids = [r["source_id"] for r in records]
    cols = ", ".join(_COMPARED)
    stored = {}
    for row in cat.query(f"SELECT source_id, {cols} FROM recordings WHERE source = ? "  # noqa: S608 (fixed names)
                         "AND source_id IN (SELECT unnest(?::VARCHAR[]))", [SOURCE, ids]):
        row["extra"] = json.loads(row["extra"]) if row["extra"] is not None else None
        stored[row["source_id"]] = tuple(row[c] for c in _COMPARED)
    return {r["source_id"] for r in records if r["source_id"] not in stored or stored[r["source_id"]] != _as_stored(r)}


def refetch_problem(why: str) -> dict[str, str]:
    """The ``record`` problem of a known item whose re-fetched copy could not be stored: its
    reason reads ``malformed-record: refetch: <why>``."""
    return {"refetch": why}


def _digest(item: object) -> str:
    """A key for an item that has no usable id (to count it once per run)."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=repr).encode()).hexdigest()


def _filter(name: str, since: dt.datetime | None) -> str:
    f = f'license:"{name}"'
    if since is not None:
        f += f" created:[{since.strftime('%Y-%m-%dT%H:%M:%S')}Z TO *]"
    return f


def paused(exc: QuotaExhausted) -> dict[str, Any]:
    """What a stage's stats say when the quota stopped it (JSON-like)."""
    return {"scope": exc.scope, "next_allowed": f"{exc.next_allowed_utc:%Y-%m-%dT%H:%M:%S}Z", "why": str(exc),
            "by_server": exc.by_server}


def _count(data: dict[str, Any]) -> int | None:
    """The search page's ``count`` when it is a sane integer (it only feeds progress reports)."""
    n = data.get("count")
    return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**9 else None


def crawl_freesound(cat: Catalog, client: FreesoundClient, *, license_names: Iterable[str] = ALLOWED_LICENSE_NAMES,
                    page_size: int = 150, full: bool = False, fields: tuple[str, ...] = SEARCH_FIELDS,
                    commit_every: int = 20,
                    clock: Callable[[], dt.datetime] | None = None,
                    on_page: Callable[[str, int], None] | None = None,
                    config_hash: str = rc.RULES_VERSION, pass_kind: str = "full") -> CrawlStats:
    """Crawl every allowed license search into the catalogue. ``full`` lists everything, as the
    running pass of ``pass_kind`` ("full" or "reconcile"), continued from its own cursors.
    A spent quota (``QuotaExhausted``) ends the run cleanly: ``stats.paused`` says until when.

    Every item is checked field by field (``sound_to_record``): one bad item never sinks its
    page; a bad field is stored NULL with a ``record`` reject; an item that cannot be stored
    at all is counted in ``malformed`` with its reason and logged once per run."""
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    stats = CrawlStats()
    t0 = time.perf_counter()
    known = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE])}
    record_prev = cat.latest_decision_map(rc.STAGE)
    problems_of: dict[str, dict[str, str]] = {}
    # known items whose re-fetched copy the catalogue refuses: the stored copy is stale (it may say
    # an old license), so a record reject keeps the item out until a clean copy arrives
    stale: dict[str, str] = {}
    refused: set[str] = set()

    def refuse(key: str, where: str, what: object, why: str) -> None:
        if key in refused:           # a page asked again shows it again: count and log it once
            return
        refused.add(key)
        stats.malformed += 1
        stats.malformed_reasons.append(f"{rc.short(what)}: {why}")
        log.error("freesound %s: skipping malformed item %s: %s", where, rc.short(what), why)

    row_of: dict[str, tuple] = {}            # source_id -> the checked row of a pending record
    run_pass = cat.open_crawl_pass(SOURCE, pass_kind) if full else None
    stats.pass_id = run_pass["pass_id"] if run_pass else None
    for name in license_names:
        key = f'license:"{name}"'
        if run_pass is not None:
            cursor = cat.get_pass_cursor(run_pass["pass_id"], key)
            if cursor is not None and cursor["done"]:
                continue                     # this search's listing is complete in this pass
        else:
            cursor = cat.get_cursor(SOURCE, key)
        watermark = None if cursor is None else cursor["last_created"]
        total = None
        n_license = 0
        bar = progress(desc=f"freesound {name}", unit="item")
        pending: list[dict[str, Any]] = []
        pending_pages = 0

        def flush(next_page: int) -> None:      # called only inside this license's loop pass
            nonlocal pending, pending_pages, watermark
            newest = max((r["created_at"] for r in pending if r["created_at"]), default=None)
            if newest is not None and (watermark is None or newest > watermark):
                watermark = newest
            # a re-fetched remix whose own line is unchanged keeps the sources fetched for it, in every kind of
            # pass: APIv2 cannot list them, so dropping them would leave its sources uncredited until they are
            # fetched again (days, in a quota-bound full pass) and count it as updated. Its sources are fetched
            # again when its own line changes.
            from .freesound_remix import carry_remix_sources
            carried = carry_remix_sources(cat, pending)
            # a carried record changed after its check: checked again; the others were checked on arrival
            rows = [Catalog.validate_recording(r) if r["source_id"] in carried else row_of.pop(r["source_id"])
                    for r in pending]
            row_of.clear()
            # only items stored before can have changed: a fresh crawl looks nothing up
            changed = changed_ids(cat, [r for r in pending if r["source_id"] in known])
            batch = {f"{SOURCE}:{sid}": refetch_problem(why) for sid, why in stale.items()}
            # a clean copy of the same item later in this pass is the newer word: it goes last
            batch.update({f"{SOURCE}:{r['source_id']}": problems_of.pop(r["source_id"], {}) for r in pending})
            decisions = rc.record_decisions(batch, record_prev, config_hash=config_hash)
            stale_ids = list(stale)          # listed under an allowed name: neither deleted nor re-licensed
            stats.seen_ids.update(stale_ids)
            stale.clear()
            with cat.transaction():          # these pages, their record decisions and the cursor commit together
                cat.upsert_rows(rows)
                cat.add_decisions(decisions)
                if run_pass is None:
                    cat.advance_cursor(SOURCE, key, watermark, next_page)  # noqa: B023 - flush runs in this pass
                else:
                    cat.set_pass_cursor(run_pass["pass_id"], key, watermark, next_page, total=total)  # noqa: B023
                    cat.add_pass_seen(run_pass["pass_id"], key,  # noqa: B023
                                      [r["source_id"] for r in pending] + stale_ids)
            for r in pending:
                stats.seen_ids.add(r["source_id"])
                if r["source_id"] in known:
                    stats.updated += r["source_id"] in changed
                else:
                    stats.new += 1
                    known.add(r["source_id"])
            pending, pending_pages = [], 0

        # Keyset pagination: every request asks for created >= the newest upload time seen so far,
        # so a sound deleted (or added) between two requests cannot shift later sounds past a page
        # boundary. Sounds seen twice (the inclusive boundary, a repeated or stale page) are kept once.
        since, page, asked = watermark, 1, 0
        seen_pass: set[str] = set()
        stop: QuotaExhausted | None = None
        while True:
            try:
                data = client.search_page(_filter(name, since), page, page_size=page_size, fields=fields)
            except QuotaExhausted as exc:
                stop = exc
                break
            if total is None and since is None and page == 1:
                total = _count(data)            # the whole search's size: what the pass's progress is out of
            crawl_time = clock()
            fresh = []
            where = f"search {key} page {page}"
            for s in data["results"]:
                try:
                    rec, problems = sound_to_record(s, crawl_time=crawl_time, site=client.site)
                except rc.UnusableItem as exc:
                    refuse(_digest(s), where, s.get("id") if isinstance(s, dict) else s, str(exc))
                    continue
                sid = rec["source_id"]
                if sid in seen_pass:
                    continue
                try:
                    row_of[sid] = Catalog.validate_recording(rec)  # what the catalogue refuses (a NUL byte...) per item
                except CatalogError as exc:
                    refuse(f"id:{sid}", where, int(sid), str(exc))
                    if sid in known:
                        stale[sid] = str(exc)
                    continue
                seen_pass.add(sid)
                problems_of[sid] = problems
                stats.malformed_fields += bool(problems)
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
        if pending or pending_pages or stale or (stop is not None and run_pass is not None):
            flush(page)
        bar.close()
        stats.per_license[name] = n_license
        if stop is not None:
            stats.paused = paused(stop)
            log.warning("freesound %s: paused after %d items: %s", name, n_license, stop)
            break
        with cat.transaction():                  # this search's listing is complete
            if run_pass is not None:
                cat.set_pass_cursor(run_pass["pass_id"], key, watermark, 1, total=total, done=True)
            # forward only: what the pass listed is everything up to its watermark
            cat.advance_cursor(SOURCE, key, watermark, 1)
        log.info("freesound %s: %d items", name, n_license)
    if run_pass is not None and stats.paused is None:
        stats.pass_done = True
        cat.update_crawl_pass(run_pass["pass_id"], listing_done=True,
                              status="done" if pass_kind == "full" else None)
    stats.seconds = time.perf_counter() - t0
    return stats
