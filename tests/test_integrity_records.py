"""Strict records: every crawled (Freesound API JSON) and ingested (FMA CSV) field is type-checked
per item; one bad item never stops the others; a bad field is stored NULL with a ``record``
reject naming it; the FMA ingest copies only audio the gate admits; non-MP3 files keep their
real format and are rejected with a reason that says what is wrong; an unchanged rerun reports
nothing updated and repeats no warning."""
import copy
import datetime as dt
import hashlib
import json
import logging
import math
import shutil

import pandas as pd
import pytest

from sao.catalog import Catalog, CatalogError, Decision
from sao.licensing import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.sources.fma import ingest_fma
from sao.sources.freesound import FreesoundClient
from sao.sources.freesound_crawl import crawl_freesound, sound_to_record
from sao.sources.freesound_reconcile import reconcile_freesound
from sao.sources.record_checks import UnusableItem
from sao.sources.replica import ReplicaServer, ReplicaSettings, build_fma_replica

SECRET = "records-token-7d1e"
NOW = dt.datetime(2026, 1, 2, 3, 4, 5)
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"


def _record_decisions(cat):
    return {r["recording_id"]: r for r in cat.latest_decisions("record")}


# -- hole 1: one bad item, wrong types ----------------------------------------------------------
def test_a_bad_item_is_stored_with_its_bad_fields_null_and_the_crawl_goes_on(freesound_sounds, tmp_path):
    sounds = copy.deepcopy(freesound_sounds)
    cc0 = [s for s in sounds if s["license"] == CC0]
    lic_list, tags_str, bad_numbers, inf_dur = cc0[0], cc0[1], cc0[2], cc0[3]
    lic_list["license"] = [CC0]
    tags_str["tags"] = "abc"
    bad_numbers.update(samplerate=-44100, duration=math.nan, channels=True)
    inf_dur["duration"] = math.inf
    # ids that cannot be stored: a bool and a float (which int() would turn into 1 and 1005)
    sounds.append(dict(cc0[4], id=True, name="bool id"))
    sounds.append(dict(cc0[4], id=1005.7, name="float id"))
    expected = {str(s["id"]) for s in freesound_sounds
                if any(k in s["license"] for k in ("publicdomain/zero", "/licenses/by/", "sampling+"))}
    with ReplicaServer(sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv, \
            Catalog(tmp_path / "c.duckdb") as cat:
        c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
        st = crawl_freesound(cat, c, page_size=150)
        got = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")}
        assert got == expected                                   # nothing lost, nothing invented
        assert st.malformed == 2 and len(st.malformed_reasons) == 2
        assert any("id: expected a positive integer, got bool" in r for r in st.malformed_reasons)
        assert all(cat.get_cursor("freesound", f'license:"{n}"')["last_created"] for n in
                   ("Creative Commons 0", "Attribution", "Sampling+"))
        r = cat.get_recording(f"freesound:{lic_list['id']}")
        assert r["license_raw"] == f'["{CC0}"]' and r["license_url"] is None and r["license_canonical"] == "unknown"
        assert cat.get_recording(f"freesound:{tags_str['id']}")["tags"] is None
        n = cat.get_recording(f"freesound:{bad_numbers['id']}")
        assert (n["sample_rate"], n["duration"], n["channels"]) == (None, None, None)
        assert cat.get_recording(f"freesound:{inf_dur['id']}")["duration"] is None
        rec = _record_decisions(cat)
        assert set(rec) == {f"freesound:{s['id']}" for s in (lic_list, tags_str, bad_numbers, inf_dur)}
        assert all(d["verdict"] == "reject" and d["reason"].startswith("malformed-record: ") for d in rec.values())
        assert rec[f"freesound:{lic_list['id']}"]["reason"] == "malformed-record: license: expected a string, got list"
        assert rec[f"freesound:{tags_str['id']}"]["reason"].startswith("malformed-record: tags: ")
        reason = rec[f"freesound:{bad_numbers['id']}"]["reason"]
        assert "channels: " in reason and "duration: nan is not finite" in reason and "samplerate: -44100" in reason
        # the gate sees an unrecognisable license, never the one hidden in the list
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        gate = cat.latest_decision_map("license_gate")[f"freesound:{lic_list['id']}"]
        assert gate["verdict"] == "reject" and gate["reason"].startswith("license-unknown")
        # an unchanged rerun writes no decision
        before = cat.counts()["decisions"]
        crawl_freesound(cat, c, full=True)
        assert cat.counts()["decisions"] == before
        # fixed at the source: one record pass, then nothing more
        srv.update_sound(lic_list["id"], license=CC0)
        crawl_freesound(cat, c, full=True)
        rec = _record_decisions(cat)
        assert rec[f"freesound:{lic_list['id']}"]["verdict"] == "pass"
        assert cat.get_recording(f"freesound:{lic_list['id']}")["license_canonical"] == "cc0-1.0"
        assert cat.counts()["decisions"] == before + 1
        crawl_freesound(cat, c, full=True)
        assert cat.counts()["decisions"] == before + 1


GOOD = {"id": 7, "name": "n", "username": "u", "tags": ["a"], "description": "d", "license": CC0,
        "duration": 1.5, "samplerate": 44100.0, "channels": 2, "created": "2024-01-01T06:00:00Z",
        "md5": "0" * 32, "type": "wav", "filesize": 10, "bitdepth": 16, "is_remix": False,
        "gen_ai_preference": "no-additional-preferences", "url": "https://freesound.org/people/u/sounds/7/",
        "download": "https://freesound.org/apiv2/sounds/7/download/",
        "previews": {"preview-hq-mp3": "https://cdn.freesound.org/previews/0/7-hq.mp3"}}


@pytest.mark.parametrize("field,value,why", [
    ("samplerate", 1005.7, "expected an integer"), ("samplerate", 0, "out of range"),
    ("channels", 2.0, "expected an integer"), ("duration", -1.0, "out of range"), ("duration", "3", "number"),
    ("duration", 10**400, "out of range"),
    ("tags", ["a", 1], "list of strings"), ("name", 5, "expected a string"), ("created", "yesterday", "ISO 8601"),
    ("created", 1704067200, "ISO 8601"), ("md5", "xyz", "32 hex"), ("type", "../../x", "is not one of"),
    ("filesize", -1, "out of range"), ("is_remix", "no", "true or false"),
    ("gen_ai_preference", ["no-gen-ai"], "string"),
    ("download", "file:///etc/passwd", "http(s) URL"), ("previews", {"preview-hq-mp3": "/x.mp3"}, "http(s) URL"),
    ("previews", [], "expected an object"), ("url", 3, "URL string"), ("description", ["x"], "expected a string")])
def test_each_field_is_checked_exactly(field, value, why):
    rec, problems = sound_to_record(dict(GOOD, **{field: value}), crawl_time=NOW, site="https://freesound.org")
    name = "preview-hq-mp3" if field == "previews" and isinstance(value, dict) else field
    assert list(problems) == [f"previews.{name}" if name == "preview-hq-mp3" else name], problems
    assert why in next(iter(problems.values()))
    Catalog.validate_recording(rec)                   # what is left is storable as it is


def test_a_clean_item_keeps_every_value_and_integral_float_sample_rates():
    rec, problems = sound_to_record(GOOD, crawl_time=NOW, site="https://freesound.org")
    assert problems == {}
    assert rec["sample_rate"] == 44100 and isinstance(rec["sample_rate"], int)
    assert rec["created_at"] == dt.datetime(2024, 1, 1, 6) and rec["tags"] == ["a"]
    assert rec["preview_url"].endswith("7-hq.mp3") and rec["extra"]["type"] == "wav"


def test_a_wrong_typed_opt_out_never_reads_as_consent():
    from sao.licensing import license_gate
    rec, problems = sound_to_record(dict(GOOD, gen_ai_preference=["no-gen-ai"]), crawl_time=NOW,
                                    site="https://freesound.org")
    assert "gen_ai_preference" in problems and rec["extra"]["gen_ai_preference"] == '["no-gen-ai"]'
    assert license_gate(rec["license_raw"], None, gen_ai_preference=rec["extra"]["gen_ai_preference"]).verdict \
        == "reject"


@pytest.mark.parametrize("bad", [True, False, 1005.7, "7", None, 0, -3, 2**63, [7]])
def test_an_unusable_id_is_refused(bad):
    with pytest.raises(UnusableItem, match="id"):
        sound_to_record(dict(GOOD, id=bad), crawl_time=NOW, site="https://freesound.org")


def test_the_catalogue_refuses_wrong_types_it_used_to_coerce(catalog):
    base = dict(source="freesound", source_id="1", crawl_time=NOW)
    for bad in (dict(sample_rate=True), dict(sample_rate=44100.5), dict(channels=2.0), dict(channels=-1),
                dict(duration=math.nan), dict(duration=math.inf), dict(duration=10**400), dict(duration=-2.0), dict(duration=True),
                dict(title=5), dict(license_raw=["x"]), dict(created_at="2024-01-01"),
                dict(extra={"x": math.nan}), dict(source_id=True), dict(tags="abc")):
        with pytest.raises(CatalogError, match="freesound:"):
            Catalog.validate_recording(dict(base, **bad))
    assert catalog.counts()["recordings"] == 0


# -- review finding 4: a known item whose re-fetched copy is malformed loses its admission ---------------------
def _admitted_with_audio(cat, sound):
    rec, _ = sound_to_record(sound, crawl_time=NOW, site="https://freesound.org")
    cat.upsert_recordings([rec])
    run_license_gate(cat, LicensePolicy(), config_hash="t")
    rid = f"freesound:{sound['id']}"
    cat.set_audio(rid, "s7", "s7.mp3", "preview-hq-mp3")
    cat.set_probed([(rid, "s7", 5.0, 44100, 1)])
    cat.add_decisions([Decision(rid, "decode", "pass", "ok", config_hash="t", details={"content_sha256": "s7"})])
    assert cat.admitted_ids(["license_gate"]) == {rid}
    return rid


class _Refetch:
    """A client whose sound() answers what the test says (the re-fetch reconcile makes)."""
    site = "https://freesound.org"

    def __init__(self, answer):
        self.answer = answer

    def sound(self, sid, fields):
        return self.answer


@pytest.mark.parametrize("answer,why", [
    # re-licensed to NC, and a NUL byte the catalogue refuses: the new license could not be stored
    (dict(GOOD, name="rain\x00", license="http://creativecommons.org/licenses/by-nc/4.0/"), "NUL byte"),
    (dict(GOOD, id=8), "asked for 7, the API answered 8"),
    (dict(GOOD, id=True), "id: expected a positive integer"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_a_malformed_refetch_in_reconcile_writes_a_record_reject(answer, why, tmp_path, caplog):
    with Catalog(tmp_path / "c.duckdb") as cat:
        rid = _admitted_with_audio(cat, GOOD)
        assert reconcile_freesound(cat, _Refetch(answer), set()) == {"deleted": 0, "relicensed": 0}
        d = cat.latest_decision_map("record")[rid]
        assert d["verdict"] == "reject" and d["reason"].startswith("malformed-record: refetch: ") and why in d["reason"]
        assert "\x00" not in d["reason"]
        assert cat.admitted_ids(["license_gate"]) == set()
        assert {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])}[rid] == "malformed"
        assert cat.get_recording(rid)["license_raw"] == CC0           # what could not be stored was not stored
        n = cat.counts()["decisions"]
        reconcile_freesound(cat, _Refetch(answer), set())             # the same answer again: nothing new written
        assert cat.counts()["decisions"] == n
        reconcile_freesound(cat, _Refetch(GOOD), set())                # a clean re-fetch clears it
        assert cat.latest_decision_map("record")[rid]["verdict"] == "pass"
        assert cat.admitted_ids(["license_gate"]) == {rid}
    assert "record reject" in caplog.text


def test_a_known_item_whose_crawled_copy_is_malformed_is_no_longer_admitted(freesound_sounds, tmp_path):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv, \
            Catalog(tmp_path / "c.duckdb") as cat:
        c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
        crawl_freesound(cat, c)
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        sound = min((s for s in freesound_sounds if s["license"] == CC0), key=lambda s: s["id"])
        rid = f"freesound:{sound['id']}"
        assert cat.latest_decision_map("license_gate")[rid]["verdict"] == "pass"
        srv.update_sound(sound["id"], name="rain\x00", license="http://creativecommons.org/licenses/by-nc/4.0/")
        st = crawl_freesound(cat, c, full=True)
        assert st.malformed == 1 and sound["id"] in {int(i) for i in st.seen_ids}
        d = cat.latest_decision_map("record")[rid]
        assert d["verdict"] == "reject" and d["reason"] == \
            f"malformed-record: refetch: recording {rid}: title contains a NUL byte"
        assert {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])}[rid] == "malformed"
        assert rid not in {r["recording_id"] for r in cat.query("SELECT recording_id FROM gate_admitted")}
        others = {r["recording_id"] for r in cat.latest_decisions("record")}
        assert others == {rid}                                        # the rest of the crawl is untouched
        n = cat.counts()["decisions"]
        crawl_freesound(cat, c, full=True)                            # unchanged: nothing new written
        assert cat.counts()["decisions"] == n


# -- hole 4: an unchanged rerun -------------------------------------------------------------------
def test_an_unchanged_rerun_reports_nothing_updated(freesound_sounds, tmp_path):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv, \
            Catalog(tmp_path / "c.duckdb") as cat:
        c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
        crawl_freesound(cat, c)
        again = crawl_freesound(cat, c)
        assert again.items == 3 and again.new == 0 and again.updated == 0
        boundary = max((s for s in freesound_sounds if s["_license_name"] == "Creative Commons 0"),
                       key=lambda s: s["created"])
        srv.update_sound(boundary["id"], name="renamed")
        assert crawl_freesound(cat, c).updated == 1


def _fma_copy(fma_dir, tmp_path):
    root = tmp_path / "fma"
    shutil.copytree(fma_dir, root)
    return root


def _rewrite(root, name, edit):
    """Edit an FMA metadata CSV as text cells (the way the dump stores them)."""
    path = root / "fma_metadata" / name
    header = [0, 1] if name == "tracks.csv" else 0
    df = pd.read_csv(path, index_col=0, header=header, dtype=str, keep_default_na=False)
    edit(df)
    df.to_csv(path)


def test_an_unchanged_fma_rerun_repeats_no_warning(fma_dir, tmp_path, caplog):
    root = _fma_copy(fma_dir, tmp_path)
    (root / "fma_large" / "000" / "000002.mp3").write_bytes(b"\xff\xfb" + bytes(300))   # corrupt
    with Catalog(tmp_path / "c.duckdb") as cat:
        with caplog.at_level(logging.WARNING, logger="sao.sources.fma"):
            first = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert first.audio_corrupt == 1 and "fma:2" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sao.sources.fma"):
            second = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert second.audio_corrupt == 1 and "fma:2" not in caplog.text, caplog.text


# -- hole 1 for FMA rows --------------------------------------------------------------------------
def test_bad_fma_rows_are_checked_per_item(fma_dir, tmp_path, caplog):
    root = _fma_copy(fma_dir, tmp_path)

    def tracks(df):
        df.loc["5", ("track", "duration")] = "NaN"
        df.loc["6", ("track", "bit_rate")] = "-256000"
        df.loc["7", ("track", "date_created")] = "yesterday"
        df.loc["8", ("track", "genres")] = "[1, 'x']"
        df.rename(index={"9": "9.5"}, inplace=True)        # an id that cannot be stored

    _rewrite(root, "tracks.csv", tracks)
    _rewrite(root, "raw_tracks.csv", lambda df: df.__setitem__("license_url", df["license_url"].where(
        df.index != "10", "javascript:alert(1)")))
    with Catalog(tmp_path / "c.duckdb") as cat, caplog.at_level(logging.ERROR, logger="sao.sources.fma"):
        st = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert st.tracks == 9 and st.malformed == 1 and "9.5" in caplog.text
        assert cat.get_recording("fma:9") is None and cat.get_recording("fma:2")["title"] == "Vibe Ace"
        rec = _record_decisions(cat)
        assert set(rec) == {"fma:5", "fma:6", "fma:7", "fma:8", "fma:10"}
        assert rec["fma:5"]["reason"].startswith("malformed-record: duration: ")
        assert rec["fma:6"]["reason"].startswith("malformed-record: bit_rate: ")
        assert rec["fma:7"]["reason"].startswith("malformed-record: date_created: ")
        assert rec["fma:8"]["reason"].startswith("malformed-record: genres: ")
        assert rec["fma:10"]["reason"].startswith("malformed-record: license_url: ")
        assert cat.get_recording("fma:10")["license_url"] is None
        assert json.loads(cat.get_recording("fma:7")["extra"])["year"] == "2013"    # from the valid date
        # a rerun writes nothing new; nothing under an unusable id was taken down
        before = cat.counts()["decisions"]
        ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert cat.counts()["decisions"] == before and not cat.active_takedowns()


# -- hole 2: no audio of tracks the gate will reject ---------------------------------------------
def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fma_ingest_copies_only_audio_the_gate_admits(fma_dir, tmp_path):
    root = _fma_copy(fma_dir, tmp_path)
    store = tmp_path / "audio"
    raw = pd.read_csv(root / "fma_metadata" / "raw_tracks.csv", index_col=0, dtype=str, keep_default_na=False)
    share_alike = [int(t) for t in raw.index if "by-sa" in raw.loc[t, "license_url"]]
    unknown = [int(t) for t in raw.index if not raw.loc[t, "license_url"] and not raw.loc[t, "license_title"]]
    assert share_alike and unknown
    file_of = lambda t: root / "fma_large" / f"{t:06d}"[:3] / f"{t:06d}.mp3"  # noqa: E731
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = ingest_fma(cat, root, audio_store=store, config_hash="t")
        stored = {p.name.split(".")[0] for p in store.rglob("*") if p.is_file()}
        for t in share_alike + unknown:
            assert _sha(file_of(t)) not in stored, t
            assert cat.get_recording(f"fma:{t}")["audio_path"] is None
        assert _sha(file_of(2)) in stored and cat.get_recording("fma:2")["audio_path"]
        assert st.with_audio == 10 and st.withheld == 5
        # re-licensed under an allowed license: its audio comes with the next ingest
        t = share_alike[0]

        def relicense(df, url=None, title=None):
            if url is not None:
                df.loc[str(t), "license_url"], df.loc[str(t), "license_title"] = url, title
            else:
                df.loc[str(t), ("track", "license")] = title

        url = "https://creativecommons.org/licenses/by/4.0/"
        _rewrite(root, "raw_tracks.csv", lambda df: relicense(df, url, "Attribution 4.0 International"))
        _rewrite(root, "tracks.csv", lambda df: relicense(df, None, "Attribution 4.0 International"))
        ingest_fma(cat, root, audio_store=store, config_hash="t")
        r = cat.get_recording(f"fma:{t}")
        assert r["audio_path"] and (store / r["audio_path"]).is_file() and r["content_sha256"] == _sha(file_of(t))


# -- hole 3: a non-MP3 file keeps its format, and its reject says what is wrong --------------------
MIDI = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"


def test_the_replica_keeps_real_formats_and_the_ingest_names_what_is_wrong(corpus_entries, tmp_path):
    midi = tmp_path / "tune.mid"
    midi.write_bytes(MIDI)
    flac = next(e for e in corpus_entries if e["path"].endswith(".flac"))
    fma = [e for e in corpus_entries if e["replica"] == "fma"]
    extra = [dict(fma[0], id="x-midi", title="A MIDI tune", path=str(midi), bytes=len(MIDI)),
             dict(fma[0], id="x-flac", title="A FLAC track", path=flac["path"], bytes=flac["bytes"])]
    root = build_fma_replica(corpus_entries + extra, tmp_path / "fma")
    midi_id, flac_id = 2 + len(fma), 3 + len(fma)
    mid_path = root / "fma_large" / "000" / f"{midi_id:06d}.mid"
    assert mid_path.read_bytes() == MIDI and not mid_path.with_suffix(".mp3").exists()
    assert (root / "fma_large" / "000" / f"{flac_id:06d}.flac").is_file()
    assert f"fma_large/000/{midi_id:06d}.mid" in (root / "fma_metadata" / "checksums").read_text()
    # a second build is unchanged (and leaves no stale .mp3 beside the real file)
    build_fma_replica(corpus_entries + extra, tmp_path / "fma")
    assert sorted(p.name for p in mid_path.parent.glob(f"{midi_id:06d}.*")) == [mid_path.name]
    # the same MIDI bytes under an .mp3 name, as a broken dump would have them
    disguised = root / "fma_large" / "000" / "000002.mp3"
    disguised.write_bytes(MIDI)
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        audio = cat.latest_decision_map("audio")
        for rid, rel in ((f"fma:{midi_id}", f"{midi_id:06d}.mid"), ("fma:2", "000002.mp3")):
            reason = audio[rid]["reason"]
            assert "not audio: cannot decode" in reason and "MIDI" in reason and rel in reason, reason
            assert "does not exist" not in reason and str(tmp_path) not in reason
        assert f"fma:{flac_id}" not in audio                 # a real FLAC decodes
        assert cat.get_recording(f"fma:{flac_id}")["audio_path"].endswith(".flac")
        assert st.audio_corrupt == 2 and st.audio_missing == 0
