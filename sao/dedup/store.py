"""Embeddings in Parquet, keyed by content sha256 and model signature, so a refresh embeds
only new audio. Each run appends one part file (written to a temporary name, then renamed)."""
from __future__ import annotations

import datetime as dt
import pathlib

import numpy as np

from ..fsutil import atomic_path


def load_embeddings(folder: str | pathlib.Path, signature: str) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq
    out: dict[str, np.ndarray] = {}
    d = pathlib.Path(folder) / signature
    for part in sorted(d.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["content_sha256", "embedding"])
        for sha, emb in zip(t.column("content_sha256").to_pylist(), t.column("embedding").to_numpy(zero_copy_only=False)):
            out[sha] = np.asarray(emb, dtype=np.float32)
    return out


def append_embeddings(folder: str | pathlib.Path, signature: str, rows: dict[str, np.ndarray], origin: dict[str, str],
                      model: str, checkpoint_sha256: str | None) -> pathlib.Path | None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    if not rows:
        return None
    d = pathlib.Path(folder) / signature
    d.mkdir(parents=True, exist_ok=True)
    shas = sorted(rows)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    table = pa.table({
        "content_sha256": pa.array(shas, pa.string()),
        "embedding": pa.array([rows[s].tolist() for s in shas], pa.list_(pa.float32(), 512)),
        "origin": pa.array([origin.get(s, "computed") for s in shas], pa.string()),
        "model": pa.array([model] * len(shas), pa.string()),
        "checkpoint_sha256": pa.array([checkpoint_sha256] * len(shas), pa.string()),
        "computed_at": pa.array([now] * len(shas), pa.timestamp("us")),
    })
    dest = d / f"part-{now:%Y%m%dT%H%M%S%f}.parquet"
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
    return dest
