"""Copyright review bound to what it judged (review findings 1b and 6): each test reproduces one hole.

* Content review (Freesound): every copyright_review decision names the audio it judged
  (details.content_sha256); a queue entry is keyed on (recording, kind, content), so new audio
  under the same recording is reviewed again, even after an older entry was decided.
* FMA metadata review: each decision records the title, artist, catalogue version and threshold it
  checked (details.checked, no content_sha256: it is about metadata); a change to any of them
  re-checks the track, and a human's flag is not undone by a new title.
"""
import datetime as dt

import numpy as np
import pytest
import soundfile as sf

from sao.audio.stage import run_decode
from sao.catalog import Catalog, CatalogError, Decision
from sao.licensing.gate import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.review import queue
from sao.review.catalogue_match import load_catalogue
from sao.review.stage import describe_item, run_content_review, run_fma_review

from .conftest import REPO

NOW = dt.datetime(2026, 1, 1)
SAMPLE = REPO / "datasets" / "copyright_catalogue" / "sample.csv"
REQ = ["license_gate", "copyright_review"]


# --- content review (Freesound) -----------------------------------------------------------------------------------

class FakeService:
    """A content-detection client whose verdict per stored file name the test sets."""
    name = "fake"

    def __init__(self, verdicts):
        self.verdicts, self.sent = verdicts, []

    def submit(self, path):
        self.sent.append(path.name)
        return path.name

    def result(self, ref):
        return self.verdicts[ref]


CLEAR = {"status": "done", "verdict": "clear", "matches": []}
MATCH = {"status": "done", "verdict": "match", "matches": [{"reference": "ref-song", "score": 40,
                                                           "offset_seconds": 3}]}


@pytest.fixture
def fs(tmp_path):
    """A catalogue with Freesound recordings; .audio(rid, sha, name, hz) stores and decodes new audio,
    .screen(rid, verdict) records the music screen's verdict about the audio held now."""
    store = tmp_path / "audio"
    store.mkdir()
    cat = Catalog(tmp_path / "c.duckdb")

    class F:
        pass
    f = F()
    f.cat, f.store = cat, store

    def audio(rid, sha, name, hz=440.0, md5="a" * 32):
        cat.upsert_recordings([{"source": "freesound", "source_id": rid.split(":")[1], "title": "x", "author": "a",
                                "crawl_time": NOW, "md5": md5,
                                "license_raw": "http://creativecommons.org/publicdomain/zero/1.0/"}])
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        t = np.arange(44100 * 2) / 44100
        sf.write(store / name, (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 44100)
        cat.set_audio(rid, sha, name, "preview-hq-mp3")
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)

    def screen(rid, verdict):   # as screen_decisions writes it: bound to the content it read
        sha = cat.get_recording(rid)["content_sha256"]
        cat.add_decisions([Decision(rid, "music_screen", verdict, f"{verdict}: test", config_hash="t",
                                    model_name="panns", uncalibrated=True,
                                    details={"signature": "s", "content_sha256": sha})])

    def review(client=None):
        return run_content_review(cat, client, audio_store=store, config_hash="t", wait_seconds=2,
                                  poll_interval=0.01)

    f.audio, f.screen, f.review = audio, screen, review
    f.latest = lambda rid: cat.latest_decision_map("copyright_review")[rid]
    yield f
    cat.close()


def test_new_audio_flagged_after_the_old_audio_was_cleared_is_queued_again(fs):
    """r1b_flag_after_clear.py: the decided entry of the old audio kept the new, flagged audio out of
    the queue, and the old 'cleared' pass admitted it."""
    fs.audio("freesound:1", "sha-old", "old.wav")
    fs.screen("freesound:1", "flag")
    assert fs.review()["queued"] == 1
    item = queue.items(fs.cat, "pending", "content-detection")[0]
    queue.decide(fs.cat, item["review_id"], cleared=True, by="service:x", note="no match")
    assert fs.cat.admitted_ids(REQ) == {"freesound:1"}
    fs.audio("freesound:1", "sha-new", "new.wav", hz=880, md5="b" * 32)      # new audio at the source
    fs.screen("freesound:1", "flag")
    out = fs.review()
    assert out["queued"] == 1 and out["pending"] == 1
    latest = fs.latest("freesound:1")
    assert latest["verdict"] == "review" and latest["details"]["content_sha256"] == "sha-new"
    assert [queue.binding(i) for i in queue.items(fs.cat, kind="content-detection")] == [
        {"content_sha256": "sha-old"}, {"content_sha256": "sha-new"}]
    assert fs.cat.admitted_ids(REQ) == set()
    assert fs.review()["queued"] == 0                     # the same audio is not queued twice


def test_every_content_review_decision_names_the_audio_it_judged(fs):
    for rid, name in (("freesound:quiet", "q.wav"), ("freesound:clean", "c.wav"), ("freesound:song", "s.wav")):
        fs.audio(rid, f"sha-{rid[10:]}", name)
    fs.screen("freesound:quiet", "pass")
    fs.screen("freesound:clean", "flag")
    fs.screen("freesound:song", "flag")
    out = fs.review()
    assert out["not_music_passed"] == 1 and out["queued"] == 2
    assert fs.latest("freesound:quiet")["details"]["content_sha256"] == "sha-quiet"        # not-music pass
    assert fs.latest("freesound:song")["verdict"] == "review"
    assert fs.latest("freesound:song")["details"]["content_sha256"] == "sha-song"          # queued
    out = fs.review(FakeService({"c.wav": CLEAR, "s.wav": MATCH}))
    assert out["cleared"] == 1 and out["flagged"] == 1 and out["pending"] == 0
    clean, song = fs.latest("freesound:clean"), fs.latest("freesound:song")
    assert clean["verdict"] == "pass" and clean["details"]["content_sha256"] == "sha-clean"  # cleared
    assert song["verdict"] == "reject" and song["details"]["content_sha256"] == "sha-song"   # flagged
    assert "ref-song" in song["reason"]
    flagged = queue.items(fs.cat, "flagged")[0]
    assert queue.binding(flagged) == {"content_sha256": "sha-song"}      # the service's answer kept the subject
    assert fs.review(FakeService({}))["queued"] == 0                      # nothing decided twice
    assert len(fs.cat.query("SELECT * FROM decisions WHERE stage = 'copyright_review'")) == 5


def test_a_review_of_replaced_audio_does_not_carry_over_and_a_screen_of_other_audio_gives_none(fs):
    fs.audio("freesound:1", "sha-old", "old.wav")
    fs.screen("freesound:1", "pass")
    fs.review()
    assert fs.cat.admitted_ids(REQ) == {"freesound:1"}
    fs.audio("freesound:1", "sha-new", "new.wav", hz=880, md5="b" * 32)      # not screened yet
    assert fs.review()["not_music_passed"] == 0
    assert fs.latest("freesound:1")["details"]["content_sha256"] == "sha-old"   # about the old audio only
    assert fs.cat.admitted_ids(REQ) == set()


def test_audio_that_comes_back_gets_its_own_verdict_again(fs):
    fs.audio("freesound:1", "sha-a", "a.wav")
    fs.screen("freesound:1", "flag")
    fs.review(FakeService({"a.wav": CLEAR}))
    fs.audio("freesound:1", "sha-b", "b.wav", hz=880, md5="b" * 32)
    fs.screen("freesound:1", "flag")
    fs.review()
    assert fs.latest("freesound:1")["verdict"] == "review"
    fs.audio("freesound:1", "sha-a", "a.wav", md5="a" * 32)                  # the first audio again
    fs.screen("freesound:1", "flag")
    assert fs.review()["queued"] == 0
    latest = fs.latest("freesound:1")
    assert latest["verdict"] == "pass" and latest["details"]["content_sha256"] == "sha-a"
    assert latest["details"]["review_id"] == queue.items(fs.cat, "cleared")[0]["review_id"]


def test_an_entry_about_replaced_audio_is_not_sent_and_cannot_be_cleared(fs):
    fs.audio("freesound:1", "sha-old", "old.wav")
    fs.screen("freesound:1", "flag")
    fs.review()
    old = queue.items(fs.cat, "pending")[0]
    fs.audio("freesound:1", "sha-new", "new.wav", hz=880, md5="b" * 32)
    svc = FakeService({"new.wav": CLEAR})
    assert fs.review(svc)["pending"] == 0 and svc.sent == []              # the new audio is not screened yet
    with pytest.raises(CatalogError, match=rf"review item {old['review_id']} \(freesound:1\) cannot be cleared: "
                                           "it judged audio sha-old, the recording now holds sha-new"):
        queue.decide(fs.cat, old["review_id"], cleared=True, by="ada", note="sounds fine")
    assert "obsolete:  it judged audio sha-old" in describe_item(fs.cat, old["review_id"], fs.store)
    queue.decide(fs.cat, old["review_id"], cleared=False, by="ada", note="music")   # flagging is always safe
    assert fs.latest("freesound:1")["details"]["content_sha256"] == "sha-old"


@pytest.mark.parametrize("bad", [["not", "an", "object"], {"status": "done", "verdict": "maybe"},
                                 {"status": "done", "verdict": "match", "matches": [{"score": 9}]},
                                 {"status": "done", "verdict": "clear", "matches": [{"reference": "x"}]},
                                 {"status": 7}])
def test_a_malformed_service_answer_stays_pending_and_does_not_stop_the_others(fs, bad):
    fs.audio("freesound:bad", "sha-bad", "bad.wav")
    fs.audio("freesound:good", "sha-good", "good.wav", hz=660)
    fs.screen("freesound:bad", "flag")
    fs.screen("freesound:good", "flag")
    out = fs.review(FakeService({"bad.wav": bad, "good.wav": CLEAR}))
    assert out["cleared"] == 1 and out["errors"] == 1 and out["pending"] == 1
    pending = queue.items(fs.cat, "pending")
    assert [i["recording_id"] for i in pending] == ["freesound:bad"] and pending[0]["last_error"]
    assert fs.latest("freesound:bad")["verdict"] == "review"


# --- FMA metadata review --------------------------------------------------------------------------------------------

@pytest.fixture
def fma(tmp_path):
    cat = Catalog(tmp_path / "c.duckdb")
    load_catalogue(cat, SAMPLE)

    def track(title, artist, sid="2"):
        rid = f"fma:{sid}"
        cat.upsert_recordings([{"source": "fma", "source_id": sid, "title": title, "author": artist, "crawl_time": NOW,
                                "license_raw": "https://creativecommons.org/licenses/by/4.0/",
                                "license_url": "https://creativecommons.org/licenses/by/4.0/"}])
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        if not cat.get_recording(rid)["content_sha256"]:
            cat.set_audio(rid, f"sha-{sid}", f"{sid}.mp3", "original")
            cat.set_probed([(rid, f"sha-{sid}", 30.0, 44100, 2)])
            cat.add_decisions([Decision(rid, "decode", "pass", "ok", config_hash="t",
                                        details={"content_sha256": f"sha-{sid}"})])
        return rid
    cat.track = track
    yield cat
    cat.close()


def _latest(cat, rid="fma:2"):
    return cat.latest_decision_map("copyright_review")[rid]


def test_a_track_retitled_to_a_catalogued_song_is_checked_again(fma):
    """r8_fma_retitle.py: the pass for the old title stood after the retitle to 'Call Me' by Blondie."""
    fma.track("Field recording 12", "Someone")
    assert run_fma_review(fma, config_hash="t")["no_match"] == 1
    assert fma.admitted_ids(REQ) == {"fma:2"}
    first = _latest(fma)["details"]["checked"]
    assert {k: first[k] for k in ("title", "artist")} == {"title": "Field recording 12", "artist": "Someone"}
    assert len(first["catalogue"]) == 64 and first["title_min"] == 90.0
    fma.track("Call Me", "Blondie")
    out = run_fma_review(fma, config_hash="t")
    assert out["checked"] == 1 and out["to_human_review"] == 1
    latest = _latest(fma)
    assert latest["verdict"] == "review" and "'Call Me' by Blondie" in latest["reason"]
    assert latest["details"]["checked"]["title"] == "Call Me" and "content_sha256" not in latest["details"]
    assert fma.admitted_ids(REQ) == set()
    assert run_fma_review(fma, config_hash="t")["checked"] == 0       # nothing changed: nothing re-checked


def test_a_new_catalogue_or_threshold_re_checks_and_a_human_answer_to_the_same_question_stands(fma, tmp_path):
    fma.track("Call me", "Anonymous")
    fma.track("Field recording 12", "Someone", sid="3")
    run_fma_review(fma, config_hash="t")
    item = queue.items(fma, "pending", "metadata-match")[0]
    queue.decide(fma, item["review_id"], cleared=True, by="ada", note="another song of the same name")
    decided = _latest(fma)
    assert decided["verdict"] == "pass" and decided["details"]["checked"]["title"] == "Call me"
    assert "content_sha256" not in decided["details"]                 # metadata, not audio
    extra = tmp_path / "more.csv"
    extra.write_text("artist,title\nSomeone,Field Recording 12\n")
    load_catalogue(fma, extra)
    out = run_fma_review(fma, config_hash="t")
    assert out["checked"] == 2 and out["to_human_review"] == 1     # the new row matches fma:3
    assert _latest(fma, "fma:3")["verdict"] == "review"
    again = _latest(fma)                                               # same matches: ada's answer holds
    assert again["verdict"] == "pass" and again["details"]["by"] == "ada"
    assert again["details"]["checked"]["catalogue"] != decided["details"]["checked"]["catalogue"]
    assert len(queue.items(fma, kind="metadata-match")) == 2
    assert run_fma_review(fma, config_hash="t", title_min=80)["checked"] == 2
    assert run_fma_review(fma, config_hash="t", title_min=80)["checked"] == 0


def test_a_human_flag_is_not_undone_by_a_new_title(fma):
    fma.track("Bohemian Rhapsody", "A Tribute Band")
    run_fma_review(fma, config_hash="t")
    item = queue.items(fma, "pending")[0]
    queue.decide(fma, item["review_id"], cleared=False, by="grace", note="a cover of Queen")
    fma.track("Track 4", "A Tribute Band")                              # no catalogue match any more
    out = run_fma_review(fma, config_hash="t")
    assert out["checked"] == 1 and out["no_match"] == 0 and out["to_human_review"] == 1
    latest = _latest(fma)
    assert latest["verdict"] == "review" and f"review {item['review_id']} flagged" in latest["reason"]
    assert fma.admitted_ids(REQ) == set()
    new = queue.items(fma, "pending")[0]
    assert f"review {item['review_id']} flagged this track" in describe_item(fma, new["review_id"], "/")
    queue.decide(fma, new["review_id"], cleared=True, by="grace", note="re-recorded as an original")
    assert fma.admitted_ids(REQ) == {"fma:2"}
    assert run_fma_review(fma, config_hash="t")["checked"] == 0


def test_clearing_a_metadata_entry_after_a_retitle_is_refused(fma):
    fma.track("Call me", "Anonymous")
    run_fma_review(fma, config_hash="t")
    item = queue.items(fma, "pending")[0]
    fma.track("Call Me", "Blondie")
    with pytest.raises(CatalogError, match=r"cannot be cleared: it judged 'Call me' by Anonymous, the recording "
                                           r"is now 'Call Me' by Blondie"):
        queue.decide(fma, item["review_id"], cleared=True, by="ada", note="fine")
    assert _latest(fma)["verdict"] == "review"
