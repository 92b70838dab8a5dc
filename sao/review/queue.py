"""The review queue (catalogue table ``review_queue``) and the decisions it produces.

Statuses: ``pending`` (waiting: to be submitted to the detection service, or for a human),
``submitted`` (the service has it; no verdict yet), ``cleared`` and ``flagged`` (final).
Each final status writes a ``copyright_review`` decision (pass / reject) with who decided
and why; nothing is ever deleted, so every decision stays auditable.

Every entry is about one subject: a ``content-detection`` entry about one stored audio content
(its sha256), a ``metadata-match`` entry about one title and artist and the catalogue rows they
matched. The subject is the entry's key (with the recording and the kind), so new audio or new
metadata under the same recording is queued again, and every decision an entry produces names
what it judged (``details.content_sha256``, or ``details.checked`` for metadata).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from ..catalog import Catalog, CatalogError, Decision

STAGE = "copyright_review"
CONTENT, METADATA = "content-detection", "metadata-match"
KINDS = (CONTENT, METADATA)
# The evidence fields that say what an entry judged. review_queue has no column for them, so they
# live in its evidence JSON; decide() keeps them there and copies them into the decision.
_BINDING = {CONTENT: "content_sha256", METADATA: "checked"}
_OWN = ("subject", "content_sha256", "checked", "music_screen", "flagged_before")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def metadata(rec: dict[str, Any]) -> dict[str, str]:
    """The recording metadata the FMA review matches (the matcher reads title and artist only)."""
    return {"title": rec.get("title") or "", "artist": rec.get("author") or ""}


def metadata_subject(checked: dict[str, Any], matches: list[dict[str, Any]]) -> str:
    """Key of a metadata-match entry: the title and artist and the catalogue rows they matched. A new
    catalogue that matches the same rows asks the same question, so a human's answer still holds."""
    return hashlib.sha256(json.dumps({"title": checked["title"], "artist": checked["artist"],
                                      "entries": sorted(m["entry_id"] for m in matches)},
                                     sort_keys=True).encode()).hexdigest()


def _evidence(item: dict[str, Any]) -> dict[str, Any]:
    try:
        ev = json.loads(item["evidence"]) if item.get("evidence") else {}
    except (TypeError, ValueError):
        return {}
    return ev if isinstance(ev, dict) else {}


def subject(item: dict[str, Any]) -> str | None:
    s = _evidence(item).get("subject")
    return s if isinstance(s, str) else None


def binding(item: dict[str, Any]) -> dict[str, Any]:
    """{'content_sha256': ...} or {'checked': {...}}: what this entry judged ({} for entries made
    before reviews were bound to their subject)."""
    key = _BINDING.get(item["kind"])
    ev = _evidence(item)
    return {key: ev[key]} if key in ev and subject(item) else {}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise CatalogError(f"unknown review kind {kind!r} (one of {', '.join(KINDS)})")


def find(cat: Catalog, recording_id: str, kind: str, subject_key: str) -> dict[str, Any] | None:
    """The entry of this kind about this subject, if any (the newest, should there be several)."""
    _check_kind(kind)
    rows = cat.query("SELECT * FROM review_queue WHERE recording_id = ? AND kind = ? "
                     "AND json_extract_string(evidence, '$.subject') = ? ORDER BY review_id DESC LIMIT 1",
                     [recording_id, kind, subject_key])
    return rows[0] if rows else None


def by_subject(cat: Catalog, kind: str) -> dict[tuple[str, str], dict[str, Any]]:
    """{(recording id, subject): entry} for every entry of ``kind`` that names its subject (the newest
    per key): one read for a whole review run instead of one per recording."""
    _check_kind(kind)
    return {(i["recording_id"], subject(i)): i for i in items(cat, kind=kind) if subject(i)}


def enqueue(cat: Catalog, recording_id: str, kind: str, subject_key: str, evidence: dict[str, Any]) -> int | None:
    """Add an entry about ``subject_key`` unless one (open or decided) exists; ``evidence`` must hold
    the kind's binding (content_sha256 / checked), which every decision of the entry will carry."""
    _check_kind(kind)
    if not isinstance(subject_key, str) or not subject_key:
        raise CatalogError(f"review of {recording_id}: a {kind} entry needs the subject it judges")
    if _BINDING[kind] not in evidence:
        raise CatalogError(f"review of {recording_id}: a {kind} entry needs '{_BINDING[kind]}' in its evidence")
    if find(cat, recording_id, kind, subject_key) is not None:
        return None
    t = now()
    return cat.con.execute(
        "INSERT INTO review_queue (recording_id, kind, status, evidence, created_at, updated_at) "
        "VALUES (?, ?, 'pending', ?, ?, ?) RETURNING review_id",
        [recording_id, kind, json.dumps({**evidence, "subject": subject_key}), t, t]).fetchall()[0][0]


def ensure(cat: Catalog, recording_id: str, kind: str, subject_key: str,
           evidence: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the entry about ``subject_key``, whether it was added now)."""
    new = enqueue(cat, recording_id, kind, subject_key, evidence)
    entry = get(cat, new) if new is not None else find(cat, recording_id, kind, subject_key)
    if entry is None:
        raise CatalogError(f"review of {recording_id}: the {kind} entry about {subject_key} vanished")
    return entry, new is not None


def items(cat: Catalog, status: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    return cat.query("SELECT * FROM review_queue WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?) "
                     "ORDER BY review_id", [status, status, kind, kind])


def get(cat: Catalog, review_id: int) -> dict[str, Any]:
    rows = cat.query("SELECT * FROM review_queue WHERE review_id = ?", [int(review_id)])
    if not rows:
        raise CatalogError(f"review item {review_id} does not exist")
    return rows[0]


def stale(cat: Catalog, item: dict[str, Any]) -> str | None:
    """Why this entry no longer describes its recording (None while it does): its audio or its
    title/artist changed since it was queued, or it names no subject at all (an older entry)."""
    b = binding(item)
    if not b:
        return "it names neither the audio nor the metadata it judged (queued before reviews were bound)"
    rec = cat.get_recording(item["recording_id"]) or {}
    if item["kind"] == CONTENT:
        if rec.get("content_sha256") != b["content_sha256"]:
            return f"it judged audio {b['content_sha256']}, the recording now holds {rec.get('content_sha256')}"
        return None
    was = {k: (b["checked"] or {}).get(k) for k in ("title", "artist")}
    if metadata(rec) != was:
        return (f"it judged '{was['title']}' by {was['artist']}, the recording is now '{rec.get('title')}' "
                f"by {rec.get('author')}")
    return None


def mark_submitted(cat: Catalog, review_id: int, service: str, ref: str) -> None:
    t = now()
    cat.con.execute("UPDATE review_queue SET status = 'submitted', service = ?, service_ref = ?, submitted_at = ?, "
                    "updated_at = ?, attempts = attempts + 1, last_error = NULL WHERE review_id = ?",
                    [service, ref, t, t, review_id])


def mark_error(cat: Catalog, review_id: int, error: str) -> None:
    cat.con.execute("UPDATE review_queue SET updated_at = ?, attempts = attempts + 1, last_error = ? "
                    "WHERE review_id = ?", [now(), error[:500], review_id])


def verdict_decision(item: dict[str, Any], *, config_hash: str, bound: dict[str, Any] | None = None,
                     remark: str = "") -> Decision:
    """The decision a decided entry stands for, naming what it judged (``bound`` overrides that,
    e.g. the same question re-checked against a newer catalogue)."""
    if item["status"] not in ("cleared", "flagged"):
        raise CatalogError(f"review item {item['review_id']} is {item['status']}, not decided")
    cleared = item["status"] == "cleared"
    return Decision(item["recording_id"], STAGE, "pass" if cleared else "reject",
                    f"{item['status']} by {item['kind']} review ({item['decided_by']}): {item['note']}{remark}",
                    config_hash=config_hash,
                    details={"review_id": item["review_id"], "kind": item["kind"], "by": item["decided_by"],
                             "note": item["note"], **(binding(item) if bound is None else bound)})


def decide(cat: Catalog, review_id: int, *, cleared: bool, by: str, note: str, evidence: Any = None,
           config_hash: str = "review") -> None:
    """Close a review item: cleared -> pass, flagged -> reject, with who, when and why. Clearing an
    entry whose recording changed since is refused: the pass would be about something else."""
    item = get(cat, review_id)
    if not note or not note.strip():
        raise CatalogError(f"review item {review_id}: a note is required")
    if not by or not by.strip():
        raise CatalogError(f"review item {review_id}: the reviewer's name is required")
    if cleared and (why := stale(cat, item)):
        raise CatalogError(f"review item {review_id} ({item['recording_id']}) cannot be cleared: {why}; "
                           "run `sao review run` to queue what it holds now")
    status = "cleared" if cleared else "flagged"
    own = {k: v for k, v in _evidence(item).items() if k in _OWN}
    if evidence is not None:   # the service's answer; what the entry judged is ours and stays
        evidence = {**(evidence if isinstance(evidence, dict) else {"service": evidence}), **own}
    t = now()
    with cat.transaction():
        cat.con.execute(
            "UPDATE review_queue SET status = ?, decided_by = ?, decided_at = ?, note = ?, updated_at = ?, "
            "evidence = coalesce(?, evidence) WHERE review_id = ?",
            [status, by, t, note, t, json.dumps(evidence) if evidence is not None else None, review_id])
        cat.add_decisions([verdict_decision(get(cat, review_id), config_hash=config_hash)])
