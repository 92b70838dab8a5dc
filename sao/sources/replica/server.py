"""A loopback HTTP server that answers like freesound.org's APIv2 and serves the FMA replica.

Endpoints:
  GET /apiv2/search/ (alias /apiv2/search/text/)    token auth; query, filter, sort, fields, page, page_size
  GET /apiv2/sounds/<id>/                           token auth; one sound instance
  GET /apiv2/sounds/<id>/download/                  OAuth2 (Authorization: Bearer ...); the original file
  GET /apiv2/oauth2/authorize/, POST /apiv2/oauth2/access_token/   OAuth2 authorization-code grant (oauth.py)
  GET /previews/<id>-{hq,lq}.{mp3,ogg}              no auth, like Freesound's CDN
  GET /fma/<path>                                   the FMA replica tree (fma_metadata/, fma_large/)
  GET /health

Errors are JSON bodies with a ``detail`` field, as on freesound.org: 400 bad parameters,
401 missing/invalid credentials, 404 unknown sound or page, 429 throttled: per minute, per day
(``requests_per_day``) or a suspended credential, with freesound.org's exact ``detail`` and, like it,
no Retry-After.
Tokens are never logged: the access log redacts them. The request handler is in handler.py.

Fidelity to MTG/freesound (apiv2/views.py, forms.py, serializers.py), what a crawler sees:
  - sounds are serialized as the serializer does: its field order, ``created`` as ``...T06:00:00Z``,
    ``samplerate``/``duration`` floats, ``avg_rating`` halved, URL fields, unknown field names ignored;
  - ``next``/``previous`` are built as ``construct_link`` builds them, leaving ``+`` unencoded, so
    following the ``next`` of ``license:"Sampling+"`` asks for ``license:"Sampling "``: count 0;
  - the search index and the database are separate: ``remove_from_database`` (or
    ``ReplicaSettings.index_only_ids``) leaves a sound listed by searches whose entry is ``null``;
  - bad parameters get the real answers (page not an integer is page 1, page < 1 or past the end
    is 404 "Not found", page_size is capped, an unknown sort is ``score``, bad filters a 400 naming
    Solr's reason).
Preview and image URLs point at this server (``/previews/<id>-hq.mp3``), not at a CDN layout.
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
from typing import Any, Callable
from urllib.parse import quote

from ...fsutil import atomic_path
from ...log import QuietHTTPServer
from ..freesound_quota import SUSPENDED, throttle_detail
from .build import api_created, replica_user_id
from .handler import DEFAULT_FIELDS, DETAIL_FIELDS, FAULT_KINDS, PUBLIC_FIELDS, REQUEST_FAULTS, _Handler
from .oauth import ReplicaOAuth

log = logging.getLogger(__name__)
__all__ = ["DEFAULT_FIELDS", "DETAIL_FIELDS", "FAULT_KINDS", "PUBLIC_FIELDS", "REQUEST_FAULTS", "ReplicaServer",
           "ReplicaSettings"]


@dataclass
class ReplicaSettings:
    api_tokens: list[str] = field(default_factory=lambda: ["sao-demo-token"])
    oauth_tokens: list[str] = field(default_factory=lambda: ["sao-demo-oauth"])
    rate_limit_per_minute: int = 600
    max_page_size: int = 150
    default_page_size: int = 15
    rate_window_s: float = 60.0       # freesound.org counts per minute; tests shorten the window
    requests_per_day: int = 0         # the daily quota per credential (freesound.org level 1: 2000; 0: none)
    day_window_s: float = 86_400.0    # the sliding day window (tests may shorten it, or move ``clock`` on)
    suspended_tokens: list[str] = field(default_factory=list)   # credentials of level 0: every request is a 429
    clock: Callable[[], float] = time.monotonic   # the throttle's clock: tests inject one to simulate days
    page_site: str | None = None      # site of the sounds' page URLs (default: this server)
    # sounds the search index still lists but the database no longer has: their search entries are
    # null and their instance is a 404, as when freesound.org's Solr index and database disagree
    index_only_ids: tuple[int, ...] = ()
    # OAuth2 (oauth.py): registered client id -> client secret; issued access tokens' lifetime
    # (freesound.org: a day); where authorize redirects with the code ("" = show it on a page)
    oauth_clients: dict[str, str] = field(default_factory=lambda: {"sao-replica-client": "sao-replica-secret"})
    oauth_access_token_lifetime_s: int = 86400
    oauth_redirect_uri: str = ""


class _Throttle:
    """DRF's sliding windows per credential, as on freesound.org (apiv2/throttling.py): the burst
    (per-minute) throttle, then the sustained (per-day) one. A request the burst throttle refuses is
    counted by neither; one the day throttle refuses was already counted by the burst one (DRF keeps a
    history per throttle and adds to it only when that throttle lets the request through). A suspended
    credential (level 0) is refused with its own message. ``admitted`` counts what each request asked
    for (its path and query, the token hidden), so tests can tell a page fetched twice."""

    def __init__(self, per_minute: int, window: float = 60.0, *, per_day: int = 0, day_window: float = 86_400.0,
                 suspended: frozenset[str] = frozenset(), clock: Callable[[], float] = time.monotonic):
        self.per_minute, self.window = per_minute, window
        self.per_day, self.day_window = per_day, day_window
        self.suspended, self.clock = suspended, clock
        self.hits: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.day_hits: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.admitted: collections.Counter = collections.Counter()
        self.refused: collections.Counter = collections.Counter()     # scope -> 429s answered
        self.lock = threading.Lock()

    @staticmethod
    def _allow(q: collections.deque, limit: int, window: float, now: float) -> bool:
        while q and q[0] <= now - window:            # DRF: drop history older than the window
            q.popleft()
        if len(q) >= limit:
            return False
        q.append(now)
        return True

    def check(self, key: str, what: str = "", counted_as: str | None = None) -> str | None:
        """None when allowed (and counted); otherwise the 429's ``detail``. ``key`` is "kind:credential";
        ``counted_as`` the API client it belongs to, when known (the windows are the client's)."""
        if key.partition(":")[2] in self.suspended:
            self.refused["suspended"] += 1
            return SUSPENDED
        key = counted_as or key
        now = self.clock()
        with self.lock:
            if self.per_minute > 0 and not self._allow(self.hits[key], self.per_minute, self.window, now):
                self.refused["minute"] += 1
                return throttle_detail(self.per_minute, "minute")
            if self.per_day > 0 and not self._allow(self.day_hits[key], self.per_day, self.day_window, now):
                self.refused["day"] += 1
                return throttle_detail(self.per_day, "day")
            self.admitted[what] += 1
            return None


class ReplicaServer:
    def __init__(self, sounds: list[dict[str, Any]], settings: ReplicaSettings | None = None, *,
                 fma_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = 0):
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise ValueError(f"replica host {host!r}: the replica only listens on loopback")
        self.settings = settings or ReplicaSettings()
        self._sounds = {s["id"]: copy.deepcopy(s) for s in sounds}       # the database
        self._index_only: dict[Any, dict[str, Any]] = {}                 # in the search index only
        for sid in self.settings.index_only_ids:
            if sid not in self._sounds:
                raise ValueError(f"index_only_ids: sound {sid!r} is not among the replica's sounds")
            self._index_only[sid] = self._sounds.pop(sid)
        self._lock = threading.Lock()
        self.fma_dir = pathlib.Path(fma_dir).resolve() if fma_dir else None
        self._tmp = None
        if cache_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sao-replica-")
            cache_dir = self._tmp.name
        self.cache_dir = pathlib.Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        st = self.settings
        self.throttle = _Throttle(st.rate_limit_per_minute, st.rate_window_s, per_day=st.requests_per_day,
                                  day_window=st.day_window_s, suspended=frozenset(st.suspended_tokens), clock=st.clock)
        self.oauth = ReplicaOAuth(self.settings)      # issued codes and tokens; its clock is replaceable
        self._faults: list[dict] = []
        self.faults_injected: collections.Counter = collections.Counter()
        self.deleted_by_fault: list[int] = []
        self.throttled = 0
        self.request_counts: collections.Counter = collections.Counter()
        self._preview_locks: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
        self.httpd = QuietHTTPServer((host, port), _Handler)
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
        """Gone from the database and the search index (a clean take-down)."""
        with self._lock:
            self._sounds.pop(sound_id, None)
            self._index_only.pop(sound_id, None)

    def remove_from_database(self, sound_id: int) -> None:
        """Gone from the database while the search index still lists it: searches count it and show
        ``null`` in its place (apiv2/views.py TextSearch: a KeyError in ``sounds_dict`` appends None),
        and its instance and download are 404s."""
        with self._lock:
            self._index_only[sound_id] = self._sounds.pop(sound_id)

    def in_database(self, sound_id: Any) -> bool:
        with self._lock:
            return sound_id in self._sounds

    def database_sound(self, sound_id: Any) -> dict[str, Any] | None:
        with self._lock:
            s = self._sounds.get(sound_id)
            return copy.deepcopy(s) if s is not None else None

    def index_sounds(self) -> list[dict[str, Any]]:
        """What searches run over: the database's sounds and those only the index still has."""
        with self._lock:
            return [copy.deepcopy(s) for s in (*self._sounds.values(), *self._index_only.values())]

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
    def render_sound(self, s: dict[str, Any], fields: set[str] | list[str] | tuple[str, ...], *,
                     score: float | None = None) -> dict[str, Any]:
        """One database record as AbstractSoundSerializer writes it, in the serializer's field order
        (PUBLIC_FIELDS), whatever order ``fields`` asks in. Record values go out as stored (tests
        store hostile ones for the crawler to refuse); what the serializer computes is computed:
        URLs, ``created`` (api_created), ``avg_rating`` / 2, floats for the model's FloatFields,
        ``geotag`` as ``"lat lon"``. A requested name the record has beyond these (an analysis
        descriptor, ``sim_*``) follows them, as the serializer adds those fields last."""
        base, api = self.base_url, self.api_url
        site = (self.settings.page_site or base).rstrip("/")
        sid, user = s["id"], s.get("username")
        uid = s.get("_user_id") or replica_user_id(user)
        folder = f"{base}/displays/{sid // 1000 if isinstance(sid, int) else 0}/{sid}_{uid}"
        geotag = s.get("geotag")
        if isinstance(geotag, (list, tuple)) and len(geotag) == 2:
            geotag = f"{geotag[0]} {geotag[1]}"
        pack = s.get("pack")
        rating = s.get("avg_rating", 0.0)
        values = {
            "id": sid,
            "url": f"{site}/people/{quote(str(user))}/sounds/{sid}/",
            "name": s.get("name"), "tags": s.get("tags"), "description": s.get("description"),
            "category": s.get("category"), "subcategory": s.get("subcategory"),
            "category_code": s.get("category_code") or None,
            "category_is_user_provided": bool(s.get("category_is_user_provided", False)),
            "geotag": geotag, "is_geotagged": geotag is not None,
            "created": api_created(s.get("created")),
            "license": s.get("license"), "gen_ai_preference": s.get("gen_ai_preference"),
            "type": s.get("type"), "channels": s.get("channels"), "filesize": s.get("filesize"),
            "bitrate": s.get("bitrate"), "bitdepth": s.get("bitdepth"),
            "duration": _model_float(s.get("duration")), "samplerate": _model_float(s.get("samplerate")),
            "username": user,
            "pack": f"{api}/packs/{pack}/" if pack else None,
            "pack_name": s.get("pack_name") if pack else None,
            "download": f"{api}/sounds/{sid}/download/",
            "bookmark": f"{api}/sounds/{sid}/bookmark/",
            "previews": {f"preview-{q}-{f}": f"{base}/previews/{sid}-{q}.{f}"
                         for q in ("hq", "lq") for f in ("mp3", "ogg")},
            "images": {f"{kind}{bw}_{size.lower()}": f"{folder}_{file}_bw_{size}.{ext}"
                       for bw in ("", "_bw") for kind, file, ext in (("waveform", "wave", "png"),
                                                                     ("spectral", "spec", "jpg"))
                       for size in ("M", "L")},
            "num_downloads": s.get("num_downloads", 0),
            "avg_rating": rating / 2 if _is_number(rating) else rating,
            "num_ratings": s.get("num_ratings", 0),
            "rate": f"{api}/sounds/{sid}/rate/",
            "comments": f"{api}/sounds/{sid}/comments/",
            "num_comments": s.get("num_comments", 0),
            "comment": f"{api}/sounds/{sid}/comment/",
            "similar_sounds": f"{api}/sounds/{sid}/similar/",
            "is_explicit": s.get("is_explicit", False),
            "score": score,
            "is_remix": s.get("is_remix", False), "was_remixed": s.get("was_remixed", False),
            "md5": s.get("md5"),
        }
        wanted = set(fields)
        out = {f: values[f] for f in PUBLIC_FIELDS if f in wanted}
        out.update({f: s[f] for f in sorted(wanted - set(PUBLIC_FIELDS)) if f in s and not f.startswith("_")})
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


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _model_float(v: object) -> object:
    """A model FloatField as DRF's FloatField writes it (44100 -> 44100.0); other values as stored."""
    return float(v) if _is_number(v) else v
