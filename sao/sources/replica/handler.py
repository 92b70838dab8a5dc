"""The replica's request handler: routing, credentials and the throttle, Freesound's search and
sound endpoints, file bodies (previews, originals, the FMA tree) and injected faults. State lives in
``ReplicaServer`` (server.py); this answers requests against it. It logs to the server's logger."""
from __future__ import annotations

import json
import logging
import math
import mimetypes
import pathlib
import random
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from . import oauth as oauth_endpoints
from . import remix as remix_pages
from .search import DEFAULT_SORT, SORTS, SearchError, filter_error_detail, search

if TYPE_CHECKING:
    from .server import ReplicaServer

log = logging.getLogger("sao.sources.replica.server")     # one access log for the replica

# MTG/freesound apiv2/serializers.py: a sound's fields in the order the serializer writes them
# (``AbstractSoundSerializer.Meta.fields``; a response follows this order, not the requested one),
# the list view's defaults and the instance view's defaults. ``fields=*`` is every one of them.
PUBLIC_FIELDS = ("id", "url", "name", "tags", "description", "category", "subcategory", "category_code",
                 "category_is_user_provided", "geotag", "is_geotagged", "created", "license", "gen_ai_preference",
                 "type", "channels", "filesize", "bitrate", "bitdepth", "duration", "samplerate", "username", "pack",
                 "pack_name", "download", "bookmark", "previews", "images", "num_downloads", "avg_rating",
                 "num_ratings", "rate", "comments", "num_comments", "comment", "similar_sounds", "is_explicit",
                 "score", "is_remix", "was_remixed", "md5")
DEFAULT_FIELDS = ("id", "name", "tags", "username", "license")
DETAIL_FIELDS = tuple(f for f in PUBLIC_FIELDS if f != "score")
# apiv2/forms.py my_quote: the characters the ``next``/``previous`` links leave unencoded. ``+`` is
# among them, and Django reads ``+`` in a query string as a space: following a link for
# ``license:"Sampling+"`` asks for ``license:"Sampling "``.
LINK_SAFE = ",:[]*+()'"
NOT_FOUND = "Not found"                              # apiv2/exceptions.py NotFoundException
SOUND_NOT_FOUND = "No Sound matches the given query."  # DRF 3.15 passes get_object_or_404's Http404 text on
FAULT_KINDS = ("status", "reset", "stall", "truncated-json", "content-type", "truncate", "corrupt", "duplicate-page",
               "reorder", "delete-next")
REQUEST_FAULTS = ("status", "reset", "stall", "truncated-json", "content-type", "duplicate-page", "reorder",
                  "delete-next")
_PREVIEW = re.compile(r"^/previews/(\d+)-(hq|lq)\.(mp3|ogg)$")
_SOUND = re.compile(r"^/apiv2/sounds/(\d+)/(download/)?$")
_TOKEN_IN_QS = re.compile(r"(token=)[^&\s]+")


class _Handler(BaseHTTPRequestHandler):
    server_version = "sao-replica/1"
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; without TCP_NODELAY a keep-alive client
    # waits ~40 ms per response on delayed ACKs
    disable_nagle_algorithm = True

    @property
    def replica(self) -> "ReplicaServer":
        return self.server.replica  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args: Any) -> None:  # never log credentials
        log.debug("%s %s", self.client_address[0], _TOKEN_IN_QS.sub(r"\1***", fmt % args))

    # -- helpers ---------------------------------------------------------------------------------
    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = render_json(body)
        if status == 200 and getattr(self, "_page_fault", None) and self._page_fault["kind"] == "truncated-json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data) // 2))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"detail": detail}, headers)

    def _file(self, path: pathlib.Path, content_type: str | None = None, filename: str | None = None) -> None:
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(size))
        if filename:
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        fault = self.replica._take_fault(urlsplit(self.path).path, ("truncate", "corrupt"))
        if fault and fault["kind"] == "truncate":
            self.send_header("Connection", "close")
        self.end_headers()
        if fault and fault["kind"] == "truncate":
            with open(path, "rb") as f:
                self.wfile.write(f.read(size // 2))
            self.wfile.flush()
            self.close_connection = True
            return
        with open(path, "rb") as f:
            data = f.read()
        if fault and fault["kind"] == "corrupt":     # same length, other bytes: only a checksum can tell
            mid = len(data) // 2
            data = data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + 64]) + data[mid + 64:]
        self.wfile.write(data)

    def _credential(self, params: dict[str, list[str]]) -> tuple[str, str] | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Token "):
            return "token", auth[6:].strip()
        if auth.startswith("Bearer "):
            return "bearer", auth[7:].strip()
        if params.get("token"):
            return "token", params["token"][0]
        return None

    # -- routing ---------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        path = url.path
        r = self.replica
        r.request_counts[path] += 1
        fault = r._take_fault(path, REQUEST_FAULTS)
        self._page_fault = None
        if fault is not None:
            kind = fault["kind"]
            if kind == "status":
                ra = fault.get("retry_after")
                return self._error(fault["status"], fault.get("detail", "Injected fault"),
                                   {"Retry-After": ra} if ra else None)
            if kind == "reset":
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return None
            if kind == "stall":
                time.sleep(float(fault.get("seconds", 5.0)))
            elif kind == "content-type":
                body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return None
            else:
                self._page_fault = fault      # truncated-json and the search-page kinds act on the answer
        try:
            if path in oauth_endpoints.AUTHORIZE_PATHS:
                return oauth_endpoints.authorize(self, params)
            if path == "/health":
                return self._json(200, {"status": "ok", "sounds": len(r._sounds)})
            m = _PREVIEW.match(path)
            if m:
                try:
                    p = r.preview_path(int(m.group(1)), m.group(2), m.group(3))
                except KeyError:
                    return self._error(404, "Not found.")
                return self._file(p, "audio/mpeg" if m.group(3) == "mp3" else "audio/ogg")
            if path.startswith("/fma/"):
                return self._fma(path[len("/fma/"):])
            if path in ("/apiv2/search/", "/apiv2/search/text/", "/apiv2/search", "/apiv2/search/text"):
                return self._api(params, lambda: self._search(params))
            m = _SOUND.match(path)
            if m:
                sid = int(m.group(1))
                if m.group(2):
                    return self._api(params, lambda: self._download(sid), oauth=True)
                return self._api(params, lambda: self._sound(sid, params))
            if path.startswith("/people/"):      # the web site's attribution modal (remix sources)
                return remix_pages.serve_people_page(self, path, params)
            return self._error(404, "Not found.")
        except (BrokenPipeError, ConnectionResetError):
            return None

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        self.replica.request_counts[path] += 1
        try:
            if path in oauth_endpoints.ACCESS_TOKEN_PATHS:
                return oauth_endpoints.access_token(self)
            self.close_connection = True             # the body, if any, is not read
            return self._error(405, 'Method "POST" not allowed.')
        except (BrokenPipeError, ConnectionResetError):
            return None

    def _api(self, params, handler, *, oauth: bool = False) -> None:
        r = self.replica
        cred = self._credential(params)
        if cred is None:
            return self._error(401, "Authentication credentials were not provided.")
        kind, value = cred
        if oauth:
            if kind != "bearer":
                return self._error(401, "This resource requires OAuth2 authentication (Authorization: Bearer).")
            if not r.oauth.bearer_ok(value):
                return self._error(401, "Invalid token.")
        elif kind == "token" and value not in r.settings.api_tokens:
            return self._error(401, "Invalid token")       # apiv2/authentication.py's text, no full stop
        elif kind == "bearer" and not r.oauth.bearer_ok(value):
            return self._error(401, "Invalid token.")
        client = r.oauth.credential_of(kind, value)
        refused = r.throttle.check(f"{kind}:{value}", _TOKEN_IN_QS.sub(r"\1***", self.path),
                                   counted_as=f"client:{client}" if client else None)
        if refused is not None:
            r.throttled += 1
            return self._error(429, refused)      # freesound.org's exact detail, and like it no Retry-After
        return handler()

    def _search(self, params: dict[str, list[str]]) -> None:
        """TextSearch.get (apiv2/views.py) with SoundTextSearchFormAPI's cleaning (apiv2/forms.py)."""
        r = self.replica
        form = clean_search_form(params, r.settings.default_page_size, r.settings.max_page_size)
        if "error" in form:
            return self._error(*form["error"])
        try:
            # api_search unquotes query and filter once more, after Django has decoded them
            hits = search(r.index_sounds(), query=unquote(form["query"]), filter=unquote(form["filter"]),
                          sort=form["sort"])
        except SearchError as exc:
            return self._error(400, filter_error_detail(str(exc)))
        page, page_size, count = form["page"], form["page_size"], len(hits)
        pages = max(1, math.ceil(count / page_size))       # Django's Paginator: an empty list has one page
        if page > pages and count != 0:
            return self._error(404, NOT_FOUND)
        chunk = hits[(page - 1) * page_size: page * page_size]
        pf = getattr(self, "_page_fault", None)
        if pf and pf["kind"] == "duplicate-page" and page > 1:
            chunk = hits[(page - 2) * page_size: (page - 1) * page_size]
        elif pf and pf["kind"] == "reorder":
            chunk = random.Random(page).sample(chunk, len(chunk))
        elif pf and pf["kind"] == "delete-next" and page * page_size < len(hits):
            r.delete_sound(hits[page * page_size]["id"])
            r.deleted_by_fault.append(hits[page * page_size]["id"])
        shown = min(page, pages)                            # PreSlicedCountProvidedPaginator clamps the number
        fields = requested_fields(params, DEFAULT_FIELDS)
        return self._json(200, {
            "count": count,
            "previous": search_link(r.api_url, form, shown - 1, r.settings.default_page_size) if shown > 1 else None,
            "next": search_link(r.api_url, form, shown + 1, r.settings.default_page_size) if shown < pages else None,
            # a sound the index lists but the database no longer has is a null (views.py: KeyError -> None)
            "results": [r.render_sound(s, fields, score=1.0) if r.in_database(s["id"]) else None for s in chunk],
        })

    def _sound(self, sid: int, params: dict[str, list[str]]) -> None:
        r = self.replica
        s = r.database_sound(sid)
        if s is None:
            return self._error(404, SOUND_NOT_FOUND)
        return self._json(200, r.render_sound(s, requested_fields(params, DETAIL_FIELDS)))

    def _download(self, sid: int) -> None:
        r = self.replica
        s = r.database_sound(sid)
        if s is None:
            return self._error(404, NOT_FOUND)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{sid}__{s['username']}__{s['name']}")[:120]
        return self._file(pathlib.Path(s["_path"]), None, f"{safe}.{s['type']}")

    def _fma(self, rel: str) -> None:
        r = self.replica
        if r.fma_dir is None:
            return self._error(404, "No FMA replica is configured.")
        target = (r.fma_dir / rel).resolve()
        if r.fma_dir not in target.parents or not target.is_file():
            return self._error(404, "Not found.")
        return self._file(target)


def render_json(body: Any) -> bytes:
    """DRF's JSONRenderer: compact separators, non-ASCII written as UTF-8. NaN is still written
    (tests hand the crawler such values on purpose); a lone surrogate falls back to ``\\u`` escapes."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()


def _last(params: dict[str, list[str]], key: str) -> str | None:
    """What Django's QueryDict gives a form: the last value of a repeated parameter."""
    values = params.get(key)
    return values[-1] if values else None


def clean_search_form(params: dict[str, list[str]], default_page_size: int, max_page_size: int) -> dict[str, Any]:
    """SoundTextSearchFormAPI's cleaned_data, and TextSearch.get's checks before searching: an
    ``error`` (status, detail) or the values. CharFields strip; a page that is not an integer is 1; a
    page_size that is not one is the default, and it is capped; a page or page_size below 1 is a 404;
    an empty or blank ``filter=`` is a 400; an unknown sort is ``score``."""
    def char(key: str) -> str:
        return (_last(params, key) or "").strip()

    query = char("query")
    if (unquote(query).replace('"', "").isspace() or unquote(query).replace('"', "") == ""
            or query.replace("'", "").isspace() or query == "''"):
        query = ""
    filt = char("filter")
    if "filter" in params and (not filt or filt.isspace()):
        return {"error": (400, "Invalid filter.")}
    try:
        page = int(char("page"))
    except ValueError:
        page = 1
    try:
        page_size = min(int(char("page_size")), max_page_size)
    except ValueError:
        page_size = default_page_size
    sort = char("sort")
    if ":" not in sort and sort not in SORTS:
        sort = DEFAULT_SORT
    if page < 1 or page_size < 1:
        return {"error": (404, NOT_FOUND)}
    return {"query": query, "filter": filt, "weights": char("weights"), "sort": sort, "page": page,
            "page_size": page_size, "fields": char("fields"), "similarity_space": char("similarity_space"),
            "group_by_pack": "1" if char("group_by_pack") == "1" else ""}


def _link_quote(value: str) -> str:
    return quote(value, safe=LINK_SAFE)


def search_link(api_url: str, form: dict[str, Any], page: int, default_page_size: int) -> str:
    """``construct_link`` (apiv2/forms.py): ``?&query=...&filter=...&weights=...`` in this order, the
    query, filter and fields quoted with ``LINK_SAFE`` (``+`` left as it is), weights not quoted at
    all, sort only when not ``score``, page_size only when not the default, no token. The path is
    always ``/apiv2/search/`` (``reverse("apiv2-sound-search")``), also for ``/search/text/``."""
    link = f"?&query={_link_quote(form['query'])}"
    if form["filter"]:
        link += f"&filter={_link_quote(form['filter'])}"
    link += f"&weights={form['weights']}"
    if form["sort"] != DEFAULT_SORT:
        link += f"&sort={form['sort']}"
    link += f"&page={page}"
    if form["page_size"] != default_page_size:
        link += f"&page_size={form['page_size']}"
    if form["fields"]:
        link += f"&fields={_link_quote(form['fields'])}"
    if form["similarity_space"]:
        link += f"&similarity_space={form['similarity_space']}"
    if form["group_by_pack"]:
        link += f"&group_by_pack={form['group_by_pack']}"
    return f"{api_url}/search/{link}"


def requested_fields(params: dict[str, list[str]], default: tuple[str, ...]) -> set[str]:
    """The serializer's field selection: ``fields`` as given (not stripped: ``id, name`` asks for
    ``id`` and `` name``), empty means the view's default, ``*`` everything; a name that is no field
    is ignored, not an error."""
    value = _last(params, "fields")
    if not value:
        return set(default)
    if value == "*":
        return set(PUBLIC_FIELDS)
    return set(value.split(","))
