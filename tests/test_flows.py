"""The Prefect refresh flow against the loopback replica (one temporary Prefect server)."""
import pathlib


from sao.catalog import Catalog
from sao.sources.freesound import FreesoundError
from tests.conftest import flow_config

SECRET = "flow-token-81ab"


def test_retry_condition_is_transient_only():
    import requests

    from flows.refresh import is_transient
    assert is_transient(FreesoundError("x", 503)) and is_transient(FreesoundError("x", 429))
    assert is_transient(FreesoundError("retries exhausted")) and is_transient(requests.ConnectionError())
    assert not is_transient(FreesoundError("bad filter", 400)) and not is_transient(ValueError("data"))
    assert not is_transient(FreesoundError("no Freesound API token", transient=False))


def test_refresh_flow_runs_and_reruns(prefect_server, freesound_sounds, fma_dir, tmp_path, monkeypatch):
    from flows.refresh import refresh
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    cfg = flow_config(tmp_path, fma={"metadata_dir": str(fma_dir)})
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv:
        srv.inject_fault(r"/apiv2/search/", 503, times=1)   # absorbed by the client's own retry
        out = refresh(str(cfg), base_url=srv.api_url)
        d = {k: v["details"] for k, v in out.items() if isinstance(v, dict) and "details" in v}
        assert d["music_screen"]["uncalibrated"] and d["music_screen"]["screened"] == 26
        assert d["copyright_review"]["catalogue_match"]["to_human_review"] == 1
        assert d["crawl_freesound"]["new"] == 26 and d["ingest_fma"]["tracks"] == 10
        assert d["license_gate"]["written"] == 36 and d["download"]["downloaded"] == 26
        assert d["embed"]["embedded"] == 31 and d["dedup"]["recordings"] == 31
        assert out["ingest_local"]["skipped"]                                 # no local folder configured
        again = refresh(str(cfg), base_url=srv.api_url)
        assert again["crawl_freesound"]["details"]["new"] == 0 and again["license_gate"]["details"]["written"] == 0
        assert again["download"]["details"]["candidates"] == 0 and "unchanged" in again["ingest_fma"]["skipped"]
    with Catalog(tmp_path / "c.duckdb") as cat:
        assert cat.counts()["recordings"] == 36
        assert SECRET.encode() not in (tmp_path / "c.duckdb").read_bytes()


def test_shards_flow_writes_each_shard_as_a_task(prefect_server, freesound_sounds, fma_dir, tmp_path, monkeypatch):
    import json

    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.refresh import refresh
    from flows.shards import shards
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    cfg = flow_config(tmp_path, fma={"metadata_dir": str(fma_dir)},
                      shards={"root": str(tmp_path / "shards"), "target_shard_mb": 16,
                              "required_stages": ["license_gate"]})
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv:
        refresh(str(cfg), base_url=srv.api_url, screen=False, dedup=False)
    # threads keep the test fast; `python -m flows.shards` uses a process pool
    out = shards.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(str(cfg), "f")
    assert out["status"] == "complete" and out["shards"] >= 3 and out["shards_written"] == out["shards"]
    plan = json.loads((tmp_path / "shards" / "f" / "plan.json").read_text())
    assert plan["samples"] == out["samples"]
    again = shards.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(str(cfg), "f")
    assert again["shards_skipped"] == again["shards"]
    assert json.loads((tmp_path / "shards" / "f" / "plan.json").read_text())["shard_sha256"] == plan["shard_sha256"]


def test_dedup_flow_embeds_in_parallel_and_groups(prefect_server, tmp_path, corpus_entries):
    import datetime as dt
    import pathlib

    from flows.dedup import dedup
    from sao.catalog import Decision

    from .conftest import decode_stored
    store = pathlib.Path(corpus_entries[0]["path"]).parent
    cfg = flow_config(tmp_path, paths={"audio_store": str(store)}, orchestration={"batch_files": 2})
    with Catalog(tmp_path / "c.duckdb") as cat:
        for e in corpus_entries[:6]:
            cat.upsert_recordings([dict(source="freesound", source_id=e["id"], crawl_time=dt.datetime(2026, 1, 1),
                                        license_raw=e["license_url"], content_sha256=e["sha256"],
                                        audio_path=pathlib.Path(e["path"]).name, duration=e["duration"])])
            cat.add_decisions([Decision(f"freesound:{e['id']}", "license_gate", "pass", "ok", config_hash="t")])
        decode_stored(cat, store)                      # dedup reads only audio the decode stage passed
    out = dedup(str(cfg))
    assert out["embed"]["details"]["embedded"] == 6 and out["dedup"]["details"]["recordings"] == 6
    again = dedup(str(cfg))
    assert again["embed"]["details"]["embedded"] == 0 and again["embed"]["details"]["already_stored"] == 6


def test_train_flow_runs_both_stages_in_order(prefect_server, tmp_path, freesound_sounds, fma_dir, monkeypatch):
    import json

    from flows.refresh import refresh
    from flows.shards import shards
    from flows.train import train
    from prefect.task_runners import ThreadPoolTaskRunner
    from sao.models.t5_local import build_tiny_t5
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    cfg = flow_config(tmp_path, shards={"root": str(tmp_path / "shards"), "required_stages": ["license_gate"]})
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as srv:
        refresh(str(cfg), base_url=srv.api_url, screen=False, dedup=False)
    shards.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))(str(cfg), "t")
    t5 = build_tiny_t5(tmp_path / "t5", ["water rain wind dog bird music"] * 100)
    out = train(str(tmp_path / "shards" / "t"), str(tmp_path / "train"), vae_steps=2, dit_steps=2, t5_path=str(t5),
                catalog=str(tmp_path / "c.duckdb"))
    assert out["vae"]["step"] == 2 and out["dit"]["step"] == 2
    man = json.loads((tmp_path / "train" / "dit" / "step-0000002-ema.manifest.json").read_text())
    assert man["training"]["vae_checkpoint"].endswith("step-0000002-ema.safetensors")
    assert man["counts"]["recordings"] > 0
    # the attribution flow freezes a release and reports it; take-down impact finds the checkpoints
    from flows.attribution import attribution
    cfg.write_text(cfg.read_text().replace(
        "[paths]\n", f'[paths]\nreleases = "{tmp_path / "releases"}"\ncheckpoints = "{tmp_path / "train"}"\n'))
    rep = attribution(str(cfg), create=True)
    assert rep["release"]["status"] == "created" and pathlib.Path(rep["report"]["html"]).is_file()
    assert rep["report"]["recordings"] == rep["release"]["recordings"] > 0
    from sao.attribution.release import takedown_impact
    from sao.catalog import Catalog
    victim = man["recordings"][0]["recording_id"]
    with Catalog(tmp_path / "c.duckdb") as cat:
        impact = takedown_impact(cat, victim, shards_root=tmp_path / "shards", checkpoint_roots=[tmp_path / "train"])
    assert impact["releases"] == [rep["release"]["name"]] and impact["shards"]
    dit = [c for c in impact["checkpoints"] if c["stage"] == "dit"]
    assert len(dit) == 2 and {c["stage"] for c in impact["checkpoints"]} <= {"vae", "dit"}      # raw and EMA
