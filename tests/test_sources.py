"""The source protocol (sao/sources/base.py): the registry, each source's declarations, attribution
line and prompt inputs, and the stages it contributes to the pipeline."""
import pytest

from sao.catalog import store
from sao.licensing import freesound_attribution_line
from sao.pipeline.stage import Plan, RunOptions, StageContext
from sao.prompts import PromptInputs, build_prompt
from sao.shards.plan import prompt_inputs
from sao.sources import SOURCES, Source, UnknownSource, names_where, source_for
from sao.sources.base import check_source

BY4 = "https://creativecommons.org/licenses/by/4.0/"
CC0 = "http://creativecommons.org/publicdomain/zero/1.0/"


def test_registry_order_names_and_lookup():
    assert list(SOURCES) == ["freesound", "fma", "local"]
    assert all(source_for(n) is s and s.name == n for n, s in SOURCES.items())
    # the catalogue keeps its own list (it cannot import the sources): they must agree
    assert store.SOURCE_NAMES == tuple(SOURCES)
    for bad in ("Freesound", "", None, "fma "):
        with pytest.raises(UnknownSource, match=r"unknown source .* \(sources: freesound, fma, local\)"):
            source_for(bad)
    assert issubclass(UnknownSource, KeyError)


def test_declarations():
    fs, fma, local = SOURCES["freesound"], SOURCES["fma"], SOURCES["local"]
    assert (fs.gate_reads, fma.gate_reads, local.gate_reads) == ("license_raw", "license_url", "license_url")
    assert names_where(music_screen=True) == ["freesound", "local"]
    assert names_where(copyright_review="content") == ["freesound", "local"]
    assert names_where(copyright_review="catalogue") == ["fma"]
    # the shard plan's chunk policy (paper 3.1): FMA gives only high-fidelity extra chunks, unchecked
    assert (fs.autoencoder_chunks, fs.always_hifi) == (True, False)
    assert (fma.autoencoder_chunks, fma.always_hifi) == (False, True)
    assert (local.autoencoder_chunks, local.always_hifi) == (True, False)
    assert [s.own_attribution_file for s in SOURCES.values()] == ["freesound-attribution.txt", None, None]


def test_a_source_with_an_unknown_declaration_is_refused():
    class Bad(Source):
        name = "bad"
        gate_reads = "license_title"
        prompt_style = "poem"
    with pytest.raises(TypeError, match="gate_reads 'license_title'.*prompt_style 'poem'"):
        check_source(Bad())


def test_ingest_and_audio_stages():
    assert [s.ingest_stage().name for s in SOURCES.values()] == ["crawl_freesound", "ingest_fma", "ingest_local"]
    assert [s.audio_stage() and s.audio_stage().name for s in SOURCES.values()] == ["download", None, None]
    assert all(s.ingest_stage().batched is False for s in SOURCES.values())
    assert SOURCES["freesound"].audio_stage().batched is True


def test_stages_say_why_they_skip(tmp_path):
    from sao import config as config_mod
    cfg = config_mod.from_dict({"freesound": {"download": False}}, root=tmp_path)
    ctx = StageContext(cfg, RunOptions())
    assert "metadata_dir" in SOURCES["fma"].ingest_stage().skip(ctx)
    assert "[local].folder" in SOURCES["local"].ingest_stage().skip(ctx)
    assert SOURCES["freesound"].audio_stage().skip(ctx) == "[freesound].download = false"
    ctx = StageContext(cfg, RunOptions(fma_dir=str(tmp_path), local_dir=str(tmp_path)))
    assert SOURCES["fma"].ingest_stage().skip(ctx) is None and SOURCES["local"].ingest_stage().skip(ctx) is None
    cfg = config_mod.from_dict({"local": {"folder": "mine"}}, root=tmp_path)
    assert cfg.local.folder == "mine" and SOURCES["local"].ingest_stage().skip(StageContext(cfg)) is None
    with pytest.raises(config_mod.ConfigError, match=r"\[local\].folder: expected str"):
        config_mod.from_dict({"local": {"folder": 3}})


def test_freesound_attribution_line():
    rec = {"source": "freesound", "source_id": "197023", "title": "Flowing water", "author": "Yuval",
           "license_canonical": "cc0-1.0", "page_url": "https://freesound.org/people/Yuval/sounds/197023/"}
    want = "Flowing water by Yuval -- https://freesound.org/s/197023/ -- License: Creative Commons 0"
    assert SOURCES["freesound"].attribution_line(rec) == want
    assert want == freesound_attribution_line(name="Flowing water", username="Yuval", sound_id=197023,
                                              license_canonical="cc0-1.0")
    # the line the crawl recorded wins (it names the site the API answered from)
    line = "Flowing water by Yuval -- https://freesound-replica.invalid/s/197023/ -- License: Creative Commons 0"
    assert SOURCES["freesound"].attribution_line({**rec, "extra": {"attribution": {"freesound_line": line}}}) == line


def test_tasl_attribution_lines_of_fma_and_local():
    rec = {"title": "Entropy", "author": "Mauricio Duarte", "page_url": "https://freemusicarchive.org/t/1",
           "license_canonical": "cc-by-4.0", "license_url": BY4}
    want = f"Entropy by Mauricio Duarte -- https://freemusicarchive.org/t/1 -- License: Attribution 4.0 ({BY4})"
    assert SOURCES["fma"].attribution_line({**rec, "source": "fma"}) == want
    assert SOURCES["local"].attribution_line({**rec, "source": "local"}) == want
    assert SOURCES["local"].attribution_line({"source": "local", "license_canonical": "cc0-1.0",
                                              "license_url": CC0}) == \
        f"(untitled) by (unknown author) --  -- License: Creative Commons 0 ({CC0})"


def test_prompt_inputs():
    fs = {"source": "freesound", "title": "Flowing water", "description": "A stream.", "tags": ["water", "stream"],
          "author": "Yuval", "extra": {}}
    assert SOURCES["freesound"].prompt_inputs(fs) == PromptInputs("freesound", title="Flowing water",
                                                                 description="A stream.", tags=("water", "stream"))
    fma = {"source": "fma", "title": "Entropy", "author": "Mauricio Duarte", "description": "ignored",
           "tags": ["ringtone"], "extra": {"album": "Lomiri Sounds", "genres": ["Electronic"], "year": 2021}}
    assert SOURCES["fma"].prompt_inputs(fma) == PromptInputs("fma", title="Entropy", artist="Mauricio Duarte",
                                                             album="Lomiri Sounds", genres=("Electronic",),
                                                             year="2021")
    local = {"source": "local", "title": "Rain", "description": None, "tags": None}
    assert SOURCES["local"].prompt_inputs(local) == PromptInputs("freesound", title="Rain")
    # the shard plan asks the source
    assert prompt_inputs(fma) == SOURCES["fma"].prompt_inputs(fma)
    assert build_prompt(prompt_inputs(local), seed=0, key="k").lower() == "rain"
    with pytest.raises(ValueError, match="prompt style 'poem'"):
        build_prompt(PromptInputs("poem", title="x"), seed=0, key="k")


def test_the_plan_gives_each_source_its_chunk_policy():
    from sao.shards.plan import AE_CHUNK, PlanConfig, plan_samples
    base = {"title": "t", "author": "a", "tags": [], "license_canonical": "cc0-1.0", "path": "/x.flac",
            "duration": 12.0, "channels": 1, "sample_rate": 44100, "extra": {}}
    recs = [dict(base, recording_id=f"{s}:1", source=s) for s in SOURCES]
    ae = [s for s in plan_samples(recs, PlanConfig()) if s.set == "autoencoder"]
    per = {rid: [s for s in ae if s.recording_id == rid] for rid in ("freesound:1", "fma:1", "local:1")}
    assert len(per["freesound:1"]) == len(per["local:1"]) == 12 * 44100 // AE_CHUNK       # mono 44.1 kHz: no extras
    assert len(per["fma:1"]) == 3 and all(s.hifi_extra and not s.needs_hf_check for s in per["fma:1"])


def test_freesound_stages_against_the_replica(replica, tmp_path):
    from sao import config as config_mod
    from sao.catalog import Catalog
    from sao.licensing import LicensePolicy
    from sao.licensing.stage import run_license_gate
    cfg = config_mod.from_dict({"paths": {"catalog": "c.duckdb", "audio_store": "audio"},
                                "freesound": {"rate_limit_per_minute": 100_000}}, root=tmp_path)
    ctx = StageContext(cfg, RunOptions(base_url=replica.api_url, limit=2), {"freesound_token": "sao-demo-token"})
    crawl, download = SOURCES["freesound"].ingest_stage(), SOURCES["freesound"].audio_stage()
    st = crawl.store(ctx, crawl.plan(ctx), [])
    assert st.ingest and st.passed == st.items_in == st.details["items"] == st.details["new"] > 0
    assert st.details["requests"] >= 3 and set(st.details["per_license"]) == {"Creative Commons 0", "Attribution",
                                                                              "Sampling+"}
    with Catalog(cfg.catalog_path) as cat:
        run_license_gate(cat, LicensePolicy(), config_hash="t")
    plan = download.plan(ctx)
    assert len(plan.items) == 2 and plan.meta == {"originals": False}
    results = [download.compute(ctx, plan.meta, [it]) for it in plan.items]
    for r in results:                       # as the runner does (Download.stores_batches): each as it lands
        download.store_batch(ctx, plan, r)
    out = download.store(ctx, plan, results)
    assert (out.items_in, out.passed, out.details["downloaded"], out.errors) == (2, 2, 2, {})
    assert out.details["megabytes"] > 0 and out.audio_seconds > 0
    with Catalog(cfg.catalog_path, read_only=True) as cat:
        assert cat.query("SELECT count(*) AS n FROM recordings WHERE content_sha256 IS NOT NULL")[0]["n"] == 2
    again = crawl.store(StageContext(cfg, RunOptions(base_url=replica.api_url, reconcile=True),
                                     {"freesound_token": "sao-demo-token"}), Plan(), [])
    assert again.details["new"] == 0 and again.details["reconcile"] == {"deleted": 0, "relicensed": 0}
