import datetime as dt

import pandas as pd
import pytest

from sao.catalog import MIGRATIONS, SCHEMA_VERSION, TABLES, Catalog, CatalogError, Decision

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)


def rec(i, **kw):
    base = dict(source="freesound", source_id=i, title=f"sound {i}", author="someone", tags=["a", "b"],
                duration=1.5, sample_rate=44100, channels=2,
                license_raw="http://creativecommons.org/licenses/by/3.0/", crawl_time=NOW)
    base.update(kw)
    return base


def test_fresh_catalogue_has_every_table_at_latest_version(tmp_path):
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert cat.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
        assert set(cat.counts()) == set(TABLES)
        cols = {r[0] for r in cat.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", ["decisions"]).fetchall()}
        assert {"recording_id", "stage", "verdict", "reason", "model_name", "checkpoint_sha256", "threshold",
                "config_hash", "decided_at", "uncalibrated"} <= cols


def test_migration_from_v1_keeps_rows_and_is_idempotent(tmp_path):
    path = tmp_path / "old.duckdb"
    with Catalog(path, migrate_to=1) as cat:
        assert cat.schema_version() == 1
        cat.con.execute("INSERT INTO recordings (recording_id, source, source_id, title, license_canonical, "
                        "crawl_time, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        ["freesound:1", "freesound", "1", "sound 1", "cc-by-3.0", NOW, NOW])
    with Catalog(path) as upgraded:  # opening applies the pending migrations
        assert upgraded.schema_version() == SCHEMA_VERSION
        assert upgraded.get_recording("freesound:1")["title"] == "sound 1"
        assert upgraded.counts()["crawl_cursors"] == 0
        assert upgraded.migrate() == []
    with Catalog(path) as again:
        assert again.con.execute("SELECT count(*) FROM schema_migrations").fetchall()[0][0] == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "c.duckdb"
    with Catalog(path) as cat:
        cat.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [99, "future", NOW])
    with pytest.raises(CatalogError, match="newer than this sao"):
        Catalog(path)


def test_duplicate_keys_in_one_batch_keep_the_last(catalog):
    catalog.upsert_recordings([rec(1, title="first"), rec(1, title="second")])
    assert catalog.counts()["recordings"] == 1 and catalog.get_recording("freesound:1")["title"] == "second"


def test_upsert_updates_in_place_and_keeps_first_seen(catalog):
    catalog.upsert_recordings([rec(1), rec(2)])
    later = NOW + dt.timedelta(days=1)
    catalog.upsert_recordings([rec(1, title="renamed", crawl_time=later,
                                   license_raw="https://creativecommons.org/licenses/by/4.0/")])
    assert catalog.counts()["recordings"] == 2
    r = catalog.get_recording("freesound:1")
    assert r["title"] == "renamed" and r["crawl_time"] == later and r["first_seen"] == NOW
    assert r["license_canonical"] == "cc-by-4.0" and r["tags"] == ["a", "b"]


def test_recrawl_keeps_stored_audio_unless_the_source_file_changed(catalog):
    catalog.upsert_recordings([rec(1, md5="a" * 32), rec(2, md5="b" * 32)])
    catalog.set_audio("freesound:1", "s1", "s1/x.mp3", "preview-hq-mp3")
    catalog.set_audio("freesound:2", "s2", "s2/x.mp3", "preview-hq-mp3")
    catalog.upsert_recordings([rec(1, md5="a" * 32, title="t"), rec(2, md5="c" * 32)])
    one, two = catalog.get_recording("freesound:1"), catalog.get_recording("freesound:2")
    assert (one["content_sha256"], one["audio_path"], one["audio_variant"], one["title"]) == \
        ("s1", "s1/x.mp3", "preview-hq-mp3", "t")
    assert (two["content_sha256"], two["audio_path"], two["audio_variant"]) == (None, None, None)


def test_bad_record_names_item_and_writes_nothing(catalog):
    with pytest.raises(CatalogError, match=r"freesound:7: missing required field\(s\) crawl_time"):
        catalog.upsert_recordings([rec(6), rec(7, crawl_time=None)])
    assert catalog.counts()["recordings"] == 0
    with pytest.raises(CatalogError, match="unknown field"):
        catalog.upsert_recordings([rec(8, password="x")])
    with pytest.raises(CatalogError, match="NUL byte"):
        catalog.upsert_recordings([rec(9, title="a\x00b")])
    # a lone surrogate (what JSON's "\ud83c" decodes to) is no UTF-8 text: refused by name, not a crash
    for field, value in (("title", "bird \ud83c"), ("author", "\udfb5"), ("tags", ["ok", "x\ud800"]),
                         ("source_id", "13\udc00"), ("extra", {"gen_ai_preference": "x\ud800"})):
        with pytest.raises(CatalogError, match=r"freesound:.*(surrogate|whole characters)"):
            catalog.upsert_recordings([rec(13), dict(rec(14), **{field: value})])
    # a real character beyond U+FFFF (written as a pair of escapes) is fine, and so is text saying "\ud800"
    assert catalog.validate_recording(dict(rec(15), extra={"a": "\U0001f3b5", "b": "\\ud800"}, title="\U0001f3b5"))
    with pytest.raises(CatalogError, match="freesound:12: field duration has a bad value 'long'"):
        catalog.upsert_recordings([rec(11), rec(12, duration="long")])
    assert catalog.counts()["recordings"] == 0
    with pytest.raises(CatalogError, match="source must be"):
        catalog.upsert_recordings([rec(10, source="youtube")])


def test_sql_metacharacters_are_stored_literally(catalog):
    evil = "x'); DROP TABLE recordings; --"
    catalog.upsert_recordings([rec(evil, title=evil, description='"; DELETE FROM decisions; --')])
    assert catalog.get_recording(f"freesound:{evil}")["title"] == evil
    assert catalog.counts()["recordings"] == 1


def test_decisions_record_model_checkpoint_threshold(catalog):
    catalog.add_decisions([
        Decision("freesound:1", "license_gate", "pass", "cc-by-3.0 allowed", config_hash="abc"),
        Decision("freesound:1", "music_screen", "review", "music for 41.0 s", config_hash="abc",
                 model_name="Cnn14_DecisionLevelMax", checkpoint_sha256="f" * 64, threshold=0.15),
        Decision("freesound:1", "music_screen", "pass", "music for 3.0 s", config_hash="abd",
                 model_name="Cnn14_DecisionLevelMax", uncalibrated=True, threshold=0.15),
    ])
    latest = {(d["stage"]): d for d in catalog.latest_decisions()}
    assert latest["music_screen"]["verdict"] == "pass" and latest["music_screen"]["uncalibrated"] is True
    assert latest["license_gate"]["model_name"] is None
    rows = catalog.latest_decisions("music_screen")
    assert len(rows) == 1 and rows[0]["threshold"] == 0.15


def test_decision_validation(catalog):
    with pytest.raises(CatalogError, match="verdict 'maybe'"):
        catalog.add_decisions([Decision("freesound:1", "s", "maybe", "r", config_hash="c")])
    with pytest.raises(CatalogError, match="needs a checkpoint sha256"):
        catalog.add_decisions([Decision("freesound:1", "s", "pass", "r", config_hash="c", model_name="PANNs")])
    with pytest.raises(CatalogError, match="reason is required"):
        catalog.add_decisions([Decision("freesound:1", "s", "pass", "", config_hash="c")])
    assert catalog.counts()["decisions"] == 0


def test_takedowns(catalog):
    tid = catalog.add_takedown("freesound:5", "author request", "mail #12")
    assert tid >= 1 and catalog.active_takedowns() == {"freesound:5"}
    with pytest.raises(CatalogError):
        catalog.add_takedown("freesound:6", "")


def test_parquet_export_of_every_table(catalog, tmp_path):
    catalog.upsert_recordings([rec(1), rec(2)])
    for t in TABLES:
        out = catalog.export_parquet(t, tmp_path / "x" / f"{t}.parquet")
        assert out.exists()
    df = pd.read_parquet(tmp_path / "x" / "recordings.parquet")
    assert sorted(df["source_id"]) == ["1", "2"] and list(df["tags"][0]) == ["a", "b"]
    assert not list((tmp_path / "x").glob("*.tmp"))
    with pytest.raises(CatalogError, match="not a catalogue table"):
        catalog.export_parquet("recordings; DROP TABLE runs", tmp_path / "y.parquet")
