"""Releases: immutable, versioned snapshots of the admitted recordings.

``create_release`` freezes, in one transaction, every admitted recording (ids, license,
attribution fields, the decisions that admitted it) into ``release_items`` and every other
recording with the reason it was left out into ``release_exclusions``, under a content hash,
with the model use ([policy].model_use) it was built for: the license gate must have decided
every recording under that use and policy first. A name is never reused for other content or
use. ``diff`` compares two releases; ``takedown_impact`` names every release, shard and
checkpoint manifest that contained a recording.
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import pathlib
import re
import time
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import Catalog
from ..licensing.attribution import attribution_line
from ..licensing.gate import LicensePolicy
from ..licensing.stage import undecided_policy_problem
from . import policy
from .policy import ReleaseError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """Release names become folder names: letters, digits, '.', '_', '-' only (no path can escape)."""
    if not NAME_RE.match(name or "") or ".." in name:
        raise ReleaseError(f"release name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (no '..'), "
                           "starting with a letter or digit")
    return name


# The catalogue's admission rule (migration 8) decides; this only reads it, so the shards'
# selection and a release can never disagree about a recording.
_STATE_SQL = """
SELECT a.reason, a.detail, list_transform(a.admitted_by, lambda x: x.stage) AS admitted_stages,
       list_transform(a.admitted_by, lambda x: x.decision_id) AS admitted_ids, r.recording_id, r.source, r.source_id,
       r.title, r.author, r.license_canonical, r.license_url, r.page_url AS url, r.audio_duration AS duration,
       r.audio_sample_rate AS sample_rate, r.audio_channels AS channels, coalesce(r.tags, []) AS tags,
       r.content_sha256, json_extract_string(r.extra, '$.attribution.freesound_line') AS freesound_line
FROM admission(?) a JOIN recordings r USING (recording_id)
ORDER BY r.recording_id
"""

_ITEM_SCHEMA = pa.schema([
    ("release_name", pa.string()), ("recording_id", pa.string()), ("license_canonical", pa.string()),
    ("attribution", pa.string()), ("admitted_by", pa.string()), ("source", pa.string()), ("source_id", pa.string()),
    ("title", pa.string()), ("author", pa.string()), ("license_url", pa.string()), ("url", pa.string()),
    ("attribution_line", pa.string()), ("duration", pa.float64()), ("sample_rate", pa.int32()),
    ("channels", pa.int32()), ("tags", pa.list_(pa.string())), ("content_sha256", pa.string()),
])


def snapshot_table(cat: Catalog, required_stages: Sequence[str]) -> tuple[pa.Table, list[str], list[dict]]:
    """(admitted items as a table with _ITEM_SCHEMA's columns but release_name, each item's
    ``policy.item_line``, exclusions) of the catalogue as it stands, by its admission rule. Columnar:
    the per-item Python work is only what needs Python (the attribution line and the JSON texts)."""
    if not required_stages:
        raise ReleaseError("at least one required stage (e.g. license_gate) must admit an item")
    t = cat.con.sql(_STATE_SQL, params=[list(required_stages)]).to_arrow_table()
    out = t.filter(pc.is_null(t["reason"]))
    rest = t.filter(pc.is_valid(t["reason"])).select(["recording_id", "reason", "detail"]).to_pylist()
    excluded = [{"recording_id": e["recording_id"], "reason": e["reason"], "detail": (e["detail"] or "")[:500]}
                for e in rest]
    col = {c: out[c].to_pylist() for c in ("recording_id", "title", "author", "license_canonical", "license_url",
                                            "url", "freesound_line", "content_sha256", "admitted_stages",
                                            "admitted_ids")}
    lines_attr = [attribution_line(title=ti, author=au, url=u, license_canonical=lc, license_url=lu,
                                   freesound_line=fl)
                  for ti, au, u, lc, lu, fl in zip(col["title"], col["author"], col["url"], col["license_canonical"],
                                                   col["license_url"], col["freesound_line"])]
    # {stage: decision id} in the canonical form the content hash covers (policy.admitted_by_json)
    admitted_dicts = [dict(zip(st, ids)) for st, ids in zip(col["admitted_stages"], col["admitted_ids"])]
    admitted = [policy.admitted_by_json(a) for a in admitted_dicts]
    j = policy.json_value         # the attribution JSON as json.dumps(sort_keys=True) writes it
    attribution = [f'{{"author": {j(au)}, "license_canonical": {j(lc)}, "license_url": {j(lu)}, "title": {j(ti)}, '
                   f'"url": {j(u)}}}'
                   for ti, au, u, lc, lu in zip(col["title"], col["author"], col["url"], col["license_canonical"],
                                                col["license_url"])]
    lines = [policy.line_of(v) for v in zip(col["recording_id"], col["license_canonical"], col["title"],
                                            col["author"], col["license_url"], col["url"], lines_attr,
                                            col["content_sha256"], admitted)]
    names = [f.name for f in _ITEM_SCHEMA if f.name != "release_name"]
    # stored as it always was (json.dumps(sort_keys=True)); the hash covers the canonical form
    computed = {"attribution": attribution, "admitted_by": [policy.admitted_by_json(a, stored=True)
                                                            for a in admitted_dicts],
                "attribution_line": lines_attr}
    table = pa.table({c: pa.array(computed[c], pa.string()) if c in computed else out[c].cast(_ITEM_SCHEMA.field(c).type)
                      for c in names})
    return table, lines, excluded


def create_release(cat: Catalog, name: str | None, *, required_stages: Sequence[str], config_hash: str = "",
                   notes: str | None = None, signatures_dir: str | pathlib.Path | None = None,
                   signing_key=None, gate_policy: LicensePolicy | None = None) -> dict[str, Any]:
    """Freeze release NAME (None: ``rel-<content sha256[:12]>``, so equal content gets an equal name)
    for GATE_POLICY's model use (default: the default policy, research-only). With SIGNATURES_DIR, the release
    is signed there with SIGNING_KEY (sao.attribution.release_signature)."""
    if name is not None:
        check_name(name)
    gate_policy = gate_policy if gate_policy is not None else LicensePolicy()
    # the admission view trusts a gate decision while the recording is unchanged, whatever policy made
    # it: a release for this model use must not hold recordings the gate admitted for another one
    problem = undecided_policy_problem(cat, gate_policy)
    if problem:
        raise ReleaseError(problem)
    t0 = time.perf_counter()
    table, lines, excluded = snapshot_table(cat, required_stages)
    sha = policy.content_sha256_of_lines(lines)
    name = name or f"rel-{sha[:12]}"
    existing = cat.query("SELECT name, content_sha256, version, n_recordings, model_use FROM releases WHERE name = ?",
                         [name])
    if existing:
        if existing[0]["content_sha256"] == sha and existing[0]["model_use"] != gate_policy.model_use:
            built_for = existing[0]["model_use"] or "no recorded model use (made before [policy].model_use)"
            raise ReleaseError(f"release {name!r} already exists with this content, built for {built_for}, not "
                               f"model use {gate_policy.model_use}; a release's model use never changes: choose a new name")
        if existing[0]["content_sha256"] == sha:
            return _signed(cat, {"name": name, "status": "unchanged", "version": existing[0]["version"],
                                 "content_sha256": sha, "recordings": existing[0]["n_recordings"],
                                 "model_use": gate_policy.model_use,
                                 "seconds": round(time.perf_counter() - t0, 2)}, signatures_dir, signing_key)
        raise ReleaseError(f"release {name!r} already exists with other content (sha256 "
                           f"{existing[0]['content_sha256'][:12]}, now {sha[:12]}); releases are immutable: "
                           "choose a new name")
    version = (cat.query("SELECT coalesce(max(version), 0) AS v FROM releases")[0]["v"] or 0) + 1
    counts = collections.Counter(e["reason"] for e in excluded)
    item_table = table.append_column("release_name", pa.array([name] * table.num_rows, pa.string()))
    excl_table = pa.Table.from_pylist([dict(e, release_name=name) for e in excluded], schema=pa.schema([
        ("release_name", pa.string()), ("recording_id", pa.string()), ("reason", pa.string()),
        ("detail", pa.string())]))
    cols = ", ".join(_ITEM_SCHEMA.names)
    select = ", ".join(f"CAST({c} AS JSON)" if c in ("attribution", "admitted_by") else c for c in _ITEM_SCHEMA.names)
    with cat.transaction():
        cat.con.execute(
            "INSERT INTO releases (name, content_sha256, n_recordings, created_at, notes, version, required_stages, "
            "config_hash, exclusions, model_use) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [name, sha, table.num_rows, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), notes, version,
             list(required_stages), config_hash, json.dumps(dict(sorted(counts.items()))), gate_policy.model_use])
        cat.con.register("_sao_items", item_table)
        cat.con.register("_sao_excl", excl_table)
        try:
            cat.con.execute(f"INSERT INTO release_items ({cols}) SELECT {select} FROM _sao_items")
            cat.con.execute("INSERT INTO release_exclusions SELECT release_name, recording_id, reason, detail "
                            "FROM _sao_excl")
        finally:
            cat.con.unregister("_sao_items")
            cat.con.unregister("_sao_excl")
    return _signed(cat, {"name": name, "status": "created", "version": version, "content_sha256": sha,
                         "recordings": table.num_rows, "excluded": dict(sorted(counts.items())),
                         "model_use": gate_policy.model_use,
                         "seconds": round(time.perf_counter() - t0, 2)}, signatures_dir, signing_key)


def uncalibrated_admissions(cat: Catalog, name: str) -> dict[str, int]:
    """{stage: recordings} of release NAME admitted by a decision its model made with random weights
    (decisions.uncalibrated): such a release is a pipeline check, never a curated dataset."""
    return {r["stage"]: r["n"] for r in cat.query(
        "SELECT d.stage, count(DISTINCT i.recording_id) AS n FROM release_items i, "
        "unnest(map_values(CAST(i.admitted_by AS MAP(VARCHAR, BIGINT)))) AS a(id) "      # {stage: decision_id}
        "JOIN decisions d ON d.decision_id = a.id "
        "WHERE i.release_name = ? AND d.uncalibrated GROUP BY 1 ORDER BY 1", [name])}


def _signed(cat: Catalog, out: dict[str, Any], signatures_dir, signing_key) -> dict[str, Any]:
    unc = uncalibrated_admissions(cat, out["name"])
    if unc:
        out["uncalibrated_admissions"] = unc
        log.warning("release %s: %s recording(s) admitted by random-weight (uncalibrated) decisions (%s): a "
                    "pipeline check, not a curated dataset", out["name"], max(unc.values()),
                    ", ".join(f"{k} {v}" for k, v in unc.items()))
    if signatures_dir is None:
        return out
    from .release_signature import after_create
    return after_create(cat, out, signatures_dir, signing_key)


def get_release(cat: Catalog, name: str) -> dict[str, Any]:
    rows = cat.query("SELECT * FROM releases WHERE name = ?", [check_name(name)])
    if not rows:
        known = [r["name"] for r in cat.query("SELECT name FROM releases ORDER BY version")]
        raise ReleaseError(f"no release named {name!r} (known: {', '.join(known) or 'none'})")
    rel = rows[0]
    rel["exclusions"] = json.loads(rel["exclusions"]) if rel.get("exclusions") else {}
    return rel


def latest_release(cat: Catalog) -> dict[str, Any] | None:
    rows = cat.query("SELECT name FROM releases ORDER BY version DESC NULLS LAST, created_at DESC LIMIT 1")
    return get_release(cat, rows[0]["name"]) if rows else None


def list_releases(cat: Catalog) -> list[dict[str, Any]]:
    return cat.query("SELECT name, version, content_sha256, n_recordings, created_at FROM releases "
                     "ORDER BY version NULLS FIRST, created_at")


def release_items(cat: Catalog, name: str) -> dict[str, dict[str, Any]]:
    get_release(cat, name)
    fields = ", ".join(policy.ITEM_FIELDS)
    return {r["recording_id"]: r for r in cat.query(
        f"SELECT {fields} FROM release_items WHERE release_name = ? ORDER BY recording_id", [name])}


def diff(cat: Catalog, old: str, new: str) -> dict[str, Any]:
    a, b = release_items(cat, old), release_items(cat, new)
    excl = {r["recording_id"]: (r["reason"], r["detail"] or "") for r in cat.query(
        "SELECT recording_id, reason, detail FROM release_exclusions WHERE release_name = ?", [new])}
    out = policy.diff_releases(a, b, excl)
    out.update(old=old, new=new)
    return out


def takedown_impact(cat: Catalog, recording_id: str, *, shards_root: str | pathlib.Path | None = None,
                    checkpoint_roots: Sequence[str | pathlib.Path] = ()) -> dict[str, Any]:
    """Every release, shard and checkpoint manifest that contained ``recording_id``."""
    releases = [r["release_name"] for r in cat.query(
        "SELECT i.release_name FROM release_items i JOIN releases r ON r.name = i.release_name "
        "WHERE i.recording_id = ? ORDER BY r.version", [recording_id])]
    shards: list[dict[str, Any]] = []
    if shards_root and pathlib.Path(shards_root).is_dir():
        for index in sorted(pathlib.Path(shards_root).glob("*/index.parquet")):
            shards += [{"build": index.parent.name, **r} for r in cat.query(
                "SELECT shard, count(*) AS samples FROM read_parquet(?) WHERE recording_id = ? GROUP BY shard "
                "ORDER BY shard", [str(index), recording_id])]
    manifests = []
    for root in checkpoint_roots:
        for man in sorted(pathlib.Path(root).rglob("*.manifest.json")):
            try:
                data = json.loads(man.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ReleaseError(f"{man}: unreadable manifest ({exc})") from None
            # a DiT's weights hold its autoencoder, so the recordings that trained it count too
            recs = list(data.get("recordings", [])) + list((data.get("autoencoder") or {}).get("recordings", []))
            if any(r.get("recording_id") == recording_id for r in recs):
                manifests.append({"manifest": str(man), "checkpoint": str(man).replace(".manifest.json", ".safetensors"),
                                  "stage": data.get("stage"), "step": data.get("step"),
                                  "release": (data.get("shards_build") or {}).get("release")})
    takedowns = cat.query("SELECT takedown_id, reason, requested_by, received_at, status FROM takedowns "
                          "WHERE recording_id = ? ORDER BY takedown_id", [recording_id])
    return {"recording_id": recording_id, "takedowns": takedowns, "releases": releases, "shards": shards,
            "checkpoints": manifests}
