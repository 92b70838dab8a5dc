import logging
import time

import pytest
import requests

from sao.sources.freesound import FreesoundClient, FreesoundError, RateLimiter, RetryPolicy
from sao.sources.replica import ReplicaServer, ReplicaSettings

SECRET = "tok-3c1f9e-very-secret"


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_rate_limiter_never_exceeds_its_window():
    clock = FakeClock()
    lim = RateLimiter(5, period=60.0, margin=0.0, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(23):
        lim.acquire()
        stamps.append(clock.t)
    for t in stamps:
        assert sum(1 for u in stamps if t <= u < t + 60.0) <= 5
    assert stamps[-1] >= 4 * 60.0


@pytest.fixture
def server(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv:
        yield srv


def client_for(srv, sleeps=None, **kw):
    kw.setdefault("rate_limit_per_minute", 10_000)
    return FreesoundClient(srv.api_url, SECRET, sleep=(sleeps.append if sleeps is not None else time.sleep),
                           retry=RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05), **kw)


def test_503_and_429_are_retried_and_end_well(server):
    sleeps = []
    c = client_for(server, sleeps)
    server.inject_fault(r"/apiv2/search/", 503, times=2)
    server.inject_fault(r"/apiv2/search/", 429, times=1, retry_after="7")
    pages = list(c.search_pages('license:"Creative Commons 0"', page_size=150))
    assert pages[0][1]["count"] == 13
    assert c.stats["retries"] == 3 and c.stats["http_503"] == 2 and c.stats["http_429"] == 1
    assert 7.0 in sleeps  # Retry-After honoured


def test_other_4xx_stop_at_once_with_a_clear_error(server):
    sleeps = []
    c = client_for(server, sleeps)
    with pytest.raises(FreesoundError, match=r"HTTP 400: .*undefined field colour") as exc:
        list(c.search_pages("colour:red"))
    assert exc.value.status == 400 and sleeps == []
    bad = FreesoundClient(server.api_url, "wrong-token")
    with pytest.raises(FreesoundError, match="HTTP 401: Invalid token"):
        list(bad.search_pages(""))


def test_retries_exhausted(server):
    c = client_for(server, [])
    server.inject_fault(r"/apiv2/search/", 502, times=10)
    with pytest.raises(FreesoundError, match="after 4 attempts: HTTP 502"):
        list(c.search_pages(""))


def test_rate_limiter_keeps_under_the_replicas_limit(freesound_sounds):
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=4, rate_window_s=1.0)
    with ReplicaServer(freesound_sounds, settings) as srv:
        c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=4, rate_period=1.0)
        t = time.perf_counter()
        pages = list(c.search_pages("", page_size=4, fields=("id",)))
        assert len(pages) == 10 and srv.throttled == 0 and c.stats["retries"] == 0
        assert time.perf_counter() - t >= 2.0


def test_no_token_is_a_clear_error():
    with pytest.raises(FreesoundError, match="no Freesound API token"):
        FreesoundClient("http://127.0.0.1:1/apiv2", "")


def test_token_never_in_logs_errors_or_repr(server, caplog):
    c = client_for(server, [])
    with caplog.at_level(logging.DEBUG):
        server.inject_fault(r"/apiv2/search/", 503, times=1)
        list(c.search_pages(""))
        with pytest.raises(FreesoundError) as bad_filter:
            list(c.search_pages("colour:red"))
        assert SECRET not in str(bad_filter.value)
        with pytest.raises(FreesoundError) as unreachable:
            FreesoundClient("http://127.0.0.1:1/apiv2", SECRET, retry=RetryPolicy(max_retries=0)).get_json(
                "http://127.0.0.1:1/apiv2/search/")
        assert SECRET not in str(unreachable.value)
    assert SECRET not in caplog.text and SECRET not in repr(c)


def test_download_into_content_addressed_store(server, freesound_sounds, tmp_path):
    import hashlib
    c = FreesoundClient(server.api_url, SECRET, oauth_token="sao-demo-oauth")
    s = freesound_sounds[0]
    path, sha, size = c.download(f"{server.api_url}/sounds/{s['id']}/download/", tmp_path, ext=s["type"],
                                 expected_md5=s["md5"], expected_size=s["filesize"], original=True)
    assert path == tmp_path / sha[:2] / sha[2:4] / f"{sha}.{s['type']}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha and size == s["filesize"]


def test_bad_downloads_leave_nothing_behind(server, freesound_sounds, tmp_path):
    c = FreesoundClient(server.api_url, SECRET, oauth_token="sao-demo-oauth")
    s = freesound_sounds[1]
    url = f"{server.api_url}/sounds/{s['id']}/download/"
    with pytest.raises(FreesoundError, match="md5"):
        c.download(url, tmp_path, ext="ogg", expected_md5="0" * 32, original=True)
    server.inject_truncation(rf"/sounds/{s['id']}/download/")
    with pytest.raises((FreesoundError, requests.RequestException)):
        c.download(url, tmp_path, ext="ogg", expected_md5=s["md5"], original=True)
    with pytest.raises(FreesoundError, match="OAuth2"):
        FreesoundClient(server.api_url, SECRET).download(url, tmp_path, ext="ogg", original=True)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # and the next attempt succeeds
    path, _, _ = c.download(url, tmp_path, ext="ogg", expected_md5=s["md5"], original=True)
    assert path.is_file()
