"""Licensing integrity, holes 5, 7 and part of 9: paths built from metadata stay under their root,
credentials go only to the API host, secrets never reach a message, downloads are bounded, and
`sao download` fails loudly when a download failed."""
import datetime as dt
import http.server
import json
import logging
import pathlib
import threading
import time

import pytest

from sao.log import QuietHTTPServer
from sao.sources.freesound import FreesoundClient, FreesoundError, RetryPolicy
from sao.sources.replica import ReplicaServer, ReplicaSettings

SECRET = "tok-9b2e71-never-print-me"
OAUTH = "oauth-55aa1c-never-print-me"


def files_under(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- a tiny loopback server that records what it was sent ------------------------------------------------
class Recorder:
    """Serves canned answers per path and records each request's headers. Routes:
    ``{"/path": (status, headers, body)}``; a body may be a callable(handler) that writes itself."""

    def __init__(self, routes=None):
        self.routes = dict(routes or {})
        self.seen: list[tuple[str, dict]] = []
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                rec.seen.append((path, dict(self.headers)))
                status, headers, body = rec.routes.get(path, (404, {}, b'{"detail": "Not found."}'))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if callable(body):
                    self.end_headers()
                    try:
                        body(self)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = QuietHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def auth_seen(self, path: str) -> list[str | None]:
        return [h.get("Authorization") for p, h in self.seen if p == path]

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def replica(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], oauth_tokens=[OAUTH],
                                                         rate_limit_per_minute=0)) as srv:
        yield srv


def client(base_url, **kw):
    kw.setdefault("retry", RetryPolicy(max_retries=0))
    return FreesoundClient(base_url, SECRET, oauth_token=OAUTH, rate_limit_per_minute=10_000, **kw)


# -- 1. paths from metadata -------------------------------------------------------------------------------
def test_safe_join_refuses_every_way_out(tmp_path):
    from sao.fsutil import UnsafePathError, safe_join, safe_name
    root = tmp_path / "root"
    root.mkdir()
    assert safe_join(root, "ab/cd/x.mp3") == root / "ab" / "cd" / "x.mp3"
    assert safe_join(root, "ab", "cd", "x.mp3") == root / "ab" / "cd" / "x.mp3"
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    for bad in ("../x", "ab/../../x", "/etc/passwd", "ab/.hidden", ".x", "a\0b", "a\\..\\b", "", "x" * 300,
                "link/file.mp3"):
        with pytest.raises(UnsafePathError):
            safe_join(root, bad)
    with pytest.raises(UnsafePathError, match="escapes"):
        safe_join(root, "../../etc/passwd")
    with pytest.raises(UnsafePathError):
        safe_join(root, 7)                              # not a string at all
    for bad in ("a/b", "..", ".", ".env", "x\0", "", "n" * 200, None, 3):
        with pytest.raises(UnsafePathError):
            safe_name(bad)
    assert safe_name("snap-2024.01_a") == "snap-2024.01_a"


def test_audio_extension_is_an_exact_allow_list():
    from sao.fsutil import UnsafePathError, audio_ext
    for ok in ("wav", "flac", "mp3", "ogg", "aiff", "aif"):
        assert audio_ext(ok) == ok
    for bad in ("mp3/../../../x", "m4a", "MP3 ", "wav.exe", ".mp3", "", None, ["mp3"], "mp3\0", "xmp3"):
        with pytest.raises(UnsafePathError, match="type"):
            audio_ext(bad)


def test_download_with_a_traversal_type_writes_nothing_outside_the_store(replica, freesound_sounds, tmp_path):
    store = tmp_path / "a" / "b" / "store"
    s = freesound_sounds[0]
    c = client(replica.api_url)
    with pytest.raises((FreesoundError, ValueError), match="type"):
        c.download(f"{replica.api_url}/sounds/{s['id']}/download/", store, ext="mp3/" + "../" * 6 + "escaped",
                   expected_md5=s["md5"], original=True)
    assert [p for p in files_under(tmp_path) if store not in p.parents] == []
    assert files_under(store) == []


def test_download_items_refuses_a_bad_type_by_name_and_keeps_going(replica, freesound_sounds, tmp_path, caplog):
    from sao.sources.audio_download import download_items
    store = tmp_path / "a" / "b" / "store"
    good, evil = freesound_sounds[0], freesound_sounds[1]

    def item(s, type_):
        return {"recording_id": f"freesound:{s['id']}", "audio_url": f"{replica.api_url}/sounds/{s['id']}/download/",
                "preview_url": None, "md5": s["md5"], "filesize": s["filesize"], "type": type_, "duration": 1.0}
    done, st = download_items(client(replica.api_url), [item(evil, "mp3/" + "../" * 6 + "x"), item(good, good["type"])],
                              store, originals=True, show_progress=False)
    assert [d["recording_id"] for d in done] == [f"freesound:{good['id']}"] and st.failed == 1
    assert "type" in st.failures[f"freesound:{evil['id']}"]
    assert [p for p in files_under(tmp_path) if store not in p.parents] == []
    assert (store / done[0]["audio_path"]).is_file() and not done[0]["audio_path"].startswith("..")


def test_shard_build_name_cannot_leave_the_shards_root(tmp_path):
    from sao.catalog import Catalog
    from sao.fsutil import UnsafePathError
    from sao.shards import PlanConfig, build_shards
    root = tmp_path / "a" / "b" / "shards"
    with Catalog(tmp_path / "c.duckdb") as cat:
        for name in ("../../x", "/tmp/abs-shards", ".hidden", "a/b", "x\0y"):
            with pytest.raises(UnsafePathError):
                build_shards(cat, shards_root=str(root), audio_store=tmp_path / "audio",
                             required_stages=["license_gate"], plan_cfg=PlanConfig(), config_hash="t", name=name)
    assert [p for p in files_under(tmp_path) if p.name != "c.duckdb" and not p.name.startswith("c.duckdb")] == []


def test_shard_build_name_refused_by_the_cli_as_bad_input(tmp_path, capsys):
    from sao import cli
    cfg = tmp_path / "sao.toml"
    cfg.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n[shards]\nroot = "{tmp_path / "s" / "t"}"\n')
    assert cli.main(["--config", str(cfg), "shards", "build", "--name", "../../x"]) == 2
    err = capsys.readouterr().err
    assert "../../x" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_prompt_ids_become_safe_file_names(tmp_path):
    from sao.eval.generation import read_prompts
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": ".hidden", "caption": "rain"}\n')
    with pytest.raises(ValueError, match="hidden"):
        read_prompts(p)


# -- 2. credentials only to the API host ------------------------------------------------------------------
def test_previews_and_next_links_on_another_host_get_no_credential(replica, tmp_path):
    with Recorder({"/previews/1-hq.mp3": (200, {}, b"ID3" + b"\0" * 100),
                   "/search/": (200, {"Content-Type": "application/json"},
                                b'{"count": 0, "next": null, "results": []}')}) as cdn:
        c = client(replica.api_url)
        c.download(f"{cdn.url}/previews/1-hq.mp3", tmp_path, ext="mp3")
        c.download(f"{cdn.url}/previews/1-hq.mp3", tmp_path, ext="mp3", original=True)
        c.get_json(f"{cdn.url}/search/")               # e.g. a "next" link naming another host
        assert cdn.auth_seen("/previews/1-hq.mp3") == [None, None]
        assert cdn.auth_seen("/search/") == [None]
        assert all(SECRET not in json.dumps(h) and OAUTH not in json.dumps(h) for _, h in cdn.seen)
        # the API host itself still gets the token
        assert c.search_page("", page_size=1)["count"] > 0


def test_redirects_to_another_host_drop_the_credential(tmp_path):
    with Recorder({"/file.mp3": (200, {}, b"ID3" + b"\0" * 50)}) as cdn:
        with Recorder() as api:
            api.routes.update({
                "/apiv2/sounds/1/download/": (302, {"Location": f"{cdn.url}/file.mp3", "Content-Length": "0"}, b""),
                "/apiv2/search/": (302, {"Location": f"{cdn.url}/file.mp3", "Content-Length": "0"}, b""),
                "/apiv2/here/": (302, {"Location": "/apiv2/there/", "Content-Length": "0"}, b""),
                "/apiv2/there/": (200, {"Content-Type": "application/json"}, b'{"ok": 1}')})
            c = client(f"{api.url}/apiv2")
            path, _, _ = c.download(f"{api.url}/apiv2/sounds/1/download/", tmp_path, ext="mp3", original=True)
            assert path.read_bytes().startswith(b"ID3")
            c.download(f"{api.url}/apiv2/search/", tmp_path, ext="mp3")
            assert c.get_json(f"{api.url}/apiv2/here/") == {"ok": 1}
            assert api.auth_seen("/apiv2/sounds/1/download/") == [f"Bearer {OAUTH}"]
            assert api.auth_seen("/apiv2/search/") == [f"Token {SECRET}"]
            assert api.auth_seen("/apiv2/there/") == [f"Token {SECRET}"]      # same host: kept
            assert cdn.auth_seen("/file.mp3") == [None, None]


# review finding 3: urlsplit and urllib3 read 'http://A\\@B/' differently (urlsplit: host B, the API;
# urllib3, which opens the connection: host A). The origin is taken from the URL as requests sends it,
# and a URL whose parsers could disagree is refused, on every hop and for every crawled URL.
def test_a_redirect_the_parsers_read_differently_never_carries_the_token(tmp_path):
    with Recorder() as api, Recorder() as attacker, Recorder() as cdn:
        api_port, attacker_port = api.httpd.server_address[1], attacker.httpd.server_address[1]
        sneaky = f"http://127.0.0.1:{attacker_port}\\@127.0.0.1:{api_port}/steal"
        attacker.routes[f"/%5C@127.0.0.1:{api_port}/steal"] = (200, {}, b"ID3" + b"\0" * 9)    # what it would be sent
        cdn.routes["/previews/1.mp3"] = (302, {"Location": sneaky, "Content-Length": "0"}, b"")
        api.routes["/apiv2/sounds/1/download/"] = (302, {"Location": sneaky, "Content-Length": "0"}, b"")
        c = client(f"{api.url}/apiv2")
        for url, original in ((f"{cdn.url}/previews/1.mp3", False), (f"{api.url}/apiv2/sounds/1/download/", True)):
            with pytest.raises(FreesoundError, match="refused") as exc:
                c.download(url, tmp_path, ext="mp3", original=original)
            assert not exc.value.transient and SECRET not in str(exc.value)
        with pytest.raises(FreesoundError, match="backslash"):
            c.download(sneaky, tmp_path, ext="mp3")       # a crawled preview URL of that shape, asked directly
        assert attacker.seen == []                        # never even asked
        assert all(h.get("Authorization") is None for _, h in cdn.seen)
        assert [p for p, _ in api.seen] == ["/apiv2/sounds/1/download/"]
    assert files_under(tmp_path) == []


AMBIGUOUS_URLS = [
    "http://127.0.0.1:1\\@127.0.0.1:2/steal",        # urlsplit: 127.0.0.1:2; urllib3: 127.0.0.1:1
    "http://evil.example\\.freesound.org/x",          # a backslash anywhere in the authority
    "https://user@cdn.freesound.org/x.mp3",            # userinfo: '@' in the authority
    "https://cdn.freesound.org;@evil.example/x.mp3",
    "https://%63dn.freesound.org/x.mp3",               # urllib3 decodes the host, urlsplit does not
    "https://b\u00fccher.example/x.mp3",                # IDNA: requests sends xn--bcher-kva
    "https://cdn.freesound.org/a\nb", "https://cdn.free\tsound.org/x", " https://cdn.freesound.org/x",
    "ftp://cdn.freesound.org/x.mp3", "file:///etc/passwd", "/relative/x.mp3", "https:///x.mp3",
    "https://cdn.freesound.org:99999/x", "https://cdn.freesound.org:x/", 7, None, ["https://a.org/"]]


@pytest.mark.parametrize("url", AMBIGUOUS_URLS)
def test_urls_whose_host_is_ambiguous_are_refused_everywhere(url):
    from sao.sources import record_checks as rc
    from sao.sources.freesound_crawl import sound_to_record
    with pytest.raises(ValueError):
        rc.request_origin(url)
    assert rc.http_url(url)[0] is None and rc.http_url(url)[1]
    if url is None:                                           # absent: no URL, and no problem either
        return
    s = {"id": 5, "name": "n", "username": "u", "license": "http://creativecommons.org/publicdomain/zero/1.0/",
         "previews": {"preview-hq-mp3": url}, "download": url}
    rec, problems = sound_to_record(s, crawl_time=dt.datetime(2026, 1, 1), site="https://freesound.org")
    assert rec["preview_url"] is None and rec["audio_url"] is None
    assert {"previews.preview-hq-mp3", "download"} <= set(problems)


def test_request_origin_is_the_host_requests_connects_to():
    from sao.sources import record_checks as rc
    assert rc.request_origin("https://freesound.org/apiv2") == ("https", "freesound.org", 443)
    assert rc.request_origin("HTTP://CDN.Freesound.ORG:8080/p/1.mp3?x=@y#@z") == ("http", "cdn.freesound.org", 8080)
    assert rc.request_origin("http://[::1]:81/x") == ("http", "::1", 81)
    assert rc.request_origin("https://freesound.org/people/a@b/sounds/1/") == ("https", "freesound.org", 443)



def test_the_fast_origin_path_agrees_with_the_full_one_on_every_url_it_takes():
    # request_origin reads plain URLs off a regular expression and prepares a request only for the
    # rest: on URLs assembled from hostile pieces, whatever the fast path accepts, the full path
    # (requests + urllib3 + urlsplit) must accept with the same origin
    import itertools
    import random
    from sao.sources import record_checks as rc
    schemes = ["http", "https", "HTTP", "ftp", "file", "javascript"]
    hosts = ["freesound.org", "FreeSound.Org", "127.0.0.1", "a-b.c", "-a.com", "a-.com", "a..b", ".a.com", "a.com.",
             "x" * 63 + ".com", "x" * 64 + ".com", "ex%61mple.com", "a_b.com", "[::1]", "xn--bcher-kva.example",
             "b\u00fccher.de", "evil.com@freesound.org", "freesound.org@evil.com", "1.2.3.4.5", "*.a.com", ""]
    ports = ["", ":0", ":1", ":80", ":443", ":8080", ":65535", ":65536", ":99999", ":08", ":-1", ":a", ":"]
    rests = ["", "/", "/s/1/", "?q=1", "#frag", "/p@evil.com", "?x=@y#@z", "/%2e%2e/", "/a\\b", "/ x", ";p", ":80/",
             "@evil.com/", "/\u00e9"]
    rng = random.Random(0)
    combos = list(itertools.product(schemes, hosts, ports, rests))
    fast_taken = 0
    for scheme, host, port, rest in rng.sample(combos, 4000) + [("https", "freesound.org", "", "/s/1/")]:
        url = f"{scheme}://{host}{port}{rest}"
        try:
            full = rc._full_request_origin(url)
        except ValueError:
            full = None
        plain = rc._PLAIN_URL.fullmatch(url)
        if plain and (plain.group(3) is None or int(plain.group(3)) <= 65535) and not any(
                c in url for c in "\\ \t\n"):
            fast_taken += 1
            assert rc.request_origin(url) == full, url
        if full is None:
            with pytest.raises(ValueError):
                rc.request_origin(url)
    assert fast_taken > 100

# -- 3. secrets never printed -----------------------------------------------------------------------------
def _echo_routes():
    echo = json.dumps({"detail": f"Invalid token {SECRET} (bearer {OAUTH})"}).encode()
    return {"/apiv2/search/": (401, {"Content-Type": "application/json"}, echo),
            "/apiv2/sounds/1/": (503, {"Content-Type": "application/json"}, echo)}


def test_a_detail_echoing_the_token_is_redacted_in_exceptions_and_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with Recorder(_echo_routes()) as api:
        c = client(f"{api.url}/apiv2", retry=RetryPolicy(max_retries=1, base_delay=0.01, max_delay=0.01))
        for call in (lambda: c.search_page(""), lambda: c.sound(1)):
            with pytest.raises(FreesoundError) as exc:
                call()
            text = str(exc.value) + repr(exc.value.args)
            assert SECRET not in text and OAUTH not in text and "***" in text
    assert SECRET not in caplog.text and OAUTH not in caplog.text


def test_log_formatter_redacts_registered_secrets(capsys):
    from sao.log import redact, register_secrets, setup_logging
    register_secrets([SECRET, None, "abc"])        # too short to redact safely: ignored
    assert redact(f"x {SECRET} y") == "x *** y"
    setup_logging("INFO")
    try:
        logging.getLogger("sao.test").warning("server said %s", f"bad {SECRET}")
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            logging.getLogger("sao.test").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "server said bad ***" in err and "boom ***" in err and SECRET not in err


def test_cli_error_output_never_shows_the_token(tmp_path, capsys, monkeypatch):
    from sao import cli
    monkeypatch.setenv("SAO_TEST_TOKEN", SECRET)
    cfg = tmp_path / "sao.toml"
    cfg.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n'
                   '[freesound]\ntoken_env = "SAO_TEST_TOKEN"\nmax_retries = 0\n')
    with Recorder(_echo_routes()) as api:
        rc = cli.main(["--config", str(cfg), "crawl", "freesound", "--base-url", f"{api.url}/apiv2"])
    out = capsys.readouterr()
    assert rc == 1 and "HTTP 401" in out.err
    assert SECRET not in out.err and SECRET not in out.out


# -- 4. bounded downloads ---------------------------------------------------------------------------------
def _trickle(n_bytes: int, every: float):
    def body(h):
        for _ in range(n_bytes):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(every)
    return body


def test_download_over_the_size_cap_stops_and_leaves_nothing(tmp_path):
    big = b"\0" * (300 * 1024)

    def unannounced(h):                                  # no Content-Length: the cap must hold while reading
        h.wfile.write(big)
    with Recorder({"/apiv2/a.mp3": (200, {}, big),
                   "/apiv2/b.mp3": (200, {"Connection": "close"}, unannounced)}) as api:
        c = client(f"{api.url}/apiv2", max_download_bytes=100 * 1024)
        for name in ("a", "b"):
            with pytest.raises(FreesoundError, match="exceeds"):
                c.download(f"{api.url}/apiv2/{name}.mp3", tmp_path, ext="mp3")
        assert files_under(tmp_path) == []
        ok = client(f"{api.url}/apiv2", max_download_bytes=400 * 1024)
        assert ok.download(f"{api.url}/apiv2/a.mp3", tmp_path, ext="mp3")[2] == len(big)


def test_a_trickling_download_is_aborted_at_the_deadline(tmp_path):
    with Recorder({"/apiv2/slow.mp3": (200, {"Content-Length": "1000"}, _trickle(1000, 0.02))}) as api:
        c = client(f"{api.url}/apiv2", download_deadline_s=0.5, timeout=5.0)
        t0 = time.monotonic()
        with pytest.raises(FreesoundError, match="deadline"):
            c.download(f"{api.url}/apiv2/slow.mp3", tmp_path, ext="mp3")
        assert time.monotonic() - t0 < 3.0
        assert files_under(tmp_path) == []


def test_download_failures_name_the_item_and_the_reason(tmp_path):
    from sao.sources.audio_download import download_items
    with Recorder({"/p/1.mp3": (200, {"Content-Length": "1000"}, _trickle(1000, 0.02)),
                   "/p/2.mp3": (200, {}, b"\0" * 4096)}) as cdn:
        c = client(f"{cdn.url}/apiv2", download_deadline_s=0.3, max_download_bytes=1 << 20)
        items = [{"recording_id": f"freesound:{i}", "audio_url": None, "preview_url": f"{cdn.url}/p/{i}.mp3",
                  "md5": None, "filesize": None, "type": "wav", "duration": 1.0} for i in (1, 2)]
        done, st = download_items(c, items, tmp_path / "store", show_progress=False)
    assert [d["recording_id"] for d in done] == ["freesound:2"] and st.failed == 1
    assert "deadline" in st.failures["freesound:1"]


def test_download_limits_come_from_the_config(tmp_path):
    from sao import config as config_mod
    from sao.sources.freesound_source import make_client
    p = tmp_path / "sao.toml"
    p.write_text("[freesound]\nmax_download_mb = 3\ndownload_deadline_s = 42\n")
    cfg = config_mod.load(p)
    c = make_client(cfg, token="t0ken")
    assert c.max_download_bytes == 3 * 1024 * 1024 and c.download_deadline_s == 42
    assert config_mod.Config().freesound.max_download_mb == 2048
    assert config_mod.Config().freesound.download_deadline_s == 600
    for bad in ("max_download_mb = 0", "download_deadline_s = 0", 'max_download_mb = "big"'):
        p.write_text(f"[freesound]\n{bad}\n")
        with pytest.raises(config_mod.ConfigError, match="freesound"):
            config_mod.load(p)


# -- 5. `sao download` fails loudly -----------------------------------------------------------------------
def test_download_command_exits_nonzero_when_a_download_failed(tmp_path, capsys, monkeypatch):
    from sao import cli
    from sao.pipeline.stage import Plan, Stats
    from sao.sources import freesound_source
    outcome = {"candidates": 3, "downloaded": 1, "failed": 2, "megabytes": 0.1,
               "failures": {"freesound:1": "deadline", "freesound:2": "HTTP 404"}}

    def store(details):
        return lambda self, ctx, plan, results: Stats("download", items_in=3, details=dict(details))
    monkeypatch.setattr(freesound_source.Download, "skip", lambda self, ctx: None)
    monkeypatch.setattr(freesound_source.Download, "plan", lambda self, ctx: Plan())
    monkeypatch.setattr(freesound_source.Download, "store", store(outcome))
    assert cli.main(["download"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("sao: download: 2 of 3 downloads failed")
    monkeypatch.setattr(freesound_source.Download, "store", store(dict(outcome, failed=0, failures={})))
    assert cli.main(["download"]) == 0
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["download"].format_help()
    assert "exit" in help_text.lower() and "1" in help_text
