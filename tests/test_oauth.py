"""OAuth2 for Freesound originals: `sao auth freesound` against the replica, the token file's
mode and place, refresh on expiry and after a 401, a refused refresh token, the download stage's
stop after consecutive authentication failures, and credentials never leaving the API host."""
import http.server
import json
import logging
import os
import pathlib
import re
import stat
import threading

import pytest
import requests

from sao.log import QuietHTTPServer
from sao import cli
from sao import config as config_mod
from sao.sources import freesound_oauth as fo
from sao.sources import freesound_token_file as ftf
from sao.sources.audio_download import AUTH_FAILURES_TO_STOP, download_items
from sao.sources.freesound import FreesoundClient, FreesoundError, RetryPolicy
from sao.sources.replica import ReplicaServer, ReplicaSettings

API_TOKEN = "api-tok-5d2e9a-secret"
CLIENT_ID = "sao-test-client"
CLIENT_SECRET = "client-secret-8f3b1c-very-secret"
SECRET_ENV = "SAO_TEST_FREESOUND_CLIENT_SECRET"
TOKEN_POSTS = "/apiv2/oauth2/access_token/"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def server(freesound_sounds):
    settings = ReplicaSettings(api_tokens=[API_TOKEN], oauth_tokens=[], rate_limit_per_minute=0,
                               oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_access_token_lifetime_s=3600)
    with ReplicaServer(freesound_sounds, settings) as srv:
        yield srv


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    monkeypatch.delenv("FREESOUND_OAUTH_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FREESOUND_API_TOKEN", API_TOKEN)


def write_config(project: pathlib.Path, api: str, token_file: str | None) -> pathlib.Path:
    project.mkdir(parents=True, exist_ok=True)
    lines = ["[freesound]", f'base_url = "{api}"', f'oauth_client_id = "{CLIENT_ID}"',
             f'oauth_client_secret_env = "{SECRET_ENV}"', "rate_limit_per_minute = 6000", "max_retries = 1",
             "retry_base_delay_s = 0.01"]
    if token_file is not None:
        lines.append(f"oauth_token_file = {json.dumps(token_file)}")
    (project / "sao.toml").write_text("\n".join(lines) + "\n")
    return project / "sao.toml"


class Browser:
    """The user: reads the authorize URL the command printed, opens it (the replica approves at
    once) and pastes back the code, or the whole redirect URL (optionally tampered with)."""

    def __init__(self, capsys, paste_url: bool = False, tamper_state: bool = False):
        self.capsys, self.paste_url, self.tamper_state = capsys, paste_url, tamper_state
        self.printed = ""

    def readline(self) -> str:
        self.printed += self.capsys.readouterr().out
        url = re.search(r"(http://\S+/oauth2/authorize/\S+)", self.printed).group(1)
        resp = requests.get(url, allow_redirects=False, timeout=10)
        if self.paste_url:
            location = resp.headers["Location"]
            return re.sub(r"state=[^&]+", "state=forged", location) if self.tamper_state else location + "\n"
        return re.search(r'<code id="code">([^<]+)</code>', resp.text).group(1) + "\n"


def stored_secrets(path: pathlib.Path) -> list[str]:
    data = json.loads(path.read_text())
    return [data["access_token"], data["refresh_token"]]


# -- the whole flow -------------------------------------------------------------------------------
def test_sao_auth_freesound_end_to_end(server, env, tmp_path, monkeypatch, capsys, caplog, freesound_sounds):
    token_file = tmp_path / "home" / "tokens" / "fs.json"
    cfg_path = write_config(tmp_path / "project", server.api_url, str(token_file))
    browser = Browser(capsys)
    monkeypatch.setattr("sys.stdin", browser)
    with caplog.at_level(logging.DEBUG):
        assert cli.main(["--config", str(cfg_path), "auth", "freesound"]) == 0
    out = browser.printed + capsys.readouterr().out
    assert "state=" in out and f"client_id={CLIENT_ID}" in out and "response_type=code" in out
    assert f"in {token_file} (mode 0600)" in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert [p.name for p in token_file.parent.iterdir() if not p.name.endswith(".lock")] == ["fs.json"]  # no temp left
    access, refresh = stored_secrets(token_file)
    assert server.oauth.bearer_ok(access) and server.oauth.issued == 1

    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--status"]) == 0
    status = capsys.readouterr()
    assert "valid for 1.0 h more" in status.out and "a refresh token is stored" in status.out

    # the pipeline's client now downloads originals with the stored token
    from sao.sources.freesound_source import make_client
    cfg = config_mod.load(cfg_path)
    client = make_client(cfg)
    s = freesound_sounds[0]
    path, _, size = client.download(f"{server.api_url}/sounds/{s['id']}/download/", tmp_path / "store",
                                    ext=s["type"], expected_md5=s["md5"], original=True)
    assert size == s["filesize"] and path.is_file()
    everything = out + status.out + status.err + caplog.text + repr(client) + repr(client._oauth)
    for secret in (access, refresh, CLIENT_SECRET):
        assert secret not in everything


def test_redirect_url_is_accepted_and_its_state_checked(freesound_sounds, env, tmp_path, monkeypatch, capsys):
    settings = ReplicaSettings(api_tokens=[API_TOKEN], oauth_tokens=[], rate_limit_per_minute=0,
                               oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_redirect_uri="http://127.0.0.1:9/cb")
    with ReplicaServer(freesound_sounds, settings) as srv:
        token_file = tmp_path / "home" / "fs.json"
        cfg_path = write_config(tmp_path / "project", srv.api_url, str(token_file))
        monkeypatch.setattr("sys.stdin", Browser(capsys, paste_url=True, tamper_state=True))
        assert cli.main(["--config", str(cfg_path), "auth", "freesound"]) == 1
        assert "'state' is not the one this command sent" in capsys.readouterr().err
        assert not token_file.exists() and srv.request_counts[TOKEN_POSTS] == 0
        monkeypatch.setattr("sys.stdin", Browser(capsys, paste_url=True))
        assert cli.main(["--config", str(cfg_path), "auth", "freesound"]) == 0
        assert token_file.is_file() and srv.oauth.issued == 1


def test_code_argument_spent_code_and_bad_secret(server, env, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "home" / "fs.json"
    cfg_path = write_config(tmp_path / "project", server.api_url, str(token_file))
    code = server.oauth.issue_code(CLIENT_ID)
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", code]) == 1
    err = capsys.readouterr().err
    assert "HTTP 401 (invalid_client)" in err and "sao auth freesound" in err and not token_file.exists()
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    code = server.oauth.issue_code(CLIENT_ID)
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", code]) == 0
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", code]) == 1   # a code works once
    assert "HTTP 400 (invalid_grant)" in capsys.readouterr().err
    monkeypatch.delenv(SECRET_ENV)
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", code]) == 2
    assert f"environment variable {SECRET_ENV}" in capsys.readouterr().err


@pytest.mark.parametrize("pasted", ["abc def ghi", "code\r\nX-Evil: 1", "short", "", "x" * 5000, "ab%0d%0acdefgh"])
def test_hostile_codes_are_refused_before_any_request(server, env, tmp_path, capsys, pasted):
    cfg_path = write_config(tmp_path / "project", server.api_url, str(tmp_path / "home" / "fs.json"))
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", pasted]) == 1
    assert "authorization code" in capsys.readouterr().err
    assert server.request_counts[TOKEN_POSTS] == 0


def test_closed_stdin_stores_nothing(server, env, tmp_path, monkeypatch, capsys):
    import io
    token_file = tmp_path / "home" / "fs.json"
    cfg_path = write_config(tmp_path / "project", server.api_url, str(token_file))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["--config", str(cfg_path), "auth", "freesound"]) == 1
    assert "no code given" in capsys.readouterr().err and not token_file.exists()
    assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--status"]) == 1
    assert "no Freesound OAuth2 tokens" in capsys.readouterr().out


# -- where the token file may be, and how it is written -------------------------------------------
def test_token_file_inside_the_project_is_refused(server, env, tmp_path, capsys):
    project = tmp_path / "project"
    for inside in ("tokens.json", str(project / "data" / "t.json"), str(project)):
        cfg_path = write_config(project, server.api_url, inside)
        assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", "abcdefgh1234"]) == 1
        err = capsys.readouterr().err
        assert "is inside the project folder" in err and "oauth_token_file" in err
    assert server.request_counts[TOKEN_POSTS] == 0
    assert [p.name for p in project.rglob("*")] == ["sao.toml"]
    cfg = config_mod.from_dict({"freesound": {"oauth_token_file": str(ftf.PROJECT_CHECKOUT / "x.json")}},
                               root=tmp_path / "elsewhere")
    with pytest.raises(fo.OAuthError, match="inside the sao checkout"):
        ftf.token_path(cfg)


def test_default_token_file_follows_xdg_config_home(env, tmp_path, monkeypatch):
    cfg = config_mod.from_dict({}, root=tmp_path / "project")
    assert ftf.token_path(cfg) == (tmp_path / "xdg" / "sao" / "freesound-oauth.json").resolve()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ftf.token_path(cfg) == (tmp_path / "home" / ".config" / "sao" / "freesound-oauth.json").resolve()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "project" / "cfg"))   # inside the project: refused
    with pytest.raises(fo.OAuthError, match="inside the project folder"):
        ftf.token_path(cfg)


def tokens(api: str, now: float = 1_800_000_000.0, **kw) -> fo.OAuthTokens:
    base = dict(api=api, access_token="a" * 30, refresh_token="r" * 30, expires_at=now + 3600, scope="read write",
                token_type="Bearer", obtained_at=now)
    base.update(kw)
    return fo.OAuthTokens(**base)


def test_token_file_is_0600_whatever_the_umask_and_hostile_files_are_refused(tmp_path):
    store = ftf.TokenStore(tmp_path / "cfg" / "fs.json")
    old = os.umask(0)
    try:
        store.save(tokens("http://127.0.0.1:1/apiv2"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.load().access_token == "a" * 30
    os.chmod(store.path, 0o644)
    with pytest.raises(fo.OAuthError, match="lets others read it"):
        store.load()
    os.chmod(store.path, 0o600)
    link = ftf.TokenStore(tmp_path / "cfg" / "link.json")
    link.path.symlink_to(store.path)
    with pytest.raises(fo.OAuthError, match="not a regular file"):
        link.load()
    for text in ("not json", "[]", json.dumps({"access_token": "a" * 30}),
                 tokens("http://127.0.0.1:1/apiv2", access_token="bad token\r\nX: y").to_json(),
                 tokens("http://127.0.0.1:1/apiv2", expires_at="soon").to_json(),
                 tokens("http://a\\@b/apiv2").to_json()):
        store.path.write_text(text)
        with pytest.raises(FreesoundError, match="token file|refused"):
            store.load()
    assert "a" * 30 not in repr(tokens("x"))


@pytest.mark.parametrize("body, why", [
    ([], "not an object"),
    ({"access_token": "t" * 30, "token_type": "Bearer", "expires_in": "86399"}, "expires_in"),
    ({"access_token": "t" * 30, "token_type": "Bearer", "expires_in": True}, "expires_in"),
    ({"access_token": "t" * 30, "token_type": "Bearer", "expires_in": 10 ** 12}, "expires_in"),
    ({"access_token": "t" * 30, "token_type": "MAC", "expires_in": 60}, "not Bearer"),
    ({"access_token": "t t\nX-Evil: 1" * 3, "token_type": "Bearer", "expires_in": 60}, "not a token"),
    ({"access_token": 12345678, "token_type": "Bearer", "expires_in": 60}, "not a token"),
    ({"access_token": "t" * 30, "refresh_token": ["r"], "token_type": "Bearer", "expires_in": 60}, "not a token"),
    ({"access_token": "t" * 30, "token_type": "Bearer", "expires_in": 60, "scope": "<script>"}, "scope"),
])
def test_hostile_token_answers_are_refused(body, why):
    with pytest.raises(fo.OAuthError, match=why):
        fo.OAuthTokens.from_response(body, "http://127.0.0.1:1/apiv2", 0.0)


def test_oauth_needs_https_except_on_loopback():
    with pytest.raises(fo.OAuthError, match="needs https"):
        fo.authorize_url("http://freesound.org/apiv2", CLIENT_ID)
    url, state = fo.authorize_url("https://freesound.org/apiv2", CLIENT_ID)
    assert url.startswith("https://freesound.org/apiv2/oauth2/authorize/?client_id=sao-test-client&response_type=code")
    assert len(state) >= 24 and state != fo.authorize_url("https://freesound.org/apiv2", CLIENT_ID)[1]
    with pytest.raises(fo.OAuthError, match="client id"):
        fo.authorize_url("https://freesound.org/apiv2", "id&redirect_uri=http://evil")


# -- refresh --------------------------------------------------------------------------------------
def signed_in(server, tmp_path, clock) -> tuple[fo.OAuthTokenProvider, fo.OAuthTokens]:
    server.oauth.clock = clock
    first = fo.exchange_code(server.api_url, CLIENT_ID, CLIENT_SECRET, server.oauth.issue_code(CLIENT_ID), clock=clock)
    store = ftf.TokenStore(tmp_path / "home" / "fs.json")
    store.save(first)
    return fo.OAuthTokenProvider(store, api=server.api_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                 clock=clock), first


def original_url(server, sound) -> str:
    return f"{server.api_url}/sounds/{sound['id']}/download/"


def test_refresh_on_expiry_with_a_simulated_clock(server, tmp_path, freesound_sounds, caplog):
    clock = Clock()
    provider, first = signed_in(server, tmp_path, clock)
    client = FreesoundClient(server.api_url, API_TOKEN, oauth_token=provider)
    s = freesound_sounds[0]
    with caplog.at_level(logging.DEBUG):
        client.download(original_url(server, s), tmp_path / "store", ext=s["type"], original=True)
        assert provider.refreshes == 0 and server.request_counts[TOKEN_POSTS] == 1
        clock.t += 3600 - fo.REFRESH_MARGIN_S + 1          # about to expire: refreshed before it is used
        client.download(original_url(server, s), tmp_path / "store", ext=s["type"], original=True)
    assert provider.refreshes == 1 and server.oauth.refreshed == 1
    second = provider.store.load()
    assert second.access_token != first.access_token and second.refresh_token != first.refresh_token
    assert second.expires_at == clock.t + 3600 and stat.S_IMODE(provider.store.path.stat().st_mode) == 0o600
    assert not server.oauth.bearer_ok(first.access_token)       # a refresh revokes the old access token
    from sao.log import redact
    assert redact(f"got {second.access_token} {second.refresh_token}") == "got *** ***"   # new tokens are secrets
    clock.t += 3600                                             # expired on the server too
    assert not server.oauth.bearer_ok(second.access_token)
    assert provider.access_token() != second.access_token and provider.refreshes == 2
    for secret in (first.access_token, first.refresh_token, second.access_token, second.refresh_token):
        assert secret not in caplog.text


def test_a_401_refreshes_once_then_retries(server, tmp_path, freesound_sounds):
    clock = Clock()
    provider, first = signed_in(server, tmp_path, clock)
    client = FreesoundClient(server.api_url, API_TOKEN, oauth_token=provider)
    server.oauth.revoke_access(first.access_token)              # still "valid" by its expiry, refused by the server
    s = freesound_sounds[1]
    path, _, _ = client.download(original_url(server, s), tmp_path / "store", ext=s["type"], expected_md5=s["md5"],
                                 original=True)
    assert path.is_file() and provider.refreshes == 1 and client.stats["oauth_retries"] == 1
    # a server that refuses the new token too: one refresh per 401, then the 401 is reported
    server.inject_fault(r"/download/", 401, times=2, detail="Invalid token.")
    with pytest.raises(FreesoundError, match="HTTP 401") as exc:
        client.download(original_url(server, s), tmp_path / "store", ext=s["type"], original=True)
    assert exc.value.status == 401 and provider.refreshes == 2


def test_another_process_refreshed_first_so_its_tokens_are_used(server, tmp_path, freesound_sounds):
    clock = Clock()
    provider, first = signed_in(server, tmp_path, clock)
    other = fo.OAuthTokenProvider(provider.store, api=server.api_url, client_id=CLIENT_ID,
                                  client_secret=CLIENT_SECRET, clock=clock)
    assert provider.access_token() == other.access_token() == first.access_token
    clock.t += 3600
    renewed = other.access_token()                   # spends the refresh token
    assert provider.access_token() == renewed        # re-reads the file instead of spending it again
    assert server.oauth.refreshed == 1 and provider.refreshes == 0


def test_a_refused_refresh_token_is_a_clear_error_and_stops(server, tmp_path, freesound_sounds, caplog):
    clock = Clock()
    provider, first = signed_in(server, tmp_path, clock)
    provider.store.save(tokens(server.api_url, clock.t - 3610, access_token="x" * 30, refresh_token="spent" * 6))
    with pytest.raises(fo.OAuthError, match=r"invalid_grant.*refresh token was refused.*sao auth freesound"):
        provider.access_token()
    posts = server.request_counts[TOKEN_POSTS]
    with pytest.raises(fo.OAuthError, match="sao auth freesound"):
        provider.access_token()                      # remembered: the server is not asked again
    assert server.request_counts[TOKEN_POSTS] == posts
    # the download stage stops at the first such failure; the items stay pending
    client = FreesoundClient(server.api_url, API_TOKEN, oauth_token=provider)
    with caplog.at_level(logging.ERROR):
        done, st = download_items(client, pending_items(server, freesound_sounds[:5]), tmp_path / "store",
                                  originals=True, show_progress=False)
    assert done == [] and st.failed == 1 and "sao auth freesound" in st.stopped and "4 more item(s)" in st.stopped
    assert server.request_counts[TOKEN_POSTS] == posts and sum(
        n for p, n in server.request_counts.items() if p.endswith("/download/")) == 0
    assert "stopped after 1 authentication failure" in caplog.text and "spent" not in caplog.text


def test_no_client_secret_for_a_refresh_names_the_variable(server, tmp_path):
    clock = Clock()
    provider, _ = signed_in(server, tmp_path, clock)
    needy = fo.OAuthTokenProvider(provider.store, api=server.api_url, client_id=CLIENT_ID, client_secret=None,
                                  secret_env=SECRET_ENV, clock=clock)
    clock.t += 3600
    with pytest.raises(fo.OAuthError, match=SECRET_ENV):
        needy.access_token()


def test_tokens_from_another_api_are_never_sent(server, tmp_path, freesound_sounds):
    store = ftf.TokenStore(tmp_path / "home" / "fs.json")
    store.save(tokens("https://freesound.org/apiv2", 1e12))
    provider = fo.OAuthTokenProvider(store, api=server.api_url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    client = FreesoundClient(server.api_url, API_TOKEN, oauth_token=provider)
    with pytest.raises(fo.OAuthError, match="issued by https://freesound.org/apiv2"):
        client.download(original_url(server, freesound_sounds[0]), tmp_path / "store", ext="ogg", original=True)
    assert sum(n for p, n in server.request_counts.items() if p.endswith("/download/")) == 0


# -- the download stage ---------------------------------------------------------------------------
def pending_items(server, sounds) -> list[dict]:
    return [{"recording_id": f"freesound:{s['id']}", "audio_url": original_url(server, s), "preview_url": None,
             "md5": s["md5"], "duration": s["duration"], "filesize": s["filesize"], "type": s["type"]}
            for s in sounds]


def test_originals_stop_after_consecutive_auth_failures(server, tmp_path, freesound_sounds, caplog):
    client = FreesoundClient(server.api_url, API_TOKEN, oauth_token="expired-token-0123456789")
    items = pending_items(server, freesound_sounds[:8])
    with caplog.at_level(logging.WARNING):
        done, st = download_items(client, items, tmp_path / "store", originals=True, show_progress=False)
    downloads = sum(n for p, n in server.request_counts.items() if p.endswith("/download/"))
    assert done == [] and downloads == AUTH_FAILURES_TO_STOP == st.failed == len(st.failures)
    assert "sao auth freesound" in st.stopped and f"{8 - AUTH_FAILURES_TO_STOP} more item(s) stay pending" in st.stopped
    assert "expired-token-0123456789" not in caplog.text + st.stopped + json.dumps(st.failures)


def test_auth_failures_that_are_not_consecutive_do_not_stop(freesound_sounds, tmp_path):
    settings = ReplicaSettings(api_tokens=[API_TOKEN], oauth_tokens=["fixed-oauth-token-42"], rate_limit_per_minute=0)
    with ReplicaServer(freesound_sounds, settings) as srv:
        sounds = freesound_sounds[:6]
        for s in (sounds[0], sounds[1], sounds[3], sounds[4]):
            srv.inject_fault(rf"/sounds/{s['id']}/download/", 401, detail="Invalid token.")
        client = FreesoundClient(srv.api_url, API_TOKEN, oauth_token="fixed-oauth-token-42")
        done, st = download_items(client, pending_items(srv, sounds), tmp_path / "store", originals=True,
                                  show_progress=False)
    assert st.stopped == "" and st.failed == 4 and [d["recording_id"] for d in done] == [
        f"freesound:{sounds[2]['id']}", f"freesound:{sounds[5]['id']}"]


# -- credentials go to the API host only ----------------------------------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    """Both hosts of the cross-host tests: "api" redirects and links to "other", which records what
    it was sent."""

    def log_message(self, *a):
        pass

    def _send(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if srv.role == "api" and self.path.startswith("/apiv2/sounds/1/download/"):
            return self._send(302, headers={"Location": f"{srv.other}/file.ogg"})
        if srv.role == "api" and self.path.startswith("/apiv2/search/"):
            last = "page=2" in self.path
            page = {"count": 1, "results": [], "next": None if last else f"{srv.other}/apiv2/search/?page=2"}
            return self._send(200, json.dumps(page).encode(), {"Content-Type": "application/json"})
        if self.path.startswith("/apiv2/search/"):
            return self._send(200, b'{"count": 1, "results": [], "next": null}', {"Content-Type": "application/json"})
        return self._send(200, b"OggS" + b"\0" * 60, {"Content-Type": "audio/ogg"})

    def do_POST(self):  # noqa: N802
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        srv.seen.append((self.command, self.path, body.decode()))
        if srv.role == "api":
            return self._send(307, headers={"Location": f"{srv.other}/apiv2/oauth2/access_token/"})
        return self._send(200, b'{"access_token": "stolen-token-123", "token_type": "Bearer", "expires_in": 60}')


@pytest.fixture
def two_hosts():
    servers = []
    for role in ("other", "api"):
        s = QuietHTTPServer(("127.0.0.1", 0), _Recorder)
        s.role, s.seen, s.daemon_threads = role, [], True
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    other, api = servers
    other_url = f"http://127.0.0.1:{other.server_address[1]}"
    api.other = other_url
    yield api, other, f"http://127.0.0.1:{api.server_address[1]}/apiv2"
    for s in servers:
        s.shutdown()
        s.server_close()


def test_redirects_and_next_links_to_another_host_get_no_credential(two_hosts, tmp_path):
    api, other, api_url = two_hosts
    bearer = "bearer-token-7e1f0c-secret"
    client = FreesoundClient(api_url, API_TOKEN, oauth_token=bearer, retry=RetryPolicy(max_retries=0))
    path, _, _ = client.download(f"{api_url}/sounds/1/download/", tmp_path / "store", ext="ogg", original=True)
    assert path.is_file()
    assert api.seen[0][2] == f"Bearer {bearer}"                  # the API host gets it...
    assert other.seen == [("GET", "/file.ogg", None)]            # ...the redirect's host does not
    # a next link to another host is never followed: page 2 is asked of the API host, with its own parameters
    pages = list(client.search_pages(""))
    assert len(pages) == 2 and other.seen == [("GET", "/file.ogg", None)] and api.seen[-1][2] == f"Token {API_TOKEN}"
    assert "page=2" in api.seen[-1][1]


def test_the_token_endpoint_never_follows_a_redirect(two_hosts):
    api, other, api_url = two_hosts
    with pytest.raises(fo.OAuthError, match="HTTP 307"):
        fo.exchange_code(api_url, CLIENT_ID, CLIENT_SECRET, "code-abcdef-123")
    assert other.seen == [] and CLIENT_SECRET in api.seen[0][2]   # the secret went to the API host only


# -- the replica's provider -----------------------------------------------------------------------
def test_replica_codes_expire_and_tokens_expire(server):
    clock = Clock()
    server.oauth.clock = clock
    post = lambda **form: requests.post(f"{server.api_url}/oauth2/access_token/", data=form, timeout=10)  # noqa: E731
    good = dict(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="authorization_code")
    code = server.oauth.issue_code(CLIENT_ID)
    clock.t += fo.CODE_LIFETIME_S
    r = post(**good, code=code)
    assert (r.status_code, r.json()) == (400, {"error": "invalid_grant"})
    assert post(**{**good, "client_secret": "nope"}, code=code).json() == {"error": "invalid_client"}
    assert post(**{**good, "grant_type": "password"}).json() == {"error": "unsupported_grant_type"}
    other_client = server.oauth.issue_code("someone-else")
    assert post(**good, code=other_client).json() == {"error": "invalid_grant"}
    r = post(**good, code=server.oauth.issue_code(CLIENT_ID))
    body = r.json()
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert set(body) == {"access_token", "expires_in", "token_type", "scope", "refresh_token"}
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer"
    url = f"{server.api_url}/sounds/100001/download/"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    assert requests.get(url, headers=auth, timeout=10).status_code == 200
    assert requests.get(f"{server.api_url}/sounds/100001/", headers=auth, timeout=10).status_code == 200
    clock.t += 3600
    r = requests.get(url, headers=auth, timeout=10)
    assert r.status_code == 401 and r.json() == {"detail": "Invalid token."}
    r = requests.get(f"{server.api_url}/oauth2/authorize/?client_id=unknown&response_type=code", timeout=10)
    assert r.status_code == 400 and "invalid_client_id" in r.text
    assert requests.post(f"{server.api_url}/search/", data={}, timeout=10).status_code == 405


def test_auth_commands_have_help(capsys):
    for argv in (["auth", "--help"], ["auth", "freesound", "--help"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 0
    assert "--code" in capsys.readouterr().out


def test_download_stage_stops_on_a_refused_refresh_and_resumes_after_sign_in(freesound_sounds, tmp_path,
                                                                             tmp_path_factory, monkeypatch, capsys):
    """The stage end to end: an expired token whose refresh token the server refuses stops the
    originals download at once, nothing is lost, and after `sao auth freesound` the next run fetches
    every pending item."""
    from sao.catalog import Catalog
    from tests.conftest import flow_config, run_stage
    token_file = tmp_path_factory.mktemp("home") / "fs.json"
    sounds = [s for s in freesound_sounds if "publicdomain/zero" in s["license"]][:4]
    settings = ReplicaSettings(api_tokens=[API_TOKEN], oauth_tokens=[], rate_limit_per_minute=0,
                               oauth_clients={CLIENT_ID: CLIENT_SECRET})
    monkeypatch.setenv("FREESOUND_API_TOKEN", API_TOKEN)
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)
    monkeypatch.delenv("FREESOUND_OAUTH_TOKEN", raising=False)
    with ReplicaServer(sounds, settings) as srv:
        cfg_path = flow_config(tmp_path, freesound={"download_originals": True, "oauth_client_id": CLIENT_ID,
                                                    "oauth_client_secret_env": SECRET_ENV, "base_url": srv.api_url,
                                                    "oauth_token_file": str(token_file), "retry_base_delay_s": 0.01})
        cfg = config_mod.load(cfg_path)
        run_stage(cfg, "crawl_freesound", base_url=srv.api_url)
        run_stage(cfg, "license_gate")
        ftf.TokenStore(token_file).save(tokens(srv.api_url, 0.0, refresh_token="revoked-refresh-token-1"))
        first = run_stage(cfg, "download", base_url=srv.api_url).details
        assert first["downloaded"] == 0 and first["failed"] == 1 and srv.request_counts[TOKEN_POSTS] == 1
        assert "sao auth freesound" in next(iter(first["failures"].values()))
        assert len(first["stopped"]) == 1 and "sao auth freesound" in first["stopped"][0]    # the stage says why
        assert sum(n for p, n in srv.request_counts.items() if p.endswith("/download/")) == 0
        code = srv.oauth.issue_code(CLIENT_ID)
        assert cli.main(["--config", str(cfg_path), "auth", "freesound", "--code", code]) == 0
        second = run_stage(cfg, "download", base_url=srv.api_url).details
        assert second["downloaded"] == len(sounds) and second["failed"] == 0 and "stopped" not in second
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        assert cat.query("SELECT count(*) AS n FROM recordings WHERE audio_path IS NULL")[0]["n"] == 0
    assert CLIENT_SECRET not in capsys.readouterr().out


def test_a_plain_bearer_token_is_never_sent_over_plain_http_off_loopback(tmp_path):
    client = FreesoundClient("http://freesound.example/apiv2", API_TOKEN, oauth_token="plain-bearer-0123456789")
    with pytest.raises(fo.OAuthError, match="needs https"):
        client.download("http://freesound.example/apiv2/sounds/1/download/", tmp_path, ext="ogg", original=True)
    assert client.stats["requests"] == 0


def test_default_token_file_is_allowed_when_the_project_folder_is_home(env, tmp_path, monkeypatch):
    # `sao auth freesound` run from the home folder with no config file: the project folder is the home
    # folder, and ~/.config/sao/ below it is still where the token belongs; elsewhere in home is refused
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    cfg = config_mod.from_dict({}, root=home)
    assert ftf.token_path(cfg) == (home / ".config" / "sao" / "freesound-oauth.json").resolve()
    cfg.freesound.oauth_token_file = str(home / "notes" / "fs.json")
    with pytest.raises(fo.OAuthError, match="inside the project folder"):
        ftf.token_path(cfg)
