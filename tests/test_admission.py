"""One admission rule (catalogue migration 8): shards and releases read the same views, so what
trains a model and what its attribution names can never differ; every excluded recording has
exactly one reason; decisions about audio are made from the stored file, not crawled metadata."""
import contextlib
import datetime as dt
import random
import shutil

import numpy as np
import pytest
import soundfile as sf

from sao.attribution import policy
from sao.attribution.release import create_release, release_items
from sao.audio import AudioDecodeError, verify
from sao.audio.stage import plan_decode, run_decode
from sao.catalog import Catalog, Decision
from sao.shards import eligible_recordings

NOW = dt.datetime(2026, 1, 1)


def _rec(i, **kw):
    return {"source": "freesound", "source_id": str(i), "title": f"t{i}", "author": "a", "crawl_time": NOW,
            "license_raw": "http://creativecommons.org/publicdomain/zero/1.0/", **kw}


def _decide(cat, rid, latest, sha):
    for stage, (verdict, reason) in latest.items():
        details = {"content_sha256": sha} if stage == "decode" else None
        cat.add_decisions([Decision(rid, stage, verdict, reason, config_hash="t", details=details)])
        if stage == "decode" and verdict == "pass":      # what the decode stage records with its pass
            cat.con.execute("UPDATE recordings SET audio_duration = 5.0, audio_sample_rate = 44100, "
                            "audio_channels = 1 WHERE recording_id = ?", [rid])


@contextlib.contextmanager
def one_recording(tmp_path, latest, *, taken_down=False, has_audio=True):
    """A catalogue holding one recording (freesound:1) whose latest decisions are ``latest``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with Catalog(tmp_path / "one.duckdb") as cat:
        cat.upsert_recordings([_rec(1)])
        if has_audio:
            cat.set_audio("freesound:1", "sha-1", "ab/sha-1.wav", "preview")
        _decide(cat, "freesound:1", latest, "sha-1")
        if taken_down:
            cat.add_takedown("freesound:1", "request")
        yield cat


def test_shards_refuse_what_the_release_refuses_a_decode_reject(tmp_path):
    """Hole 1: shard selection admitted a recording whose latest decode decision was a reject
    while the release left it out as corrupt."""
    with one_recording(tmp_path, {"license_gate": ("pass", "ok"), "decode": ("pass", "decodes")}) as cat:
        assert [r["recording_id"] for r in eligible_recordings(cat, ["license_gate"], tmp_path)] == ["freesound:1"]
        cat.add_decisions([Decision("freesound:1", "decode", "reject", "audio-corrupt: truncated", config_hash="t",
                                    details={"content_sha256": "sha-1"})])
        assert eligible_recordings(cat, ["license_gate"], tmp_path) == []
        rel = create_release(cat, "r1", required_stages=["license_gate"])
        assert rel["recordings"] == 0
        assert cat.admission(["license_gate"])[0]["reason"] == "corrupt"


def test_a_decode_pass_counts_only_for_the_content_it_read(tmp_path):
    """New audio under the same recording is pending until it is decoded again."""
    with one_recording(tmp_path, {"license_gate": ("pass", "ok"), "decode": ("pass", "decodes")}) as cat:
        assert cat.admitted_ids(["license_gate"]) == {"freesound:1"}
        cat.set_audio("freesound:1", "sha-2", "cd/sha-2.wav", "preview")
        row = cat.admission(["license_gate"])[0]
        assert row["reason"] == "pending" and "decode" in row["detail"]
        assert [i["recording_id"] for i in plan_decode(cat, tmp_path)] == ["freesound:1"]


EXCLUSIONS = {
    # kind -> (latest decisions over ALL_PASS, taken down, has audio)
    "take-down": ({}, True, True),
    "license": ({"license_gate": ("reject", "license-not-allowed: cc-by-nc-4.0")}, False, True),
    "opt-out": ({"license_gate": ("reject", "opt-out: gen_ai_preference=no-gen-ai")}, False, True),
    "malformed": ({"record": ("reject", "malformed-record: tags: not a list")}, False, True),
    "corrupt": ({"decode": ("reject", "audio-corrupt: no frames")}, False, True),
    "review-rejected": ({"copyright_review": ("reject", "reviewer: copyrighted")}, False, True),
    "music-flagged": ({"music_screen": ("flag", "music"), "copyright_review": ("review", "queued")}, False, True),
    "duplicate": ({"dedup": ("reject", "duplicate of freesound:0")}, False, True),
    "no-audio": ({}, False, False),
    "pending": ({"dedup": None}, False, True),
    "admitted": ({}, False, True),
}
ALL_PASS = {"license_gate": ("pass", "license-allowed"), "decode": ("pass", "decodes"),
            "music_screen": ("pass", "not-music"), "copyright_review": ("pass", "not-music"),
            "dedup": ("pass", "unique")}
REQUIRED = ["license_gate", "copyright_review", "dedup"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shard_membership_equals_release_membership_and_one_reason_each(tmp_path, seed):
    """A catalogue with every exclusion kind, alone and mixed at random (several reasons on one
    recording, superseded decisions): shards and the release hold exactly the same recordings,
    and each excluded recording is listed once, with one reason that is one of the known ones."""
    rng = random.Random(seed)
    kinds = sorted(EXCLUSIONS)
    plan = [[k] for k in kinds] + [rng.sample(kinds, rng.randint(2, 3)) for _ in range(40)]
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([_rec(i) for i in range(len(plan))])
        expected_admitted = set()
        for i, combo in enumerate(plan):
            rid, sha = f"freesound:{i}", f"sha-{i}"
            latest, taken, audio = dict(ALL_PASS), False, True
            for k in combo:
                change, t, a = EXCLUSIONS[k]
                latest.update(change)
                taken, audio = taken or t, audio and a
            latest = {s: v for s, v in latest.items() if v is not None}
            if rng.random() < 0.3:                      # older, superseded verdicts that must not count
                _decide(cat, rid, {s: ("reject", "superseded") for s in ("dedup", "decode") if s in latest}, sha)
            if audio:
                cat.set_audio(rid, sha, f"{sha}.wav", "preview")
            _decide(cat, rid, latest, sha)
            if taken:
                cat.add_takedown(rid, "request")
            if combo == ["admitted"] or set(combo) == {"admitted"}:
                expected_admitted.add(rid)
        shard_ids = {r["recording_id"] for r in eligible_recordings(cat, REQUIRED, tmp_path)}
        rel = create_release(cat, f"r{seed}", required_stages=REQUIRED)
        release_ids = set(release_items(cat, rel["name"]))
        assert shard_ids == release_ids == expected_admitted
        excl = cat.query("SELECT recording_id, reason FROM release_exclusions WHERE release_name = ?", [rel["name"]])
        ids = [e["recording_id"] for e in excl]
        assert len(ids) == len(set(ids)) == len(plan) - len(release_ids)
        assert {e["reason"] for e in excl} <= set(policy.EXCLUSION_REASONS)
        # a single-kind recording is excluded for exactly that kind
        single = {f"freesound:{i}": combo[0] for i, combo in enumerate(plan) if len(combo) == 1}
        got = {e["recording_id"]: e["reason"] for e in excl}
        for rid, kind in single.items():
            assert got.get(rid, "admitted") == kind, rid


# --- decisions on the audio itself ---------------------------------------------------------------------------------

def _write(path, seconds, sr=44100, channels=1, fmt=None):
    x = (0.1 * np.sin(np.arange(int(seconds * sr)) * 2 * np.pi * 440 / sr)).astype(np.float32)
    sf.write(path, np.tile(x[:, None], (1, channels)), sr, format=fmt)
    return path


def test_verify_refuses_empty_non_audio_and_cut_short_files(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.mp3").write_text("not audio at all\n" * 100)
    mp3 = _write(tmp_path / "ok.mp3", 20.0, fmt="MP3")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 3])
    assert verify(mp3).duration == pytest.approx(20.0, abs=0.2)
    for bad in ("empty.wav", "text.mp3"):
        with pytest.raises(AudioDecodeError):
            verify(tmp_path / bad)
    # a cut MP3 either announces fewer frames (then its probed length is the true one) or fails
    try:
        info = verify(cut)
    except AudioDecodeError as exc:
        assert "truncated" in str(exc) or "decode" in str(exc)
    else:
        assert info.duration < 10.0


def test_decode_stage_takes_facts_from_the_file_and_rejects_what_does_not_decode(tmp_path):
    store = tmp_path / "audio"
    store.mkdir()
    _write(store / "long.wav", 40.0, sr=48000, channels=2)
    (store / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with Catalog(tmp_path / "c.duckdb") as cat:
        # the metadata lies: 5 s, 22.05 kHz mono
        cat.upsert_recordings([_rec(1, duration=5.0, sample_rate=22050, channels=1), _rec(2, duration=5.0)])
        cat.set_audio("freesound:1", "s1", "long.wav", "preview")
        cat.set_audio("freesound:2", "s2", "junk.wav", "preview")
        _decide(cat, "freesound:1", {"license_gate": ("pass", "ok")}, None)
        _decide(cat, "freesound:2", {"license_gate": ("pass", "ok")}, None)
        out = run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        assert out["decoded"] == 1 and out["rejected"] == 1 and "freesound:2" in out["errors"]
        r = cat.get_recording("freesound:1")
        assert (r["audio_duration"], r["audio_sample_rate"], r["audio_channels"]) == (pytest.approx(40.0), 48000, 2)
        assert r["duration"] == 5.0                      # the source's claim is kept, and decides nothing
        assert [x["duration"] for x in eligible_recordings(cat, ["license_gate"], store)] == [pytest.approx(40.0)]
        assert {x["recording_id"]: x["reason"] for x in cat.admission(["license_gate"])}["freesound:2"] == "corrupt"
        # an unchanged rerun decides nothing again
        again = run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        assert again["candidates"] == 0


def test_music_screen_decides_short_from_the_decoded_audio(tmp_path):
    """Hole 4: a long file whose API duration says 5 s passed as too-short without being decoded,
    so it never reached copyright review; empty and non-audio files got a screen pass."""
    from sao.analysis.music_screen import ScreenConfig, pending_screen, screen_audio
    from sao.analysis.music_rule import MusicRule, default_music_classes
    from sao.analysis.panns import load_model
    store = tmp_path / "audio"
    store.mkdir()
    _write(store / "long.wav", 45.0, sr=32000)
    _write(store / "short.wav", 3.0, sr=32000)
    (store / "empty.wav").write_bytes(b"")
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([_rec(1, duration=5.0), _rec(2, duration=3.0), _rec(3, duration=5.0)])
        for i, name in ((1, "long.wav"), (2, "short.wav"), (3, "empty.wav")):
            cat.set_audio(f"freesound:{i}", f"s{i}", name, "preview")
            _decide(cat, f"freesound:{i}", {"license_gate": ("pass", "ok")}, None)
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        cfg = ScreenConfig(rule=MusicRule(threshold=0.15, min_seconds=30.0), classes=tuple(default_music_classes()),
                           window_seconds=10.0, batch_size=2)
        items = pending_screen(cat, cfg.signature(None), store)
        # the empty file never reaches the screen: the decode stage rejected it
        assert {i["recording_id"]: round(i["duration"]) for i in items} == {"freesound:1": 45, "freesound:2": 3}
        # and even a probed length that lies is checked against the samples before "too short"
        items = [dict(i, duration=5.0) if i["recording_id"] == "freesound:1" else i for i in items]
        results, _ = screen_audio(items, load_model(None, uncalibrated=True), cfg)
        assert results["freesound:1"]["kind"] == "screened"
        assert results["freesound:2"]["kind"] == "short"


def test_a_cut_short_window_never_enters_the_shards_as_silence(tmp_path):
    """A truncated file read window by window must fail at the window past its cut."""
    from sao.shards.writer import read_clip_frames
    from sao.shards.plan import Sample
    import inspect
    path = _write(tmp_path / "a.wav", 10.0)
    info = verify(path)
    cut = tmp_path / "cut.wav"
    shutil.copy(path, cut)
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 3)

    class _Info:                                        # the header as it was before the cut
        sample_rate, frames, channels, duration = info.sample_rate, info.frames, 1, info.duration
    fields = inspect.signature(Sample).parameters
    kw = {k: None for k in fields}
    kw.update(recording_id="freesound:1", path=str(cut), set="diffusion", offset=6 * 44100, length=44100,
              chunk_index=1)
    s = Sample(**{k: v for k, v in kw.items() if k in fields})
    with pytest.raises(AudioDecodeError, match="truncated"):
        read_clip_frames(s, _Info, info.frames)


# --- a decision counts only while what it judged is what the catalogue holds ------------------------------------

def _gated_with_audio(cat, rid_n=1, sha="sha-1", extra=None,
                      lic="http://creativecommons.org/publicdomain/zero/1.0/"):
    from sao.licensing import LicensePolicy
    from sao.licensing.stage import run_license_gate
    cat.upsert_recordings([_rec(rid_n, license_raw=lic, license_url=lic, extra=extra)])
    run_license_gate(cat, LicensePolicy(), config_hash="t")
    rid = f"freesound:{rid_n}"
    cat.set_audio(rid, sha, f"{sha}.wav", "preview")
    cat.con.execute("UPDATE recordings SET audio_duration = 5.0, audio_sample_rate = 44100, audio_channels = 1 "
                    "WHERE recording_id = ?", [rid])
    cat.add_decisions([Decision(rid, "decode", "pass", "ok", config_hash="t", details={"content_sha256": sha})])
    return rid


def test_a_relicensed_or_opted_out_recording_is_blocked_before_the_gate_runs_again(tmp_path):
    """Review finding: a stale license_gate pass admitted a re-crawled NC or opted-out recording."""
    with Catalog(tmp_path / "c.duckdb") as cat:
        a = _gated_with_audio(cat, 1)
        b = _gated_with_audio(cat, 2, sha="sha-2")
        assert cat.admitted_ids(["license_gate"]) == {a, b}
        nc = "https://creativecommons.org/licenses/by-nc/4.0/"
        cat.upsert_recordings([_rec(1, license_raw=nc, license_url=nc)])                  # what a re-crawl writes
        cat.upsert_recordings([_rec(2, license_raw="http://creativecommons.org/publicdomain/zero/1.0/",
                                    license_url="http://creativecommons.org/publicdomain/zero/1.0/",
                                    extra={"gen_ai_preference": "no-gen-ai"})])
        assert cat.admitted_ids(["license_gate"]) == set() and eligible_recordings(cat, ["license_gate"], tmp_path) == []
        assert {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])} == {a: "pending", b: "pending"}
        from sao.licensing import LicensePolicy
        from sao.licensing.stage import run_license_gate
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        # once the gate has run, the change is a take-down (it had been admitted), with the gate's reason
        assert {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])} == {a: "take-down", b: "take-down"}
        assert {t["recording_id"]: t["reason"].split(":")[0] for t in cat.takedowns()} == {
            a: "license-not-allowed-after-admission", b: "opt-out-after-admission"}


def test_a_gate_pass_stays_valid_while_its_inputs_do_not_change(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        a = _gated_with_audio(cat, 1, extra={"gen_ai_preference": "no-additional-preferences", "license_title": None})
        cat.upsert_recordings([_rec(1, license_raw="http://creativecommons.org/publicdomain/zero/1.0/",
                                    license_url="http://creativecommons.org/publicdomain/zero/1.0/",
                                    extra={"gen_ai_preference": "no-additional-preferences", "license_title": None})])
        assert cat.admitted_ids(["license_gate"]) == {a}


@pytest.mark.parametrize("stage, verdict", [("dedup", "pass"), ("copyright_review", "pass"), ("music_screen", "pass")])
def test_audio_decisions_do_not_carry_over_to_new_content(tmp_path, stage, verdict):
    """Review finding: screen, review and dedup passes were not tied to the audio they judged."""
    req = ["license_gate", stage]
    with Catalog(tmp_path / "c.duckdb") as cat:
        rid = _gated_with_audio(cat)
        cat.add_decisions([Decision(rid, stage, verdict, "judged", config_hash="t", details={"content_sha256": "sha-1"})])
        assert cat.admitted_ids(req) == {rid}
        cat.set_audio(rid, "sha-new", "sha-new.wav", "preview")          # the source's file changed
        cat.con.execute("UPDATE recordings SET audio_duration = 5.0 WHERE recording_id = ?", [rid])
        cat.add_decisions([Decision(rid, "decode", "pass", "ok", config_hash="t",
                                    details={"content_sha256": "sha-new"})])
        row = cat.admission(req)[0]
        assert row["reason"] == "pending" and stage in row["detail"]
        cat.add_decisions([Decision(rid, stage, verdict, "judged", config_hash="t",
                                    details={"content_sha256": "sha-new"})])
        assert cat.admitted_ids(req) == {rid}


def test_cleared_probed_facts_are_probed_again(tmp_path):
    """Review finding: the same bytes stored again after a source md5 change kept a decode pass whose
    probed facts had been cleared, and were planned as a 0-second file."""
    from sao.licensing import LicensePolicy
    from sao.licensing.stage import run_license_gate
    store = tmp_path / "a"
    store.mkdir()
    _write(store / "x.wav", 12.0)
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([_rec(1, md5="a" * 32)])
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        cat.set_audio("freesound:1", "shaX", "x.wav", "preview")
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        cat.upsert_recordings([_rec(1, md5="b" * 32)])                   # md5 changed at the source
        cat.set_audio("freesound:1", "shaX", "x.wav", "preview")         # the download gives the same bytes
        assert eligible_recordings(cat, ["license_gate"], store) == []   # not decoded: facts are missing
        assert [i["recording_id"] for i in plan_decode(cat, store)] == ["freesound:1"]
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        assert [r["duration"] for r in eligible_recordings(cat, ["license_gate"], store)] == [pytest.approx(12.0)]


def test_a_recording_that_fails_mid_build_leaves_no_window_in_the_shards(tmp_path):
    """Review finding: windows written before a recording's failing window stayed in the shards."""
    import pyarrow.parquet as pq
    from sao.licensing import LicensePolicy
    from sao.licensing.stage import run_license_gate
    from sao.shards import PlanConfig, build_shards
    store = tmp_path / "a"
    store.mkdir()
    sr = 44100
    x = (0.1 * np.sin(np.arange(150 * sr) * 0.05)).astype(np.float32)
    x[120 * sr] = np.nan                                                 # head and tail decode; the middle does not
    sf.write(store / "n.wav", x, sr, subtype="FLOAT")
    _write(store / "ok.wav", 3.0)
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([_rec(1), _rec(2)])
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        cat.set_audio("freesound:1", "shaN", "n.wav", "preview")
        cat.set_audio("freesound:2", "shaO", "ok.wav", "preview")
        assert run_decode(cat, audio_store=store, config_hash="t", show_progress=False)["decoded"] == 2
        out = build_shards(cat, shards_root=str(tmp_path / "shards"), audio_store=store, required_stages=["license_gate"],
                           plan_cfg=PlanConfig(ae_max_chunks=0, hifi_extra_chunks=0), config_hash="t")
        assert out["status"] == "complete" and "freesound:1" in out["rebuilt_without"]
        idx = pq.read_table(tmp_path / "shards" / out["name"] / "index.parquet").column("recording_id").to_pylist()
        assert set(idx) == {"freesound:2"}
        rel = create_release(cat, "r1", required_stages=["license_gate"])
        assert set(release_items(cat, rel["name"])) == set(idx)


def test_the_runner_builds_shards_again_without_a_recording_that_failed_mid_build(tmp_path):
    """The same failure through the pipeline's shards stage (Stage.again): the stage runs once more and
    the result names what made it (details["rerun_after"])."""
    import pathlib

    import pyarrow.parquet as pq
    from sao import config as config_mod
    from sao.licensing import LicensePolicy
    from sao.licensing.stage import run_license_gate
    from tests.conftest import flow_config, run_stage
    store = tmp_path / "a"
    store.mkdir()
    sr = 44100
    x = (0.1 * np.sin(np.arange(150 * sr) * 0.05)).astype(np.float32)
    x[120 * sr] = np.nan
    sf.write(store / "n.wav", x, sr, subtype="FLOAT")
    _write(store / "ok.wav", 3.0)
    cfg = config_mod.load(flow_config(tmp_path, paths={"audio_store": str(store)},
                                      shards={"root": str(tmp_path / "shards"), "required_stages": ["license_gate"],
                                              "ae_max_chunks": 0, "hifi_extra_chunks": 0, "workers": 1}))
    with Catalog(cfg.catalog_path) as cat:
        cat.upsert_recordings([_rec(1), _rec(2)])
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        cat.set_audio("freesound:1", "shaN", "n.wav", "preview")
        cat.set_audio("freesound:2", "shaO", "ok.wav", "preview")
        assert run_decode(cat, audio_store=store, config_hash="t", show_progress=False)["decoded"] == 2
    st = run_stage(cfg, "shards")
    assert st.details["status"] == "complete" and "freesound:1" in st.details["rerun_after"]
    idx = pq.read_table(pathlib.Path(st.details["location"]) / "index.parquet").column("recording_id").to_pylist()
    assert set(idx) == {"freesound:2"}
