"""Build both shard sets for the current catalogue: select -> plan -> write shards (in
parallel, resumable) -> record decode failures -> write the Parquet shard index.

Output layout under ``<shards root>/<name>/``:
    plan.json                           plan hash, seed, settings, status and totals
    autoencoder/shard-000000.tar        5 s chunks (the autoencoder set: a training dataset by itself)
    diffusion/shard-000000.tar          windows of up to 2,097,152 samples, unpadded (the diffusion set)
    index.parquet                       one row per sample: shard, shard sha256, recording, license, ...
    sat/diffusion.json, sat/autoencoder.json   stable-audio-tools dataset configs for the two sets
``name`` defaults to ``snap-<plan hash>``; reusing a name for a different plan is refused. A
given name is one folder name (``sao.fsutil.safe_name``): it can never point outside the root.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import logging
import pathlib
import shutil
import time
from typing import Any, Callable, Iterable

from ..catalog import Catalog, Decision
from ..log import progress
from .plan import SHARD_FORMAT, PlanConfig, ShardSpec, assign_shards, plan_hash, plan_samples
from .select import eligible_recordings
from .writer import ShardResult, WriteContext, filesystem, is_local, write_shard

log = logging.getLogger(__name__)


class ShardBuildError(RuntimeError):
    pass


@dataclasses.dataclass
class BuildPlan:
    name: str
    out_url: str
    plan_hash: str
    specs: list[ShardSpec]
    ctx: WriteContext
    plan_cfg: PlanConfig
    required_stages: list[str]
    n_recordings: int
    release: dict[str, Any] | None = None
    model_use: str | None = None          # the [policy].model_use the shards were admitted for


def _json_write(fs, path: str, obj: Any) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
    if is_local(fs):
        from ..fsutil import atomic_path
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    else:
        with fs.open(path, "wb") as f:
            f.write(data)


def prepare_build(cat: Catalog, *, shards_root: str, audio_store: str | pathlib.Path, required_stages: list[str],
                  plan_cfg: PlanConfig, name: str | None = None, storage_options: dict | None = None,
                  flac_subtype: str = "PCM_16", release: str | None = None, gate_policy=None) -> BuildPlan:
    """``gate_policy`` (a LicensePolicy; default the default one) is the policy the shards are for: without
    a release, every latest gate decision must have been made under it (the admission view trusts a
    decision while its recording is unchanged, whatever policy made it), as ``create_release`` requires."""
    from ..fsutil import safe_join, safe_name
    from ..licensing.gate import LicensePolicy
    from ..licensing.stage import undecided_policy_problem
    gate_policy = gate_policy if gate_policy is not None else LicensePolicy()
    if name is not None:                  # checked before anything is read or written
        safe_name(name, what="shard build name")
        if "://" not in shards_root:      # a local root: no symlink under it may lead out either
            safe_join(shards_root, name, what="shard build name")
    if not release:                 # a release was checked when it was made, and records its own model use
        problem = undecided_policy_problem(cat, gate_policy)
        if problem:
            raise ShardBuildError(problem)
    recs = eligible_recordings(cat, required_stages, audio_store)
    release_info = None
    if release:                     # only the release's items (those taken down since it was made drop out)
        from ..attribution.release import get_release
        rel = get_release(cat, release)
        ids = {r["recording_id"] for r in cat.query(
            "SELECT recording_id FROM release_items WHERE release_name = ?", [release])}
        recs = [r for r in recs if r["recording_id"] in ids]
        release_info = {"name": release, "version": rel["version"], "content_sha256": rel["content_sha256"],
                        "release_items": len(ids), "not_eligible_now": len(ids) - len(recs),
                        "model_use": rel.get("model_use")}
    samples = plan_samples(recs, plan_cfg)
    h = plan_hash(samples, plan_cfg)
    name = name or f"snap-{h[:12]}"
    out_url = f"{shards_root.rstrip('/')}/{name}"
    fs, root = filesystem(out_url, storage_options)
    plan_path = f"{root}/plan.json"
    if fs.exists(plan_path):
        with fs.open(plan_path, "rb") as f:
            old = json.loads(f.read())
        if old.get("plan_hash") != h and old.get("status") == "incomplete" and is_local(fs):
            # an incomplete build holds windows of recordings found undecodable while it ran:
            # nothing may train on it, so the corrected plan replaces it under the same name
            shutil.rmtree(root)
        elif old.get("plan_hash") != h:
            raise ShardBuildError(f"{out_url} holds shards of a different plan ({old.get('plan_hash', '?')[:12]} vs "
                                  f"{h[:12]}): the catalogue or settings changed; use another --name")
    specs = assign_shards(samples, plan_cfg)
    fs.makedirs(root, exist_ok=True)
    _json_write(fs, plan_path, {"plan_hash": h, "name": name, "status": "building",
                                "settings": dataclasses.asdict(plan_cfg), "required_stages": required_stages,
                                "recordings": len(recs), "planned_samples": len(samples), "release": release_info,
                                "model_use": release_info["model_use"] if release_info else gate_policy.model_use,
                                "shards": [s.name for s in specs]})
    if is_local(fs):                      # temporaries of a killed run are garbage
        for stale in (pathlib.Path(root) / ".tmp").glob("*.part"):
            stale.unlink(missing_ok=True)
    ctx = WriteContext(out_url=out_url, storage_options=storage_options or {}, flac_subtype=flac_subtype,
                       hifi_min_rate=plan_cfg.hifi_min_rate)
    return BuildPlan(name, out_url, h, specs, ctx, plan_cfg, list(required_stages), len(recs), release_info,
                     release_info["model_use"] if release_info else gate_policy.model_use)


def run_shards(plan: BuildPlan, workers: int = 1) -> list[ShardResult]:
    """Write every shard; with workers > 1, in a process pool (the writers are CPU bound)."""
    results: list[ShardResult] = []
    bar = progress(total=len(plan.specs), desc="shards", unit="shard")
    if workers <= 1 or len(plan.specs) <= 1:
        for spec in plan.specs:
            results.append(write_shard(spec, plan.ctx))
            bar.update(1)
    else:
        # the longest shards first, so no worker is left with a long one at the end
        # (the results are ordered by name later, whatever order they finish in)
        specs = sorted(plan.specs, key=lambda sp: -sum(s.length for s in sp.samples))
        with cf.ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(write_shard, spec, plan.ctx) for spec in specs]
            for fut in cf.as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    return results


def finalize_build(cat: Catalog, plan: BuildPlan, results: Iterable[ShardResult], *, config_hash: str,
                   seconds: float) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    results = sorted(results, key=lambda r: r.name)
    failures: dict[str, str] = {}
    for r in results:
        failures.update(r.failures)
    previous = cat.latest_decision_map("decode")
    content = {r[0]: r[1] for r in cat.con.execute("SELECT recording_id, content_sha256 FROM recordings "
                                                   "WHERE list_contains(?, recording_id)",
                                                   [sorted(failures)]).fetchall()} if failures else {}
    cat.add_decisions([Decision(rid, "decode", "reject", reason, config_hash=config_hash,
                                details={"content_sha256": content.get(rid)})
                       for rid, reason in sorted(failures.items()) if (previous.get(rid) or {}).get("reason") != reason])
    rows = []
    for r in results:
        for row in r.rows:
            rows.append({"shard": r.name, "shard_sha256": r.sha256, **row})
    fs, root = filesystem(plan.out_url, plan.ctx.storage_options)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"shard": pa.array([], pa.string())})
    index_path = f"{root}/index.parquet"
    if is_local(fs):
        from ..fsutil import atomic_path
        with atomic_path(index_path) as tmp:
            pq.write_table(table, tmp)
    else:
        with fs.open(index_path, "wb") as f:
            pq.write_table(table, f)
    per_set = collections.Counter(row["set"] for row in rows)
    licenses = collections.Counter((row["set"], row["license"]) for row in rows)
    audio_seconds = sum(r.audio_seconds for r in results)
    written = [r for r in results if r.status == "written"]
    summary = {
        "format": SHARD_FORMAT, "name": plan.name, "location": plan.out_url, "plan_hash": plan.plan_hash,
        # a recording that failed part-way may have left windows in other shards: such a build is
        # never "complete" (training refuses it); build_shards builds the corrected plan at once
        "status": "incomplete" if failures else "complete",
        "recordings": plan.n_recordings, "shards": len(results), "shards_written": len(written),
        "shards_skipped": len(results) - len(written), "samples": dict(per_set),
        "bytes": sum(r.bytes for r in results),
        "license_mix": {f"{s}:{lic}": n for (s, lic), n in sorted(licenses.items())},
        "decode_failures": failures, "audio_seconds": round(audio_seconds, 1),
        "audio_s_per_s": round(sum(r.audio_seconds for r in written) / seconds, 1) if seconds and written else 0.0,
        "seconds": round(seconds, 2), "shard_sha256": {r.name: r.sha256 for r in results},
        "required_stages": plan.required_stages, "settings": dataclasses.asdict(plan.plan_cfg),
        "release": plan.release, "model_use": plan.model_use,
    }
    for set_, cfg in sat_dataset_configs(plan.out_url, sorted(per_set)).items():
        _json_write(fs, f"{root}/sat/{set_}.json", cfg)
    _json_write(fs, f"{root}/plan.json", summary)
    return summary


def sat_dataset_configs(build_url: str, sets: list[str]) -> dict[str, dict[str, Any]]:
    """stable-audio-tools dataset configs (``--dataset-config``) pointing at each set's folder of this
    build, the diffusion set through sao's custom metadata module (per-epoch prompts, recording timing)."""
    from . import sat_metadata
    local = build_url.removeprefix("file://")
    base = build_url if "://" in local else str(pathlib.Path(local).resolve())
    out = {}
    for set_ in sets:
        entry = {"id": f"sao-{set_}", "path": f"{base.rstrip('/')}/{set_}"}
        if set_ == "diffusion":
            entry["custom_metadata_module"] = str(pathlib.Path(sat_metadata.__file__).resolve())
        out[set_] = {"dataset_type": "wds", "datasets": [entry], "random_crop": True, "resampled_shards": True,
                     "remove_silence": False}
    return out


def build_shards(cat: Catalog, *, shards_root: str, audio_store: str | pathlib.Path, required_stages: list[str],
                 plan_cfg: PlanConfig, config_hash: str, name: str | None = None, workers: int = 1,
                 storage_options: dict | None = None, release: str | None = None, gate_policy=None,
                 runner: Callable[[BuildPlan, int], list[ShardResult]] = run_shards) -> dict[str, Any]:
    failed_first: dict[str, str] = {}
    for attempt in (1, 2):
        t0 = time.perf_counter()
        plan = prepare_build(cat, shards_root=shards_root, audio_store=audio_store, required_stages=required_stages,
                             plan_cfg=plan_cfg, name=name, storage_options=storage_options, release=release,
                             gate_policy=gate_policy)
        results = runner(plan, workers)
        summary = finalize_build(cat, plan, results, config_hash=config_hash, seconds=time.perf_counter() - t0)
        if summary["status"] == "complete" or attempt == 2:
            break
        # the failures are decode rejects now, so the next plan leaves those recordings out
        failed_first = dict(summary["decode_failures"])
        log.warning("shards %s: %d recording(s) failed to decode while writing; building again without them",
                    summary["name"], len(failed_first))
    if failed_first:
        summary["rebuilt_without"] = failed_first
    return summary
