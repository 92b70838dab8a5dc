"""One fault at a time: each kind the replica can inject is survived by the crawl and the download,
and the catalogue ends up exactly as without it."""
import hashlib

import pytest

from sao import config as config_mod
from sao.catalog import Catalog
from tests.conftest import flow_config

TOKEN, OAUTH = "fault-token-1a2b", "fault-oauth-3c4d"
ALLOWED = ("publicdomain/zero", "/licenses/by/", "sampling+")
SEARCH = r"/apiv2/search/"


def _cfg(tmp_path):
    return config_mod.load(flow_config(tmp_path, freesound={"timeout_s": 1, "retry_base_delay_s": 0.01, "max_retries": 6,
                                                            "page_size": 4, "download_originals": True}))


def _crawl(tmp_path, sounds, kind, opts, monkeypatch):
    from tests.conftest import run_stage
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    monkeypatch.setenv("FREESOUND_API_TOKEN", TOKEN)
    cfg = _cfg(tmp_path)
    with ReplicaServer(sounds, ReplicaSettings(api_tokens=[TOKEN], rate_limit_per_minute=0, max_page_size=4)) as srv:
        srv.inject(SEARCH, kind, times=1, **opts)
        out = run_stage(cfg, "crawl_freesound", base_url=srv.api_url).details
        live = {str(s["id"]) for s in srv.sounds() if any(k in s["license"] for k in ALLOWED)}
        fired = srv.faults_injected[kind]
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        got = {r["source_id"] for r in cat.query("SELECT source_id FROM recordings")}
    return out, live, got, fired


@pytest.mark.parametrize("kind,opts", [
    ("status", {"status": 500}), ("status", {"status": 502}), ("status", {"status": 503}),
    ("status", {"status": 429, "retry_after": "0"}), ("status", {"status": 429}), ("reset", {}),
    ("stall", {"seconds": 1.5}), ("truncated-json", {}), ("content-type", {}), ("duplicate-page", {}),
    ("reorder", {}), ("delete-next", {})])
def test_the_crawl_survives_each_fault(kind, opts, tmp_path, freesound_sounds, monkeypatch):
    out, live, got, fired = _crawl(tmp_path, freesound_sounds, kind, opts, monkeypatch)
    assert fired == 1
    assert got == live, f"{kind}: missing {sorted(live - got)}, extra {sorted(got - live)}"
    assert out["malformed"] == 0


@pytest.mark.parametrize("kind", ["truncate", "corrupt", "reset", "stall"])
def test_a_bad_original_download_is_refused_then_fetched_again(kind, tmp_path, freesound_sounds, monkeypatch):
    from tests.conftest import run_stage
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    monkeypatch.setenv("FREESOUND_API_TOKEN", TOKEN)
    monkeypatch.setenv("FREESOUND_OAUTH_TOKEN", OAUTH)
    cfg = _cfg(tmp_path)
    sounds = [s for s in freesound_sounds if "publicdomain/zero" in s["license"]][:3]
    with ReplicaServer(sounds, ReplicaSettings(api_tokens=[TOKEN], oauth_tokens=[OAUTH], rate_limit_per_minute=0)) as srv:
        run_stage(cfg, "crawl_freesound", base_url=srv.api_url)
        run_stage(cfg, "license_gate")
        srv.inject(r"/apiv2/sounds/\d+/download/", kind, times=1, **({"seconds": 1.5} if kind == "stall" else {}))
        first = run_stage(cfg, "download", base_url=srv.api_url).details
        second = run_stage(cfg, "download", base_url=srv.api_url).details
        assert srv.faults_injected[kind] == 1
    # truncated and corrupted bodies fail their size/md5 check and are fetched on the next run;
    # resets and stalls are retried within the run
    assert first["downloaded"] + second["downloaded"] == 3 and first["failed"] == (kind in ("truncate", "corrupt"))
    store = cfg.path(cfg.paths.audio_store)
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        rows = cat.query("SELECT source_id, audio_path, md5 FROM recordings")
    for r in rows:
        assert hashlib.md5((store / r["audio_path"]).read_bytes()).hexdigest() == r["md5"]
    assert not [p for p in store.rglob("*.part")]
