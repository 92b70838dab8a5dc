"""The attribution report's list of every work, as sidecar parts beside ``index.html``.

``works/part-0001.js`` ... each hold up to ``PART_ROWS`` works, in recording-id order, as one call
``saoWorks(PART, {"n": ROWS, "text": ..., "links": ..., "cleaned": {...}})``: a script, not data
fetched with fetch()/XHR, so the report folder still opens from disk (a browser refuses those for
file:// pages but runs a file:// <script src>). The page adds the parts it needs when they are
needed (the first at open; every part once a search or a sort asks for all works), so the page
itself stays small. One string per part, not an array per row, because a browser reads one long
string literal many times faster than half a million small arrays, and searches it as it is.

``text`` holds one line per work (``\n`` between works), its fields ``recording_id, title, author,
license, url`` apart by tabs (tabs, CR and LF inside a field become spaces, as HTML shows them);
``license`` is the license table's human name (as the report's license table shows it). ``links``
has one character per work and is the only thing the page script turns into a href: ``1`` the URL
itself is an allowed http(s) link, ``2`` only its cleaned form is (``cleaned[row]``), ``0`` the URL
stays text. Every part is JSON with "<", ">", "&", U+2028 and U+2029 escaped (``script_json``), so
no title can end or open a script element wherever a part is put.
"""
from __future__ import annotations

import json
import pathlib
import re
import urllib.parse
from typing import Any

from ..catalog import Catalog
from ..licensing.table import license_name

PART_ROWS = 25_000                      # works per sidecar part (~2-3 MB of script each)
LINK_SCHEMES = ("http", "https")        # the only URLs that become links; everything else is shown as text
# what a browser drops from a URL before reading its scheme: tab/CR/LF anywhere, C0 controls and
# spaces at either end (so "java\tscript:" and " javascript:" are javascript: to it)
_URL_DROPPED = str.maketrans("", "", "\t\r\n")
_URL_ENDS = "".join(map(chr, range(0x21)))
_URL_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# a URL that is plainly an http(s) link already (ASCII host name, optional port, printable ASCII
# path with no space or quote): link_url returns it unchanged without parsing it, the common case
_PLAIN_LINK = re.compile(r"(?i:https?)://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:[/?#][!#-~]*)?")
_SCRIPT_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                      "\u2028": "\\u2028", "\u2029": "\\u2029"})


def link_url(url: Any) -> str | None:
    """The URL to put in an href, or None when it must stay text: only an absolute http(s) URL with
    a host, read the way a browser reads it (exact scheme allow-list, case-insensitive)."""
    if not isinstance(url, str):
        return None
    if _PLAIN_LINK.fullmatch(url):
        return url
    cleaned = url.translate(_URL_DROPPED).strip(_URL_ENDS)
    if _URL_CONTROL.search(cleaned):
        return None
    try:
        parts = urllib.parse.urlsplit(cleaned)
        host = parts.hostname
    except ValueError:                  # e.g. an unbalanced [IPv6] host
        return None
    if parts.scheme.lower() not in LINK_SCHEMES or not host:
        return None
    return cleaned


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no "<", ">" or "&" (so no </script>, <!-- or <script
    can end the element or switch the HTML parser's script states) and no U+2028/2029."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_SCRIPT_JSON_ESCAPES)


def part_file(i: int) -> str:
    """The folder-relative name of part ``i`` (0-based): ``works/part-0001.js`` for the first."""
    return f"works/part-{i + 1:04d}.js"


def _field(column: str) -> str:
    """SQL: the column as a line's field: '' for NULL, tabs, CR and LF as spaces."""
    return f"translate(coalesce(CAST({column} AS VARCHAR), ''), E'\\t\\n\\r', '   ')"


def write_works(cat: Catalog, name: str, folder: pathlib.Path, part_rows: int = PART_ROWS) -> dict[str, Any]:
    """Writes ``folder/works/part-*.js``; returns the index the page embeds: {total, parts: [{file,
    rows, bytes}]}. A release without items gets one empty part. DuckDB builds the lines and
    recognises the plain links (``_PLAIN_LINK``); every other URL goes through ``link_url``."""
    if part_rows < 1:
        raise ValueError("part_rows must be at least 1")
    (folder / "works").mkdir()
    lics = sorted({r[0] for r in cat.con.execute("SELECT DISTINCT license_canonical FROM release_items "
                                                  "WHERE release_name = ?", [name]).fetchall()}, key=str)
    names = "".join(" WHEN license_canonical = ? THEN ?" for _ in lics)
    cur = cat.con.execute(
        f"WITH w AS (SELECT row_number() OVER (ORDER BY recording_id) - 1 AS i, concat_ws(E'\\t', "
        f"{_field('recording_id')}, {_field('title')}, {_field('author')}, "
        f"{_field(f'CASE{names} ELSE license_canonical END' if lics else 'license_canonical')}, {_field('url')}) "
        "AS line, url, coalesce(regexp_full_match(url, ?), false) AS plain FROM release_items WHERE release_name = ?) "
        "SELECT i // ? AS part, count(*), string_agg(line, E'\\n' ORDER BY i), "
        "string_agg(CASE WHEN plain THEN '1' ELSE '0' END, '' ORDER BY i), "
        "list(struct_pack(k := i % ?, url := url)) FILTER (WHERE NOT plain) FROM w GROUP BY part ORDER BY part",
        [*(x for c in lics for x in (c, license_name(c))), _PLAIN_LINK.pattern, name, part_rows, part_rows])
    parts: list[dict[str, Any]] = []
    for _, n, text, flags, others in cur.fetchall() or [(0, 0, "", "", None)]:
        links, cleaned = list(flags), {}
        for o in others or ():
            link = link_url(o["url"])
            if link is not None:
                links[o["k"]] = "1" if link == o["url"] else "2"
                if link != o["url"]:
                    cleaned[str(o["k"])] = link
        part = {"n": n, "text": text, "links": "".join(links), "cleaned": cleaned}
        data = f"saoWorks({len(parts)},{script_json(part)});\n".encode("utf-8")
        (folder / part_file(len(parts))).write_bytes(data)
        parts.append({"file": part_file(len(parts)), "rows": n, "bytes": len(data)})
    return {"total": sum(p["rows"] for p in parts), "parts": parts}


def read_part(path: str | pathlib.Path) -> tuple[int, list[dict[str, Any]]]:
    """One part as the page reads it: (its number, its works as {id, title, author, license, url,
    link}); ``link`` is the href the page makes, or None. For tests and checks."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    m = re.fullmatch(r"saoWorks\((\d+),(.*)\);\n", text, re.S)
    if not m:
        raise ValueError(f"{path}: not a works part")
    part = json.loads(m.group(2))
    rows = []
    for k, line in enumerate(part["text"].split("\n") if part["n"] else []):
        rid, title, author, lic, url = line.split("\t")
        flag = part["links"][k]
        rows.append({"id": rid, "title": title, "author": author, "license": lic, "url": url,
                     "link": url if flag == "1" else part["cleaned"][str(k)] if flag == "2" else None})
    if len(rows) != part["n"] or len(part["links"]) != part["n"]:
        raise ValueError(f"{path}: {part['n']} works announced, {len(rows)} found")
    return int(m.group(1)), rows
