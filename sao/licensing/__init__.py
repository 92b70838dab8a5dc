"""License identification: turn what a source says into one canonical id (pure, no I/O)."""
from .canonical import CANONICAL_URLS, canonical_license, deed_url

__all__ = ["canonical_license", "deed_url", "CANONICAL_URLS"]
