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
Tokens are never logged: the access log redacts them. The request handler is in handler.py.
"""
from __future__ import annotations

import collections
import copy
import logging
import os
import pathlib
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

from ...fsutil import atomic_path
from .handler import DEFAULT_FIELDS, FAULT_KINDS, PUBLIC_FIELDS, REQUEST_FAULTS, _Handler

log = logging.getLogger(__name__)
__all__ = ["DEFAULT_FIELDS", "FAULT_KINDS", "PUBLIC_FIELDS", "REQUEST_FAULTS", "ReplicaServer", "ReplicaSettings"]


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
