"""Repeated-recording detection: exact copies by content hash, near replicas by embedding
similarity through an inverted-file self-join, one kept member per group by a documented rule."""
from .grouping import GroupResult, exact_edges, group_components, near_duplicate_edges
from .keep import keep_order, pick_kept

__all__ = ["GroupResult", "exact_edges", "group_components", "keep_order", "near_duplicate_edges", "pick_kept"]
