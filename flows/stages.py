"""Any pipeline stage as Prefect tasks: ``plan`` and ``store`` open the catalogue (one at a time, so
DuckDB's single writer is never contended); ``compute`` is mapped over the plan's batches on the
flow's task runner (threads, Dask or Ray: flows/runtime.py) and never opens the catalogue.

- A cacheable stage's batches (music screen, embeddings) are cached across runs by their inputs:
  the batch names each file by sha256 and the meta carries the model's signature; the stage's own
  source code is part of the key. Results persist under [orchestration].results_dir, so a batch
  computed and not stored (a crash, a failed store) costs nothing the next time.
- Retries only for transient errors (connection problems, 429, 5xx, a busy catalogue); a 4xx or a
  data error fails the run at once so a person looks at it. Every task has a timeout.
- Tokens never travel as task parameters: each task reads them from the environment or the token
  file named in the config; the Freesound rate limit is a Prefect global limit every worker shares.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import sys
import time
from typing import Any

import requests
from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE

from sao import config as config_mod
from sao.pipeline import registry
from sao.pipeline.runner import batch_size, batches
from sao.pipeline.stage import Plan, RunOptions, Stage, StageContext, Stats

from flows import runtime


def is_transient(exc: BaseException) -> bool:
    from sao.sources.freesound import FreesoundError
    if isinstance(exc, FreesoundError):
        return exc.transient
    from sao.review.detection_client import DetectionError
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, DetectionError)):
        return True
    from sao.catalog import CatalogInUse
    if isinstance(exc, CatalogInUse):                 # the catalogue is locked by another writer
        return True
    try:
        import duckdb
        if isinstance(exc, duckdb.IOException):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def transient_only(task_, task_run, state) -> bool:
    """Prefect retry_condition_fn: retry only when the failure was transient."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False


RETRY_DELAYS = [10, 60, 300]
_RETRY = dict(retries=3, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient_only, cache_policy=NO_CACHE)
_BATCH = dict(retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=transient_only, cache_policy=NO_CACHE)


def _cfg(config_path: str | None):
    return config_mod.load(config_path)


def context(config_path: str | None, options: dict, shared_limit: bool) -> StageContext:
    cfg = _cfg(config_path)
    wrap = (lambda c: runtime.share_rate_limit(c, cfg)) if shared_limit else None
    return StageContext(cfg, RunOptions.from_dict(options), wrap_client=wrap, show_progress=False)


@functools.lru_cache(maxsize=None)
def code_version(stage_name: str) -> str:
    """The stage's source (its module): part of a cached batch's key, so changed code recomputes."""
    mod = sys.modules[type(registry.get(stage_name)).__module__]
    return hashlib.sha256(inspect.getsource(mod).encode()).hexdigest()[:16]


@task(name="plan", **_RETRY)
def plan_task(config_path: str | None, stage: str, options: dict, shared_limit: bool) -> Plan:
    with runtime.sao_logs_to_prefect():
        return registry.get(stage).plan(context(config_path, options, shared_limit))


@task(name="compute", **_BATCH)
def compute_task(config_path: str | None, stage: str, code: str, options: dict, shared_limit: bool,
                 meta: dict, batch: list) -> Any:
    with runtime.sao_logs_to_prefect():      # a process-pool, Dask or Ray worker attaches its own handler
        return registry.get(stage).compute(context(config_path, options, shared_limit), meta, batch)


@task(name="store-batch", **_RETRY)
def store_batch_task(config_path: str | None, stage: str, options: dict, shared_limit: bool, plan: Plan,
                     result: Any) -> None:
    with runtime.sao_logs_to_prefect():
        registry.get(stage).store_batch(context(config_path, options, shared_limit), plan, result)


@task(name="store", **_RETRY)
def store_task(config_path: str | None, stage: str, options: dict, shared_limit: bool, plan: Plan,
               results: list) -> dict[str, Any]:
    with runtime.sao_logs_to_prefect():
        return registry.get(stage).store(context(config_path, options, shared_limit), plan, results).to_dict()


def run_stage(config_path: str | None, stage: Stage, options: RunOptions, tally: runtime.Tally, *,
              shared_limit: bool = False) -> Stats:
    cfg = _cfg(config_path)
    t0 = time.perf_counter()
    why = stage.skip(StageContext(cfg, options))
    if why:
        if not stage.optional:
            print(f"{stage.name} skipped: {why}")
        return Stats(stage.name, skipped=why)
    opts = options.to_dict()
    timeout = dict(timeout_seconds=stage.timeout_s)
    hits0 = tally.cache_hits
    first: Stats | None = None
    for attempt in range(1 + stage.max_reruns):
        plan = tally.result(plan_task.with_options(name=f"plan-{stage.name}", timeout_seconds=1800)(
            config_path, stage.name, opts, shared_limit, return_state=True))
        if plan.skipped:
            return Stats(stage.name, skipped=plan.skipped, seconds=time.perf_counter() - t0)
        results: list = []
        if stage.batched and plan.items:
            compute = compute_task.with_options(name=f"{stage.name}-batch", **timeout)
            if stage.cacheable:
                compute = runtime.cached(compute, cfg, refresh=options.refresh_cache)
            futures = compute.map(
                unmapped(config_path), unmapped(stage.name), unmapped(code_version(stage.name)), unmapped(opts),
                unmapped(shared_limit), unmapped(plan.meta), batches(plan.items, batch_size(stage, StageContext(cfg))))
            for fut in futures:              # in order: each is stored once it and those before it are done
                results.append(tally.result(fut))
                if stage.stores_batches:
                    tally.result(store_batch_task.with_options(name=f"store-{stage.name}-batch")(
                        config_path, stage.name, opts, shared_limit, plan, results[-1], return_state=True))
        stats = Stats.from_dict(tally.result(store_task.with_options(name=f"store-{stage.name}", **timeout)(
            config_path, stage.name, opts, shared_limit, plan, results, return_state=True)))
        stats.batches = len(results)
        if attempt == stage.max_reruns or not stage.again(StageContext(cfg, options), stats):
            break
        first = first or stats
    if first is not None:       # what made the stage run again (the shard build: recordings that failed part-way)
        stats.details["rerun_after"] = dict(first.errors)
    stats.cache_hits = tally.cache_hits - hits0
    stats.seconds = time.perf_counter() - t0
    return stats


def run_stages(config_path: str | None, stages: list[Stage], options: RunOptions, tally: runtime.Tally,
               out: dict[str, Any], *, shared_limit: bool = False) -> dict[str, Stats]:
    """Run ``stages`` in order inside the calling flow; each stage's stats go into ``out`` (the run summary)."""
    done: dict[str, Stats] = {}
    for stage in stages:
        st = run_stage(config_path, stage, options, tally, shared_limit=shared_limit)
        done[stage.name] = st
        out[stage.name] = st.to_dict()
        if not st.skipped:
            carried = stage.carry(st)
            if carried:
                options = dataclasses.replace(options, **carried)
    return done
