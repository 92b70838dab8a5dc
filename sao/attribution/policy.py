"""Release policy as plain functions over records (no I/O): which recordings a release admits,
why each other recording was left out, how licenses are written in the published Stable Audio
Open attribution format, a release's content hash, and what changed between two releases."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Sequence

from ..licensing.canonical import UNKNOWN, family as licensing_family
from ..licensing.table import LICENSES

class ReleaseError(ValueError):
    """Bad input about releases: a bad name, an unknown release, other content under an existing name."""


# Why a recording is not in a release, in the order they are reported (the first that applies
# wins). The rule itself is the catalogue's ``admission`` macro (sao/catalog/migrations.py, 8):
# one definition that shards and releases both read.
EXCLUSION_REASONS = ("take-down", "opt-out", "license", "malformed", "corrupt", "review-rejected", "music-flagged",
                     "duplicate", "no-audio", "pending")

# Columns of the published attribution CSV (../shared/reference/sao_fma_attribution_published.csv).
PUBLISHED_COLUMNS = ("id", "title", "author", "license", "url")
# The published license form (cc0, ccby, ccsampling+) is a column of the one license table.
_PUBLISHED_LICENSE = {row.canonical: row.published for row in LICENSES}


def license_family(canonical: str) -> str:
    """cc-by-4.0 -> cc-by, cc-sampling+-1.0 -> cc-sampling+ (the paper counts licenses without versions),
    from the licensing tables; an id they do not know is its own family (never guessed by its spelling)."""
    fam = licensing_family(canonical)
    return canonical if fam == UNKNOWN else fam


def published_license(canonical: str) -> str:
    """cc0-1.0 -> cc0, cc-by-4.0 -> ccby, cc-sampling+-1.0 -> ccsampling+ (the published CSV drops versions)."""
    if canonical not in _PUBLISHED_LICENSE:
        raise ValueError(f"license {canonical!r} has no published attribution form (not admitted by the gate)")
    return _PUBLISHED_LICENSE[canonical]


# What a release's content hash (and so its signature) covers: the attribution, the audio the
# recording was admitted with (its content sha256) and the decisions that admitted it.
ITEM_FIELDS = ("recording_id", "license_canonical", "title", "author", "license_url", "url", "attribution_line",
               "content_sha256", "admitted_by")


def _unique_keys(pairs: list) -> dict:
    if len({k for k, _ in pairs}) != len(pairs):      # '{"a":1,"a":2}' must not hash as '{"a":2}'
        raise ValueError("duplicate key")
    return dict(pairs)


# one encoder each, made once (json.dumps with options builds a new encoder on every call)
_LINE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_json_string = json.encoder.encode_basestring       # what json.dumps(ensure_ascii=False) writes for a str


def json_value(v: Any) -> str:
    """json.dumps(v, ensure_ascii=False) for one value; strings and None without building an encoder."""
    if v is None:
        return "null"
    if type(v) is str:
        return _json_string(v)
    return _LINE_JSON.encode(v)


_json_ascii_string = json.encoder.encode_basestring_ascii


def admitted_by_json(value: dict, *, stored: bool = False) -> str:
    """{stage: decision id} as JSON text with sorted keys: the canonical form the content hash covers
    (no spaces, ``_CANONICAL_JSON``), or with ``stored`` the form release_items.admitted_by has always
    held (``json.dumps(value, sort_keys=True)``). Written directly for the usual str -> int dict."""
    if all(type(k) is str and type(v) is int for k, v in value.items()):
        key, sep = (_json_ascii_string, ", ") if stored else (_json_string, ",")
        return "{" + sep.join(f"{key(k)}:{' ' if stored else ''}{v}" for k, v in sorted(value.items())) + "}"
    return json.dumps(value, sort_keys=True) if stored else _CANONICAL_JSON.encode(value)


def _admitted_by(value: Any) -> Any:
    """{stage: decision id} as one canonical JSON text, whether given as a dict (a new snapshot) or as the
    catalogue's stored JSON text, so both hash alike. Anything else is hashed as it is (and so differs)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value, object_pairs_hook=_unique_keys)
        except ValueError:
            return value
        if not isinstance(parsed, dict):
            return value
        value = parsed
    if isinstance(value, dict):
        return admitted_by_json(value)
    return value


def line_of(values: Sequence[Any]) -> str:
    """An item's hashed line from its ITEM_FIELDS values in order, admitted_by already canonical:
    ``_LINE_JSON.encode(list(values))``, one value at a time."""
    return "[" + ",".join(map(json_value, values)) + "]"


def item_line(item: Mapping[str, Any]) -> str:
    return line_of([_admitted_by(item.get(k)) if k == "admitted_by" else item.get(k) for k in ITEM_FIELDS])


def content_sha256_of_lines(lines: Iterable[str]) -> str:
    """sha256 over the items' lines (``item_line``) sorted: the order items are given in never matters."""
    h = hashlib.sha256()
    for line in sorted(lines):
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()


def content_sha256(items: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the release's items (id, license, attribution fields, audio sha256 and admitting
    decisions) in id order: two releases with the same hash attribute the same audio in the same way."""
    return content_sha256_of_lines(item_line(i) for i in items)


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
        # admitted_by compared as the decisions it names, whatever JSON spacing stored it
        fields = {k: [old[r].get(k), new[r].get(k)] for k in ITEM_FIELDS[1:]
                  if (_admitted_by(old[r].get(k)) != _admitted_by(new[r].get(k)) if k == "admitted_by"
                      else old[r].get(k) != new[r].get(k))}
        if fields:
            changed.append({"recording_id": r, "fields": fields})
    return {"added": added, "removed": removed, "changed": changed}
