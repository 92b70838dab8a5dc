"""Releases and attribution: immutable release snapshots, the published attribution files, the
per-release report, and take-down impact."""
from .policy import EXCLUSION_REASONS, PUBLISHED_COLUMNS, published_license
from .release import (ReleaseError, create_release, diff, get_release, latest_release, list_releases,
                      release_items, takedown_impact)

__all__ = ["EXCLUSION_REASONS", "PUBLISHED_COLUMNS", "ReleaseError", "create_release", "diff",
           "get_release", "latest_release", "list_releases", "published_license", "release_items",
           "takedown_impact"]
