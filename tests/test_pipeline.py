"""One pipeline: the stage contract, the registry and the runner that `sao refresh`, the Prefect
flows and the demo share. A new stage is one class and one registry line, and runs everywhere."""
import datetime as dt

import pytest

from sao.catalog import Catalog
from sao.pipeline import registry
from sao.pipeline.stage import Plan, Stage, StageContext, Stats
from tests.conftest import flow_config


class TitleLength(Stage):
    """A toy stage: the length of every recording's title, computed in batches off the catalogue."""
    name = "title_length"
    reads = ("recordings",)
    writes = ()
    batched = True
    batch_size = 2

    def plan(self, ctx: StageContext) -> Plan:
        with ctx.catalog(read_only=True) as cat:
            rows = cat.query("SELECT recording_id, title FROM recordings ORDER BY recording_id")
        return Plan([[r["recording_id"], r["title"]] for r in rows], {"unit": "chars"})

    def compute(self, ctx: StageContext, meta: dict, batch: list) -> dict:
        return {rid: len(title or "") for rid, title in batch}

    def store(self, ctx: StageContext, plan: Plan, results: list) -> Stats:
        lengths = {k: v for b in results for k, v in b.items()}
        st = Stats(self.name, items_in=len(plan.items), passed=sum(v > 0 for v in lengths.values()),
                   details={"total": sum(lengths.values()), "unit": plan.meta["unit"]})
        st.reject("untitled", sum(v == 0 for v in lengths.values()))
        return st


def _catalogue(tmp_path):
    cfg = flow_config(tmp_path)
    with Catalog(tmp_path / "c.duckdb") as cat:
        cat.upsert_recordings([dict(source="freesound", source_id=str(i), crawl_time=dt.datetime(2026, 1, 1),
                                    license_raw="Creative Commons 0", title=t)
                               for i, t in enumerate(["rain", "", "dog bark", "wind", "x"])])
    return cfg


def test_registry_is_in_paper_order_and_names_are_unique():
    names = [s.name for s in registry.STAGES]
    assert len(names) == len(set(names))
    order = ["crawl_freesound", "ingest_fma", "ingest_local", "license_gate", "download", "decode", "music_screen",
             "copyright_review", "embed", "dedup", "release", "shards", "attribution_report"]
    assert names == order
    assert [s.name for s in registry.group("rebuild")] == ["release", "shards", "attribution_report"]
    assert all(s.name not in ("release", "shards") for s in registry.group("refresh"))
    with pytest.raises(KeyError, match="no pipeline stage named 'nope'"):
        registry.get("nope")


def test_a_new_stage_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    from sao import config as config_mod
    from sao.pipeline.runner import run_pipeline
    from sao.runs import latest_runs
    cfg_path = _catalogue(tmp_path)
    monkeypatch.setattr(registry, "STAGES", [*registry.STAGES, TitleLength()])        # the one registry line
    assert "title_length" in [s.name for s in registry.group("refresh")]
    out = run_pipeline(config_mod.load(cfg_path), ["title_length"], show_progress=False)
    st = out["title_length"]
    assert (st.items_in, st.passed, dict(st.rejected), st.batches) == (5, 4, {"untitled": 1}, 3)
    assert st.details == {"total": 17, "unit": "chars"} and st.seconds > 0
    with Catalog(tmp_path / "c.duckdb", read_only=True) as cat:
        run = latest_runs(cat, 1)[0]
    assert run["items_in"] == 5 and run["passed"] == 4 and run["rejected"] == {"title_length:untitled": 1}


def test_the_refresh_flow_maps_a_new_stage_generically(prefect_server, tmp_path, monkeypatch):
    from flows.refresh import refresh
    cfg_path = _catalogue(tmp_path)
    monkeypatch.setattr(registry, "STAGES", [*registry.STAGES, TitleLength()])
    others = [s.name for s in registry.group("refresh") if s.name != "title_length"]
    out = refresh(str(cfg_path), skip=others)
    st = out["title_length"]
    assert (st["items_in"], st["passed"], st["rejected"], st["batches"]) == (5, 4, {"untitled": 1}, 3)
    assert st["details"] == {"total": 17, "unit": "chars"}
    assert set(out) == {"title_length", "cache_hits", "run_id"}


def test_a_stage_that_cannot_run_says_why_and_the_run_goes_on(tmp_path):
    from sao import config as config_mod
    from sao.pipeline.runner import run_pipeline
    cfg_path = _catalogue(tmp_path)
    text = cfg_path.read_text().replace("uncalibrated = true", "uncalibrated = false")
    cfg_path.write_text(text)
    out = run_pipeline(config_mod.load(cfg_path), ["license_gate", "music_screen", "embed", "dedup"],
                       show_progress=False)
    assert "no [music_screen].checkpoint configured" in out["music_screen"].skipped
    assert "no [dedup].clap_checkpoint configured" in out["embed"].skipped
    assert out["license_gate"].items_in == 5 and not out["dedup"].skipped


def test_stats_round_trip_through_a_dict():
    st = Stats("x", items_in=3, passed=2, audio_seconds=4.0, seconds=2.0)
    st.reject("bad", 1)
    st.error("freesound:1", "does not decode")
    d = st.to_dict()
    assert d["audio_s_per_s"] == 2.0 and d["items_per_s"] == 1.5 and d["rejected"] == {"bad": 1}
    back = Stats.from_dict(d)
    assert back.rejected == st.rejected and back.errors == st.errors and back.items_in == 3


def test_a_killed_download_keeps_the_batches_it_fetched(tmp_path, freesound_sounds, monkeypatch):
    """Downloads are recorded batch by batch (Stage.stores_batches): a run that dies in its second
    batch leaves the first batch's files in the catalogue, and the next run fetches only the rest."""
    from sao import config as config_mod
    from sao.sources.freesound_source import Download
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    from tests.conftest import run_stage
    cfg = config_mod.load(flow_config(tmp_path, orchestration={"batch_files": 4}))
    sounds = [s for s in freesound_sounds if "publicdomain/zero" in s["license"]][:7]
    real, calls = Download.compute, []

    def dies_in_the_second_batch(self, ctx, meta, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(self, ctx, meta, batch)
    with ReplicaServer(sounds, ReplicaSettings(api_tokens=["t"], rate_limit_per_minute=0)) as srv:
        secrets = {"freesound_token": "t"}
        run_stage(cfg, "crawl_freesound", base_url=srv.api_url, secrets=secrets)
        run_stage(cfg, "license_gate")
        monkeypatch.setattr(Download, "compute", dies_in_the_second_batch)
        with pytest.raises(KeyboardInterrupt):
            run_stage(cfg, "download", base_url=srv.api_url, secrets=secrets)
        with Catalog(cfg.catalog_path, read_only=True) as cat:
            assert cat.query("SELECT count(*) AS n FROM recordings WHERE audio_path IS NOT NULL")[0]["n"] == 4
        monkeypatch.setattr(Download, "compute", real)
        again = run_stage(cfg, "download", base_url=srv.api_url, secrets=secrets)
    assert again.details["candidates"] == again.details["downloaded"] == 3


def test_models_are_cached_per_weight_file_and_bounded(tmp_path):
    import os

    from sao.pipeline import stage as stage_mod
    from sao.pipeline.stage import file_identity
    ctx = StageContext(__import__("sao.config", fromlist=["Config"]).Config())
    w = tmp_path / "w.pth"
    w.write_bytes(b"one")
    loads = []

    def get(path):
        return ctx.model(("m", file_identity(path)), lambda: loads.append(path.read_bytes()) or len(loads))
    assert get(w) == get(w) == 1                              # loaded once
    w.write_bytes(b"two!")                                    # replaced at the same path: loaded again
    os.utime(w, ns=(1, 10**18))
    assert get(w) == 2 and loads == [b"one", b"two!"]
    for i in range(3):
        p = tmp_path / f"{i}.pth"
        p.write_bytes(b"x")
        get(p)
    assert len(stage_mod._MODELS) == stage_mod.MODELS_KEPT    # never more than two held


def test_batches_starting_together_load_their_model_once(tmp_path):
    """The batches of a Prefect thread pool start together: one loads the model, the others wait for it
    (two threads importing laion_clap at once broke its lazy imports)."""
    import threading
    import time as _time

    from sao.config import Config
    from sao.pipeline.stage import file_identity
    ctx, w, loads = StageContext(Config()), tmp_path / "w.pt", []
    w.write_bytes(b"w")

    def slow():
        loads.append(1)
        _time.sleep(0.3)
        return object()
    got = []
    threads = [threading.Thread(target=lambda: got.append(ctx.model(("slow", file_identity(w)), slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(g) for g in got}) == 1
