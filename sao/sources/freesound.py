"""A Freesound APIv2 client on `requests`: token auth by header, a client-side rate limiter
so a crawl never earns a 429, and retries with back-off for 429/5xx/connection errors.

Credentials go only to the API host: the exact scheme, host and port of ``base_url``. Previews
(a CDN), ``next`` links and redirects that point elsewhere get no Authorization header; redirects
are followed here, hop by hop, so that rule holds on every hop (not only where requests strips it).
"The API host" is the host requests connects to, and a URL that URL parsers could read as two
different hosts (``http://A\\@B/``, userinfo, a backslash) is refused before any request.
The token is never put in a URL, and every message built from a server's answer is redacted
(``sao.log.redact``) before it is raised or logged; ``repr(client)`` hides it too.

Every API request (searches, sound lookups, original downloads) is taken from a ``RequestBudget``
(sao.sources.freesound_quota) before it is sent: per day as well as per minute. A 429 is read by its
message: a per-minute one is waited out and retried; a daily (or hourly) one raises ``QuotaExhausted``
at once, carrying when the next request is allowed, and the budget then refuses every later request
without asking the server; a suspended credential is a fatal error. Previews (the CDN) are not counted.

Downloads are bounded: at most ``max_download_bytes`` and ``download_deadline_s`` seconds per
file overall, checked while streaming (a server that trickles bytes cannot hold a worker).
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from typing import Any, Callable, Iterator
from urllib.parse import urljoin

import requests
import urllib3

from ..fsutil import audio_ext, safe_join
from ..log import redact, register_secrets
from .freesound_http import FreesoundError, QuotaExhausted, RateLimiter, RetryPolicy
from .freesound_quota import RequestBudget, credential_id, note_block, parse_throttle, utc
from .record_checks import request_origin, short

log = logging.getLogger(__name__)

ALLOWED_LICENSE_NAMES = ("Creative Commons 0", "Attribution", "Sampling+")
SEARCH_FIELDS = ("id", "url", "name", "tags", "description", "license", "username", "duration", "samplerate", "channels",
                 "bitdepth", "type", "filesize", "created", "md5", "is_remix", "previews", "download",
                 "gen_ai_preference")


REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
DEFAULT_MAX_DOWNLOAD_BYTES = 2048 * 1024 * 1024
DEFAULT_DOWNLOAD_DEADLINE_S = 600.0


def origin(url: object) -> tuple[str, str, int]:
    """(scheme, host, port) that a request to ``url`` connects to: what "the same host" means.
    A URL that URL parsers could read as different hosts is refused (FreesoundError, not retried):
    it never gets a request, with or without the credential."""
    try:
        return request_origin(url)
    except ValueError as exc:
        raise FreesoundError(f"URL {short(url)} refused: {exc}", transient=False) from None


def _detail(resp: requests.Response, streamed: bool = False) -> str:
    """The server's explanation, redacted (a server may echo the credential it refused); at most
    8 KiB of an error body is read, so a streamed error page cannot be endless."""
    try:
        data = resp.raw.read(8192, decode_content=True) if streamed else resp.content[:8192]
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
        data = b""
    try:
        body = json.loads(data)
        text = str(body.get("detail", "")) if isinstance(body, dict) else str(body)
    except ValueError:
        text = data[:200].decode("utf-8", "replace").replace("\n", " ")
    return redact(text)[:300]


class FreesoundClient:
    def __init__(self, base_url: str, token: str, *, oauth_token: Any = None,   # str or a token provider
                 rate_limit_per_minute: int = 60, rate_period: float = 60.0, retry: RetryPolicy | None = None,
                 timeout: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                 max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
                 download_deadline_s: float = DEFAULT_DOWNLOAD_DEADLINE_S, requests_per_day: int = 2000,
                 budget: RequestBudget | None = None, clock: Callable[[], float] = time.time):
        if not token:
            raise FreesoundError("no Freesound API token: set it in the environment variable named by "
                                 "[freesound].token_env, or in [freesound].token_file", transient=False)
        if max_download_bytes < 1 or download_deadline_s <= 0:
            raise ValueError("max_download_bytes and download_deadline_s must be positive")
        self.base_url = base_url.rstrip("/")
        self.api_origin = origin(self.base_url)
        self._token = token
        register_secrets([token])                 # every log line and CLI message hides it from now on
        # the Bearer token source for originals: a plain access token, or a provider that refreshes
        # (sao.sources.freesound_oauth); each token it hands out is registered as a secret there
        from .freesound_oauth import FixedAccessToken
        self._oauth = FixedAccessToken(oauth_token) if isinstance(oauth_token, str) and oauth_token else oauth_token
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "sao-crawler/0.1"   # no credential here: see _auth_headers
        self.limiter = RateLimiter(rate_limit_per_minute, rate_period, sleep=sleep)
        # the quota is the API client's (the OAuth2 tokens are issued to it): keyed by the API key's id
        self.credential_id = credential_id(token)
        self.budget = budget or RequestBudget(requests_per_day, clock=clock)
        self.quota_stop: QuotaExhausted | None = None     # the refusal that stopped this client, if one did
        self.quota_refused: list[str] = []                 # URLs not asked for because the quota was spent
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.sleep = sleep
        self.max_download_bytes = int(max_download_bytes)
        self.download_deadline_s = float(download_deadline_s)
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
    def _auth_headers(self, url: str, bearer: bool) -> dict[str, str]:
        """The credential for ``url``: only when it is on the API host (scheme, host and port, as
        requests will connect; an ambiguous URL raises instead of being sent anywhere)."""
        if origin(url) != self.api_origin:
            return {}
        if bearer:
            access = self._oauth.access_token()    # may refresh; an OAuthError says what to do
            register_secrets([access])
            return {"Authorization": f"Bearer {access}"}
        return {"Authorization": f"Token {self._token}"}

    def _get(self, url: str, params: dict | None, *, stream: bool, bearer: bool, timeout: float,
             anonymous: bool = False) -> requests.Response:
        """One GET, following redirects here so each hop gets only the credential its host may see."""
        for _ in range(MAX_REDIRECTS + 1):
            resp = self.session.get(url, params=params, stream=stream, timeout=timeout,
                                    headers={} if anonymous else self._auth_headers(url, bearer),
                                    allow_redirects=False)
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECTS or not location:
                return resp
            resp.close()
            url, params = urljoin(resp.url, location), None
            try:
                request_origin(url)               # checked before the next hop is asked for anything
            except ValueError as exc:
                raise FreesoundError(f"redirect to {short(url)} refused: {exc}", transient=False) from None
            self.stats["redirects"] += 1
        raise FreesoundError(f"GET {url.split('?')[0]}: more than {MAX_REDIRECTS} redirects", transient=False)

    def _request(self, url: str, params: dict | None = None, *, stream: bool = False, bearer: bool = False,
                 limited: bool = True, deadline: float | None = None,
                 anonymous: bool = False) -> requests.Response:
        """One GET with retries. ``limited``: an API request, taken from the budget and paced by the
        limiter. ``anonymous``: no credential at all, even on the API's host (the website's pages are
        not the API, and the key is for the API only)."""
        origin(url)                               # an ambiguous or non-http(s) URL is never requested
        attempt = 0
        where = url.split("?")[0]
        while True:
            if limited:
                # a spent day never waits for a minute slot; the request is counted only once its slot
                # comes, so the budget's day window starts when the server's does
                refusal = self.budget.refusal()
                if refusal is None:
                    self.limiter.acquire()
                    refusal = self.budget.take()
                if refusal is not None:
                    self.quota_refused.append(where)
                    self.stats["quota_refused"] += 1
                    stop = QuotaExhausted(
                        f"GET {where} not sent: {refusal.why}; the next request is allowed at "
                        f"{utc(refusal.next_allowed):%Y-%m-%d %H:%M:%S} UTC", scope=refusal.scope,
                        next_allowed=refusal.next_allowed, by_server=False)
                    if self.quota_stop is None or not self.quota_stop.by_server:   # the server's word is kept
                        self.quota_stop = stop
                    raise stop
            self.stats["requests"] += 1
            timeout = self.timeout
            if deadline is not None:
                timeout = max(0.05, min(timeout, deadline - time.monotonic()))
            try:
                resp = self._get(url, params, stream=stream, bearer=bearer, timeout=timeout, anonymous=anonymous)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, retry_after = f"{type(exc).__name__}", None
            else:
                if resp.status_code < 400:
                    return resp
                detail = _detail(resp, stream)
                if resp.status_code == 429 and limited:
                    self.budget.refund()           # a throttled request is not counted by the server
                    self._throttled(resp, where, detail)
                if resp.status_code != 429 and resp.status_code < 500:
                    resp.close()
                    raise FreesoundError(f"GET {where} failed with HTTP {resp.status_code}: {detail}",
                                         resp.status_code)
                problem, retry_after = f"HTTP {resp.status_code}: {detail}", resp.headers.get("Retry-After")
                self.stats[f"http_{resp.status_code}"] += 1
                resp.close()
            if attempt >= self.retry.max_retries:
                raise FreesoundError(f"GET {where} failed after {attempt + 1} attempts: {problem}")
            delay = self.retry.delay(attempt, retry_after)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise FreesoundError(f"GET {where}: {problem}; no time left before the download deadline")
            log.warning("GET %s: %s; retrying in %.1fs (attempt %d/%d)", where, problem, delay,
                        attempt + 1, self.retry.max_retries)
            self.stats["retries"] += 1
            self.sleep(delay)
            attempt += 1

    def _throttled(self, resp: requests.Response, where: str, detail: str) -> None:
        """A 429 that must not be retried here raises: a suspended credential, or a spent day or hour
        (the budget is blocked until then, so no later request asks again). Per-minute ones return."""
        throttle = parse_throttle(detail)
        if throttle is None or not (throttle.fatal or throttle.waits_long):
            return
        resp.close()
        self.stats["http_429"] += 1
        if throttle.fatal:
            raise FreesoundError(f"GET {where}: the Freesound API credential is suspended (HTTP 429: {detail}); "
                                 "no request will succeed with it: ask Freesound why, or use another key",
                                 429, transient=False)
        until = self.budget.server_refused(throttle)
        note_block(self.credential_id, until, throttle.scope)   # later clients in this process wait too
        self.quota_refused.append(where)          # refused, not failed: the next run asks again
        self.quota_stop = QuotaExhausted(
            f"GET {where}: the Freesound server refused more requests this {throttle.scope} (HTTP 429: {detail}); "
            f"the next request is allowed at about {utc(until):%Y-%m-%d %H:%M:%S} UTC",
            scope=throttle.scope, next_allowed=until, by_server=True)
        raise self.quota_stop

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
        """Yield (page number, page JSON) while the server says there is a next page. Each page is
        asked for by number (``search_page``), never through the ``next`` link (see there)."""
        page = 1
        while True:
            j = self.search_page(filter, page, fields=fields, page_size=page_size, sort=sort, query=query)
            yield page, j
            if not j.get("next"):
                return
            page += 1

    def search_page(self, filter: str, page: int = 1, *, fields: tuple[str, ...] = SEARCH_FIELDS,
                    page_size: int = 150, sort: str = "created_asc", query: str = "") -> dict[str, Any]:
        """One page of a search, asked for by number with this client's own parameters: the server's
        ``next`` link is never followed, since it leaves the ``+`` of ``license:"Sampling+"`` unencoded
        and the server then reads ``Sampling `` (no match, an empty page, no error)."""
        params = {"query": query, "sort": sort, "fields": ",".join(fields), "page_size": page_size, "page": page}
        if filter:           # an empty ``filter=`` is a 400 "Invalid filter." on freesound.org (forms.py)
            params["filter"] = filter
        j = self.get_json(f"{self.base_url}/search/", params)
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
    def _original_response(self, url: str, deadline: float) -> requests.Response:
        """The original's response, with the Bearer token; after a 401 the token is refreshed once
        (it may have expired or been revoked since it was handed out) and the request tried again."""
        from .freesound_oauth import check_api_url
        check_api_url(self.base_url)           # a Bearer token crosses the network only over https
        rejected = self._oauth.access_token()
        try:
            return self._request(url, stream=True, bearer=True, limited=True, deadline=deadline)
        except FreesoundError as exc:
            if exc.status != 401:
                raise
            renewed = self._oauth.after_unauthorized(rejected)
            if renewed is None:
                raise FreesoundError(f"{exc}; the OAuth2 access token was refused and cannot be refreshed: run "
                                     "`sao auth freesound`", 401) from None
            self.stats["oauth_retries"] += 1
        return self._request(url, stream=True, bearer=True, limited=True, deadline=deadline)

    def download(self, url: str, dest_dir: str | os.PathLike, *, ext: str, expected_md5: str | None = None,
                 expected_size: int | None = None, original: bool = False) -> tuple[pathlib.Path, str, int]:
        """Stream ``url`` into a content-addressed store: ``dest_dir/ab/cd/<sha256>.<ext>``.

        ``ext`` must be one of ``sao.fsutil.AUDIO_EXTENSIONS`` (it comes from the API's ``type``).
        The bytes go to a temporary file first; the size cap and the overall deadline are checked
        as bytes arrive; size and md5 are checked when known; only a complete, verified file is
        renamed into place. Returns (path, sha256, size).
        """
        ext = audio_ext(ext)                 # before any request: a bad type never touches the disk
        if original and not self._oauth:
            from .freesound_oauth import OAuthError
            raise OAuthError("original downloads need OAuth2 credentials: run `sao auth freesound` (or set "
                             "the access token in [freesound].oauth_token_env)", transient=False)
        where = url.split("?")[0]
        cap, deadline = self.max_download_bytes, time.monotonic() + self.download_deadline_s
        dest = pathlib.Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        if original:
            resp = self._original_response(url, deadline)
        else:      # previews come from a CDN that the API throttle does not cover
            resp = self._request(url, stream=True, bearer=False, limited=False, deadline=deadline)
        announced = resp.headers.get("Content-Length")
        encoded = bool(resp.headers.get("Content-Encoding"))
        fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".part", dir=dest)
        sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
        try:
            if announced is not None and announced.isdigit() and int(announced) > cap:
                raise FreesoundError(f"download {where}: {announced} bytes announced, exceeds the cap of "
                                     f"{cap} bytes ([freesound].max_download_mb)", transient=False)
            raw = resp.raw
            # read1 returns what has arrived instead of waiting for a full block, so a server that
            # trickles bytes meets the deadline check below (read waits until 64 KiB are in)
            read = raw.read1 if hasattr(raw, "read1") else raw.read
            with os.fdopen(fd, "wb") as f:
                while True:
                    if time.monotonic() > deadline:
                        raise FreesoundError(f"download {where}: deadline of {self.download_deadline_s:g} s "
                                             f"([freesound].download_deadline_s) passed after {size} bytes")
                    try:
                        chunk = read(1 << 16, decode_content=True)
                    except (urllib3.exceptions.HTTPError, requests.RequestException) as exc:
                        raise FreesoundError(f"download {where} failed after {size} bytes: "
                                             f"{redact(type(exc).__name__)}") from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > cap:
                        raise FreesoundError(f"download {where}: exceeds the cap of {cap} bytes "
                                             "([freesound].max_download_mb); stopped reading", transient=False)
                    f.write(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
            if announced is not None and not encoded and announced != str(size):
                raise FreesoundError(f"download {where} truncated: {size} of {announced} bytes")
            if expected_size is not None and size != expected_size:
                raise FreesoundError(f"download {where}: {size} bytes, expected {expected_size}")
            if expected_md5 and md5.hexdigest() != expected_md5:
                raise FreesoundError(f"download {where}: md5 {md5.hexdigest()} != expected {expected_md5}")
            digest = sha.hexdigest()
            final = safe_join(dest, digest[:2], digest[2:4], f"{digest}.{ext}")
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            return final, digest, size
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            resp.close()
