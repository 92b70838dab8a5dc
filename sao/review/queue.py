"""The review queue (catalogue table ``review_queue``) and the decisions it produces.

Statuses: ``pending`` (waiting: to be submitted to the detection service, or for a human),
``submitted`` (the service has it; no verdict yet), ``cleared`` and ``flagged`` (final).
Each final status writes a ``copyright_review`` decision (pass / reject) with who decided
and why; nothing is ever deleted, so every decision stays auditable.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..catalog import Catalog, CatalogError, Decision

STAGE = "copyright_review"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def enqueue(cat: Catalog, recording_id: str, kind: str, evidence: Any = None) -> int | None:
    """Add an item unless it already has an open or decided entry of this kind."""
    existing = cat.query("SELECT review_id FROM review_queue WHERE recording_id = ? AND kind = ?", [recording_id, kind])
    if existing:
        return None
    t = now()
    return cat.con.execute(
        "INSERT INTO review_queue (recording_id, kind, status, evidence, created_at, updated_at) "
        "VALUES (?, ?, 'pending', ?, ?, ?) RETURNING review_id",
        [recording_id, kind, json.dumps(evidence) if evidence is not None else None, t, t]).fetchall()[0][0]


def items(cat: Catalog, status: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    return cat.query("SELECT * FROM review_queue WHERE (? IS NULL OR status = ?) AND (? IS NULL OR kind = ?) "
                     "ORDER BY review_id", [status, status, kind, kind])


def get(cat: Catalog, review_id: int) -> dict[str, Any]:
    rows = cat.query("SELECT * FROM review_queue WHERE review_id = ?", [int(review_id)])
    if not rows:
        raise CatalogError(f"review item {review_id} does not exist")
    return rows[0]


def mark_submitted(cat: Catalog, review_id: int, service: str, ref: str) -> None:
    t = now()
    cat.con.execute("UPDATE review_queue SET status = 'submitted', service = ?, service_ref = ?, submitted_at = ?, "
                    "updated_at = ?, attempts = attempts + 1, last_error = NULL WHERE review_id = ?",
                    [service, ref, t, t, review_id])


def mark_error(cat: Catalog, review_id: int, error: str) -> None:
    cat.con.execute("UPDATE review_queue SET updated_at = ?, attempts = attempts + 1, last_error = ? "
                    "WHERE review_id = ?", [now(), error[:500], review_id])


def decide(cat: Catalog, review_id: int, *, cleared: bool, by: str, note: str, evidence: Any = None,
           config_hash: str = "review") -> None:
    """Close a review item: cleared -> pass, flagged -> reject, with who, when and why."""
    item = get(cat, review_id)
    if not note or not note.strip():
        raise CatalogError(f"review item {review_id}: a note is required")
    if not by or not by.strip():
        raise CatalogError(f"review item {review_id}: the reviewer's name is required")
    status = "cleared" if cleared else "flagged"
    t = now()
    with cat.transaction():
        cat.con.execute(
            "UPDATE review_queue SET status = ?, decided_by = ?, decided_at = ?, note = ?, updated_at = ?, "
            "evidence = coalesce(?, evidence) WHERE review_id = ?",
            [status, by, t, note, t, json.dumps(evidence) if evidence is not None else None, review_id])
        cat.add_decisions([Decision(
            item["recording_id"], STAGE, "pass" if cleared else "reject",
            f"{'cleared' if cleared else 'flagged'} by {item['kind']} review ({by}): {note}", config_hash=config_hash,
            details={"review_id": review_id, "kind": item["kind"], "by": by, "note": note})])
