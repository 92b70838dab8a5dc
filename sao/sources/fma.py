"""FMA ingestion from an ``fma_metadata`` folder and its ``fma_large/NNN/NNNNNN.mp3`` tree.

``tracks.csv`` has two header rows (read with ``header=[0, 1]``) and keeps only the license
title; ``raw_tracks.csv`` adds ``license_url`` and ``track_url``. A track whose audio file is
missing is recorded with an ``audio`` decision saying so, never dropped silently; a file that is
not audio (a MIDI file, say) is rejected with a reason that says what it is. Tracks that
disappear from a newer dump get a take-down.

Every cell is read as its verbatim text and checked per row (track_id, durations, bit rates,
dates, license and track URLs, genre and tag lists): a bad field is stored NULL with a
``record`` reject; a row whose track_id is unusable is counted and skipped. Audio is copied
into the store only for tracks the license gate's pure function admits, so no share-alike
or unknown-license audio is ever stored; a track re-licensed later gets its audio then.
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
from ..catalog import Catalog, CatalogError, Decision
from ..fsutil import atomic_path, audio_ext, safe_join
from ..licensing import LicensePolicy, license_gate, resolve_license, tasl
from ..log import progress
from . import record_checks as rc

log = logging.getLogger(__name__)
SOURCE = "fma"


@dataclasses.dataclass
class FmaStats:
    tracks: int = 0
    with_audio: int = 0       # tracks whose file is there and decodes
    withheld: int = 0         # ... whose audio was not copied: the gate (or a take-down, a bad record) refuses them
    audio_missing: int = 0
    audio_corrupt: int = 0
    malformed: int = 0        # rows that could not be stored (unusable track_id, NUL byte)
    malformed_fields: int = 0  # tracks stored with bad fields left NULL and a ``record`` reject
    removed: int = 0
    audio_seconds: float = 0.0  # probed duration of the audio copied into the store
    seconds: float = 0.0
    refused: dict = dataclasses.field(default_factory=dict)   # row label -> why it could not be stored


def audio_relpath(track_id: int) -> str:
    tid = f"{int(track_id):06d}"
    return f"{tid[:3]}/{tid}.mp3"


_MAX_LITERAL_CHARS = 20_000


def _literal_list(item: type) -> rc.Rule:
    """A Python list literal of ``item`` values, as tracks.csv writes genres (``[21, 76]``) and tags."""
    def rule(v: Any) -> tuple[Any, str | None]:
        if not v.strip():
            return [], None
        if len(v) > _MAX_LITERAL_CHARS:          # literal_eval of a hostile megabyte costs seconds
            return None, f"a list literal of {len(v)} characters is longer than {_MAX_LITERAL_CHARS}"
        try:
            out = ast.literal_eval(v)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None, f"{rc.short(v)} is not a list literal"
        if not isinstance(out, list) or not all(type(x) is item for x in out):
            return None, f"{rc.short(v)} is not a list of {item.__name__}"
        return out, None
    return rule


_US_DATES = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y")    # raw_tracks.csv writes "11/26/2008 01:48:12 AM"


def fma_date(v: Any) -> tuple[Any, str | None]:
    """An FMA date: ISO (tracks.csv) or the US form of raw_tracks.csv."""
    for fmt in _US_DATES:
        try:
            return dt.datetime.strptime(v.strip(), fmt), None
        except ValueError:
            pass
    return rc.timestamp(v)


def _clock_duration(v: Any) -> tuple[Any, str | None]:
    """raw_tracks.csv's ``track_duration``: ``MM:SS`` or ``H:MM:SS``."""
    parts = v.strip().split(":")
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        return None, f"{rc.short(v)} is not MM:SS"
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return rc.number_in(0.0, rc.MAX_DURATION_S)(seconds)


_DURATION = rc.csv_number_in(0.0, rc.MAX_DURATION_S)
_BIT_RATE = rc.csv_int_in(1, rc.MAX_BIT_RATE)


def _read_csv(path: pathlib.Path, **kw):
    """Every cell as its verbatim text: no type guessing (a title "NA" or "1e5" stays text)."""
    import pandas as pd
    return pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False, low_memory=False, **kw)


def read_fma_metadata(root: str | os.PathLike) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(one dict per track joining tracks.csv, raw_tracks.csv and genres.csv, each with the
    ``problems`` of its fields; [(row label, why)] for rows whose track_id is unusable)."""
    md = pathlib.Path(root) / "fma_metadata"
    for name in ("tracks.csv", "raw_tracks.csv"):
        if not (md / name).is_file():
            raise FileNotFoundError(f"{md / name}: missing (expected an fma_metadata folder)")
    tracks = _read_csv(md / "tracks.csv", header=[0, 1])
    raw_rows = {}
    for label, r in _read_csv(md / "raw_tracks.csv").iterrows():
        try:
            raw_rows[rc.csv_item_id(label)] = r
        except rc.UnusableItem:
            pass            # reported once, with its tracks.csv row (a raw row alone is never stored)
    genres = {}
    if (md / "genres.csv").is_file():
        g = _read_csv(md / "genres.csv")
        genres = {int(i): str(t) for i, t in g["title"].items() if rc.DIGITS.fullmatch(str(i))}
    out, refused = [], []
    for label, row in tracks.iterrows():
        try:
            tid = rc.csv_item_id(label)
        except rc.UnusableItem as exc:
            refused.append((str(label), str(exc)))
            continue
        r = raw_rows.get(tid)
        get = lambda top, col, row=row: str(row.get((top, col), ""))  # noqa: E731
        rawget = lambda col, r=r: str(r.get(col, "")) if r is not None else ""  # noqa: E731
        f = rc.Fields({})
        genre_ids = f.check("genres", get("track", "genres"), _literal_list(int)) or []
        duration = get("track", "duration")
        duration = (f.check("duration", duration, _DURATION) if duration.strip()
                    else f.check("duration", rawget("track_duration") or None, _clock_duration))
        created = f.check("date_created", get("track", "date_created") or rawget("track_date_created") or None,
                          fma_date)
        recorded = f.check("date_recorded", get("track", "date_recorded") or rawget("track_date_recorded") or None,
                           fma_date)
        out.append({
            "track_id": tid,
            "title": get("track", "title") or rawget("track_title"),
            "artist": get("artist", "name") or rawget("artist_name"),
            "album": get("album", "title") or rawget("album_title"),
            "genres": [genres.get(x, str(x)) for x in genre_ids],
            "tags": f.check("tags", get("track", "tags"), _literal_list(str)) or [],
            "license_title": get("track", "license") or rawget("license_title"),
            "license_url": f.check("license_url", rawget("license_url") or None, rc.http_url),
            "license_url_raw": rawget("license_url"),
            "track_url": f.check("track_url", rawget("track_url") or None, rc.http_url),
            "year": f"{(recorded or created).year:04d}" if (recorded or created) else "",
            "duration": duration,
            "bit_rate": f.check("bit_rate", get("track", "bit_rate") or rawget("track_bit_rate") or None, _BIT_RATE),
            "information": rawget("track_information"),
            "problems": f.problems,
        })
    return out, refused


# What a file's first bytes say it is: (magic at offset, label, decodable audio container).
_MAGIC = ((0, b"MThd", "a MIDI file (note events, not sampled audio)", False),
          (8, b"RMID", "a RIFF MIDI file (note events, not sampled audio)", False),
          (8, b"WAVE", "WAV audio", True), (0, b"fLaC", "FLAC audio", True), (0, b"OggS", "Ogg audio", True),
          (0, b"ID3", "MP3 audio (ID3 tag)", True), (8, b"AIFF", "AIFF audio", True),
          (4, b"ftyp", "MP4/M4A audio (AAC: not decodable here)", True),
          (0, b"%PDF", "a PDF document", False), (0, b"PK\x03\x04", "a ZIP archive", False),
          (0, b"\x89PNG", "a PNG image", False), (0, b"\xff\xd8\xff", "a JPEG image", False),
          (0, b"<", "a text/markup file (HTML or XML)", False))


def sniff(path: pathlib.Path) -> tuple[str, bool] | None:
    """(what the file's header says it is, whether that is audio we decode), or None when unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    for offset, magic, label, audio in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return label, audio
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "MP3 audio (frame sync)", True
    return None


def decode_reason(path: pathlib.Path, rel: str, exc: Exception) -> str:
    """The ``audio`` reject reason for a file that does not decode: what is wrong with it, by its
    path in the dump (libsndfile says "File does not exist" of an existing file it cannot parse)."""
    detail = str(exc).replace(str(path), rel)
    if detail.startswith(f"{rel}: "):
        detail = detail[len(rel) + 2:]
    if "File does not exist" in detail and path.is_file():
        detail = "no audio stream that libsndfile can read"
    kind = sniff(path)
    if kind is None:
        return f"audio-corrupt: not audio: cannot decode {rel}: no known audio header ({detail})"
    label, audio = kind
    if not audio:
        return f"audio-corrupt: not audio: cannot decode {rel}: the file is {label}"
    return f"audio-corrupt: cannot decode {rel}: {label} that does not decode ({detail})"


def track_file(root: pathlib.Path, audio_dir: str, track_id: int) -> tuple[pathlib.Path | None, str]:
    """(the track's file or None, its path in the dump). The dump's layout is NNN/NNNNNN.mp3; a
    file with the same name and another extension (a non-MP3 original) is found too, so its
    reject says what it is rather than "missing"."""
    rel = f"{audio_dir}/{audio_relpath(track_id)}"
    path = root / rel
    if path.is_file():
        return path, rel
    if path.parent.is_dir():
        for p in sorted(path.parent.iterdir()):
            if p.stem == path.stem and p.suffix and p.is_file():
                return p, f"{audio_dir}/{p.relative_to(root / audio_dir).as_posix()}"
    return None, rel


def store_copy(src: pathlib.Path, store: pathlib.Path, sha: str) -> pathlib.Path:
    """Copy ``src`` into the content-addressed store as ``ab/cd/<sha256>.<ext>`` (once, atomically)."""
    dst = safe_join(store, sha[:2], sha[2:4], f"{sha}.{audio_ext(src.suffix.lower()[1:], what='file type')}")
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
               audio_dir: str = "fma_large", policy: LicensePolicy = LicensePolicy()) -> FmaStats:
    """Ingest an FMA dump. Each row is checked field by field (a bad field is stored NULL with a
    ``record`` reject; a row whose track_id is unusable is counted in ``malformed`` and logged).
    Audio is copied into the store only for tracks the license gate admits (the gate's own pure
    function, with ``policy``), that are well-formed and not taken down: nothing the gate will
    reject ever lands in the audio store. A warning is logged only when its decision is new."""
    t0 = time.perf_counter()
    root = pathlib.Path(root)
    store = pathlib.Path(audio_store)
    stats = FmaStats()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    tracks, refused = read_fma_metadata(root)
    for label, why in refused:
        log.error("fma tracks.csv row %s: skipping malformed row: %s", rc.short(label), why)
    stats.malformed = len(refused)
    stats.refused = {f"tracks.csv row {rc.short(label)}": why for label, why in refused}
    records, decisions, problems = [], [], {}
    previous = cat.latest_decision_map("audio")
    already = cat.active_takedowns()
    for t in progress(tracks, desc="fma tracks", unit="track"):
        rid = f"{SOURCE}:{t['track_id']}"
        bad = t["problems"]
        canonical, _ = resolve_license(t["license_url"], t["license_title"] or None)
        rec = {
            "source": SOURCE, "source_id": str(t["track_id"]), "title": t["title"], "author": t["artist"],
            "description": t["information"] or None, "tags": t["genres"] + t["tags"],
            "license_raw": t["license_url_raw"] or t["license_title"] or None, "license_canonical": canonical,
            "license_url": t["license_url"], "page_url": t["track_url"], "duration": t["duration"],
            "crawl_time": now,
            "extra": {"license_title": t["license_title"], "album": t["album"], "genres": t["genres"],
                      "year": t["year"], "bit_rate": t["bit_rate"],
                      "attribution": tasl(title=t["title"], author=t["artist"], source_url=t["track_url"] or "",
                                          license_canonical=canonical, license_url=t["license_url"] or "")},
        }
        try:
            Catalog.validate_recording(rec)          # what the catalogue refuses (a NUL byte...) per item
        except CatalogError as exc:
            stats.malformed += 1
            log.error("fma track %s: skipping malformed row: %s", t["track_id"], exc)
            stats.refused[f"track {t['track_id']}"] = str(exc)
            continue
        # the same pure gate, on the same inputs, as the license_gate stage will run
        admissible = (not bad and rid not in already
                      and license_gate(t["license_url"], t["license_title"], policy=policy).verdict == "pass")
        path, rel = track_file(root, audio_dir, t["track_id"])
        reason = None
        if path is None:
            reason, stats.audio_missing = f"audio-missing: {rel} not found", stats.audio_missing + 1
        else:
            try:
                info = probe(path)
                rec.update(duration=info.duration, sample_rate=info.sample_rate, channels=info.channels)
                sha, md5 = file_digests(path)
                rec.update(md5=md5, audio_url=rel)
                if admissible:
                    stored = store_copy(path, store, sha)
                    rec.update(content_sha256=sha, audio_path=str(stored.relative_to(store)))
                    stats.audio_seconds += info.duration
                else:
                    stats.withheld += 1
                stats.with_audio += 1
            except AudioDecodeError as exc:
                reason, stats.audio_corrupt = decode_reason(path, rel, exc), stats.audio_corrupt + 1
            except ValueError as exc:                # a decodable file of a type the store does not keep
                reason, stats.audio_corrupt = f"audio-corrupt: cannot store {rel}: {exc}", stats.audio_corrupt + 1
        if reason:
            if (previous.get(rid) or {}).get("reason") != reason:
                log.warning("%s: %s", rid, reason)
                decisions.append(Decision(rid, "audio", "reject", reason, config_hash=config_hash))
        elif rid in previous and previous[rid]["verdict"] == "reject":
            decisions.append(Decision(rid, "audio", "pass", "audio-present", config_hash=config_hash))
        records.append(rec)
        problems[rid] = bad
        stats.malformed_fields += bool(bad)
    decisions += rc.record_decisions(problems, cat.latest_decision_map(rc.STAGE), config_hash=config_hash)
    # every row with a usable id is present, stored or not: a row refused for a NUL byte is no removal
    present = {str(t["track_id"]) for t in tracks}
    with cat.transaction():
        cat.upsert_recordings(records)
        cat.add_decisions(decisions)
        for row in cat.query("SELECT source_id FROM recordings WHERE source = ?", [SOURCE]):
            if row["source_id"] not in present and f"{SOURCE}:{row['source_id']}" not in already:
                cat.add_takedown(f"{SOURCE}:{row['source_id']}", "removed-at-source: not in the FMA metadata dump",
                                 "crawl")
                stats.removed += 1
    stats.tracks = len(records)
    stats.seconds = time.perf_counter() - t0
    return stats
