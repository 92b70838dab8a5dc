"""FMA ingestion from an ``fma_metadata`` folder and its ``fma_large/NNN/NNNNNN.mp3`` tree.

``tracks.csv`` has two header rows (read with ``header=[0, 1]``) and keeps only the license
title; ``raw_tracks.csv`` adds ``license_url`` and ``track_url``. A track whose audio file is
missing is recorded with an ``audio`` decision saying so, never dropped silently. Tracks that
disappear from a newer dump get a take-down.
"""
from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import logging
import os
import pathlib
import shutil
import time
from typing import Any

from ..audio import AudioDecodeError, file_digests, probe
from ..catalog import Catalog, Decision
from ..fsutil import atomic_path
from ..licensing import resolve_license, tasl
from ..log import progress

log = logging.getLogger(__name__)
SOURCE = "fma"


@dataclasses.dataclass
class FmaStats:
    tracks: int = 0
    with_audio: int = 0
    audio_missing: int = 0
    audio_corrupt: int = 0
    removed: int = 0
    seconds: float = 0.0


def audio_relpath(track_id: int) -> str:
    tid = f"{int(track_id):06d}"
    return f"{tid[:3]}/{tid}.mp3"


def _literal_list(value: Any) -> list:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            v = ast.literal_eval(value)
            return list(v) if isinstance(v, (list, tuple)) else []
        except (ValueError, SyntaxError):
            return []
    return []


def _s(v: Any) -> str:
    import pandas as pd
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v)


def read_fma_metadata(root: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per track joining tracks.csv, raw_tracks.csv and genres.csv."""
    import pandas as pd
    md = pathlib.Path(root) / "fma_metadata"
    for name in ("tracks.csv", "raw_tracks.csv"):
        if not (md / name).is_file():
            raise FileNotFoundError(f"{md / name}: missing (expected an fma_metadata folder)")
    tracks = pd.read_csv(md / "tracks.csv", index_col=0, header=[0, 1], low_memory=False)
    raw = pd.read_csv(md / "raw_tracks.csv", index_col=0, low_memory=False)
    genres = {}
    if (md / "genres.csv").is_file():
        g = pd.read_csv(md / "genres.csv", index_col=0)
        genres = {int(i): str(t) for i, t in g["title"].items()}
    out = []
    for tid, row in tracks.iterrows():
        r = raw.loc[tid] if tid in raw.index else None
        get = lambda top, col: _s(row.get((top, col)))  # noqa: E731
        rawget = lambda col: _s(r.get(col)) if r is not None else ""  # noqa: E731
        genre_ids = _literal_list(get("track", "genres"))
        out.append({
            "track_id": int(tid),
            "title": get("track", "title") or rawget("track_title"),
            "artist": get("artist", "name") or rawget("artist_name"),
            "album": get("album", "title") or rawget("album_title"),
            "genres": [genres.get(int(x), str(x)) for x in genre_ids],
            "tags": [str(t) for t in _literal_list(get("track", "tags"))],
            "license_title": get("track", "license") or rawget("license_title"),
            "license_url": rawget("license_url"),
            "track_url": rawget("track_url"),
            "date_created": get("track", "date_created"),
            "date_recorded": get("track", "date_recorded") or rawget("track_date_recorded"),
            "duration": get("track", "duration"),
            "information": rawget("track_information"),
        })
    return out


def _store_copy(src: pathlib.Path, store: pathlib.Path, sha: str) -> pathlib.Path:
    dst = store / sha[:2] / sha[2:4] / f"{sha}{src.suffix.lower()}"
    if dst.exists():
        return dst
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def source_digest(root: str | os.PathLike, audio_dir: str = "fma_large") -> str:
    """sha256 over the metadata files' bytes and the audio folder's listing (path, size, mtime):
    equal digests mean an ingest would read exactly what the last one read."""
    import hashlib
    root = pathlib.Path(root)
    h = hashlib.sha256()
    md = root / "fma_metadata"
    for name in sorted(p.name for p in md.glob("*.csv")) if md.is_dir() else []:
        h.update(name.encode() + b"\0")
        with open(md / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    audio = root / audio_dir
    listing = []
    for dirpath, _, files in os.walk(audio):
        for fn in files:
            st = os.stat(os.path.join(dirpath, fn))
            listing.append(f"{os.path.relpath(os.path.join(dirpath, fn), audio)}\0{st.st_size}\0{st.st_mtime_ns}")
    h.update("\n".join(sorted(listing)).encode())
    return h.hexdigest()


def ingest_fma(cat: Catalog, root: str | os.PathLike, *, audio_store: str | os.PathLike, config_hash: str,
               audio_dir: str = "fma_large") -> FmaStats:
    t0 = time.perf_counter()
    root = pathlib.Path(root)
    store = pathlib.Path(audio_store)
    stats = FmaStats()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    tracks = read_fma_metadata(root)
    records, decisions = [], []
    previous = cat.latest_decision_map("audio")
    for t in progress(tracks, desc="fma tracks", unit="track"):
        rid = f"{SOURCE}:{t['track_id']}"
        canonical, _ = resolve_license(t["license_url"] or None, t["license_title"] or None)
        year = (t["date_recorded"] or t["date_created"])[:4] if (t["date_recorded"] or t["date_created"]) else ""
        rec = {
            "source": SOURCE, "source_id": str(t["track_id"]), "title": t["title"], "author": t["artist"],
            "description": t["information"] or None, "tags": t["genres"] + t["tags"],
            "license_raw": t["license_url"] or t["license_title"] or None, "license_canonical": canonical,
            "license_url": t["license_url"] or None, "page_url": t["track_url"] or None, "crawl_time": now,
            "extra": {"license_title": t["license_title"], "album": t["album"], "genres": t["genres"],
                      "year": year, "attribution": tasl(title=t["title"], author=t["artist"],
                                                        source_url=t["track_url"], license_canonical=canonical,
                                                        license_url=t["license_url"])},
        }
        rel = f"{audio_dir}/{audio_relpath(t['track_id'])}"
        path = root / rel
        reason = None
        if not path.is_file():
            reason, stats.audio_missing = f"audio-missing: {rel} not found", stats.audio_missing + 1
        else:
            try:
                info = probe(path)
                rec.update(duration=info.duration, sample_rate=info.sample_rate, channels=info.channels)
                sha, md5 = file_digests(path)
                stored = _store_copy(path, store, sha)
                rec.update(md5=md5, content_sha256=sha, audio_path=str(stored.relative_to(store)),
                           audio_url=rel)
                stats.with_audio += 1
            except AudioDecodeError as exc:
                reason, stats.audio_corrupt = f"audio-corrupt: {exc}", stats.audio_corrupt + 1
        if reason:
            log.warning("%s: %s", rid, reason)
            if (previous.get(rid) or {}).get("reason") != reason:
                decisions.append(Decision(rid, "audio", "reject", reason, config_hash=config_hash))
        elif rid in previous and previous[rid]["verdict"] == "reject":
            decisions.append(Decision(rid, "audio", "pass", "audio-present", config_hash=config_hash))
        records.append(rec)
    present = {str(t["track_id"]) for t in tracks}
    already = cat.active_takedowns()
    with cat.transaction():
        cat.upsert_recordings(records)
        cat.add_decisions(decisions)
        for row in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE]):
            if row["source_id"] not in present and f"{SOURCE}:{row['source_id']}" not in already:
                cat.add_takedown(f"{SOURCE}:{row['source_id']}", "removed-at-source: not in the FMA metadata dump",
                                 "crawl")
                stats.removed += 1
    stats.tracks = len(tracks)
    stats.seconds = time.perf_counter() - t0
    return stats
