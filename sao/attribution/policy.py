"""Release policy as plain functions over records (no I/O): which recordings a release admits,
why each other recording was left out, how licenses are written in the published Stable Audio
Open attribution format, a release's content hash, and what changed between two releases."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

class ReleaseError(ValueError):
    """Bad input about releases: a bad name, an unknown release, other content under an existing name."""


# Why a recording is not in a release, in the order they are reported (the first that applies wins).
EXCLUSION_REASONS = ("take-down", "license", "opt-out", "corrupt", "review-rejected", "music-flagged", "duplicate",
                     "pending", "no-audio")

# Columns of the published attribution CSV (../shared/reference/sao_fma_attribution_published.csv).
PUBLISHED_COLUMNS = ("id", "title", "author", "license", "url")
_PUBLISHED_LICENSE = {"cc0": "cc0", "cc-by": "ccby", "cc-sampling+": "ccsampling+"}

Latest = Mapping[str, tuple[str, str]]          # stage -> (verdict, reason) of the latest decision


def _corrupt(latest: Latest) -> tuple[str, str] | None:
    for stage in ("audio", "decode"):
        verdict, reason = latest.get(stage, ("", ""))
        if verdict == "reject":
            return "corrupt", reason
    return None


def is_admitted(latest: Latest, *, taken_down: bool, has_audio: bool, required_stages: Sequence[str]) -> bool:
    """The admission rule (the same as the shards' selection): every required stage's latest
    decision passes, audio is stored and decodes, and no take-down is active."""
    return (not taken_down and has_audio and _corrupt(latest) is None
            and all(latest.get(s, ("", ""))[0] == "pass" for s in required_stages))


def exclusion_reason(latest: Latest, *, taken_down: bool, has_audio: bool,
                     required_stages: Sequence[str]) -> tuple[str, str] | None:
    """(reason, detail) for a recording the release leaves out; None when it is admitted."""
    if is_admitted(latest, taken_down=taken_down, has_audio=has_audio, required_stages=required_stages):
        return None
    if taken_down:
        return "take-down", ""
    blocking = {s: latest.get(s) for s in required_stages if latest.get(s, ("", ""))[0] != "pass"}
    lic = blocking.get("license_gate")
    if lic:
        return ("opt-out" if lic[1].startswith("opt-out") else "license"), lic[1]
    if (bad := _corrupt(latest)) is not None:
        return bad
    for stage, (verdict, reason) in ((s, v) for s, v in blocking.items() if v is not None):
        if stage == "copyright_review" and verdict == "reject":
            return "review-rejected", reason
    for stage, (verdict, reason) in ((s, v) for s, v in blocking.items() if v is not None):
        if stage in ("copyright_review", "music_screen") and verdict in ("review", "flag"):
            return "music-flagged", reason
        if stage == "dedup" and verdict == "reject":
            return "duplicate", reason
    if blocking:
        stage = sorted(blocking)[0]
        got = blocking[stage]
        return "pending", f"{stage}: " + (f"{got[0]} ({got[1]})" if got else "no decision yet")
    return "no-audio", "no stored audio"


def license_family(canonical: str) -> str:
    """cc-by-4.0 -> cc-by, cc-sampling+-1.0 -> cc-sampling+ (the paper counts licenses without versions)."""
    return canonical.rsplit("-", 1)[0] if canonical[-1:].isdigit() else canonical


def published_license(canonical: str) -> str:
    """cc0-1.0 -> cc0, cc-by-4.0 -> ccby, cc-sampling+-1.0 -> ccsampling+ (the published CSV drops versions)."""
    family = license_family(canonical)
    if family not in _PUBLISHED_LICENSE:
        raise ValueError(f"license {canonical!r} has no published attribution form (not admitted by the gate)")
    return _PUBLISHED_LICENSE[family]


ITEM_FIELDS = ("recording_id", "license_canonical", "title", "author", "license_url", "url", "attribution_line")


def item_line(item: Mapping[str, Any]) -> str:
    return json.dumps([item.get(k) for k in ITEM_FIELDS], ensure_ascii=False, separators=(",", ":"))


def content_sha256(items: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the release's items (id, license and attribution fields) in id order: two
    releases with the same hash attribute the same recordings in the same way."""
    h = hashlib.sha256()
    for line in sorted(item_line(i) for i in items):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def removal_cause(exclusion: tuple[str, str] | None) -> str:
    """Why an item of an older release is missing from a newer one."""
    if exclusion is None:
        return "gone from the catalogue"
    reason, detail = exclusion
    if reason == "take-down":
        return "take-down"
    if reason in ("license", "opt-out"):
        return f"re-license: {detail}" if detail else "re-license"
    return f"new decision: {reason}" + (f" ({detail})" if detail else "")


def diff_releases(old: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]],
                  new_exclusions: Mapping[str, tuple[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Items added, removed (with the cause) and changed (field by field) from ``old`` to ``new``."""
    added = [{"recording_id": r} for r in sorted(new.keys() - old.keys())]
    removed = [{"recording_id": r, "cause": removal_cause(new_exclusions.get(r))} for r in sorted(old.keys() - new.keys())]
    changed = []
    for r in sorted(old.keys() & new.keys()):
        fields = {k: [old[r].get(k), new[r].get(k)] for k in ITEM_FIELDS[1:] if old[r].get(k) != new[r].get(k)}
        if fields:
            changed.append({"recording_id": r, "fields": fields})
    return {"added": added, "removed": removed, "changed": changed}
