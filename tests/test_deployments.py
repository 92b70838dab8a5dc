"""Every deployment of prefect.yaml, run the way a worker runs it.

A loopback Prefect server; `prefect work-pool create` and `prefect deploy --all` from the repository
root (as the README says), with the deploying machine's SAO_HOME set to a path the worker does not
have; then for each deployment a flow run and `prefect worker start --run-once` in a fresh process
whose working directory is not the checkout, so the pull steps must find it (SAO_HOME on the worker)
and Prefect must load the entrypoint file by its path, as on a real worker. The runs use the
deployments' own parameters (config_path: null -> $SAO_CONFIG on the worker): a tiny catalogue fed
by the loopback Freesound replica and the sample FMA dump, random-weight models allowed.

Then: the registered pull steps hold no machine's path, each run published its summary as Prefect
artifacts, and sao's own log lines reached the flow runs' Prefect logs.
"""
from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.conftest import REPO, flow_config

SECRET = "deploy-token-5c1e9a"
DEPLOYING_MACHINE_HOME = "/home/deployer/src/sao"     # `SAO_HOME=$PWD prefect deploy` used to store this
PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text(encoding="utf-8"))
DEPLOYMENTS = [d["name"] for d in PREFECT_YAML["deployments"]]
RUN_TIMEOUT_S = 240
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefect(args: list[str], env: dict[str, str], cwd, timeout: float = 180) -> str:
    r = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"`prefect {' '.join(args)}` exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


class Stack:
    """The server, the deployments and the runs made so far (each deployment runs once per module)."""

    def __init__(self, api: str, env: dict[str, str], tmp):
        self.api, self.env, self.tmp = api, env, tmp
        self.runs: dict[str, dict] = {}

    def client(self):
        from prefect.client.orchestration import SyncPrefectClient
        return SyncPrefectClient(self.api)

    def deployments(self) -> dict[str, object]:
        with self.client() as c:
            return {d.name: d for d in c.read_deployments()}

    def run(self, name: str) -> dict:
        """Run ``name`` on a process worker (after every deployment listed before it in prefect.yaml:
        the weekly rebuild freezes what the daily refresh admitted)."""
        for before in DEPLOYMENTS[:DEPLOYMENTS.index(name)]:
            self.run(before)
        if name not in self.runs:
            self.runs[name] = self._run(name)
        if self.runs[name]["failure"]:         # kept, so the later tests fail at once instead of running it again
            pytest.fail(self.runs[name]["failure"])
        return self.runs[name]

    def _run(self, name: str) -> dict:
        dep = self.deployments()[name]
        with self.client() as c:
            fr = c.create_flow_run_from_deployment(dep.id)
        pool = dep.work_pool_name
        wlog = self.tmp / f"worker-{name}.log"
        t0 = time.monotonic()
        with open(wlog, "wb") as out:
            # the worker's own process: not started in the checkout, SAO_HOME names it (README)
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                       "--type", "process", "--run-once", "--limit", "1", "--name", f"w-{name}"],
                                      cwd=self.tmp / "worker-cwd", env=dict(self.env, SAO_HOME=str(REPO)),
                                      stdout=out, stderr=subprocess.STDOUT)
            state = None
            try:
                while time.monotonic() - t0 < RUN_TIMEOUT_S:
                    with self.client() as c:
                        state = c.read_flow_run(fr.id).state
                    if state is not None and state.type.value in FINAL:
                        break
                    if worker.poll() is not None and (state is None or state.type.value == "SCHEDULED"):
                        break                              # the worker gave up without taking the run
                    time.sleep(2)
                worker.wait(timeout=60)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        seconds = time.monotonic() - t0
        st = state.type.value if state else None
        failure = None
        if st != "COMPLETED":
            failure = (f"deployment {name!r}: flow run ended {st} ({state.message if state else 'no state'}) "
                       f"after {seconds:.0f} s.\nworker log:\n{wlog.read_text(errors='replace')[-6000:]}\n"
                       f"flow run logs:\n{self._log_text(self.tree(fr.id))[-4000:]}")
        return {"id": fr.id, "seconds": seconds, "state": st, "failure": failure}

    def tree(self, root) -> set:
        """The flow run ``root`` and its subflow runs (a chain's stage flows record their own summaries)."""
        with self.client() as c:
            runs = c.read_flow_runs()
            parent = {}
            for r in runs:
                if r.parent_task_run_id:
                    parent[r.id] = c.read_task_run(r.parent_task_run_id).flow_run_id
        ids = {root}
        changed = True
        while changed:
            changed = False
            for child, p in parent.items():
                if p in ids and child not in ids:
                    ids.add(child)
                    changed = True
        return ids

    def logs(self, ids) -> list:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
        out: list = []
        with self.client() as c:
            while True:                            # the API answers at most 200 at a time
                page = c.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=list(ids))),
                                   limit=200, offset=len(out))
                out += page
                if len(page) < 200:
                    return out

    def _log_text(self, ids) -> str:
        try:
            return "\n".join(f"{x.name}: {x.message}" for x in self.logs(ids))
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            return f"(could not read the logs: {exc})"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, freesound_sounds, fma_dir):
    from flows.serve import start_server, stop_server
    from sao.sources.replica import ReplicaServer, ReplicaSettings
    tmp = tmp_path_factory.mktemp("deployments")
    (tmp / "worker-cwd").mkdir()
    with ReplicaServer(freesound_sounds, ReplicaSettings(api_tokens=[SECRET], rate_limit_per_minute=0)) as replica:
        cfg = flow_config(tmp, fma={"metadata_dir": str(fma_dir)}, freesound={"base_url": replica.api_url},
                          shards={"root": str(tmp / "shards"), "workers": 1},
                          paths={"releases": str(tmp / "releases")})
        server, api = start_server(port=_free_port(), home=tmp / "server-home",
                                   env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        try:
            # nothing of this process's set-up: the worker finds the checkout only through SAO_HOME
            env = {k: v for k, v in os.environ.items()
                   if k not in ("SAO_HOME", "SAO_CONFIG", "PYTHONPATH", "PREFECT_API_KEY", "PREFECT_PROFILE")}
            env.update(PREFECT_API_URL=api, PREFECT_HOME=str(tmp / "client-home"), SAO_CONFIG=str(cfg),
                       FREESOUND_API_TOKEN=SECRET, SAO_NO_PROGRESS="1", HF_HUB_OFFLINE="1",
                       PREFECT_SERVER_ANALYTICS_ENABLED="false")
            pools = sorted({d["work_pool"]["name"] for d in PREFECT_YAML["deployments"]})
            for pool in pools:
                _prefect(["work-pool", "create", pool, "--type", "process"], env, REPO)
            # deployed from the checkout, the way the README says, by a machine whose checkout is elsewhere
            _prefect(["--no-prompt", "deploy", "--all"], dict(env, SAO_HOME=DEPLOYING_MACHINE_HOME), REPO)
            yield Stack(api, env, tmp)
        finally:
            stop_server(server)


def test_every_deployment_of_prefect_yaml_is_registered(stack):
    deps = stack.deployments()
    assert sorted(deps) == sorted(DEPLOYMENTS)
    for spec in PREFECT_YAML["deployments"]:
        d = deps[spec["name"]]
        assert d.entrypoint == spec["entrypoint"] and d.work_pool_name == spec["work_pool"]["name"]
        assert d.parameters == (spec.get("parameters") or {})


def test_pull_steps_resolve_on_the_worker_not_at_deploy_time(stack):
    for name, d in stack.deployments().items():
        text = json.dumps(d.pull_steps)
        assert DEPLOYING_MACHINE_HOME not in text and str(REPO) not in text, f"{name}: {text}"
        assert d.pull_steps == PREFECT_YAML["pull"], f"{name}: pull steps templated at deploy time: {text}"


@pytest.mark.timeout(RUN_TIMEOUT_S * len(DEPLOYMENTS) + 120)
@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_runs_to_completed_on_a_process_worker(stack, name):
    assert stack.run(name)["state"] == "COMPLETED"


def _artifacts(stack, ids) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    with stack.client() as c:
        return c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=list(ids))))


# the flows that record a run summary for each deployment (a chain's stage flows record their own)
SUMMARIES = {"daily-refresh": ["refresh"], "weekly-rebuild": ["rebuild", "shards"]}


@pytest.mark.timeout(RUN_TIMEOUT_S * len(DEPLOYMENTS) + 120)
@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_each_run_publishes_its_summary_as_artifacts(stack, name):
    assert name in SUMMARIES, f"{name}: a new deployment: name the flows whose run summaries it publishes"
    ids = stack.tree(stack.run(name)["id"])
    arts = {a.key: a for a in _artifacts(stack, ids)}
    for key in arts:
        assert key is None or re.fullmatch(r"[a-z0-9-]+", key), key
    for flow in SUMMARIES[name]:
        table, summary = arts.get(f"sao-{flow}-stages"), arts.get(f"sao-{flow}-summary")
        assert table is not None and summary is not None, f"{name}: artifacts {sorted(arts)}"
        assert table.type == "table" and summary.type == "markdown"
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert rows and all({"stage", "items_in", "passed", "rejected", "seconds"} <= set(r) for r in rows)
        assert f"# sao {flow} run: completed" in summary.data
        assert SECRET not in json.dumps(rows) and SECRET not in summary.data
    if name == "daily-refresh":
        stages = {r["stage"]: r for r in json.loads(arts["sao-refresh-stages"].data)}
        assert stages["license_gate"]["items_in"] == 36 and stages["crawl_freesound"]["passed"] == 26


# a line of sao's own loggers that each deployment's runs must log: an INFO line from a task (the crawl
# runs in one) and a WARNING from the release stage (its recordings were admitted by random-weight models)
# and an INFO line of the shard writer, which runs in the shards flow's process-pool workers
SAO_LINES = {"daily-refresh": [("sao.sources.freesound_crawl", logging.INFO, "freesound Creative Commons 0: ")],
             "weekly-rebuild": [("sao.attribution.release", logging.WARNING, "random-weight (uncalibrated)"),
                                ("sao.shards.writer", logging.INFO, "s of audio")]}


@pytest.mark.timeout(RUN_TIMEOUT_S * len(DEPLOYMENTS) + 120)
@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_sao_log_lines_reach_the_flow_run_logs(stack, name):
    assert name in SAO_LINES, f"{name}: a new deployment: name a sao log line its runs write"
    logs = stack.logs(stack.tree(stack.run(name)["id"]))
    sao = [x for x in logs if x.name == "sao" or x.name.startswith("sao.")]
    for logger, level, text in SAO_LINES[name]:
        assert any(x.name == logger and x.level == level and text in x.message for x in sao), \
            f"{name}: no {logging.getLevelName(level)} line of {logger} in the run's logs; sao's lines: " \
            f"{[f'{x.name}: {x.message}' for x in sao][:20]} (loggers: {sorted({x.name for x in logs})})"
    assert all(SECRET not in x.message for x in logs)


FAILING_FLOW = """
import logging, sys
from prefect import flow
from flows import runtime
from sao.pipeline.stage import Stats
cfg, secret = sys.argv[1], sys.argv[2]

@flow(name="sao-test-failing")
def failing():
    with runtime.recorded_run(cfg, "failing_flow", "thread:1") as (stages, _):
        stages["gate"] = Stats("gate", items_in=2, passed=1).to_dict()
        logging.getLogger("sao.test").info("token %s in a sao line", secret)
        raise RuntimeError(f"bad token {secret}")

state = failing(return_state=True)
assert not runtime._has_api_handler(logging.getLogger("sao")), "the handler outlived the run"
print(state.state_details.flow_run_id, state.type.value)
"""


def test_a_failed_run_publishes_its_summary_and_logs_redacted(stack, tmp_path):
    """A run that fails still publishes its summary, and a credential in its error or in a sao log
    line reaches neither the artifacts nor sao's log lines. (Its own process: Prefect's log sender
    is one per process, bound to the API it first saw.)"""
    cfg = flow_config(tmp_path)
    script = tmp_path / "failing.py"
    script.write_text(FAILING_FLOW)
    r = subprocess.run([sys.executable, str(script), str(cfg), SECRET], cwd=REPO, capture_output=True, text=True,
                       env=dict(stack.env, PYTHONPATH=str(REPO)), timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    run, state = r.stdout.split()[-2:]
    assert state == "FAILED"
    arts = {a.key: a for a in _artifacts(stack, {uuid.UUID(run)})}
    md = arts["sao-failing-flow-summary"].data
    assert "# sao failing_flow run: failed" in md and "RuntimeError: bad token ***" in md and SECRET not in md
    assert [r["stage"] for r in json.loads(arts["sao-failing-flow-stages"].data)] == ["gate"]
    logs = stack.logs({uuid.UUID(run)})
    assert any(x.name == "sao.test" and x.message == "token *** in a sao line" for x in logs), \
        [f"{x.name}: {x.message}" for x in logs]
    # (Prefect's own lines about the failure quote the exception as raised: this test's raise is not redacted)
    assert all(SECRET not in x.message for x in logs if x.name.startswith("sao"))


# -- the pull steps on their own, and the entry files ---------------------------------------------
def _pull(stack, monkeypatch, cwd, sao_home: str | None):
    from prefect.deployments.steps.core import run_steps
    from prefect.settings import PREFECT_API_URL, temporary_settings
    monkeypatch.chdir(cwd)
    if sao_home is None:
        monkeypatch.delenv("SAO_HOME", raising=False)
    else:
        monkeypatch.setenv("SAO_HOME", sao_home)
    with temporary_settings({PREFECT_API_URL: stack.api}):
        return asyncio.run(run_steps(PREFECT_YAML["pull"], print_function=lambda *a, **k: None))


def test_pull_steps_find_the_checkout_from_sao_home_or_the_working_dir(stack, monkeypatch, tmp_path):
    from prefect.deployments.steps.core import StepExecutionError
    assert _pull(stack, monkeypatch, tmp_path, str(REPO))["directory"] == str(REPO)
    assert os.getcwd() == str(REPO)
    # no SAO_HOME: the process work pool's working_dir (the run's starting directory) is the checkout
    assert _pull(stack, monkeypatch, REPO, None)["directory"] == str(REPO)
    for home in (None, str(tmp_path / "not-a-checkout")):
        with pytest.raises(StepExecutionError) as e:
            _pull(stack, monkeypatch, tmp_path, home)
        assert "SAO_HOME" in str(e.value.__cause__) and "no sao checkout" in str(e.value.__cause__)


def test_flow_files_import_absolutely():
    """Prefect loads an entrypoint file by its path, not as ``flows.x``: a relative import there
    (``from . import x``) is what failed on a worker with "attempted relative import with no known
    parent package". Whether it works depends on the loader and the Prefect version (3.9's by-path
    loader happens to accept it); ``from flows import x`` works under each, with the checkout as the
    working directory (the pull steps make it so, and Prefect puts it on sys.path)."""
    bad = []
    for f in sorted((REPO / "flows").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                bad.append(f"{f.name}:{node.lineno}")
    assert not bad, bad


def test_entrypoints_load_by_path_in_a_fresh_process():
    """What a worker does after the pull steps: load each entrypoint by its file path, in a new process."""
    code = ("import sys; from prefect.flows import load_flow_from_entrypoint as load; "
            "[print(load(e, use_placeholder_flow=False).name) for e in sys.argv[1:]]")
    eps = [d["entrypoint"] for d in PREFECT_YAML["deployments"]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code, *eps], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.split()) == len(eps)


def test_recorded_run_publishes_nothing_outside_a_flow_run(tmp_path):
    """The artifacts and the log handler need a flow run; a recorded run outside one still records."""
    from flows import runtime
    cfg = flow_config(tmp_path)
    before = list(logging.getLogger("sao").handlers)
    with runtime.recorded_run(str(cfg), "refresh", "thread:1") as (stages, tally):
        stages["x"] = {"stage": "x", "items_in": 1, "passed": 1}
        assert logging.getLogger("sao").handlers == before
    assert stages["run_id"]                        # the catalogue's summary was written
    assert runtime.artifact_key("full_rebuild", "stages") == "sao-full-rebuild-stages"
