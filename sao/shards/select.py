"""Which recordings go into shards: exactly the catalogue's ``admitted(required stages)``
(migration 8, the one admission rule that releases use too). Duration, sample rate and
channels are what the decode stage read from the stored file, never the crawled metadata.
The ids of the admitting decisions travel with each item into the shard index."""
from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

from ..catalog import Catalog
from ..fsutil import safe_join


def eligible_recordings(cat: Catalog, required_stages: Sequence[str], audio_store: str | pathlib.Path
                        ) -> list[dict[str, Any]]:
    if not required_stages:
        raise ValueError("at least one required stage (e.g. license_gate) must admit an item")
    rows = cat.query(
        "SELECT recording_id, source, source_id, title, author, description, tags, audio_duration AS duration, "
        "  audio_sample_rate AS sample_rate, audio_channels AS channels, license_canonical, license_url, page_url, "
        "  audio_path, content_sha256, extra, admitted_by FROM admitted(?) ORDER BY recording_id",
        [list(required_stages)])
    store = pathlib.Path(audio_store)
    for r in rows:
        r["extra"] = json.loads(r["extra"]) if r["extra"] else {}
        r["path"] = str(safe_join(store, r["audio_path"], what=f"{r['recording_id']}: audio_path"))
        r["admitted_by"] = {a["stage"]: a["decision_id"] for a in r["admitted_by"]}
    return rows
