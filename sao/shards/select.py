"""Which recordings go into shards: those whose latest decision at every required stage is
"pass", that have stored audio, that no ``audio`` decision rejected, and that are not taken
down. The ids of the admitting decisions travel with each item into the shard index."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from ..catalog import Catalog


def eligible_recordings(cat: Catalog, required_stages: Sequence[str], audio_store: str | pathlib.Path
                        ) -> list[dict[str, Any]]:
    if not required_stages:
        raise ValueError("at least one required stage (e.g. license_gate) must admit an item")
    rows = cat.query(
        "WITH latest AS (SELECT recording_id, stage, verdict, decision_id FROM decisions "
        "  QUALIFY row_number() OVER (PARTITION BY recording_id, stage ORDER BY decision_id DESC) = 1), "
        "req AS (SELECT recording_id, count(*) FILTER (WHERE verdict = 'pass') AS passed, "
        "  list(decision_id ORDER BY stage) AS ids, list(stage ORDER BY stage) AS stages "
        "  FROM latest WHERE list_contains(?, stage) GROUP BY recording_id) "
        "SELECT r.recording_id, r.source, r.source_id, r.title, r.author, r.description, r.tags, r.duration, "
        "  r.sample_rate, r.channels, r.license_canonical, r.license_url, r.page_url, r.audio_path, "
        "  r.content_sha256, r.extra, req.ids AS admitted_by, req.stages AS admitted_stages "
        "FROM recordings r JOIN req USING (recording_id) "
        "WHERE req.passed = ? AND r.audio_path IS NOT NULL "
        "AND r.recording_id NOT IN (SELECT recording_id FROM takedowns WHERE status = 'active') "
        "AND r.recording_id NOT IN (SELECT recording_id FROM latest WHERE stage = 'audio' AND verdict = 'reject') "
        "ORDER BY r.recording_id",
        [list(required_stages), len(required_stages)])
    store = pathlib.Path(audio_store)
    for r in rows:
        r["extra"] = json.loads(r["extra"]) if r["extra"] else {}
        r["path"] = str(store / r["audio_path"])
        r["admitted_by"] = dict(zip(r.pop("admitted_stages"), r["admitted_by"]))
    return rows
