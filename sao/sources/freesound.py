"""A Freesound APIv2 client on `requests`: token auth by header, a client-side rate limiter
so a crawl never earns a 429, and retries with back-off for 429/5xx/connection errors.

The token is held only in the session's Authorization header. It is never put in a URL,
a log line, an exception message or a return value; ``repr(client)`` hides it too.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import pathlib
import random
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import requests

log = logging.getLogger(__name__)

ALLOWED_LICENSE_NAMES = ("Creative Commons 0", "Attribution", "Sampling+")
SEARCH_FIELDS = ("id", "url", "name", "tags", "description", "license", "username", "duration", "samplerate", "channels",
                 "bitdepth", "type", "filesize", "created", "md5", "is_remix", "previews", "download",
                 "gen_ai_preference")


class FreesoundError(RuntimeError):
    """A request failed for good (4xx other than 429, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None, *, transient: bool | None = None):
        super().__init__(message)
        self.status = status
        self._transient = transient

    @property
    def transient(self) -> bool:
        """Worth retrying later: no answer at all, 429 or 5xx (unless the error says otherwise)."""
        if self._transient is not None:
            return self._transient
        return self.status is None or self.status == 429 or self.status >= 500


class RateLimiter:
    """At most ``max_calls`` per ``period`` seconds over any sliding window, across threads.

    ``margin`` widens the window a little, so network jitter cannot make the server see
    one call too many in its own window.
    """

    def __init__(self, max_calls: int, period: float = 60.0, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if max_calls < 1:
            raise ValueError("rate limit must be at least 1 call per period")
        self.max_calls, self.period = max_calls, period * (1 + margin)
        self.calls: collections.deque = collections.deque()
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                while self.calls and now - self.calls[0] >= self.period:
                    self.calls.popleft()
                if len(self.calls) < self.max_calls:
                    self.calls.append(now)
                    return
                wait = self.period - (now - self.calls[0])
            self.waited += wait
            self.sleep(wait)


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 3600.0)   # the server knows best; never wait past an hour
            except ValueError:
                pass
        return min(self.max_delay, self.base_delay * 2 ** attempt) * (0.5 + random.random() / 2)


def _detail(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("detail", ""))[:300]
    except ValueError:
        return resp.text[:200].replace("\n", " ")


class FreesoundClient:
    def __init__(self, base_url: str, token: str, *, oauth_token: str | None = None,
                 rate_limit_per_minute: int = 60, rate_period: float = 60.0, retry: RetryPolicy | None = None,
                 timeout: float = 60.0, sleep: Callable[[float], None] = time.sleep):
        if not token:
            raise FreesoundError("no Freesound API token: set it in the environment variable named by "
                                 "[freesound].token_env, or in [freesound].token_file", transient=False)
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._oauth = oauth_token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["User-Agent"] = "sao-crawler/0.1"
        self.limiter = RateLimiter(rate_limit_per_minute, rate_period, sleep=sleep)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.stats = collections.Counter()

    def __repr__(self) -> str:
        return f"FreesoundClient({self.base_url!r}, token=***)"

    @property
    def site(self) -> str:
        """The web site the API belongs to (for attribution links)."""
        return self.base_url[: -len("/apiv2")] if self.base_url.endswith("/apiv2") else self.base_url

    def close(self) -> None:
        self.session.close()

    # -- requests --------------------------------------------------------------------------------
    def _request(self, url: str, params: dict | None = None, *, stream: bool = False,
                 headers: dict | None = None, limited: bool = True) -> requests.Response:
        attempt = 0
        while True:
            if limited:
                self.limiter.acquire()
            self.stats["requests"] += 1
            try:
                resp = self.session.get(url, params=params, stream=stream, timeout=self.timeout, headers=headers)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, retry_after = f"{type(exc).__name__}", None
            else:
                if resp.status_code < 400:
                    return resp
                if resp.status_code != 429 and resp.status_code < 500:
                    detail = _detail(resp)
                    resp.close()
                    raise FreesoundError(f"GET {url.split('?')[0]} failed with HTTP {resp.status_code}: {detail}",
                                         resp.status_code)
                problem, retry_after = f"HTTP {resp.status_code}", resp.headers.get("Retry-After")
                self.stats[f"http_{resp.status_code}"] += 1
                resp.close()
            if attempt >= self.retry.max_retries:
                raise FreesoundError(f"GET {url.split('?')[0]} failed after {attempt + 1} attempts: {problem}")
            delay = self.retry.delay(attempt, retry_after)
            log.warning("GET %s: %s; retrying in %.1fs (attempt %d/%d)", url.split("?")[0], problem, delay,
                        attempt + 1, self.retry.max_retries)
            self.stats["retries"] += 1
            self.sleep(delay)
            attempt += 1

    def get_json(self, url: str, params: dict | None = None) -> dict[str, Any]:
        """A JSON object; a body that is cut short, not JSON or not an object (a proxy's HTML
        page, a dropped connection) is retried like a 5xx, then fails naming the URL."""
        attempt = 0
        while True:
            resp = self._request(url, params)
            try:
                body = resp.json()
                if isinstance(body, dict):
                    return body
                problem = f"JSON {type(body).__name__}, not an object"
            except (ValueError, requests.RequestException) as exc:
                kind = resp.headers.get("Content-Type", "?").split(";")[0]
                problem = f"response is not JSON ({kind}: {str(exc)[:120]})"
            finally:
                resp.close()
            self.stats["bad_bodies"] += 1
            if attempt >= self.retry.max_retries:
                raise FreesoundError(f"GET {url.split('?')[0]}: {problem}, {attempt + 1} times")
            delay = self.retry.delay(attempt, None)
            log.warning("GET %s: %s; retrying in %.1fs", url.split("?")[0], problem, delay)
            self.stats["retries"] += 1
            self.sleep(delay)
            attempt += 1

    def search_pages(self, filter: str, *, fields: tuple[str, ...] = SEARCH_FIELDS, page_size: int = 150,
                     sort: str = "created_asc", query: str = "") -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (page number, page JSON), following ``next`` until it is null."""
        url: str | None = f"{self.base_url}/search/"
        params: dict | None = {"query": query, "filter": filter, "sort": sort, "fields": ",".join(fields),
                               "page_size": page_size, "page": 1}
        page = 1
        while url:
            j = self.get_json(url, params)
            for key in ("count", "results"):
                if key not in j:
                    raise FreesoundError(f"search page {page}: malformed response, no {key!r}")
            yield page, j
            url, params, page = j.get("next"), None, page + 1

    def search_page(self, filter: str, page: int = 1, *, fields: tuple[str, ...] = SEARCH_FIELDS,
                    page_size: int = 150, sort: str = "created_asc", query: str = "") -> dict[str, Any]:
        j = self.get_json(f"{self.base_url}/search/", {"query": query, "filter": filter, "sort": sort,
                                                       "fields": ",".join(fields), "page_size": page_size,
                                                       "page": page})
        for key in ("count", "results"):
            if key not in j or (key == "results" and not isinstance(j[key], list)):
                raise FreesoundError(f"search page {page}: malformed response, no {key!r} list")
        return j

    def sound(self, sound_id: int, fields: tuple[str, ...] = SEARCH_FIELDS) -> dict[str, Any] | None:
        """One sound, or None when it no longer exists (404)."""
        try:
            return self.get_json(f"{self.base_url}/sounds/{int(sound_id)}/", {"fields": ",".join(fields)})
        except FreesoundError as exc:
            if exc.status == 404:
                return None
            raise

    # -- downloads -------------------------------------------------------------------------------
    def download(self, url: str, dest_dir: str | os.PathLike, *, ext: str, expected_md5: str | None = None,
                 expected_size: int | None = None, original: bool = False) -> tuple[pathlib.Path, str, int]:
        """Stream ``url`` into a content-addressed store: ``dest_dir/ab/cd/<sha256>.<ext>``.

        The bytes go to a temporary file first; size and md5 are checked when known; only a
        complete, verified file is renamed into place. Returns (path, sha256, size).
        """
        headers = None
        if original:
            if not self._oauth:
                raise FreesoundError("original downloads need OAuth2 credentials ([freesound].oauth_token_env)")
            headers = {"Authorization": f"Bearer {self._oauth}"}
        dest = pathlib.Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        # previews come from a CDN that the API throttle does not cover
        resp = self._request(url, stream=True, headers=headers, limited=original)
        fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest)
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_content(1 << 16):
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            announced = resp.headers.get("Content-Length")
            if announced is not None and int(announced) != size:
                raise FreesoundError(f"download {url.split('?')[0]} truncated: {size} of {announced} bytes")
            if expected_size is not None and size != expected_size:
                raise FreesoundError(f"download {url.split('?')[0]}: {size} bytes, expected {expected_size}")
            if expected_md5 and md5.hexdigest() != expected_md5:
                raise FreesoundError(f"download {url.split('?')[0]}: md5 {md5.hexdigest()} != expected {expected_md5}")
            digest = sha.hexdigest()
            final = dest / digest[:2] / digest[2:4] / f"{digest}.{ext.lstrip('.')}"
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return final, digest, size
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            resp.close()
