"""What every flow shares: the task runner chosen by [orchestration], the cross-run result cache,
the Freesound rate limit held across all workers, and the run summary written to the catalogue
(and published as the flow run's Prefect artifacts), with sao's own log lines in the run's Prefect logs.

Task runners: `thread` (Prefect's thread pool, the default), `dask` (prefect-dask: a
`distributed.LocalCluster` of `workers` processes, or the scheduler at `dask_address`) and `ray`
(prefect-ray, optional: `pip install prefect-ray`). Process-based runners need a Prefect API
that all workers reach (`make serve`, Prefect Cloud, or PREFECT_API_URL): on Prefect's ephemeral
server each worker process would start a private server and the shared rate limit would not be shared.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import re
import threading
import time
from typing import Any, Iterator

from prefect import Task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from sao import config as config_mod
from sao.config import Config, ConfigError

log = logging.getLogger(__name__)

# A batch's inputs name its content (sha256s) and the model/rule signature (its meta), and the stage's
# code version; the config path, the run's options and the rate-limit flag only say where and how to
# run it, so they are left out of the key.
BATCH_CACHE = (INPUTS - "config_path" - "options" - "shared_limit") + TASK_SOURCE


def api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL
    return PREFECT_API_URL.value() or None


_RUNNER_KINDS = {"ThreadPoolTaskRunner": "thread", "DaskTaskRunner": "dask", "RayTaskRunner": "ray",
                 "ProcessPoolTaskRunner": "process"}


def current_runner() -> str:
    """'kind:workers' (or 'kind:address') of the running flow's task runner, for the run summary."""
    from prefect.context import FlowRunContext
    ctx = FlowRunContext.get()
    r = getattr(ctx, "task_runner", None)
    if r is None:
        return "none"
    kind = _RUNNER_KINDS.get(type(r).__name__, type(r).__name__)
    where = (getattr(r, "_max_workers", None) or getattr(r, "address", None) or getattr(r, "_address", None)
             or (getattr(r, "cluster_kwargs", None) or getattr(r, "_cluster_kwargs", None) or {}).get("n_workers"))
    return f"{kind}:{where}" if where else kind


def task_runner(cfg: Config, kind: str | None = None, workers: int | None = None):
    """The Prefect task runner [orchestration] asks for (``kind``/``workers`` override it)."""
    oc = cfg.orchestration
    kind = kind or oc.task_runner
    n = workers or oc.workers
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner
        return ThreadPoolTaskRunner(max_workers=n)
    url = api_url()
    if not url:
        raise ConfigError(f"[orchestration].task_runner = {kind!r} needs a Prefect server every worker can reach: "
                          "run `make serve` (or point PREFECT_API_URL at a server or Prefect Cloud)")
    os.environ["PREFECT_API_URL"] = url          # worker processes inherit it
    if kind == "dask":
        from prefect_dask import DaskTaskRunner
        if oc.dask_address:
            return DaskTaskRunner(address=oc.dask_address)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None, "silence_logs": logging.WARNING})
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise ConfigError("[orchestration].task_runner = 'ray' needs prefect-ray: pip install prefect-ray") from exc
        return RayTaskRunner(address=oc.ray_address or None,
                             init_kwargs={"num_cpus": n, "include_dashboard": False})
    raise ConfigError(f"[orchestration].task_runner: {kind!r} is not thread, dask or ray")


def cached(t: Task, cfg: Config, refresh: bool = False) -> Task:
    """``t`` with results persisted under [orchestration].results_dir and looked up by BATCH_CACHE,
    so a rerun of an unchanged batch costs nothing (or ``t`` uncached when [orchestration].cache is off)."""
    if not cfg.orchestration.cache:
        return t.with_options(cache_policy=NO_CACHE)
    return t.with_options(cache_policy=BATCH_CACHE, persist_result=True, result_storage=result_storage(cfg),
                          refresh_cache=refresh)


_SAVED: dict[tuple[str, str], str] = {}


def result_storage(cfg: Config) -> str:
    """A LocalFileSystem block for the results folder, saved on the Prefect server (workers load it by name)."""
    from prefect.filesystems import LocalFileSystem
    base = str(cfg.path(cfg.orchestration.results_dir).resolve())
    key = (api_url() or "ephemeral", base)
    if key not in _SAVED:
        pathlib.Path(base).mkdir(parents=True, exist_ok=True)
        name = "sao-results-" + hashlib.sha256(base.encode()).hexdigest()[:12]
        LocalFileSystem(basepath=base).save(name, overwrite=True)
        _SAVED[key] = f"local-file-system/{name}"
    return _SAVED[key]


# -- the Freesound rate limit, shared by every worker -------------------------------------------
def rate_limit_shape(per_minute: int) -> tuple[int, float]:
    """(slots, decay per second) of a Prefect rate limit that never lets more than ``per_minute``
    calls into any 60 s window: a burst of a quarter, then a steady rate 5 % under the rest."""
    burst = max(1, per_minute // 4)
    return burst, max(per_minute - burst, 1) / 60.0 / 1.05


def ensure_freesound_limit(cfg: Config) -> str:
    from prefect.client.orchestration import get_client
    slots, decay = rate_limit_shape(cfg.freesound.rate_limit_per_minute)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(cfg.orchestration.freesound_rate_limit, slots, decay)
    return cfg.orchestration.freesound_rate_limit


class SharedRateLimiter:
    """The client's own limiter, then a slot of the Prefect global rate limit every worker shares."""

    def __init__(self, local, name: str):
        self.local, self.name = local, name

    @property
    def waited(self) -> float:
        return self.local.waited

    def acquire(self) -> None:
        from prefect.concurrency.sync import rate_limit
        self.local.acquire()
        rate_limit(self.name, occupy=1, strict=True)


def share_rate_limit(client, cfg: Config):
    client.limiter = SharedRateLimiter(client.limiter, cfg.orchestration.freesound_rate_limit)
    return client


# -- results and cache hits -----------------------------------------------------------------------
class Tally:
    """Counts the task runs a flow answered from the cache."""

    def __init__(self):
        self.cache_hits = 0
        self.task_runs = 0

    def state(self, state):
        self.task_runs += 1
        if state.name == "Cached":
            self.cache_hits += 1
        return state

    def result(self, state_or_future):
        """The result of a future or a state (from ``task(..., return_state=True)``), counted."""
        if hasattr(state_or_future, "wait"):
            state_or_future.wait()
            state_or_future = state_or_future.state
        return self.state(state_or_future).result()

    def results(self, futures) -> list:
        return [self.result(f) for f in futures]


@contextlib.contextmanager
def recorded_run(config_path: str | None, flow: str, runner: str, *, catalog: str | None = None
                 ) -> Iterator[tuple[dict[str, Any], Tally]]:
    """Yield (stages, tally); on exit write the run summary to the catalogue (the config's, or
    ``catalog``), failed runs included, with the Prefect flow run and its cache hits, and publish it
    as the flow run's artifacts. sao's own log lines go to the flow run's Prefect logs meanwhile."""
    from prefect.runtime import flow_run

    from sao.log import register_secrets
    from sao.runs import recording
    cfg = config_mod.load(config_path)
    tally = Tally()
    secrets = config_mod.secrets(cfg)
    register_secrets(secrets)                # as the CLI does: every log line of the run hides them
    stages: dict[str, Any] = {}
    status, error = "failed", None
    t0 = time.perf_counter()
    with sao_logs_to_prefect():
        try:
            with recording(catalog or cfg.catalog_path, flow=flow, config_hash=cfg.config_hash(), task_runner=runner,
                           secrets=secrets, flow_run_id=str(flow_run.id) if flow_run.id else None) as rec:
                stages = rec.stages
                try:
                    yield rec.stages, tally
                finally:
                    rec.cache_hits = tally.cache_hits
            status = "completed"
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            publish_artifacts(flow, stages, status=status, seconds=time.perf_counter() - t0, runner=runner,
                              cache_hits=tally.cache_hits, error=error, secrets=secrets)


# -- the run summary as Prefect artifacts ---------------------------------------------------------
def artifact_key(flow: str, kind: str) -> str:
    """Prefect artifact keys allow only lowercase letters, digits and dashes (full_rebuild -> full-rebuild)."""
    return re.sub(r"[^a-z0-9]+", "-", f"sao-{flow}-{kind}".lower()).strip("-")


def _stage_rows(stages: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage that returned Stats (sao.pipeline.stage.Stats.to_dict), in run order."""
    rows = []
    for v in stages.values():
        if not (isinstance(v, dict) and "stage" in v and "items_in" in v):
            continue
        rows.append({"stage": v["stage"], "items_in": v.get("items_in", 0), "passed": v.get("passed", 0),
                     "rejected": sum(int(n) for n in (v.get("rejected") or {}).values()),
                     "errors": len(v.get("errors") or {}), "skipped": v.get("skipped") or "",
                     "seconds": v.get("seconds", 0.0), "items_per_s": v.get("items_per_s", 0.0),
                     "audio_s_per_s": v.get("audio_s_per_s", 0.0), "cache_hits": v.get("cache_hits", 0),
                     "batches": v.get("batches", 0)})
    return rows


def summary_markdown(flow: str, stages: dict[str, Any], *, status: str, seconds: float, runner: str,
                     cache_hits: int, error: str | None = None) -> str:
    from sao.runs import summarize
    s = summarize(flow, stages, seconds)
    lines = [f"# sao {flow} run: {status}", "", "| | |", "|---|---|",
             f"| catalogue run id | `{stages.get('run_id') or '-'}` |", f"| duration | {seconds:.1f} s |",
             f"| items in | {s['items_in'] if s['items_in'] is not None else '-'} |",
             f"| passed | {s['passed'] if s['passed'] is not None else '-'} |",
             f"| cache hits | {cache_hits} |", f"| task runner | {runner} |"]
    if s["rejected"]:
        lines += ["", "## Rejected", ""] + [f"- {reason}: {n}" for reason, n in s["rejected"].items()]
    skipped = [r for r in _stage_rows(stages) if r["skipped"]]
    if skipped:
        lines += ["", "## Skipped stages", ""] + [f"- {r['stage']}: {r['skipped']}" for r in skipped]
    if error:
        lines += ["", "## Error", "", "```", error[:2000], "```"]
    lines += ["", "`sao status` prints this summary from the catalogue's `runs` table."]
    return "\n".join(lines) + "\n"


def publish_artifacts(flow: str, stages: dict[str, Any], *, status: str, seconds: float, runner: str,
                      cache_hits: int, error: str | None = None, secrets: list[str] | tuple = ()) -> None:
    """The run summary as two artifacts of the running flow run: a table of the stages' stats
    (``sao-FLOW-stages``) and a markdown summary (``sao-FLOW-summary``). Redacted like the catalogue's
    copy; the catalogue's `runs` row is the record, so an artifact that cannot be published is a
    warning, never the run's failure (nor a mask over its own error)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.runtime import flow_run

    from sao.log import redact
    if not flow_run.id:                      # not inside a flow run: nothing to attach them to
        return
    try:
        rows = [{k: redact(v, secrets) if isinstance(v, str) else v for k, v in r.items()} for r in _stage_rows(stages)]
        if rows:
            create_table_artifact(rows, key=artifact_key(flow, "stages"), description=f"sao {flow}: stats per stage")
        md = summary_markdown(flow, stages, status=status, seconds=seconds, runner=runner, cache_hits=cache_hits,
                              error=error)
        create_markdown_artifact(redact(md, secrets), key=artifact_key(flow, "summary"),
                                 description=f"sao {flow} run summary ({status})")
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("could not publish the %s run summary as Prefect artifacts: %s", flow, redact(exc, secrets))


# -- sao's log lines in the flow run's Prefect logs -----------------------------------------------
_SAO_LOGS_LOCK = threading.Lock()
_SAO_LOGS: dict[str, Any] = {"depth": 0, "handler": None, "level": logging.NOTSET}


class _ToFlowRun(logging.Filter):
    """A record from a thread without Prefect's run context (a stage's own thread pool) is sent to the
    flow run that attached the handler, instead of being dropped with a warning."""

    def __init__(self, flow_run_id):
        super().__init__()
        self.flow_run_id = flow_run_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "flow_run_id", None) and self.flow_run_id:
            from prefect.context import FlowRunContext, TaskRunContext
            if FlowRunContext.get() is None and TaskRunContext.get() is None:
                record.flow_run_id = self.flow_run_id
        return True


def _has_api_handler(logger: logging.Logger) -> bool:
    from prefect.logging.handlers import APILogHandler
    return any(isinstance(h, APILogHandler) for h in logger.handlers)


@contextlib.contextmanager
def sao_logs_to_prefect() -> Iterator[None]:
    """While a flow runs, the "sao" logger (and its children) also logs to the flow run's Prefect logs.

    Prefect only ships its own loggers' records to the API; PREFECT_LOGGING_EXTRA_LOGGERS=sao would
    depend on each worker's environment and, with the root logger at WARNING, still drop sao's INFO
    lines. So the API handler is attached here, for the run, at PREFECT_LOGGING_LEVEL, redacting as
    sao.log does. Nested flows (a chain's subflows) share one handler: each record goes to the run
    whose context it was logged in. Not in a flow run, or already configured (the extra-loggers
    setting): nothing is changed."""
    from prefect.logging.handlers import APILogHandler
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_LOGGING_LEVEL

    from sao.log import RedactingFormatter
    logger = logging.getLogger("sao")
    with _SAO_LOGS_LOCK:
        counted = bool(_SAO_LOGS["depth"])          # a subflow inside a flow that attached it
        if counted:
            _SAO_LOGS["depth"] += 1
        elif flow_run.id and not _has_api_handler(logger):
            handler = APILogHandler()
            handler.setFormatter(RedactingFormatter())
            handler.addFilter(_ToFlowRun(flow_run.id))
            logger.addHandler(handler)
            _SAO_LOGS.update(depth=1, handler=handler, level=logger.level)
            counted = True                          # from here on the finally below removes it again
            level = logging.getLevelName(str(PREFECT_LOGGING_LEVEL.value()).upper())
            if isinstance(level, int) and logger.getEffectiveLevel() > level:
                logger.setLevel(level)
    try:
        yield
    finally:
        if counted:
            with _SAO_LOGS_LOCK:
                _SAO_LOGS["depth"] -= 1
                if _SAO_LOGS["depth"] == 0:
                    logger.removeHandler(_SAO_LOGS["handler"])
                    logger.setLevel(_SAO_LOGS["level"])
                    _SAO_LOGS.update(handler=None, level=logging.NOTSET)
