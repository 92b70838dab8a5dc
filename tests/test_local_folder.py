"""A local folder of the user's own CC audio as a source (sao/sources/local_folder.py), end to end on real
audio from datasets/sample: ingest, license gate, decode, music screen and copyright review, dedup, release,
shards and the attribution report; hostile paths, bad licenses and missing files are rejected with their
reasons, a rerun writes nothing, and an entry removed from the folder is taken down."""
import csv
import json
import pathlib
import shutil

import pandas as pd
import pytest

from sao import config as config_mod
from sao.analysis.music_screen import pending_screen
from sao.attribution.release import create_release
from sao.attribution.report import build_report
from sao.audio import file_digests
from sao.audio.stage import run_decode
from sao.catalog import Catalog, Decision
from sao.dedup.stage import run_dedup
from sao.licensing import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.pipeline.stage import RunOptions, StageContext
from sao.review.stage import run_content_review
from sao.shards import PlanConfig, build_shards
from sao.sources import SOURCES
from sao.sources.local_folder import LocalFolderError, ingest_local

from .conftest import REPO

AUDIO = REPO / "datasets" / "sample" / "audio"
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"
BY4 = "https://creativecommons.org/licenses/by/4.0/"
NC4 = "https://creativecommons.org/licenses/by-nc/4.0/"
COLUMNS = ["file", "title", "author", "license_url", "source_url", "id", "description", "tags"]
# what each admitted entry is (datasets/sample/metadata.json): {recording_id: (title, author, published license, url)}
ADMITTED = {
    "local:water.ogg": ("Flowing water", "Yuval", "cc0", "https://freesound.org/people/Yuval/sounds/197023/"),
    "local:sub/sakenointi.mp3": ("sakenointi", "TMetso", "ccby", ""),
    "local:explosion.wav": ("explosion1", "Kenney", "cc0", "https://www.kenney.nl"),
    "local:rooster.mp3": ("Rooster song", "Joseph SARDIN", "cc0",
                          "https://bigsoundbank.com/detail-0283-rooster-song.html"),
}


def make_folder(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    root, outside = tmp_path / "mine", tmp_path / "escape.wav"
    (root / "sub").mkdir(parents=True)
    shutil.copy(AUDIO / "opensfx-sheep.wav", outside)          # beside the folder: must never be read
    for src, dst in (("minetest-water-1.ogg", "water.ogg"), ("fma-sakenointi.mp3", "sub/sakenointi.mp3"),
                     ("opensfx-sheep.wav", "sheep.wav"), ("gnome-question.wav", "question.wav"),
                     ("opensfx-wind.wav", "wind.wav"), ("kenney-explosion1.wav", "explosion.wav"),
                     ("ovos-rooster.mp3", "rooster.mp3")):
        shutil.copy(AUDIO / src, root / dst)
    (root / "link.wav").symlink_to(outside)
    rows = [
        ["water.ogg", "Flowing water", "Yuval", CC0, ADMITTED["local:water.ogg"][3], "", "Loop of flowing stream "
         "water.", "water; stream, ambience"],
        ["sub/sakenointi.mp3", "sakenointi", "TMetso", BY4, "", "", "", "ringtone"],
        # a test label (the corpus has this file as CC0): a NonCommercial license must be refused
        ["sheep.wav", "Sheep", "David R Barnes (edited by Wuzzy)", NC4, "", "", "", ""],
        ["question.wav", "Popup", "Ivica Ico Bukvic", "", "", "", "", ""],                   # no license
        ["wind.wav", "Wind", "Anton", "https://example.org/my-own-license", "", "", "", ""],  # not a CC deed
        ["../escape.wav", "Escape", "x", CC0, "", "escape", "", ""],
        [str(outside), "Absolute", "x", CC0, "", "absolute", "", ""],
        ["link.wav", "Link", "x", CC0, "", "link", "", ""],
        ["../../etc/passwd.wav", "No id", "x", CC0, "", "", "", ""],                          # no usable identity
        ["gone.wav", "Gone", "x", CC0, "", "", "", ""],
    ]
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([COLUMNS, *rows])
    (root / "explosion.wav.json").write_text(json.dumps({
        "title": "explosion1", "author": "Kenney", "license_url": CC0, "source_url": "https://www.kenney.nl",
        "description": "Retro explosion.", "tags": ["explosion", "game"]}))
    (root / "rooster.json").write_text(json.dumps({
        "title": "Rooster song", "author": "Joseph SARDIN", "license_url": CC0,
        "source_url": ADMITTED["local:rooster.mp3"][3], "tags": "rooster; bird"}))
    (root / "notes.json").write_text("{}")                     # describes no audio: not a sidecar
    return root, outside


def test_a_local_folder_end_to_end(tmp_path):
    root, outside = make_folder(tmp_path)
    store, cfg = tmp_path / "audio", config_mod.from_dict({}, root=tmp_path)
    required = list(cfg.shards.required_stages)
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = ingest_local(cat, root, audio_store=store, config_hash="t")
        assert (st.items, st.copied, st.withheld, st.audio_missing, st.malformed, st.malformed_fields, st.ignored) \
            == (11, 4, 3, 1, 1, 3, 1)
        assert "'..' escapes" in st.refused["metadata.csv line 10"]
        # only the audio the gate admits is in the store; nothing outside the folder was read
        stored = {p.stem for p in store.rglob("*.*")}
        assert stored == {file_digests(root / f)[0] for f in ("water.ogg", "sub/sakenointi.mp3", "explosion.wav",
                                                               "rooster.mp3")}
        assert file_digests(outside)[0] not in stored and file_digests(root / "sheep.wav")[0] not in stored
        rec = cat.get_recording("local:water.ogg")
        assert (rec["page_url"], rec["license_url"], rec["tags"]) == (ADMITTED["local:water.ogg"][3], CC0,
                                                                      ["water", "stream", "ambience"])
        assert rec["duration"] is None                           # the decode stage reads it from the audio
        assert cat.get_recording("local:rooster.mp3")["tags"] == ["rooster", "bird"]
        assert cat.get_recording("local:wind.wav")["license_raw"] == "https://example.org/my-own-license"

        run_license_gate(cat, LicensePolicy(), config_hash="t")
        gate = cat.latest_decision_map("license_gate")
        assert gate["local:sheep.wav"]["reason"].startswith("license-not-allowed: cc-by-nc-4.0")
        assert gate["local:question.wav"]["reason"] == "license-missing: the source gives no license"
        assert gate["local:wind.wav"]["reason"].startswith("license-unknown: 'https://example.org/my-own-license'")
        assert all(gate[r]["verdict"] == "pass" for r in ADMITTED)
        record = cat.latest_decision_map("record")
        assert "'..' escapes" in record["local:escape"]["reason"]
        assert "absolute path escapes" in record["local:absolute"]["reason"]
        assert "through a symlink" in record["local:link"]["reason"]
        assert cat.latest_decision_map("audio")["local:gone.wav"]["reason"] == "audio-missing: gone.wav not found (or not a plain file)"

        assert run_decode(cat, audio_store=store, config_hash="t", show_progress=False)["decoded"] == 4
        # local audio is screened for music (Source.music_screen), then reviewed by content: here as a screen
        # with real weights would write it, bound to the content it read
        todo = pending_screen(cat, "sig", store)
        assert {r["recording_id"] for r in todo} == set(ADMITTED)
        cat.add_decisions([Decision(r["recording_id"], "music_screen", "pass", "not-music: test", config_hash="t",
                                    model_name="PANNs", uncalibrated=True, details={"signature": "sig",
                                                                 "content_sha256": r["content_sha256"]})
                           for r in todo])
        assert run_content_review(cat, None, audio_store=store, config_hash="t")["not_music_passed"] == 4
        run_dedup(cat, embeddings_dir=tmp_path / "emb", signature=None, threshold=0.95, config_hash="t")
        rel = create_release(cat, None, required_stages=required, config_hash="t")
        assert rel["recordings"] == 4
        excluded = {r["recording_id"]: r["reason"] for r in cat.query(
            "SELECT recording_id, reason FROM release_exclusions WHERE release_name = ?", [rel["name"]])}
        assert excluded == {"local:sheep.wav": "license", "local:question.wav": "license",
                            "local:wind.wav": "license", "local:escape": "malformed", "local:absolute": "malformed",
                            "local:link": "malformed", "local:gone.wav": "corrupt"}

        out = build_shards(cat, shards_root=str(tmp_path / "shards"), audio_store=store, required_stages=required,
                           plan_cfg=PlanConfig(seed=0, target_shard_bytes=8 << 20), config_hash="t", name="s",
                           release=rel["name"])
        assert out["status"] == "complete"
        index = pd.read_parquet(tmp_path / "shards" / "s" / "index.parquet")
        assert set(index["recording_id"]) == set(ADMITTED)
        assert dict(index.groupby("recording_id")["license"].first()) == {
            "local:water.ogg": "CC0-1.0", "local:sub/sakenointi.mp3": "CC-BY-4.0", "local:explosion.wav": "CC0-1.0",
            "local:rooster.mp3": "CC0-1.0"}

        report = build_report(cat, rel["name"], tmp_path / "releases")
        folder = pathlib.Path(report["folder"])
        with open(folder / "attribution-local.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["id", "title", "author", "license", "url"]
        assert {f"local:{r[0]}": tuple(r[1:]) for r in rows[1:]} == ADMITTED
        with open(folder / "attribution-tasl.csv", newline="", encoding="utf-8") as f:
            tasl = {r["recording_id"]: r for r in csv.DictReader(f)}
        assert set(tasl) == set(ADMITTED)
        water = tasl["local:water.ogg"]
        assert (water["source"], water["title"], water["author"], water["license_name"], water["license_url"]) == \
            ("local", "Flowing water", "Yuval", "Creative Commons 0", CC0)
        assert tasl["local:sub/sakenointi.mp3"]["attribution_line"] == SOURCES["local"].attribution_line(
            cat.get_recording("local:sub/sakenointi.mp3")) == \
            f"sakenointi by TMetso --  -- License: Attribution 4.0 ({BY4})"
        assert (folder / "freesound-attribution.txt").read_text() == ""        # no Freesound item in it

        # a rerun with nothing changed writes nothing; an entry removed from the folder is taken down
        counts = cat.counts()
        again = ingest_local(cat, root, audio_store=store, config_hash="t")
        assert again.written == 0 and again.removed == 0 and cat.counts() == counts
        (root / "explosion.wav.json").unlink()
        gone = ingest_local(cat, root, audio_store=store, config_hash="t")
        assert gone.removed == 1 and gone.written == 0
        assert [t["reason"] for t in cat.takedowns() if t["recording_id"] == "local:explosion.wav"] == [
            "removed-at-source: no longer in the local folder"]
        assert ingest_local(cat, root, audio_store=store, config_hash="t").removed == 0   # once


def test_the_stage_skips_an_unchanged_folder_and_refuses_an_empty_one(tmp_path):
    root, _ = make_folder(tmp_path)
    cfg = config_mod.from_dict({"paths": {"catalog": "c.duckdb", "audio_store": "audio"},
                                "local": {"folder": "mine"}}, root=tmp_path)
    stage = SOURCES["local"].ingest_stage()
    ctx = StageContext(cfg)
    plan = stage.plan(ctx)
    st = stage.store(ctx, plan, [])
    assert st.ingest and (st.items_in, st.passed) == (12, 11) and st.rejected["audio-missing"] == 1
    assert st.details["copied"] == 4 and st.audio_seconds > 10 and len(st.errors) == 1
    assert "unchanged" in stage.plan(ctx).skipped
    assert stage.plan(StageContext(cfg, RunOptions(refresh_cache=True))).skipped is None
    (root / "rooster.json").write_text(json.dumps({"title": "Rooster", "author": "J", "license_url": CC0}))
    assert stage.plan(ctx).skipped is None                           # the folder changed
    empty = tmp_path / "empty"
    empty.mkdir()
    with Catalog(tmp_path / "other.duckdb") as cat, pytest.raises(LocalFolderError, match="nothing describes"):
        ingest_local(cat, empty, audio_store=tmp_path / "audio", config_hash="t")


def test_a_metadata_csv_without_its_columns_is_an_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metadata.csv").write_text("file,title\nx.wav,X\n")
    with Catalog(tmp_path / "c.duckdb") as cat, pytest.raises(LocalFolderError, match="missing column.*author"):
        ingest_local(cat, tmp_path / "m", audio_store=tmp_path / "audio", config_hash="t")


def test_an_unchanged_fma_dump_is_not_read_again(fma_dir, tmp_path):
    cfg = config_mod.from_dict({"paths": {"catalog": "c.duckdb", "audio_store": "audio"},
                                "fma": {"metadata_dir": str(fma_dir)}}, root=tmp_path)
    stage, ctx = SOURCES["fma"].ingest_stage(), StageContext(cfg)
    st = stage.store(ctx, stage.plan(ctx), [])
    assert st.ingest and st.passed == st.details["tracks"] > 0 and st.audio_seconds > 0
    assert "unchanged" in stage.plan(ctx).skipped
    assert stage.plan(StageContext(cfg, RunOptions(refresh_cache=True))).skipped is None
    other = config_mod.from_dict({"paths": {"catalog": "other.duckdb", "audio_store": "audio"},
                                  "fma": {"metadata_dir": str(fma_dir)}}, root=tmp_path)
    assert stage.plan(StageContext(other)).skipped is None           # another catalogue reads it


def test_hostile_sidecars_and_rows(tmp_path):
    root, secret = tmp_path / "mine", tmp_path / "secret.json"
    root.mkdir()
    secret.write_text(json.dumps({"title": "secret", "license_url": CC0}))
    for name in ("evil.wav", "bad.wav", "types.wav", "a.wav"):
        shutil.copy(AUDIO / "kenney-laser1-wav.wav", root / name)
    (root / "evil.wav.json").symlink_to(secret)                       # a sidecar that leaves the folder
    (root / "bad.wav.json").write_text("{not json")
    (root / "types.wav.json").write_text(json.dumps({"title": 5, "author": "A", "license_url": ["x"], "tags": "p,q"}))
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([COLUMNS, ["a.wav", "A", "B", CC0, "", "same", "", ""],
                                 ["a.wav", "A again", "B", CC0, "", "same", "", ""],          # the id again
                                 ["a.wav", "Shifted", "B", CC0, "", "x1", "", "", "one too many"],
                                 ["a.wav", "Bad id", "B", CC0, "", "../up", "", ""]])
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = ingest_local(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert st.refused["evil.wav.json"].startswith("unreadable sidecar:") and "escapes" in st.refused["evil.wav.json"]
        assert st.refused["bad.wav.json"].startswith("unreadable sidecar:")
        assert "is also metadata.csv line 2" in st.refused["metadata.csv line 3"]
        assert "id: '../up' is not" in st.refused["metadata.csv line 5"]
        record = cat.latest_decision_map("record")
        assert "title: expected a string" in record["local:types.wav"]["reason"]
        assert "license_url: ['x'] is not an absolute http(s) URL" in record["local:types.wav"]["reason"]
        assert "row: 1 cell(s) beyond the header" in record["local:x1"]["reason"]
        types = cat.get_recording("local:types.wav")
        assert (types["title"], types["license_url"], types["license_raw"], types["tags"]) == (None, None, '["x"]',
                                                                                               ["p", "q"])
        assert {r["recording_id"] for r in cat.query("SELECT recording_id FROM recordings")} == {
            "local:same", "local:x1", "local:types.wav"}


def test_a_local_folder_through_the_pipeline_runner(tmp_path):
    """The same folder through the one runner `sao refresh` and the flows use: its ingest stage, the gate,
    decode, then the release stages (a release needing only the gate and decode here, so no model runs)."""
    from sao.pipeline.runner import run_pipeline
    from tests.conftest import flow_config
    root, _ = make_folder(tmp_path)
    cfg = config_mod.load(flow_config(tmp_path, local={"folder": str(root)},
                                      shards={"root": str(tmp_path / "shards"), "required_stages": ["license_gate"]},
                                      paths={"releases": str(tmp_path / "releases")}))
    out = run_pipeline(cfg, ["ingest_local", "license_gate", "decode", "release", "shards", "attribution_report"],
                       show_progress=False)
    assert out["ingest_local"].ingest and out["ingest_local"].items_in == 12
    rejected = out["license_gate"].rejected
    assert [rejected[f"local:license-{k}"] for k in ("not-allowed", "missing", "unknown")] == [1, 1, 1]
    assert out["decode"].passed == 4 and out["release"].passed == 4
    assert out["release"].rejected == {"license": 3, "malformed": 3, "corrupt": 1}
    index = pd.read_parquet(pathlib.Path(out["shards"].details["location"]) / "index.parquet")
    assert set(index["recording_id"]) == set(ADMITTED)
    report = pathlib.Path(out["attribution_report"].details["folder"])
    with open(report / "attribution-local.csv", newline="", encoding="utf-8") as f:
        assert {f"local:{r[0]}" for r in list(csv.reader(f))[1:]} == set(ADMITTED)
    again = run_pipeline(cfg, ["ingest_local"], show_progress=False)["ingest_local"]
    assert "unchanged since its last complete ingest" in again.skipped


def test_an_unreadable_local_folder_is_reported_and_the_refresh_goes_on(tmp_path):
    from sao.pipeline.runner import run_pipeline
    from tests.conftest import flow_config
    root = tmp_path / "mine"
    root.mkdir()
    (root / "metadata.csv").write_bytes(b"file,title\n\xff\xfe broken\n")        # no required columns, not UTF-8
    cfg = config_mod.load(flow_config(tmp_path, local={"folder": str(root)}, freesound={"enabled": False}))
    out = run_pipeline(cfg, "refresh", show_progress=False)
    assert "cannot be read" in out["ingest_local"].skipped and str(root) in out["ingest_local"].errors
    assert out["crawl_freesound"].skipped == out["download"].skipped == "[freesound].enabled = false"
    assert not out["license_gate"].skipped and not out["dedup"].skipped       # the rest of the run went on


def test_a_take_down_follows_the_audio_to_a_renamed_entry(tmp_path):
    """Review finding: a take-down of local:x was dodged by giving the same file another id in
    metadata.csv. The take-down names the recording; the catalogue blocks its audio under any id."""
    root = tmp_path / "mine"
    root.mkdir()
    shutil.copy(AUDIO / "minetest-water-1.ogg", root / "water.ogg")

    def write(entry_id):
        with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([COLUMNS, ["water.ogg", "Water", "Yuval", CC0, "", entry_id, "", ""]])
    store = tmp_path / "audio"
    with Catalog(tmp_path / "c.duckdb") as cat:
        write("first")
        ingest_local(cat, root, audio_store=store, config_hash="t")
        cat.add_takedown("local:first", "author request", "mail 1")
        write("renamed")                                          # the same bytes under a new id
        ingest_local(cat, root, audio_store=store, config_hash="t")
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        run_decode(cat, audio_store=store, config_hash="t", show_progress=False)
        why = {r["recording_id"]: r["reason"] for r in cat.admission(["license_gate"])}
        assert why == {"local:first": "take-down", "local:renamed": "take-down"}
        assert "local:renamed" in cat.active_takedowns()


def test_a_release_admitted_by_random_weights_says_so(tmp_path):
    """Decisions made with random weights can admit items (the demo, smoke runs), but never pass for
    calibrated ones: the release names how many, per stage, and its report carries the mark."""
    from sao.pipeline.runner import run_pipeline
    from tests.conftest import flow_config
    root, _ = make_folder(tmp_path)
    cfg = config_mod.load(flow_config(tmp_path, local={"folder": str(root)}, freesound={"enabled": False},
                                      shards={"required_stages": ["license_gate", "music_screen"]},
                                      paths={"releases": str(tmp_path / "releases")}))
    out = run_pipeline(cfg, ["ingest_local", "license_gate", "decode", "music_screen", "release",
                             "attribution_report"], show_progress=False)
    n = out["release"].passed
    assert n > 0 and out["release"].details["uncalibrated_admissions"] == {"music_screen": n}
    md = (pathlib.Path(out["attribution_report"].details["folder"]) / "report.md").read_text()
    assert f"**UNCALIBRATED**: recordings admitted by decisions made with random weights (music_screen: {n})" in md
    page = (pathlib.Path(out["attribution_report"].details["folder"]) / "index.html").read_text()
    assert 'id="uncalibrated"' in page and f"music_screen: {n}" in page


def test_fifos_never_block_the_ingest(tmp_path):
    """Review finding: a FIFO named like a sidecar or metadata.csv hung the ingest forever. Special files
    are never opened: a FIFO sidecar is refused, a FIFO metadata.csv is not metadata, a FIFO audio file is missing."""
    import os
    import threading
    root = tmp_path / "mine"
    root.mkdir()
    shutil.copy(AUDIO / "minetest-water-1.ogg", root / "water.ogg")
    (root / "water.ogg.json").write_text(json.dumps({"title": "Water", "author": "Yuval", "license_url": CC0}))
    os.mkfifo(root / "wind.wav.json")
    os.mkfifo(root / "wind.wav")
    os.mkfifo(root / "metadata.csv")
    done = {}

    def ingest():
        with Catalog(tmp_path / "c.duckdb") as cat:
            from sao.sources.local_metadata import folder_digest
            folder_digest(root)
            done["stats"] = ingest_local(cat, root, audio_store=tmp_path / "audio", config_hash="t")
    t = threading.Thread(target=ingest, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the ingest blocked on a FIFO"
    st = done["stats"]
    assert st.copied == 1 and "not a plain file" in st.refused["wind.wav.json"]


def test_a_transient_read_error_is_tried_again_next_run(tmp_path, monkeypatch):
    """Review finding: a disk-full error while copying froze the entry as corrupt, because the folder's
    digest was recorded as a complete ingest. Now the next run reads the folder again and stores it."""
    import errno

    from sao.pipeline.runner import run_pipeline
    from sao.sources import fma
    from tests.conftest import flow_config
    root, _ = make_folder(tmp_path)
    cfg = config_mod.load(flow_config(tmp_path, local={"folder": str(root)}))
    real = fma.store_copy

    def disk_full(path, store, sha):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fma, "store_copy", disk_full)
    first = run_pipeline(cfg, ["ingest_local"], show_progress=False)["ingest_local"]
    assert first.details["unreadable"] == 4 and first.details["copied"] == 0
    monkeypatch.setattr(fma, "store_copy", real)
    again = run_pipeline(cfg, ["ingest_local"], show_progress=False)["ingest_local"]
    assert not again.skipped and again.details["copied"] == 4 and again.details["unreadable"] == 0
