"""Copyright review: the loopback content-detection service and its client (with faults),
FMA catalogue matching, and `sao review` driven from a test."""
import datetime as dt
import pathlib
import shutil

import numpy as np
import pytest

from .conftest import decode_stored
import soundfile as sf

from sao import cli
from sao.audio import load
from sao.catalog import Catalog, Decision
from sao.review import queue
from sao.review.catalogue_match import find_matches, load_catalogue, normalise
from sao.review.detection_client import DetectionClient, DetectionError
from sao.review.detection_service import DetectionService
from sao.review.stage import run_content_review, run_fma_review
from sao.shards import eligible_recordings

from .conftest import REPO

KEY = "detect-key-77"
NOW = dt.datetime(2026, 1, 1)


@pytest.fixture(scope="module")
def audio(corpus_entries, tmp_path_factory):
    """References (declared copyrighted) and queries: a field recording with a reference track playing
    underneath at -12 dB, and the same field recording alone."""
    d = tmp_path_factory.mktemp("review_audio")
    by = {e["id"]: e for e in corpus_entries}
    refs = d / "refs"
    refs.mkdir()
    for i in ("fma-vibe-ace", "fma-funkyrobot"):
        shutil.copyfile(by[i]["path"], refs / pathlib.Path(by[i]["path"]).name)
    field, _ = load(by["onsen-water"]["path"], sample_rate=44100, mono=True)
    music, _ = load(by["fma-vibe-ace"]["path"], sample_rate=44100, mono=True, start=25, duration=20)
    gain = 10 ** (-12 / 20) * np.sqrt((field ** 2).mean() / (music ** 2).mean())
    mixed = field[0, : music.shape[1]] + gain * music[0]
    sf.write(d / "field_with_music.wav", mixed, 44100)
    sf.write(d / "field.wav", field[0], 44100)
    return d


@pytest.fixture
def service(audio):
    with DetectionService(audio / "refs", api_key=KEY) as svc:
        yield svc


def wait(client, ref, tries=100):
    import time
    for _ in range(tries):
        r = client.result(ref)
        if r["status"] != "processing":
            return r
        time.sleep(0.05)
    raise AssertionError("no verdict")


def test_service_catches_music_in_the_background_of_a_field_recording(service, audio):
    c = DetectionClient(service.url, KEY)
    hit = wait(c, c.submit(audio / "field_with_music.wav"))
    assert hit["verdict"] == "match" and hit["matches"][0]["reference"] == "fma-vibe-ace"
    assert hit["matches"][0]["score"] >= 20 and 0 <= hit["matches"][0]["offset_seconds"] <= 45  # a looped track can align at more than one bar
    clean = wait(c, c.submit(audio / "field.wav"))
    assert clean["verdict"] == "clear" and clean["matches"] == []


def test_client_errors(service, audio):
    with pytest.raises(DetectionError, match="401"):
        DetectionClient(service.url, "wrong").submit(audio / "field.wav")
    service.inject_fault("POST", 503)
    with pytest.raises(DetectionError, match="503"):
        DetectionClient(service.url, KEY).submit(audio / "field.wav")
    service.inject_fault("POST", "stall")
    with pytest.raises(DetectionError, match="Timeout"):
        DetectionClient(service.url, KEY, timeout=0.5).submit(audio / "field.wav")
    with pytest.raises(DetectionError, match="API key"):
        DetectionClient(service.url, "")


def _catalogue_with(tmp_path, items):
    """items: {recording_id: (path, screen verdict)} admitted Freesound recordings."""
    cat = Catalog(tmp_path / "c.duckdb")
    recs, decs = [], []
    for rid, (path, _verdict) in items.items():
        sid = rid.split(":")[1]
        recs.append(dict(source="freesound", source_id=sid, title=sid, duration=20.0, crawl_time=NOW,
                         license_raw="http://creativecommons.org/publicdomain/zero/1.0/",
                         audio_path=str(path).lstrip("/")))     # under the store "/"
        decs.append(Decision(rid, "license_gate", "pass", "ok", config_hash="t"))
    cat.upsert_recordings(recs)
    cat.add_decisions(decs)
    decode_stored(cat)                                 # only decoded audio reaches the content review
    # as screen_decisions writes them: bound to the content the screen read
    cat.add_decisions([Decision(rid, "music_screen", verdict, "music: test" if verdict == "flag" else "not-music: test",
                                config_hash="t", model_name="PANNs", uncalibrated=True,
                                details={"content_sha256": cat.get_recording(rid)["content_sha256"]})
                       for rid, (_, verdict) in items.items()])
    return cat


def test_content_review_clears_flags_and_keeps_failures_pending(service, audio, tmp_path):
    items = {"freesound:mix": (audio / "field_with_music.wav", "flag"),
             "freesound:field": (audio / "field.wav", "flag"),
             "freesound:quiet": (audio / "field.wav", "pass")}
    with _catalogue_with(tmp_path, items) as cat:
        client = DetectionClient(service.url, KEY)
        service.inject_fault("POST", 500, times=1)            # the first submission fails
        out = run_content_review(cat, client, audio_store="/", config_hash="t", wait_seconds=10)
        assert out["queued"] == 2 and out["not_music_passed"] == 1 and out["errors"] == 1
        assert out["pending"] == 1                             # nothing lost: it waits for the next run
        pending = queue.items(cat, "pending")
        assert len(pending) == 1 and "500" in pending[0]["last_error"] and pending[0]["attempts"] == 1
        out2 = run_content_review(cat, client, audio_store="/", config_hash="t", wait_seconds=10)
        assert out2["pending"] == 0
        latest = cat.latest_decision_map("copyright_review")
        assert latest["freesound:mix"]["verdict"] == "reject" and "fma-vibe-ace" in latest["freesound:mix"]["reason"]
        assert latest["freesound:field"]["verdict"] == "pass"
        assert latest["freesound:quiet"]["verdict"] == "pass" and latest["freesound:quiet"]["reason"].startswith("not-music")
        flagged = queue.items(cat, "flagged")[0]
        assert flagged["decided_by"] == "service:loopback-fingerprint" and flagged["service_ref"]
        # a third run changes nothing
        assert run_content_review(cat, client, audio_store="/", config_hash="t")["queued"] == 0
        assert cat.counts()["review_queue"] == 2


def test_service_stall_leaves_item_submitted_then_resolves(service, audio, tmp_path):
    with _catalogue_with(tmp_path, {"freesound:mix": (audio / "field_with_music.wav", "flag")}) as cat:
        client = DetectionClient(service.url, KEY, timeout=0.5)
        run_content_review(cat, client, audio_store="/", config_hash="t", wait_seconds=0)
        service.inject_fault("GET", "stall", times=1)
        out = run_content_review(cat, client, audio_store="/", config_hash="t", wait_seconds=0)
        assert out["pending"] == 1 and out["errors"] == 1
        assert queue.items(cat, "submitted")[0]["last_error"]
        out = run_content_review(cat, client, audio_store="/", config_hash="t", wait_seconds=10)
        assert out["flagged"] == 1 and out["pending"] == 0


def test_normalise_and_fuzzy_matching():
    assert normalise("Call Me (Remastered 2001) feat. Someone") == "call me"
    assert normalise("Björk & The Sugarcubes") == "bjork and the sugarcubes"
    assert normalise("The Beatles") == "beatles"
    rows = [{"entry_id": "1", "artist": "Blondie", "title": "Call Me", "album": "", "year": 1980,
             "artist_norm": "blondie", "title_norm": "call me"},
            {"entry_id": "2", "artist": "Carly Rae Jepsen", "title": "Call Me Maybe", "album": "", "year": 2012,
             "artist_norm": "carly rae jepsen", "title_norm": "call me maybe"}]
    titles = [r["title_norm"] for r in rows]
    m = find_matches("Call me", "Anonymous", rows, titles)
    assert [x["entry_id"] for x in m] == ["1"] and m[0]["title_score"] == 100
    assert find_matches("Blondie - call me", "x", rows, titles) == []
    assert find_matches("Cal Me", "Blondie", rows, titles, title_min=85)[0]["artist_score"] == 100


def test_fma_review_and_sao_review_cli(tmp_path, capsys, monkeypatch):
    cfgfile = tmp_path / "sao.toml"
    cfgfile.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\naudio_store = "{tmp_path}"\n')
    with Catalog(tmp_path / "c.duckdb") as cat:
        for i, (title, artist) in enumerate([("Call me", "Anonymous"), ("Vibe Ace", "Kevin MacLeod"),
                                             ("Bohemian Rhapsody", "A Tribute Band")]):
            cat.upsert_recordings([dict(source="fma", source_id=str(i + 2), title=title, author=artist,
                                        crawl_time=NOW, license_raw="http://creativecommons.org/licenses/by/3.0/",
                                        audio_path=f"{i}.mp3")])
            cat.set_audio(f"fma:{i + 2}", f"sha-{i}", f"{i}.mp3", "original")
            cat.set_probed([(f"fma:{i + 2}", f"sha-{i}", 30.0, 44100, 2)])     # as the decode stage records it
            cat.add_decisions([Decision(f"fma:{i + 2}", "license_gate", "pass", "ok", config_hash="t"),
                               Decision(f"fma:{i + 2}", "decode", "pass", "decodes", config_hash="t",
                                        details={"content_sha256": f"sha-{i}"})])
        assert load_catalogue(cat, REPO / "datasets" / "copyright_catalogue" / "sample.csv") == 25
        out = run_fma_review(cat, config_hash="t")
        assert out == {"checked": 3, "no_match": 1, "to_human_review": 2, "catalogue_rows": 25,
                       "pending_human_review": 2}
        assert run_fma_review(cat, config_hash="t")["checked"] == 0
        ids = {r["recording_id"]: r["review_id"] for r in queue.items(cat, "pending")}
        # pending review items are not admitted to shards
        assert [r["recording_id"] for r in eligible_recordings(cat, ["license_gate", "copyright_review"],
                                                                tmp_path)] == ["fma:3"]
    monkeypatch.setenv("SAO_REVIEWER", "ada")
    assert cli.main(["--config", str(cfgfile), "review", "list"]) == 0
    listing = capsys.readouterr().out
    assert "metadata-match" in listing and "Call me" in listing
    assert cli.main(["--config", str(cfgfile), "review", "show", str(ids["fma:2"])]) == 0
    shown = capsys.readouterr().out
    assert "Blondie - Call Me" in shown and "title 100" in shown and "audio:" in shown
    assert cli.main(["--config", str(cfgfile), "review", "approve", str(ids["fma:2"]), "--note",
                     "different song, same title"]) == 0
    assert cli.main(["--config", str(cfgfile), "review", "reject", str(ids["fma:4"]), "--note", "a cover of Queen",
                     "--by", "grace"]) == 0
    assert cli.main(["--config", str(cfgfile), "review", "reject", str(ids["fma:4"]), "--note", "again"]) == 1
    assert cli.main(["--config", str(cfgfile), "review", "approve", "999", "--note", "x"]) == 1
    capsys.readouterr()
    with Catalog(tmp_path / "c.duckdb") as cat:
        latest = cat.latest_decision_map("copyright_review")
        assert latest["fma:2"]["verdict"] == "pass" and latest["fma:2"]["details"]["by"] == "ada"
        assert latest["fma:4"]["verdict"] == "reject" and "grace" in latest["fma:4"]["reason"]
        item = queue.get(cat, ids["fma:4"])
        assert item["status"] == "flagged" and item["decided_by"] == "grace" and item["decided_at"]
        admitted = {r["recording_id"] for r in eligible_recordings(cat, ["license_gate", "copyright_review"], tmp_path)}
        assert admitted == {"fma:2", "fma:3"}                 # the rejected track is excluded
        assert cat.get_recording("fma:4") is not None           # but nothing is deleted
