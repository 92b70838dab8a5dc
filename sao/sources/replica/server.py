"""A loopback HTTP server that answers like freesound.org's APIv2 and serves the FMA replica.

Endpoints:
  GET /apiv2/search/ (alias /apiv2/search/text/)    token auth; query, filter, sort, fields, page, page_size
  GET /apiv2/sounds/<id>/                           token auth; one sound instance
  GET /apiv2/sounds/<id>/download/                  OAuth2 (Authorization: Bearer ...); the original file
  GET /previews/<id>-{hq,lq}.{mp3,ogg}              no auth, like Freesound's CDN
  GET /fma/<path>                                   the FMA replica tree (fma_metadata/, fma_large/)
  GET /health

Errors are JSON bodies with a ``detail`` field, as on freesound.org: 400 bad parameters,
401 missing/invalid credentials, 404 unknown sound or page, 429 throttled (with Retry-After).
Tokens are never logged: the access log redacts them.
"""
from __future__ import annotations

import collections
import copy
import json
import logging
import math
import mimetypes
import os
import pathlib
import random
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from ...fsutil import atomic_path
from .search import SearchError, search

log = logging.getLogger(__name__)

DEFAULT_FIELDS = ("id", "name", "tags", "username", "license")
PUBLIC_FIELDS = ("id", "url", "name", "tags", "description", "category", "subcategory", "geotag", "created",
                 "license", "gen_ai_preference", "type", "channels", "filesize", "bitrate", "bitdepth",
                 "duration", "samplerate", "username", "pack", "download", "previews", "num_downloads",
                 "avg_rating", "num_ratings", "num_comments", "is_remix", "was_remixed", "md5", "is_explicit")
FAULT_KINDS = ("status", "reset", "stall", "truncated-json", "content-type", "truncate", "corrupt", "duplicate-page",
               "reorder", "delete-next")
REQUEST_FAULTS = ("status", "reset", "stall", "truncated-json", "content-type", "duplicate-page", "reorder",
                  "delete-next")
_PREVIEW = re.compile(r"^/previews/(\d+)-(hq|lq)\.(mp3|ogg)$")
_SOUND = re.compile(r"^/apiv2/sounds/(\d+)/(download/)?$")
_TOKEN_IN_QS = re.compile(r"(token=)[^&\s]+")


@dataclass
class ReplicaSettings:
    api_tokens: list[str] = field(default_factory=lambda: ["sao-demo-token"])
    oauth_tokens: list[str] = field(default_factory=lambda: ["sao-demo-oauth"])
    rate_limit_per_minute: int = 600
    max_page_size: int = 150
    default_page_size: int = 15
    rate_window_s: float = 60.0       # freesound.org counts per minute; tests shorten the window
    page_site: str | None = None      # site of the sounds' page URLs (default: this server)


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a timeout, a killed crawler) is routine here, not a traceback."""

    def handle_error(self, request, client_address) -> None:
        import sys
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("client %s went away", client_address[0])
            return
        super().handle_error(request, client_address)


class _Throttle:
    """Sliding one-minute window per credential, like DRF's throttles on freesound.org."""

    def __init__(self, per_minute: int, window: float = 60.0):
        self.per_minute = per_minute
        self.window = window
        self.hits: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.lock = threading.Lock()

    def check(self, key: str) -> float | None:
        """None when allowed (and counted); otherwise seconds to wait."""
        if self.per_minute <= 0:
            return None
        now = time.monotonic()
        with self.lock:
            q = self.hits[key]
            while q and now - q[0] >= self.window:
                q.popleft()
            if len(q) >= self.per_minute:
                return self.window - (now - q[0])
            q.append(now)
            return None


class ReplicaServer:
    def __init__(self, sounds: list[dict[str, Any]], settings: ReplicaSettings | None = None, *,
                 fma_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise ValueError(f"replica host {host!r}: the replica only listens on loopback")
        self.settings = settings or ReplicaSettings()
        self._sounds = {s["id"]: copy.deepcopy(s) for s in sounds}
        self._lock = threading.Lock()
        self.fma_dir = pathlib.Path(fma_dir).resolve() if fma_dir else None
        self._tmp = None
        if cache_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sao-replica-")
            cache_dir = self._tmp.name
        self.cache_dir = pathlib.Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.throttle = _Throttle(self.settings.rate_limit_per_minute, self.settings.rate_window_s)
        self._faults: list[dict] = []
        self.faults_injected: collections.Counter = collections.Counter()
        self.deleted_by_fault: list[int] = []
        self.throttled = 0
        self.request_counts: collections.Counter = collections.Counter()
        self._preview_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self.httpd = _QuietServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.replica = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/apiv2"

    def start(self) -> str:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sao-replica", daemon=True)
        self._thread.start()
        return self.base_url

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> "ReplicaServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state changes (used by tests and fault scenarios) ---------------------------------------
    def update_sound(self, sound_id: int, **fields: Any) -> None:
        with self._lock:
            self._sounds[sound_id].update(fields)

    def add_sound(self, sound: dict[str, Any]) -> None:
        """A new upload appears (its ``created`` should be later than what was crawled)."""
        with self._lock:
            self._sounds[sound["id"]] = copy.deepcopy(sound)

    def delete_sound(self, sound_id: int) -> None:
        with self._lock:
            self._sounds.pop(sound_id, None)

    def inject(self, path_pattern: str, kind: str, *, times: int = 1, **opts: Any) -> None:
        """Misbehave on the next ``times`` requests whose path matches ``path_pattern``.

        kinds: ``status`` (``status``=500/502/503/429..., optional ``retry_after``), ``reset`` (drop the
        connection without answering), ``stall`` (wait ``seconds`` first), ``truncated-json`` (a JSON body
        cut short), ``content-type`` (a 200 HTML page instead of JSON), ``truncate`` (a file body that
        stops halfway), ``corrupt`` (a file body with flipped bytes: md5 mismatch), ``duplicate-page``
        (a search page answers with the previous page's results), ``reorder`` (a search page's
        results shuffled), ``delete-next`` (after this search page, the first sound of the next page
        is deleted, as if removed between two requests).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {kind!r}: one of {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append({"pattern": re.compile(path_pattern), "kind": kind, "times": times, **opts})
            self.faults_injected[kind] += 0

    def inject_fault(self, path_pattern: str, status: int, *, times: int = 1, retry_after: str | None = None,
                     detail: str = "Injected fault") -> None:
        """Answer the next ``times`` requests whose path matches with ``status`` (e.g. 503, 429)."""
        self.inject(path_pattern, "status", times=times, status=status, retry_after=retry_after, detail=detail)

    def inject_truncation(self, path_pattern: str, *, times: int = 1) -> None:
        """The next ``times`` file responses on matching paths announce the full length but stop halfway."""
        self.inject(path_pattern, "truncate", times=times)

    def _take_fault(self, path: str, kinds: tuple[str, ...] | None = None) -> dict | None:
        with self._lock:
            for f in self._faults:
                if f["times"] > 0 and (kinds is None or f["kind"] in kinds) and f["pattern"].search(path):
                    f["times"] -= 1
                    self.faults_injected[f["kind"]] += 1
                    return f
        return None

    def sounds(self) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._sounds.values()]

    # -- rendering -------------------------------------------------------------------------------
    def render_sound(self, s: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        base = self.base_url
        sid = s["id"]
        computed = {
            "url": f"{(self.settings.page_site or base).rstrip('/')}/people/{quote(s['username'])}/sounds/{sid}/",
            "download": f"{self.api_url}/sounds/{sid}/download/",
            "previews": {f"preview-{q}-{f}": f"{base}/previews/{sid}-{q}.{f}"
                         for q in ("hq", "lq") for f in ("mp3", "ogg")},
            "pack_name": None,
        }
        out = {}
        for f in fields:
            if f in computed:
                out[f] = computed[f]
            elif f in s and not f.startswith("_"):
                out[f] = s[f]
        return out

    def preview_path(self, sid: int, quality: str, fmt: str) -> pathlib.Path:
        """Encode (once, atomically) a 44.1 kHz stereo preview, as Freesound's processing does."""
        import numpy as np
        import soundfile as sf

        with self._lock:
            s = self._sounds.get(sid)
        if s is None:
            raise KeyError(sid)
        dst = self.cache_dir / f"{sid}-{quality}.{fmt}"
        with self._preview_locks[dst.name]:
            if dst.exists():
                return dst
            from ...audio import load
            x, sr = load(s["_path"], sample_rate=44100)
            if x.shape[0] == 1:
                x = np.vstack([x, x])
            level = {"hq": 0.3, "lq": 0.9}[quality]
            kw = dict(format="MP3", subtype="MPEG_LAYER_III") if fmt == "mp3" else dict(format="OGG", subtype="VORBIS")
            with atomic_path(dst) as tmp:
                sf.write(str(tmp), np.clip(x.T, -1, 1), sr, compression_level=level, **kw)
        return dst


class _Handler(BaseHTTPRequestHandler):
    server_version = "sao-replica/1"
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; without TCP_NODELAY a keep-alive client
    # waits ~40 ms per response on delayed ACKs
    disable_nagle_algorithm = True

    @property
    def replica(self) -> ReplicaServer:
        return self.server.replica  # type: ignore[attr-defined]

    def log_message(self, fmt: str, *args: Any) -> None:  # never log credentials
        log.debug("%s %s", self.client_address[0], _TOKEN_IN_QS.sub(r"\1***", fmt % args))

    # -- helpers ---------------------------------------------------------------------------------
    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
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
            return self._error(404, "Not found.")
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
            if value not in r.settings.oauth_tokens:
                return self._error(401, "Invalid token.")
        elif (kind == "token" and value not in r.settings.api_tokens) or (
                kind == "bearer" and value not in r.settings.oauth_tokens):
            return self._error(401, "Invalid token.")
        wait = r.throttle.check(f"{kind}:{value}")
        if wait is not None:
            r.throttled += 1
            rate = r.settings.rate_limit_per_minute
            return self._error(429, f"Request was throttled because of exceeding a request limit rate ({rate}/minute)",
                               {"Retry-After": str(max(1, math.ceil(wait)))})
        return handler()

    def _search(self, params: dict[str, list[str]]) -> None:
        r = self.replica
        get = lambda k, d="": params.get(k, [d])[0]  # noqa: E731
        try:
            page = int(get("page", "1"))
            page_size = int(get("page_size", str(r.settings.default_page_size)))
        except ValueError:
            return self._error(400, "Invalid page or page_size: must be integers.")
        if page < 1 or page_size < 1:
            return self._error(400, "Invalid page or page_size: must be positive.")
        page_size = min(page_size, r.settings.max_page_size)
        try:
            hits = search(r.sounds(), query=get("query"), filter=get("filter"), sort=get("sort", "score") or "score")
        except SearchError as exc:
            return self._error(400, str(exc))
        pages = max(1, math.ceil(len(hits) / page_size))
        if page > pages:
            return self._error(404, "Invalid page.")
        fields_param = get("fields")
        if fields_param.strip() == "*":
            fields = list(PUBLIC_FIELDS)
        elif fields_param.strip():
            fields = [f.strip() for f in fields_param.split(",") if f.strip()]
        else:
            fields = list(DEFAULT_FIELDS)
        chunk = hits[(page - 1) * page_size: page * page_size]
        pf = getattr(self, "_page_fault", None)
        if pf and pf["kind"] == "duplicate-page" and page > 1:
            chunk = hits[(page - 2) * page_size: (page - 1) * page_size]
        elif pf and pf["kind"] == "reorder":
            chunk = random.Random(page).sample(chunk, len(chunk))
        elif pf and pf["kind"] == "delete-next" and page * page_size < len(hits):
            r.delete_sound(hits[page * page_size]["id"])
            r.deleted_by_fault.append(hits[page * page_size]["id"])

        def link(p: int) -> str:
            # the token (if passed as a parameter) is never echoed back into links
            q = {k: v[0] for k, v in params.items() if k != "token"}
            q.update(page=str(p), page_size=str(page_size))
            return f"{r.api_url}/search/?{urlencode(q)}"

        return self._json(200, {
            "count": len(hits),
            "next": link(page + 1) if page < pages else None,
            "previous": link(page - 1) if page > 1 else None,
            "results": [r.render_sound(s, fields) for s in chunk],
        })

    def _sound(self, sid: int, params: dict[str, list[str]]) -> None:
        r = self.replica
        s = next((x for x in r.sounds() if x["id"] == sid), None)
        if s is None:
            return self._error(404, "Sound not found.")
        fields = params.get("fields", [""])[0]
        fl = [f.strip() for f in fields.split(",") if f.strip()] if fields and fields != "*" else list(PUBLIC_FIELDS)
        return self._json(200, r.render_sound(s, fl))

    def _download(self, sid: int) -> None:
        r = self.replica
        s = next((x for x in r.sounds() if x["id"] == sid), None)
        if s is None:
            return self._error(404, "Sound not found.")
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
