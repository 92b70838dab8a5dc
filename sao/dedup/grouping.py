"""Grouping of repeated recordings.

Exact copies: identical content sha256 (or identical source md5). Near replicas: cosine
similarity of L2-normalised embeddings >= a threshold, found by an inverted-file self-join
(faiss k-means cells, one matrix product per cell), so the cost grows like N * N/nlist * nprobe,
not N^2. Edges of both kinds are merged into connected components (scipy), so a chain of
replicas is one group.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

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


def near_duplicate_edges(emb: np.ndarray, threshold: float, *, nlist: int | None = None, nprobe: int = 6,
                         exact_below: int = 20_000, points_per_cell: int = 32, kmeans_iters: int = 8,
                         block: int = 8192, threads: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pairs (i < j) with cosine >= threshold, and their similarities (float32, computed exactly).

    Up to ``exact_below`` vectors every pair is compared. Above it, an inverted-file self-join:
    spherical k-means (faiss) on a sample gives ``nlist`` cells, each vector lives in its nearest
    cell and is compared, by one matrix product per cell, with every vector that has that cell
    among its ``nprobe`` nearest. A pair is found when either member's cell is among the other's
    probes, so the search is approximate only in which pairs it looks at; every pair it reports is
    an exact inner product over the threshold. ``info["seconds"]`` has the time of each phase.
    """
    import torch
    if threads:
        torch.set_num_threads(threads)
    x = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = x.shape
    norms = np.linalg.norm(x, axis=1)
    if n and not np.allclose(norms[norms > 0], 1.0, atol=1e-3):
        x = x / np.maximum(norms[:, None], 1e-12)
    info: dict[str, Any] = {"n": n, "dim": d, "index": "flat" if n <= exact_below else "ivf", "seconds": {}}
    if n == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), info
    X = torch.from_numpy(x)
    thr = float(threshold)
    found_i, found_j, found_s = [], [], []
    with torch.inference_mode():
        if n <= exact_below:
            t = time.perf_counter()
            for a in range(0, n, block):
                s = X[a:a + block] @ X[a:].T        # only j >= a: each pair once
                i, j = torch.nonzero(s >= thr, as_tuple=True)
                keep = j > i
                found_i.append(i[keep] + a)
                found_j.append(j[keep] + a)
                found_s.append(s[i[keep], j[keep]])
            info["seconds"]["search"] = time.perf_counter() - t
        else:
            # the join costs about n*nlist (assignment) + n*n*nprobe/nlist (cells): sqrt(n) cells
            # balances them at the sizes the paper reports
            nlist = int(nlist or max(1, round(1.5 * math.sqrt(n))))
            nprobe = max(1, min(int(nprobe), nlist))
            info.update(nlist=nlist, nprobe=nprobe)
            t = time.perf_counter()
            centroids = _train_cells(x, nlist, points_per_cell, kmeans_iters)
            info["seconds"]["train"] = time.perf_counter() - t
            t = time.perf_counter()
            probes = torch.empty((n, nprobe), dtype=torch.int64)
            for a in range(0, n, 4 * block):
                probes[a:a + 4 * block] = (X[a:a + 4 * block] @ centroids.T).topk(nprobe, dim=1).indices
            home = probes[:, 0]
            order = torch.argsort(home, stable=True)
            members = X[order]                                   # cell by cell, contiguous
            counts = torch.bincount(home, minlength=nlist)
            starts = torch.cumsum(counts, 0) - counts
            cell_of_probe = probes.reshape(-1)
            by_cell = torch.argsort(cell_of_probe, stable=True)
            query_rows = torch.arange(n).repeat_interleave(nprobe)[by_cell]
            qcounts = torch.bincount(cell_of_probe, minlength=nlist)
            qstarts = torch.cumsum(qcounts, 0) - qcounts
            info["seconds"]["assign"] = time.perf_counter() - t
            t = time.perf_counter()
            work = 0
            for c in torch.nonzero(counts).flatten().tolist():
                a, m = int(starts[c]), int(counts[c])
                db = members[a:a + m]
                rows_all = query_rows[int(qstarts[c]):int(qstarts[c]) + int(qcounts[c])]
                step = max(1, (1 << 24) // m)                    # a bounded similarity block (64 MB)
                for q in range(0, len(rows_all), step):
                    rows = rows_all[q:q + step]
                    s = X[rows] @ db.T
                    work += s.numel()
                    i, j = torch.nonzero(s >= thr, as_tuple=True)
                    if len(i):
                        found_i.append(rows[i])
                        found_j.append(order[a + j])
                        found_s.append(s[i, j])
            info["seconds"]["search"] = time.perf_counter() - t
            # 1.0 when cells are even; the factor by which uneven cells cost more
            info["imbalance"] = round(work / max(1.0, n * nprobe * n / nlist), 3)
    if not found_i:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32), info
    i, j, s = torch.cat(found_i), torch.cat(found_j), torch.cat(found_s)
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    keep = lo != hi
    key, first = _unique_first(lo[keep] * n + hi[keep])  # a pair seen from both sides is kept once
    pairs = torch.stack([key // n, key % n], dim=1)
    return pairs.numpy().astype(np.int64), s[keep][first].numpy().astype(np.float32), info


def _unique_first(keys):
    import torch
    uniq, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(uniq),), len(keys), dtype=torch.int64).scatter_reduce(
        0, inverse, torch.arange(len(keys)), reduce="amin")
    return uniq, first


def _train_cells(x: np.ndarray, nlist: int, points_per_cell: int, iters: int):
    """Unit-norm cell centroids: faiss spherical k-means on a fixed-seed sample."""
    import faiss
    import torch
    n, d = x.shape
    rng = np.random.default_rng(0)
    sample = x[np.sort(rng.choice(n, size=min(n, max(nlist, points_per_cell * nlist)), replace=False))]
    km = faiss.Kmeans(d, nlist, niter=iters, spherical=True, seed=1, verbose=False,
                      max_points_per_centroid=points_per_cell, min_points_per_centroid=1)
    km.train(sample)
    return torch.from_numpy(np.ascontiguousarray(km.centroids, dtype=np.float32))


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
