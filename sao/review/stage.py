"""The copyright review stages.

Which review a recording gets is its source's (``Source.copyright_review``, sao/sources):

* "content" (Freesound, a local folder): items the music screen flagged go to the
  content-detection service (submit, then poll); its verdict clears or flags them. Items the
  screen passed need no review and get a ``copyright_review`` pass saying why.
* "catalogue" (FMA): every admitted track is matched against the copyrighted-recordings
  catalogue; no potential match -> pass; a potential match -> ``review`` decision and a
  human-review item.
Service errors and timeouts leave items pending; the next run picks them up.

Every review decision names what it judged: the audio (``details.content_sha256``, the content
the music screen read) or the metadata and catalogue (``details.checked``). New audio, or a new
title, artist or catalogue, is reviewed again; the catalogue's views do not let a decision about
other audio count.
"""
from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

from ..catalog import Catalog, CatalogError, Decision
from ..fsutil import UnsafePathError, safe_join
from ..log import progress
from ..sources import names_where
from . import queue
from .catalogue_match import catalogue_version, find_matches, require_catalogue
from .detection_client import DetectionClient, DetectionError

log = logging.getLogger(__name__)


def _latest(cat: Catalog, stage: str) -> dict[str, dict]:
    return cat.latest_decision_map(stage)


def reviewed_sources(kind: str) -> list[str]:
    """The sources whose copyright review is ``kind`` ("content" or "catalogue")."""
    return names_where(copyright_review=kind)


_IN_SOURCES = "source IN (SELECT unnest(?::VARCHAR[]))"


def _admitted(cat: Catalog, sources: list[str], view: str = "gate_admitted") -> list[str]:
    """Ids of ``sources`` in one of the catalogue's admission views (``gate_admitted``: the
    metadata review; ``playable``: the content review, which needs decoded audio)."""
    if view not in ("gate_admitted", "playable"):
        raise ValueError(f"unknown admission view {view!r}")
    return [r[0] for r in cat.con.execute(f"SELECT recording_id FROM {view} WHERE {_IN_SOURCES} "  # noqa: S608
                                          "ORDER BY recording_id", [list(sources)]).fetchall()]


def _details(d: dict | None) -> dict:
    det = (d or {}).get("details")
    return det if isinstance(det, dict) else {}


def _binding(d: dict | None) -> tuple:
    """What makes two review decisions the same: verdict, the audio or metadata judged, and the
    entry or screen decision behind it."""
    det = _details(d)
    return ((d or {}).get("verdict"), det.get("content_sha256"), det.get("checked"), det.get("review_id"),
            det.get("music_screen_decision"))


def _pending_decision(rid: str, kind: str, reason: str, entry_id: int, bound: dict, config_hash: str,
                      **extra: Any) -> Decision:
    """The ``review`` decision of an entry still waiting, naming the entry and what it judges."""
    return Decision(rid, queue.STAGE, "review", reason, config_hash=config_hash,
                    details={"review_id": entry_id, "kind": kind, **bound, **extra})


def _current_content(cat: Catalog) -> dict[str, str]:
    """{recording id: content sha256 stored now} for playable recordings of the content-reviewed sources."""
    return {r[0]: r[1] for r in cat.con.execute(
        f"SELECT p.recording_id, r.content_sha256 FROM playable p JOIN recordings r USING (recording_id) "  # noqa: S608
        f"WHERE p.{_IN_SOURCES} AND r.content_sha256 IS NOT NULL ORDER BY p.recording_id",
        [reviewed_sources("content")]).fetchall()}


def _live(cat: Catalog, status: str) -> list[dict]:
    """Content-detection entries of ``status`` about the audio their recording holds now (an entry
    about replaced audio waits, in case that audio comes back, but is neither sent nor counted)."""
    sha = {r[0]: r[1] for r in cat.con.execute(f"SELECT recording_id, content_sha256 FROM recordings "  # noqa: S608
                                               f"WHERE {_IN_SOURCES}", [reviewed_sources("content")]).fetchall()}
    return [i for i in queue.items(cat, status, queue.CONTENT)
            if sha.get(i["recording_id"]) and queue.binding(i).get("content_sha256") == sha[i["recording_id"]]]


def _service_verdict(res: Any) -> tuple[str, bool, str]:
    """(status, matched, note) from the service's answer, checked field by field: it is outside input."""
    if not isinstance(res, dict):
        raise DetectionError(f"result is a {type(res).__name__}, not an object")
    status = res.get("status")
    if status == "processing":
        return status, False, ""
    if status == "error":
        err = res.get("error")
        return status, False, (err if isinstance(err, str) and err else "service error")[:300]
    if status != "done":
        raise DetectionError(f"result has unknown status {str(status)[:40]!r}")
    matches, verdict = res.get("matches", []), res.get("verdict")
    if not isinstance(matches, list) or not all(isinstance(m, dict) and isinstance(m.get("reference"), str)
                                                for m in matches):
        raise DetectionError("result's matches are not a list of objects naming a reference")
    if verdict not in ("match", "clear") or (verdict == "clear" and matches):
        raise DetectionError(f"result has verdict {str(verdict)[:40]!r} with {len(matches)} match(es)")
    if verdict == "clear":
        return status, False, "no match in the reference catalogue"
    refs = ", ".join(m["reference"][:200] for m in matches) or "an unnamed reference"
    return status, True, f"matched {refs}"


def run_content_review(cat: Catalog, client: DetectionClient | None, *, audio_store: str | pathlib.Path,
                       config_hash: str, wait_seconds: float = 10.0, poll_interval: float = 0.5) -> dict[str, Any]:
    """Review what the music screen decided about the audio each recording holds now: a screen
    decision about other audio does not count (the screen runs again for new content)."""
    screen = _latest(cat, "music_screen")
    review = _latest(cat, queue.STAGE)
    out = {"not_music_passed": 0, "queued": 0, "submitted": 0, "cleared": 0, "flagged": 0, "pending": 0, "errors": 0}
    decisions, entries = [], queue.by_subject(cat, queue.CONTENT)
    for rid, sha in _current_content(cat).items():
        s = screen.get(rid)
        if s is None or s["verdict"] not in ("pass", "flag") or _details(s).get("content_sha256") != sha:
            continue                                   # this audio is not screened yet: no review decision
        bound = {"content_sha256": sha}
        entry = entries.get((rid, sha))
        if entry is None and s["verdict"] == "pass":
            want = Decision(rid, queue.STAGE, "pass", "not-music: the music screen found no music, no copyright "
                            "review needed", config_hash=config_hash,
                            details={"music_screen_decision": s["decision_id"], **bound})
        else:   # flagged, or passed by a later screen after a flag: the content detection of this audio decides
            if entry is None:
                entry, added = queue.ensure(cat, rid, queue.CONTENT, sha, {**bound, "music_screen": s["reason"]})
                out["queued"] += added
            want = (queue.verdict_decision(entry, config_hash=config_hash) if entry["status"] in ("cleared", "flagged")
                    else _pending_decision(rid, queue.CONTENT, "queued for content detection", entry["review_id"],
                                           bound, config_hash))
        if _binding(review.get(rid)) != _binding({"verdict": want.verdict, "details": want.details}):
            decisions.append(want)
            if "music_screen_decision" in want.details:
                out["not_music_passed"] += 1
    cat.add_decisions(decisions)
    if client is None:
        out["pending"] = len(_live(cat, "pending"))
        return out
    paths = {r["recording_id"]: r["audio_path"] for r in cat.query(
        f"SELECT recording_id, audio_path FROM recordings WHERE {_IN_SOURCES}",  # noqa: S608
        [reviewed_sources("content")])}
    for item in progress(_live(cat, "pending"), desc="submit", unit="file"):
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
        for item in _live(cat, "submitted"):
            try:
                res = client.result(item["service_ref"])
            except DetectionError as exc:      # transport: stays submitted, asked again
                queue.mark_error(cat, item["review_id"], str(exc))
                out["errors"] += 1
                continue
            try:
                status, match, note = _service_verdict(res)
                if status == "done":
                    queue.decide(cat, item["review_id"], cleared=not match, by=f"service:{client.name}", note=note,
                                 evidence=res, config_hash=config_hash)
                    out["flagged" if match else "cleared"] += 1
            except (DetectionError, CatalogError) as exc:
                status, note = "error", str(exc)
            if status == "error":              # a failed or unreadable verdict: sent again on the next run
                queue.mark_error(cat, item["review_id"], note)
                cat.con.execute("UPDATE review_queue SET status = 'pending' WHERE review_id = ?", [item["review_id"]])
                out["errors"] += 1
                log.warning("%s: content detection gave no verdict, stays pending: %s", item["recording_id"], note)
        if not _live(cat, "submitted") or time.monotonic() > deadline:
            break
        time.sleep(poll_interval)
    out["pending"] = len(_live(cat, "pending")) + len(_live(cat, "submitted"))
    return out


def run_catalogue_review(cat: Catalog, *, config_hash: str, title_min: float = 90.0) -> dict[str, Any]:
    """Match the title and artist of each admitted track of the catalogue-reviewed sources (FMA)
    against the copyright catalogue. A track is checked again whenever its title or artist, the
    catalogue or the threshold differ from what its latest review decision checked (``details.checked``). A human's flag is not undone by a new
    title: the track goes back to a human instead. (These decisions are about metadata: they name
    no audio content.)"""
    catalogue = cat.query("SELECT entry_id, artist, title, album, year, artist_norm, title_norm "
                          "FROM copyright_catalogue ORDER BY entry_id")
    titles = [r["title_norm"] for r in catalogue]
    version = catalogue_version(catalogue)
    review = _latest(cat, queue.STAGE)
    sources = reviewed_sources("catalogue")
    recs = {r["recording_id"]: r for r in cat.query(
        f"SELECT recording_id, title, author FROM recordings WHERE {_IN_SOURCES}", [sources])}  # noqa: S608
    checked = {rid: {**queue.metadata(rec), "catalogue": version, "title_min": float(title_min)}
               for rid, rec in recs.items()}
    out = {"checked": 0, "no_match": 0, "to_human_review": 0, "catalogue_rows": len(catalogue)}
    todo = [rid for rid in _admitted(cat, sources) if _details(review.get(rid)).get("checked") != checked[rid]]
    require_catalogue(len(catalogue), len(todo))
    flagged = {i["recording_id"]: i for i in queue.items(cat, "flagged", queue.METADATA)}
    decisions, entries = [], queue.by_subject(cat, queue.METADATA)
    for rid in todo:
        meta, bound = checked[rid], {"checked": checked[rid]}
        out["checked"] += 1
        matches = find_matches(meta["title"], meta["artist"], catalogue, titles, title_min=title_min)
        if not matches and rid not in flagged:
            out["no_match"] += 1
            decisions.append(Decision(rid, queue.STAGE, "pass", f"no-catalogue-match: title >= {title_min:g} "
                                      f"against {len(catalogue)} copyrighted recordings", config_hash=config_hash,
                                      details=bound))
            continue
        key = queue.metadata_subject(meta, matches)
        entry = entries.get((rid, key))
        if entry is None:
            earlier = {"flagged_before": flagged[rid]["review_id"]} if rid in flagged else {}
            entry, added = queue.ensure(cat, rid, queue.METADATA, key, {"matches": matches, **bound, **earlier})
            out["to_human_review"] += added
        if entry["status"] in ("cleared", "flagged"):   # the same question, already answered
            decisions.append(queue.verdict_decision(entry, config_hash=config_hash, bound=bound,
                                                    remark=f" (re-checked against catalogue {version[:12]})"))
        elif matches:
            best = matches[0]
            decisions.append(_pending_decision(
                rid, queue.METADATA, f"potential-match: '{best['title']}' by {best['artist']} (title "
                f"{best['title_score']:g}, artist {best['artist_score']:g}); awaiting human review",
                entry["review_id"], bound, config_hash, matches=matches))
        else:
            decisions.append(_pending_decision(
                rid, queue.METADATA, f"review {flagged[rid]['review_id']} flagged this track; what it checked changed "
                f"since (now '{meta['title']}' by {meta['artist']}); awaiting human review", entry["review_id"], bound,
                config_hash))
    cat.add_decisions(decisions)
    out["pending_human_review"] = len(queue.items(cat, "pending", queue.METADATA))
    return out


run_fma_review = run_catalogue_review      # its name before sources declared their review


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
            lines.append(f"  service match: {m.get('reference')}  score {m.get('score')}  "
                         f"at {m.get('offset_seconds')} s")
    if item["decided_by"]:
        lines.append(f"decided by {item['decided_by']} at {item['decided_at']:%Y-%m-%d %H:%M}: {item['note']}")
    if why := queue.stale(cat, item):
        lines.append(f"obsolete:  {why}")
    if ev.get("flagged_before"):
        lines.append(f"earlier:   review {ev['flagged_before']} flagged this track under other metadata")
    if item["last_error"]:
        lines.append(f"last error: {item['last_error']} (attempts {item['attempts']})")
    return "\n".join(lines)
