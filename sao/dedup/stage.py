"""The embed and dedup stages.

embed: LAION-CLAP embeddings of admitted recordings not yet embedded under this model
signature (or reused from Freesound's ``sim_laion_clap`` when configured to, and counted).
dedup: exact copies (same content sha256 or same source md5), then near replicas (cosine >=
threshold); one member per group kept by ``keep.keep_order``; the others get a ``dedup``
reject naming the kept one. Groups are stored in ``duplicate_groups`` (replaced each run).
"""
from __future__ import annotations

import collections
import datetime as dt
import json
import logging
from typing import Any

import numpy as np

from ..catalog import Catalog, Decision
from ..fsutil import UnsafePathError, safe_join
from .grouping import exact_edges, group_components, near_duplicate_edges
from .keep import pick_kept
from .store import append_embeddings, load_embeddings

log = logging.getLogger(__name__)
STAGE = "dedup"
NO_MODEL = "none (exact copies only)"      # the model_name of decisions made without any CLAP model


def admitted(cat: Catalog) -> list[dict[str, Any]]:
    """Recordings the catalogue's ``playable`` view offers (gate-admitted, well-formed, decoded
    stored audio, not taken down), with the probed sample rate, channels and duration."""
    return cat.query(
        "SELECT r.recording_id, r.source, r.title, r.author, r.page_url, r.license_canonical, "
        "  r.audio_sample_rate AS sample_rate, r.audio_channels AS channels, r.audio_duration AS duration, "
        "  r.created_at, r.first_seen, r.md5, r.content_sha256, r.audio_path, "
        "  json_extract(r.extra, '$.sim_laion_clap') AS sim, json_extract(r.extra, '$.attribution') AS attribution "
        "FROM playable p JOIN recordings r USING (recording_id) ORDER BY r.recording_id")


def plan_embed(cat: Catalog, signature: str, *, embeddings_dir, audio_store, reuse_freesound_sim: bool = False
               ) -> tuple[dict[str, str], dict[str, np.ndarray], dict[str, str], int]:
    """(paths to embed -> content sha, vectors reused from Freesound, origins, already stored)."""
    import json
    have = load_embeddings(embeddings_dir, signature)
    todo, reused, origin = {}, {}, {}
    for r in admitted(cat):
        sha = r["content_sha256"]
        if not sha or sha in have or sha in reused or sha in todo.values():
            continue
        if reuse_freesound_sim and r["sim"]:
            v = np.asarray(json.loads(r["sim"]), np.float32)
            if v.shape == (512,):
                reused[sha] = v / max(np.linalg.norm(v), 1e-12)
                origin[sha] = "freesound-sim_laion_clap"
                continue
        try:                              # a stored path is still checked: it must stay in the store
            todo[str(safe_join(audio_store, r["audio_path"], what=f"{r['recording_id']} audio_path"))] = sha
        except UnsafePathError as exc:
            log.error("%s: not embedded: %s", r["recording_id"], exc)
    return todo, reused, origin, len(have)


def record_undecodable(cat: Catalog, failures: dict[str, tuple[str, str]], *, config_hash: str
                       ) -> tuple[list[dict[str, Any]], int]:
    """{path: (content sha256, error)} of files the embedder could not decode -> one entry per
    recording holding that content (named, with the reason) and a ``decode`` reject for each, so
    the admission rule leaves it out. A recording whose latest decode decision already rejects
    this content gets no second one. Returns (entries, decisions written)."""
    from ..audio.stage import decode_decisions
    latest = cat.latest_decision_map("decode")
    named, results = [], []
    for path, (sha, error) in sorted(failures.items()):
        for (rid,) in cat.con.execute("SELECT recording_id FROM recordings WHERE content_sha256 = ? "
                                      "AND audio_path IS NOT NULL ORDER BY recording_id", [sha]).fetchall():
            named.append({"recording_id": rid, "path": path, "error": error})
            prev = latest.get(rid) or {}
            if prev.get("verdict") == "reject" and (prev.get("details") or {}).get("content_sha256") in (sha, None):
                continue
            results.append({"recording_id": rid, "content_sha256": sha, "ok": False,
                            "error": f"{error} (while embedding)"})
    decisions = decode_decisions(results, config_hash=config_hash)
    return named, cat.add_decisions(decisions) if decisions else 0


def run_embed(cat: Catalog, cm, *, embeddings_dir, audio_store, batch_size: int = 8, max_windows: int = 4,
              reuse_freesound_sim: bool = False, config_hash: str = "") -> dict[str, Any]:
    import time

    from ..analysis.clap import MODEL_NAME, embed_files
    t0 = time.perf_counter()
    todo, new, origin, stored = plan_embed(cat, cm.signature, embeddings_dir=embeddings_dir, audio_store=audio_store,
                                           reuse_freesound_sim=reuse_freesound_sim)
    reused = len(new)
    failures: dict[str, tuple[str, str]] = {}
    emb = embed_files(cm, list(todo), batch_size=batch_size, max_windows=max_windows,
                      on_error=lambda p, e: failures.__setitem__(p, (todo[p], e)))
    for p, v in emb.items():
        new[todo[p]] = v
    append_embeddings(embeddings_dir, cm.signature, new, origin, f"{MODEL_NAME} {cm.amodel}", cm.checkpoint_sha256)
    # an undecodable file is named and rejected, so it can never be admitted unseen
    undecodable, written = record_undecodable(cat, failures, config_hash=config_hash)
    return {"embedded": len(emb), "reused_from_freesound": reused, "already_stored": stored,
            "decode_errors": len(failures), "undecodable": undecodable, "decode_rejects_written": written,
            "uncalibrated": cm.uncalibrated, "signature": cm.signature,
            "files_per_s": round(len(emb) / (time.perf_counter() - t0), 2)}


def run_dedup(cat: Catalog, *, embeddings_dir, signature: str | None, threshold: float, config_hash: str,
              model_name: str | None = None, checkpoint_sha256: str | None = None, uncalibrated: bool = False
              ) -> dict[str, Any]:
    recs = admitted(cat)
    n = len(recs)
    e_sha = exact_edges([r["content_sha256"] for r in recs])
    e_md5 = exact_edges([r["md5"] for r in recs])
    emb_store = load_embeddings(embeddings_dir, signature) if signature else {}
    idx = [i for i, r in enumerate(recs) if r["content_sha256"] in emb_store]
    near = np.zeros((0, 2), np.int64)
    vectors, search = {}, {}
    if idx:
        x = np.stack([emb_store[recs[i]["content_sha256"]] for i in idx])
        pairs, _, search = near_duplicate_edges(x, threshold)
        near = np.asarray(idx, np.int64)[pairs] if len(pairs) else near
        vectors = {i: x[k] for k, i in enumerate(idx)}
    exact_set = {tuple(sorted(e)) for e in np.concatenate([e_sha, e_md5]).tolist()}
    near_found = len(near)
    # near replicas count only from a calibrated model: a named checkpoint, not random weights
    calibrated = bool(signature) and bool(checkpoint_sha256) and not uncalibrated
    if not calibrated:
        # random-weight embeddings put everything close together: their links are reported,
        # never used to exclude anything
        near = np.zeros((0, 2), np.int64)
    unchecked = None if calibrated else ("CLAP uncalibrated" if signature else "no CLAP model")
    # every decision names what made it: the model, its checkpoint (or uncalibrated) and the threshold
    made_by = {"model_name": model_name or NO_MODEL, "checkpoint_sha256": checkpoint_sha256 if calibrated else None,
               "threshold": float(threshold), "uncalibrated": not calibrated}

    def unchanged(rid: str, verdict: str, reason: str, sha: str | None) -> bool:
        p = previous.get(rid)
        # a decision names the audio it judged: new content under the same recording is decided again
        return p is not None and (p["verdict"], p["reason"]) == (verdict, reason) and all(
            p[k] == v for k, v in made_by.items()) and json.loads(p["details"] or "{}").get("content_sha256") == sha
    res = group_components(n, e_sha, e_md5, near)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows, decisions = [], []
    previous = {r["recording_id"]: r for r in cat.latest_decisions(STAGE)}
    grouped = set()
    per_source = collections.Counter()
    tag = f" (near-replicas unchecked: {unchecked})" if unchecked else ""
    for members in res.groups:
        group = [recs[i] for i in members]
        kept = pick_kept(group)
        ki = members[group.index(kept)]
        for i, r in zip(members, group):
            grouped.add(i)
            sim = float(vectors[i] @ vectors[ki]) if i in vectors and ki in vectors else None
            link = "exact" if (min(i, ki), max(i, ki)) in exact_set or r["content_sha256"] == kept["content_sha256"] \
                else "near"
            rows.append([kept["recording_id"], r["recording_id"], r is kept, link, sim, now])
            if r is kept:
                reason = f"kept: representative of {len(members)} repeated recordings{tag}"
                verdict = "pass"
            else:
                per_source[r["source"]] += 1
                what = "identical audio" if link == "exact" else f"cosine {sim:.3f} >= {threshold:g}"
                reason = f"duplicate-of: {kept['recording_id']} ({what})"    # a fact, whatever the model
                verdict = "reject"
            if not unchanged(r["recording_id"], verdict, reason, r["content_sha256"]):
                decisions.append(Decision(r["recording_id"], STAGE, verdict, reason, config_hash=config_hash,
                                          **made_by, details={"group": kept["recording_id"], "size": len(members),
                                                              "content_sha256": r["content_sha256"]}))
    for i, r in enumerate(recs):
        if i not in grouped:
            why = unchecked or (None if r["content_sha256"] in emb_store else "not embedded")
            reason = f"unique-exact-only (near-replicas unchecked: {why})" if why \
                else "unique: no repeated recording found"
            if not unchanged(r["recording_id"], "pass", reason, r["content_sha256"]):
                decisions.append(Decision(r["recording_id"], STAGE, "pass", reason, config_hash=config_hash,
                                          **made_by, details={"content_sha256": r["content_sha256"]}))
    import pyarrow as pa
    cols = ["group_id", "recording_id", "kept", "link", "similarity", "run_at"]
    groups = pa.table({c: pa.array([r[i] for r in rows], t) for i, (c, t) in enumerate(zip(cols, [
        pa.string(), pa.string(), pa.bool_(), pa.string(), pa.float64(), pa.timestamp("us")]))})
    with cat.transaction():
        cat.con.execute("DELETE FROM duplicate_groups")
        if rows:
            cat.con.register("_sao_groups", groups)
            try:
                cat.con.execute("INSERT INTO duplicate_groups SELECT * FROM _sao_groups")
            finally:
                cat.con.unregister("_sao_groups")
        cat.add_decisions(decisions)
    return {"recordings": n, "embedded": len(idx), "groups": len(res.groups),
            "repeated_excluded": dict(per_source), "exact_links": len(e_sha) + len(e_md5), "near_links": len(near),
            "near_links_not_applied_uncalibrated": near_found if not calibrated else 0,
            "near_replicas_unchecked": unchecked or "", "model_name": made_by["model_name"],
            "threshold": threshold, "decisions_written": len(decisions),
            "near_search": {k: search[k] for k in ("index", "nlist", "nprobe", "seconds") if k in search}}
