"""The attribution manifest written beside every checkpoint.

It names the shards build (and release) the weights were trained from, every shard with its
sha256, every recording in those shards with source, id, title, author, license and
attribution line, and counts per license and source. Its own sha256 goes into the
checkpoint's safetensors metadata, so weights and manifest can be checked against each other
(``sao manifest verify CKPT``); a checkpoint without a verifiable manifest must not be published.
"""
from __future__ import annotations

import collections
import hashlib
import json
import pathlib
from typing import Any

from ..catalog import Catalog
from ..licensing.attribution import attribution_line


class ManifestError(ValueError):
    pass


def shard_build_info(shards_dir: str) -> tuple[dict, list[dict]]:
    """(plan.json, index rows) of one shards build (a local folder or an fsspec URL)."""
    import fsspec
    import pyarrow.parquet as pq
    fs, root = fsspec.core.url_to_fs(shards_dir)
    with fs.open(f"{root}/plan.json", "rb") as f:
        plan = json.loads(f.read())
    if plan.get("status") != "complete":
        raise ManifestError(f"{shards_dir}: the shards build is not complete")
    with fs.open(f"{root}/index.parquet", "rb") as f:
        rows = pq.read_table(f).to_pylist()
    return plan, rows


def _catalogue_rows(cat: Catalog, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Attribution fields of the given recordings in one join (not one query per recording)."""
    import pyarrow as pa
    cat.con.register("_sao_manifest_ids", pa.table({"recording_id": pa.array(ids, pa.string())}))
    try:
        rows = cat.query(
            "SELECT recording_id, coalesce(title, json_extract_string(extra, '$.attribution.title')) AS title, "
            "coalesce(author, json_extract_string(extra, '$.attribution.author')) AS author, license_canonical, "
            "coalesce(license_url, json_extract_string(extra, '$.attribution.license_url')) AS license_url, "
            "coalesce(page_url, json_extract_string(extra, '$.attribution.source_url')) AS url, "
            "json_extract_string(extra, '$.attribution.freesound_line') AS freesound_line "
            "FROM recordings JOIN _sao_manifest_ids USING (recording_id)")
    finally:
        cat.con.unregister("_sao_manifest_ids")
    return {r["recording_id"]: r for r in rows}


def build_manifest(cat: Catalog | None, shards_dir: str, sets: list[str], *, stage: str, step: int,
                   shards_read: set[str] | None = None) -> dict[str, Any]:
    plan, rows = shard_build_info(shards_dir)
    rows = [r for r in rows if r["set"] in sets and (shards_read is None or r["shard"] in shards_read)]
    shards = sorted({(r["shard"], r["shard_sha256"]) for r in rows})
    row_license = {r["recording_id"]: r["license"] for r in rows}
    recs = _catalogue_rows(cat, sorted(row_license)) if cat is not None else {}
    recordings = []
    for rid in sorted(row_license):
        rec = recs.get(rid, {})
        source, _, sid = rid.partition(":")
        r = {"recording_id": rid, "source": source, "id": sid, "title": rec.get("title"), "author": rec.get("author"),
             "license": rec.get("license_canonical") or row_license[rid], "license_url": rec.get("license_url"),
             "url": rec.get("url")}
        r["attribution_line"] = attribution_line(title=r["title"], author=r["author"], url=r["url"],
                                                 license_canonical=r["license"], license_url=r["license_url"],
                                                 freesound_line=rec.get("freesound_line"))
        recordings.append(r)
    per = collections.Counter((r["source"], r["license"]) for r in recordings)
    return {
        "format": "sao-attribution-manifest/1", "stage": stage, "step": step,
        "shards_build": {"location": shards_dir, "name": plan.get("name"), "plan_hash": plan.get("plan_hash"),
                         "release": plan.get("release")},
        "shards": [{"name": n, "sha256": s} for n, s in shards],
        "recordings": recordings,
        "counts": {"recordings": len(recordings), "samples": len(rows),
                   "by_source_and_license": {f"{s}:{lic}": n for (s, lic), n in sorted(per.items())}},
    }


def manifest_bytes(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode()


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(manifest_bytes(manifest)).hexdigest()


def verify(checkpoint: str | pathlib.Path, *, check_shards: bool = True) -> dict[str, Any]:
    """Check a checkpoint against the manifest beside it (and, by default, the shards against the manifest)."""
    from safetensors import safe_open
    ckpt = pathlib.Path(checkpoint)
    man_path = ckpt.with_suffix(".manifest.json")
    if not ckpt.is_file():
        raise ManifestError(f"{ckpt}: no such checkpoint")
    if not man_path.is_file():
        raise ManifestError(f"{ckpt}: no manifest beside it ({man_path.name}); do not publish these weights")
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata() or {}
    want = meta.get("sao_manifest_sha256")
    if not want:
        raise ManifestError(f"{ckpt}: the checkpoint records no manifest sha256")
    data = man_path.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ManifestError(f"{man_path.name}: sha256 {got[:16]} does not match the checkpoint's {want[:16]}: "
                            "the manifest was altered or belongs to other weights")
    manifest = json.loads(data)
    problems = []
    checked = 0
    if check_shards:
        import fsspec
        todo = [(manifest["shards_build"]["location"].rstrip("/"), s) for s in manifest["shards"]]
        if manifest.get("latents"):                # pre-encoded latent shards the DiT actually read
            todo += [(manifest["latents"]["location"].rstrip("/"), s) for s in manifest["latents"]["shards"]]
        checked = len(todo)
        for root, s in todo:
            try:
                with fsspec.open(f"{root}/{s['name']}", "rb") as f:
                    h = hashlib.sha256()
                    while block := f.read(1 << 20):
                        h.update(block)
            except FileNotFoundError:
                problems.append(f"{root}/{s['name']}: missing")
                continue
            if h.hexdigest() != s["sha256"]:
                problems.append(f"{root}/{s['name']}: sha256 differs from the manifest")
    if problems:
        raise ManifestError(f"{ckpt}: " + "; ".join(problems))
    return {"checkpoint": str(ckpt), "manifest": str(man_path), "manifest_sha256": got,
            "shards_checked": checked,
            "recordings": manifest["counts"]["recordings"]}
