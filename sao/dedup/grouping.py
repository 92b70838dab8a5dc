"""Grouping of repeated recordings.

Exact copies: identical content sha256 (or identical source md5). Near replicas: cosine
similarity of L2-normalised embeddings >= a threshold, found with a faiss inverted-file
index (IVF, inner product) and a range search, so the cost grows like N * N/nlist * nprobe,
not N^2. Edges of both kinds are merged into connected components (scipy), so a chain of
replicas is one group.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class GroupResult:
    labels: np.ndarray                          # component id per item
    groups: list[np.ndarray]                    # indices of members, only groups of 2+
    edges: int = 0
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)


def exact_edges(keys: list[str | None]) -> np.ndarray:
    """Edges (i, j) between items with the same non-empty key (star around the first)."""
    first: dict[str, int] = {}
    edges = []
    for i, k in enumerate(keys):
        if not k:
            continue
        if k in first:
            edges.append((first[k], i))
        else:
            first[k] = i
    return np.asarray(edges, np.int64).reshape(-1, 2)


def near_duplicate_edges(emb: np.ndarray, threshold: float, *, nlist: int | None = None, nprobe: int = 8,
                         exact_below: int = 20_000, batch: int = 16_384, train_size: int = 120_000,
                         threads: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pairs (i < j) with cosine >= threshold, and their similarities."""
    import faiss
    if threads:
        faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = x.shape
    norms = np.linalg.norm(x, axis=1)
    if n and not np.allclose(norms[norms > 0], 1.0, atol=1e-3):
        x = x / np.maximum(norms[:, None], 1e-12)
    info = {"n": n, "dim": d, "index": "flat" if n <= exact_below else "ivf"}
    if n == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), info
    if n <= exact_below:
        index = faiss.IndexFlatIP(d)
    else:
        # many small cells and few probes: replicas (cosine >= 0.9) share a cell with their original
        nlist = nlist or int(8 * math.sqrt(n))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = x[rng.choice(n, size=min(n, train_size), replace=False)]
        index.train(sample)
        index.nprobe = nprobe
        info.update(nlist=nlist, nprobe=nprobe)
    index.add(x)
    pairs, sims = [], []
    for start in range(0, n, batch):
        lims, dist, ids = index.range_search(x[start:start + batch], float(threshold))
        q = np.repeat(np.arange(start, min(n, start + batch)), np.diff(lims).astype(np.int64))
        keep = ids > q                      # each pair once, no self pairs
        pairs.append(np.stack([q[keep], ids[keep]], axis=1))
        sims.append(dist[keep])
    return np.concatenate(pairs).astype(np.int64), np.concatenate(sims).astype(np.float32), info


def group_components(n: int, *edge_sets: np.ndarray) -> GroupResult:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    t = time.perf_counter()
    e = np.concatenate([es for es in edge_sets if len(es)]) if any(len(es) for es in edge_sets) else \
        np.zeros((0, 2), np.int64)
    g = coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [grp for grp in np.split(order, bounds) if len(grp) > 1]
    return GroupResult(labels, groups, edges=len(e), seconds=time.perf_counter() - t)
