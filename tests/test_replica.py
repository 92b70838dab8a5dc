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
    r = get(replica, page=99, page_size=150)
    assert r.status_code == 404 and r.json()["detail"] == "Invalid page."
    r = get(replica, page="x")
    assert r.status_code == 400 and "detail" in r.json()


def test_auth_failures_are_401_with_detail(replica):
    r = get(replica, headers={})
    assert r.status_code == 401 and r.json() == {"detail": "Authentication credentials were not provided."}
    r = get(replica, headers={"Authorization": "Token wrong"})
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token."
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
    j = get(replica, filter=f"created:[{cut} TO *]", sort="created_asc", page_size=150, fields="id,created").json()
    assert j["count"] == len(freesound_sounds) - 10
    created = [r["created"] for r in j["results"]]
    assert created == sorted(created) and created[0] == cut
    j = get(replica, filter="duration:[30 TO *]", page_size=150, fields="duration").json()
    assert j["count"] >= 1 and all(r["duration"] >= 30 for r in j["results"])
    j = get(replica, filter="tag:dog", fields="tags").json()
    assert j["count"] >= 1 and all("dog" in r["tags"] for r in j["results"])
    j = get(replica, filter="type:(wav OR flac) channels:1", page_size=150, fields="type,channels").json()
    assert j["count"] >= 1 and all(r["type"] in ("wav", "flac") and r["channels"] == 1 for r in j["results"])
    j = get(replica, query="water -lava", fields="name").json()
    assert j["count"] >= 1 and all("lava" not in r["name"].lower() for r in j["results"])
    r = get(replica, filter="colour:red")
    assert r.status_code == 400 and "colour" in r.json()["detail"]


def test_all_requested_fields_and_sound_instance(replica):
    j = get(replica, fields=ALL_FIELDS, page_size=1).json()
    s = j["results"][0]
    assert set(s) == set(ALL_FIELDS.split(","))
    assert set(s["previews"]) == {"preview-hq-mp3", "preview-lq-mp3", "preview-hq-ogg", "preview-lq-ogg"}
    assert len(s["md5"]) == 32 and s["download"].endswith(f"/sounds/{s['id']}/download/")
    one = get(replica, f"/sounds/{s['id']}/").json()
    assert one["id"] == s["id"] and one["md5"] == s["md5"] and "_path" not in one
    assert get(replica, "/sounds/1/").status_code == 404


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


def test_throttle_returns_429_with_retry_after(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(rate_limit_per_minute=3)) as srv:
        codes = [requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=10).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=10)
        assert r.status_code == 429 and "3/minute" in r.json()["detail"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
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
