import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sao.catalog import Catalog
from sao.licensing import LicensePolicy, canonical_license
from sao.licensing.stage import run_license_gate
from sao.sources.audio_download import download_audio, pending_downloads
from sao.sources.fma import ingest_fma
from sao.sources.freesound import FreesoundClient
from sao.sources.freesound_crawl import crawl_freesound
from sao.sources.freesound_reconcile import reconcile_freesound
from sao.sources.replica import ReplicaServer, ReplicaSettings


SECRET = "crawl-token-5f2a71"
ALLOWED = {"cc0-1.0", "cc-by-3.0", "cc-by-4.0", "cc-sampling+-1.0"}


@pytest.fixture
def srv(freesound_sounds):
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as s:
        yield s


def expected_ids(sounds):
    return {str(s["id"]) for s in sounds if canonical_license(s["license"]) in ALLOWED}


def ids(cat, source="freesound"):
    rows = cat.query("SELECT source_id FROM recordings WHERE source = ?", [source])
    return [r["source_id"] for r in rows]


def test_crawl_pages_through_everything_once_then_only_what_is_new(srv, freesound_sounds, tmp_path):
    c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = crawl_freesound(cat, c, page_size=2)
        assert st.pages >= 13 and st.new == len(expected_ids(freesound_sounds))
        assert sorted(ids(cat)) == sorted(expected_ids(freesound_sounds))
        before = srv.request_counts["/apiv2/search/"]
        again = crawl_freesound(cat, c, page_size=2)
        # only the boundary item of each search is fetched again, and updated in place
        assert again.new == 0 and again.items == 3 and srv.request_counts["/apiv2/search/"] - before == 3
        assert len(ids(cat)) == len(set(ids(cat))) == len(expected_ids(freesound_sounds))
        # a new upload shows up on the next run
        new = dict(freesound_sounds[0], id=999_001, name="new upload", created="2030-01-01T00:00:00")
        srv._sounds[999_001] = new
        third = crawl_freesound(cat, c, page_size=2)
        assert third.new == 1 and cat.get_recording("freesound:999001")["title"] == "new upload"
        r = cat.get_recording("freesound:100001")
        assert r["license_canonical"] == "cc0-1.0" and r["page_url"].endswith("/sounds/100001/")
        assert r["preview_url"].endswith("-hq.mp3") and len(r["md5"]) == 32


def test_kill_9_mid_crawl_resumes_without_duplicates_or_misses(freesound_sounds, tmp_path):
    settings = ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)
    with ReplicaServer(freesound_sounds, settings) as s:
        cfg = tmp_path / "sao.toml"
        cfg.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\n[freesound]\npage_size = 1\n'
                       f'rate_limit_per_minute = 900\ncommit_every_pages = 2\ndownload = false\n')
        env = dict(os.environ, FREESOUND_API_TOKEN=SECRET, SAO_NO_PROGRESS="1")
        p = subprocess.Popen([sys.executable, "-m", "sao.cli", "--config", str(cfg), "crawl", "freesound",
                              "--base-url", s.api_url], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while s.request_counts["/apiv2/search/"] < 9 and time.time() < deadline and p.poll() is None:
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed_after = s.request_counts["/apiv2/search/"]
        assert 9 <= killed_after < 26, "the crawl should have been killed midway"
        with Catalog(tmp_path / "c.duckdb") as cat:
            partial = len(ids(cat))
            assert 0 < partial < 26
            c = FreesoundClient(s.api_url, SECRET, rate_limit_per_minute=10_000)
            st = crawl_freesound(cat, c, page_size=1)
            got = ids(cat)
            assert len(got) == len(set(got)), "duplicates after resume"
            assert set(got) == expected_ids(freesound_sounds), "items missed after resume"
            # resumed from the cursors: it did not start again from scratch
            assert st.items < 26 + 3


def test_reconcile_goes_on_past_a_lookup_that_fails_and_counts_a_still_allowed_item_apart(srv, freesound_sounds,
                                                                                         tmp_path):
    from sao.sources.freesound import RetryPolicy
    c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000, retry=RetryPolicy(max_retries=0))
    with Catalog(tmp_path / "c.duckdb") as cat:
        crawl_freesound(cat, c)
        allowed = sorted(expected_ids(freesound_sounds), key=int)
        broken, listed_late, gone = allowed[0], allowed[1], allowed[2]
        srv.delete_sound(int(gone))
        srv.inject_fault(rf"^/apiv2/sounds/{broken}/$", 500, times=5)
        # "not seen" by the listing: the broken one's lookup fails, the late one is still CC, the gone one 404s
        out = reconcile_freesound(cat, c, set(allowed) - {broken, listed_late, gone})
        assert set(out["failed"]) == {f"freesound:{broken}"} and "HTTP 500" in out["failed"][f"freesound:{broken}"]
        assert out["deleted"] == 1 and out["relicensed"] == 0 and out["still_allowed"] == 1
        assert [t["recording_id"] for t in cat.takedowns()] == [f"freesound:{gone}"]


def test_reconcile_deleted_and_relicensed_items_become_takedowns(srv, freesound_sounds, tmp_path):
    c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    policy = LicensePolicy()
    with Catalog(tmp_path / "c.duckdb") as cat:
        crawl_freesound(cat, c)
        run_license_gate(cat, policy, config_hash="t")
        allowed = sorted(expected_ids(freesound_sounds))
        gone, relicensed, opted = int(allowed[0]), int(allowed[1]), int(allowed[2])
        srv.delete_sound(gone)
        srv.update_sound(relicensed, license="http://creativecommons.org/licenses/by-nc/4.0/",
                         _license_name="Attribution NonCommercial")
        srv.update_sound(opted, gen_ai_preference="no-gen-ai")
        st = crawl_freesound(cat, c, full=True)
        out = reconcile_freesound(cat, c, st.seen_ids)
        assert out == {"deleted": 1, "relicensed": 1}
        gate = run_license_gate(cat, policy, config_hash="t")
        assert gate.takedowns == 2
        reasons = {t["recording_id"]: t["reason"] for t in cat.takedowns()}
        assert reasons[f"freesound:{gone}"].startswith("deleted-at-source")
        assert reasons[f"freesound:{relicensed}"].startswith("license-not-allowed-after-admission")
        assert reasons[f"freesound:{opted}"].startswith("opt-out-after-admission")
        latest = cat.latest_decision_map("license_gate")
        assert latest[f"freesound:{opted}"]["reason"] == "opt-out: gen_ai_preference=no-gen-ai"
        # the gate is idempotent: nothing changed, nothing written
        assert run_license_gate(cat, policy, config_hash="t").written == 0
        # taken-down items are never downloaded
        pending = {r["recording_id"] for r in pending_downloads(cat)}
        assert not pending & set(reasons)


def test_downloads_are_resumable_and_skip_takedowns(srv, tmp_path):
    c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    store = tmp_path / "audio"
    with Catalog(tmp_path / "c.duckdb") as cat:
        crawl_freesound(cat, c)
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        cat.add_takedown("freesound:100001", "author request")
        srv.inject_truncation(r"/previews/100002-hq\.mp3")
        first = download_audio(cat, c, store)
        assert first.failed == 1 and first.downloaded == first.candidates - 1
        assert not list(store.rglob("*.part")) and not list(store.rglob(".download-*"))
        second = download_audio(cat, c, store)
        assert second.candidates == 1 and second.downloaded == 1
        assert download_audio(cat, c, store).candidates == 0
        r = cat.get_recording("freesound:100002")
        assert (store / r["audio_path"]).is_file() and r["audio_path"].startswith(r["content_sha256"][:2])
        assert cat.get_recording("freesound:100001")["audio_path"] is None


def test_fma_ingest_records_missing_audio_and_removed_tracks(fma_dir, tmp_path):
    root = tmp_path / "fma"
    shutil.copytree(fma_dir, root)
    (root / "fma_large" / "000" / "000003.mp3").unlink()
    with Catalog(tmp_path / "c.duckdb") as cat:
        st = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert st.tracks == 10 and st.audio_missing == 1 and st.with_audio == 9
        d = cat.latest_decision_map("audio")
        assert d["fma:3"]["reason"].startswith("audio-missing: fma_large/000/000003.mp3")
        vibe = cat.get_recording("fma:2")
        assert vibe["title"] == "Vibe Ace" and vibe["author"] == "Kevin MacLeod"
        assert vibe["license_canonical"] == "cc-by-3.0" and "Jazz" in vibe["tags"]
        assert vibe["sample_rate"] == 44100 and vibe["channels"] == 2 and vibe["content_sha256"]
        gate = run_license_gate(cat, LicensePolicy(), config_hash="t")
        assert gate.rejected[("fma", "license-not-allowed")] == 4 and gate.rejected[("fma", "license-missing")] == 1
        # a newer dump without track 4: take-down; ingest again is idempotent otherwise
        tracks = pd.read_csv(root / "fma_metadata" / "tracks.csv", index_col=0, header=[0, 1])
        tracks.drop(index=4).to_csv(root / "fma_metadata" / "tracks.csv")
        st2 = ingest_fma(cat, root, audio_store=tmp_path / "audio", config_hash="t")
        assert st2.removed == 1 and "fma:4" in cat.active_takedowns()
        assert cat.counts()["decisions"] == 1 + 10  # no repeated audio-missing decision


def test_token_absent_from_catalogue_and_exports(srv, tmp_path):
    c = FreesoundClient(srv.api_url, SECRET, rate_limit_per_minute=10_000)
    with Catalog(tmp_path / "c.duckdb") as cat:
        crawl_freesound(cat, c)
        run_license_gate(cat, LicensePolicy(), config_hash="t")
        for t in ("recordings", "decisions", "crawl_cursors"):
            cat.export_parquet(t, tmp_path / "x" / f"{t}.parquet")
    for p in [tmp_path / "c.duckdb", *(tmp_path / "x").iterdir()]:
        assert SECRET.encode() not in p.read_bytes(), p


def test_cli_takedown_and_refresh(srv, fma_dir, tmp_path, capsys, monkeypatch):
    from sao import cli
    cfg = tmp_path / "sao.toml"
    cfg.write_text(f'[paths]\ncatalog = "{tmp_path / "c.duckdb"}"\naudio_store = "{tmp_path / "audio"}"\n'
                   f'[fma]\nmetadata_dir = "{fma_dir}"\n')
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    monkeypatch.setenv("SAO_NO_PROGRESS", "1")
    assert cli.main(["--config", str(cfg), "takedown", "add", "freesound:100001", "--reason", "author request",
                     "--by", "mail 12"]) == 0
    assert cli.main(["--config", str(cfg), "refresh", "--base-url", srv.api_url]) == 0
    out = capsys.readouterr().out
    assert "license-not-allowed" in out and "kept" in out
    assert cli.main(["--config", str(cfg), "takedown", "list"]) == 0
    assert "freesound:100001" in capsys.readouterr().out
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert cat.get_recording("freesound:100001")["audio_path"] is None
        assert cat.counts()["runs"] == 1
    assert cli.main(["--config", str(cfg), "takedown", "add", "12345", "--reason", "x"]) == 1
