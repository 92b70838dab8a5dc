"""The attribution manifest written beside every checkpoint, and its verification.

It names the shards build (and release) the weights were trained from, every shard with its
sha256, every recording in those shards with source, id, title, author, license and
attribution line, counts per license and source, and the ``sao-tensors/1`` digest of the
weights it belongs to (sao.signing). A DiT's weights hold its autoencoder too (``pretransform.model.*``),
so its manifest also names that autoencoder (``autoencoder``): the digest of those tensors, the
autoencoder's checkpoint and manifest (path and sha256), and the recordings it was trained on.
The manifest's sha256 (of its canonical JSON) goes into the checkpoint's safetensors metadata,
and a DSSE-signed in-toto statement beside the checkpoint (``*.intoto.json``) binds that sha256
to the tensor digest under an ed25519 key. ``sao manifest verify CKPT --key PUB`` checks all of
it; without ``--key`` it checks only that the files agree with each other, and says that no
signature was checked. Shard locations are stored absolute or
as URLs, so verification works from any folder.
"""
from __future__ import annotations

import collections
import hashlib
import json
import pathlib
from typing import Any

from ..licensing.table import canonical_of, spdx_id
from ..catalog import Catalog
from ..licensing.attribution import attribution_line
from .. import signing

FORMAT = "sao-attribution-manifest/2"
PREDICATE_TYPE = "https://sao.invalid/attestation/checkpoint/v1"
# Where a DiT's weights hold its autoencoder (sao.models.factory: model.pretransform.model): those
# tensors, with this taken off their names, are the autoencoder checkpoint's tensors.
AUTOENCODER_PREFIX = "pretransform.model."


class ManifestError(ValueError):
    pass


def absolute_location(location: str) -> str:
    """A URL as given; a local folder resolved, so the manifest means the same from any working directory."""
    return location if "://" in location else str(pathlib.Path(location).expanduser().resolve())


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
        canonical = rec.get("license_canonical") or canonical_of(row_license[rid])
        r = {"recording_id": rid, "source": source, "id": sid, "title": rec.get("title"), "author": rec.get("author"),
             "license": spdx_id(canonical), "license_url": rec.get("license_url"), "url": rec.get("url")}
        r["attribution_line"] = attribution_line(title=r["title"], author=r["author"], url=r["url"],
                                                 license_canonical=canonical, license_url=r["license_url"],
                                                 freesound_line=rec.get("freesound_line"))
        recordings.append(r)
    per = collections.Counter((r["source"], r["license"]) for r in recordings)
    return {
        "format": FORMAT, "stage": stage, "step": step,
        "shards_build": {"location": absolute_location(shards_dir), "name": plan.get("name"),
                         "plan_hash": plan.get("plan_hash"), "release": plan.get("release")},
        "shards": [{"name": n, "sha256": s} for n, s in shards],
        "recordings": recordings,
        "counts": {"recordings": len(recordings), "samples": len(rows),
                   "by_source_and_license": {f"{s}:{lic}": n for (s, lic), n in sorted(per.items())}},
    }


def manifest_bytes(manifest: dict) -> bytes:
    """The file's bytes: sorted and indented for people; its sha256 is taken over the canonical form."""
    return json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False).encode()


def manifest_sha256(manifest: dict) -> str:
    return hashlib.sha256(signing.canonical_json(manifest)).hexdigest()


def envelope_path(checkpoint: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(checkpoint).with_suffix(".intoto.json")


def checkpoint_statement(file_name: str, manifest: dict, manifest_file: str) -> dict:
    """The in-toto statement of one checkpoint: its tensors (subject) and the manifest that attributes them."""
    return signing.statement(
        [(file_name, manifest["weights"]["sha256"])], PREDICATE_TYPE,
        {"digest_method": signing.TENSOR_DIGEST, "stage": manifest["stage"], "step": manifest["step"],
         "weights": manifest["weights"]["name"],
         "manifest": {"name": manifest_file, "sha256": manifest_sha256(manifest)},
         "shards_build": {k: manifest["shards_build"].get(k) for k in ("location", "name", "plan_hash")},
         "release": manifest["shards_build"].get("release")})


# -- checks of a manifest read back (hostile until checked) --------------------------------------
_MISSING = object()


def _get(m: Any, path: str, kind: type, where: str, label: str | None = None) -> Any:
    """m[a][b]... for PATH "a.b...", of type KIND; else an error naming the field (LABEL, default PATH)."""
    label = label or path
    cur = m
    for part in path.split("."):
        cur = cur.get(part, _MISSING) if isinstance(cur, dict) else _MISSING
        if cur is _MISSING:
            raise ManifestError(f"{where}: missing field '{label}'")
    if not isinstance(cur, kind) or (isinstance(cur, bool) and kind is int):
        raise ManifestError(f"{where}: field '{label}' must be {kind.__name__}, got {type(cur).__name__}")
    return cur


def _check_location(m: dict, path: str, where: str) -> None:
    loc = _get(m, path, str, where)
    if "://" not in loc and not pathlib.PurePath(loc).is_absolute():
        raise ManifestError(f"{where}: field '{path}' is the relative path {loc!r}: it means another folder "
                            "from every working directory (locations must be absolute or URLs)")


def _check_shards(m: dict, path: str, where: str) -> None:
    for i, s in enumerate(_get(m, path, list, where)):
        name = _get(s, "name", str, where, f"{path}[{i}].name")
        sha = _get(s, "sha256", str, where, f"{path}[{i}].sha256")
        pure = pathlib.PurePosixPath(name)
        if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "://" in name:
            raise ManifestError(f"{where}: field '{path}[{i}].name' ({name!r}) is not a path inside the build")
        if not signing.HEX64.match(sha):
            raise ManifestError(f"{where}: field '{path}[{i}].sha256' is not a sha256 hex digest")


def check_manifest(m: Any, where: str) -> None:
    """Every field verification uses, with its type: the first problem raises, naming the field."""
    if not isinstance(m, dict):
        raise ManifestError(f"{where}: not a JSON object")
    fmt = _get(m, "format", str, where)
    if fmt != FORMAT:
        raise ManifestError(f"{where}: format {fmt!r} is not {FORMAT} (older manifests do not bind the weights)")
    _get(m, "stage", str, where)
    _get(m, "step", int, where)
    _check_location(m, "shards_build.location", where)
    _check_shards(m, "shards", where)
    _get(m, "recordings", list, where)
    _get(m, "counts.recordings", int, where)
    if "latents" in m:
        _check_location(m, "latents.location", where)
        _check_shards(m, "latents.shards", where)
    _get(m, "weights.name", str, where)
    _get(m, "weights.file", str, where)
    if _get(m, "weights.digest", str, where) != signing.TENSOR_DIGEST:
        raise ManifestError(f"{where}: field 'weights.digest' is not {signing.TENSOR_DIGEST}")
    if not signing.HEX64.match(_get(m, "weights.sha256", str, where)):
        raise ManifestError(f"{where}: field 'weights.sha256' is not a sha256 hex digest")
    if "autoencoder" in m:
        _check_autoencoder(m, where)
    status = _get(m, "signing.status", str, where)
    if status not in ("signed", "unsigned"):
        raise ManifestError(f"{where}: field 'signing.status' is {status!r}, not 'signed' or 'unsigned'")
    if status == "signed":
        _get(m, "signing.keyid", str, where)
        _get(m, "signing.envelope", str, where)


def _check_autoencoder(m: dict, where: str) -> None:
    if _get(m, "autoencoder.weights.digest", str, where) != signing.TENSOR_DIGEST:
        raise ManifestError(f"{where}: field 'autoencoder.weights.digest' is not {signing.TENSOR_DIGEST}")
    if not signing.HEX64.match(_get(m, "autoencoder.weights.sha256", str, where)):
        raise ManifestError(f"{where}: field 'autoencoder.weights.sha256' is not a sha256 hex digest")
    ae = m["autoencoder"]
    for i, r in enumerate(_get(m, "autoencoder.recordings", list, where)):
        _get(r, "recording_id", str, where, f"autoencoder.recordings[{i}].recording_id")
    for field in ("checkpoint", "manifest"):
        if field not in ae:
            raise ManifestError(f"{where}: missing field 'autoencoder.{field}'")
    if ae["checkpoint"] is None:            # an untrained (random) autoencoder: no data, nothing to name
        if ae["manifest"] is not None or ae["recordings"]:
            raise ManifestError(f"{where}: field 'autoencoder.checkpoint' is null, yet a manifest or recordings "
                                "are named")
        return
    _check_location(m, "autoencoder.checkpoint", where)
    _check_location(m, "autoencoder.manifest.file", where)
    if not ae["manifest"]["file"].endswith(".manifest.json"):
        raise ManifestError(f"{where}: field 'autoencoder.manifest.file' does not name a .manifest.json")
    if not signing.HEX64.match(_get(m, "autoencoder.manifest.sha256", str, where)):
        raise ManifestError(f"{where}: field 'autoencoder.manifest.sha256' is not a sha256 hex digest")


def _check_signature(ckpt: pathlib.Path, manifest: dict, digest: str, sha: str, public_key) -> str:
    if manifest["signing"]["status"] != "signed":
        raise ManifestError(f"{ckpt}: unsigned: the manifest says no key signed these weights")
    try:
        stmt = signing.open_envelope(envelope_path(ckpt), public_key, PREDICATE_TYPE)
    except signing.SigningError as exc:
        raise ManifestError(f"{ckpt}: {exc}") from None
    if not any(s["digest"]["sha256"] == digest for s in stmt["subject"]):
        raise ManifestError(f"{ckpt}: the signed statement is about other tensors (swapped or changed weights)")
    # the statement names the file it signs: another checkpoint's signed set copied here must not pass
    if not any(s["name"] == ckpt.name and s["digest"]["sha256"] == digest for s in stmt["subject"]):
        names = ", ".join(repr(s["name"])[:80] for s in stmt["subject"])
        raise ManifestError(f"{ckpt}: the signed statement is about {names}, not {ckpt.name}: "
                            "another checkpoint's files under this name")
    signed = stmt["predicate"].get("manifest")
    if not isinstance(signed, dict) or signed.get("sha256") != sha:
        raise ManifestError(f"{ckpt}: the signature does not cover this manifest: it was altered after signing")
    if signed.get("name") != ckpt.with_suffix(".manifest.json").name:
        raise ManifestError(f"{ckpt}: the signed statement names manifest {repr(signed.get('name'))[:80]}, not "
                            f"{ckpt.with_suffix('.manifest.json').name}")
    return signing.keyid(public_key)


def _check_autoencoder_binding(ckpt: pathlib.Path, manifest: dict, part: str | None) -> dict | None:
    """The DiT's autoencoder tensors (PART: their digest, None when the file holds none) against the manifest's
    ``autoencoder``, and that autoencoder's own manifest, when it is on disk, against the sha256 recorded."""
    ae = manifest.get("autoencoder")
    if ae is None:
        if part is not None:
            raise ManifestError(f"{ckpt}: holds an autoencoder ({AUTOENCODER_PREFIX}* tensors) that the manifest "
                                "does not name: its training data is unattributed")
        return None
    want = ae["weights"]["sha256"]
    if part != want:
        got = "no such tensors" if part is None else f"digest {part[:16]}"
        raise ManifestError(f"{ckpt}: its autoencoder tensors ({AUTOENCODER_PREFIX}*): {got}, not the manifest's "
                            f"autoencoder {want[:16]}: the autoencoder was swapped or changed")
    out = {"weights_sha256": want, "recordings": len(ae["recordings"]), "checkpoint": ae["checkpoint"]}
    if ae["manifest"] is None:
        return dict(out, manifest="none (untrained autoencoder)")
    ref = pathlib.Path(ae["manifest"]["file"])
    if not ref.is_file():
        return dict(out, manifest=f"{ref}: not found, not checked")
    try:
        vae = signing.strict_json(ref.read_bytes(), ref.name)
    except signing.SigningError as exc:
        raise ManifestError(f"{ckpt}: the autoencoder's manifest {exc}") from None
    check_manifest(vae, str(ref))
    sha = manifest_sha256(vae)
    if sha != ae["manifest"]["sha256"]:
        raise ManifestError(f"{ref}: sha256 {sha[:16]} is not the {ae['manifest']['sha256'][:16]} that {ckpt.name} "
                            "records: the autoencoder's manifest was altered or replaced")
    if vae["weights"]["sha256"] != want or vae["recordings"] != ae["recordings"]:
        raise ManifestError(f"{ckpt}: the autoencoder's manifest {ref.name} names other weights or recordings "
                            "than this manifest's 'autoencoder'")
    return dict(out, manifest=f"{ref}: matches")


def _check_shard_files(manifest: dict) -> tuple[int, list[str]]:
    import fsspec
    todo = [(manifest["shards_build"]["location"].rstrip("/"), s) for s in manifest["shards"]]
    if manifest.get("latents"):                # pre-encoded latent shards the DiT actually read
        todo += [(manifest["latents"]["location"].rstrip("/"), s) for s in manifest["latents"]["shards"]]
    problems = []
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
    return len(todo), problems


def verify(checkpoint: str | pathlib.Path, *, check_shards: bool = True, public_key=None) -> dict[str, Any]:
    """Check a checkpoint's tensors against the manifest beside it, the manifest against the metadata and
    (with PUBLIC_KEY) both against the signed statement, and by default the shards against the manifest."""
    ckpt = pathlib.Path(checkpoint)
    man_path = ckpt.with_suffix(".manifest.json")
    if not ckpt.is_file():
        raise ManifestError(f"{ckpt}: no such checkpoint")
    if not man_path.is_file():
        raise ManifestError(f"{ckpt}: no manifest beside it ({man_path.name}); do not publish these weights")
    try:
        digest, meta, ae_digest = signing.safetensors_digests(ckpt, AUTOENCODER_PREFIX)
        manifest = signing.strict_json(man_path.read_bytes(), man_path.name)
    except signing.SigningError as exc:
        raise ManifestError(f"{ckpt}: {exc}") from None
    check_manifest(manifest, man_path.name)
    want = meta.get("sao_manifest_sha256")
    if not want:
        raise ManifestError(f"{ckpt}: the checkpoint records no manifest sha256")
    got = manifest_sha256(manifest)
    if got != want:
        raise ManifestError(f"{man_path.name}: sha256 {got[:16]} does not match the checkpoint's {want[:16]}: "
                            "the manifest was altered or belongs to other weights")
    if manifest["weights"]["sha256"] != digest:
        raise ManifestError(f"{ckpt}: tensor digest {digest[:16]} is not the manifest's {manifest['weights']['sha256'][:16]}"
                            ": the tensors were changed, or are another checkpoint's under this manifest")
    if manifest["weights"]["file"] != ckpt.name:
        raise ManifestError(f"{ckpt}: the manifest is for {manifest['weights']['file'][:120]!r}, not {ckpt.name}: "
                            "another checkpoint's files under this name")
    autoencoder = _check_autoencoder_binding(ckpt, manifest, ae_digest)
    keyid = _check_signature(ckpt, manifest, digest, got, public_key) if public_key is not None else None
    checked, problems = _check_shard_files(manifest) if check_shards else (0, [])
    if problems:
        raise ManifestError(f"{ckpt}: " + "; ".join(problems))
    return {"checkpoint": str(ckpt), "manifest": str(man_path), "manifest_sha256": got, "weights_sha256": digest,
            "signed_by": keyid, "signing_status": manifest["signing"]["status"], "shards_checked": checked,
            "recordings": manifest["counts"]["recordings"], "autoencoder": autoencoder}
