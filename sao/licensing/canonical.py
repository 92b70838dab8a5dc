"""Canonical license ids from license URLs, Freesound names and FMA license titles.

Freesound returns the deed URL (http or https, 3.0 and 4.0 coexist); FMA's raw_tracks.csv
has a title and a URL; Debian copyright files use SPDX-like names. Everything maps to ids
such as ``cc0-1.0``, ``cc-by-4.0``, ``cc-sampling+-1.0``, ``cc-by-nc-sa-3.0``. Matching is exact:
"Attribution" is a prefix of every NC/ND/SA variant, so nothing here matches by prefix, and
anything not recognised is ``unknown`` (never silently allowed).
"""
from __future__ import annotations

import re
from urllib.parse import urlparse

UNKNOWN = "unknown"

# Canonical id -> deed URL written back out (attribution files, replicas).
CANONICAL_URLS = {
    "cc0-1.0": "http://creativecommons.org/publicdomain/zero/1.0/",
    "cc-by-3.0": "http://creativecommons.org/licenses/by/3.0/",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc-sampling+-1.0": "http://creativecommons.org/licenses/sampling+/1.0/",
    "cc-by-nc-3.0": "http://creativecommons.org/licenses/by-nc/3.0/",
    "cc-by-nc-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "cc-by-sa-2.0": "http://creativecommons.org/licenses/by-sa/2.0/",
    "cc-by-sa-3.0": "http://creativecommons.org/licenses/by-sa/3.0/",
    "cc-by-sa-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "cc-by-nd-4.0": "https://creativecommons.org/licenses/by-nd/4.0/",
    "pdm-1.0": "http://creativecommons.org/publicdomain/mark/1.0/",
}

_CC_PATH = re.compile(
    r"^/licenses/(?P<kind>by(?:-nc)?(?:-sa|-nd)?|sampling\+|nc-sampling\+)/(?P<ver>\d\.\d)(?:/(?P<port>[a-z]{2}))?/?"
    r"(?:deed(?:\.[a-zA-Z-]+)?|legalcode)?$")
_PD_PATH = re.compile(r"^/publicdomain/(?P<kind>zero|mark)/(?P<ver>\d\.\d)/?(?:deed(?:\.[a-z-]+)?|legalcode)?$")

# Exact names (lower-cased, whitespace-collapsed) -> canonical id.
_NAMES = {
    # Freesound filter names; "Attribution" has no version, so it maps to the family only.
    "creative commons 0": "cc0-1.0",
    "sampling+": "cc-sampling+-1.0",
    "attribution": "cc-by",
    "attribution noncommercial": "cc-by-nc",
    # SPDX ids and the names used in Debian copyright files
    "cc0-1.0": "cc0-1.0", "cc0 1.0 universal": "cc0-1.0", "cc0": "cc0-1.0",
    "cc-by-3.0": "cc-by-3.0", "cc-by-4.0": "cc-by-4.0",
    "cc-by-sa-2.0": "cc-by-sa-2.0", "cc-by-sa-3.0": "cc-by-sa-3.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc-by-nd-4.0": "cc-by-nd-4.0", "cc-by-nc-3.0": "cc-by-nc-3.0", "cc-by-nc-4.0": "cc-by-nc-4.0",
    "cc-sampling+-1.0": "cc-sampling+-1.0", "cc-sampling-plus-1.0": "cc-sampling+-1.0",
    # FMA license titles
    "attribution 3.0 international": "cc-by-3.0", "attribution 3.0 united states": "cc-by-3.0",
    "attribution 4.0 international": "cc-by-4.0", "creative commons attribution": "cc-by",
    "attribution-sharealike": "cc-by-sa", "attribution-share alike 3.0 united states": "cc-by-sa-3.0",
    "attribution-noncommercial": "cc-by-nc", "attribution-noncommercial 3.0 international": "cc-by-nc-3.0",
    "public domain mark 1.0": "pdm-1.0",
    "gpl-2.0-only": "gpl-2.0", "gpl-2.0-or-later": "gpl-2.0+", "gpl-3.0-or-later": "gpl-3.0+",
    "free-art-1.2": "free-art-1.2", "public-domain": "public-domain",
}


def canonical_license(raw: str | None) -> str:
    """Map a license URL or name to a canonical id; ``unknown`` when it cannot be identified.

    A bare family (``cc-by``) is returned when the source gives no version (Freesound's
    "Attribution" filter name, some FMA titles): callers that need the version must read it
    from a URL.
    """
    if raw is None:
        return UNKNOWN
    text = " ".join(str(raw).split())
    if not text:
        return UNKNOWN
    if "://" in text or text.startswith("//"):
        u = urlparse(text)
        host = (u.hostname or "").lower()
        if host not in ("creativecommons.org", "www.creativecommons.org", "i.creativecommons.org"):
            return UNKNOWN
        path = u.path
        if host == "i.creativecommons.org":    # image URLs: /l/by-nc-sa/3.0/us/88x31.png
            m = re.match(r"^/l/([a-z+-]+)/(\d\.\d)/", path)
            path = f"/licenses/{m.group(1)}/{m.group(2)}/" if m else ""
        m = _CC_PATH.match(path)
        if m:
            return f"cc-{m.group('kind')}-{m.group('ver')}"
        m = _PD_PATH.match(path)
        if m:
            return f"{'cc0' if m.group('kind') == 'zero' else 'pdm'}-{m.group('ver')}"
        return UNKNOWN
    known = _NAMES.get(text.lower())
    if known:
        return known
    return _parse_cc_title(text)


_TITLE = re.compile(r"^(?:creative commons\s+)?attribution(?P<rest>.*)$", re.IGNORECASE)


def _parse_cc_title(text: str) -> str:
    """Parse CC license titles as FMA writes them, e.g. 'Attribution-Noncommercial-Share Alike
    3.0 United States' -> cc-by-nc-sa-3.0. Anything with leftover words is ``unknown``."""
    m = _TITLE.match(text.strip())
    if not m:
        return UNKNOWN
    rest = m.group("rest").lower()
    rest = re.sub(r"\(aka music sharing\)", " ", rest)
    version = None
    vm = re.search(r"\b(\d\.\d)\b", rest)
    if vm:
        version = vm.group(1)
        tail = rest[vm.end():].strip()
        # jurisdiction ports ("United States", "Germany", "International") do not change the terms
        if tail and not re.fullmatch(r"[a-z ]+", tail):
            return UNKNOWN
        rest = rest[:vm.start()]
    parts = []
    for pat, tag in ((r"non-?commercial", "nc"), (r"no ?derivatives|no derivative works|no ?derivs", "nd"),
                     (r"share ?alike", "sa")):
        if re.search(pat, rest):
            parts.append(tag)
            rest = re.sub(pat, " ", rest)
    if re.sub(r"[\s,-]+", "", rest):
        return UNKNOWN          # words we do not understand: never guess
    if "nd" in parts and "sa" in parts:
        return UNKNOWN
    kind = "-".join(["cc-by", *parts])
    return f"{kind}-{version}" if version else kind


def deed_url(canonical: str) -> str:
    """The deed URL for a canonical id ('' when there is none, e.g. GPL or unknown)."""
    return CANONICAL_URLS.get(canonical, "")
