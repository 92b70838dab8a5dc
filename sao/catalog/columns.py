"""The ``recordings`` columns as the catalogue stores them, and the exact type rule for each:
nothing is coerced on the way in (Arrow would store ``True`` as 1, ``1005.7`` as 1005 and NaN
as a duration), so every record is checked against these before it is written."""
from __future__ import annotations

import datetime as dt
import json
import math
import numbers
import re
from typing import Any

import pyarrow as pa

_REC_COLUMNS = ("recording_id", "source", "source_id", "title", "author", "description", "tags", "duration",
                "sample_rate", "channels", "license_raw", "license_canonical", "license_url", "page_url",
                "audio_url", "preview_url", "md5", "content_sha256", "audio_path", "created_at", "crawl_time",
                "first_seen", "extra")
_REC_REQUIRED = ("source", "source_id", "crawl_time")
_REC_ARROW = {c: pa.string() for c in _REC_COLUMNS}
_REC_ARROW.update(tags=pa.list_(pa.string()), duration=pa.float64(), sample_rate=pa.int32(), channels=pa.int32(),
                  created_at=pa.timestamp("us"), crawl_time=pa.timestamp("us"), first_seen=pa.timestamp("us"))


def _fits(value: Any, typ: pa.DataType) -> bool:
    try:
        pa.array([value], type=typ)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False


_REC_TEXT = tuple(c for c in _REC_COLUMNS if _REC_ARROW[c] == pa.string() and c not in ("source_id", "extra"))
_REC_TIMES = ("created_at", "crawl_time", "first_seen")
_INT32_MAX = 2**31 - 1


# a lone UTF-16 surrogate ("\\ud83c" in JSON decodes to one) is no character: no UTF-8 text holds it
_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(v: Any) -> str | None:
    if type(v) is str and v.isascii():          # the common case, first
        return None
    if not isinstance(v, str):
        return f"expected a string, got {type(v).__name__}"
    if not v.isascii() and _SURROGATE.search(v):
        return "contains a lone UTF-16 surrogate (not a character)"
    return None


def _source_id(v: Any) -> str | None:
    if isinstance(v, str):
        return _text(v)
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    return None if ok else f"expected a string or an integer, got {type(v).__name__}"


def _duration(v: Any) -> str | None:
    if type(v) is float:                         # the common case, without the ABC check below
        return None if math.isfinite(v) and v >= 0 else "expected a finite number >= 0"
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return f"expected a number, got {type(v).__name__}"
    try:
        return None if math.isfinite(v) and v >= 0 else "expected a finite number >= 0"
    except OverflowError:                # an integer beyond any float
        return "expected a finite number >= 0"


def _int32(v: Any) -> str | None:
    if type(v) is int:                           # the common case, without the ABC check below
        return None if 1 <= v <= _INT32_MAX else f"expected an integer from 1 to {_INT32_MAX}"
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        return f"expected an integer, got {type(v).__name__}"
    return None if 1 <= v <= _INT32_MAX else f"expected an integer from 1 to {_INT32_MAX}"


def _time(v: Any) -> str | None:
    return None if isinstance(v, dt.datetime) else f"expected a datetime, got {type(v).__name__}"


def _extra(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"expected an object, got {type(v).__name__}"
    try:
        extra_json(v)
    except (TypeError, ValueError) as exc:
        return f"not JSON: {exc}"
    return None


_EXTRA_JSON = json.JSONEncoder(sort_keys=True, allow_nan=False)     # made once: json.dumps makes one per call


def extra_json(v: dict) -> str:
    """The stored text of ``extra`` (sorted keys; NaN and infinities refused: not JSON; a lone
    UTF-16 surrogate refused: written as an escape, DuckDB's JSON refuses it, failing a batch)."""
    text = _EXTRA_JSON.encode(v)
    if "\\ud" in text:                 # a surrogate's escape (rare): is it one, or a text saying "\\ud"?
        try:
            json.dumps(v, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains a lone UTF-16 surrogate (not a character)") from None
    return text


# the type rule of each column that has one (tags are checked on their own, element by element)
_CHECKS = {c: _text for c in _REC_TEXT} | {"source_id": _source_id, "duration": _duration, "sample_rate": _int32,
                                           "channels": _int32, "extra": _extra} | {c: _time for c in _REC_TIMES}


def _column_problem(c: str, v: Any) -> str | None:
    """Why ``v`` is not exactly of column ``c``'s type (None when it is). Nothing is coerced:
    Arrow would store ``True`` as 1, ``1005.7`` as 1005 and NaN as a duration."""
    if v is None or c not in _CHECKS:
        return None
    return _CHECKS[c](v)
