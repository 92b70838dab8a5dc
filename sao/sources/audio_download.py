"""Download the audio of Freesound items that passed the license gate into the
content-addressed store (``ab/cd/<sha256>.<ext>``): HQ MP3 previews by default, originals
(md5 and size checked) when OAuth2 credentials are configured. A failed download leaves
nothing behind, is recorded with the item and the reason (``DownloadStats.failures``), and the
item is tried again on the next run. An original's file type comes from the API, so it must be
one of ``sao.fsutil.AUDIO_EXTENSIONS`` before it may name a file."""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import time

import requests

from ..catalog import Catalog
from ..fsutil import UnsafePathError, audio_ext
from ..log import progress, redact
from .freesound import FreesoundClient, FreesoundError
from .freesound_oauth import OAuthError

log = logging.getLogger(__name__)

# consecutive authentication failures (HTTP 401/403, or no usable OAuth2 token) after which the
# originals download stops: with an expired or revoked token every further item would fail too
AUTH_FAILURES_TO_STOP = 3


@dataclasses.dataclass
class DownloadStats:
    candidates: int = 0
    downloaded: int = 0
    failed: int = 0
    bytes: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0
    failures: dict[str, str] = dataclasses.field(default_factory=dict)   # recording_id -> why (redacted)
    stopped: str = ""            # why the download stopped before the end ("" = it did not); the rest stay pending

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else 0.0


def pending_downloads(cat: Catalog, source: str = "freesound") -> list[dict]:
    """Items that passed the gate, are not taken down and have no stored audio yet."""
    return cat.query(
        "SELECT r.recording_id, r.audio_url, r.preview_url, r.md5, r.duration, "
        "TRY_CAST(json_extract(r.extra, '$.filesize') AS BIGINT) AS filesize, "
        "json_extract_string(r.extra, '$.type') AS type "
        "FROM gate_admitted g JOIN recordings r USING (recording_id) "
        "WHERE r.source = ? AND r.content_sha256 IS NULL ORDER BY r.recording_id", [source])


def download_items(client: FreesoundClient, items: list[dict], store: str | os.PathLike, *,
                   originals: bool = False, show_progress: bool = True, on_stored=None
                   ) -> tuple[list[dict], DownloadStats]:
    """Fetch the audio of ``pending_downloads`` items into the store; touches no catalogue, so
    batches can run on any worker. Returns ({recording_id, sha256, audio_path, variant}, stats);
    ``on_stored(entry)`` is called as each file lands (to record it at once)."""
    stats = DownloadStats(candidates=len(items))
    t0 = time.perf_counter()
    done = []
    auth_failures = 0
    for item in progress(items, desc="download", unit="file", disable=not show_progress):
        rid = item["recording_id"]
        if stats.stopped:
            break
        try:
            if originals:
                if not item["audio_url"]:
                    raise FreesoundError("no download URL")
                path, sha, size = client.download(item["audio_url"], store, ext=audio_ext(item["type"]),
                                                  expected_md5=item["md5"], expected_size=item["filesize"],
                                                  original=True)
            else:
                if not item["preview_url"]:
                    raise FreesoundError("no preview URL")
                path, sha, size = client.download(item["preview_url"], store, ext="mp3")
        except (FreesoundError, UnsafePathError, requests.RequestException, OSError) as exc:
            stats.failed += 1
            stats.failures[rid] = redact(exc)[:300]
            log.warning("%s: download failed, will retry next run: %s", rid, stats.failures[rid])
            auth_failures = auth_failures + 1 if originals and _is_auth_failure(exc) else 0
            # a refused refresh token (or no token at all) will not mend itself: stop at once
            if auth_failures >= AUTH_FAILURES_TO_STOP or (auth_failures and _needs_sign_in(exc)):
                stats.stopped = (f"originals download stopped after {auth_failures} authentication failure(s) in a "
                                 f"row ({stats.failures[rid][:200]}); run `sao auth freesound` to sign in again; "
                                 f"{len(items) - len(done) - stats.failed} more item(s) stay pending for the next run")
                log.error("%s", stats.stopped)
            continue
        auth_failures = 0
        rel = pathlib.Path(path).relative_to(store).as_posix()     # the client built it with safe_join
        done.append({"recording_id": rid, "sha256": sha, "audio_path": rel,
                     "variant": "original" if originals else "preview-hq-mp3"})
        if on_stored:
            on_stored(done[-1])
        stats.downloaded += 1
        stats.bytes += size
        stats.audio_seconds += item["duration"] or 0.0
    stats.seconds = time.perf_counter() - t0
    return done, stats


def _is_auth_failure(exc: BaseException) -> bool:
    return isinstance(exc, OAuthError) or (isinstance(exc, FreesoundError) and exc.status in (401, 403))


def _needs_sign_in(exc: BaseException) -> bool:
    """A failure no retry can mend: no usable token (none configured, a bad token file, a refused
    refresh token); a token endpoint that did not answer may answer next time."""
    return isinstance(exc, OAuthError) and not exc.transient


def record_downloads(cat: Catalog, done: list[dict]) -> int:
    for d in done:
        cat.set_audio(d["recording_id"], d["sha256"], d["audio_path"], d["variant"])
    return len(done)


def download_audio(cat: Catalog, client: FreesoundClient, store: str | os.PathLike, *, originals: bool = False,
                   limit: int | None = None) -> DownloadStats:
    # each file is recorded as soon as it is stored, so an interrupted run keeps what it fetched
    _, stats = download_items(client, pending_downloads(cat)[:limit], store, originals=originals,
                              on_stored=lambda d: record_downloads(cat, [d]))
    return stats
