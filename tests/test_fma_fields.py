"""FMA metadata is read verbatim: a title "None", an artist "NA" or an album "null" are names, not
missing values (pandas would read them as NaN), and a year comes only from a well-formed date."""
import json
import shutil

import pandas as pd
import pytest

from sao.catalog import Catalog
from sao.licensing import LicensePolicy
from sao.licensing.stage import run_license_gate
from sao.sources import SOURCES
from sao.sources.fma import ingest_fma, read_fma_metadata


def _copy(fma_dir, tmp_path):
    root = tmp_path / "fma"
    shutil.copytree(fma_dir, root)
    return root


def _edit(root, name, cells):
    """Set cells of an FMA metadata CSV as text, the way the dump stores them."""
    path = root / "fma_metadata" / name
    df = pd.read_csv(path, index_col=0, header=[0, 1] if name == "tracks.csv" else 0, dtype=str,
                     keep_default_na=False)
    for (row, col), value in cells.items():
        df.loc[row, col] = value
    df.to_csv(path)


def _cc_by_tracks(root):
    raw = pd.read_csv(root / "fma_metadata" / "raw_tracks.csv", index_col=0, dtype=str, keep_default_na=False)
    return [t for t in raw.index if "/licenses/by/" in raw.loc[t, "license_url"]]


def test_none_na_and_null_are_names_not_missing_values(fma_dir, tmp_path):
    root = _copy(fma_dir, tmp_path)
    t, u = _cc_by_tracks(root)[:2]
    # in tracks.csv for one track; for the other only in raw_tracks.csv (its tracks.csv cells empty)
    _edit(root, "tracks.csv", {(t, ("track", "title")): "None", (t, ("artist", "name")): "NA",
                               (t, ("album", "title")): "null",
                               (u, ("track", "title")): "", (u, ("artist", "name")): "", (u, ("album", "title")): ""})
    _edit(root, "raw_tracks.csv", {(u, "track_title"): "NaN", (u, "artist_name"): "None", (u, "album_title"): "N/A"})
    by_id = {str(r["track_id"]): r for r in read_fma_metadata(root)[0]}
    assert (by_id[t]["title"], by_id[t]["artist"], by_id[t]["album"]) == ("None", "NA", "null")
    assert (by_id[u]["title"], by_id[u]["artist"], by_id[u]["album"]) == ("NaN", "None", "N/A")
    with Catalog(tmp_path / "c.duckdb") as cat:
        ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        assert f"fma:{t}" in {r["recording_id"] for r in cat.query("SELECT recording_id FROM gate_admitted")}
        rec = cat.get_recording(f"fma:{t}")
        rec["extra"] = json.loads(rec["extra"])
        assert (rec["title"], rec["author"], rec["extra"]["album"]) == ("None", "NA", "null")
        assert rec["extra"]["attribution"]["author"] == "NA" and rec["extra"]["attribution"]["title"] == "None"
        line = SOURCES["fma"].attribution_line(rec)
        assert line.startswith("None by NA -- ") and "(unknown author)" not in line and "(untitled)" not in line


@pytest.mark.parametrize("raw_date, year", [
    ("11/26/2008 01:48:12 AM", "2008"),      # raw_tracks.csv's own form
    ("11/26/2008", "2008"),
    ("2011-03-04 10:00:00", "2011"),
    ("11/2", ""),                            # the fallback must never make '11/2' a year
    ("11/26/08", ""),
    ("13/45/2008", ""),
    ("2008", ""),
    ("NA", ""),
])
def test_a_year_comes_only_from_a_well_formed_date(fma_dir, tmp_path, raw_date, year):
    root = _copy(fma_dir, tmp_path)
    t = _cc_by_tracks(root)[0]
    _edit(root, "tracks.csv", {(t, ("track", "date_created")): "", (t, ("track", "date_recorded")): ""})
    _edit(root, "raw_tracks.csv", {(t, "track_date_created"): raw_date, (t, "track_date_recorded"): ""})
    track = next(r for r in read_fma_metadata(root)[0] if str(r["track_id"]) == t)
    assert track["year"] == year
    if year:
        assert "date_created" not in track["problems"]
    else:   # a malformed date is a record problem, never a guessed year
        assert "date_created" in track["problems"] and raw_date in track["problems"]["date_created"]
    with Catalog(tmp_path / "c.duckdb") as cat:
        ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert json.loads(cat.get_recording(f"fma:{t}")["extra"])["year"] == year
