"""Near-replica grouping at the paper's scale: 486,492 synthetic 512-d unit vectors shaped like
audio embeddings (clusters of similar sounds, cosine ~0.5-0.8 within a cluster) with planted
replica groups (the paper found 3,693 Freesound + 856 FMA repeated recordings; cosine >= 0.95
to their original). Prints wall time per phase (train, assign, search, grouping) and peak
memory of sao's IVF self-join on all of them, and recall/precision against exact brute force
(blocked matrix products on the same engine) on a 50,000-vector subset, timing both side by
side. Target: all 486,492 in under 60 s, recall of planted replicas and precision >= 0.99.

    python bench/dedup_bench.py [N]
    python bench/dedup_bench.py --small    # 6,000 vectors, clusters and planted groups scaled down, the
                                           # IVF index forced (as at full size): a few seconds
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from sao.dedup import group_components, near_duplicate_edges

THRESHOLD = 0.95


def make_vectors(n: int, d: int = 512, clusters: int = 4000, groups: int = 4549, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, clusters, n)] + rng.standard_normal((n, d)).astype(np.float32) * 0.045
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # planted replicas: copies of an original with a little noise (re-encodes, gain changes, crops)
    originals = rng.choice(n, size=groups, replace=False)
    sizes = rng.integers(2, 5, groups)
    taken = set(originals.tolist())
    pool = np.setdiff1d(np.arange(n), originals)
    rng.shuffle(pool)
    planted, p = [], 0
    for o, s in zip(originals, sizes):
        members = [int(o)]
        for _ in range(s - 1):
            j = int(pool[p])
            p += 1
            v = x[o] + rng.standard_normal(d).astype(np.float32) * 0.008
            x[j] = v / np.linalg.norm(v)
            members.append(j)
            taken.add(j)
        planted.append(members)
    return x, planted


def brute_force_edges(x: np.ndarray, threshold: float, block: int = 4096) -> set[tuple[int, int]]:
    """Every pair compared: blocked matrix products with the same engine (torch) sao uses."""
    import torch
    xt = torch.from_numpy(np.ascontiguousarray(x))
    out = set()
    with torch.inference_mode():
        for a in range(0, len(x), block):
            i, j = torch.nonzero(xt[a:a + block] @ xt[a:].T >= threshold, as_tuple=True)
            keep = j > i
            out.update(zip((i[keep] + a).tolist(), (j[keep] + a).tolist()))
    return out


def main(n: int = 486_492, small: bool = False) -> None:
    t = time.perf_counter()
    # a small run keeps the paper's proportions: 4,000 clusters and 4,549 replica groups at 486,492
    scale = n / 486_492 if small else 1.0
    x, planted = make_vectors(n, clusters=max(20, round(4000 * scale)), groups=max(30, round(4549 * scale)))
    # at the full size the grouping uses the IVF self-join (n > exact_below); a small run forces it too
    ivf = {"exact_below": 0} if small else {}
    print(f"{n:,} vectors x 512 with {len(planted):,} planted replica groups "
          f"({sum(len(g) for g in planted):,} members), generated in {time.perf_counter() - t:.1f}s")

    t = time.perf_counter()
    pairs, sims, info = near_duplicate_edges(x, THRESHOLD, **ivf)
    res = group_components(n, pairs)
    full_s = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    label = res.labels
    found = sum(1 for g in planted for m in g[1:] if label[m] == label[g[0]])
    total = sum(len(g) - 1 for g in planted)
    # every reported pair checked again in float64: precision against the exact similarity
    exact = np.einsum("ij,ij->i", x[pairs[:, 0]].astype(np.float64), x[pairs[:, 1]].astype(np.float64))
    precision = float((exact >= THRESHOLD - 1e-6).mean()) if len(pairs) else 1.0
    print(f"\nsao grouping (faiss k-means cells + ivf self-join, nlist={info.get('nlist')}, "
          f"nprobe={info.get('nprobe')}, threshold {THRESHOLD}) on all {n:,}: {full_s:.1f}s, "
          f"peak RSS {peak:,.0f} MB (vectors {x.nbytes / 2**20:,.0f} MB)")
    phases = dict(info["seconds"], grouping=res.seconds)
    print("  " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()) + f"; cell imbalance {info.get('imbalance')}")
    print(f"  groups: {len(res.groups):,}; planted replicas recovered: {found:,}/{total:,} = {found / total:.4f}; "
          f"pairs {len(pairs):,}, precision (float64 recheck) {precision:.4f}")

    # the subset holds every planted group whole (so recall is measured on thousands of pairs)
    # and unrelated vectors up to 50,000
    sub = min(50_000, n)
    rng = np.random.default_rng(1)
    grouped = np.unique(np.concatenate([np.asarray(g) for g in planted]))[:sub]
    rest = np.setdiff1d(np.arange(n), grouped)
    xs = x[np.concatenate([grouped, rng.choice(rest, size=sub - len(grouped), replace=False)])]
    t = time.perf_counter()
    truth = brute_force_edges(xs, THRESHOLD)
    brute_s = time.perf_counter() - t
    t = time.perf_counter()
    p2, _, info2 = near_duplicate_edges(xs, THRESHOLD, exact_below=0)      # force the IVF join
    ivf_s = time.perf_counter() - t
    got = set(map(tuple, p2.tolist()))
    tp = len(got & truth)
    recall, prec = tp / max(1, len(truth)), tp / max(1, len(got))
    print(f"\n{sub:,}-vector subset, pairs with cosine >= {THRESHOLD}: {len(truth):,} by brute force, all planted groups included")
    print(f"  {'brute force, blocked matrix products':40s} {brute_s:7.1f}s   "
          f"(all {n:,} by brute force: about {brute_s * (n / sub) ** 2:,.0f}s)")
    print(f"  {'sao faiss IVF self-join':40s} {ivf_s:7.1f}s   recall {recall:.4f}  precision {prec:.4f}")
    limit = 60
    ok = full_s < limit and found / total >= 0.99 and precision >= 0.99 and recall >= 0.99 and prec >= 0.99
    print(f"  target: all {n:,} under {limit} s, planted recall, subset recall and precision >= 0.99 -> "
          f"{'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, help="vectors (default 486,492; 6,000 with --small)")
    ap.add_argument("--small", action="store_true", help="a few seconds: 6,000 vectors, IVF forced")
    a = ap.parse_args()
    main(a.n or (6000 if a.small else 486_492), small=a.small)
