"""FMA metadata review (paper section 3): each FMA track's title and artist are matched,
normalised and fuzzily (rapidfuzz), against a catalogue of copyrighted recordings held in
DuckDB. Any potential match goes to human review; the reviewer sees the matching rows.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import re
import unicodedata
from typing import Any

from ..catalog import Catalog, CatalogError

_FEAT = re.compile(r"\b(feat\.?|featuring|ft\.?)\b.*$")
_BRACKETS = re.compile(r"[\(\[].*?[\)\]]")


def normalise(text: str | None) -> str:
    """Lower case, no accents, no bracketed remarks or 'feat.' credits, punctuation to spaces."""
    t = unicodedata.normalize("NFKD", text or "")
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = _BRACKETS.sub(" ", t)
    t = _FEAT.sub(" ", t)
    t = t.replace("&", " and ")
    t = re.sub(r"[^a-z0-9]+", " ", t)
    t = re.sub(r"^the ", "", t.strip())
    return " ".join(t.split())


def load_catalogue(cat: Catalog, path: str | pathlib.Path) -> int:
    """Load a CSV or Parquet of copyrighted recordings (artist, title[, album, year]) into
    ``copyright_catalogue``, replacing earlier rows from the same file."""
    import pandas as pd
    p = pathlib.Path(path)
    if not p.is_file():
        raise CatalogError(f"copyright catalogue {p} does not exist")
    df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype=str, keep_default_na=False)
    cols = {c.lower(): c for c in df.columns}
    if "title" not in cols:
        raise CatalogError(f"copyright catalogue {p}: needs a 'title' column (has {list(df.columns)})")
    get = lambda row, c: str(row[cols[c]]).strip() if c in cols and row[cols[c]] is not None else ""  # noqa: E731
    rows = []
    for _, row in df.iterrows():
        title = get(row, "title")
        if not title:
            continue
        year = get(row, "year")
        entry = hashlib.sha1(f"{p.name}\x1f{get(row, 'artist')}\x1f{title}\x1f{get(row, 'album')}".encode()).hexdigest()
        rows.append([entry, get(row, "artist"), title, get(row, "album"), int(year) if year.isdigit() else None,
                     p.name, normalise(get(row, "artist")), normalise(title)])
    with cat.transaction():
        cat.con.execute("DELETE FROM copyright_catalogue WHERE source = ?", [p.name])
        if rows:
            import pyarrow as pa
            names = ["entry_id", "artist", "title", "album", "year", "source", "artist_norm", "title_norm"]
            table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})
            cat.con.register("_sao_cc", table)
            try:
                cat.con.execute("INSERT INTO copyright_catalogue SELECT DISTINCT ON (entry_id) * FROM _sao_cc")
            finally:
                cat.con.unregister("_sao_cc")
    return len(rows)


class NoCatalogue(CatalogError):
    """Tracks wait to be matched and no copyright catalogue is loaded."""


def require_catalogue(catalogue_rows: int, waiting: int) -> None:
    """An empty catalogue would pass every track unchecked ("no match against 0 recordings"):
    refuse instead when any track waits to be matched. There is no built-in default catalogue."""
    if waiting and not catalogue_rows:
        raise NoCatalogue(f"no copyright catalogue loaded: {waiting} FMA track(s) cannot be matched and stay "
                           "pending; set [review].copyright_catalogue to a CSV/Parquet of copyrighted recordings "
                           "(artist,title[,album,year]) or run `sao review load-catalogue FILE`")


def find_matches(title: str, artist: str, catalogue: list[dict[str, Any]], titles: list[str], *,
                 title_min: float = 90.0, limit: int = 5) -> list[dict[str, Any]]:
    """Catalogue rows whose normalised title scores >= ``title_min`` (rapidfuzz ratio);
    each with its title and artist scores. Title-only matches are potential matches too:
    a cover or re-upload can carry another artist name."""
    from rapidfuzz import fuzz, process
    q = normalise(title)
    if not q:
        return []
    hits = process.extract(q, titles, scorer=fuzz.ratio, score_cutoff=title_min, limit=limit * 4)
    out = []
    a = normalise(artist)
    for _, tscore, i in hits:
        row = catalogue[i]
        ascore = fuzz.token_set_ratio(a, row["artist_norm"]) if a and row["artist_norm"] else 0.0
        out.append({"entry_id": row["entry_id"], "artist": row["artist"], "title": row["title"],
                    "album": row["album"], "year": row["year"], "title_score": round(tscore, 1),
                    "artist_score": round(ascore, 1), "score": round(0.7 * tscore + 0.3 * ascore, 1)})
    return sorted(out, key=lambda r: -r["score"])[:limit]


def catalogue_version(rows: list[dict[str, Any]]) -> str:
    """sha256 over the loaded catalogue rows (as ``run_fma_review`` reads them, in entry order): a
    review decision names the catalogue it checked, and a changed catalogue re-checks every track."""
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps([r.get(k) for k in ("entry_id", "artist", "title", "album", "year", "artist_norm",
                                                "title_norm")], default=str).encode())
        h.update(b"\n")
    return h.hexdigest()
