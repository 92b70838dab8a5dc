import io
import logging
import time

import numpy as np
import pandas as pd
import pytest
import requests
import soundfile as sf

from sao.licensing import canonical_license
from sao.sources.replica import ReplicaServer, ReplicaSettings
from sao.sources.replica.server import DETAIL_FIELDS, PUBLIC_FIELDS

TOKEN = {"Authorization": "Token sao-demo-token"}
ALL_FIELDS = "id,name,tags,description,license,username,duration,samplerate,channels,bitdepth,type,filesize,created,md5,is_remix,previews,download,gen_ai_preference"


def get(replica, path="/search/", headers=TOKEN, **params):
    return requests.get(replica.api_url + path, params=params, headers=headers, timeout=30)


def test_search_and_text_alias_return_the_list_shape(replica, freesound_sounds):
    for path in ("/search/", "/search/text/"):
        j = get(replica, path, query="").json()
        assert set(j) == {"count", "next", "previous", "results"}
        assert j["count"] == len(freesound_sounds) and j["previous"] is None
        assert len(j["results"]) == 15  # Freesound's default page size
        assert set(j["results"][0]) == {"id", "name", "tags", "username", "license"}


def test_pagination_follows_next_and_covers_everything_once(replica, freesound_sounds):
    seen, url, params, pages = [], replica.api_url + "/search/", {"page_size": 7, "fields": "id"}, 0
    while url:
        j = requests.get(url, params=params, headers=TOKEN, timeout=30).json()
        seen += [r["id"] for r in j["results"]]
        if pages:
            assert j["previous"] is not None
        url, params, pages = j["next"], None, pages + 1
    assert sorted(seen) == sorted(s["id"] for s in freesound_sounds)
    assert pages == -(-len(freesound_sounds) // 7)
    assert "token" not in (get(replica, page_size=7, token="sao-demo-token", headers={}).json()["next"])


def test_page_size_is_clamped_and_bad_pages_fail(replica):
    j = get(replica, page_size=1000, fields="id").json()
    assert len(j["results"]) == j["count"] <= 150 and j["next"] is None
    # apiv2/views.py and forms.py: past the end, page < 1, page_size < 1 are 404 "Not found"
    for params in ({"page": 99, "page_size": 150}, {"page": 0}, {"page": -1}, {"page_size": 0}, {"page_size": -5}):
        r = get(replica, **params)
        assert (r.status_code, r.json()) == (404, {"detail": "Not found"}), params
    # a page or page_size that is no integer is page 1 / the default size, not an error
    j = get(replica, page="x", page_size="many", fields="id").json()
    assert len(j["results"]) == 15 and j["previous"] is None and "page=2" in j["next"]
    assert "page_size" not in j["next"]                      # the default size is left out of links
    assert len(get(replica, page=" 2 ", fields="id").json()["results"]) == 15   # CharField strips
    # a repeated parameter: Django's QueryDict gives the form the last value
    j = requests.get(replica.api_url + "/search/?page_size=2&page_size=3&fields=id", headers=TOKEN, timeout=30).json()
    assert len(j["results"]) == 3


def test_an_empty_result_past_page_one_is_an_empty_page(replica):
    """count 0 skips the page-range 404 and the paginator clamps to page 1: no links."""
    r = get(replica, filter='license:"Sampling "', page=7)
    assert (r.status_code, r.json()) == (200, {"count": 0, "previous": None, "next": None, "results": []})


def test_links_are_built_as_freesound_builds_them(replica, freesound_sounds):
    """apiv2/forms.py construct_link: ``?&query=``, filter/fields quoted leaving ``,:[]*+()'``, weights
    as given, sort unless score, always /apiv2/search/, never the token."""
    j = get(replica, "/search/text/", headers={}, token="sao-demo-token", query="a b", weights="name:2",
            filter='license:("Attribution" OR "Sampling+") duration:[0 TO *]', sort="created_asc",
            fields="id,name", page_size=2).json()
    assert j["count"] > 2 and j["next"] == (f"{replica.api_url}/search/?&query=a%20b&filter=license:(%22Attribution%22%20OR%20"
                         "%22Sampling+%22)%20duration:[0%20TO%20*]&weights=name:2&sort=created_asc&page=2"
                         "&page_size=2&fields=id,name")
    j = get(replica, fields="id", page_size=5, page=2, sort="no-such-sort").json()
    assert j["previous"] == f"{replica.api_url}/search/?&query=&weights=&page=1&page_size=5&fields=id"
    assert "sort=" not in j["next"]                           # an unknown sort is score, and score is left out


def test_the_plus_of_a_next_link_reads_as_a_space(replica, freesound_sounds):
    """Following freesound.org's next for license:"Sampling+" asks for license:"Sampling ", which
    matches nothing (a string field); the crawler must not follow next links."""
    everything = get(replica, page_size=1, fields="id").json()
    link = everything["next"].replace("&page=2", "&page=1") + "&filter=license:%22Sampling+%22"
    j = requests.get(link, headers=TOKEN, timeout=30).json()
    assert j["count"] == 0 and j["results"] == []
    encoded = requests.get(link.replace("Sampling+", "Sampling%2B"), headers=TOKEN, timeout=30).json()
    assert encoded["count"] == sum(s["_license_name"] == "Sampling+" for s in freesound_sounds) >= 1
    # api_search unquotes the filter once more after Django: a doubly encoded + still means +
    twice = get(replica, filter="license:%22Sampling%2B%22", fields="id").json()
    assert twice["count"] == encoded["count"]


def test_filter_and_sort_errors_are_freesounds(replica):
    r = get(replica, filter="")
    assert (r.status_code, r.json()) == (400, {"detail": "Invalid filter."})
    r = get(replica, filter="colour:red")
    assert r.status_code == 400 and r.json()["detail"] == (
        "Search server error: Solr responded with an error (HTTP 400): [Reason: undefined field colour] "
        "(please check that your filter syntax and field names are correct)")
    for bad, reason in (('license:"Sampling+', "SyntaxError"), ("duration:[1 TO", "SyntaxError"),
                        ("duration:abc", "Invalid Number: abc"), ("created:[yesterday TO *]", "Invalid Date String"),
                        ("created:[NOW-1FORTNIGHT TO *]", "Invalid Date Math String")):
        r = get(replica, filter=bad)
        assert r.status_code == 400 and reason in r.json()["detail"], (bad, r.json())
        assert r.json()["detail"].startswith("Search server error: ")
    r = get(replica, sort="duration:3.5")                     # a similarity target the replica has no vectors for
    assert r.status_code == 400 and "sorting target" in r.json()["detail"]


@pytest.mark.parametrize("params", [
    {"filter": 'license:"'}, {"filter": "((("}, {"filter": "tag:"}, {"filter": "created:[NOW/FOO TO *]"},
    {"filter": "created:[99999-01-01 TO *]"}, {"filter": "created:[2024-13-01 TO *]"},
    {"filter": "created:[NOW+99999999999YEARS TO *]"}, {"filter": "created:[NOW-99999999999DAYS TO *]"},
    {"filter": "duration:[1e999 TO *]"}, {"filter": "id:nan"}, {"filter": "%ZZ%"}, {"filter": "name:\x00"},
    {"filter": "tag:" + "a" * 20_000}, {"filter": "tag:a " * 5_000}, {"query": "%" * 1000}, {"sort": "%"},
    {"page": "9" * 5000}, {"page_size": "1e3"}, {"fields": "," * 1000}, {"fields": "*,*"},
    {"weights": "&token=leak"}, {"group_by_pack": "1"},
])
def test_hostile_search_parameters_get_an_answer(replica, params):
    """Whatever the parameters, a JSON answer with freesound.org's status (never a dropped connection)."""
    r = get(replica, **params)
    assert r.status_code in (200, 400, 404) and isinstance(r.json(), dict), (params, r.status_code)
    if r.status_code == 400:
        assert r.json()["detail"].startswith(("Search server error: ", "Invalid filter."))


def test_dates_with_z_truncated_and_date_math(replica, freesound_sounds):
    n = len(freesound_sounds)
    created = sorted(s["created"] for s in freesound_sounds)
    assert get(replica, filter="created:[* TO NOW]", fields="id").json()["count"] == n
    assert get(replica, filter="created:[NOW-100YEARS/DAY TO NOW+1DAY]", fields="id").json()["count"] == n
    assert get(replica, filter="created:[NOW TO *]", fields="id").json()["count"] == 0
    year = created[0][:4]
    in_year = sum(c.startswith(year) for c in created)
    assert get(replica, filter=f"created:[{year} TO {year}]", fields="id").json()["count"] == in_year
    assert get(replica, filter=f"created:{created[3]}Z", fields="id").json()["count"] == created.count(created[3])
    day = created[0][:10]
    assert get(replica, filter=f"created:{day}", fields="id").json()["count"] == sum(c.startswith(day) for c in created)


def test_index_and_database_can_disagree(freesound_sounds):
    """A sound the search index lists but the database lost is a null in results (views.py), counted,
    and its instance and download are 404s; delete_sound removes it from both."""
    ids = sorted(s["id"] for s in freesound_sounds)
    with pytest.raises(ValueError, match="index_only_ids"):
        ReplicaServer(freesound_sounds, ReplicaSettings(index_only_ids=(1,)))
    with ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=0, index_only_ids=(ids[1],))) as srv:
        j = get(srv, page_size=3, fields="id").json()
        assert j["count"] == len(ids) and j["results"] == [{"id": ids[0]}, None, {"id": ids[2]}]
        srv.remove_from_database(ids[2])
        assert get(srv, page_size=3, fields="id").json()["results"] == [{"id": ids[0]}, None, None]
        r = get(srv, f"/sounds/{ids[2]}/")
        assert (r.status_code, r.json()) == (404, {"detail": "No Sound matches the given query."})
        r = get(srv, f"/sounds/{ids[2]}/download/", headers={"Authorization": "Bearer sao-demo-oauth"})
        assert (r.status_code, r.json()) == (404, {"detail": "Not found"})
        assert ids[1] not in {s["id"] for s in srv.sounds()}     # sounds() is the database
        srv.delete_sound(ids[1])
        j = get(srv, page_size=3, fields="id").json()
        assert j["count"] == len(ids) - 1 and j["results"] == [{"id": ids[0]}, None, {"id": ids[3]}]


def test_auth_failures_are_401_with_detail(replica):
    r = get(replica, headers={})
    assert r.status_code == 401 and r.json() == {"detail": "Authentication credentials were not provided."}
    r = get(replica, headers={"Authorization": "Token wrong"})
    assert r.status_code == 401 and r.json()["detail"].startswith("Invalid token")
    assert get(replica, headers={}, token="sao-demo-token").status_code == 200  # token as a GET parameter


@pytest.mark.parametrize("name,licenses", [
    ("Creative Commons 0", {"cc0-1.0"}),
    ("Attribution", {"cc-by-3.0", "cc-by-4.0"}),
    ("Sampling+", {"cc-sampling+-1.0"}),
])
def test_license_filter_matches_names_and_returns_deed_urls(replica, freesound_sounds, name, licenses):
    j = get(replica, filter=f'license:"{name}"', page_size=150, fields="id,license").json()
    assert j["count"] >= 1
    assert {canonical_license(r["license"]) for r in j["results"]} == licenses
    assert all(r["license"].startswith("http") for r in j["results"])
    expected = [s["id"] for s in freesound_sounds if canonical_license(s["license"]) in licenses]
    assert sorted(r["id"] for r in j["results"]) == sorted(expected)


def test_or_filter_and_unlisted_licenses(replica, freesound_sounds):
    j = get(replica, filter='license:("Creative Commons 0" OR "Attribution" OR "Sampling+")', page_size=150,
            fields="id,license").json()
    allowed = {"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0"}
    assert j["count"] == sum(canonical_license(s["license"]) in allowed for s in freesound_sounds)
    assert j["count"] < len(freesound_sounds)  # BY-SA, GPL, unknown... exist but never match these names


def test_range_tag_type_filters_and_sort(replica, freesound_sounds):
    cut = sorted(s["created"] for s in freesound_sounds)[10]
    j = get(replica, filter=f"created:[{cut}Z TO *]", sort="created_asc", page_size=150, fields="id,created").json()
    assert j["count"] == len(freesound_sounds) - 10
    created = [r["created"] for r in j["results"]]
    assert created == sorted(created) and created[0] == cut + "Z"     # DRF writes aware UTC with Z
    j = get(replica, filter="duration:[30 TO *]", page_size=150, fields="duration").json()
    assert j["count"] >= 1 and all(r["duration"] >= 30 for r in j["results"])
    j = get(replica, filter="tag:dog", fields="tags").json()
    assert j["count"] >= 1 and all("dog" in r["tags"] for r in j["results"])
    j = get(replica, filter="type:(wav OR flac) channels:1", page_size=150, fields="type,channels").json()
    assert j["count"] >= 1 and all(r["type"] in ("wav", "flac") and r["channels"] == 1 for r in j["results"])
    j = get(replica, query="water -lava", fields="name").json()
    assert j["count"] >= 1 and all("lava" not in r["name"].lower() for r in j["results"])
    r = get(replica, filter="colour:red")
    assert r.status_code == 400 and "undefined field colour" in r.json()["detail"]


def test_all_requested_fields_and_sound_instance(replica):
    j = get(replica, fields=ALL_FIELDS, page_size=1).json()
    s = j["results"][0]
    assert set(s) == set(ALL_FIELDS.split(","))
    # the serializer's order, whatever the request's; unknown names dropped; the value is not stripped
    assert list(get(replica, fields="md5,name,id,bogus", page_size=1).json()["results"][0]) == ["id", "name", "md5"]
    assert list(get(replica, fields="id, name", page_size=1).json()["results"][0]) == ["id"]
    assert isinstance(s["samplerate"], float) and s["created"].endswith("Z")
    star = get(replica, fields="*", page_size=1).json()["results"][0]
    assert list(star) == list(PUBLIC_FIELDS) and star["score"] == 1.0
    assert star["avg_rating"] == 0.0 and star["pack"] is None and star["geotag"] is None
    assert set(s["previews"]) == {"preview-hq-mp3", "preview-lq-mp3", "preview-hq-ogg", "preview-lq-ogg"}
    assert len(s["md5"]) == 32 and s["download"].endswith(f"/sounds/{s['id']}/download/")
    one = get(replica, f"/sounds/{s['id']}/").json()
    assert one["id"] == s["id"] and one["md5"] == s["md5"] and "_path" not in one
    assert list(one) == list(DETAIL_FIELDS) and "score" not in one
    r = get(replica, "/sounds/1/")
    assert (r.status_code, r.json()) == (404, {"detail": "No Sound matches the given query."})


def test_serializer_values_pack_geotag_rating_and_utf8(freesound_sounds):
    s = dict(freesound_sounds[0], pack=20511, pack_name="drums", geotag=[41.38, 2.17], avg_rating=7.0,
             name="Grün ☂", created="2024-03-01T10:00:00.123456")
    with ReplicaServer([s], ReplicaSettings(rate_limit_per_minute=0)) as srv:
        r = get(srv, f"/sounds/{s['id']}/")
        assert "Grün ☂".encode() in r.content and b", " not in r.content[:40]      # DRF: UTF-8, compact
        one = r.json()
        assert one["pack"] == f"{srv.api_url}/packs/20511/" and one["pack_name"] == "drums"
        assert one["geotag"] == "41.38 2.17" and one["is_geotagged"] is True
        assert one["avg_rating"] == 3.5 and one["created"] == "2024-03-01T10:00:00Z"     # / 2; microsecond=0
        assert set(one["images"]) == {f"{k}{bw}_{z}" for k in ("waveform", "spectral") for bw in ("", "_bw")
                                      for z in ("m", "l")}


def test_download_needs_oauth_and_returns_the_original(replica, freesound_sounds):
    import hashlib
    s = freesound_sounds[0]
    r = get(replica, f"/sounds/{s['id']}/download/")
    assert r.status_code == 401 and "OAuth2" in r.json()["detail"]
    r = get(replica, f"/sounds/{s['id']}/download/", headers={"Authorization": "Bearer sao-demo-oauth"})
    assert r.status_code == 200 and hashlib.md5(r.content).hexdigest() == s["md5"]
    assert int(r.headers["Content-Length"]) == s["filesize"]


def test_previews_are_stereo_44k_and_need_no_auth(replica, freesound_sounds):
    mono = next(s for s in freesound_sounds if s["channels"] == 1)
    j = get(replica, f"/sounds/{mono['id']}/", fields="previews").json()
    for key in ("preview-hq-mp3", "preview-lq-ogg"):
        r = requests.get(j["previews"][key], timeout=60)
        assert r.status_code == 200
        x, sr = sf.read(io.BytesIO(r.content))
        assert sr == 44100 and x.ndim == 2 and x.shape[1] == 2
        assert abs(len(x) / sr - mono["duration"]) < 0.2
        assert np.abs(x).max() > 0


def test_throttle_returns_429_like_freesound_org(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=3)) as srv:
        codes = [requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=10).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=10)
        assert r.status_code == 429 and r.json() == {
            "detail": "Request was throttled because of exceeding a request limit rate (3/minute)"}
        assert "Retry-After" not in r.headers          # apiv2/throttling.py raises Throttled without a wait
        # the limit is per credential: another token is not throttled
        other = ReplicaSettings(api_tokens=["a", "b"], rate_limit_per_minute=1)
    with ReplicaServer(freesound_sounds, other) as srv:
        assert requests.get(srv.api_url + "/search/", headers={"Authorization": "Token a"}).status_code == 200
        assert requests.get(srv.api_url + "/search/", headers={"Authorization": "Token a"}).status_code == 429
        assert requests.get(srv.api_url + "/search/", headers={"Authorization": "Token b"}).status_code == 200


def test_state_changes_show_up(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=0)) as srv:
        sid = freesound_sounds[0]["id"]
        srv.update_sound(sid, license="http://creativecommons.org/licenses/by-nc/4.0/",
                         _license_name="Attribution NonCommercial")
        j = get(srv, filter='license:"Attribution NonCommercial"', fields="id,license").json()
        assert [r["id"] for r in j["results"]] == [sid]
        srv.delete_sound(sid)
        assert get(srv, f"/sounds/{sid}/").status_code == 404


def test_tokens_never_reach_the_log(replica, caplog):
    with caplog.at_level(logging.DEBUG, logger="sao.sources.replica.server"):
        get(replica, headers={}, token="sao-demo-token")
        time.sleep(0.05)
    assert caplog.records and "sao-demo-token" not in caplog.text


def test_only_loopback(freesound_sounds):
    with pytest.raises(ValueError, match="loopback"):
        ReplicaServer(freesound_sounds, host="0.0.0.0")


# -- FMA ------------------------------------------------------------------------------------------
def test_fma_metadata_reads_like_mdeff_fma(fma_dir, corpus_entries):
    tracks = pd.read_csv(fma_dir / "fma_metadata" / "tracks.csv", index_col=0, header=[0, 1])
    fma = [e for e in corpus_entries if e["replica"] == "fma"]
    assert tracks.index.name == "track_id" and len(tracks) == len(fma) and tracks.index.min() == 2
    assert {"album", "artist", "set", "track"} == set(tracks.columns.get_level_values(0))
    for col in ("title", "license", "genres", "genre_top", "duration", "date_created"):
        assert ("track", col) in tracks.columns
    raw = pd.read_csv(fma_dir / "fma_metadata" / "raw_tracks.csv", index_col=0)
    assert {"license_title", "license_url", "artist_name", "track_title", "track_url", "album_title"} <= set(raw.columns)
    vibe = raw[raw["track_title"] == "Vibe Ace"].iloc[0]
    assert vibe["artist_name"] == "Kevin MacLeod" and canonical_license(vibe["license_url"]) == "cc-by-3.0"
    assert raw["license_url"].isna().sum() >= 1  # a track without a license, as in the real dump
    for tid in tracks.index:
        tid6 = f"{tid:06d}"
        path = fma_dir / "fma_large" / tid6[:3] / f"{tid6}.mp3"
        assert path.is_file() and sf.info(str(path)).samplerate == 44100
    checks = (fma_dir / "fma_metadata" / "checksums").read_text().splitlines()
    assert len(checks) == len(fma)


def test_fma_over_http_and_traversal_blocked(replica):
    r = requests.get(replica.base_url + "/fma/fma_metadata/raw_tracks.csv", timeout=10)
    assert r.status_code == 200 and "license_url" in r.text.splitlines()[0]
    assert requests.get(replica.base_url + "/fma/fma_large/000/000002.mp3", timeout=10).status_code == 200
    import http.client
    c = http.client.HTTPConnection(replica.base_url.split("//")[1])
    c.request("GET", "/fma/../../../etc/passwd")
    assert c.getresponse().status == 404


def test_fma_build_is_idempotent(corpus_entries, tmp_path):
    from sao.sources.replica import build_fma_replica
    build_fma_replica(corpus_entries, tmp_path)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    build_fma_replica(corpus_entries, tmp_path)
    second = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert first == second
