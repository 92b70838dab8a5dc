"""Canonical license ids from license URLs, Freesound names and FMA license titles, by exact tables.

Freesound returns the deed URL (http or https, 3.0 and 4.0 coexist) and its search filter
uses four exact names; FMA's raw_tracks.csv has a title and a URL; the sample corpus
(Debian copyright files) uses SPDX ids. Everything maps to ids such as ``cc0-1.0``,
``cc-by-4.0``, ``cc-sampling+-1.0``, ``cc-by-nc-sa-3.0``.

Nothing here parses or guesses: a URL must be one of the known deed URLs up to the
variations CC itself serves (scheme, ``www.``, case, trailing slash, ``deed.<language>`` and
``legalcode[.<language>]`` pages in a language CC publishes, and for CC BY 3.0 one of its real
jurisdiction ports), with no query, fragment, userinfo, port or other host; a name must be one
of the known titles exactly as the source writes it. "Attribution" is a prefix of every
NC/ND/SA variant and "Attribution 4.0 NonCommercial" is not a jurisdiction, so anything not in
a table is ``unknown`` (which the gate rejects, showing the raw value).
"""
from __future__ import annotations

import re

from .table import BY_ID, LICENSES

UNKNOWN = "unknown"

# Creative Commons licenses the gate may meet, admitted or not: recognised so that a rejection
# names the license ("license-not-allowed: cc-by-nc-4.0") instead of "unknown".
_CC_VERSIONS = ("1.0", "2.0", "2.5", "3.0", "4.0")
_CC_KINDS = {kind: _CC_VERSIONS for kind in ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd")}
_CC_KINDS.update({"sampling": ("1.0",), "sampling+": ("1.0",), "nc-sampling+": ("1.0",)})


def _known() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(canonical -> deed URL, URL path -> canonical, canonical -> family) for every known license."""
    urls, paths, family = {}, {}, {}
    for kind, versions in _CC_KINDS.items():
        for ver in versions:
            cid = f"cc-{kind}-{ver}"
            urls[cid] = f"{'https' if ver == '4.0' else 'http'}://creativecommons.org/licenses/{kind}/{ver}/"
            paths[f"licenses/{kind}/{ver}"] = cid
            family[cid] = f"cc-{kind}"
    for kind, cid, fam in (("zero", "cc0-1.0", "cc0"), ("mark", "pdm-1.0", "pdm")):
        urls[cid] = f"http://creativecommons.org/publicdomain/{kind}/1.0/"
        paths[f"publicdomain/{kind}/1.0"] = cid
        family[cid] = fam
    for row in LICENSES:                          # the admitted ones are written out as the table says
        urls[row.canonical] = row.deed_url
        family[row.canonical] = row.family
    return urls, paths, family


CANONICAL_URLS, _URL_PATHS, _FAMILY = _known()
assert set(BY_ID) <= set(_URL_PATHS.values()), "every admitted license needs its deed URL recognised"

# Jurisdiction ports (/licenses/by/3.0/de/) carry the terms of the license they port. Admitted:
# only the ports of CC BY 3.0 (still CC BY 3.0 terms; 4.0 and CC0 have no ports, and ports of
# Sampling+ are not kept), and only those CC published. A path segment that merely looks like one
# (/by/3.0/nc/, /sa/, /xx/) is no port. Source: the ported licenses in CC's license RDF
# (github.com/cc-archive/cc.licenserdf, cc/licenserdf/licenses/creativecommons.org_licenses_by_3.0_<port>_.rdf:
# 39 ports) and the later Armenia, Azerbaijan and Canada ports that creativecommons.org serves
# (github.com/creativecommons/cc-legal-tools-data, docs/licenses/by/3.0/<port>/).
CC_BY_30_PORTS = frozenset({
    "am", "at", "au", "az", "br", "ca", "ch", "cl", "cn", "cr", "cz", "de", "ec", "ee", "eg", "es", "fr", "gr",
    "gt", "hk", "hr", "ie", "igo", "it", "lu", "nl", "no", "nz", "ph", "pl", "pr", "pt", "ro", "rs", "sg", "th",
    "tw", "ug", "us", "ve", "vn", "za",
})
# Every jurisdiction CC ever ported a license to (1.0 to 3.0; same sources): the ports of licenses
# the gate does not admit are recognised only so that their rejection names the license.
JURISDICTIONS = CC_BY_30_PORTS | frozenset({
    "ar", "be", "bg", "co", "dk", "fi", "hu", "il", "in", "jp", "kr", "mk", "mt", "mx", "my", "pe", "scotland",
    "se", "si", "uk",
})
_PORTS = {c: (CC_BY_30_PORTS if c == "cc-by-3.0" else JURISDICTIONS) for c in CANONICAL_URLS
          if c == "cc-by-3.0" or (c not in BY_ID and c.endswith(("-1.0", "-2.0", "-2.5", "-3.0"))
                                  and c.startswith("cc-by"))}

# The languages CC publishes its deeds in (creativecommons.org/licenses/list.en: the language menu;
# cc-legal-tools-data docs/licenses/by/4.0/deed.<lang>.html), lower-cased as URLs are compared, plus
# the older codes it still serves as redirects (deed.en-us, deed.es-es, deed.zh-cn, deed.zh-tw).
# "nc", "sa", "nd" and "nc-nd" are no language: such a page name never passes.
DEED_LANGUAGES = frozenset({
    "an", "ar", "az", "be", "bg", "bn", "ca", "cs", "da", "de", "el", "en", "eo", "es", "et", "eu", "fa", "fi",
    "fr", "fy", "ga", "gl", "hi", "hr", "hu", "id", "is", "it", "ja", "ko", "lt", "lv", "ms", "nl", "no", "pl",
    "pt", "pt-br", "ro", "ru", "sk", "sl", "sr-latn", "sv", "tr", "uk", "zh-hans", "zh-hant",
    "en-us", "es-es", "zh-cn", "zh-tw",
})
# A legal-code page is in one of those languages or in one of the few that only legal codes are
# translated into: Maori (legalcode.mi of 4.0), Armenian (the am port), Asturian, Occitan and Aranese
# (the es port), Serbian in Cyrillic (the rs port); same sources.
LEGALCODE_LANGUAGES = DEED_LANGUAGES | frozenset({"mi", "hy", "ast", "oc-aranes", "oci", "sr", "sr-cyrl"})

# The whole URL, lower-cased; fullmatch, so nothing may follow (no query, fragment, params,
# a second URL after a newline), and the host is spelled out so userinfo, ports and lookalike
# hosts never match. The port and the language are captured loosely and then looked up in the
# lists above; the language of a deed or legal-code page does not change the license.
_URL = re.compile(
    r"https?://(?:www\.)?creativecommons\.org/"
    r"(?P<path>(?:licenses|publicdomain)/[a-z+-]+/\d\.\d)"
    r"(?:/(?P<port>[a-z]{2,8}))?"
    r"(?:/|/deed\.(?P<deed>[a-z_-]{2,9})|/legalcode(?:\.(?P<legalcode>[a-z_-]{2,9}))?)?")


# Freesound's license names, exactly (its search matches them case-sensitively). "Attribution"
# covers 3.0 and 4.0 alike: only the family, the version must come from the deed URL.
FREESOUND_NAMES = {
    "Creative Commons 0": "cc0-1.0",
    "Attribution": "cc-by",
    "Attribution NonCommercial": "cc-by-nc",
    "Sampling+": "cc-sampling+-1.0",
}

# FMA license titles, exactly as raw_tracks.csv / tracks.csv write them (the top titles of the
# fma_metadata dump and those seen in real FMA metadata; shared/reference/data_pipeline.md).
# Version-less titles map to the family only. A title not listed here is unknown.
FMA_TITLES = {
    "Attribution": "cc-by",
    "Creative Commons Attribution": "cc-by",
    "Attribution 3.0 United States": "cc-by-3.0",
    "Attribution 3.0 International": "cc-by-3.0",
    "Attribution 4.0 International": "cc-by-4.0",
    "CC0 1.0 Universal": "cc0-1.0",
    "Public Domain Mark 1.0": "pdm-1.0",
    "Attribution-ShareAlike": "cc-by-sa",
    "Attribution-Share Alike 3.0 United States": "cc-by-sa-3.0",
    "Attribution-NoDerivatives 3.0 International": "cc-by-nd-3.0",
    "Attribution-NoDerivatives 4.0 International": "cc-by-nd-4.0",
    "Attribution-NonCommercial": "cc-by-nc",
    "Attribution-NonCommercial 3.0 International": "cc-by-nc-3.0",
    "Attribution-Noncommercial 3.0 United States": "cc-by-nc-3.0",
    "Attribution-NonCommercial-ShareAlike": "cc-by-nc-sa",
    "Attribution-NonCommercial-ShareAlike 3.0 International": "cc-by-nc-sa-3.0",
    "Attribution-Noncommercial-Share Alike 3.0 United States": "cc-by-nc-sa-3.0",
    "Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International": "cc-by-nc-nd-3.0",
    "Attribution-Noncommercial-No Derivative Works 3.0 United States": "cc-by-nc-nd-3.0",
    "Attribution-Noncommercial-No Derivative Works 3.0 Germany": "cc-by-nc-nd-3.0",
    "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0": "cc-by-nc-nd-4.0",
}

# SPDX ids (SPDX matches them case-insensitively, so the key is lower-cased), as the sample
# corpus and Debian copyright files write them.
_SPDX = {c: c for c in CANONICAL_URLS if c.startswith("cc")}
_SPDX.update({"cc-sampling-plus-1.0": "cc-sampling+-1.0", "gpl-2.0-only": "gpl-2.0", "gpl-2.0-or-later": "gpl-2.0+",
              "gpl-3.0-or-later": "gpl-3.0+", "free-art-1.2": "free-art-1.2", "public-domain": "public-domain"})

_NAMES = {**FMA_TITLES, **FREESOUND_NAMES}
assert all(FMA_TITLES.get(k, v) == v for k, v in FREESOUND_NAMES.items()), "a name means one license"
_FAMILY.update({c: c for c in _NAMES.values() if c not in _FAMILY})      # version-less ids are families


def canonical_license(raw: object) -> str:
    """Map a license URL or name to a canonical id; ``unknown`` when it is not exactly a known form.

    A bare family (``cc-by``) is returned when the source gives no version (Freesound's
    "Attribution" name, some FMA titles): callers that need the version must read it from a URL.
    Surrounding whitespace is ignored (CSV cells, JSON strings); nothing inside is normalised.
    """
    if not isinstance(raw, str):
        return UNKNOWN
    text = raw.strip()
    if not text:
        return UNKNOWN
    if "://" in text or text.startswith("//"):
        return _from_url(text)
    return _NAMES.get(text) or _SPDX.get(text.lower(), UNKNOWN)


def _from_url(text: str) -> str:
    if not text.isascii():                       # lookalike letters, zero-width spaces
        return UNKNOWN
    m = _URL.fullmatch(text.lower())
    if not m:
        return UNKNOWN
    canonical = _URL_PATHS.get(m.group("path"), UNKNOWN)
    port, deed, legalcode = m.group("port"), m.group("deed"), m.group("legalcode")
    if port is not None and port not in _PORTS.get(canonical, ()):
        return UNKNOWN
    # CC's older pages wrote pt_BR for pt-br; the underscore is that spelling, nothing more
    if deed is not None and deed.replace("_", "-") not in DEED_LANGUAGES:
        return UNKNOWN
    if legalcode is not None and legalcode.replace("_", "-") not in LEGALCODE_LANGUAGES:
        return UNKNOWN
    return canonical


def family(canonical: str) -> str:
    """cc-by-4.0 -> cc-by, cc-sampling+-1.0 -> cc-sampling+, cc-by -> cc-by; ``unknown`` for an id no table knows."""
    return _FAMILY.get(canonical, UNKNOWN)


def deed_url(canonical: str) -> str:
    """The deed URL for a canonical id ('' when there is none, e.g. GPL or unknown)."""
    return CANONICAL_URLS.get(canonical, "")
