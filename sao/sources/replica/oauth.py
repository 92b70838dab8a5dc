"""The replica's OAuth2 provider: the authorization-code grant as freesound.org runs it
(django-oauth-toolkit: ``apiv2/oauth2_urls.py``, ``OAUTH2_PROVIDER`` in ``freesound/settings.py``).

  GET  /apiv2/oauth2/authorize/?client_id=..&response_type=code&state=..
  POST /apiv2/oauth2/access_token/   form: client_id, client_secret, grant_type=authorization_code, code
                                     or grant_type=refresh_token, refresh_token

Replica-only behaviour: there is no user to sign in and click "Authorize", so the authorize
endpoint approves at once. With ``ReplicaSettings.oauth_redirect_uri`` set it redirects there with
``code`` and ``state`` (as Freesound redirects to an app's callback); otherwise it shows the code
on a page, as Freesound's own "permission granted" page does for apps without a callback.

As on freesound.org: a code lives 10 minutes and works once; an access token lives
``oauth_access_token_lifetime_s`` (a day); a refresh spends the refresh token and revokes the
access token issued with it. Error bodies are oauthlib's: ``{"error": "invalid_grant"}`` (400),
``{"error": "invalid_client"}`` (401), ``unsupported_grant_type`` and ``invalid_request`` (400).
Expiry reads ``ReplicaOAuth.clock`` (wall time; tests replace it). Nothing here logs a token.
"""
from __future__ import annotations

import html
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlencode

if TYPE_CHECKING:
    from .handler import _Handler
    from .server import ReplicaSettings

AUTHORIZE_PATHS = ("/apiv2/oauth2/authorize/", "/apiv2/oauth2/authorize")
ACCESS_TOKEN_PATHS = ("/apiv2/oauth2/access_token/", "/apiv2/oauth2/access_token")
CODE_LIFETIME_S = 600                 # AUTHORIZATION_CODE_EXPIRE_SECONDS
MAX_FORM_BYTES = 16384


def _new_token() -> str:
    return secrets.token_hex(15)      # 30 characters, like django-oauth-toolkit's generator


class ReplicaOAuth:
    """Issued codes, access tokens and refresh tokens, against ``settings.oauth_clients``."""

    def __init__(self, settings: "ReplicaSettings", clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._codes: dict[str, tuple[str, float]] = {}          # code -> (client id, expires at)
        self._access: dict[str, tuple[str, float]] = {}         # access token -> (client id, expires at)
        self._refresh: dict[str, tuple[str, str]] = {}          # refresh token -> (client id, its access token)
        self.issued = 0
        self.refreshed = 0

    # -- state -------------------------------------------------------------------------------------
    def issue_code(self, client_id: str) -> str:
        code = _new_token()
        with self._lock:
            self._codes[code] = (client_id, self.clock() + CODE_LIFETIME_S)
        return code

    def bearer_ok(self, token: str) -> bool:
        """A fixed token of the settings, or an issued access token that has not expired."""
        if token in self.settings.oauth_tokens:
            return True
        with self._lock:
            held = self._access.get(token)
            return held is not None and self.clock() < held[1]

    def credential_of(self, kind: str, value: str) -> str | None:
        """The API client a request's credential belongs to: freesound.org throttles per client, and an
        API key is its client's secret while OAuth2 tokens are issued to its client id (so searches by
        key and originals by Bearer token spend one quota). None when no registered client holds it."""
        if kind == "token":
            for client_id, secret in self.settings.oauth_clients.items():
                if secrets.compare_digest(secret, value):
                    return client_id
            return None
        with self._lock:
            held = self._access.get(value)
        return held[0] if held else None

    def revoke_access(self, token: str) -> None:
        """As a user revoking the app's permission would (tests: a 401 with a still-valid expiry)."""
        with self._lock:
            self._access.pop(token, None)

    def _issue(self, client_id: str) -> dict[str, Any]:
        access, refresh = _new_token(), _new_token()
        lifetime = int(self.settings.oauth_access_token_lifetime_s)
        self._access[access] = (client_id, self.clock() + lifetime)
        self._refresh[refresh] = (client_id, access)
        self.issued += 1
        return {"access_token": access, "expires_in": lifetime, "token_type": "Bearer", "scope": "read write",
                "refresh_token": refresh}

    def token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for a token request."""
        one = {k: v[0] for k, v in form.items() if len(v) == 1}
        if any(len(v) != 1 for v in form.values()):
            return 400, {"error": "invalid_request", "error_description": "Duplicate request parameter."}
        client_id, secret = one.get("client_id", ""), one.get("client_secret", "")
        known = self.settings.oauth_clients.get(client_id)
        if not client_id or known is None or not secrets.compare_digest(known, secret):
            return 401, {"error": "invalid_client"}
        grant = one.get("grant_type")
        if not grant:
            return 400, {"error": "invalid_request", "error_description": "Request is missing grant type."}
        with self._lock:
            now = self.clock()
            if grant == "authorization_code":
                code = one.get("code")
                if not code:
                    return 400, {"error": "invalid_request", "error_description": "Missing code parameter."}
                held = self._codes.pop(code, None)         # a code works once, even when refused for expiry
                if held is None or held[0] != client_id or now >= held[1]:
                    return 400, {"error": "invalid_grant"}
                return 200, self._issue(client_id)
            if grant == "refresh_token":
                refresh = one.get("refresh_token")
                if not refresh:
                    return 400, {"error": "invalid_request", "error_description": "Missing refresh token parameter."}
                held_refresh = self._refresh.get(refresh)
                if held_refresh is None or held_refresh[0] != client_id:
                    return 400, {"error": "invalid_grant"}
                del self._refresh[refresh]
                self._access.pop(held_refresh[1], None)
                self.refreshed += 1
                return 200, self._issue(client_id)
        return 400, {"error": "unsupported_grant_type"}


# -- the two endpoints (called by the request handler) ----------------------------------------
def _page(handler: "_Handler", status: int, text: str, headers: dict[str, str] | None = None) -> None:
    body = f"<!doctype html><html><body>{text}</body></html>".encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def authorize(handler: "_Handler", params: dict[str, list[str]]) -> None:
    oauth = handler.replica.oauth
    client_id = params.get("client_id", [""])[0]
    if client_id not in oauth.settings.oauth_clients:
        return _page(handler, 400, "<h1>Error: invalid_client_id</h1><p>Unknown client id.</p>")
    if params.get("response_type", [""])[0] != "code":
        return _page(handler, 400, "<h1>Error: unsupported_response_type</h1>")
    code = oauth.issue_code(client_id)          # replica-only: approved at once (no user to ask)
    state = params.get("state", [""])[0]
    redirect = oauth.settings.oauth_redirect_uri
    if redirect:
        query = urlencode({"code": code, **({"state": state} if state else {})})
        sep = "&" if "?" in redirect else "?"
        return _page(handler, 302, "Redirecting", {"Location": f"{redirect}{sep}{query}"})
    return _page(handler, 200, "<h1>Permission granted</h1><p>Your authorization code:</p>"
                               f'<p><code id="code">{html.escape(code)}</code></p>'
                               f"<p>It expires in {CODE_LIFETIME_S // 60} minutes.</p>")


def access_token(handler: "_Handler") -> None:
    length = handler.headers.get("Content-Length", "")
    if not length.isdigit() or int(length) > MAX_FORM_BYTES:
        handler.close_connection = True          # an unread body would be read as the next request
        return handler._json(400, {"error": "invalid_request", "error_description": "Bad or missing Content-Length."})
    raw = handler.rfile.read(int(length))
    ctype = handler.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return handler._json(400, {"error": "invalid_request",
                                   "error_description": "Body must be application/x-www-form-urlencoded."})
    try:
        form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        return handler._json(400, {"error": "invalid_request", "error_description": "Malformed form body."})
    status, body = handler.replica.oauth.token(form)
    # tokens must not be cached by anything in between (RFC 6749 5.1)
    return handler._json(status, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})


__all__ = ["ACCESS_TOKEN_PATHS", "AUTHORIZE_PATHS", "CODE_LIFETIME_S", "ReplicaOAuth", "access_token", "authorize"]
