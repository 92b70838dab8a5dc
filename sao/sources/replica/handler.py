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
from urllib.parse import parse_qs, urlencode, urlsplit

from .search import SearchError, search

if TYPE_CHECKING:
    from .server import ReplicaServer

log = logging.getLogger("sao.sources.replica.server")     # one access log for the replica

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
