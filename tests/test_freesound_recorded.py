"""Response pages shaped as freesound.org's server code writes them (tests/data/freesound_api/,
written from MTG/freesound's apiv2 views, forms and serializers; index.json names the code behind
each), fed to the project's parsing, and the replica's answers compared with them key by key."""
import copy
import datetime as dt
import json
import pathlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sao.catalog import Catalog
from sao.sources import record_checks as rc
from sao.sources.freesound import SEARCH_FIELDS, FreesoundClient
from sao.sources.freesound_crawl import crawl_freesound, sound_to_record
from sao.sources.replica import ReplicaServer, ReplicaSettings

DATA = pathlib.Path(__file__).parent / "data" / "freesound_api"
INDEX = json.loads((DATA / "index.json").read_text())
SECRET = "recorded-token-3c9e"
TOKEN = {"Authorization": f"Token {SECRET}"}
SAMPLING = "http://creativecommons.org/licenses/sampling+/1.0/"
CRAWL_TIME = dt.datetime(2026, 1, 1)
# serializer fields that are null for some sounds and a value for others (apiv2/serializers.py)
NULLABLE = {"pack": str, "pack_name": str, "geotag": str, "category": str, "subcategory": str, "category_code": str,
            "bitdepth": int, "similar_sounds": str, "score": float}


def recorded(name: str):
    return json.loads((DATA / name).read_text())


def same_shape(got, want, where: str) -> None:
    """Same keys in the same order, same JSON value types (a nullable field may be null on either side)."""
    assert list(got) == list(want), f"{where}: keys differ"
    for key, value in want.items():
        types = {type(value), type(got[key])}
        if key in NULLABLE:
            types -= {type(None)}
            assert types <= {NULLABLE[key]}, f"{where}.{key}: {got[key]!r} vs {value!r}"
        else:
            assert type(got[key]) is type(value), f"{where}.{key}: {got[key]!r} vs {value!r}"
        if isinstance(value, dict):
            same_shape(got[key], value, f"{where}.{key}")


def test_recorded_pages_follow_the_index():
    names = {r["file"] for r in INDEX["responses"]}
    assert names == {p.name for p in DATA.glob("*.json")} - {"index.json"}
    assert INDEX["search_fields"] == ",".join(SEARCH_FIELDS)      # the crawler's own field list
    page = recorded("search_sampling_plus_page1.json")
    assert list(page) == ["count", "previous", "next", "results"] and page["results"][1] is None
    assert 'license:%22Sampling+%22' in page["next"]              # my_quote leaves + as it is


def test_recorded_items_parse_cleanly():
    page = recorded("search_sampling_plus_page1.json")
    items = [s for s in page["results"] if s is not None]
    for s in items + [recorded("sound_instance.json")]:
        rec, problems = sound_to_record(s, crawl_time=CRAWL_TIME, site="https://freesound.org")
        assert problems == {}, problems
        assert rec["license_canonical"] == "cc-sampling+-1.0" and rec["license_url"] == SAMPLING
        assert rec["page_url"] == s["url"] and rec["audio_url"] == s["download"]
        assert rec["preview_url"] == s["previews"]["preview-hq-mp3"]
        assert isinstance(rec["sample_rate"], int) and rec["sample_rate"] == int(s["samplerate"])
        assert rec["created_at"] == dt.datetime.fromisoformat(s["created"].replace("Z", ""))
    assert rec["created_at"] == dt.datetime(2016, 5, 3, 10, 21, 7)       # "2016-05-03T10:21:07Z", UTC


def test_a_null_result_is_an_unusable_item_not_a_crash():
    with pytest.raises(rc.UnusableItem, match="expected a JSON object, got NoneType"):
        sound_to_record(None, crawl_time=CRAWL_TIME, site="https://freesound.org")


class RecordedServer:
    """Answers the crawler's search requests with the recorded pages: the Sampling+ page first,
    then (for the watermark request that follows) what freesound.org answers a page past the end."""

    site = "https://freesound.org"

    def __init__(self):
        self.asked: list[tuple[str, int]] = []

    def search_page(self, filter: str, page: int = 1, **_):
        self.asked.append((filter, page))
        return recorded("search_sampling_plus_page1.json" if len(self.asked) == 1 else "search_sampling_plus_next.json")


def test_crawl_skips_and_counts_the_null_of_a_recorded_page(tmp_path):
    server = RecordedServer()
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = crawl_freesound(cat, server, license_names=("Sampling+",), page_size=3)
        got = {r["source_id"]: r for r in cat.query("SELECT source_id, license_canonical FROM recordings")}
    assert set(got) == {"412017", "415933"}                    # the items around the null are kept
    assert st.malformed == 1 and "expected a JSON object, got NoneType" in st.malformed_reasons[0]
    assert server.asked[0] == ('license:"Sampling+"', 1)
    assert server.asked[1][0].startswith('license:"Sampling+" created:[2016-06-11T18:02:44Z TO *]')


def _sampling_sounds(freesound_sounds, n: int) -> list[dict]:
    """The corpus has one Sampling+ sound; copies under new ids and later upload times make a
    listing long enough to have pages."""
    base = next(s for s in freesound_sounds if s["_license_name"] == "Sampling+")
    out = []
    for i in range(n):
        s = copy.deepcopy(base)
        s.update(id=900_001 + i, name=f"sampling copy {i}", md5=f"{i:032x}",
                 created=(dt.datetime(2025, 1, 1) + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S"))
        out.append(s)
    return out


@pytest.fixture
def sampling_replica(freesound_sounds):
    extra = _sampling_sounds(freesound_sounds, 4)
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0, index_only_ids=(extra[1]["id"],))
    with ReplicaServer(freesound_sounds + extra, settings) as srv:
        yield srv, extra


def test_replica_search_page_has_the_recorded_shape(sampling_replica):
    srv, extra = sampling_replica
    want = recorded("search_sampling_plus_page1.json")
    r = requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=30, params={
        "query": "", "filter": 'license:"Sampling+"', "sort": "created_asc", "fields": INDEX["search_fields"],
        "page_size": 3, "page": 1, "token": "never-echoed"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    got = r.json()
    assert list(got) == list(want) and got["previous"] is None
    assert got["count"] == 5                                     # the corpus's one and the four copies
    # the same link, byte for byte, but for the host: the token is not carried into it
    assert got["next"].replace(srv.api_url, "https://freesound.org/apiv2") == want["next"]
    assert [s is None for s in got["results"]] == [False, False, True]   # extra[1] is in the index only
    for i, s in enumerate(x for x in got["results"] if x is not None):
        same_shape(s, want["results"][0], f"results[{i}]")
    assert got["results"][0]["created"] == "2024-01-04T12:00:00Z"


def test_following_next_for_sampling_plus_finds_nothing_as_on_freesound(sampling_replica):
    """Django reads the link's unencoded + as a space: the filter becomes license:"Sampling " and
    the string field matches nothing, so page 2 is a 200 with count 0, not the rest of the listing."""
    srv, _ = sampling_replica
    first = requests.get(srv.api_url + "/search/", headers=TOKEN, timeout=30, params={
        "filter": 'license:"Sampling+"', "sort": "created_asc", "fields": "id", "page_size": 3}).json()
    assert first["count"] == 5 and first["next"]
    assert parse_qs(urlsplit(first["next"]).query)["filter"] == ['license:"Sampling "']
    nxt = requests.get(first["next"], headers=TOKEN, timeout=30)
    assert nxt.status_code == 200 and nxt.json() == recorded("search_sampling_plus_next.json")
    # an encoded %2B is what the crawler sends: then page 2 has the remaining two sounds
    fixed = first["next"].replace("Sampling+", "Sampling%2B")
    assert [s["id"] for s in requests.get(fixed, headers=TOKEN, timeout=30).json()["results"]] == [900_003, 900_004]


def test_replica_sound_instance_has_the_recorded_shape(sampling_replica):
    srv, extra = sampling_replica
    sid = extra[0]["id"]
    got = requests.get(f"{srv.api_url}/sounds/{sid}/", headers=TOKEN, timeout=30).json()
    same_shape(got, recorded("sound_instance.json"), "instance")
    assert got["samplerate"] == 44100.0 and got["avg_rating"] == 0.0 and got["created"] == "2025-01-01T00:00:00Z"
    got = requests.get(f"{srv.api_url}/sounds/{sid}/", headers=TOKEN, timeout=30,
                       params={"fields": "name,id,created,previews,nosuchfield"}).json()
    same_shape(got, recorded("sound_instance_fields.json"), "instance?fields")
    # the sound the index still lists is gone from the database: its instance is a 404
    r = requests.get(f"{srv.api_url}/sounds/{extra[1]['id']}/", headers=TOKEN, timeout=30)
    assert (r.status_code, r.json()) == (404, recorded("error_sound_not_found.json"))


@pytest.mark.parametrize("params,headers,name", [
    ({"filter": 'license:"Sampling+"', "page": 9}, TOKEN, "error_page_out_of_range.json"),
    ({"page": 0}, TOKEN, "error_page_out_of_range.json"),
    ({"page_size": -3}, TOKEN, "error_page_out_of_range.json"),
    ({"filter": ""}, TOKEN, "error_invalid_filter.json"),
    ({"filter": "  "}, TOKEN, "error_invalid_filter.json"),
    ({"filter": "colour:red"}, TOKEN, "error_undefined_field.json"),
    ({}, {}, "error_no_credentials.json"),
])
def test_replica_errors_are_the_recorded_ones(sampling_replica, params, headers, name):
    srv, _ = sampling_replica
    status = next(x["status"] for x in INDEX["responses"] if x["file"] == name)
    r = requests.get(srv.api_url + "/search/", params=params, headers=headers, timeout=30)
    assert (r.status_code, r.json()) == (status, recorded(name))


def test_replica_invalid_token_text(sampling_replica):
    srv, _ = sampling_replica
    r = requests.get(srv.api_url + "/search/", headers={"Authorization": "Token wrong"}, timeout=30)
    assert (r.status_code, r.json()) == (401, recorded("error_invalid_token.json"))


def test_crawl_over_a_replica_page_with_a_null(sampling_replica, tmp_path):
    srv, extra = sampling_replica
    client = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = crawl_freesound(cat, client, license_names=("Sampling+",), page_size=3)
        got = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")}
    listed = {str(s["id"]) for s in srv.sounds() if s["_license_name"] == "Sampling+"}
    assert got == listed and str(extra[1]["id"]) not in got     # every sound the database has, nothing else
    assert st.malformed == 1 and "NoneType" in st.malformed_reasons[0]


def test_the_client_can_list_without_a_filter(sampling_replica):
    srv, _ = sampling_replica
    client = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    # the count is the search index's: it still lists the sound the database no longer has
    assert client.search_page("", page_size=3)["count"] == len(srv.index_sounds()) == len(srv.sounds()) + 1
