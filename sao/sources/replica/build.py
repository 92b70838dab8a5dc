"""Turn sample-corpus entries into Freesound sound records and an FMA metadata/audio tree.

The formats follow Freesound's API docs (fields, license as deed URL) and mdeff/fma's
``fma_metadata`` files (``tracks.csv`` with a two-row header, ``raw_tracks.csv`` with
``license_url``, audio at ``fma_large/000/000002.mp3``). Upload times and ids are the
replica's own (a deterministic schedule), not claims about the recordings.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pathlib
import shutil
import zlib
from typing import Any

from ...fsutil import atomic_path, atomic_write_text
from ...licensing import canonical_license, deed_url

FREESOUND_ID_BASE = 100_000
FMA_FIRST_TRACK_ID = 2
UPLOAD_EPOCH = dt.datetime(2024, 1, 1)

# Freesound's license *names* (what the search filter matches). Licenses freesound.org does
# not offer keep a descriptive name so they never match the allowed-license searches.
_FS_NAMES = {
    "cc0-1.0": "Creative Commons 0",
    "cc-by-3.0": "Attribution", "cc-by-4.0": "Attribution",
    "cc-by-nc-3.0": "Attribution NonCommercial", "cc-by-nc-4.0": "Attribution NonCommercial",
    "cc-sampling+-1.0": "Sampling+",
}
# FMA license titles as they appear in raw_tracks.csv
_FMA_TITLES = {
    "cc0-1.0": "CC0 1.0 Universal",
    "cc-by-3.0": "Attribution",
    "cc-by-4.0": "Attribution 4.0 International",
    "cc-by-sa-3.0": "Attribution-ShareAlike",
    "pdm-1.0": "Public Domain Mark 1.0",
}
_EXT_TYPE = {".ogg": "ogg", ".oga": "ogg", ".wav": "wav", ".mp3": "mp3", ".flac": "flac", ".aif": "aif",
             ".aiff": "aiff", ".m4a": "m4a"}


def corpus_canonical_license(entry: dict[str, Any]) -> str:
    """The corpus states licenses as SPDX-like names; 'Public-Domain' audio maps to the PD mark."""
    lic = canonical_license(entry["license"])
    if lic == "public-domain":
        return "pdm-1.0"
    return lic


def freesound_license_name(canonical: str) -> str:
    return _FS_NAMES.get(canonical, {"unknown": "Unknown"}.get(canonical, canonical.upper()))


def record_created(value: object) -> dt.datetime | None:
    """A record's ``created`` (ISO 8601, naive meaning UTC, or with ``Z``/an offset) as naive UTC;
    None when it is not a date (tests store hostile values to see the crawler refuse them)."""
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
        if t.tzinfo is not None:
            t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):       # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None
    return t


def api_created(value: object) -> object:
    """``created`` as freesound.org writes it: the serializer returns ``created.replace(microsecond=0)``
    of an aware UTC datetime (USE_TZ = True) and DRF's encoder writes ``isoformat()`` with ``+00:00``
    as ``Z``: ``2024-01-01T06:00:00Z``. A value that is not a date goes out as it is."""
    t = record_created(value)
    if t is None:
        return value
    return t.replace(microsecond=0).isoformat() + "Z"


def replica_user_id(username: object) -> int:
    """The uploader's numeric id, which freesound.org puts in preview and image file names
    (``<sound id>_<user id>-hq.mp3``) and the replica in its image URLs; the corpus has no user
    ids, so one is derived from the name, stably."""
    return 1_000_000 + zlib.crc32(str(username).encode("utf-8", "replace")) % 9_000_000


def build_freesound_sounds(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Full sound records (every field the API can return) for the corpus's Freesound-side items.

    ``_path`` (the original file), ``_license_name`` (the filter name) and ``_user_id`` are internal.
    Values are stored as the database holds them (``created`` naive UTC, ``avg_rating`` 0-10,
    ``pack`` a pack id or None); ``ReplicaServer.render_sound`` serializes them as the API does.
    """
    sounds = []
    for i, e in enumerate(x for x in entries if x["replica"] == "freesound"):
        canonical = corpus_canonical_license(e)
        path = pathlib.Path(e["path"])
        sid = FREESOUND_ID_BASE + i + 1
        created = UPLOAD_EPOCH + dt.timedelta(hours=6 * i)
        desc = e.get("description") or ""
        credit = f"Author: {e['author']}."
        if e.get("source_url"):
            credit += f" Original: {e['source_url']}"
        sounds.append({
            "id": sid,
            "name": e["title"],
            "tags": list(e.get("tags") or []),
            "description": f"{desc} {credit}".strip(),
            "created": created.strftime("%Y-%m-%dT%H:%M:%S"),
            "license": e["license_url"] or deed_url(canonical) or "",
            "gen_ai_preference": "no-additional-preferences",
            "type": _EXT_TYPE.get(path.suffix.lower(), path.suffix.lstrip(".").lower()),
            "channels": e["channels"],
            "filesize": e["bytes"],
            "bitrate": round(e["bytes"] * 8 / 1000 / max(e["duration"], 1e-3)),
            "bitdepth": 16 if "PCM_16" in (e.get("subtype") or "") else 0,
            "duration": e["duration"],
            "samplerate": e["sample_rate"],
            "username": e["author"],
            "_user_id": replica_user_id(e["author"]),
            "md5": e["md5"],
            "is_remix": False,
            "was_remixed": False,
            "is_explicit": False,
            "num_downloads": 0,
            "avg_rating": 0.0,
            "num_ratings": 0,
            "num_comments": 0,
            "category": None,
            "subcategory": None,
            "pack": None,
            "geotag": None,
            "_path": str(path),
            "_license_name": _FS_NAMES.get(canonical, "Unknown" if canonical == "unknown" else canonical),
            "_corpus_id": e["id"],
        })
    return sounds


def fma_audio_relpath(track_id: int, suffix: str = ".mp3") -> str:
    """``NNN/NNNNNN.mp3`` as in mdeff/fma; a file that is not MP3 keeps its own extension (a MIDI
    or FLAC file renamed .mp3 would be a lie the ingest then reports as a missing file)."""
    tid = f"{track_id:06d}"
    return f"{tid[:3]}/{tid}{suffix}"


def build_fma_replica(entries: list[dict[str, Any]], out_dir: str | os.PathLike) -> pathlib.Path:
    """Write ``out_dir/fma_metadata/{tracks,raw_tracks,genres}.csv`` and ``out_dir/fma_large/...``.

    Idempotent: files are rewritten atomically and audio is copied only when missing or changed.
    """
    import pandas as pd

    out = pathlib.Path(out_dir)
    fma = [e for e in entries if e["replica"] == "fma"]
    genre_titles = sorted({g for e in fma for g in (e.get("fma") or {}).get("genres", [])})
    genre_ids = {g: 1 + i for i, g in enumerate(genre_titles)}
    albums = sorted({(e.get("fma") or {}).get("album") or "" for e in fma} - {""})
    album_ids = {a: 1000 + i for i, a in enumerate(albums)}
    raw_rows, track_rows, checksums = [], [], []
    for i, e in enumerate(fma):
        tid = FMA_FIRST_TRACK_ID + i
        meta = e.get("fma") or {}
        canonical = corpus_canonical_license(e)
        artist = e["author"]
        album = meta.get("album") or ""
        slug = lambda s: "".join(c if c.isalnum() else "_" for c in s).strip("_")  # noqa: E731
        track_url = f"https://freemusicarchive.org/music/{slug(artist)}/{slug(album) or 'Single'}/{slug(e['title'])}"
        genres = [genre_ids[g] for g in meta.get("genres", [])]
        # only the year the corpus documents; no invented dates (they would end up in prompts)
        created = f"{e['year']}-01-01 00:00:00" if e.get("year") else ""
        src = pathlib.Path(e["path"])
        audio_rel = fma_audio_relpath(tid, src.suffix.lower() or ".bin")
        dst = out / "fma_large" / audio_rel
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        for stale in dst.parent.glob(f"{dst.stem}.*"):     # an earlier build's file under another extension
            if stale.name != dst.name and stale.suffix:
                stale.unlink()
        checksums.append(f"{hashlib.sha1(src.read_bytes()).hexdigest()}  fma_large/{audio_rel}")
        license_title = _FMA_TITLES.get(canonical, "")
        license_url = e["license_url"] if license_title else ""
        raw_rows.append({
            "track_id": tid, "album_id": album_ids.get(album, ""), "album_title": album,
            "album_url": "", "artist_id": 500 + i, "artist_name": artist, "artist_url": "", "artist_website": "",
            "license_image_file": "", "license_image_file_large": "", "license_parent_id": "",
            "license_title": license_title, "license_url": license_url,
            "tags": json.dumps(meta.get("tags", [])), "track_bit_rate": round(e["bytes"] * 8 / max(e["duration"], 1e-3)),
            "track_comments": 0, "track_composer": "", "track_copyright_c": "", "track_copyright_p": "",
            "track_date_created": created, "track_date_recorded": f"{e['year']}-01-01" if e.get("year") else "",
            "track_disc_number": 1, "track_duration": f"{int(e['duration'] // 60):02d}:{int(e['duration'] % 60):02d}",
            "track_explicit": "", "track_explicit_notes": "", "track_favorites": 0,
            "track_file": f"music/{audio_rel}",
            "track_genres": json.dumps([{"genre_id": str(genre_ids[g]), "genre_title": g} for g in meta.get("genres", [])]),
            "track_image_file": "", "track_information": e.get("note") or "", "track_instrumental": 0,
            "track_interest": 0, "track_language_code": "", "track_listens": 0, "track_lyricist": "",
            "track_number": 1, "track_publisher": "", "track_title": e["title"], "track_url": track_url,
        })
        track_rows.append({
            ("album", "id"): raw_rows[-1]["album_id"], ("album", "title"): album, ("album", "tags"): "[]",
            ("album", "date_released"): "", ("album", "type"): "Album" if album else "",
            ("artist", "id"): 500 + i, ("artist", "name"): artist, ("artist", "tags"): "[]",
            ("set", "split"): "training", ("set", "subset"): "large",
            ("track", "bit_rate"): raw_rows[-1]["track_bit_rate"], ("track", "date_created"): created,
            ("track", "date_recorded"): raw_rows[-1]["track_date_recorded"],
            ("track", "duration"): int(round(e["duration"])), ("track", "genre_top"): meta.get("genres", [""])[0] if meta.get("genres") else "",
            ("track", "genres"): str(genres), ("track", "genres_all"): str(genres),
            ("track", "license"): license_title, ("track", "tags"): str(meta.get("tags", [])),
            ("track", "title"): e["title"], ("track", "number"): 1, ("track", "listens"): 0,
        })
    md = out / "fma_metadata"
    raw = pd.DataFrame(raw_rows).set_index("track_id")
    atomic_write_text(md / "raw_tracks.csv", raw.to_csv())
    tracks = pd.DataFrame(track_rows, index=pd.Index([r["track_id"] for r in raw_rows], name="track_id"))
    tracks.columns = pd.MultiIndex.from_tuples(tracks.columns)
    tracks = tracks.sort_index(axis=1)
    atomic_write_text(md / "tracks.csv", tracks.to_csv())
    genres_df = pd.DataFrame([{"genre_id": gid, "#tracks": sum(g in (e.get("fma") or {}).get("genres", []) for e in fma),
                               "parent": 0, "title": g, "top_level": gid} for g, gid in genre_ids.items()],
                             columns=["genre_id", "#tracks", "parent", "title", "top_level"]).set_index("genre_id")
    atomic_write_text(md / "genres.csv", genres_df.to_csv())
    atomic_write_text(md / "checksums", "\n".join(checksums) + "\n")
    atomic_write_text(md / "README.txt", "Loopback FMA replica built by sao from datasets/sample.\n"
                  "Each audio file (.mp3, or its real format's extension) is licensed by its artist; "
                  "see raw_tracks.csv license_title/license_url.\n")
    return out
