"""The decode stage: every stored file is read before anything may use it. Its duration,
sample rate and channels come from the file (``verify``), never from what a source's metadata
claims; a file that does not decode gets a ``decode`` reject, which the admission rule
(catalogue migration 8) turns into the exclusion reason ``corrupt`` before any screen, dedup,
shard or release can admit it. A decision names the content it checked (its sha256), so new
audio under the same recording is decoded again, and an unchanged rerun writes nothing.

plan (catalogue) -> compute (files only, any worker) -> store (catalogue), like the other stages.
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Sequence

from ..catalog import Catalog, Decision
from ..fsutil import UnsafePathError, safe_join
from ..log import progress
from .io import AudioDecodeError, verify

STAGE = "decode"


def plan_decode(cat: Catalog, audio_store: str | pathlib.Path) -> list[dict[str, Any]]:
    """Gate-admitted recordings whose stored content has no decode decision yet."""
    # not decoded (no decision for this content, or its probed facts were cleared) and not already
    # refused: the catalogue's recording_state decides which decisions still count
    rows = cat.query(
        "SELECT s.recording_id, s.content_sha256, r.audio_path FROM gate_admitted s JOIN recordings r "
        "USING (recording_id) WHERE s.has_audio AND s.content_sha256 IS NOT NULL AND NOT s.decoded "
        "AND NOT s.corrupt ORDER BY s.recording_id")
    out = []
    for r in rows:
        try:
            path = str(safe_join(audio_store, r["audio_path"], what=f"{r['recording_id']}: audio_path"))
        except UnsafePathError as exc:     # a stored path that leaves the store is never read: rejected
            path, r["unsafe"] = None, str(exc)
        out.append({"recording_id": r["recording_id"], "content_sha256": r["content_sha256"], "path": path,
                    **({"unsafe": r["unsafe"]} if "unsafe" in r else {})})
    return out


def decode_files(items: Sequence[dict[str, Any]], *, show_progress: bool = True) -> list[dict[str, Any]]:
    """Verify each file; one result per item: the probed facts or the error (no catalogue)."""
    out = []
    for it in progress(items, desc="decode", unit="file", disable=not show_progress):
        res = {"recording_id": it["recording_id"], "content_sha256": it["content_sha256"]}
        if it.get("unsafe"):
            out.append({**res, "ok": False, "error": it["unsafe"]})
            continue
        try:
            info = verify(it["path"])
            res.update(ok=True, duration=info.duration, sample_rate=info.sample_rate, channels=info.channels,
                       format=info.format, subtype=info.subtype)
        except AudioDecodeError as exc:
            res.update(ok=False, error=str(exc))
        except OSError as exc:               # unreadable file: the same outcome, named
            res.update(ok=False, error=f"{it['path']}: cannot read: {exc}")
        out.append(res)
    return out


def decode_decisions(results: Sequence[dict[str, Any]], *, config_hash: str) -> list[Decision]:
    """Pure: the catalogue decisions for ``decode_files`` results."""
    decisions = []
    for r in results:
        details = {"content_sha256": r["content_sha256"]}
        if r["ok"]:
            details.update({k: r[k] for k in ("duration", "sample_rate", "channels", "format", "subtype")})
            reason = f"decodes: {r['duration']:.2f} s, {r['sample_rate']} Hz, {r['channels']} ch ({r['format']})"
            decisions.append(Decision(r["recording_id"], STAGE, "pass", reason, config_hash=config_hash,
                                      details=details))
        else:
            decisions.append(Decision(r["recording_id"], STAGE, "reject", f"audio-corrupt: {r['error'][:400]}",
                                      config_hash=config_hash, details=details))
    return decisions


def store_decode(cat: Catalog, results: Sequence[dict[str, Any]], *, config_hash: str) -> dict[str, Any]:
    with cat.transaction():
        cat.add_decisions(decode_decisions(results, config_hash=config_hash))
        cat.set_probed([(r["recording_id"], r["content_sha256"], r["duration"], r["sample_rate"], r["channels"])
                        for r in results if r["ok"]])
    bad = {r["recording_id"]: r["error"] for r in results if not r["ok"]}
    return {"decoded": len(results) - len(bad), "rejected": len(bad), "errors": bad,
            "audio_seconds": round(sum(r["duration"] for r in results if r["ok"]), 1)}


def run_decode(cat: Catalog, *, audio_store: str | pathlib.Path, config_hash: str,
               show_progress: bool = True) -> dict[str, Any]:
    t0 = time.perf_counter()
    items = plan_decode(cat, audio_store)
    out = store_decode(cat, decode_files(items, show_progress=show_progress), config_hash=config_hash)
    seconds = time.perf_counter() - t0
    out.update(candidates=len(items), seconds=round(seconds, 2),
               audio_s_per_s=round(out["audio_seconds"] / seconds, 1) if seconds and items else 0.0)
    return out
