"""OAuth2 for Freesound's original downloads: the authorization-code grant, refresh, a token file
and the token provider the client asks for a current access token.

Freesound (``apiv2/oauth2_urls.py``, django-oauth-toolkit with ``freesound/settings.py``): the user
opens ``<api>/oauth2/authorize/?client_id=..&response_type=code&state=..``, approves, and gets a
code that lives 10 minutes; ``POST <api>/oauth2/access_token/`` (form fields client_id,
client_secret, grant_type=authorization_code, code) answers ``{"access_token", "expires_in": 86399,
"refresh_token", "scope", "token_type": "Bearer"}``; the same endpoint with
grant_type=refresh_token refreshes (the old refresh token is then spent). Errors are oauthlib's
``{"error": "invalid_grant", "error_description": ...}``. OAuth2 calls must use HTTPS on the real
server; plain http is allowed only on a loopback host (the replica).

The token file (sao.sources.freesound_token_file) is JSON, mode 0600 from its creation (written to a temporary name, then renamed),
and never inside the project: a path inside the config's folder (``cfg.root``) or this checkout
is refused, since a token there is one ``git add`` away from being published. It records the API
it was issued by, so a token is only ever sent to that API. Every token is registered with
``sao.log.register_secrets`` as soon as it is known, and no message here contains one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pathlib
import re
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

import requests
import urllib3

from ..log import redact, register_secrets
from .freesound import FreesoundError, origin

if TYPE_CHECKING:
    from .freesound_token_file import TokenStore

log = logging.getLogger(__name__)

AUTHORIZE_PATH = "/oauth2/authorize/"
ACCESS_TOKEN_PATH = "/oauth2/access_token/"
CODE_LIFETIME_S = 600                    # AUTHORIZATION_CODE_EXPIRE_SECONDS on freesound.org
REFRESH_MARGIN_S = 300.0                 # refresh this long before expiry: a download may take minutes
MAX_EXPIRES_IN_S = 400 * 86400           # an answer claiming more is not believed
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# django-oauth-toolkit issues 30 characters of [A-Za-z0-9]; this also admits base64url and JWT-like
# values, and nothing that could break a header (no space, no control character, no comma)
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{8,4096}={0,2}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")
_FILE_KEYS = {"api", "access_token", "refresh_token", "expires_at", "scope", "token_type", "obtained_at"}
_RESPONSE_KEYS = {"access_token", "refresh_token", "expires_in", "scope", "token_type"}


class OAuthError(FreesoundError):
    """An OAuth2 step failed; the message says why and what to do (never a token). Not transient
    unless the token endpoint gave no answer or a 5xx."""

    def __init__(self, message: str, status: int | None = None, *, transient: bool = False):
        super().__init__(message, status, transient=transient)


def _checked_token(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        kind = type(value).__name__ if not isinstance(value, str) else f"{len(value)} characters"
        raise OAuthError(f"{what}: not a token (expected 8-4096 characters of [A-Za-z0-9._~+/-], got {kind})",
                         transient=False)
    return value


def check_client_id(value: Any) -> str:
    if not isinstance(value, str) or not _CLIENT_ID.fullmatch(value):
        raise OAuthError("[freesound].oauth_client_id: expected the client id of your Freesound API credential "
                         "(https://freesound.org/apiv2/apply; letters, digits, '.', '_', '~', '-')", transient=False)
    return value


def check_api_url(base_url: str) -> str:
    """``base_url`` without a trailing slash; OAuth2 needs https except on a loopback host."""
    scheme, host, _ = origin(base_url)
    if scheme != "https" and host not in LOOPBACK_HOSTS and not host.startswith("127."):
        raise OAuthError(f"{base_url}: OAuth2 needs https (Freesound refuses it over plain http, and the "
                         "client secret and tokens must not cross the network in clear)", transient=False)
    return base_url.rstrip("/")


# -- the authorize step ------------------------------------------------------------------------
def authorize_url(base_url: str, client_id: str, state: str | None = None) -> tuple[str, str]:
    """(URL the user opens to approve access, the ``state`` put in it: random unless given)."""
    state = state or secrets.token_urlsafe(24)
    query = urlencode({"client_id": check_client_id(client_id), "response_type": "code", "state": state})
    return f"{check_api_url(base_url)}{AUTHORIZE_PATH}?{query}", state


def code_from_input(text: Any, state: str | None) -> str:
    """The authorization code from what the user pasted: the bare code Freesound's page shows, or
    the whole redirect URL (``...?code=..&state=..``), whose ``state`` must then be ours."""
    from urllib.parse import parse_qs, urlsplit
    if not isinstance(text, str) or not text.strip():
        raise OAuthError("no authorization code given", transient=False)
    text = text.strip()
    if "?" in text or text.startswith(("http://", "https://")):
        query = parse_qs(urlsplit(text).query)
        codes, states = query.get("code", []), query.get("state", [])
        if query.get("error"):
            err = query["error"][0]
            err = err if _ERROR_CODE.fullmatch(err) else "unreadable error"
            raise OAuthError(f"the authorization was not granted ({err})", transient=False)
        if len(codes) != 1:
            raise OAuthError("the pasted URL holds no single 'code' parameter", transient=False)
        if state is not None and states != [state]:
            raise OAuthError("the pasted URL's 'state' is not the one this command sent: it was not the answer "
                             "to this authorization request; start again", transient=False)
        text = codes[0]
    try:
        code = _checked_token(text, "authorization code")
    except OAuthError:
        raise OAuthError("the authorization code is not valid: paste exactly the code Freesound shows "
                         "(letters and digits)", transient=False) from None
    register_secrets([code])
    return code


# -- tokens ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OAuthTokens:
    api: str                        # the API base URL that issued them: they are sent nowhere else
    access_token: str
    refresh_token: str | None
    expires_at: float               # seconds since the epoch
    scope: str = ""
    token_type: str = "Bearer"
    obtained_at: float = 0.0

    def __repr__(self) -> str:      # a dataclass repr would print the tokens
        return f"OAuthTokens(api={self.api!r}, expires_at={self.expires_at:.0f}, tokens=***)"

    def expires_in(self, now: float) -> float:
        return self.expires_at - now

    @classmethod
    def from_response(cls, body: Any, api: str, now: float) -> "OAuthTokens":
        """Tokens from the token endpoint's JSON, every field checked."""
        where = f"{api}{ACCESS_TOKEN_PATH}"
        if not isinstance(body, dict):
            raise OAuthError(f"{where}: answer is JSON {type(body).__name__}, not an object", transient=False)
        access = _checked_token(body.get("access_token"), f"{where}: access_token")
        refresh = body.get("refresh_token")
        refresh = None if refresh is None else _checked_token(refresh, f"{where}: refresh_token")
        register_secrets([access, refresh])
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise OAuthError(f"{where}: token_type {str(token_type)[:40]!r} is not Bearer", transient=False)
        expires_in = body.get("expires_in")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 1 <= expires_in <= MAX_EXPIRES_IN_S:
            raise OAuthError(f"{where}: expires_in {str(expires_in)[:40]!r} is not a whole number of seconds "
                             f"between 1 and {MAX_EXPIRES_IN_S}", transient=False)
        scope = body.get("scope", "")
        if not isinstance(scope, str) or not re.fullmatch(r"[A-Za-z0-9 _:.-]{0,200}", scope):
            raise OAuthError(f"{where}: scope is not a short list of words", transient=False)
        return cls(api=api, access_token=access, refresh_token=refresh, expires_at=now + expires_in,
                   scope=scope, token_type="Bearer", obtained_at=now)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_file_text(cls, text: str, path: pathlib.Path) -> "OAuthTokens":
        try:
            data = json.loads(text)
        except ValueError:
            raise OAuthError(f"token file {path}: not JSON; run `sao auth freesound` again", transient=False) from None
        if not isinstance(data, dict) or set(data) != _FILE_KEYS:
            raise OAuthError(f"token file {path}: not a sao token file (expected the keys {sorted(_FILE_KEYS)}); "
                             "run `sao auth freesound` again", transient=False)
        access = _checked_token(data["access_token"], f"token file {path}: access_token")
        refresh = data["refresh_token"]
        refresh = None if refresh is None else _checked_token(refresh, f"token file {path}: refresh_token")
        register_secrets([access, refresh])
        for key in ("expires_at", "obtained_at"):
            if not isinstance(data[key], (int, float)) or isinstance(data[key], bool):
                raise OAuthError(f"token file {path}: {key} is not a number", transient=False)
        if not isinstance(data["api"], str) or not isinstance(data["scope"], str) or data["token_type"] != "Bearer":
            raise OAuthError(f"token file {path}: api, scope or token_type malformed", transient=False)
        try:
            origin(data["api"])
        except FreesoundError as exc:
            raise OAuthError(f"token file {path}: api {exc}", transient=False) from None
        return cls(api=data["api"], access_token=access, refresh_token=refresh, expires_at=float(data["expires_at"]),
                   scope=data["scope"], token_type="Bearer", obtained_at=float(data["obtained_at"]))


# -- the token endpoint ------------------------------------------------------------------------
def _post_token(session: requests.Session, api: str, form: dict[str, str], timeout: float, now: float,
                what: str) -> OAuthTokens:
    """One POST to the token endpoint. Never follows a redirect (the client secret would follow it);
    an error answer becomes an OAuthError naming oauthlib's error code."""
    url = f"{check_api_url(api)}{ACCESS_TOKEN_PATH}"
    register_secrets([form.get("client_secret"), form.get("code"), form.get("refresh_token")])
    try:
        resp = session.post(url, data=form, timeout=timeout, allow_redirects=False, stream=True,
                            headers={"Accept": "application/json", "User-Agent": "sao-crawler/0.1"})
    except requests.RequestException as exc:
        raise OAuthError(f"{what}: POST {url} failed: {type(exc).__name__}", transient=True) from None
    with contextlib.closing(resp):
        try:                       # at most 64 KiB: a token answer is a few hundred bytes
            data = resp.raw.read(65536, decode_content=True)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise OAuthError(f"{what}: reading the answer of {url} failed: {type(exc).__name__}",
                             transient=True) from None
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if resp.status_code == 200:
            return OAuthTokens.from_response(body, api, now)
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
        detail = body.get("error_description") or body.get("detail") if isinstance(body, dict) else None
        detail = redact(re.sub(r"[^\x20-\x7e]", "?", detail))[:200] if isinstance(detail, str) else ""
        told = f"{error}{': ' + detail if detail else ''}" if error else (detail or "no explanation")
        raise OAuthError(f"{what}: {url} answered HTTP {resp.status_code} ({told})", resp.status_code,
                         transient=resp.status_code >= 500 or resp.status_code == 429)


def _grant(api: str, form: dict[str, str], what: str, refused: str, *, timeout: float,
           clock: Callable[[], float], session: requests.Session | None) -> OAuthTokens:
    """One token request; a 400/401 is refused for good, with ``refused`` saying what to do."""
    with contextlib.closing(session or requests.Session()) as s:
        try:
            return _post_token(s, api, form, timeout, clock(), what)
        except OAuthError as exc:
            if exc.status in (400, 401):
                raise OAuthError(f"{exc}; {refused}", exc.status, transient=False) from None
            raise


def exchange_code(api: str, client_id: str, client_secret: str, code: str, *, timeout: float = 60.0,
                  clock: Callable[[], float] = time.time, session: requests.Session | None = None) -> OAuthTokens:
    """Tokens for an authorization code (spent by this call)."""
    form = {"client_id": check_client_id(client_id), "client_secret": client_secret,
            "grant_type": "authorization_code", "code": _checked_token(code, "authorization code")}
    return _grant(api, form, "exchanging the authorization code",
                  f"a code works once and for {CODE_LIFETIME_S // 60} minutes, and the client id and secret must be "
                  "those of the credential that authorized it: run `sao auth freesound` again",
                  timeout=timeout, clock=clock, session=session)


def refresh_tokens(api: str, client_id: str, client_secret: str, refresh_token: str, *, timeout: float = 60.0,
                   clock: Callable[[], float] = time.time, session: requests.Session | None = None) -> OAuthTokens:
    """New tokens for a refresh token (which the server then revokes)."""
    form = {"client_id": check_client_id(client_id), "client_secret": client_secret,
            "grant_type": "refresh_token", "refresh_token": _checked_token(refresh_token, "refresh token")}
    return _grant(api, form, "refreshing the Freesound access token",
                  "the stored refresh token was refused (revoked, already used, or another client's): run "
                  "`sao auth freesound` to sign in again", timeout=timeout, clock=clock, session=session)


# -- token providers: what FreesoundClient asks for a Bearer token ----------------------------
class FixedAccessToken:
    """A plain access token (``[freesound].oauth_token_env``): used as is, never refreshed."""

    def __init__(self, token: str, source: str = "the environment"):
        self._token = token
        self.source = source
        register_secrets([token])

    def __repr__(self) -> str:
        return f"FixedAccessToken(source={self.source!r}, token=***)"

    def access_token(self) -> str:
        return self._token

    def after_unauthorized(self, rejected: str) -> str | None:
        """Nothing to refresh: the caller reports the 401."""
        return None


class OAuthTokenProvider:
    """Access tokens from the token file, refreshed when expired or about to expire, and once after
    the server refused one (401). A refused refresh token is remembered: later calls raise the same
    error without asking the server again."""

    def __init__(self, store: TokenStore, *, api: str, client_id: str, client_secret: str | None,
                 secret_env: str = "FREESOUND_CLIENT_SECRET", clock: Callable[[], float] = time.time,
                 margin_s: float = REFRESH_MARGIN_S, timeout: float = 60.0):
        self.store, self.api, self.client_id = store, check_api_url(api), client_id
        self._secret, self.secret_env = client_secret, secret_env
        register_secrets([client_secret])
        self.clock, self.margin_s, self.timeout = clock, margin_s, timeout
        self._lock = threading.Lock()
        self._tokens: OAuthTokens | None = None
        self._refused: OAuthError | None = None
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"OAuthTokenProvider({str(self.store.path)!r}, tokens=***)"

    def _load(self) -> OAuthTokens:
        tokens = self.store.load()
        if tokens is None:
            raise OAuthError(f"no Freesound OAuth2 tokens in {self.store.path}: run `sao auth freesound`",
                             transient=False)
        if tokens.api.rstrip("/") != self.api:
            raise OAuthError(f"token file {self.store.path} holds tokens issued by {tokens.api}, not by {self.api}: "
                             "they are not sent elsewhere; run `sao auth freesound` for this API", transient=False)
        return tokens

    def _fresh(self, tokens: OAuthTokens | None) -> bool:
        return tokens is not None and tokens.expires_in(self.clock()) > self.margin_s

    def access_token(self) -> str:
        with self._lock:
            if self._refused is not None:
                raise self._refused
            if not self._fresh(self._tokens):
                self._tokens = self._load()
                if not self._fresh(self._tokens):
                    self._refresh(self._tokens.access_token)
            return self._tokens.access_token

    def after_unauthorized(self, rejected: str) -> str | None:
        """A new access token after the server refused ``rejected``; None when it cannot be had."""
        with self._lock:
            if self._refused is not None:
                raise self._refused
            if self._tokens is not None and self._tokens.access_token != rejected:
                return self._tokens.access_token          # another thread refreshed already
            self._refresh(rejected)
            return self._tokens.access_token

    def _refresh(self, stale: str) -> None:
        """Refresh under the file lock; first re-read the file, since another process may have
        refreshed (and spent the refresh token we hold) in the meantime."""
        with self.store.locked():
            tokens = self._load()
            if tokens.access_token != stale and self._fresh(tokens):
                self._tokens = tokens
                return
            if not tokens.refresh_token:
                self._refused = OAuthError(f"the Freesound access token in {self.store.path} expired and there is no "
                                           "refresh token: run `sao auth freesound`", 401, transient=False)
                raise self._refused
            if not self._secret:
                raise OAuthError(f"refreshing the Freesound access token needs the client secret in the environment "
                                 f"variable {self.secret_env} (named by [freesound].oauth_client_secret_env)",
                                 transient=False)
            try:
                new = refresh_tokens(self.api, self.client_id, self._secret, tokens.refresh_token,
                                     timeout=self.timeout, clock=self.clock)
            except OAuthError as exc:
                if not exc.transient:
                    self._refused = exc
                raise
            if new.refresh_token is None:      # a server that does not rotate keeps the old one valid
                new = dataclasses.replace(new, refresh_token=tokens.refresh_token)
            self.store.save(new)
            self._tokens = new
            self.refreshes += 1
            log.info("refreshed the Freesound access token (valid for %.1f h; stored in %s)",
                     new.expires_in(self.clock()) / 3600, self.store.path)


def provider_for(cfg, api: str | None = None):
    """The Bearer token source for original downloads: the plain access token in
    ``[freesound].oauth_token_env`` when set; else the token file when it exists and a client id is
    configured; else None (no originals)."""
    from .. import config as config_mod
    fs = cfg.freesound
    plain = config_mod.freesound_oauth_token(cfg)
    if plain:
        return FixedAccessToken(plain, f"${fs.oauth_token_env}")
    if not fs.oauth_client_id:
        return None
    from .freesound_token_file import TokenStore, token_path
    store = TokenStore(token_path(cfg))
    if not store.path.exists() and not store.path.is_symlink():
        return None
    return OAuthTokenProvider(store, api=api or fs.base_url, client_id=check_client_id(fs.oauth_client_id),
                              client_secret=config_mod.freesound_client_secret(cfg),
                              secret_env=fs.oauth_client_secret_env, timeout=float(fs.timeout_s))
