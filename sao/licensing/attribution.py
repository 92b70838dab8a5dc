"""Attribution fields in the TASL form (Title, Author, Source, License), and Freesound's own
attribution line. Pure functions over a crawled record."""
from __future__ import annotations

from .table import LICENSES

# Freesound's "name with version" of the admitted licenses (the table), and of the NonCommercial
# ones Freesound also offers: the crawl writes a line for every sound, admitted or not.
_NAMES = {row.canonical: row.freesound_name for row in LICENSES}
_NAMES.update({"cc-by-nc-3.0": "Attribution NonCommercial 3.0", "cc-by-nc-4.0": "Attribution NonCommercial 4.0"})
_SPDX = {row.canonical: row.spdx for row in LICENSES}


def license_name_with_version(canonical: str) -> str:
    """Freesound's 'name with version' (e.g. 'Attribution 4.0'); the canonical id otherwise."""
    return _NAMES.get(canonical, canonical)


def tasl(*, title: str, author: str, source_url: str, license_canonical: str, license_url: str) -> dict:
    return {
        "title": title or "(untitled)",
        "author": author or "(unknown author)",
        "source_url": source_url,
        "license": _SPDX.get(license_canonical, license_canonical),
        "license_name": license_name_with_version(license_canonical),
        "license_url": license_url,
    }


def freesound_attribution_line(*, name: str, username: str, sound_id: int | str, license_canonical: str,
                               site: str = "https://freesound.org") -> str:
    """``"{name} by {username} -- https://freesound.org/s/{id}/ -- License: {license}"``, as
    Freesound's own attribution text."""
    return (f"{name} by {username} -- {site.rstrip('/')}/s/{sound_id}/ -- "
            f"License: {license_name_with_version(license_canonical)}")


# Freesound's attribution text of a remix (``Sound.attribution_texts``, plain text): its own line,
# then each source's attribution text, joined by a blank line.
FREESOUND_SOURCES_SEPARATOR = "\n\n"


def freesound_remix_attribution(own_line: str, source_lines: list[str]) -> str:
    """A remix's attribution as Freesound writes it: its own line, then its sources' lines (in
    Freesound's order, sources of sources included), each after a blank line."""
    return FREESOUND_SOURCES_SEPARATOR.join([own_line, *source_lines])


def attribution_line(*, title: str | None, author: str | None, url: str | None, license_canonical: str,
                     license_url: str | None = None, freesound_line: str | None = None) -> str:
    """Freesound's own line for Freesound items; otherwise a TASL line: title, author, source link,
    license with version and link."""
    if freesound_line:
        return freesound_line
    lic = license_name_with_version(license_canonical)
    return (f"{title or '(untitled)'} by {author or '(unknown author)'} -- {url or ''} -- License: {lic}"
            + (f" ({license_url})" if license_url else ""))
