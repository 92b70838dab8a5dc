"""The one runner: plan, compute batches, store, for each stage in order, on the calling process
(``sao refresh``, ``sao demo``, the chaos runner, single-stage commands). flows/stages.py runs the
same stages as Prefect tasks, mapping each stage's batches over the flow's task runner.

A stage that raises fails the run (the run summary records it); a stage that cannot run with this
config says why (``Stats.skipped``) and the run goes on without it: what it would have admitted
stays out of every release until it runs.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import time
from typing import Any, Callable, Iterable

from ..config import Config
from ..log import one_bar, progress
from .stage import Plan, RunOptions, Stage, StageContext, Stats

log = logging.getLogger(__name__)


def batches(items: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]


def batch_size(stage: Stage, ctx: StageContext) -> int:
    return stage.batch_size or ctx.cfg.orchestration.batch_files


def _compute(stage: Stage, ctx: StageContext, meta: dict, batch: list):
    return stage.compute(ctx, meta, batch)


def compute_all(stage: Stage, ctx: StageContext, plan: Plan) -> list:
    parts = batches(plan.items, batch_size(stage, ctx))
    workers = stage.workers(ctx)
    bar = progress(total=len(plan.items), desc=stage.name, unit="item", disable=not ctx.show_progress or not parts,
                   outer=True)
    results: list = [None] * len(parts)
    try:
        if workers > 1 and len(parts) > 1:
            # CPU-bound stages (the shard writers) in processes; the context goes without its client wrapper
            sendable = dataclasses.replace(ctx, wrap_client=None)
            with cf.ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_compute, stage, sendable, plan.meta, b): i for i, b in enumerate(parts)}
                for fut in cf.as_completed(futures):
                    results[futures[fut]] = fut.result()
                    if stage.stores_batches:
                        stage.store_batch(ctx, plan, results[futures[fut]])
                    bar.update(len(parts[futures[fut]]))
        else:
            for i, b in enumerate(parts):
                results[i] = stage.compute(ctx, plan.meta, b)
                if stage.stores_batches:
                    stage.store_batch(ctx, plan, results[i])
                bar.update(len(b))
    finally:
        bar.close()
    return results


def run_stage(stage: Stage, ctx: StageContext) -> Stats:
    """One stage, start to end (again, when the stage asks for it)."""
    if not stage.batched:                # no bar of its own: the bars of what it calls (the crawl's) show
        return _run_stage(stage, ctx)
    with one_bar():                      # the stage's own bar, not those of what it calls
        return _run_stage(stage, ctx)


def _run_stage(stage: Stage, ctx: StageContext) -> Stats:
    t0 = time.perf_counter()
    why = stage.skip(ctx)
    if why:
        (log.debug if stage.optional else log.warning)("%s skipped: %s", stage.name, why)
        return Stats(stage.name, skipped=why)
    first: Stats | None = None
    for attempt in range(1 + stage.max_reruns):
        plan = stage.plan(ctx)
        if plan.skipped:
            return Stats(stage.name, skipped=plan.skipped, seconds=time.perf_counter() - t0)
        results = compute_all(stage, ctx, plan) if stage.batched else []
        stats = stage.store(ctx, plan, results)
        stats.batches = len(results)
        if attempt == stage.max_reruns or not stage.again(ctx, stats):
            break
        first = first or stats
        log.warning("%s: running once more (%s)", stage.name, "; ".join(f"{k}: {v}" for k, v in
                                                                        list(stats.errors.items())[:5]))
    if first is not None:       # what made the stage run again (the shard build: recordings that failed part-way)
        stats.details["rerun_after"] = dict(first.errors)
    stats.seconds = time.perf_counter() - t0
    return stats


def run_stages(ctx: StageContext, stages: Iterable[Stage],
               on_stage: Callable[[Stage, Stats], None] | None = None) -> dict[str, Stats]:
    out: dict[str, Stats] = {}
    for stage in stages:
        st = run_stage(stage, ctx)
        out[stage.name] = st
        if not st.skipped:
            carried = stage.carry(st)
            if carried:
                ctx.options = dataclasses.replace(ctx.options, **carried)
        if on_stage is not None:
            on_stage(stage, st)
    return out


def run_pipeline(cfg: Config, names: str | list[str] | None = None, *, options: RunOptions | None = None,
                 secrets: dict[str, str] | None = None, flow: str = "refresh", record: bool = True,
                 show_progress: bool = True, on_stage: Callable[[Stage, Stats], None] | None = None,
                 ) -> dict[str, Stats]:
    """Run ``names`` (a group or stage names; default the refresh) and record one run summary in the
    catalogue's ``runs`` table (``sao status`` prints it)."""
    from .. import config as config_mod
    from ..runs import recording
    from .registry import select
    ctx = StageContext(cfg, options or RunOptions(), dict(secrets or {}), show_progress=show_progress)
    stages = select(names)
    if not record:
        return run_stages(ctx, stages, on_stage)
    with recording(cfg.catalog_path, flow=flow, config_hash=cfg.config_hash(), task_runner="inline",
                   secrets=[*ctx.secrets.values(), *config_mod.secrets(cfg)]) as rec:
        def keep(stage: Stage, st: Stats) -> None:
            rec.stages[stage.name] = st.to_dict()
            if on_stage is not None:
                on_stage(stage, st)
        out = run_stages(ctx, stages, keep)
    return out


def summary_lines(st: Stats) -> list[tuple[str, Any]]:
    """What a person reads about one stage's run (the demo and the CLI print these)."""
    if st.skipped:
        return [("SKIPPED", st.skipped)]
    lines: list[tuple[str, Any]] = [("items", f"{st.items_in} in, {st.passed} passed"
                                     + (f", {st.batches} batch(es)" if st.batches else ""))]
    if st.rejected:
        lines.append(("rejected", ", ".join(f"{k} {v}" for k, v in sorted(st.rejected.items()))))
    if st.errors:
        lines.append(("errors", f"{len(st.errors)} (first: {next(iter(st.errors.items()))})"))
    if st.audio_seconds:
        lines.append(("audio", f"{st.audio_seconds:.1f} s at {st.audio_s_per_s:.1f} audio-s/s"))
    if st.cache_hits:
        lines.append(("cache hits", st.cache_hits))
    return lines
