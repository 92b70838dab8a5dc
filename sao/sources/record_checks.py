"""Per-item type checks for what a source says about a recording (Freesound API JSON, FMA CSV).

Every external value is hostile until checked: a rule returns the value when it is exactly of
the right type and in range, else it names what is wrong; nothing is coerced (``True`` is not
an id, ``1005.7`` is not a sample rate, a string is not a tag list). A bad field is stored as
NULL and the item gets a ``record`` reject naming it, which the catalogue's admission rule
reports as ``malformed``; an item whose id itself is unusable cannot be stored at all
(:class:`UnusableItem`). The rules are pure, and each is defined once, here.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests
import urllib3

from ..catalog import Decision

STAGE = "record"
# what a record decision's config_hash names: these rules, which no configuration changes
RULES_VERSION = "record-rules-1"
MAX_ID = 2**63 - 1                  # the catalogue and both sources use 64-bit ids
MAX_DURATION_S = 7 * 24 * 3600.0    # a week: longer is a broken header or a hostile value
MAX_SAMPLE_RATE = 10_000_000        # above every real rate (DSD256 is 11.2 MHz, not PCM); fits INT32
MAX_CHANNELS = 1024
MAX_BIT_RATE = 50_000_000           # uncompressed 8 ch x 192 kHz x 32 bit is 49 Mbit/s
MAX_BYTES = 2**53                   # exact in a JSON number
_MD5 = re.compile(r"[0-9a-fA-F]{32}")
DIGITS = re.compile(r"[0-9]+")     # CSV integers: plain digits, no sign, exponent or fraction
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class UnusableItem(ValueError):
    """The item's id is unusable, so it cannot be stored (or even named in the catalogue)."""


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def item_id(v: Any) -> int:
    """A source id: a JSON integer (not a bool, not a float), 1 <= id < 2**63."""
    if not _is_int(v):
        raise UnusableItem(f"id: expected a positive integer, got {_kind(v)} {short(v)}")
    if not 1 <= v <= MAX_ID:
        raise UnusableItem(f"id: {v} is out of range (1 to {MAX_ID})")
    return v


def csv_item_id(text: Any) -> int:
    """A CSV id cell: plain digits, 1 <= id < 2**63."""
    if not isinstance(text, str) or not DIGITS.fullmatch(text.strip()):
        raise UnusableItem(f"track_id: expected a positive integer, got {short(text)}")
    return item_id(int(text.strip()))


# -- field rules: each returns (value, None) or (None, why) ----------------------------------------
Rule = Callable[[Any], tuple[Any, str | None]]


def text(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, str) else (None, f"expected a string, got {_kind(v)}")


def text_list(v: Any) -> tuple[Any, str | None]:
    if not isinstance(v, list):
        return None, f"expected a list of strings, got {_kind(v)}"
    bad = [t for t in v if not isinstance(t, str)]
    if bad:
        return None, f"expected a list of strings, got an element of type {_kind(bad[0])}"
    return list(v), None


def number_in(lo: float, hi: float) -> Rule:
    def rule(v: Any) -> tuple[Any, str | None]:
        if not _is_number(v):
            return None, f"expected a number, got {_kind(v)}"
        try:
            finite = math.isfinite(v)
        except OverflowError:            # an integer beyond any float
            return None, f"{short(v)} is out of range ({lo:g} to {hi:g})"
        if not finite:
            return None, f"{v} is not finite"
        if not lo <= v <= hi:
            return None, f"{v} is out of range ({lo:g} to {hi:g})"
        return float(v), None
    return rule


def int_in(lo: int, hi: int, *, integral_float: bool = False) -> Rule:
    """An integer in [lo, hi]. ``integral_float``: also a float with no fraction (Freesound's API
    writes sample rates as ``44100.0``); ``1005.7`` is still refused, never truncated."""
    def rule(v: Any) -> tuple[Any, str | None]:
        if integral_float and isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not _is_int(v):
            return None, f"expected an integer, got {_kind(v)} {short(v)}"
        if not lo <= v <= hi:
            return None, f"{v} is out of range ({lo} to {hi})"
        return v, None
    return rule


def boolean(v: Any) -> tuple[Any, str | None]:
    return (v, None) if isinstance(v, bool) else (None, f"expected true or false, got {_kind(v)}")


def one_of(allowed: frozenset[str]) -> Rule:
    def rule(v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, str):
            return None, f"expected a string, got {_kind(v)}"
        if v not in allowed:
            return None, f"{short(v)} is not one of {', '.join(sorted(allowed))}"
        return v, None
    return rule


DEFAULT_PORTS = {"http": 80, "https": 443}
# A URL whose authority is a plain DNS name or IPv4 address (letters, digits, inner hyphens and
# dots; an optional port without leading zeros) and whose rest begins at /, ? or # (or is empty)
# reads the same to every parser in play, and requests sends its authority unchanged: for such
# a URL (nearly every URL a source gives) the origin is read off the match, without preparing a
# request (which costs most of a crawl's time). Anything else takes the full path below.
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_URL = re.compile(rf"(https?)://({_LABEL}(?:\.{_LABEL})*)(?::([1-9][0-9]{{0,4}}))?(?:[/?#].*)?",
                        re.ASCII | re.DOTALL)


def request_origin(url: Any) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute http(s) URL, as `requests` will connect to it: the URL
    prepared as requests sends it, parsed by urllib3 (which opens the connection), with the
    scheme's default port filled in. This is what "the same host" means for a credential.

    ValueError, saying why, for anything the two URL parsers in play (urllib.parse, which most
    code uses, and urllib3) might read as different hosts: ``http://A\\@B/`` is host B to
    urlsplit and host A to urllib3. So a backslash, whitespace or a control character anywhere,
    user information (``@`` in the authority), a non-ASCII host, or any disagreement between the
    two on scheme, host or port refuses the URL; nothing is guessed."""
    if not isinstance(url, str):
        raise ValueError(f"expected a URL string, got {_kind(url)}")
    if "\\" in url:
        raise ValueError("contains a backslash (URL parsers disagree on where its host ends)")
    if _SPACE_OR_CONTROL.search(url):
        raise ValueError("contains whitespace or a control character")
    plain = _PLAIN_URL.fullmatch(url)
    if plain and (plain.group(3) is None or int(plain.group(3)) <= 65535):
        scheme = plain.group(1)
        return scheme, plain.group(2).lower(), int(plain.group(3) or DEFAULT_PORTS[scheme])
    return _full_request_origin(url)


def _full_request_origin(url: str) -> tuple[str, str, int]:
    try:
        split = urlsplit(url)
        split_port = split.port
        sent = urllib3.util.parse_url(requests.Request("GET", url).prepare().url)
    except (ValueError, requests.RequestException) as exc:    # urllib3's LocationParseError is a ValueError
        raise ValueError(f"cannot be parsed ({type(exc).__name__})") from None
    scheme = (sent.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or split.scheme.lower() != scheme:
        raise ValueError("is not an absolute http(s) URL")
    if "@" in split.netloc or sent.auth is not None:
        raise ValueError("has user information ('@') before its host")
    if not split.netloc.isascii():
        raise ValueError("has a non-ASCII host")
    host = (sent.host or "").lower().strip("[]")        # urllib3 keeps an IPv6 literal's brackets
    if not host:
        raise ValueError("has no host")
    port = sent.port or DEFAULT_PORTS[scheme]
    if split.hostname != host or (split_port or DEFAULT_PORTS[scheme]) != port:
        raise ValueError(f"URL parsers disagree on its host ({split.hostname}:{split_port} or {host}:{port})")
    return scheme, host, port


def http_url(v: Any) -> tuple[Any, str | None]:
    """An absolute http(s) URL whose host every parser reads the same (``request_origin``): a
    file://, relative or ambiguous URL is never stored, so it is never fetched."""
    try:
        request_origin(v)
    except ValueError as exc:
        return None, f"{short(v)} is not an absolute http(s) URL: {exc}"
    return v, None


def md5_hex(v: Any) -> tuple[Any, str | None]:
    if not isinstance(v, str):
        return None, f"expected 32 hex digits, got {_kind(v)}"
    return (v, None) if _MD5.fullmatch(v) else (None, f"{short(v)} is not 32 hex digits")


def timestamp(v: Any) -> tuple[Any, str | None]:
    """ISO 8601 text (Freesound writes ``2024-01-01T06:00:00`` or with a ``Z``/offset, FMA
    ``2008-11-26 01:48:12``) -> naive UTC datetime."""
    if not isinstance(v, str):
        return None, f"expected an ISO 8601 date, got {_kind(v)}"
    s = v.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        return None, f"{short(v)} is not an ISO 8601 date"
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t, None


def csv_int_in(lo: int, hi: int) -> Rule:
    inner = int_in(lo, hi)

    def rule(v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, str) or not DIGITS.fullmatch(v.strip()):
            return None, f"expected an integer, got {short(v)}"
        return inner(int(v.strip()))
    return rule


def csv_number_in(lo: float, hi: float) -> Rule:
    inner = number_in(lo, hi)

    def rule(v: Any) -> tuple[Any, str | None]:
        if not isinstance(v, str) or not _DECIMAL.fullmatch(v.strip()):
            return None, f"expected a number, got {short(v)}"
        return inner(float(v.strip()))
    return rule


def short(v: Any, n: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def raw_text(v: Any) -> str:
    """What a wrong-typed raw value was, as JSON (repr when it is not JSON): kept in
    ``license_raw`` so the gate sees an unrecognisable license, never a guessed one."""
    try:
        return json.dumps(v, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return repr(v)


class Fields:
    """Collects checked fields of one item: ``get`` returns the value or None, and remembers why."""

    def __init__(self, item: Mapping[str, Any]):
        self.item = item
        self.problems: dict[str, str] = {}

    def get(self, key: str, rule: Rule, *, name: str | None = None) -> Any:
        """The checked value of ``item[key]``; absent or null is None (no problem)."""
        v = self.item.get(key)
        if v is None:
            return None
        value, why = rule(v)
        if why is not None:
            self.problems[name or key] = why
        return value

    def check(self, name: str, value: Any, rule: Rule) -> Any:
        """The same for a value that is not simply ``item[key]`` (a nested or derived field)."""
        if value is None:
            return None
        out, why = rule(value)
        if why is not None:
            self.problems[name] = why
        return out

    def add(self, name: str, why: str) -> None:
        self.problems[name] = why


def malformed_reason(problems: Mapping[str, str]) -> str:
    return "malformed-record: " + "; ".join(f"{k}: {problems[k]}" for k in sorted(problems))


def record_decisions(problems: Mapping[str, Mapping[str, str]], previous: dict[str, dict[str, Any]], *,
                     config_hash: str) -> list[Decision]:
    """``record`` decisions for one batch ({recording_id: its problems, {} when clean}): a reject
    when an item has problems and its latest record decision is not that same reject; a pass
    only when a clean item's latest was a reject. Unchanged reruns write nothing. ``previous``
    (the latest record decision per recording) is updated in place."""
    out = []
    for rid, probs in problems.items():
        prev = previous.get(rid)
        if probs:
            reason = malformed_reason(probs)
            if prev and prev["verdict"] == "reject" and prev["reason"] == reason:
                continue
            out.append(Decision(rid, STAGE, "reject", reason, config_hash=config_hash,
                                details={"fields": dict(sorted(probs.items()))}))
            previous[rid] = {"verdict": "reject", "reason": reason}
        elif prev and prev["verdict"] == "reject":
            out.append(Decision(rid, STAGE, "pass", "record-valid: every field checks", config_hash=config_hash))
            previous[rid] = {"verdict": "pass", "reason": out[-1].reason}
    return out
