"""The copyright review stages.

* Freesound: items the music screen flagged go to the content-detection service (submit,
  then poll); its verdict clears or flags them. Items the screen passed need no review and
  get a ``copyright_review`` pass saying why.
* FMA: every admitted track is matched against the copyrighted-recordings catalogue; no
  potential match -> pass; a potential match -> ``review`` decision and a human-review item.
Service errors and timeouts leave items pending; the next run picks them up.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

from ..catalog import Catalog, Decision
from ..fsutil import UnsafePathError, safe_join
from ..log import progress
from . import queue
from .catalogue_match import find_matches, require_catalogue
from .detection_client import DetectionClient, DetectionError

log = logging.getLogger(__name__)


def _latest(cat: Catalog, stage: str) -> dict[str, dict]:
    return cat.latest_decision_map(stage)


def _admitted(cat: Catalog, source: str, view: str = "gate_admitted") -> list[str]:
    """Ids of ``source`` in one of the catalogue's admission views (``gate_admitted``: the
    metadata review; ``playable``: the content review, which needs decoded audio)."""
    if view not in ("gate_admitted", "playable"):
        raise ValueError(f"unknown admission view {view!r}")
    return [r[0] for r in cat.con.execute(f"SELECT recording_id FROM {view} WHERE source = ? "  # noqa: S608
                                          "ORDER BY recording_id", [source]).fetchall()]


def run_content_review(cat: Catalog, client: DetectionClient | None, *, audio_store: str | pathlib.Path,
                       config_hash: str, wait_seconds: float = 10.0, poll_interval: float = 0.5) -> dict[str, Any]:
    screen = _latest(cat, "music_screen")
    review = _latest(cat, queue.STAGE)
    out = {"not_music_passed": 0, "queued": 0, "submitted": 0, "cleared": 0, "flagged": 0, "pending": 0, "errors": 0}
    passes = []
    for rid in _admitted(cat, "freesound", "playable"):
        s = screen.get(rid)
        if s is None:
            continue                                   # not screened yet: no review decision either
        prev = review.get(rid) or {}
        if s["verdict"] == "pass":
            if (prev.get("details") or {}).get("music_screen_decision") == s["decision_id"]:
                continue                               # already passed for this screen decision
            passes.append(Decision(rid, queue.STAGE, "pass", "not-music: the music screen found no music, "
                                   "no copyright review needed", config_hash=config_hash,
                                   details={"music_screen_decision": s["decision_id"]}))
        elif s["verdict"] == "flag" and queue.enqueue(cat, rid, "content-detection",
                                                      {"music_screen": s["reason"]}) is not None:
            out["queued"] += 1
            cat.add_decisions([Decision(rid, queue.STAGE, "review", "queued for content detection",
                                        config_hash=config_hash)])
    out["not_music_passed"] = cat.add_decisions(passes)
    if client is None:
        out["pending"] = len(queue.items(cat, "pending", "content-detection"))
        return out
    paths = {r["recording_id"]: r["audio_path"] for r in cat.query(
        "SELECT recording_id, audio_path FROM recordings WHERE source = 'freesound'")}
    for item in progress(queue.items(cat, "pending", "content-detection"), desc="submit", unit="file"):
        try:
            ref = client.submit(safe_join(audio_store, paths[item["recording_id"]], what="audio_path"))
        except (DetectionError, OSError, KeyError, UnsafePathError) as exc:
            queue.mark_error(cat, item["review_id"], str(exc))
            out["errors"] += 1
            log.warning("%s: content detection submit failed, stays pending: %s", item["recording_id"], exc)
            continue
        queue.mark_submitted(cat, item["review_id"], client.name, ref)
        out["submitted"] += 1
    deadline = time.monotonic() + wait_seconds
    while True:
        waiting = queue.items(cat, "submitted", "content-detection")
        for item in waiting:
            try:
                res = client.result(item["service_ref"])
            except DetectionError as exc:
                queue.mark_error(cat, item["review_id"], str(exc))
                out["errors"] += 1
                continue
            if res.get("status") == "done":
                match = res.get("verdict") == "match"
                refs = ", ".join(m["reference"] for m in res.get("matches", []))
                queue.decide(cat, item["review_id"], cleared=not match, by=f"service:{client.name}",
                             note=(f"matched {refs}" if match else "no match in the reference catalogue"),
                             evidence=res, config_hash=config_hash)
                out["flagged" if match else "cleared"] += 1
            elif res.get("status") == "error":
                queue.mark_error(cat, item["review_id"], res.get("error", "service error"))
                cat.con.execute("UPDATE review_queue SET status = 'pending' WHERE review_id = ?", [item["review_id"]])
                out["errors"] += 1
        if not queue.items(cat, "submitted", "content-detection") or time.monotonic() > deadline:
            break
        time.sleep(poll_interval)
    out["pending"] = len(queue.items(cat, "pending", "content-detection")) + \
        len(queue.items(cat, "submitted", "content-detection"))
    return out


def run_fma_review(cat: Catalog, *, config_hash: str, title_min: float = 90.0) -> dict[str, Any]:
    catalogue = cat.query("SELECT entry_id, artist, title, album, year, artist_norm, title_norm "
                          "FROM copyright_catalogue ORDER BY entry_id")
    titles = [r["title_norm"] for r in catalogue]
    review = _latest(cat, queue.STAGE)
    recs = {r["recording_id"]: r for r in cat.query(
        "SELECT recording_id, title, author, json_extract_string(extra, '$.album') AS album FROM recordings "
        "WHERE source = 'fma'")}
    out = {"checked": 0, "no_match": 0, "to_human_review": 0, "catalogue_rows": len(catalogue)}
    decisions = []
    todo = [rid for rid in _admitted(cat, "fma") if rid not in review]   # not yet matched or decided by a human
    require_catalogue(len(catalogue), len(todo))
    for rid in todo:
        rec = recs[rid]
        out["checked"] += 1
        matches = find_matches(rec["title"] or "", rec["author"] or "", catalogue, titles, title_min=title_min)
        if not matches:
            out["no_match"] += 1
            decisions.append(Decision(rid, queue.STAGE, "pass", f"no-catalogue-match: title >= {title_min:g} "
                                      f"against {len(catalogue)} copyrighted recordings", config_hash=config_hash))
        else:
            out["to_human_review"] += 1
            queue.enqueue(cat, rid, "metadata-match", {"matches": matches})
            best = matches[0]
            decisions.append(Decision(rid, queue.STAGE, "review", f"potential-match: '{best['title']}' by "
                                      f"{best['artist']} (title {best['title_score']:g}, artist "
                                      f"{best['artist_score']:g}); awaiting human review", config_hash=config_hash,
                                      details={"matches": matches}))
    cat.add_decisions(decisions)
    out["pending_human_review"] = len(queue.items(cat, "pending", "metadata-match"))
    return out


def describe_item(cat: Catalog, review_id: int, audio_store: str | pathlib.Path) -> str:
    item = queue.get(cat, review_id)
    rec = cat.get_recording(item["recording_id"]) or {}
    lines = [f"review {item['review_id']}  {item['kind']}  status: {item['status']}",
             f"recording: {item['recording_id']}  \"{rec.get('title')}\" by {rec.get('author')}",
             f"license:   {rec.get('license_canonical')}  {rec.get('page_url') or ''}",
             f"audio:     {pathlib.Path(audio_store) / rec['audio_path'] if rec.get('audio_path') else '(none)'}"]
    ev = json.loads(item["evidence"]) if item["evidence"] else {}
    for m in ev.get("matches", []):
        if "title_score" in m:
            lines.append(f"  catalogue: {m['artist']} - {m['title']} ({m.get('album') or '-'}, {m.get('year') or '-'})"
                         f"  title {m['title_score']:g}  artist {m['artist_score']:g}")
        else:
            lines.append(f"  service match: {m['reference']}  score {m['score']}  at {m['offset_seconds']} s")
    if item["decided_by"]:
        lines.append(f"decided by {item['decided_by']} at {item['decided_at']:%Y-%m-%d %H:%M}: {item['note']}")
    if item["last_error"]:
        lines.append(f"last error: {item['last_error']} (attempts {item['attempts']})")
    return "\n".join(lines)
