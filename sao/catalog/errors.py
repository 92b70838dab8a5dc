"""The catalogue's errors and its clock (naive UTC, as every timestamp column holds it)."""
from __future__ import annotations

import datetime as dt


class CatalogError(ValueError):
    """Bad input to the catalogue; the message names the item and the reason."""


class CatalogInUse(CatalogError):
    """Another process holds the catalogue's DuckDB lock (transient: wait for it and retry)."""
    transient = True


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
