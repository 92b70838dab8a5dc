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


def build_manifest(cat: Catalog | None, shards_dir: str, sets: list[str], *, stage: str, step: int,
                   shards_read: set[str] | None = None) -> dict[str, Any]:
    plan, rows = shard_build_info(shards_dir)
    rows = [r for r in rows if r["set"] in sets and (shards_read is None or r["shard"] in shards_read)]
    shards = sorted({(r["shard"], r["shard_sha256"]) for r in rows})
    rec_ids = sorted({r["recording_id"] for r in rows})
    recordings = []
    for rid in rec_ids:
        rec = cat.get_recording(rid) if cat is not None else None
        extra = json.loads(rec["extra"]) if rec and rec.get("extra") else {}
        att = extra.get("attribution") or {}
        source, _, sid = rid.partition(":")
        recordings.append({
            "recording_id": rid, "source": source, "id": sid,
            "title": (rec or {}).get("title") or att.get("title"), "author": (rec or {}).get("author") or att.get("author"),
            "license": (rec or {}).get("license_canonical") or next(r["license"] for r in rows if r["recording_id"] == rid),
            "license_url": (rec or {}).get("license_url") or att.get("license_url"),
            "url": (rec or {}).get("page_url") or att.get("source_url"),
        })
        r = recordings[-1]
        r["attribution_line"] = attribution_line(title=r["title"], author=r["author"], url=r["url"],
                                                 license_canonical=r["license"], license_url=r["license_url"],
                                                 freesound_line=att.get("freesound_line"))
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
