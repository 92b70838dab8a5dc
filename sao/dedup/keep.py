"""Which member of a group of repeated recordings is kept (pure, deterministic).

Order, best first:
  1. fidelity: higher sample rate, then more channels, then longer duration;
  2. the most permissive license: CC0 > CC-BY 4.0 > CC-BY 3.0 > CC Sampling+ (the license
     table's rank, sao.licensing.table; anything else after them);
  3. the oldest upload (created_at, then first_seen): the likely original;
  4. the recording id, so ties always resolve the same way.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from ..licensing.table import LICENSES

LICENSE_RANK = {row.canonical: row.rank for row in LICENSES}
_UNRANKED = len(LICENSES)
_FAR_FUTURE = dt.datetime(9999, 1, 1)


def keep_order(rec: dict[str, Any]) -> tuple:
    return (-(rec.get("sample_rate") or 0), -(rec.get("channels") or 0), -(rec.get("duration") or 0.0),
            LICENSE_RANK.get(rec.get("license_canonical") or "", _UNRANKED),
            rec.get("created_at") or rec.get("first_seen") or _FAR_FUTURE, rec["recording_id"])


def pick_kept(members: list[dict[str, Any]]) -> dict[str, Any]:
    return min(members, key=keep_order)
