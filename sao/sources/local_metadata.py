"""Reading a local folder's metadata (sao.sources.local_folder): ``metadata.csv`` and JSON sidecars,
every value checked by the rules of sao.sources.record_checks, every path through sao.fsutil.

The folder is hostile input: a path in the metadata is joined only by ``safe_join`` (no '..', no
absolute path, no symlink that leaves the folder) and must have an audio type of
``sao.fsutil.AUDIO_EXTENSIONS``; a JSON sidecar is read only through ``safe_join`` and only up to
``MAX_SIDECAR_BYTES``; a folder linked into the tree is not entered. Nothing outside the folder is
opened, and no audio is read here.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import pathlib
import re
import stat
from typing import Any

from ..fsutil import AUDIO_EXTENSIONS, UnsafePathError, audio_ext, safe_join
from ..licensing import resolve_license, tasl
from . import record_checks as rc

SOURCE = "local"
METADATA = "metadata.csv"
REQUIRED_COLUMNS = ("file", "title", "author", "license_url", "source_url")
OPTIONAL_COLUMNS = ("id", "description", "tags")
MAX_SIDECAR_BYTES = 1 << 20
MAX_AUDIO_BYTES = 2 << 30          # a larger audio file is refused, not copied (as Freesound's download cap)
MAX_ID_CHARS = 200
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PATH_ID = re.compile(r"[^A-Za-z0-9._/-]")
_EXTRA_CELLS = "\0extra"


class LocalFolderError(ValueError):
    """The folder or its metadata.csv cannot be read at all (the message says why)."""


def _is_audio_name(name: str) -> bool:
    suffix = pathlib.PurePosixPath(name).suffix
    return bool(suffix) and suffix[1:].lower() in AUDIO_EXTENSIONS


def regular_file(path: pathlib.Path) -> bool:
    """A plain file (a link inside the folder is followed: safe_join checked where it leads). A FIFO, a
    device or a socket is never opened: reading one could block the ingest forever."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_at_most(path: pathlib.Path, limit: int) -> bytes:
    """The first LIMIT bytes of a plain file, read in one bounded call (never the whole of a huge file)."""
    with open(path, "rb") as f:
        return f.read(limit)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _rel(root: pathlib.Path, path: pathlib.Path) -> str:
    return path.relative_to(root).as_posix()


def audio_path(root: pathlib.Path, value: Any) -> tuple[pathlib.Path | None, str | None, str | None]:
    """(path, its relative posix name, None), or (None, None, why) for a value that cannot name an
    audio file inside ``root``."""
    if _blank(value):
        return None, None, "no file given"
    if not isinstance(value, str):
        return None, None, f"expected a string, got {type(value).__name__}"
    try:
        path = safe_join(root, value, what="file")
        audio_ext(path.suffix[1:].lower(), what=f"file {rc.short(value)}: type")
    except UnsafePathError as exc:
        return None, None, str(exc)
    return path, _rel(root, path), None


def csv_entries(root: pathlib.Path) -> list[tuple[str, dict[str, Any]]]:
    """[(label, row)] of metadata.csv ([] when there is none). Cells are verbatim text."""
    try:
        path = safe_join(root, METADATA, what=METADATA)
    except UnsafePathError as exc:
        raise LocalFolderError(str(exc)) from None
    if not regular_file(path):
        return []
    out = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restkey=_EXTRA_CELLS, skipinitialspace=True)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise LocalFolderError(f"{METADATA}: missing column(s) {', '.join(missing)} (it has: "
                                       f"{', '.join(map(rc.short, header)) or 'no header'})")
            if len(set(header)) != len(header):
                raise LocalFolderError(f"{METADATA}: a column name appears twice in {header}")
            for row in reader:
                out.append((f"{METADATA} line {reader.line_num}", row))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LocalFolderError(f"{METADATA}: unreadable ({exc})") from None
    return out


def sidecar_entries(root: pathlib.Path, described: set[str]) -> tuple[list[tuple[str, dict, str]], dict[str, str], int]:
    """([(label, sidecar dict, the audio file it describes)], refused {label: why}, ignored).
    ``NAME.EXT.json`` describes ``NAME.EXT``; ``NAME.json`` the one audio file ``NAME.<audio ext>``
    beside it (a JSON file with no such audio is not a sidecar). A file metadata.csv describes
    (``described``) keeps its CSV row; its sidecar is ignored."""
    entries, refused, ignored = [], {}, 0
    for dirpath, dirnames, filenames in os.walk(root):       # a linked folder is listed, never entered
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = pathlib.Path(dirpath)
        for fn in sorted(filenames):
            if not fn.endswith(".json") or fn.startswith("."):
                continue
            label = _rel(root, here / fn)
            stem = fn[: -len(".json")]
            if _is_audio_name(stem):
                audio = [stem]
            else:
                audio = sorted(n for n in filenames if pathlib.PurePosixPath(n).stem == stem and _is_audio_name(n))
            if not audio:
                ignored += 1
                continue
            if len(audio) > 1:
                refused[label] = f"describes {len(audio)} audio files ({', '.join(audio)}): name it NAME.EXT.json"
                continue
            rel_audio = _rel(root, here / audio[0])
            if rel_audio in described:
                ignored += 1
                continue
            try:
                path = safe_join(root, label, what="sidecar")
                if not regular_file(path):
                    raise ValueError("not a plain file")
                raw = read_at_most(path, MAX_SIDECAR_BYTES + 1)
                if len(raw) > MAX_SIDECAR_BYTES:
                    raise ValueError(f"larger than {MAX_SIDECAR_BYTES} bytes")
                data = json.loads(raw.decode("utf-8"))
            except (UnsafePathError, OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
                refused[label] = f"unreadable sidecar: {exc}"
                continue
            if not isinstance(data, dict):
                refused[label] = f"expected a JSON object, got {type(data).__name__}"
                continue
            entries.append((label, data, rel_audio))
    return entries, refused, ignored


def _tags(v: Any) -> tuple[Any, str | None]:
    """Comma- or semicolon-separated text, or (in a sidecar) a list of strings."""
    if isinstance(v, str):
        return [t.strip() for t in re.split(r"[,;]", v) if t.strip()], None
    return rc.text_list(v)


def _source_id(raw: dict[str, Any], rel: str | None, file_problem: str | None) -> str:
    v = raw.get("id")
    if _blank(v):
        if rel is None:
            raise rc.UnusableItem(f"no id and no usable file ({file_problem})")
        sid = _PATH_ID.sub("_", rel)
        if len(sid) > MAX_ID_CHARS:
            raise rc.UnusableItem(f"file {rc.short(rel)}: too long to be an id: give the row an id")
        return sid
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not _ID.fullmatch(v) or len(v) > MAX_ID_CHARS or ".." in v:
        raise rc.UnusableItem(f"id: {rc.short(v)} is not 1-{MAX_ID_CHARS} letters, digits, '.', '_' or '-' "
                              "starting with a letter or digit")
    return v


def checked_entry(root: pathlib.Path, label: str, raw: dict[str, Any], sidecar_audio: str | None,
                  now: dt.datetime) -> tuple[dict[str, Any], dict[str, str], pathlib.Path | None]:
    """(catalogue record without audio, {field: why} of its bad fields, the audio path or None). A bad
    field is None in the record. Raises ``UnusableItem`` when the entry has no usable identity."""
    f = rc.Fields(raw)
    if sidecar_audio is not None:        # a sidecar describes the file it sits beside (a "file" key is not read)
        path, rel, why = audio_path(root, sidecar_audio)
    else:
        path, rel, why = audio_path(root, raw.get("file"))
    if why:
        f.add("file", why)
    sid = _source_id(raw, rel, why)
    if raw.get(_EXTRA_CELLS):
        f.add("row", f"{len(raw[_EXTRA_CELLS])} cell(s) beyond the header (an unquoted comma?)")

    def text(key: str) -> str | None:
        v = f.get(key, rc.text)
        return None if _blank(v) else v

    lic = raw.get("license_url")
    license_raw = None if _blank(lic) else (lic if isinstance(lic, str) else rc.raw_text(lic))
    license_url = None if _blank(lic) else f.check("license_url", lic, rc.http_url)
    page_url = None if _blank(raw.get("source_url")) else f.get("source_url", rc.http_url)
    canonical, _ = resolve_license(license_url, None)
    title, author = text("title"), text("author")
    rec = {
        "source": SOURCE, "source_id": sid, "title": title, "author": author, "description": text("description"),
        "tags": f.get("tags", _tags) or [], "license_raw": license_raw, "license_canonical": canonical,
        "license_url": license_url, "page_url": page_url, "audio_url": rel, "crawl_time": now,
        "extra": {"metadata": METADATA if sidecar_audio is None else label,
                  "attribution": tasl(title=title or "", author=author or "", source_url=page_url or "",
                                      license_canonical=canonical, license_url=license_url or "")},
    }
    return rec, f.problems, path


def read_folder(root: pathlib.Path) -> tuple[list[tuple[str, dict, str | None]], dict[str, str], int]:
    """([(label, raw entry, sidecar's audio or None)], refused {label: why}, ignored sidecars)."""
    if not root.is_dir():
        raise LocalFolderError(f"{root}: not a folder")
    rows = csv_entries(root)
    described = set()
    for _, row in rows:
        _, rel, _ = audio_path(root, row.get("file"))
        if rel:
            described.add(rel)
    sidecars, refused, ignored = sidecar_entries(root, described)
    entries = [(label, row, None) for label, row in rows] + sidecars
    if not entries and not refused:
        raise LocalFolderError(f"{root}: no {METADATA} and no JSON sidecar: nothing describes its audio")
    return entries, refused, ignored


def folder_digest(root: str | os.PathLike) -> str:
    """sha256 over the folder's listing (path, size, mtime, never following a link) and the bytes of its
    metadata.csv and sidecars: equal digests mean an ingest would read exactly what the last one read."""
    root = pathlib.Path(root)
    h = hashlib.sha256()
    for dirpath, _, filenames in sorted(os.walk(root)):         # a linked folder is listed, never entered
        for fn in sorted(filenames):
            p = pathlib.Path(dirpath) / fn
            rel = _rel(root, p)
            st = os.lstat(p)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if fn == METADATA or fn.endswith(".json"):
                try:
                    target = safe_join(root, rel, what="metadata")
                    h.update(read_at_most(target, MAX_SIDECAR_BYTES * 64) if regular_file(target) else b"\0special")
                except (UnsafePathError, OSError):
                    h.update(b"\0unreadable")
    return h.hexdigest()
