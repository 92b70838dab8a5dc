"""A Freesound remix's attribution names its sources, as Freesound's own attribution text does
(``Sound.attribution_texts``): the sources come from the web site's attribution modal (APIv2 has
none), each is looked up through the API, and the line with them is what the outputs carry."""
import copy
import html
import json

import pytest

from sao.catalog import Catalog
from sao.licensing import LicensePolicy, freesound_attribution_line
from sao.licensing.attribution import attribution_line, freesound_remix_attribution
from sao.licensing.stage import run_license_gate
from sao.sources import SOURCES
from sao.sources.freesound import FreesoundClient, FreesoundError, RetryPolicy
from sao.sources.freesound_crawl import crawl_freesound
from sao.sources.freesound_remix import (MAX_DEPTH, MAX_PAGE_BYTES, MAX_SOURCES, RemixPageError,
                                         attribution_page_url, fetch_attribution_page, parse_attribution_page,
                                         update_remix_attributions)
from sao.sources.replica import ReplicaServer, ReplicaSettings

TOKEN = "remix-token-93c1"
SITE = "https://freesound.org"


# -- the page, as sounds/modal_attribution.html renders it ----------------------------------------
# Recorded shape, written from MTG/freesound templates/sounds/modal_attribution.html (inside
# molecules/modal_base.html) and Sound.attribution_texts: each option's value is the text through
# |safe|force_escape; the JSON one is json.dumps of a list (self, then each source's entry, a source
# that is itself a remix as its own nested list) when the sound has sources, else of one object.
def recorded_page(json_text: str, plain: str = "x", html_text: str = "y") -> str:
    esc = lambda v: html.escape(v, quote=True)  # noqa: E731 - Django's force_escape
    return ('<div class="modal " id="soundAttributionModal" tabindex="-1" role="dialog" '
            'aria-label="Get attribution text" aria-hidden="true">\n<div class="modal-body">\n'
            '<div class="col-12">\n    <div class="text-center">\n'
            '        <h4 class="v-spacing-5">Get attribution text</h4>\n    </div>\n'
            '    <div class="v-spacing-4">\n        <div class="bw-form">\n            <div>\n'
            '                Format:\n                <select>\n'
            f'                    <option value="{esc(plain)}">Plain text</option>\n'
            f'                    <option value="{esc(html_text)}">HTML</option>\n'
            f'                    <option value="{esc(json_text)}">JSON</option>\n'
            '                </select>\n            </div>\n            <textarea></textarea>\n        </div>\n'
            '        <button class="btn-primary v-spacing-top-1 w-100">Copy text</button>\n    </div>\n</div>\n'
            '</div>\n</div>\n')


def entry(sid: int, user: str, name: str = "a sound", site: str = SITE) -> str:
    return (f'{{"sound_url": "{site}/people/{user}/sounds/{sid}/", "sound_name": "{name}", '
            f'"author_url": "{site}/people/{user}/", "author_name": "{user}", '
            '"license_url": "http://creativecommons.org/licenses/by/4.0/", "license_name": "Attribution 4.0"}')


# sound 300 by alice: sources 200 (bob; itself a remix of 100 by carol) and 150 (dave)
ODD_NAME = "Mix & \\u00e9 <'quoted'>"         # json.dumps writes é as \u00e9; the template escapes & < > '
NESTED = f'[{entry(300, "alice", ODD_NAME)}, [{entry(200, "bob")}, {entry(100, "carol")}], {entry(150, "dave")}]'


def test_the_line_is_freesounds_text_joined_by_blank_lines():
    own = freesound_attribution_line(name="mix", username="alice", sound_id=3, license_canonical="cc-by-4.0")
    a = freesound_attribution_line(name="a", username="bob", sound_id=2, license_canonical="cc0-1.0")
    assert freesound_remix_attribution(own, [a, a]) == f"{own}\n\n{a}\n\n{a}"
    assert freesound_remix_attribution(own, []) == own
    # the outputs (release CSV, manifest, attribution files) take the stored line as it is
    line = freesound_remix_attribution(own, [a])
    assert attribution_line(title="mix", author="alice", url=None, license_canonical="cc-by-4.0",
                            freesound_line=line) == line


def test_a_recorded_page_gives_the_sources_in_freesounds_order():
    assert parse_attribution_page(recorded_page(NESTED), 300, SITE) == [200, 100, 150]
    assert parse_attribution_page(recorded_page(entry(300, "alice")), 300, SITE) == []     # no sources
    # a source reached twice is listed twice, as Freesound's text does
    twice = f'[{entry(300, "a")}, [{entry(200, "b")}, {entry(100, "c")}], {entry(100, "c")}]'
    assert parse_attribution_page(recorded_page(twice), 300, SITE) == [200, 100, 100]


@pytest.mark.parametrize("page, why", [
    ("<html>no select here</html>", "exactly one JSON attribution option, found 0"),
    (recorded_page(NESTED) + recorded_page(NESTED), "exactly one JSON attribution option, found 2"),
    (recorded_page("[1, 2"), "is not JSON"),
    (recorded_page('"a string"'), "starts with an attribution object"),
    (recorded_page("[]"), "starts with an attribution object"),
    (recorded_page(f'[{entry(300, "a")}, 7]'), "starts with an attribution object"),
    (recorded_page(f'[{entry(301, "a")}, {entry(200, "b")}]'), "attribution of sound 301, not of 300"),
    (recorded_page(f'[{entry(300, "a")}, [{entry(200, "b")}, {entry(300, "a")}]]'), "among its own sources"),
    (recorded_page(f'[{entry(300, "a")}, {entry(200, "b", site="https://evil.example")}]'), "not on this Freesound"),
    (recorded_page(f'[{entry(300, "a")}, {entry(200, "b", site="https://freesound.org@evil.example")}]'),
     "not on this Freesound"),
    (recorded_page(f'[{entry(300, "a")}, {{"sound_url": "{SITE}/people/b/sounds/../../x/"}}]'),
     "is not a Freesound sound page URL"),
    (recorded_page(f'[{entry(300, "a")}, {{"sound_url": "{SITE}/people/b/sounds/0/"}}]'),
     "is not a Freesound sound page URL"),
    (recorded_page(f'[{entry(300, "a")}, {{"sound_url": "{SITE}/people/b/sounds/99999999999999999999/"}}]'),
     "is not a Freesound sound page URL"),
    (recorded_page(f'[{entry(300, "a")}, {{"sound_url": ["{SITE}/people/b/sounds/2/"]}}]'),
     "is not a Freesound sound page URL"),
    (recorded_page(f'[{entry(300, "a")}, {entry(200, "b")}/* */]'), "is not JSON"),
])
def test_a_page_that_is_not_what_the_template_renders_is_refused(page, why):
    with pytest.raises(RemixPageError, match=why):
        parse_attribution_page(page, 300, SITE)


def test_nesting_and_width_are_bounded():
    deep = entry(1, "x")
    for i in range(MAX_DEPTH + 2):
        deep = f"[{entry(1000 + i, 'y')}, {deep}]"
    with pytest.raises(RemixPageError, match="nested deeper"):
        parse_attribution_page(recorded_page(f'[{entry(300, "a")}, {deep}]'), 300, SITE)
    wide = ", ".join(entry(1000 + i, "y") for i in range(MAX_SOURCES + 1))
    with pytest.raises(RemixPageError, match=f"more than {MAX_SOURCES} sources"):
        parse_attribution_page(recorded_page(f'[{entry(300, "a")}, {wide}]'), 300, SITE)
    with pytest.raises(RemixPageError, match="is not JSON: RecursionError"):
        parse_attribution_page(recorded_page("[" * 200_000), 300, SITE)
    ok = ", ".join(entry(1000 + i, "y") for i in range(MAX_SOURCES))
    assert len(parse_attribution_page(recorded_page(f'[{entry(300, "a")}, {ok}]'), 300, SITE)) == MAX_SOURCES


def test_the_page_url_stays_on_the_api_site():
    assert (attribution_page_url("https://freesound.org/", "a/b?c#d", 12)
            == "https://freesound.org/people/a%2Fb%3Fc%23d/sounds/12/attribution/?ajax=1")
    assert attribution_page_url(SITE, "", 12) == f"{SITE}/people/_/sounds/12/attribution/?ajax=1"


# -- against the replica -------------------------------------------------------------------------
def _sound(base: dict, sid: int, **fields) -> dict:
    s = copy.deepcopy(base)
    s.update(id=sid, **fields)
    return s


@pytest.fixture
def remix_sounds(freesound_sounds):
    by_id = {s["id"]: s for s in freesound_sounds}
    cc0, by3, by4 = by_id[100001], by_id[100004], by_id[100013]    # sources: CC0, CC BY 3.0, CC BY 4.0
    r1 = _sound(by4, 100101, name="Water and birds", username="mixer", created="2024-02-01T00:00:00",
                is_remix=True, _sources=[100001, 100004])
    r2 = _sound(by4, 100102, name="Remix of a remix", username="mixer2", created="2024-02-02T00:00:00",
                is_remix=True, _sources=[100013, 100101])
    nc = _sound(by4, 100103, name="Not admitted", created="2024-02-03T00:00:00", is_remix=True,
                license="http://creativecommons.org/licenses/by-nc/4.0/", _sources=[100001])
    return [cc0, by3, by4, r1, r2, nc]


@pytest.fixture
def srv(remix_sounds):
    with ReplicaServer(remix_sounds, ReplicaSettings(api_tokens=[TOKEN], rate_limit_per_minute=0)) as s:
        yield s


def _client(srv, **kw):
    kw.setdefault("retry", RetryPolicy(max_retries=0))
    return FreesoundClient(srv.api_url, TOKEN, rate_limit_per_minute=10_000, **kw)


def _crawled(srv, path):
    cat = Catalog(path)
    crawl_freesound(cat, _client(srv))
    run_license_gate(cat, LicensePolicy(), config_hash="t")
    return cat


def _line(cat, sid):
    return cat.query("SELECT json_extract_string(extra, '$.attribution.freesound_line') AS l FROM recordings "
                     "WHERE recording_id = ?", [f"freesound:{sid}"])[0]["l"]


def _own(cat, sid):
    r = cat.get_recording(f"freesound:{sid}")
    return freesound_attribution_line(name=r["title"], username=r["author"], sound_id=sid,
                                      license_canonical=r["license_canonical"], site=r["page_url"].split("/people/")[0])


def _site_plain_text(srv, sid):
    """What the replica's page (Freesound's own text) says: its Plain text option."""
    import re
    import requests
    page = requests.get(f"{srv.base_url}/people/x/sounds/{sid}/attribution/?ajax=1", timeout=10).text
    return html.unescape(re.search(r'<option value="([^"]*)">Plain text</option>', page).group(1))


def test_admitted_remixes_get_their_sources_lines(srv, tmp_path):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        own = {sid: _own(cat, sid) for sid in (100001, 100004, 100013, 100101, 100102)}
        st = update_remix_attributions(cat, _client(srv))
        assert (st.candidates, st.updated, st.failed, st.deferred) == (2, 2, 0, 0)     # the NC remix is not admitted
        # sources newest first (the model's ordering); a source that is a remix brings its own sources
        assert _line(cat, 100101) == "\n\n".join([own[100101], own[100004], own[100001]])
        assert _line(cat, 100102) == "\n\n".join([own[100102], own[100101], own[100004], own[100001], own[100013]])
        # exactly Freesound's own attribution text, as the site shows it
        assert _line(cat, 100101) == _site_plain_text(srv, 100101)
        assert _line(cat, 100102) == _site_plain_text(srv, 100102)
        extra = json.loads(cat.get_recording("freesound:100102")["extra"])
        assert extra["attribution"]["sources"] == ["100101", "100004", "100001", "100013"]
        # what the attribution outputs read: the source's attribution_line and the release's SQL
        rec = cat.get_recording("freesound:100101")
        rec["extra"] = json.loads(rec["extra"])
        assert SOURCES["freesound"].attribution_line(rec) == _line(cat, 100101)
        assert _line(cat, 100103) == _own(cat, 100103) and _line(cat, 100001) == own[100001]
        # each source looked up once; a second pass has nothing to do and asks nothing
        assert srv.request_counts["/apiv2/sounds/100101/"] == 1
        before = sum(srv.request_counts.values())
        again = update_remix_attributions(cat, _client(srv))
        assert (again.candidates, again.requests) == (0, 0) and sum(srv.request_counts.values()) == before


def test_a_recrawled_remix_is_fetched_again(srv, tmp_path):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        update_remix_attributions(cat, _client(srv))
        # a source removed on Freesound; the next crawl stores the remix without sources again
        srv.update_sound(100101, _sources=[100001], name="Water alone")
        with_sources = _line(cat, 100102)
        crawl_freesound(cat, _client(srv), full=True)
        assert _line(cat, 100101) == _own(cat, 100101)           # its own line changed: sources fetched again
        assert _line(cat, 100102) == with_sources                # unchanged remixes keep theirs, in a full pass too
        st = update_remix_attributions(cat, _client(srv))
        assert st.updated == 1
        assert _line(cat, 100101) == f"{_own(cat, 100101)}\n\n{_own(cat, 100001)}" == _site_plain_text(srv, 100101)


def test_one_failure_never_stops_the_others(srv, tmp_path, caplog):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        srv.inject_fault(r"^/people/.*/sounds/100101/attribution/$", 503, times=1)
        st = update_remix_attributions(cat, _client(srv))
        assert (st.updated, st.failed) == (1, 1) and "HTTP 503" in st.failures["freesound:100101"]
        assert "freesound:100101" in caplog.text
        assert _line(cat, 100101) == _own(cat, 100101) and _line(cat, 100102) == _site_plain_text(srv, 100102)
        # retried on the next run
        assert update_remix_attributions(cat, _client(srv)).updated == 1
        assert _line(cat, 100101) == _site_plain_text(srv, 100101)


def test_a_source_gone_or_malformed_fails_that_remix_only(srv, tmp_path):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        srv.update_sound(100013, name="line one\nForged by nobody -- License: CC0")     # a forged line
        srv.inject_fault(r"^/apiv2/sounds/100004/$", 404, times=1)                       # gone meanwhile
        st = update_remix_attributions(cat, _client(srv))
        assert st.updated == 0 and st.failed == 2
        assert "source sound 100004 no longer exists" in st.failures["freesound:100101"]
        assert "name:" in st.failures["freesound:100102"] and "control character" in st.failures["freesound:100102"]
        assert "Forged" not in _line(cat, 100102)


def test_the_request_budget_stops_the_pass_and_the_next_run_goes_on(srv, tmp_path):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        # 100101 needs two API lookups (its two sources); the third request is over the budget
        st = update_remix_attributions(cat, _client(srv, requests_per_day=2))
        assert (st.updated, st.deferred, st.failed) == (1, 1, 0) and st.next_request_at.endswith("UTC")
        assert _line(cat, 100101) == _site_plain_text(srv, 100101) and _line(cat, 100102) == _own(cat, 100102)
        nxt = update_remix_attributions(cat, _client(srv))
        assert (nxt.candidates, nxt.updated) == (1, 1) and _line(cat, 100102) == _site_plain_text(srv, 100102)


def test_page_reads_are_bounded_and_typed(srv, tmp_path):
    c = _client(srv)
    srv.update_sound(100001, name="x" * (MAX_PAGE_BYTES + 10))
    with pytest.raises(FreesoundError, match="larger than"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 100001))
    srv.inject(r"^/people/", "status", status=200)    # a JSON 200 where HTML belongs
    with pytest.raises(FreesoundError, match="expected an HTML 200"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 100004))
    with pytest.raises(FreesoundError, match="HTTP 404"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 999999))
    # without ?ajax=1 the site redirects to the sound page (as Freesound's view does)
    import requests
    r = requests.get(f"{srv.base_url}/people/u/sounds/100004/attribution/", allow_redirects=False, timeout=10)
    assert r.status_code == 302 and r.headers["Location"] == "/people/u/sounds/100004/?attribution=1"


def test_the_replica_refuses_a_source_cycle_like_the_server(srv, tmp_path):
    srv.update_sound(100001, _sources=[100101])       # 100101 -> 100001 -> 100101: the server recurses
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        st = update_remix_attributions(cat, _client(srv))
        assert st.failed == 2 and "HTTP 500" in st.failures["freesound:100101"]


def test_the_crawl_stage_stores_the_sources_of_admitted_remixes(tmp_path, remix_sounds):
    from sao import config as config_mod
    from tests.conftest import flow_config, run_stage
    cfg = config_mod.load(flow_config(tmp_path))
    with ReplicaServer(remix_sounds, ReplicaSettings(api_tokens=[TOKEN], rate_limit_per_minute=0)) as s:
        secrets = {"freesound_token": TOKEN}
        first = run_stage(cfg, "crawl_freesound", base_url=s.api_url, secrets=secrets)
        assert first.details["remix_sources"]["candidates"] == 0          # nothing admitted yet
        run_stage(cfg, "license_gate")
        second = run_stage(cfg, "crawl_freesound", base_url=s.api_url, secrets=secrets)
        assert second.details["remix_sources"]["updated"] == 2
        with Catalog(cfg.catalog_path, read_only=True) as cat:
            assert _line(cat, 100102) == _site_plain_text(s, 100102)


def test_a_refetched_remix_can_keep_its_stored_sources(srv, tmp_path):
    """carry_remix_sources, for the crawl: an unchanged re-fetch keeps the sources (no update, no
    window without them); a changed one does not."""
    import datetime as dt

    from sao.sources.freesound_crawl import changed_ids, sound_to_record
    from sao.sources.freesound_remix import carry_remix_sources
    c = _client(srv)
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        update_remix_attributions(cat, c)
        stored = _line(cat, 100101)

        def refetched(sid):
            return sound_to_record(c.sound(sid), crawl_time=dt.datetime(2025, 1, 1), site=c.site)[0]
        recs = [refetched(100101), refetched(100001)]
        assert changed_ids(cat, recs) == {"100101"}              # without it: the sources are gone
        assert carry_remix_sources(cat, recs) == {recs[0]["source_id"]}
        assert recs[0]["extra"]["attribution"]["freesound_line"] == stored and changed_ids(cat, recs) == set()
        srv.update_sound(100101, name="renamed")                # its own line changed: fetched again
        recs = [refetched(100101)]
        assert carry_remix_sources(cat, recs) == set() and "sources" not in recs[0]["extra"]["attribution"]


@pytest.fixture
def odd_site():
    """A site that trickles, cuts its page short or redirects to another host."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler

    from sao.log import QuietHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            if "/sounds/1/" in self.path:          # trickles: each byte well within the socket timeout
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                try:
                    for _ in range(40):
                        self.wfile.write(b"<")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:                    # the client gave up: what it should do
                    pass
            elif "/sounds/2/" in self.path:        # announces 1000 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "1000")
                self.end_headers()
                self.wfile.write(b"<html>0123")
                self.close_connection = True
            elif self.path == "/page":
                body = recorded_page(entry(3, "u")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:                                  # elsewhere: another port is another site
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{other.server_address[1]}/page")
                self.send_header("Content-Length", "0")
                self.end_headers()

    servers = [QuietHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    site, other = servers
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    for s in servers:
        s.shutdown()
        s.server_close()


def test_a_trickled_cut_or_redirected_page_fails_cleanly(odd_site):
    c = FreesoundClient(f"{odd_site}/apiv2", TOKEN, timeout=1.0, retry=RetryPolicy(max_retries=0))
    with pytest.raises(FreesoundError, match="page not read within 1 s"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 1))
    with pytest.raises(FreesoundError, match="page cut short after 10 bytes"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 2))
    with pytest.raises(FreesoundError, match="not the API's site"):
        fetch_attribution_page(c, attribution_page_url(c.site, "u", 3))


def test_a_remix_whose_page_lists_no_sources_keeps_its_own_line(srv, tmp_path):
    srv.update_sound(100101, _sources=[])        # is_remix, but its sources were deleted on the site
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        st = update_remix_attributions(cat, _client(srv))
        assert st.updated == 2 and _line(cat, 100101) == _own(cat, 100101) == _site_plain_text(srv, 100101)
        assert json.loads(cat.get_recording("freesound:100101")["extra"])["attribution"]["sources"] == []
        assert _line(cat, 100102) == _site_plain_text(srv, 100102)
        assert update_remix_attributions(cat, _client(srv)).candidates == 0


def test_the_release_and_its_attribution_files_carry_the_sources(srv, tmp_path):
    import csv

    from sao.attribution.release import create_release
    from sao.attribution.report import build_report
    from sao.audio.stage import run_decode
    from sao.sources.audio_download import download_audio
    store = tmp_path / "audio"
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        update_remix_attributions(cat, _client(srv))
        download_audio(cat, _client(srv), store)
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        assert create_release(cat, "r1", required_stages=["license_gate"])["recordings"] == 5
        want = _site_plain_text(srv, 100102)
        row = cat.query("SELECT attribution_line FROM release_items WHERE recording_id = 'freesound:100102'")[0]
        assert row["attribution_line"] == want
        folder = tmp_path / "releases" / "r1"
        build_report(cat, "r1", tmp_path / "releases")
        with open(folder / "attribution-tasl.csv", newline="", encoding="utf-8") as f:
            lines = {r["recording_id"]: r["attribution_line"] for r in csv.DictReader(f)}
        assert lines["freesound:100102"] == want and lines["freesound:100101"] == _site_plain_text(srv, 100101)
        assert want in (folder / "freesound-attribution.txt").read_text(encoding="utf-8")


def test_the_attribution_page_is_asked_for_without_the_api_key(srv):
    # the key is for the API; the web site's page is not the API even on the same host, so it gets none
    client = _client(srv)
    sent = []
    real_get = client.session.get

    def spy(url, **kw):
        sent.append((url, dict(kw.get("headers") or {})))
        return real_get(url, **kw)

    client.session.get = spy
    url = attribution_page_url(srv.base_url, "alice", 100101)
    try:
        fetch_attribution_page(client, url)
    except FreesoundError:
        pass                      # whatever the page says, what matters is what was sent
    assert sent and all("Authorization" not in headers for _, headers in sent)
    assert TOKEN not in repr(sent)


def test_an_incremental_recrawl_keeps_the_remix_sources_and_counts_no_update(srv, tmp_path):
    with _crawled(srv, tmp_path / "c.duckdb") as cat:
        update_remix_attributions(cat, _client(srv))
        before = _line(cat, 100102)
        srv.update_sound(100102, created="2030-01-01T00:00:00")     # the newest: the boundary item, asked again
        crawl_freesound(cat, _client(srv))
        st = crawl_freesound(cat, _client(srv))
        assert st.updated == 0 and _line(cat, 100102) == before
        again = update_remix_attributions(cat, _client(srv))
        assert again.candidates == 0 and again.requests == 0      # nothing to fetch again
