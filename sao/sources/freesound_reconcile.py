"""The Freesound reconcile: after a full listing, an item in the catalogue that no allowed-license
search returned was deleted at the source (take-down) or re-licensed (stored as it is now; the gate
then rejects it and writes the take-down). A reconcile pass (sao.sources.freesound_quota's passes)
checks its items one request each and commits how far it got after each, so the quota can stop it
and the next run goes on."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from ..catalog import Catalog, CatalogError
from ..licensing.table import ALLOWED_LICENSES
from . import record_checks as rc
from .freesound import SEARCH_FIELDS, FreesoundClient, FreesoundError, QuotaExhausted
from .freesound_crawl import SOURCE, paused, refetch_problem, sound_to_record

log = logging.getLogger(__name__)


def reconcile_freesound(cat: Catalog, client: FreesoundClient, seen_ids: set[str] | None = None, *,
                        pass_id: str | None = None, fields: tuple[str, ...] = SEARCH_FIELDS,
                        config_hash: str = rc.RULES_VERSION) -> dict[str, Any]:
    """After a full crawl: an item in the catalogue that no allowed-license search returned was
    deleted at the source (take-down) or re-licensed (updated; the gate then rejects it and
    writes the take-down).

    With ``pass_id`` (a reconcile pass whose listing is complete) the items are those the pass's
    listing did not show, known when the pass began, checked in id order; each check commits with
    the pass's ``checked_through``, so a run stopped by the quota (``out["paused"]``) continues with
    the next id, and the pass is done when none is left."""
    out: dict[str, Any] = {"deleted": 0, "relicensed": 0}
    if pass_id is not None:
        missing = cat.reconcile_candidates(pass_id, SOURCE)
    else:
        missing = [r["source_id"] for r in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE])
                   if r["source_id"] not in (seen_ids or set())]
    taken = cat.active_takedowns()
    record_prev = cat.latest_decision_map(rc.STAGE)

    def checked(sid: str) -> None:
        if pass_id is not None:
            cat.update_crawl_pass(pass_id, checked_through=int(sid))

    for sid in missing:
        rid = f"{SOURCE}:{sid}"
        if rid in taken:
            continue
        try:
            s = client.sound(int(sid), fields)
        except QuotaExhausted as exc:
            out["paused"] = paused(exc)
            log.warning("freesound reconcile paused before %s: %s", rid, exc)
            return out
        except FreesoundError as exc:
            # one sound the server cannot answer for (a 5xx after retries, a malformed body) must not stall
            # the pass on every run: it is counted, logged and left for the next reconcile pass
            out.setdefault("failed", {})[rid] = str(exc)[:300]
            log.error("%s: reconcile lookup failed, checked again by the next pass: %s", rid, exc)
            continue
        if s is None:
            with cat.transaction():
                cat.add_takedown(rid, "deleted-at-source: the sound no longer exists on Freesound", "crawl")
                checked(sid)
            out["deleted"] += 1
            log.warning("%s: deleted at the source; take-down recorded", rid)
        else:
            try:
                rec, problems = sound_to_record(s, crawl_time=dt.datetime.utcnow(), site=client.site)
                if rec["source_id"] != sid:
                    raise rc.UnusableItem(f"id: asked for {sid}, the API answered {rec['source_id']}")
                Catalog.validate_recording(rec)
            except (rc.UnusableItem, CatalogError) as exc:
                # what the stored copy says (its license above all) may be out of date, and the new
                # copy cannot be stored: a record reject keeps the item out until a clean re-fetch
                with cat.transaction():
                    cat.add_decisions(rc.record_decisions({rid: refetch_problem(str(exc))}, record_prev,
                                                          config_hash=config_hash))
                    checked(sid)
                log.error("%s: re-fetched item is malformed, not stored; a record reject keeps it out: %s", rid, exc)
                continue
            decisions = rc.record_decisions({rid: problems}, record_prev, config_hash=config_hash)
            with cat.transaction():
                cat.upsert_recordings([rec])
                cat.add_decisions(decisions)
                checked(sid)
            if rec["license_canonical"] in ALLOWED_LICENSES:
                # still under an allowed license (e.g. listed late, or its last listing failed a check):
                # stored fresh, not a re-license
                out["still_allowed"] = out.get("still_allowed", 0) + 1
                continue
            out["relicensed"] += 1
            log.warning("%s: no longer under an allowed license name (now %s)", rid, s.get("license"))
    if pass_id is not None:
        cat.update_crawl_pass(pass_id, status="done")
    return out
