"""The one table of licenses the gate admits: canonical id, published names and keep rank.

Every reader takes these facts from here (the gate's allow-list, the published attribution
CSV's license form, the human name the attribution report groups by, Freesound's name with
version for its attribution line, the dedup keep rule's preference), so no second copy of
any of them can drift. A license not in this table is never admitted, whatever else knows it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AllowedLicense:
    canonical: str          # the id used everywhere: recordings.license_canonical, decisions, releases
    name: str               # human name, version included: per-license report tables keep versions apart
    published: str          # the published SAO attribution CSV's form; that format has no version
    family: str             # the license without its version (the paper counts licenses this way)
    freesound_name: str     # Freesound's "name with version", what its own attribution line writes
    spdx: str               # the SPDX identifier: the one license vocabulary of every output (shards, index,
                            # manifests, cards, Croissant); SPDX has no id for Sampling+, so a LicenseRef-
    deed_url: str           # written back out (attribution files, replicas): as Freesound serves it
    rank: int               # dedup keep order, the most permissive first (lower is kept)


# Rank: CC0 asks nothing, CC BY asks for attribution (4.0 has the clearer terms, so it beats
# 3.0), Sampling+ also restricts advertising use; the order sao.dedup.keep always used.
LICENSES: tuple[AllowedLicense, ...] = (
    AllowedLicense("cc0-1.0", "CC0 1.0", "cc0", "cc0", "Creative Commons 0", "CC0-1.0",
                   "http://creativecommons.org/publicdomain/zero/1.0/", 0),
    AllowedLicense("cc-by-4.0", "CC BY 4.0", "ccby", "cc-by", "Attribution 4.0", "CC-BY-4.0",
                   "https://creativecommons.org/licenses/by/4.0/", 1),
    AllowedLicense("cc-by-3.0", "CC BY 3.0", "ccby", "cc-by", "Attribution 3.0", "CC-BY-3.0",
                   "http://creativecommons.org/licenses/by/3.0/", 2),
    AllowedLicense("cc-sampling+-1.0", "CC Sampling+ 1.0", "ccsampling+", "cc-sampling+", "Sampling+",
                   "LicenseRef-CC-Sampling-Plus-1.0", "http://creativecommons.org/licenses/sampling+/1.0/", 3),
)
BY_ID: dict[str, AllowedLicense] = {row.canonical: row for row in LICENSES}
BY_SPDX: dict[str, AllowedLicense] = {row.spdx: row for row in LICENSES}
ALLOWED_LICENSES = frozenset(BY_ID)


def spdx_id(canonical: str) -> str:
    """The SPDX identifier of an admitted license ("CC-BY-4.0"). Raises for any other: an output
    never carries a license the gate does not admit, so there is nothing else to spell."""
    row = BY_ID.get(canonical)
    if row is None:
        raise ValueError(f"{canonical!r} is not an admitted license: it has no place in a release output")
    return row.spdx


def canonical_of(license_id: str) -> str:
    """The canonical id from either vocabulary (an SPDX id as outputs carry it, or the canonical id);
    exact match only, never a prefix or case fold."""
    if license_id in BY_ID:
        return license_id
    row = BY_SPDX.get(license_id)
    if row is None:
        raise ValueError(f"{license_id!r} is not an admitted license (canonical or SPDX id)")
    return row.canonical


def license_name(canonical: str) -> str:
    """The human name ("CC BY 4.0"); the canonical id for a license the table does not admit."""
    row = BY_ID.get(canonical)
    return row.name if row else canonical

