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
