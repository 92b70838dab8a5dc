"""The sources of Freesound remixes, for Freesound's own attribution text.

Freesound's attribution text of a remix (``Sound.attribution_texts`` in MTG/freesound
``sounds/models.py``) is the sound's own line followed by the attribution text of each of its
sources (so sources of sources too), joined by a blank line. APIv2 cannot tell a client which
sounds those are: the Sound serializer has ``is_remix`` and ``was_remixed`` but no sources, and
``apiv2/urls.py`` has no sources or remix endpoint (nor do the API docs). The one place the server
gives them out is the web site's attribution modal, ``/people/<username>/sounds/<id>/attribution/?ajax=1``
(``sounds.views.attribution_modal``, template ``sounds/modal_attribution.html``): a ``<select>`` whose
"JSON" option holds, HTML-escaped, ``json.dumps`` of the sound's attribution entries, a list (self
first, then each source's entry or, for a source that is itself a remix, its nested list) when the
sound has sources. (The remix-group modal, ``.../remixes/?ajax=1``, draws the whole group, ancestors
and descendants, and is not what the attribution text uses.)

So for each ``is_remix`` sound that passed the license gate: fetch that page (bounded size, exact
patterns, every id checked, only the API's own host), take the source ids in the page's order,
look each one up through the API (``client.sound``: name, username, license, checked like a
crawled item), and store the remix's line with its sources appended in
``extra.attribution.freesound_line`` (the attribution files, the release CSV and the report read
it), with ``extra.attribution.sources`` (the ids) marking it done. A fetch that fails for one sound
is logged and retried next run; the daily quota (``QuotaExhausted``) stops the rest, which the next
run continues. A re-crawl of a remix stores its line without sources again (and no marker), and
the next pass fetches them again (a source added or removed on Freesound is picked up then), unless
the crawl hands its re-fetched items to ``carry_remix_sources`` first, which keeps the stored
sources of a remix whose own line is unchanged.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
import re
import time
from typing import Any, Iterator
from urllib.parse import quote

import requests
import urllib3

from ..catalog import Catalog
from ..licensing.attribution import freesound_remix_attribution, license_name_with_version
from . import record_checks as rc
from .freesound import FreesoundClient, FreesoundError, QuotaExhausted, origin

log = logging.getLogger(__name__)
SOURCE = "freesound"

MAX_PAGE_BYTES = 2 * 1024 * 1024      # the modal of a sound with hundreds of sources is ~1 KiB per source
MAX_SOURCES = 500                     # attribution entries a page may list, nested sources included
MAX_DEPTH = 32                        # nesting of sources of sources
FAILURES_SHOWN = 50
SOURCE_FIELDS = ("id", "url", "name", "username", "license")

# the template's option, exactly: <option value="{{ sound.attribution_texts.json|safe|force_escape }}">JSON</option>
_JSON_OPTION = re.compile(r'<option value="([^"<>]*)">JSON</option>')
# Sound.get_absolute_url through url2absurl: https://<site>/people/<username>/sounds/<id>/
_SOUND_URL = re.compile(r"(https?://[^/?#\s]+)/people/[^/?#\s]+/sounds/([1-9][0-9]{0,18})/")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RemixPageError(ValueError):
    """An attribution page that is not what Freesound's template renders (for one sound)."""


@dataclasses.dataclass
class RemixStats:
    candidates: int = 0       # admitted remixes whose sources were not yet stored
    updated: int = 0          # lines stored with their sources
    failed: int = 0           # retried next run
    deferred: int = 0         # left for the next run: the request budget ran out
    requests: int = 0
    next_request_at: str | None = None
    failures: dict = dataclasses.field(default_factory=dict)

    def as_details(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["failures"] = dict(list(self.failures.items())[:FAILURES_SHOWN])
        return out


def attribution_page_url(site: str, username: str, sound_id: int) -> str:
    """The attribution modal of one sound, on the API's own site (never a URL a record names).
    The view reads only the id; the username is there because the route has it."""
    return f"{site.rstrip('/')}/people/{quote(username or '_', safe='')}/sounds/{int(sound_id)}/attribution/?ajax=1"


def fetch_attribution_page(client: FreesoundClient, url: str) -> str:
    """The page's text: an HTML 200 of at most ``MAX_PAGE_BYTES``, UTF-8; a FreesoundError otherwise."""
    where = url.split("?")[0]
    # a web page, not an API call: the API's daily budget is not spent on it (the server counts
    # only APIv2 requests), but the per-minute limiter still paces it
    client.limiter.acquire()
    resp = client._request(url, stream=True, limited=False, anonymous=True)   # the API key is for the API only
    try:
        if origin(resp.url) != client.api_origin:      # redirected off the site: not Freesound's page
            raise FreesoundError(f"GET {where}: answered from {rc.short(resp.url)}, not the API's site",
                                 transient=False)
        kind = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if resp.status_code != 200 or kind != "text/html":
            raise FreesoundError(f"GET {where}: expected an HTML 200, got HTTP {resp.status_code} {kind or '?'}",
                                 resp.status_code, transient=False)
        # read as bytes arrive, with one deadline for the whole page: a server that trickles bytes
        # (each within the socket timeout) cannot hold the pass
        deadline = time.monotonic() + client.timeout
        read = resp.raw.read1 if hasattr(resp.raw, "read1") else resp.raw.read
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise FreesoundError(f"GET {where}: page not read within {client.timeout:g} s")
            try:
                chunk = read(1 << 16, decode_content=True)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                raise FreesoundError(f"GET {where}: page cut short after {size} bytes ({type(exc).__name__})") from None
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_PAGE_BYTES:
                raise FreesoundError(f"GET {where}: page larger than {MAX_PAGE_BYTES} bytes; not read",
                                     transient=False)
            chunks.append(chunk)
    finally:
        resp.close()
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FreesoundError(f"GET {where}: page is not UTF-8 ({exc.reason})", transient=False) from None


def _entries(node: Any, depth: int) -> Iterator[dict[str, Any]]:
    """The attribution entries in Freesound's order: a list is [a sound, then each source's
    entry or nested list]; anything else is refused."""
    if depth > MAX_DEPTH:
        raise RemixPageError(f"sources nested deeper than {MAX_DEPTH}")
    if not isinstance(node, list) or not node or not isinstance(node[0], dict):
        raise RemixPageError("expected a list that starts with an attribution object")
    yield node[0]
    for child in node[1:]:
        if isinstance(child, dict):
            yield child
        else:
            yield from _entries(child, depth + 1)


def _entry_id(entry: dict[str, Any], origin: tuple[str, str, int], n: int) -> int:
    url = entry.get("sound_url")
    m = _SOUND_URL.fullmatch(url) if isinstance(url, str) else None
    if m is None:
        raise RemixPageError(f"entry {n}: sound_url {rc.short(url)} is not a Freesound sound page URL")
    try:
        same_site = rc.request_origin(m.group(1) + "/") == origin
    except ValueError:
        same_site = False
    if not same_site:
        raise RemixPageError(f"entry {n}: sound_url {rc.short(url)} is not on this Freesound site")
    sid = int(m.group(2))
    if sid > rc.MAX_ID:
        raise RemixPageError(f"entry {n}: sound id {sid} is out of range")
    return sid


def parse_attribution_page(page: str, sound_id: int, site: str) -> list[int]:
    """The ids of ``sound_id``'s sources, in Freesound's attribution order (sources of sources
    after their remix; a source reached twice is listed twice, as Freesound does). The page must
    hold exactly one JSON option whose first entry is this sound; every entry names a sound on
    ``site``; the sound itself is never its own source."""
    found = _JSON_OPTION.findall(page)
    if len(found) != 1:
        raise RemixPageError(f"expected exactly one JSON attribution option, found {len(found)}")
    try:
        data = json.loads(html.unescape(found[0]))
    except (ValueError, RecursionError) as exc:      # a page of "[[[[..." exhausts the decoder's stack
        raise RemixPageError(f"the JSON attribution option is not JSON: {type(exc).__name__}: {str(exc)[:80]}") from None
    origin = rc.request_origin(site.rstrip("/") + "/")
    entries = [data] if isinstance(data, dict) else []
    if not entries:
        for i, e in enumerate(_entries(data, 0)):
            if i > MAX_SOURCES:
                raise RemixPageError(f"more than {MAX_SOURCES} sources")
            entries.append(e)
    ids = [_entry_id(e, origin, n) for n, e in enumerate(entries)]
    if ids[0] != sound_id:
        raise RemixPageError(f"the page is the attribution of sound {ids[0]}, not of {sound_id}")
    if sound_id in ids[1:]:
        raise RemixPageError(f"sound {sound_id} is listed among its own sources")
    return ids[1:]


def _line_text(v: Any) -> tuple[Any, str | None]:
    """A name or username that goes into an attribution line: a string with no control character
    (a newline would forge a line of its own)."""
    if not isinstance(v, str) or not v:
        return None, f"expected a non-empty string, got {rc.short(v)}"
    if _CONTROL.search(v):
        return None, f"{rc.short(v)} contains a control character"
    return v, None


def source_line(client: FreesoundClient, sound_id: int, *, crawl_time: dt.datetime) -> str:
    """A source's own attribution line, from the API, checked like a crawled item."""
    from .freesound_crawl import sound_to_record
    s = client.sound(sound_id, SOURCE_FIELDS)
    if s is None:
        raise FreesoundError(f"source sound {sound_id} no longer exists", 404, transient=True)
    try:
        rec, problems = sound_to_record(s, crawl_time=crawl_time, site=client.site)
    except rc.UnusableItem as exc:
        raise RemixPageError(f"source sound {sound_id}: {exc}") from None
    if rec["source_id"] != str(sound_id):
        raise RemixPageError(f"source sound {sound_id}: the API answered sound {rec['source_id']}")
    bad = {k: v for k, v in problems.items() if k in ("name", "username", "license")}
    for key in ("name", "username"):
        _, why = _line_text(s.get(key))
        if why and key not in bad:
            bad[key] = why
    if "license" not in bad and rec["license_canonical"] == license_name_with_version(rec["license_canonical"]):
        # no "name with version" for it: the line would say "License: unknown"
        bad["license"] = f"{rc.short(s.get('license'))} is not a license Freesound names"
    if bad:
        raise RemixPageError(f"source sound {sound_id}: " + "; ".join(f"{k}: {v}" for k, v in sorted(bad.items())))
    return rec["extra"]["attribution"]["freesound_line"]


def pending_remixes(cat: Catalog) -> list[dict[str, Any]]:
    """Admitted Freesound remixes whose sources are not stored (never fetched, or re-crawled since)."""
    return cat.query(
        "SELECT r.recording_id, r.source_id, r.author, r.page_url, "
        "json_extract_string(r.extra, '$.attribution.freesound_line') AS own_line "
        "FROM gate_admitted g JOIN recordings r USING (recording_id) "
        "WHERE r.source = ? AND json_extract_string(r.extra, '$.is_remix') = 'true' "
        "AND json_extract(r.extra, '$.attribution.sources') IS NULL "
        "AND json_extract_string(r.extra, '$.attribution.freesound_line') IS NOT NULL "
        "ORDER BY r.recording_id", [SOURCE])


def _page_site(page_url: str | None) -> str | None:
    """The site of the sound's page URL (the API's own ``url``): where the attribution page says
    its sounds are (both are ``url2absurl`` on the server)."""
    try:
        scheme, host, port = rc.request_origin(page_url)
    except ValueError:
        return None
    return f"{scheme}://{host}:{port}"


def _store(cat: Catalog, rid: str, own_line: str, sources: list[int], line: str) -> bool:
    """Store the line and the source ids, unless the record changed since it was read (a crawl
    in between): compare-and-set on the line it was built from."""
    with cat.transaction():
        row = cat.query("SELECT extra FROM recordings WHERE recording_id = ?", [rid])
        if not row or row[0]["extra"] is None:
            return False
        extra = json.loads(row[0]["extra"])
        attribution = extra.get("attribution")
        if not isinstance(attribution, dict) or attribution.get("freesound_line") != own_line:
            return False
        attribution["freesound_line"] = line
        attribution["sources"] = [str(s) for s in sources]
        attribution["own_line"] = own_line        # what carry_remix_sources compares a re-fetch with
        cat.con.execute("UPDATE recordings SET extra = CAST(? AS JSON) WHERE recording_id = ? "
                        "AND json_extract_string(extra, '$.attribution.freesound_line') = ?",
                        [json.dumps(extra, sort_keys=True), rid, own_line])
    return True


def carry_remix_sources(cat: Catalog, records: list[dict[str, Any]]) -> set[str]:
    """For the crawl, before it stores re-fetched items: a remix whose own line is what it was keeps
    the sources stored for it (APIv2 cannot say whether they changed), so a re-fetch neither drops
    them until the next pass nor counts as an update. Changes ``records`` in place; returns the
    source_ids of those it changed. (A pass that wants the sources checked again leaves this out.)"""
    ids = [r["source_id"] for r in records if (r.get("extra") or {}).get("is_remix") is True]
    if not ids:
        return set()
    rows = cat.query("SELECT source_id, CAST(json_extract(extra, '$.attribution') AS VARCHAR) AS a "
                     "FROM recordings WHERE source = ? AND source_id IN (SELECT unnest(?::VARCHAR[]))",
                     [SOURCE, ids])
    stored = {r["source_id"]: json.loads(r["a"]) for r in rows if r["a"]}
    carried = set()
    for r in records:
        old, new = stored.get(r["source_id"]), (r.get("extra") or {}).get("attribution")
        if (not isinstance(old, dict) or not isinstance(new, dict) or not isinstance(old.get("sources"), list)
                or old.get("own_line") != new.get("freesound_line") or not isinstance(old.get("freesound_line"), str)):
            continue
        new.update(freesound_line=old["freesound_line"], sources=old["sources"], own_line=old["own_line"])
        carried.add(r["source_id"])
    return carried


def update_remix_attributions(cat: Catalog, client: FreesoundClient, *, limit: int | None = None,
                              clock=None) -> RemixStats:
    """Fetch and store the sources of the admitted remixes that lack them (see the module doc).
    One sound's failure is counted and logged, and the others go on; ``QuotaExhausted`` stops the
    pass (the rest is ``deferred`` to the next run)."""
    clock = clock or (lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    st = RemixStats()
    todo = pending_remixes(cat)
    if limit is not None:
        todo = todo[:limit]
    st.candidates = len(todo)
    lines: dict[int, str] = {}          # a source shared by several remixes is looked up once
    before = client.stats["requests"]
    for i, item in enumerate(todo):
        rid, sid = item["recording_id"], int(item["source_id"])
        try:
            page = fetch_attribution_page(client, attribution_page_url(client.site, item["author"] or "", sid))
            sources = parse_attribution_page(page, sid, _page_site(item["page_url"]) or client.site)
            for src in dict.fromkeys(sources):
                if src not in lines:
                    lines[src] = source_line(client, src, crawl_time=clock())
            line = freesound_remix_attribution(item["own_line"], [lines[s] for s in sources])
            if _store(cat, rid, item["own_line"], sources, line):
                st.updated += 1
            else:
                log.info("%s: re-crawled while its sources were fetched; fetched again next run", rid)
        except QuotaExhausted as exc:
            st.deferred = len(todo) - i
            st.next_request_at = f"{exc.next_allowed_utc:%Y-%m-%d %H:%M:%S} UTC"
            log.warning("remix sources: request budget spent; %d remixes left for the next run: %s",
                        st.deferred, exc)
            break
        except (FreesoundError, RemixPageError) as exc:
            st.failed += 1
            st.failures[rid] = str(exc)[:300]
            log.error("%s: remix sources not fetched (retried next run): %s", rid, exc)
    st.requests = client.stats["requests"] - before
    return st
