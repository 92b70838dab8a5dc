"""Freesound search semantics for the replica: the ``query`` terms, the Solr-style ``filter``
(``name:value``, ``name:"quoted value"``, ``name:(a OR "b c")``, ``name:[x TO *]``, Solr date math
such as ``created:[NOW-1YEAR/DAY TO *]``), sorting and field selection. Pure functions over sound
records.

What freesound.org does, and so what this does (MTG/freesound ``apiv2/forms.py``, ``apiv2_utils.py``,
``utils/search/backends/solr9pysolr.py``): an unknown ``sort`` falls back to ``score``; a filter the
search engine refuses (an unknown field, bad syntax, a bad number or date) becomes a 400 whose
``detail`` wraps Solr's reason (``filter_error_detail``); the ``license`` and other string fields
match exactly (a Solr ``string`` field), so ``license:"Sampling "`` matches nothing."""
from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any, Callable

from .build import record_created

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
DEFAULT_SORT = "score"      # forms.py: SEARCH_SOUNDS_SORT_DEFAULT_API = "score desc"


class SearchError(ValueError):
    """The search engine refused the request; the message is the engine's reason. The handler
    answers HTTP 400 with ``filter_error_detail(reason)`` as ``detail``."""


def filter_error_detail(reason: str) -> str:
    """The ``detail`` of freesound.org's 400 for a search the engine refused: ``api_search`` wraps
    the SearchEngineException (pysolr's ``Solr responded with an error (HTTP 400): [Reason: ...]``)
    and, since the form's ``filter`` is never None, always adds the hint about filter syntax."""
    return (f"Search server error: {reason} (please check that your filter syntax and field names "
            "are correct)")


def solr_reason(message: str) -> str:
    """pysolr's message for a Solr 400 (what ``str(SearchEngineException)`` is)."""
    return f"Solr responded with an error (HTTP 400): [Reason: {message}]"


def solr_filter_query(text: str) -> str:
    """The ``fq`` freesound.org sends Solr for a filter (``search_filter_make_intersection``): each
    ``name:`` gets a ``+`` (AND in Solr 5+), doubled ``+`` collapse, ``-+`` keeps the negation, a
    trailing ``+`` goes; ``created:`` becomes ``created_range:``. Used to word syntax errors as Solr does."""
    text = text.replace("created:", "created_range:")
    text = re.sub(r"\b([a-zA-Z_]+:)", r"+\1", text)
    text = re.sub(r"\++", "+", text)
    text = text.replace("-+", "-")
    return text[:-1] if text.endswith("+") else text


_TOKEN = re.compile(r'\s*(?P<name>[a-z_]+):(?P<value>"[^"]*"|\([^)]*\)|\[[^\]]*\]|[^\s"()\[\]]+)')


def parse_filter(text: str) -> list[tuple[str, Any]]:
    """``filter`` string -> [(field, matcher spec)], all ANDed."""
    out, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise SearchError(solr_reason(f"org.apache.solr.search.SyntaxError: Cannot parse "
                                          f"'{solr_filter_query(text)}': Encountered \"{text[pos:pos + 20].strip()}\""
                                          f" at column {pos}"))
        name, value = m.group("name"), m.group("value")
        if name not in FILTERABLE:
            raise SearchError(solr_reason(f"undefined field {name}"))
        if value.startswith("("):
            parts = re.findall(r'"([^"]*)"|(\S+)', value[1:-1])
            alts = [q or w for q, w in parts if (q or w) != "OR"]
            if not alts:
                raise SearchError(solr_reason(f"org.apache.solr.search.SyntaxError: Cannot parse "
                                              f"'{solr_filter_query(text)}': empty clause for {name}"))
            out.append((name, ("any", alts)))
        elif value.startswith("["):
            m2 = re.fullmatch(r"\[\s*(\S+)\s+TO\s+(\S+)\s*\]", value)
            if not m2:
                raise SearchError(solr_reason(f"org.apache.solr.search.SyntaxError: Cannot parse "
                                              f"'{solr_filter_query(text)}': a range is [a TO b]"))
            out.append((name, ("range", m2.group(1), m2.group(2))))
        else:
            out.append((name, ("any", [value.strip('"')])))
        pos = m.end()
    return out


# -- Solr dates: ISO 8601 (``Z`` optional, truncated forms allowed as in a DateRangeField) and date math
_ISO = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?)?)?Z?")
_MATH = re.compile(r"([+-])(\d+)([A-Z]+)|/([A-Z]+)")
_UNITS = {"YEAR": "year", "YEARS": "year", "MONTH": "month", "MONTHS": "month", "DAY": "day", "DAYS": "day",
          "DATE": "day", "HOUR": "hour", "HOURS": "hour", "MINUTE": "minute", "MINUTES": "minute",
          "SECOND": "second", "SECONDS": "second"}


def _add(t: dt.datetime, unit: str, n: int) -> dt.datetime:
    if unit in ("year", "month"):
        months = t.month - 1 + n * (12 if unit == "year" else 1)
        year, month = t.year + months // 12, months % 12 + 1
        return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))
    return t + dt.timedelta(**{f"{unit}s": n})


def _round(t: dt.datetime, unit: str) -> dt.datetime:
    keep = ("year", "month", "day", "hour", "minute", "second")
    i = keep.index(unit)
    return t.replace(**{k: (1 if k in ("month", "day") else 0) for k in keep[i + 1:]}, microsecond=0)


def solr_date(text: str, *, now: Callable[[], dt.datetime] | None = None) -> tuple[dt.datetime, dt.datetime]:
    """A Solr date or date-math expression -> (first, last) instant it covers (equal unless the
    date is truncated, ``2024-01`` being all of January), naive UTC."""
    try:
        return _solr_date(text, now)
    except SearchError:
        raise
    except (ValueError, OverflowError):       # 9999 + 1 YEAR, NOW+99999999YEARS: past what a date holds
        raise SearchError(solr_reason(f"Invalid Date Math String:'{text}'")) from None


def _solr_date(text: str, now: Callable[[], dt.datetime] | None) -> tuple[dt.datetime, dt.datetime]:
    base, rest = (text[:3], text[3:]) if text.startswith("NOW") else (None, text)
    if base is None:
        m = _ISO.match(text)
        if not m or not m.group(0):
            raise SearchError(solr_reason(f"Invalid Date String:'{text}'"))
        rest = text[m.end():]
        parts = [int(g) if g else None for g in m.groups()[:6]]
        frac = m.group(7)
        try:
            first = dt.datetime(parts[0], parts[1] or 1, parts[2] or 1, parts[3] or 0, parts[4] or 0, parts[5] or 0,
                                int((frac or "0").ljust(6, "0")[:6]))
        except ValueError:
            raise SearchError(solr_reason(f"Invalid Date String:'{text}'")) from None
        depth = sum(p is not None for p in parts)
        unit = ("year", "month", "day", "hour", "minute", "second")[depth - 1]
        last = first if depth == 6 else _add(first, unit, 1) - dt.timedelta(microseconds=1)
    else:
        first = last = (now or (lambda: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)))()
    pos = 0
    while pos < len(rest):
        m = _MATH.match(rest, pos)
        unit = _UNITS.get((m.group(3) or m.group(4))) if m else None
        if unit is None:
            raise SearchError(solr_reason(f"Invalid Date Math String:'{text}'"))
        if m.group(4):
            first = last = _round(first, unit)
        else:
            n = int(m.group(2)) * (1 if m.group(1) == "+" else -1)
            first, last = _add(first, unit, n), _add(last, unit, n)
        pos = m.end()
    return first, last


def _coerce(kind: str, v: str):
    if kind == "num":
        try:
            return float(v)
        except ValueError as exc:
            raise SearchError(solr_reason(f"Invalid Number: {v}")) from exc
    if kind == "date":
        return solr_date(v)
    if kind == "bool":
        return v.lower() in ("1", "true")
    return v


def _field_value(sound: dict, name: str):
    if name == "tag":
        return sound.get("tags") or []
    if name == "license":
        return sound.get("_license_name")
    if name == "created":
        return record_created(sound.get("created"))
    return sound.get(name)


def make_predicate(filters: list[tuple[str, Any]]) -> Callable[[dict], bool]:
    compiled = []
    for name, spec in filters:
        kind = FILTERABLE[name]
        if spec[0] == "range":
            ck = "date" if kind == "date" else "num"
            lo = None if spec[1] == "*" else _coerce(ck, spec[1])
            hi = None if spec[2] == "*" else _coerce(ck, spec[2])
            if kind == "date":      # a truncated bound covers its whole period: [2024 TO 2024] is all of 2024
                lo, hi = (lo[0] if lo else None), (hi[1] if hi else None)
            compiled.append((name, kind, "range", (lo, hi)))
        else:
            ck = kind if kind in ("num", "bool", "date") else "str"
            compiled.append((name, kind, "any", [_coerce(ck, v) for v in spec[1]]))

    def pred(sound: dict) -> bool:
        for name, kind, op, arg in compiled:
            value = _field_value(sound, name)
            if op == "range":
                if value is None or (kind != "date" and not isinstance(value, (int, float))):
                    return False
                lo, hi = arg
                if (lo is not None and value < lo) or (hi is not None and value > hi):
                    return False
            elif kind == "list":
                if not isinstance(value, list) or not any(a in value for a in arg):
                    return False
            elif kind == "text":
                if not any(a.lower() in str(value or "").lower() for a in arg):
                    return False
            elif kind == "num":
                if not isinstance(value, (int, float)) or float(value) not in arg:
                    return False
            elif kind == "date":
                if value is None or not any(first <= value <= last for first, last in arg):
                    return False
            elif value not in arg:
                return False
        return True
    return pred


def match_query(sound: dict, query: str) -> bool:
    """Every term must occur in name, tags, description, username or id; ``-term`` excludes."""
    tags = sound.get("tags")
    hay = " ".join([str(sound.get("name") or ""), " ".join(map(str, tags)) if isinstance(tags, list) else str(tags or ""),
                    str(sound.get("description") or ""), str(sound.get("username") or ""), str(sound["id"])]).lower()
    for term in query.split():
        neg = term.startswith("-") and len(term) > 1
        t = term[1:] if neg else term
        if (t.lower() in hay) == neg:
            return False
    return True


def search(sounds: list[dict], *, query: str = "", filter: str = "", sort: str = DEFAULT_SORT) -> list[dict]:
    """The matching sounds in result order. ``sort`` is an API sort name; an unknown one is
    ``score`` (as ``clean_sort`` does); one with ``:`` is a similarity target, which the replica
    has no vectors for (freesound.org's error for a target it cannot use)."""
    if ":" in sort:
        raise SearchError("Error processing sorting target for distance-based sorting.")
    if sort not in SORTS:
        sort = DEFAULT_SORT
    pred = make_predicate(parse_filter(filter)) if filter.strip() else (lambda s: True)
    hits = [s for s in sounds if pred(s) and match_query(s, query)]
    key, reverse = SORTS[sort]
    return sorted(hits, key=lambda s: (key(s), s["id"]), reverse=reverse)
