"""Orchestration: incremental and cached refresh runs, transient retries, failed runs resumed from
the cache, Dask equals the thread pool, the shared Freesound rate limit, run summaries and
`sao status`, and a served deployment's cron schedule firing on a local Prefect server."""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from sao.catalog import Catalog
from tests.conftest import REPO, flow_config

SECRET = "orch-token-5c2e"
ALLOWED = ("publicdomain/zero", "/licenses/by/", "sampling+")


@pytest.fixture(scope="module")
def uploads(freesound_sounds):
    """(sounds served at first, sounds uploaded later): the four newest allowed-license uploads come later."""
    ordered = sorted(freesound_sounds, key=lambda s: s["created"])
    later = [s for s in ordered if any(k in s["license"] for k in ALLOWED)][-4:]
    return [s for s in ordered if s not in later], later


def _replica(sounds):
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    return ReplicaServer(sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0))


def _snapshot(db: pathlib.Path) -> dict:
    """The catalogue's content, free of run-dependent ids and times."""
    with Catalog(db, read_only=True) as cat:
        rec = cat.query("SELECT recording_id, license_canonical, content_sha256, audio_path FROM recordings "
                        "ORDER BY recording_id")
        dec = cat.query("SELECT recording_id, stage, verdict, reason, checkpoint_sha256, threshold, uncalibrated "
                        "FROM decisions ORDER BY recording_id, stage, verdict, reason")
        rq = cat.query("SELECT recording_id, kind, status FROM review_queue ORDER BY recording_id, kind")
        groups = cat.query("SELECT group_id, recording_id, kept, link, round(similarity, 4) AS sim "
                           "FROM duplicate_groups ORDER BY ALL")
    return {"recordings": rec, "decisions": dec, "review_queue": rq, "groups": groups}


def test_refresh_second_run_fetches_and_computes_only_what_is_new(prefect_server, uploads, fma_dir, tmp_path,
                                                                  monkeypatch, capsys):
    from flows.refresh import run
    from sao.cli import main as sao_main
    first, later = uploads
    cfg = flow_config(tmp_path, fma={"metadata_dir": str(fma_dir)}, orchestration={"batch_files": 8})
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    with _replica(first) as srv:
        one = run(str(cfg), base_url=srv.api_url)
        for s in later:
            srv.add_sound(s)
        two = run(str(cfg), base_url=srv.api_url)
    n_first = sum(any(k in s["license"] for k in ALLOWED) for s in first)
    d1 = {k: v["details"] for k, v in one.items() if isinstance(v, dict) and "details" in v}
    d2 = {k: v["details"] for k, v in two.items() if isinstance(v, dict) and "details" in v}
    assert d1["crawl_freesound"]["new"] == n_first and d1["ingest_fma"]["tracks"] == 10
    assert d1["download"]["downloaded"] == n_first and one["download"]["batches"] == -(-n_first // 8)
    assert d1["music_screen"]["screened"] == n_first and d1["embed"]["embedded"] == d1["dedup"]["recordings"]
    # the second run: the crawl's cursors, the catalogue and the cache keep every old item out
    assert d2["crawl_freesound"]["new"] == 4 and d2["license_gate"]["new_pass"] == 4
    assert d2["license_gate"]["written"] == 4
    assert d2["download"]["candidates"] == d2["download"]["downloaded"] == 4
    assert d2["music_screen"]["screened"] == 4 and d2["embed"]["embedded"] == 4
    assert d2["embed"]["already_stored"] == d1["embed"]["embedded"]
    assert "unchanged since its last complete ingest" in two["ingest_fma"]["skipped"]   # the dump was not read again
    assert one["cache_hits"] == two["cache_hits"] == 0                # nothing computed twice
    with Catalog(tmp_path / "c.duckdb") as cat:
        runs = cat.query("SELECT * FROM runs ORDER BY started_at")
        n = cat.query("SELECT count(*) AS n FROM recordings WHERE source = 'freesound'")[0]["n"]
    assert n == n_first + 4
    assert [r["status"] for r in runs] == ["completed", "completed"] and [r["cache_hits"] for r in runs] == [0, 0]
    assert runs[1]["items_in"] == two["crawl_freesound"]["items_in"] and runs[1]["passed"] == two["dedup"]["passed"]
    assert json.loads(runs[0]["rejected"])["license_gate:fma:license-not-allowed"] == 4
    assert runs[0]["task_runner"] == "thread:2" and runs[0]["duration_s"] > 0
    assert "items_per_s" in json.loads(runs[1]["throughput"]) and runs[1]["flow_run_id"]
    # `sao status` shows both runs and the catalogue's state
    assert sao_main(["--config", str(cfg), "status"]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" refresh ") == 2 and "latest release  none" in printed
    assert f"freesound {n}" in printed
    assert SECRET not in printed and SECRET.encode() not in (tmp_path / "c.duckdb").read_bytes()


def test_transient_failure_is_retried_and_a_failed_run_resumes_from_the_cache(prefect_server, uploads, tmp_path,
                                                                              monkeypatch):
    import flows.refresh as fr
    import flows.stages as fs
    from sao.analysis import music_screen
    from sao.pipeline.stages.copyright_review import CopyrightReview
    first, _ = uploads
    cfg = flow_config(tmp_path, orchestration={"batch_files": 6})
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    calls = {"review": 0, "store": 0}
    real_review, real_store = CopyrightReview.store, music_screen.screen_decisions

    def flaky_review(self, ctx, plan, results):  # a transient failure: the detection service's connection drops
        calls["review"] += 1
        if calls["review"] == 1:
            raise ConnectionError("detection service reset the connection")
        return real_review(self, ctx, plan, results)

    def broken_store(*a, **kw):                 # a data error: not retried, the run fails
        calls["store"] += 1
        if calls["store"] == 1:
            raise ValueError("store refused the batch")
        return real_store(*a, **kw)

    monkeypatch.setattr(CopyrightReview, "store", flaky_review)
    monkeypatch.setattr(music_screen, "screen_decisions", broken_store)
    monkeypatch.setattr(fs, "store_task", fs.store_task.with_options(retry_delay_seconds=0))
    with _replica(first) as srv:
        with pytest.raises(ValueError, match="store refused"):
            fr.run(str(cfg), base_url=srv.api_url, dedup=False)
        with Catalog(tmp_path / "c.duckdb") as cat:
            failed = cat.query("SELECT status, error, cache_hits FROM runs")
            assert cat.query("SELECT count(*) AS n FROM decisions WHERE stage = 'music_screen'")[0]["n"] == 0
        assert failed == [{"status": "failed", "error": "ValueError: store refused the batch", "cache_hits": 0}]
        out = fr.run(str(cfg), base_url=srv.api_url, dedup=False)
    assert out["download"]["details"]["candidates"] == 0                # audio kept from the failed run
    screened = out["music_screen"]["details"]["screened"]
    batches = out["music_screen"]["batches"]
    assert screened == sum(any(k in s["license"] for k in ALLOWED) for s in first) and batches == -(-screened // 6)
    assert out["cache_hits"] == batches                                  # every screen batch came from the cache
    assert calls == {"review": 2, "store": 2}                            # the review was retried once
    assert out["copyright_review"]["details"]["content"] is not None


def test_refresh_on_dask_threads_and_inline_gives_one_catalogue(prefect_server, freesound_sounds, fma_dir,
                                                                    tmp_path, monkeypatch):
    from flows.refresh import run
    monkeypatch.delenv("PREFECT_API_URL", raising=False)      # the Dask runner exports the harness's URL
    monkeypatch.setenv("FREESOUND_API_TOKEN", SECRET)
    cfgs = {}
    for kind in ("thread", "dask"):
        (tmp_path / kind).mkdir()
        cfgs[kind] = flow_config(tmp_path / kind, fma={"metadata_dir": str(fma_dir)},
                                 orchestration={"task_runner": kind, "workers": 2, "batch_files": 8})
    (tmp_path / "inline").mkdir()
    inline = flow_config(tmp_path / "inline", fma={"metadata_dir": str(fma_dir)}, orchestration={"batch_files": 8})
    outs = {}
    from sao.cli import main as sao_main
    with _replica(freesound_sounds) as srv:
        for kind, cfg in cfgs.items():
            outs[kind] = run(str(cfg), base_url=srv.api_url)
        # `sao refresh` runs the same stage list through the inline runner: the same catalogue
        assert sao_main(["--config", str(inline), "refresh", "--base-url", srv.api_url]) == 0
    assert _snapshot(tmp_path / "thread" / "c.duckdb") == _snapshot(tmp_path / "dask" / "c.duckdb")
    assert _snapshot(tmp_path / "inline" / "c.duckdb") == _snapshot(tmp_path / "thread" / "c.duckdb")
    from sao.dedup.store import load_embeddings
    emb = {k: load_embeddings(tmp_path / k / "emb", outs[k]["embed"]["details"]["signature"]) for k in cfgs}
    assert emb["thread"].keys() == emb["dask"].keys()
    assert len(emb["thread"]) == outs["thread"]["embed"]["details"]["embedded"]
    for sha, v in emb["thread"].items():
        assert abs(float(v @ emb["dask"][sha]) - 1.0) < 1e-5
    with Catalog(tmp_path / "dask" / "c.duckdb") as cat:
        assert cat.query("SELECT task_runner FROM runs")[0]["task_runner"] == "dask:2"
    assert outs["dask"]["download"]["batches"] >= 2 and outs["dask"]["music_screen"]["batches"] >= 2


def test_freesound_rate_limit_is_one_server_side_limit(prefect_server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from prefect.client.orchestration import get_client

    from flows import runtime
    from sao import config as config_mod
    from sao.sources.freesound import RateLimiter
    for per_minute in (1, 2, 7, 60, 600, 2000):
        burst, decay = runtime.rate_limit_shape(per_minute)
        # a token bucket lets at most floor(slots + 60 s * refill) calls into any minute: never over the quota
        assert burst >= 1 and int(burst + 60 * decay) <= per_minute
    cfg = config_mod.load(flow_config(tmp_path, freesound={"rate_limit_per_minute": 120},
                                      orchestration={"freesound_rate_limit": "test-freesound-api"}))
    name = runtime.ensure_freesound_limit(cfg)
    limiters = [runtime.SharedRateLimiter(RateLimiter(1000), name) for _ in range(2)]   # two "workers"
    with ThreadPoolExecutor(2) as ex:
        list(ex.map(lambda i: limiters[i % 2].acquire(), range(24)))
    with get_client(sync_client=True) as client:
        lim = client.read_global_concurrency_limit_by_name(name)
    assert (lim.limit, round(lim.slot_decay_per_second, 3)) == (30, round(90 / 60 / 1.05, 3))
    assert lim.active_slots >= 24 - 3 * lim.slot_decay_per_second * 4     # both workers drew on the same slots


def test_run_summary_is_pure_and_redacts_secrets(catalog):
    import datetime as dt

    from sao.runs import latest_runs, record_run, summarize
    from sao.pipeline.stage import Stats

    def st(name, **kw):
        rejected = kw.pop("rejected", {})
        out = Stats(name, **kw)
        for k, n in rejected.items():
            out.reject(k, n)
        return out.to_dict()
    stages = {"crawl_freesound": st("crawl_freesound", ingest=True, items_in=7, passed=7),
              "ingest_fma": st("ingest_fma", ingest=True, skipped="no dump"),
              "ingest_local": st("ingest_local", ingest=True, items_in=2, passed=2),
              "license_gate": st("license_gate", items_in=9, passed=7, rejected={"fma:license-not-allowed": 2}),
              "download": st("download", items_in=5, passed=4, audio_seconds=100.0, seconds=2.0,
                             rejected={"failed (retried next run)": 1}),
              "music_screen": st("music_screen", items_in=4, passed=3, rejected={"music (to copyright review)": 1}),
              "dedup": st("dedup", items_in=6, passed=4, rejected={"repeated recording (freesound)": 2}),
              "cache_hits": 0, "run_id": None}
    s = summarize("refresh", stages, 2.0)
    # items in: what the sources' ingests read (a skipped one adds nothing); passed: what the last stage kept
    assert s["items_in"] == 9 and s["passed"] == 4 and s["throughput"]["items_per_s"] == 4.5
    assert s["rejected"] == {"dedup:repeated recording (freesound)": 2, "download:failed (retried next run)": 1,
                             "license_gate:fma:license-not-allowed": 2,
                             "music_screen:music (to copyright review)": 1}
    assert s["throughput"]["download.audio_s_per_s"] == 50.0
    assert summarize("x", {"a": {"not": "a Stats"}}, 1.0)["items_in"] is None       # nothing to count
    record_run(catalog, flow="refresh", started=dt.datetime(2026, 1, 1), status="failed",
               stages={"freesound": {"url": "https://x/?token=tok-SECRET-1"}}, seconds=1.0, config_hash="h",
               error="HTTPError: 401 for https://x/?token=tok-SECRET-1", secrets=["tok-SECRET-1", None])
    r = latest_runs(catalog)[0]
    assert "tok-SECRET-1" not in json.dumps(r, default=str) and r["error"] == "HTTPError: 401 for https://x/?token=***"
    with pytest.raises(ValueError, match="run status"):
        record_run(catalog, flow="x", started=dt.datetime(2026, 1, 1), status="done", stages={}, seconds=0,
                   config_hash="h")


def test_orchestration_config_and_task_runners(tmp_path, monkeypatch):
    from flows import runtime
    from sao import config as config_mod
    from sao.config import ConfigError
    base = config_mod.from_dict({})
    other = config_mod.from_dict({"orchestration": {"task_runner": "dask", "workers": 4}})
    assert base.config_hash() == other.config_hash()          # how flows run never changes an output
    with pytest.raises(ConfigError, match="task_runner"):
        config_mod.from_dict({"orchestration": {"task_runner": "celery"}})
    with pytest.raises(ConfigError, match="at least 1"):
        config_mod.from_dict({"orchestration": {"batch_files": 0}})
    assert type(runtime.task_runner(base)).__name__ == "ThreadPoolTaskRunner"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(runtime, "api_url", lambda: None)
    with pytest.raises(ConfigError, match="needs a Prefect server"):
        runtime.task_runner(other)
    monkeypatch.setattr(runtime, "api_url", lambda: "http://127.0.0.1:9/api")
    r = runtime.task_runner(other)
    assert type(r).__name__ == "DaskTaskRunner" and r.cluster_kwargs["n_workers"] == 4
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"


def test_prefect_yaml_deployments_and_entrypoints():
    from flows.serve import ServeError, import_flow, load_deployments, runner_deployments
    specs = load_deployments(REPO / "prefect.yaml")
    assert {d["name"]: [s["cron"] for s in d["schedules"]] for d in specs} == {
        "daily-refresh": ["0 3 * * *"], "weekly-rebuild": ["0 5 * * 0"]}
    deps = runner_deployments(specs, config_path="x.toml", params={"base_url": "http://127.0.0.1:1/apiv2"})
    assert [d.name for d in deps] == ["daily-refresh", "weekly-rebuild"]
    assert deps[0].parameters == {"config_path": "x.toml", "base_url": "http://127.0.0.1:1/apiv2"}
    assert deps[0].concurrency_limit == 1 and deps[0].schedules[0].schedule.cron == "0 3 * * *"
    for bad in ("../evil.py:f", "/etc/x.py:f", "sao/cli.py:main"):
        with pytest.raises(ServeError, match="under flows/"):
            import_flow(bad)
    with pytest.raises(ServeError, match="no deployment named nightly"):
        load_deployments(REPO / "prefect.yaml", ["nightly"])


@pytest.mark.timeout(420)
def test_served_deployment_cron_fires_on_a_local_server(uploads, tmp_path):
    """`make serve`'s path: a real loopback Prefect server, the daily-refresh deployment served with
    a cron of every minute; its scheduled run must start and complete on its own."""
    import socket

    from flows.serve import start_server, stop_server
    first, _ = uploads
    cfg = flow_config(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server, api = start_server(port=port, home=tmp_path / "prefect-home", env=env)
    served = None
    log = open(tmp_path / "serve.log", "wb")      # a file, not a pipe: nobody reads while it runs
    try:
        with _replica(first) as srv:
            penv = dict(os.environ, **env, PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "runner-home"),
                        FREESOUND_API_TOKEN=SECRET, SAO_NO_PROGRESS="1")
            served = subprocess.Popen(
                [sys.executable, "-m", "flows.serve", "--no-server", "--only", "daily-refresh", "--cron", "* * * * *",
                 "--config", str(cfg), "--param", f"base_url={srv.api_url}", "--param", "screen=false",
                 "--param", "dedup=false"], cwd=REPO, env=penv, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 300
            state = None
            while time.monotonic() < deadline and state != "COMPLETED":
                time.sleep(3)
                assert served.poll() is None, (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
                state = _latest_run_state(api, "daily-refresh")
                assert state not in ("FAILED", "CRASHED"), f"scheduled run ended {state}"
            assert state == "COMPLETED", f"no scheduled run completed in time (last state {state})"
    finally:
        if served is not None and served.poll() is None:
            served.terminate()
            try:
                served.wait(timeout=30)
            except subprocess.TimeoutExpired:
                served.kill()
        stop_server(server)
        log.close()
    with Catalog(tmp_path / "c.duckdb") as cat:
        runs = cat.query("SELECT flow, status FROM runs")
        assert {"flow": "refresh", "status": "completed"} in runs
        assert cat.counts()["recordings"] > 0


def _latest_run_state(api: str, deployment: str) -> str | None:
    import urllib.request
    req = urllib.request.Request(f"{api}/flow_runs/filter", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"deployments": {"name": {"any_": [deployment]}},
                                                  "flow_runs": {"state": {"type": {"not_any_": ["SCHEDULED"]}}},
                                                  "limit": 50}).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        states = [x["state_type"] for x in json.loads(r.read())]
    for s in ("COMPLETED", "FAILED", "CRASHED"):
        if s in states:
            return s
    return states[0] if states else None
