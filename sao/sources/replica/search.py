"""Freesound search semantics for the replica: the ``query`` terms, the Solr-style ``filter``
(``name:value``, ``name:"quoted value"``, ``name:(a OR "b c")``, ``name:[x TO *]``), sorting and
field selection. Pure functions over sound records."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Callable

FILTERABLE = {
    "id": "num", "name": "str", "tag": "list", "description": "text", "license": "license", "username": "str",
    "type": "str", "channels": "num", "samplerate": "num", "duration": "num", "filesize": "num",
    "bitdepth": "num", "bitrate": "num", "created": "date", "md5": "str", "is_remix": "bool",
    "was_remixed": "bool", "gen_ai_preference": "str", "is_explicit": "bool", "category": "str",
    "subcategory": "str", "num_downloads": "num", "avg_rating": "num",
}
SORTS = {
    "score": (lambda s: s["id"], False),
    "created_asc": (lambda s: s["created"], False), "created_desc": (lambda s: s["created"], True),
    "duration_asc": (lambda s: s["duration"], False), "duration_desc": (lambda s: s["duration"], True),
    "downloads_asc": (lambda s: s["num_downloads"], False), "downloads_desc": (lambda s: s["num_downloads"], True),
    "rating_asc": (lambda s: s["avg_rating"], False), "rating_desc": (lambda s: s["avg_rating"], True),
}


class SearchError(ValueError):
    """Maps to HTTP 400 with the message as ``detail``."""


_TOKEN = re.compile(r'\s*(?P<name>[a-z_]+):(?P<value>"[^"]*"|\([^)]*\)|\[[^\]]*\]|[^\s"()\[\]]+)')


def parse_filter(text: str) -> list[tuple[str, Any]]:
    """``filter`` string -> [(field, matcher spec)], all ANDed."""
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SearchError(f"Invalid filter: cannot parse {text[pos:pos + 40]!r}")
        name, value = m.group("name"), m.group("value")
        if name not in FILTERABLE:
            raise SearchError(f"Invalid filter: {name!r} is not a filterable field")
        if value.startswith("("):
            parts = re.findall(r'"([^"]*)"|(\S+)', value[1:-1])
            alts = [q or w for q, w in parts if (q or w) != "OR"]
            if not alts:
                raise SearchError(f"Invalid filter: empty alternative list for {name!r}")
            out.append((name, ("any", alts)))
        elif value.startswith("["):
            m2 = re.fullmatch(r"\[\s*(\S+)\s+TO\s+(\S+)\s*\]", value)
            if not m2:
                raise SearchError(f"Invalid filter: range for {name!r} must be [a TO b]")
            out.append((name, ("range", m2.group(1), m2.group(2))))
        else:
            out.append((name, ("any", [value.strip('"')])))
        pos = m.end()
    return out


def _parse_date(v: str) -> dt.datetime:
    v = v.rstrip("Z")
    if v.upper().startswith("NOW"):
        return dt.datetime.utcnow()
    try:
        return dt.datetime.fromisoformat(v)
    except ValueError as exc:
        raise SearchError(f"Invalid filter: {v!r} is not a date") from exc


def _coerce(kind: str, v: str):
    if kind == "num":
        try:
            return float(v)
        except ValueError as exc:
            raise SearchError(f"Invalid filter: {v!r} is not a number") from exc
    if kind == "date":
        return _parse_date(v)
    if kind == "bool":
        return v.lower() in ("1", "true")
    return v


def _field_value(sound: dict, name: str):
    if name == "tag":
        return sound.get("tags") or []
    if name == "license":
        return sound.get("_license_name")
    if name == "created":
        return dt.datetime.fromisoformat(sound["created"])
    return sound.get(name)


def make_predicate(filters: list[tuple[str, Any]]) -> Callable[[dict], bool]:
    compiled = []
    for name, spec in filters:
        kind = FILTERABLE[name]
        if spec[0] == "range":
            lo = None if spec[1] == "*" else _coerce("date" if kind == "date" else "num", spec[1])
            hi = None if spec[2] == "*" else _coerce("date" if kind == "date" else "num", spec[2])
            compiled.append((name, kind, "range", (lo, hi)))
        else:
            ck = kind if kind in ("num", "bool", "date") else "str"
            compiled.append((name, kind, "any", [_coerce(ck, v) for v in spec[1]]))

    def pred(sound: dict) -> bool:
        for name, kind, op, arg in compiled:
            value = _field_value(sound, name)
            if op == "range":
                if value is None:
                    return False
                lo, hi = arg
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    return False
            elif kind == "list":
                if not any(a in value for a in arg):
                    return False
            elif kind == "text":
                if not any(a.lower() in (value or "").lower() for a in arg):
                    return False
            elif kind == "num":
                if value is None or float(value) not in arg:
                    return False
            elif value not in arg:
                return False
        return True
    return pred


def match_query(sound: dict, query: str) -> bool:
    """Every term must occur in name, tags, description, username or id; ``-term`` excludes."""
    hay = " ".join([sound["name"], " ".join(sound.get("tags") or []), sound.get("description") or "",
                    sound.get("username") or "", str(sound["id"])]).lower()
    for term in query.split():
        neg = term.startswith("-") and len(term) > 1
        t = term[1:] if neg else term
        if (t.lower() in hay) == neg:
            return False
    return True


def search(sounds: list[dict], *, query: str = "", filter: str = "", sort: str = "score") -> list[dict]:
    if sort not in SORTS:
        raise SearchError(f"Invalid sort parameter: {sort!r} (one of {', '.join(SORTS)})")
    pred = make_predicate(parse_filter(filter)) if filter.strip() else (lambda s: True)
    hits = [s for s in sounds if pred(s) and match_query(s, query)]
    key, reverse = SORTS[sort]
    return sorted(hits, key=lambda s: (key(s), s["id"]), reverse=reverse)
