"""The PyPI ``freesound-api`` client (MTG's freesound-python, ``freesound.py``) against the replica:
what a third-party client sees, including what following freesound.org's ``next`` links gives."""
import copy
import datetime as dt
import hashlib

import freesound          # freesound-api, a test dependency (pyproject.toml [test])
import pytest
import soundfile as sf

from sao.licensing import canonical_license
from sao.sources.replica import ReplicaServer, ReplicaSettings

SECRET = "pypi-client-token-81d0"
OAUTH = "pypi-client-oauth-4be2"


def _sampling_copies(freesound_sounds, n):
    base = next(s for s in freesound_sounds if s["_license_name"] == "Sampling+")
    out = []
    for i in range(n):
        s = copy.deepcopy(base)
        s.update(id=910_001 + i, name=f"sampling copy {i}", md5=f"{i + 1:032x}",
                 created=(dt.datetime(2025, 2, 1) + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%S"))
        out.append(s)
    return out


@pytest.fixture
def srv(freesound_sounds, monkeypatch):
    sounds = freesound_sounds + _sampling_copies(freesound_sounds, 4)
    settings = ReplicaSettings(api_tokens=[SECRET], oauth_tokens=[OAUTH], rate_limit_per_minute=0)
    with ReplicaServer(sounds, settings) as s:
        monkeypatch.setattr(freesound.URIS, "HOST", s.base_url.split("//", 1)[1])
        monkeypatch.setattr(freesound.URIS, "BASE", s.api_url)
        yield s


@pytest.fixture
def client(srv):
    c = freesound.FreesoundClient()
    c.set_token(SECRET)
    return c


def _licensed(srv, *canonical):
    return sorted(s["id"] for s in srv.sounds() if canonical_license(s["license"]) in canonical)


def test_text_search_with_license_filters(srv, client):
    pager = client.text_search(query="", filter='license:"Creative Commons 0"', page_size=150,
                               fields="id,name,license,previews")
    assert pager.count == len(_licensed(srv, "cc0-1.0")) and pager.next is None
    sounds = [pager[i] for i in range(len(pager.results))]
    assert sorted(s.id for s in sounds) == _licensed(srv, "cc0-1.0")
    assert {s.license for s in sounds} == {"http://creativecommons.org/publicdomain/zero/1.0/"}
    assert all(s.previews.preview_hq_mp3.endswith(f"/previews/{s.id}-hq.mp3") for s in sounds)  # dashes -> _
    pager = client.text_search(filter='license:("Attribution" OR "Sampling+")', page_size=150, fields="id")
    assert sorted(r["id"] for r in pager.results) == _licensed(srv, "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0")


def test_paging_by_next_covers_a_listing_without_plus(srv, client):
    pager = client.text_search(filter='license:"Attribution"', sort="created_asc", page_size=3, fields="id,created")
    seen, pages = [], 0
    while True:
        seen += [r["id"] for r in pager.results]
        pages += 1
        if pager.next is None:
            break
        assert "&weights=&sort=created_asc&page=" in pager.next     # construct_link's layout
        pager = pager.next_page()
    assert sorted(seen) == _licensed(srv, "cc-by-3.0", "cc-by-4.0") and pages == -(-len(seen) // 3)
    assert pager.previous is not None and pager.previous_page().results[0]["id"] == seen[-len(pager.results) - 3]


def test_following_next_for_sampling_plus_loses_the_rest_as_on_freesound(srv, client):
    """requests encodes the first request's + as %2B; the server's next link leaves it bare, and
    Django reads a bare + as a space: page 2 asks for license:"Sampling " and the string field
    matches nothing. What a client following next sees on freesound.org: count 0, no results."""
    expected = _licensed(srv, "cc-sampling+-1.0")
    first = client.text_search(filter='license:"Sampling+"', sort="created_asc", page_size=3, fields="id")
    assert first.count == len(expected) == 5 and len(first.results) == 3
    assert "filter=license:%22Sampling+%22" in first.next
    second = first.next_page()
    assert (second.count, second.results, second.next, second.previous) == (0, [], None, None)
    # asking for page 2 with the client's own parameters (what sao's crawler does) gets the rest
    page2 = client.text_search(filter='license:"Sampling+"', sort="created_asc", page_size=3, page=2, fields="id")
    assert [r["id"] for r in first.results + page2.results] == sorted(expected, key=_created(srv))


def _created(srv):
    created = {s["id"]: s["created"] for s in srv.sounds()}
    return lambda sid: (created[sid], sid)


def test_a_null_result_breaks_the_pypi_clients_indexing(srv, client):
    """freesound.org lists null for a sound its index has and its database lost; the PyPI client's
    ``Pager[i]`` builds a Sound from it and fails (sao's crawler counts and skips it instead)."""
    victim = _licensed(srv, "cc-sampling+-1.0")[0]
    srv.remove_from_database(victim)
    pager = client.text_search(filter='license:"Sampling+"', page_size=150, fields="id")
    assert pager.count == 5 and pager.results.count(None) == 1
    with pytest.raises(AttributeError):
        pager[pager.results.index(None)]
    with pytest.raises(freesound.FreesoundException) as exc:
        client.get_sound(victim)
    assert exc.value.code == 404


def test_sound_by_id_preview_and_oauth_download(srv, client, tmp_path):
    target = next(s for s in srv.sounds() if s["channels"] == 1)
    sound = client.get_sound(target["id"])
    assert (sound.id, sound.name, sound.md5) == (target["id"], target["name"], target["md5"])
    assert sound.created.endswith("Z") and isinstance(sound.samplerate, float)
    assert sound.download.endswith(f"/apiv2/sounds/{target['id']}/download/")
    sound.retrieve_preview(str(tmp_path))
    info = sf.info(str(tmp_path / f"{target['id']}-lq.mp3"))
    assert info.samplerate == 44100 and info.channels == 2
    # the original needs OAuth2: with the API token it is refused, with a Bearer token it is the file
    with pytest.raises(freesound.FreesoundException) as exc:
        sound.retrieve(str(tmp_path), name="refused.bin")
    assert exc.value.code == 401 and not (tmp_path / "refused.bin").exists()
    client.set_token(OAUTH, "oauth")
    sound.retrieve(str(tmp_path), name="original.bin")
    data = (tmp_path / "original.bin").read_bytes()
    assert hashlib.md5(data).hexdigest() == target["md5"] and len(data) == target["filesize"]


def test_bad_credentials_and_unknown_sound(srv):
    c = freesound.FreesoundClient()
    c.set_token("not-a-token")
    with pytest.raises(freesound.FreesoundException) as exc:
        c.text_search(filter='license:"Attribution"')
    assert exc.value.code == 401
    c.set_token(SECRET)
    with pytest.raises(freesound.FreesoundException) as exc:
        c.get_sound(1)
    assert exc.value.code == 404
